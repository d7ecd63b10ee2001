"""The embedding store's format: its files, fields and the checks every read and write makes.

A store is a folder of ``.npy`` files, one per field, and a ``store.json``
listing them (file, shape, dtype). A sharded store is a folder whose
``shards/`` holds one such store per shard, named ``IIIII-of-NNNNN``.
:mod:`._store` writes and reads stores with these helpers.
"""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "METADATA_FILE",
    "PENDING_FOLDER",
    "SHARD_FOLDER",
    "FIELDS",
    "REQUIRED",
    "EMBEDDING_FIELDS",
    "ROW_FIELDS",
    "check_fields",
    "check_values",
    "check_block",
    "check_keys",
    "field_record",
    "read_metadata",
    "read_array",
    "regular_file_problem",
    "shard_name",
    "parse_shard_name",
    "shard_folders",
    "is_store",
    "is_sharded",
    "check_shards_agree",
    "NpyBlocks",
    "group_chunks",
]

STORE_FORMAT = "clip-invariance embedding store"
STORE_VERSION = 1
METADATA_FILE = "store.json"
# Per-item embeddings of an unfinished embedding run, one .npz file per save.
PENDING_FOLDER = "pending"
SHARD_FOLDER = "shards"

# Field -> (kind, allowed ndims). Shapes are checked together in check_fields.
FIELDS = {
    "X": ("float", (2,)),
    "y": ("int", (1,)),
    "environments": ("str", (1,)),
    "views": ("float", (3,)),
    "paths": ("str", (1,)),
    "prompt_embeddings": ("float", (2, 3)),
    "prompt_ensemble_embeddings": ("float", (3,)),
    "text_interventions": ("float", (2,)),
    "text_view_groups": ("int", (1,)),
    "text_intervention_texts": ("str", (1,)),
    "text_intervention_styles": ("str", (1,)),
}
REQUIRED = ("X", "y", "environments")
EMBEDDING_FIELDS = tuple(name for name, (kind, _) in FIELDS.items() if kind == "float")
# One entry per image: a sharded store concatenates these, in shard order.
ROW_FIELDS = ("X", "y", "environments", "views", "paths")


def check_fields(arrays, class_names, environment_names, where="", values=True):
    """Check that the fields of a store agree; raise a ValueError naming the field.

    ``arrays`` maps field names to arrays (or None); the rules are those of
    :func:`~clip_invariance.datasets.save_embeddings`. Used on writing and on
    reading. With ``values=False`` only shapes and dtypes are checked, and
    nothing is read from a memory-mapped array: :func:`check_values` checks
    the values, e.g. block by block. Returns the number of classes (None when
    neither names nor prompts say).
    """
    get = arrays.get

    def fail(name, message):
        raise ValueError(f"{where}{name}: {message}")

    for name in REQUIRED:
        if get(name) is None:
            fail(name, "missing; a store needs X, y and environments.")
    n, dim = arrays["X"].shape
    if n == 0 or dim == 0:
        fail("X", f"must hold at least one row and one column, got shape {arrays['X'].shape}.")
    for name, (kind, ndims) in FIELDS.items():
        array = get(name)
        if array is None:
            continue
        if array.ndim not in ndims or array.dtype.kind != {"float": "f", "int": "i", "str": "U"}[kind]:
            fail(name, f"expected a {kind} array with {' or '.join(map(str, ndims))} axes, got "
                 f"{array.dtype} of shape {array.shape}.")
        if kind == "float" and array.shape[-1] != dim:
            fail(name, f"last axis {array.shape[-1]} differs from X's {dim} features.")
    for name in ("y", "environments", "views", "paths"):
        if get(name) is not None and len(arrays[name]) != n:
            fail(name, f"has {len(arrays[name])} rows, X has {n}.")
    if get("views") is not None and arrays["views"].shape[1] == 0:
        fail("views", "has 0 views per row; pass views=None instead.")

    n_classes = None if class_names is None else len(class_names)
    for name in ("prompt_embeddings", "prompt_ensemble_embeddings"):
        if get(name) is not None:
            c = arrays[name].shape[-2]
            if n_classes is not None and c != n_classes:
                fail(name, f"covers {c} classes, the store names {n_classes}: {class_names}.")
            n_classes = c

    texts = get("text_interventions")
    if (texts is None) != (get("text_view_groups") is None):
        fail("text_view_groups", "text_interventions and text_view_groups go together.")
    for name in ("text_view_groups", "text_intervention_texts", "text_intervention_styles"):
        if get(name) is None:
            continue
        if texts is None:
            fail(name, "given without text_interventions.")
        if len(arrays[name]) != len(texts):
            fail(name, f"has {len(arrays[name])} entries, text_interventions has {len(texts)}.")
    if values:
        check_values(arrays, n_classes, environment_names, where)
    return n_classes


