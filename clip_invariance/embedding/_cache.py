"""The embedding cache of :class:`~clip_invariance.CLIPEmbedder` (``memory=``): one file per input.

Every input gets a key (its file's identity, its pixels, a view's recipe, or
its text) and one float32 ``.npy`` file named by the key's digest, written
atomically and read with ``allow_pickle=False``: nothing in it is executed,
and a damaged entry is recomputed with a warning.
"""

import hashlib
import io
import os
import uuid
import warnings

import numpy as np

from ._images import is_lazy_image

__all__ = ["CACHE_FOLDER", "digest", "item_key", "open_cache"]

CACHE_FOLDER = "clip-invariance-embeddings"


def item_key(item, modality):
    """What identifies an input for the cache (file identity, pixels, recipe or text); None: not cached."""
    if modality == "text":
        return ("text", item)
    if is_lazy_image(item):  # its source and its recipe; an opaque view is never cached
        source = getattr(item, "source", None)
        recipe = hasattr(item, "cache_key") and source is not None
        source_key = item_key(source, modality) if recipe else None
        return None if source_key is None else item.cache_key(source_key)
    if isinstance(item, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(item))
        try:
            stat = os.stat(path)
        except OSError:
            return None  # reported by the decoder, with its index
        return ("file", path, stat.st_size, stat.st_mtime_ns)
    arr = np.ascontiguousarray(np.asarray(item))
    pixels = hashlib.blake2b(arr, digest_size=16).hexdigest()  # shape and dtype are in the key
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
