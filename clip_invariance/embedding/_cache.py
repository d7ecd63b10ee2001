"""The embedding caches of :class:`~clip_invariance.CLIPEmbedder`: on disk (``memory=``) and in memory.

Every input gets a key (its file's identity, its pixels, a view's recipe, or
its text). On disk, one float32 ``.npy`` file named by the key's digest,
written atomically and read with ``allow_pickle=False``: nothing in it is
executed, and a damaged entry is recomputed with a warning. In memory, a
bounded memo per loaded model (``memo_size=``), so that the clones a
``GridSearchCV`` makes embed each input once without any setting.
"""

import hashlib
import io
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from itertools import count

import numpy as np

from ._images import is_lazy_image

__all__ = ["CACHE_FOLDER", "MEMO_ENTRY_OVERHEAD", "digest", "item_key", "open_cache", "open_memo"]

CACHE_FOLDER = "clip-invariance-embeddings"


def item_key(item, modality, strict=False):
    """What identifies an input for the cache (file identity, pixels, recipe or text); None: not cached.

    ``strict`` (the memo's keys) adds a file's inode and status-change time:
    a file replaced, or rewritten with its old size and modification time put
    back (``cp -p``), is then another input. Not on disk, where the ctime of a
    copied or restored folder would change every key. Its pixel digest is
    SHA-256, several times faster than BLAKE2b on CPUs with SHA instructions:
    the memo hashes every in-memory image of every call. The disk keeps
    BLAKE2b, so existing caches stay valid.
    """
    if modality == "text":
        return ("text", item)
    if is_lazy_image(item):  # its source and its recipe; an opaque view is never cached
        source = getattr(item, "source", None)
        recipe = hasattr(item, "cache_key") and source is not None
        source_key = item_key(source, modality, strict) if recipe else None
        return None if source_key is None else item.cache_key(source_key)
    if isinstance(item, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(item))
        try:
            stat = os.stat(path)
        except OSError:
            return None  # reported by the decoder, with its index
        if strict:
            return ("file", path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
        return ("file", path, stat.st_size, stat.st_mtime_ns)
    arr = np.ascontiguousarray(np.asarray(item))
    if strict:  # shape and dtype are in the key
        pixels = hashlib.sha256(arr).hexdigest()[:32]
    else:
        pixels = hashlib.blake2b(arr, digest_size=16).hexdigest()
    return ("pixels", getattr(item, "mode", None), arr.shape, arr.dtype.str, pixels)


def digest(key):
    """A 32-hex-digit digest of a key's repr: names cache files and the folder embedder's items."""
    return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


def open_cache(memory, backbone, modality):
    """The cache of one model and modality under ``memory`` (a folder or a joblib.Memory), or None."""
    location = getattr(memory, "location", memory)  # a joblib.Memory: only its folder
    if location is None:
        return None
    location = os.path.expanduser(os.fspath(location))
    if os.path.exists(location) and not os.path.isdir(location):
        raise ValueError(f"memory={location!r} is a file; the embedding cache needs a folder.")
    model_key = (backbone.identity, backbone.weights, modality)
    folder = os.path.join(location, CACHE_FOLDER, digest(model_key))
    return _EmbeddingCache(folder, backbone.embedding_dim)


class _EmbeddingCache:
    """One float32 ``.npy`` file per input under ``folder/<2 hex>/<digest>.npy``.

    Not joblib.Memory: it unpickles whatever file it finds and keys whole
    batches, so a planted file ran code, a truncated one broke every later
    call, and another batch size re-embedded everything.
    """

    def __init__(self, folder, dim):
        self.folder = folder
        self.dim = dim
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(dim, dtype=np.float32))
        # An entry of ours is this header followed by the row's bytes: compared, never parsed.
        self.size = buffer.tell()
        self.header = buffer.getvalue()[: -4 * dim]

    def _path(self, key):
        name = digest(key)
        return os.path.join(self.folder, name[:2], name + ".npy")

    def read(self, keys, out):
        """Fill ``out[i]`` for every cached ``keys[i]``; returns the mask of rows found."""
        found = np.zeros(len(keys), dtype=bool)
        damaged = []
        for i, key in enumerate(keys):
            if key is None:
                continue
            path = self._path(key)
            try:
                with open(path, "rb") as f:
                    row = self._decode(f.read())
            except FileNotFoundError:
                continue
            except Exception as exc:  # whatever is in the file, it is recomputed
                damaged.append(f"{path} ({type(exc).__name__}: {exc})")
                continue
            out[i] = row
            found[i] = True
        if damaged:
            message = f"Recomputed {len(damaged)} damaged or foreign embedding cache file(s); the first: "
            warnings.warn(message + damaged[0], UserWarning, stacklevel=3)
        return found

    def _decode(self, data):
        # np.load parses every header with ast.literal_eval: 28 of the 41 ms of a
        # warm read of 300 entries. Our own entries have a known header: compare bytes.
        if len(data) == self.size and data.startswith(self.header):
            row = np.frombuffer(data, dtype=np.float32, offset=len(self.header))
        else:
            row = np.load(io.BytesIO(data), allow_pickle=False)
            if not (isinstance(row, np.ndarray) and row.dtype == np.float32 and row.shape == (self.dim,)):
                got = f"{getattr(row, 'dtype', type(row).__name__)} {getattr(row, 'shape', '')}"
                raise ValueError(f"expected float32 of shape ({self.dim},), got {got}")
        if not np.isfinite(row).all():
            raise ValueError("non-finite values")
        return row

    def write(self, keys, rows):
        """Store each row whose key is not None, atomically (temp file, then os.replace)."""
        for key, row in zip(keys, rows):
            if key is None:
                continue
            path = self._path(key)
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            # Readers see the old entry or the new one, never half of one; an
            # entry cut short by a crash fails the shape check and is recomputed.
            # O_EXCL with 0666, not mkstemp's 0600: entries are shared as the umask allows.
            tmp = os.path.join(folder, f".{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.ascontiguousarray(row, dtype=np.float32), allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise


# --------------------------------------------------------------- in memory
# What an entry costs besides its row and the strings in its key: the key tuple,
# the row's ndarray header and the dict slot. Measured with tracemalloc over
# 20,000 entries: 499 bytes in all for a file key with a 70-character path
# (this estimate: 518), 428 for a pixel key (this estimate: 489).
MEMO_ENTRY_OVERHEAD = 448


def _entry_size(key, row):
    strings = sum(len(part) for part in key if isinstance(part, str))
    return row.nbytes + MEMO_ENTRY_OVERHEAD + strings
_MEMO_LOCK = threading.Lock()


def open_memo(backbone, modality, memo_size):
    """The in-memory memo of ``backbone`` for one ``transform`` call, or None when ``memo_size`` is 0.

    The memo lives on the backbone, in the process-wide cache of
    ``_backbone.py``: the clones of a grid search share it, and
    ``clear_backbone_cache()`` frees it with the model. ``memo_size`` is in
    megabytes (each entry: its row, its key's strings and :data:`MEMO_ENTRY_OVERHEAD`).
    """
    if not memo_size:
        return None
    with _MEMO_LOCK:
        memo = getattr(backbone, "_embedding_memo", None)
        if memo is None:
            memo = backbone._embedding_memo = _EmbeddingMemo()
    return _MemoCall(memo, modality, int(memo_size * 2**20), next(memo.calls))


class _EmbeddingMemo:
    """Rows by input key, least recently used first, bounded in bytes; thread-safe.

    Each entry records the last call that used it. A call never evicts its
    own entries: when one call's inputs do not fit, it keeps the first ones
    instead of cycling through the memo (which, with least-recently-used
    eviction alone, would make every later call of a grid search miss).
    """

    def __init__(self):
        self.rows = OrderedDict()  # key -> [row, last call, bytes]
        self.nbytes = 0
        self.lock = threading.Lock()
        self.calls = count()

    def read(self, keys, call):
        rows = [None] * len(keys)
        with self.lock:
            for i, key in enumerate(keys):
                entry = None if key is None else self.rows.get(key)
                if entry is not None:
                    entry[1] = call
                    self.rows.move_to_end(key)
                    rows[i] = entry[0]
        return rows

    def write(self, keys, rows, call, limit):
        with self.lock:
            for key, row in zip(keys, rows):
                if key is None or key in self.rows:
                    continue
                size = _entry_size(key, row)
                while self.rows and self.nbytes + size > limit:
                    oldest = next(iter(self.rows.values()))
                    if oldest[1] == call:
                        break
                    self._pop()
                if self.nbytes + size > limit:
                    break  # full of this call's own rows: keep them
                row = np.array(row, dtype=np.float32)
                row.flags.writeable = False
                self.rows[key] = [row, call, size]
                self.nbytes += size
            while self.rows and self.nbytes > limit:  # a call with a smaller memo_size trims it
                self._pop()

    def _pop(self):
        _, (_, _, size) = self.rows.popitem(last=False)
        self.nbytes -= size


class _MemoCall:
    """The memo as one ``transform`` call sees it: its modality, its call number, its limit."""

    def __init__(self, memo, modality, limit, call):
        self.memo = memo
        self.modality = modality
        self.limit = limit
        self.call = call

    def keys(self, items):
        return [item_key(item, self.modality, strict=True) for item in items]

    def read(self, keys):
        return self.memo.read(keys, self.call)

    def write(self, keys, rows):
        self.memo.write(keys, rows, self.call, self.limit)