def check_values(arrays, n_classes, environment_names, where=""):
    """Check the values of the fields in ``arrays`` (any of them, or blocks of rows of them).

    Class indices in ``[0, n_classes)``, environments among
    ``environment_names``, finite embeddings; a ValueError names the field.
    """
    y = arrays.get("y")
    if y is not None and y.size and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        raise ValueError(f"{where}y: labels must lie in [0, {n_classes}) (the classes), got "
                         f"{y.min()}..{y.max()}.")
    if arrays.get("environments") is not None:
        unknown = sorted(set(np.unique(arrays["environments"]).tolist()) - set(environment_names))
        if unknown:
            raise ValueError(f"{where}environments: {unknown} are not in environment_names "
                             f"{environment_names}.")
    for name in EMBEDDING_FIELDS:
        array = arrays.get(name)
        if array is not None and not np.isfinite(array).all():
            raise ValueError(f"{where}{name}: contains NaN or infinite values.")


def check_block(name, n_classes, environment_names, where, block):
    """:func:`check_values` of one block of rows of field ``name``."""
    check_values({name: block}, n_classes, environment_names, where)


def check_keys(name, keys, field, where=""):
    """Check the item keys of field ``name``: strings, one per embedding.

    One per embedding: the keys have the field's shape without its last axis.
    """
    if field is None or keys.shape != field.shape[:-1] or keys.dtype.kind != "U":
        expected = "no field" if field is None else f"shape {field.shape[:-1]}"
        raise ValueError(f"{where}item_keys[{name}]: {keys.dtype} of shape {keys.shape}, expected str of "
                         f"{expected}.")


def field_record(name, array):
    """The ``store.json`` record of an array saved as ``<name>.npy``: file, shape and dtype."""
    return {"file": f"{name}.npy", "shape": list(array.shape), "dtype": array.dtype.str}


def read_metadata(path):
    """The checked ``store.json`` of the store folder ``path``; a ValueError says what is wrong."""
    file = path / METADATA_FILE
    problem = regular_file_problem(file)  # before reading: a FIFO would block the read forever
    if problem:
        raise ValueError(f"{file}: {problem}.")
    if not file.is_file():
        pending = (path / PENDING_FOLDER).is_dir()
        raise ValueError(f"{path}: no {METADATA_FILE}" + (
            "; this is an unfinished embedding run: run it again to resume." if pending else
            "; not an embedding store."))
    try:
        metadata = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: damaged {METADATA_FILE} ({exc}).") from None
    except RecursionError:  # json recurses once per nesting level
        raise ValueError(f"{file}: damaged {METADATA_FILE} (nested too deeply).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != STORE_FORMAT:
        raise ValueError(f"{file}: not a {STORE_FORMAT!r} file.")
    if metadata.get("version") != STORE_VERSION:
        raise ValueError(f"{file}: store version {metadata.get('version')!r}; this package reads version "
                         f"{STORE_VERSION}. Embed the folder again.")
    for entry, kind in [("fields", dict), ("item_keys", dict), ("settings", dict)]:
        if not isinstance(metadata.get(entry), kind):
            raise ValueError(f"{file}: {entry!r} is missing or not a mapping.")
    for entry, nullable in (("class_names", True), ("environment_names", False)):
        names = metadata.get(entry, 0)
        if not (nullable and names is None) and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"{file}: {entry!r} must be a list of strings{' or null' * nullable}.")
        twice = sorted({n for n in names or () if names.count(n) > 1})
        if twice:  # as save_embeddings refuses them: labels would be ambiguous
            raise ValueError(f"{file}: {entry!r}: duplicate names {twice}.")
    unknown = sorted(set(metadata["fields"]) - set(FIELDS))
    if unknown:
        raise ValueError(f"{file}: unknown fields {unknown}.")
    return metadata


