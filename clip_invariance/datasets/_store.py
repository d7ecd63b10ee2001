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
``pending/``, the per-item embeddings of an unfinished
:func:`~clip_invariance.embedding.embed_image_folder`, each save written
atomically (temp file, then ``os.replace``). A sharded store is a folder of
such stores, ``shards/IIIII-of-NNNNN``, each written by one shard alone and
read as one store. The read path is ``store.json -> every file checked
against its record -> the fields checked together -> arrays``: memory-mapped,
in memory, or dask arrays read block by block (values checked per block).
"""

import json
import os
import shutil
import uuid
import warnings
from functools import partial
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._store_format import (
    EMBEDDING_FIELDS,
    FIELDS,
    METADATA_FILE,
    PENDING_FOLDER,
    ROW_FIELDS,
    SHARD_FOLDER,
    STORE_FORMAT,
    STORE_VERSION,
    NpyBlocks,
    check_block,
    check_fields,
    check_keys,
    check_shards_agree,
    field_record,
    group_chunks,
    is_sharded,
    is_store,
    parse_shard_name,
    read_array,
    read_metadata,
    regular_file_problem,
    shard_folders,
    shard_name,
)

__all__ = [
    "check_shard_path",
    "check_store_path",
    "is_store",
    "known_rows",
    "load_embeddings",
    "save_embeddings",
    "save_pending",
]


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
    >>> from clip_invariance.datasets import load_embeddings, save_embeddings
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
        "fields": {name: field_record(name, a) for name, a in arrays.items()},
        "item_keys": {name: field_record(f"item_keys_{name}", a) for name, a in keys.items()},
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
    # mkdir, not mkdtemp (always 0700): the store follows the umask, so a group can share it.
    partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex}"
    partial.mkdir()
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


def load_embeddings(path, *, mmap=True, chunks=None):
    """Read a store written by :func:`save_embeddings` (or a sharded store), checking every field.

    Parameters
    ----------
    path : str or path
        The store folder, or a sharded store: a folder whose ``shards/``
        holds the stores of ``embed_image_folder(..., shard=(i, n))``, read as
        one store, concatenated in shard order.
    mmap : bool, default=True
        Memory-map the arrays (read-only) instead of reading them into memory
        (a sharded store is concatenated in memory, unless ``chunks``).
    chunks : int, default=None
        Return every array field as a dask array of about ``chunks`` rows per
        chunk (needs the ``dask`` extra), read from the files only when
        computed: nothing is read here, and each block's values are checked
        as it is read. Every image's views are in its own row of ``views``,
        so each chunk holds complete view groups; the text fields' chunks are
        moved to whole groups of ``text_view_groups``; a sharded store's
        chunks also end at each shard's end. The class prompts are one chunk.

    Returns
    -------
    store : :class:`~sklearn.utils.Bunch`
        ``X``, ``y``, ``environments``, ``views``, ``paths``,
        ``prompt_embeddings``, ``prompt_ensemble_embeddings``,
        ``text_interventions``, ``text_view_groups``,
        ``text_intervention_texts``, ``text_intervention_styles`` (None when
        absent), ``class_names``, ``environment_names`` (lists, or None for
        unnamed classes), ``settings`` (dict; a sharded store's has
        ``"shards"``, its number of shards) and ``item_keys`` (dict).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the field, if the store is damaged or inconsistent: no or
        unreadable ``store.json``, another format version, a missing or
        truncated file, a shape or dtype unlike the recorded one; for a
        sharded store, missing or unfinished shards (all listed), shards of
        different counts, models or settings, or cut from different listings
        of the image folder (each listing's shards named), or not tiling it.
        A field file that is a FIFO or a symbolic link, a ``store.json``
        nested too deeply, and duplicate class or environment names are
        refused too.
    ImportError
        With ``chunks``, if dask is not installed.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from clip_invariance.datasets import load_embeddings, save_embeddings
    >>> store = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> save_embeddings(store, X=rng.normal(size=(4, 3)), y=[0, 1, 1, 0], environments=[0, 0, 1, 1],
    ...                 views=rng.normal(size=(4, 2, 3)), class_names=["cat", "dog"])
    >>> data = load_embeddings(store)
    >>> data.views.shape, data.environments.tolist(), data.prompt_embeddings is None
    ((4, 2, 3), ['0', '0', '1', '1'], True)
    >>> lazy = load_embeddings(store, chunks=3)  # dask arrays
    >>> lazy.X.chunks, np.array_equal(lazy.views.compute(), data.views)
    (((3, 1), (3,)), True)
    """
    if chunks is not None:
        if isinstance(chunks, bool) or not isinstance(chunks, Integral):
            raise TypeError(f"chunks must be a number of rows (int) or None, got {type(chunks).__name__}.")
        if chunks < 1:
            raise ValueError(f"chunks must be at least 1 row, got {chunks}.")
        try:
            import dask.array  # noqa: F401
        except ImportError:
            raise ImportError("load_embeddings(..., chunks=...) returns dask arrays and needs dask: "
                              "pip install 'clip-invariance[dask]'.") from None
    path = Path(path)
    if not path.is_dir():
        left = sorted(path.parent.glob(f".{path.name}.old-*"))
        hint = f"; an interrupted save moved it to {str(left[-1])!r} (a save puts it back)" if left else ""
        raise FileNotFoundError(f"Embedding store not found: {str(path)!r}{hint}.")
    lazy = chunks is not None
    folders = shard_folders(path) if is_sharded(path) else [path]
    parts = [_read_store(folder, mmap=mmap or lazy, lazy=lazy) for folder in folders]
    if len(parts) > 1:
        check_shards_agree(path, folders, parts)
    text_chunks = None
    if lazy and parts[0][0]["text_view_groups"] is not None:  # a few hundred ids, read now
        text_chunks = group_chunks(parts[0][0]["text_view_groups"][:], chunks)
    fields, keys = ({name: _joined(name, [part[i][name] for part in parts], chunks, text_chunks)
                     for name in names} for i, names in ((0, FIELDS), (1, parts[0][1])))
    metadata = parts[0][2]
    settings = dict(metadata["settings"])
    if len(parts) > 1:
        settings.pop("shard", None)
        settings["shards"] = len(parts)
    return Bunch(
        **fields,
        class_names=metadata["class_names"],
        environment_names=metadata["environment_names"],
        settings=settings,
        item_keys=keys,
    )


def _read_store(path, *, mmap, lazy):
    """``(fields, item keys, metadata)`` of one store folder; with ``lazy``, values checked per block."""
    metadata = read_metadata(path)
    where = f"{path}: "
    fields = dict.fromkeys(FIELDS)
    for name, record in metadata["fields"].items():
        fields[name] = read_array(path, name, record, mmap)
    n_classes = check_fields(fields, metadata["class_names"], metadata["environment_names"], where=where,
                             values=not lazy)
    keys = {name: read_array(path, f"item_keys[{name}]", record, mmap)
            for name, record in metadata["item_keys"].items()}
    for name, array in keys.items():
        check_keys(name, array, fields.get(name), where=where)
    if lazy:  # partial of a module function: the graph pickles, for the workers of a cluster
        def checker(name):
            return partial(check_block, name, n_classes, metadata["environment_names"], where)

        fields = {name: None if a is None else NpyBlocks(a.filename, a.shape, a.dtype, checker(name))
                  for name, a in fields.items()}
        keys = {name: NpyBlocks(a.filename, a.shape, a.dtype) for name, a in keys.items()}
    return fields, keys, metadata


def _joined(name, arrays, chunks, text_chunks):
    """One field from the shards: row fields concatenated, the others the first shard's."""
    if arrays[0] is None:
        return None
    if name not in ROW_FIELDS:
        arrays = arrays[:1]
    if chunks is None:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    import dask.array as da

    lazy = []
    for blocks in arrays:
        rows = blocks.shape[0]
        if name in ROW_FIELDS:
            sizes = tuple(min(chunks, rows - start) for start in range(0, rows, chunks))
        elif name.startswith("text_"):
            sizes = text_chunks
        else:
            sizes = rows  # class prompts: one chunk
        lazy.append(da.from_array(blocks, chunks=(sizes,) + blocks.shape[1:],
                                  meta=np.empty((0,) * blocks.ndim, dtype=blocks.dtype)))
    return lazy[0] if len(lazy) == 1 else da.concatenate(lazy)


def check_store_path(path, *, model=None, overwrite=False):
    """Make ``path`` ready to receive a store, or refuse it.

    A store that an interrupted save moved aside (a crash between the two
    renames) is put back first.

    Parameters
    ----------
    path : str or path
        The store folder.
    model : dict, default=None
        The ``settings["model"]`` the new store will record: a store there
        of another model (``model_name`` or ``pretrained``) is refused unless
        ``overwrite``; one of the same model with other weights files or
        settings is replaced, with a warning. For a shard's folder, so is a
        finished sibling shard of another model.
    overwrite : bool, default=False
        Replace a store of another model.

    Raises
    ------
    ValueError
        If ``path`` is a file, or a non-empty folder without ``store.json``
        or ``pending/``: saving would delete someone's files; or a store of
        another model than ``model``, without ``overwrite``.
    """
    path = Path(path)
    if model is not None and not overwrite and path.parent.name == SHARD_FOLDER and path.parent.is_dir():
        _check_sibling_shards(path, model)
    if not path.exists():
        moved = sorted(path.parent.glob(f".{path.name}.old-*"), key=os.path.getmtime)
        if moved:
            os.replace(moved[-1], path)
        return
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a folder; choose another store path.")
    if is_sharded(path):
        raise ValueError(f"{str(path)!r} is a sharded store ({SHARD_FOLDER}/): embed into it shard by shard "
                         "(shard=(i, n), --shard i/N), or choose another folder.")
    if any(path.iterdir()) and not ((path / METADATA_FILE).is_file() or (path / PENDING_FOLDER).is_dir()):
        raise ValueError(
            f"{str(path)!r} is a non-empty folder that is not an embedding store (no {METADATA_FILE}); "
            "refusing to replace it: choose a new or empty folder."
        )
    if model is not None and not overwrite and (path / METADATA_FILE).is_file():
        _check_same_model(path, model)


def _check_same_model(path, model):
    """Refuse to replace a store of another model; warn when the same model's weights changed."""
    try:
        old = read_metadata(path)["settings"].get("model")
    except ValueError:
        return  # a damaged store: what still reads is salvaged, by item keys
    if old == model:
        return
    if not isinstance(old, dict) or _model_label(old) != _model_label(model):
        raise ValueError(f"{str(path)!r} holds embeddings of {_model_label(old)}; this run embeds with "
                         f"{_model_label(model)}. Pass overwrite=True (--overwrite) to replace that store, "
                         "or choose another store folder.")
    changed = ", ".join(key for key in sorted(set(old) | set(model)) if old.get(key) != model.get(key))
    warnings.warn(f"{str(path)!r}: the weights or settings of {_model_label(model)} changed since the store "
                  f"was embedded ({changed}): every item is embedded again.", UserWarning, stacklevel=3)


def _check_sibling_shards(path, model):
    """Refuse to embed a shard with another model than its finished siblings: the store could not load."""
    for sibling in sorted(path.parent.iterdir()):
        finished = (sibling / METADATA_FILE).is_file()
        if sibling == path or parse_shard_name(sibling.name) is None or not finished:
            continue
        try:
            old = read_metadata(sibling)["settings"].get("model")
        except ValueError:
            continue  # named when the store is read
        if _model_label(old) != _model_label(model):
            raise ValueError(f"{str(path.parent.parent)!r}: shard {sibling.name} of this store holds "
                             f"embeddings of {_model_label(old)}; this run embeds with "
                             f"{_model_label(model)}. Embed every shard with one model (overwrite=True, "
                             "--overwrite, to start them over with this one), or choose another store "
                             "folder.")


def _model_label(model):
    """A model as a user named it: architecture and weights.

    >>> _model_label({"model_name": "RN50", "pretrained": {"file": "/w.pt", "size": 1, "mtime_ns": 2}})
    'RN50 (/w.pt)'
    """
    if not isinstance(model, dict):
        return "no recorded model"
    pretrained = model.get("pretrained")
    if isinstance(pretrained, dict):
        pretrained = pretrained.get("file")
    return f"{model.get('model_name')} ({'random weights' if pretrained is None else pretrained})"


def check_shard_path(path, index, count):
    """The folder of shard ``index`` of ``count`` in the sharded store ``path``, ready to receive it.

    Shards only ever write their own folder, ``path/shards/IIIII-of-NNNNN``:
    ``n`` of them may run at once on machines sharing the filesystem.

    Raises
    ------
    ValueError
        If ``path`` is an unsharded store or another non-empty folder, or
        holds shards of another count than ``count``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a folder; choose another store path.")
    if (path / METADATA_FILE).is_file():
        raise ValueError(f"{str(path)!r} is an unsharded store; embed the shards into another folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / SHARD_FOLDER).is_dir():
        raise ValueError(f"{str(path)!r} is a non-empty folder that is not an embedding store; refusing to "
                         "write into it: choose a new or empty folder.")
    shards = path / SHARD_FOLDER
    names = os.listdir(shards) if shards.is_dir() else []
    counts = sorted({parsed[1] for parsed in map(parse_shard_name, names) if parsed is not None} - {count})
    if counts:
        raise ValueError(f"{str(path)!r} holds shards of a split into {counts[0]}; this run splits into "
                         f"{count}: use --shard i/{counts[0]}, or another store.")
    folder = shards / shard_name(index, count)
    check_store_path(folder)
    return folder


def _stored_rows(path, dim, dropped):
    """Item key -> embedding, for every keyed field of a store that can still be read.

    What an embedding run reuses: a damaged field (or store) is skipped with a
    warning, and only its items are embedded again; damaged rows are added
    to ``dropped``.
    """
    rows, damaged = {}, []
    try:
        metadata = read_metadata(Path(path))
    except ValueError as exc:
        damaged.append(str(exc))
        metadata = {"item_keys": {}}
    for name, record in metadata["item_keys"].items():
        try:
            keys = read_array(Path(path), f"item_keys[{name}]", record, mmap=True)
            field = read_array(Path(path), name, metadata["fields"].get(name), mmap=True)
            check_keys(name, keys, field)
        except ValueError as exc:
            damaged.append(str(exc))
            continue
        file = Path(path) / metadata["fields"][name]["file"]
        rows.update(_good_rows(keys.ravel(), field.reshape(-1, field.shape[-1]), dim, file, dropped))
    if damaged:
        warnings.warn(f"Embedding again the items of damaged store fields: {'; '.join(damaged)}", UserWarning,
                      stacklevel=3)
    return rows


def _good_rows(keys, embeddings, dim, file, dropped):
    """``(key, row)`` pairs of the finite rows of ``dim`` features; what is dropped is noted in ``dropped``.

    A NaN row reused would fail the finished store's check, naming no file,
    on every later run: it is dropped, and its item embedded again.
    """
    if dim is not None and embeddings.shape[-1] != dim:
        dropped.append(f"{file} ({embeddings.shape[-1]} features, not {dim})")
        return []
    # Block by block, and rows kept as views: a memory-mapped field is never copied whole.
    step = 1 << 16
    finite = np.concatenate([np.isfinite(embeddings[i : i + step]).all(axis=-1)
                             for i in range(0, len(embeddings), step)] or [np.ones(0, bool)])
    keys = np.asarray(keys).tolist()
    if finite.all():
        return zip(keys, embeddings)
    dropped.append(f"{file} ({int((~finite).sum())} rows not finite)")
    return [(keys[i], embeddings[i]) for i in np.flatnonzero(finite)]


def known_rows(store, dim=None):
    """Item key -> embedding, from a store's arrays (memory-mapped) and its unfinished ``pending/``.

    What an embedding run that resumes into ``store`` can reuse; unreadable
    fields and pending files are skipped with a warning, and only their items are
    embedded again. Rows that are not finite, or (given ``dim``) not of
    ``dim`` features, are dropped with one warning naming their files, and
    their items embedded again.
    """
    store = Path(store)
    dropped = []
    known = _stored_rows(store, dim, dropped) if (store / METADATA_FILE).is_file() else {}
    if store.is_dir():
        known.update(_read_pending(store, dim, dropped))
    if dropped:
        warnings.warn(f"Dropping damaged rows of {'; '.join(dropped)}: their items are embedded again.",
                      UserWarning, stacklevel=2)
    return known


def save_pending(path, keys, embeddings):
    """Save embeddings under their item keys in ``path/pending/``, atomically.

    A reader sees the whole file or none of it: it is written to a temporary
    file and renamed.
    """
    folder = Path(path) / PENDING_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # not mkstemp's 0600: the umask's
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.asarray(keys, dtype=str), embeddings=np.asarray(embeddings))
        os.replace(tmp, folder / f"{uuid.uuid4().hex}.npz")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_pending(path, dim, dropped):
    """Every embedding in ``path/pending/``, as a dict from item key to row.

    A file that cannot be read (cut short by a crash, foreign, not a regular
    file) is skipped with a warning: its items are embedded again. Damaged
    rows are added to ``dropped``.
    """
    rows, damaged = {}, []
    for file in sorted((Path(path) / PENDING_FOLDER).glob("*.npz")):
        try:
            problem = regular_file_problem(file)
            if problem:
                raise ValueError(problem)
            with np.load(file, allow_pickle=False) as saved:
                keys, embeddings = saved["keys"], saved["embeddings"]
            if keys.ndim != 1 or embeddings.ndim != 2 or len(keys) != len(embeddings):
                raise ValueError(f"keys {keys.shape} do not match embeddings {embeddings.shape}")
            if keys.dtype.kind != "U" or embeddings.dtype.kind != "f":
                raise ValueError(f"keys of {keys.dtype} and embeddings of {embeddings.dtype}")
        except Exception as exc:  # whatever is in the file, its items are recomputed
            damaged.append(f"{file.name} ({type(exc).__name__}: {exc})")
            continue
        rows.update(_good_rows(keys, embeddings, dim, f"{PENDING_FOLDER}/{file.name}", dropped))
    if damaged:
        warnings.warn(f"Skipping {len(damaged)} unreadable pending file(s): {'; '.join(damaged)}",
                      UserWarning, stacklevel=3)
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
        check_keys(name, keys[name], arrays[name])
    return keys


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


