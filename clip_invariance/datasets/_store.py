"""The embedding store: a dataset's embeddings on disk, readable with numpy alone.

A store is a folder of ``.npy`` files, one per field, and a ``store.json``
that lists them (file, shape, dtype), the class and environment names, and
the model and its settings. Every array is saved with ``allow_pickle=False``
(strings as fixed-width unicode), so it opens with
``numpy.load(file, allow_pickle=False, mmap_mode="r")`` and nothing in a
store is ever executed.

The data path is ``arrays -> checked together -> written into a fresh
sibling folder -> swapped in by two renames``: an interrupted save leaves the
previous store (or none), never a half-written one. A store may also hold
``chunks/``, the per-item embeddings of an unfinished
:func:`~clip_invariance.datasets.embed_image_folder`, each chunk written
atomically (temp file, then ``os.replace``).
"""

import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "METADATA_FILE",
    "CHUNK_FOLDER",
    "save_embeddings",
    "load_embeddings",
    "check_store_path",
    "stored_rows",
]

STORE_FORMAT = "clip-invariance embedding store"
STORE_VERSION = 1
METADATA_FILE = "store.json"
CHUNK_FOLDER = "chunks"

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


def save_embeddings(
    path, *, X, y, environments, views=None, class_names=None, environment_names=None,
    prompt_embeddings=None, prompt_ensemble_embeddings=None, text_interventions=None,
    text_view_groups=None, text_intervention_texts=None, text_intervention_styles=None,
    paths=None, settings=None, item_keys=None,
):
    """Write embeddings of any origin into a store folder, atomically.

    Parameters
    ----------
    path : str or path
        The store folder. An existing store there is replaced; any other
        non-empty folder is refused.
    X : array-like of shape (n, D)
        One embedding per image (float32 and float64 are kept as given).
    y : array-like of shape (n,)
        Class of each row: integers indexing ``class_names``, or strings
        (then ``class_names`` defaults to their sorted set).
    environments : array-like of shape (n,)
        Environment of each row, stored as strings.
    views : array-like of shape (n, V, D), default=None
        ``views[i, v]``: the ``v``-th augmented view of row ``i`` (image
        interventions; ``X`` holds the originals).
    class_names, environment_names : list of str, default=None
        Readable names; ``environment_names`` defaults to the sorted set of
        ``environments`` and must contain each of them.
    prompt_embeddings : array-like of shape (C, D) or (M, C, D), default=None
        Class prompts, e.g. the paper's single template "a photo of a {}.".
    prompt_ensemble_embeddings : array-like of shape (M, C, D), default=None
        A template ensemble.
    text_interventions : array-like of shape (T, D), default=None
        Text interventions, with their ``text_view_groups`` (T,) (required
        with them), and optionally the strings ``text_intervention_texts``
        (T,) and the style word of each, ``text_intervention_styles`` (T,).
    paths : array-like of str of shape (n,), default=None
        The image file of each row.
    settings : dict, default=None
        JSON-serialisable record of the model and its settings.
    item_keys : dict, default=None
        Field -> str array of one key per embedding (shape of the field
        without its last axis): what lets an embedding run reuse rows.

    Raises
    ------
    ValueError
        Naming the field, if shapes, dtypes or labels disagree, or values are
        not finite; or if ``path`` is a folder that is not a store.
    TypeError
        If ``settings`` is not a JSON-serialisable dict.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from clip_invariance.datasets import save_embeddings, load_embeddings
    >>> store = tempfile.mkdtemp() + "/store"
    >>> X = np.eye(3, 4, dtype=np.float32)
    >>> save_embeddings(store, X=X, y=["cat", "dog", "cat"], environments=["photo", "photo", "sketch"])
    >>> data = load_embeddings(store)
    >>> data.X.shape, data.y.tolist(), data.class_names, data.environment_names
    ((3, 4), [0, 1, 0], ['cat', 'dog'], ['photo', 'sketch'])
    >>> np.load(store + "/X.npy", allow_pickle=False, mmap_mode="r").dtype
    dtype('float32')
    """
    if settings is not None and not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}.")
    y, class_names = _encode_labels(y, class_names)
    given = {
        "X": X,
        "y": y,
        "environments": environments,
        "views": views,
        "paths": paths,
        "prompt_embeddings": prompt_embeddings,
        "prompt_ensemble_embeddings": prompt_ensemble_embeddings,
        "text_interventions": text_interventions,
        "text_view_groups": text_view_groups,
        "text_intervention_texts": text_intervention_texts,
        "text_intervention_styles": text_intervention_styles,
    }
    arrays = {name: _as_field(name, value) for name, value in given.items() if value is not None}
    if environment_names is None:
        environment_names = sorted(set(arrays["environments"].tolist()))
    class_names = _names("class_names", class_names)
    environment_names = _names("environment_names", environment_names)
    check_fields(arrays, class_names, environment_names)
    keys = _as_keys(item_keys, arrays)
    metadata = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "fields": {name: _record(name, a) for name, a in arrays.items()},
        "item_keys": {name: _record(f"item_keys_{name}", a) for name, a in keys.items()},
        "class_names": class_names,
        "environment_names": environment_names,
        "settings": {} if settings is None else settings,
    }
    try:
        text = json.dumps(metadata, indent=1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"settings must be JSON-serialisable: {exc}") from None

    path = Path(path)
    check_store_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        for name, array in arrays.items():
            np.save(partial / f"{name}.npy", array, allow_pickle=False)
        for name, array in keys.items():
            np.save(partial / f"item_keys_{name}.npy", array, allow_pickle=False)
        (partial / METADATA_FILE).write_text(text)  # last: the folder is complete
        _swap_in(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def load_embeddings(path, *, mmap=True):
    """Read a store written by :func:`save_embeddings`, checking every field.

    Parameters
    ----------
    path : str or path
        The store folder.
    mmap : bool, default=True
        Memory-map the arrays (read-only) instead of reading them into memory.

    Returns
    -------
    store : :class:`~sklearn.utils.Bunch`
        ``X``, ``y``, ``environments``, ``views``, ``paths``,
        ``prompt_embeddings``, ``prompt_ensemble_embeddings``,
        ``text_interventions``, ``text_view_groups``,
        ``text_intervention_texts``, ``text_intervention_styles`` (None when
        absent), ``class_names``, ``environment_names`` (lists, or None for
        unnamed classes), ``settings`` (dict) and ``item_keys`` (dict).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the field, if the store is damaged or inconsistent: no or
        unreadable ``store.json``, another format version, a missing or
        truncated file, a shape or dtype unlike the recorded one.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from clip_invariance.datasets import save_embeddings, load_embeddings
    >>> store = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> save_embeddings(store, X=rng.normal(size=(4, 3)), y=[0, 1, 1, 0], environments=[0, 0, 1, 1],
    ...                 views=rng.normal(size=(4, 2, 3)), class_names=["cat", "dog"])
    >>> data = load_embeddings(store)
    >>> data.views.shape, data.environments.tolist(), data.prompt_embeddings is None
    ((4, 2, 3), ['0', '0', '1', '1'], True)
    """
    path = Path(path)
    if not path.is_dir():
        left = sorted(path.parent.glob(f".{path.name}.old-*"))
        hint = f"; an interrupted save moved it to {str(left[-1])!r} (a save puts it back)" if left else ""
        raise FileNotFoundError(f"Embedding store not found: {str(path)!r}{hint}.")
    metadata = _read_metadata(path)
    fields = dict.fromkeys(FIELDS)
    for name, record in metadata["fields"].items():
        fields[name] = _read_array(path, name, record, mmap)
    check_fields(fields, metadata["class_names"], metadata["environment_names"], where=f"{path}: ")
    keys = {
        name: _read_array(path, f"item_keys[{name}]", record, mmap)
        for name, record in metadata["item_keys"].items()
    }
    for name, array in keys.items():
        _check_keys(name, array, fields.get(name), where=f"{path}: ")
    return Bunch(
        **fields,
        class_names=metadata["class_names"],
        environment_names=metadata["environment_names"],
        settings=metadata["settings"],
        item_keys=keys,
    )


def check_fields(arrays, class_names, environment_names, where=""):
    """Check that the fields of a store agree; raise a ValueError naming the field.

    ``arrays`` maps field names to arrays (or None); the rules are those of
    :func:`save_embeddings`. Used on writing and on reading.
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
    y = np.asarray(arrays["y"])
    if y.size and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        fail("y", f"labels must lie in [0, {n_classes}) (the classes), got {y.min()}..{y.max()}.")
    unknown = sorted(set(np.unique(np.asarray(arrays["environments"])).tolist()) - set(environment_names))
    if unknown:
        fail("environments", f"{unknown} are not in environment_names {environment_names}.")

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
    for name in EMBEDDING_FIELDS:
        array = get(name)
        if array is not None and not np.isfinite(array).all():
            fail(name, "contains NaN or infinite values.")


def check_store_path(path):
    """Make ``path`` ready to receive a store, or refuse it.

    A store that an interrupted save moved aside (a crash between the two
    renames) is put back first.

    Raises
    ------
    ValueError
        If ``path`` is a file, or a non-empty folder without ``store.json``
        or ``chunks/``: saving would delete someone's files.
    """
    path = Path(path)
    if not path.exists():
        moved = sorted(path.parent.glob(f".{path.name}.old-*"), key=os.path.getmtime)
        if moved:
            os.replace(moved[-1], path)
        return
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a folder; choose another store path.")
    if any(path.iterdir()) and not ((path / METADATA_FILE).is_file() or (path / CHUNK_FOLDER).is_dir()):
        raise ValueError(
            f"{str(path)!r} is a non-empty folder that is not an embedding store (no {METADATA_FILE}); "
            "refusing to replace it: choose a new or empty folder."
        )


def stored_rows(path):
    """Item key -> embedding, for every keyed field of a store that can still be read.

    What an embedding run reuses: a damaged field (or store) is skipped with a
    warning, and only its items are embedded again.
    """
    rows, damaged = {}, []
    try:
        metadata = _read_metadata(Path(path))
    except ValueError as exc:
        damaged.append(str(exc))
        metadata = {"item_keys": {}}
    for name, record in metadata["item_keys"].items():
        try:
            keys = _read_array(Path(path), f"item_keys[{name}]", record, mmap=True)
            field = _read_array(Path(path), name, metadata["fields"].get(name), mmap=True)
            _check_keys(name, keys, field)
        except ValueError as exc:
            damaged.append(str(exc))
            continue
        rows.update(zip(keys.ravel().tolist(), field.reshape(-1, field.shape[-1])))
    if damaged:
        warnings.warn(f"Embedding again the items of damaged store fields: {'; '.join(damaged)}", UserWarning,
                      stacklevel=2)
    return rows


# ------------------------------------------------------------ writing side
def _encode_labels(y, class_names):
    y = np.asarray(y)
    if y.dtype.kind not in "USO":
        return y, class_names
    labels = y.astype(str)
    names = sorted(set(labels.tolist())) if class_names is None else [str(c) for c in class_names]
    code = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels.tolist()) - set(code))
    if unknown:
        raise ValueError(f"y: labels {unknown} are not in class_names {names}.")
    return np.array([code[label] for label in labels.tolist()], dtype=np.int64), names


def _names(name, names):
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError(f"{name} must be a list of strings, not a single string.")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate names in {names}.")
    return names


def _as_field(name, value):
    kind, ndims = FIELDS[name]
    if kind == "str":
        array = np.asarray(value)
        flat = [os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in array.ravel().tolist()]
        array = np.array(flat, dtype=str).reshape(array.shape)
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected numbers, got an array of {array.dtype}.")
        if kind == "int":
            if array.dtype.kind == "f" and array.size:  # np.asarray([]) is float
                raise ValueError(f"{name}: expected integer labels, got {array.dtype}.")
            array = array.astype(np.int64)
        elif array.dtype not in (np.float32, np.float64):  # ints, bools, float16: widen
            array = array.astype(np.float32 if array.dtype == np.float16 else np.float64)
    if array.ndim not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))} axes, got shape {array.shape}.")
    return np.ascontiguousarray(array)


def _as_keys(item_keys, arrays):
    keys = {}
    for name, value in (item_keys or {}).items():
        if name not in EMBEDDING_FIELDS or name not in arrays:
            raise ValueError(f"item_keys[{name!r}]: no such embedding field in this store.")
        keys[name] = np.asarray(value, dtype=str)
        _check_keys(name, keys[name], arrays[name])
    return keys


def _check_keys(name, keys, field, where=""):
    if field is None or keys.shape != field.shape[:-1] or keys.dtype.kind != "U":
        expected = "no field" if field is None else f"shape {field.shape[:-1]}"
        raise ValueError(f"{where}item_keys[{name}]: {keys.dtype} of shape {keys.shape}, expected str of "
                         f"{expected}.")


def _record(name, array):
    return {"file": f"{name}.npy", "shape": list(array.shape), "dtype": array.dtype.str}


def _swap_in(partial, path):
    """Replace ``path`` by the complete folder ``partial`` with two renames."""
    if not path.exists():
        os.replace(partial, path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    # A crash here leaves no store at `path` (load says where the old one is), never a mixed one.
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------ reading side
def _read_metadata(path):
    file = path / METADATA_FILE
    if not file.is_file():
        chunks = (path / CHUNK_FOLDER).is_dir()
        raise ValueError(f"{path}: no {METADATA_FILE}" + (
            "; this is an unfinished embedding run: run it again to resume." if chunks else
            "; not an embedding store."))
    try:
        metadata = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: damaged {METADATA_FILE} ({exc}).") from None
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
    unknown = sorted(set(metadata["fields"]) - set(FIELDS))
    if unknown:
        raise ValueError(f"{file}: unknown fields {unknown}.")
    return metadata


def _read_array(folder, name, record, mmap):
    try:
        file, shape, dtype = record["file"], tuple(record["shape"]), np.dtype(record["dtype"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{folder}: field {name!r}: bad record {record!r} ({exc}).") from None
    if not isinstance(file, str) or os.path.basename(file) != file or not file.endswith(".npy"):
        raise ValueError(f"{folder}: field {name!r}: file {file!r} must be a .npy file inside the store.")
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