def read_array(folder, name, record, mmap):
    """The array of one ``store.json`` record, checked against its recorded shape and dtype."""
    try:
        file, shape, dtype = record["file"], tuple(record["shape"]), np.dtype(record["dtype"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{folder}: field {name!r}: bad record {record!r} ({exc}).") from None
    if not isinstance(file, str) or os.path.basename(file) != file or not file.endswith(".npy"):
        raise ValueError(f"{folder}: field {name!r}: file {file!r} must be a .npy file inside the store.")
    problem = regular_file_problem(folder / file)
    if problem:
        raise ValueError(f"{folder}: field {name!r}: {file} {problem}.")
    try:
        # An empty array cannot be memory-mapped; it is read (and costs nothing).
        mode = "r" if mmap and 0 not in shape else None
        array = np.load(folder / file, allow_pickle=False, mmap_mode=mode)
    except FileNotFoundError:
        raise ValueError(f"{folder}: field {name!r}: file {file} is missing.") from None
    except Exception as exc:  # truncated, overwritten, pickled: never trusted
        raise ValueError(f"{folder}: field {name!r}: {file} cannot be read ({type(exc).__name__}: "
                         f"{exc}).") from None
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(f"{folder}: field {name!r}: {file} holds {array.dtype} of shape {array.shape}, "
                         f"the store records {dtype} of shape {shape}.")
    return array


def regular_file_problem(file):
    """Why ``file`` is not a store's own regular file (a string), or None; a missing file is None.

    A FIFO would block a reader forever, and a link would read data from
    outside the store without a word: a store only ever writes regular files.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> os.mkfifo(folder + "/X.npy")
    >>> regular_file_problem(folder + "/X.npy"), regular_file_problem(folder + "/none.npy")
    ('is not a regular file (a FIFO, device or folder); a store holds regular files only', None)
    """
    try:
        mode = os.lstat(file).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return (f"is a symbolic link (to {os.readlink(file)!r}); a store holds its own files only: copy the "
                "file into the store")
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, device or folder); a store holds regular files only"
    return None


def shard_name(index, count):
    """Folder name of shard ``index`` of ``count``, in ``shards/``: sorts in shard order.

    >>> shard_name(3, 8)
    '00003-of-00008'
    """
    return f"{index:05d}-of-{count:05d}"


def parse_shard_name(name):
    """``(index, count)`` of a shard folder name, or None for any other name.

    >>> parse_shard_name("00003-of-00008"), parse_shard_name(".00003-of-00008.partial-x")
    ((3, 8), None)
    """
    match = re.fullmatch(r"(\d{5})-of-(\d{5})", name)
    return None if match is None else (int(match[1]), int(match[2]))


def shard_folders(path):
    """The shard stores of the sharded store ``path``, in shard order; all must be complete.

    Raises
    ------
    ValueError
        If ``path/shards/`` holds shards of different counts, or if some
        shard is missing or unfinished (every such shard is named).
    """
    path = Path(path)
    found = {}
    for entry in sorted((path / SHARD_FOLDER).iterdir()) if (path / SHARD_FOLDER).is_dir() else []:
        parsed = parse_shard_name(entry.name)
        if parsed is not None and entry.is_dir():
            found[parsed] = entry
    counts = sorted({count for _, count in found})
    if not counts:
        raise ValueError(f"{path}: {SHARD_FOLDER}/ holds no shard (folders named like 00000-of-00004).")
    if len(counts) > 1:
        raise ValueError(f"{path}: {SHARD_FOLDER}/ mixes shards of {counts} parts; a store holds one split.")
    count = counts[0]
    problems = []
    for index in range(count):
        folder = found.get((index, count))
        if folder is None:
            problems.append(f"{index} (missing)")
        elif not (folder / METADATA_FILE).is_file():
            problems.append(f"{index} (unfinished: run it again to resume)")
    if problems:
        raise ValueError(f"{path}: {len(problems)} of {count} shards are not complete: shard "
                         f"{', '.join(problems)}. Embed them with --shard i/{count}.")
    return [found[index, count] for index in range(count)]


def is_store(path):
    """Whether ``path`` is a store folder or a sharded store (complete or not).

    An unfinished embedding run (``pending/`` files, no ``store.json``) is a
    store, so that reading it says to resume; an image folder's environment
    named ``pending`` holds class folders, not files, and is not one.
    """
    path = Path(path)
    pending = path / PENDING_FOLDER
    unfinished = pending.is_dir() and not any(entry.is_dir() for entry in pending.iterdir())
    return (path / METADATA_FILE).is_file() or is_sharded(path) or unfinished


def is_sharded(path):
    """Whether ``path`` is a sharded store: ``shards/`` and no ``store.json`` of its own."""
    path = Path(path)
    return not (path / METADATA_FILE).is_file() and (path / SHARD_FOLDER).is_dir()


def check_shards_agree(path, folders, parts):
    """Check that shards are parts of one store: one listing, cut once, embedded alike.

    ``parts`` holds ``(fields, item keys, metadata)`` of each shard folder.
    The shards must have the same classes, environments, fields, model and
    settings (the device and the root's absolute path aside: machines differ).
    Shards that record the listing they were cut from (``settings["shard"]``:
    its ``listing`` digest, ``images``, ``start`` and ``stop``, as
    ``embed_image_folder`` writes them) must record one listing and tile it;
    shards without one must not list a path twice.
    """
    first, name0 = parts[0], folders[0].name
    for folder, (fields, keys, metadata) in zip(folders[1:], parts[1:]):
        for entry in ("class_names", "environment_names"):
            if metadata[entry] != first[2][entry]:
                raise ValueError(f"{path}: shard {folder.name} has other {entry} than shard {name0}.")
        if metadata["settings"].get("model") != first[2]["settings"].get("model"):
            raise ValueError(f"{path}: shard {folder.name} was embedded by another model than shard "
                             f"{name0}: {metadata['settings'].get('model')}.")
        differences = _differences(metadata["settings"], first[2]["settings"], _SHARD_OWN_SETTINGS)
        if differences:
            raise ValueError(f"{path}: shard {folder.name} was embedded with other settings than shard "
                             f"{name0}: {'; '.join(differences)}. Embed the shards again with the same "
                             "settings.")
        for name, array in fields.items():
            reference = first[0][name]
            same = (array is None) == (reference is None) and (
                array is None or array.shape[name in ROW_FIELDS:] == reference.shape[name in ROW_FIELDS:])
            if not same:
                raise ValueError(f"{path}: shard {folder.name}: field {name!r} unlike shard {name0}'s.")
        if set(keys) != set(first[1]):
            raise ValueError(f"{path}: shard {folder.name}: item keys of other fields than shard {name0}.")
    cuts = [metadata["settings"].get("shard") for _, _, metadata in parts]
    cuts = [cut if isinstance(cut, dict) else {} for cut in cuts]
    if any("listing" in cut for cut in cuts):
        _check_one_listing(path, folders, parts, cuts)
    elif all(fields["paths"] is not None for fields, _, _ in parts):
        paths = np.concatenate([np.asarray(fields["paths"][:]) for fields, _, _ in parts])
        unique, counts = np.unique(paths, return_counts=True)
        twice = unique[counts > 1].tolist()
        if twice:
            raise ValueError(f"{path}: shards list {len(twice)} image(s) more than once: "
                             f"{', '.join(map(repr, twice[:5]))}{', ...' * (len(twice) > 5)}.")


# Settings that are each shard's own: its place in the split, and where it ran.
_SHARD_OWN_SETTINGS = ("shard", "device", "root")


def _differences(settings, reference, ignore=(), prefix=""):
    """``"key (value, not reference value)"`` for each setting that differs, nested keys dotted.

    >>> _differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
    ['b.c (2, not 3)']
    """
    out = []
    for key in sorted(set(settings) | set(reference), key=str):
        if key in ignore:
            continue
        value, expected = settings.get(key), reference.get(key)
        if isinstance(value, dict) and isinstance(expected, dict):
            out += _differences(value, expected, prefix=f"{prefix}{key}.")
        elif value != expected:
            out.append(f"{prefix}{key} ({value!r}, not {expected!r})")
    return out


def _check_one_listing(path, folders, parts, cuts):
    """Shards cut from one listing of the image folder, that tile it: no image twice, none missing."""
    count = len(folders)
    unlisted = [folder.name for folder, cut in zip(folders, cuts) if "listing" not in cut]
    if unlisted:
        raise ValueError(f"{path}: shard(s) {', '.join(unlisted)} record no listing of the image folder "
                         f"(embedded by an older version): embed them again with --shard i/{count}.")
    groups = {}
    for folder, cut in zip(folders, cuts):
        groups.setdefault(cut["listing"], []).append(folder.name)
    if len(groups) > 1:
        # Which listing is the folder's now, only the folder can tell: every group is named.
        named = "; ".join(f"shard{'s' * (len(g) > 1)} {', '.join(g)}" for g in groups.values())
        raise ValueError(f"{path}: the shards were cut from {len(groups)} different listings of the image "
                         f"folder (images added, removed or changed between the runs): {named}. Embed again "
                         f"the shards of the old listings, or all of them (--shard i/{count}): unchanged "
                         "images are not embedded again.")
    for index, (folder, cut, (fields, _, _)) in enumerate(zip(folders, cuts, parts)):
        n = cut.get("images")
        expected = (index * n // count, (index + 1) * n // count) if isinstance(n, int) else None
        held = (cut.get("start"), cut.get("stop"))
        if held != expected or fields["X"].shape[0] != held[1] - held[0]:
            wanted = "..".join(map(str, expected)) if expected else "?"
            raise ValueError(f"{path}: shard {folder.name} holds images {held[0]}..{held[1]} of {n}, "
                             f"expected {wanted} ({fields['X'].shape[0]} rows); embed it again with "
                             f"--shard {index}/{count}.")


class NpyBlocks:
    """A ``.npy`` file read block by block, each block's values checked: what a dask array wraps.

    Indexing memory-maps the file (once per process) and copies the block
    out; pickling keeps the file name only, so a dask graph ships to the
    workers of a cluster a few bytes per field, and each worker reads its
    own blocks from the shared filesystem.

    Parameters
    ----------
    file : path
        The ``.npy`` file, already checked against its record.
    shape : tuple of int
    dtype : numpy dtype
    check : callable or None
        Called with each block read (raises on bad values).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from clip_invariance.datasets._store_format import NpyBlocks
    >>> file = tempfile.mkdtemp() + "/a.npy"
    >>> np.save(file, np.arange(6.0).reshape(3, 2))
    >>> NpyBlocks(file, (3, 2), np.dtype(float))[1:]
    array([[2., 3.],
           [4., 5.]])
    """

    def __init__(self, file, shape, dtype, check=None):
        self.file = os.fspath(file)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.check = check
        self.ndim = len(self.shape)
        self._array = None

    def __getitem__(self, index):
        if self._array is None:
            self._array = np.load(self.file, allow_pickle=False, mmap_mode="r")
        block = np.array(self._array[index])
        if self.check is not None and block.size:
            self.check(block)
        return block

    def __getstate__(self):
        return {**self.__dict__, "_array": None}  # the file name, never the data


def group_chunks(groups, rows):
    """Chunk sizes of about ``rows`` entries that never split a group of ``groups``.

    Each boundary is moved forward to the first place where no group id seen
    before it appears after it (ids need not be sorted or contiguous).

    Examples
    --------
    >>> group_chunks([0, 0, 1, 1, 1, 2, 3, 3], 2)
    (2, 3, 3)
    >>> group_chunks([0, 1, 0, 2], 1)  # group 0 spans rows 0..2
    (3, 1)
    """
    groups = np.asarray(groups)
    n = len(groups)
    if n == 0:
        return (0,)
    _, inverse = np.unique(groups, return_inverse=True)
    last = np.zeros(inverse.max() + 1, dtype=np.intp)
    np.maximum.at(last, inverse, np.arange(n))
    reach = np.maximum.accumulate(last[inverse])  # the farthest row of any group begun so far
    cuts = np.flatnonzero(reach == np.arange(n)) + 1  # a chunk may end after these rows
    sizes, start = [], 0
    while start < n:
        end = int(cuts[np.searchsorted(cuts, min(start + rows, n))])  # n is always a cut
        sizes.append(end - start)
        start = end
    return tuple(sizes)
