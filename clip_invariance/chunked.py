"""Dask arrays in, the same estimators out: statistics per chunk, lazy maps over rows.

Embeddings larger than one machine's memory arrive as a dask array chunked
along rows. The projector's sufficient statistics are sums over rows
(:mod:`clip_invariance.statistics`), so each chunk's statistics are computed
where the chunk lives, on a worker, and added up pairwise in a tree: the
client receives one :class:`~clip_invariance.statistics.InterventionStatistics`,
two ``(D, D)`` float64 matrices, whatever the number of rows. Prediction is
row-wise, so ``transform`` and ``predict`` of a dask array are the in-memory
methods mapped lazily over the chunks.

The data path: ``check_row_chunks -> align_labels -> check_complete_groups
-> chunked_statistics`` for a fit, :func:`map_rows` (or
:func:`map_classifier_rows`) for a prediction.

dask is imported here only once the input is a dask array:
:func:`is_dask_array` recognises one without importing dask, so
``import clip_invariance`` stays free of it.

Examples
--------
>>> import dask.array as da
>>> import numpy as np
>>> from clip_invariance.chunked import chunked_statistics
>>> X = da.from_array(np.arange(12.0).reshape(6, 2), chunks=(2, 2))
>>> view_groups = np.array([0, 0, 1, 1, 2, 2])
>>> statistics = chunked_statistics(X, view_groups=view_groups)
>>> statistics.n_samples, statistics.group_dof
(6, 3)
>>> bad = np.array([0, 1, 1, 2, 2, 0])  # group 0 has rows in chunks 0 and 2
>>> chunked_statistics(X, view_groups=bad)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: view_groups: group 0 has rows in chunk 0 (rows 0-1) and chunk 2 (rows 4-5) of X...
"""

import copy
import sys

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from .statistics import InterventionStatistics, check_labels

__all__ = [
    "align_labels",
    "check_complete_groups",
    "check_row_chunks",
    "chunked_statistics",
    "is_dask_array",
    "map_classifier_rows",
    "map_rows",
]

# Statistics added per task of the tree: a task holds split_every pairs of (D, D)
# matrices (8 x 4 MiB at D = 512), and the tree is log_8(chunks) deep.
SPLIT_EVERY = 8


def is_dask_array(X):
    """Whether ``X`` is a dask array; never imports dask.

    A dask array can only exist once ``dask.array`` is imported, so the
    module table answers without importing it.

    Examples
    --------
    >>> import numpy as np
    >>> is_dask_array(np.zeros(3))
    False
    """
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def check_row_chunks(X, input_name="X"):
    """Check that a dask array is 2-D, chunked along rows only, of a float dtype.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features)
    input_name : str, default="X"
        The name used in messages.

    Returns
    -------
    X : dask array
        ``X``, lazily converted to float64 unless it is float32 or float64.

    Examples
    --------
    >>> import dask.array as da
    >>> check_row_chunks(da.ones((4, 6), chunks=(2, 3)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X is chunked along its columns (2 column chunks): ... X.rechunk({1: -1}) ...
    """
    if X.ndim != 2:
        raise ValueError(f"{input_name} must be two-dimensional, got shape {X.shape}.")
    if any(np.isnan(size) for size in X.chunks[0]):
        raise ValueError(f"{input_name} has unknown chunk sizes along its rows: call "
                         f"{input_name}.compute_chunk_sizes() first.")
    if len(X.chunks[1]) > 1:
        raise ValueError(
            f"{input_name} is chunked along its columns ({len(X.chunks[1])} column chunks): every "
            f"chunk must hold whole rows. Rechunk with {input_name}.rechunk({{1: -1}}) (one chunk "
            "across the features, as many rows per chunk as before)."
        )
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is "
                         "required.")
    if X.dtype in (np.float32, np.float64):
        return X
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{input_name} must hold numbers, got dtype {X.dtype}.")
    return X.astype(np.float64)


def align_labels(labels, X, name):
    """One label per row of dask ``X``, as a dask array chunked like ``X``'s rows.

    Parameters
    ----------
    labels : array-like or dask array of shape (n_samples,), or None
    X : dask array of shape (n_samples, n_features)
    name : str
        The argument's name, for the error messages.

    Returns
    -------
    labels : dask array of shape (n_samples,) or None
        Checked per chunk on the workers (by
        :func:`~clip_invariance.statistics.check_labels`).
    """
    if labels is None:
        return None
    import dask.array as da

    n = X.shape[0]
    if not is_dask_array(labels):
        return da.from_array(check_labels(labels, n, name), chunks=(X.chunks[0],))
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}.")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but X has {n} rows.")
    return labels if labels.chunks[0] == X.chunks[0] else labels.rechunk((X.chunks[0],))


def check_complete_groups(view_groups, split_every=SPLIT_EVERY):
    """Raise if a view group has rows in two chunks.

    Each chunk's statistics are those of complete groups only if no group
    crosses a chunk boundary. On the workers, every chunk reports its
    smallest and largest group id; when the client finds these ranges
    disjoint (ids that grow with the rows, as ``arange(n) // n_views`` or a
    store's order), no group is in two chunks. Otherwise a second pass lists
    every chunk's ids and merges the lists ``split_every`` at a time, noting
    the first id seen in two chunks: the last merge holds every id once (12
    bytes a group for int64 ids). The client receives the ranges and at most
    one conflict, never the ids, and ``X`` is not read.

    Parameters
    ----------
    view_groups : dask array of shape (n_samples,)
        Chunked like the rows of ``X`` (see :func:`align_labels`).
    split_every : int, default=8
        Lists merged per task.

    Raises
    ------
    ValueError
        Naming the group, the two chunks and their rows, and how to rechunk.
    """
    import dask

    blocks = view_groups.to_delayed().ravel()
    ranges = dask.compute(*[dask.delayed(_id_range)(block) for block in blocks])
    ranges = sorted((r + (index,) for index, r in enumerate(ranges) if r is not None), key=lambda r: r[0])
    if all(previous[1] < following[0] for previous, following in zip(ranges, ranges[1:])):
        return
    parts = [dask.delayed(_chunk_groups)(block, index) for index, block in enumerate(blocks)]
    conflict = dask.compute(dask.delayed(_conflict)(_tree(parts, _merge_groups, split_every)))[0]
    if conflict is not None:
        group, first, second = conflict
        bounds = np.cumsum((0,) + view_groups.chunks[0])
        raise ValueError(
            f"view_groups: group {group!r} has rows in chunk {first} (rows {bounds[first]}-"
            f"{bounds[first + 1] - 1}) and chunk {second} (rows {bounds[second]}-{bounds[second + 1] - 1}) "
            "of X: every chunk must hold complete view groups (all views of one content), or the "
            "within-group scatter is wrong. Keep the views of a group in adjacent rows and choose "
            "chunk boundaries between groups, e.g. X.rechunk({0: sizes}) with sizes that end on group "
            "boundaries, or load_embeddings(path, chunks=rows), which rounds chunks to whole groups."
        )


def chunked_statistics(X, *, view_groups=None, y=None, environments=None, split_every=SPLIT_EVERY):
    """The statistics of a dask array: per chunk on the workers, summed in a tree.

    Equal to ``sum(InterventionStatistics.from_block(...))`` over the chunks,
    i.e. to ``partial_fit`` over the same blocks in memory. Runs on the
    current dask scheduler (a ``dask.distributed.Client`` when one is active);
    only the ``(D, D)`` statistics reach the caller.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features)
        Chunked along rows only.
    view_groups : array-like or dask array of shape (n_samples,), default=None
        Group ids; every chunk must hold complete groups
        (:func:`check_complete_groups`).
    y, environments : array-like or dask array of shape (n_samples,), default=None
        Class and environment labels; pooled across chunks by label.
    split_every : int, default=8
        Statistics added per task of the tree.

    Returns
    -------
    statistics : :class:`~clip_invariance.statistics.InterventionStatistics`
    """
    import dask

    X = check_row_chunks(X)
    labels = {name: align_labels(value, X, name)
              for name, value in (("view_groups", view_groups), ("y", y), ("environments", environments))}
    if labels["environments"] is not None and labels["y"] is None:
        raise ValueError("environments were given without y: cells are classes first.")
    if labels["view_groups"] is not None:
        check_complete_groups(labels["view_groups"], split_every)
    blocks = {name: value.to_delayed().ravel() for name, value in labels.items() if value is not None}
    parts = [
        dask.delayed(InterventionStatistics.from_block)(block, **{name: b[i] for name, b in blocks.items()})
        for i, block in enumerate(X.to_delayed().ravel())
    ]
    return dask.compute(_tree(parts, _add, split_every))[0]


def map_rows(estimator, method, X, *, n_columns=None, dtype, check_features=True):
    """``getattr(estimator, method)`` of every row chunk of ``X``, as a lazy dask array.

    Whether the estimator is fitted, and the number of features of ``X``, are
    checked now; the method runs in memory on each chunk, with every check it
    makes on the values (raised when the result is computed). The estimator
    is copied into the graph once, so refitting it later does not change the
    result.

    Parameters
    ----------
    estimator : fitted estimator
    method : str
        Its method to apply, e.g. ``"transform"`` or ``"predict"``.
    X : dask array of shape (n_samples, n_features)
        Chunked along rows only.
    n_columns : int or None, default=None
        Columns of the method's output; None for a 1-D output (labels).
    dtype : dtype
        dtype of the method's output.
    check_features : bool, default=True
        Check ``X`` against the estimator's ``n_features_in_`` (False for a
        method that reads another width, as ``inverse_transform``).

    Returns
    -------
    result : dask array of shape (n_samples, n_columns) or (n_samples,)
        Chunked like the rows of ``X``; nothing is computed yet.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.preprocessing import StandardScaler
    >>> scaler = StandardScaler().fit([[0.0], [2.0]])
    >>> lazy = map_rows(scaler, "transform", da.ones((4, 1), chunks=2), n_columns=1, dtype=float)
    >>> lazy.chunks, lazy.compute().ravel()
    (((2, 2), (1,)), array([0., 0., 0., 0.]))
    """
    import dask

    check_is_fitted(estimator)
    X = check_row_chunks(X)
    if check_features:
        validate_data(estimator, X, skip_check_array=True, reset=False)
    frozen = dask.delayed(copy.deepcopy(estimator), pure=False)
    dtype = np.dtype(dtype)
    if n_columns is None:
        shape = {"chunks": (X.chunks[0],), "drop_axis": 1, "meta": np.empty((0,), dtype)}
    else:
        shape = {"chunks": (X.chunks[0], (n_columns,)), "meta": np.empty((0, n_columns), dtype)}
    # meta given: dask never calls the method on an empty array to guess the output.
    return X.map_blocks(_apply, frozen, method, dtype=dtype, **shape)


def map_classifier_rows(classifier, method, X):
    """A fitted classifier's row-wise ``method`` of dask ``X``, lazily (see :func:`map_rows`).

    ``predict`` gives labels of the dtype of ``classes_``; ``predict_proba``,
    ``predict_log_proba`` and ``decision_function`` a float64 column per class
    (one 1-D score for a binary ``decision_function``, as in scikit-learn);
    any other method, such as ``predict_uncertainty``, one float64 per row.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.dummy import DummyClassifier
    >>> clf = DummyClassifier().fit([[0.0], [1.0], [2.0]], ["a", "b", "b"])
    >>> X = da.zeros((4, 1), chunks=2)
    >>> map_classifier_rows(clf, "predict", X).compute()
    array(['b', 'b', 'b', 'b'], dtype='<U1')
    >>> map_classifier_rows(clf, "predict_proba", X).chunks
    ((2, 2), (2,))
    """
    check_is_fitted(classifier)
    n_classes = len(classifier.classes_)
    if method == "predict":
        return map_rows(classifier, method, X, dtype=classifier.classes_.dtype)
    if method in ("predict_proba", "predict_log_proba") or (method == "decision_function" and n_classes > 2):
        return map_rows(classifier, method, X, n_columns=n_classes, dtype=np.float64)
    return map_rows(classifier, method, X, dtype=np.float64)


# ------------------------------------------------------------ on the workers
def _apply(block, estimator, method):
    return getattr(estimator, method)(block)


def _tree(parts, combine, split_every):
    """Combine delayed ``parts`` ``split_every`` at a time until one is left."""
    import dask

    if not parts:
        raise ValueError("X has no chunks.")
    while len(parts) > 1:
        parts = [dask.delayed(combine)(*parts[i : i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def _add(*statistics):
    return sum(statistics[1:], statistics[0])


def _id_range(block):
    """Smallest and largest group id of one chunk (None when empty)."""
    ids = np.unique(check_labels(block, len(block), "view_groups"))
    return (_python_scalar(ids[0]), _python_scalar(ids[-1])) if len(ids) else None


def _chunk_groups(block, index):
    """``(sorted unique ids, the chunk of each, first conflict)`` of one chunk."""
    ids = np.unique(check_labels(block, len(block), "view_groups"))
    return ids, np.full(len(ids), index, dtype=np.int32), None


def _merge_groups(*parts):
    """Merge the id lists of several chunks; note the first id found in two of them."""
    ids = np.concatenate([part[0] for part in parts])
    chunks = np.concatenate([part[1] for part in parts])
    conflict = next((part[2] for part in parts if part[2] is not None), None)
    order = np.argsort(ids, kind="stable")
    ids, chunks = ids[order], chunks[order]
    repeated = np.flatnonzero(ids[1:] == ids[:-1])
    if conflict is None and repeated.size:
        i = repeated[0]
        first, second = sorted((int(chunks[i]), int(chunks[i + 1])))
        conflict = (_python_scalar(ids[i]), first, second)
    keep = np.ones(len(ids), dtype=bool)
    keep[repeated + 1] = False
    return ids[keep], chunks[keep], conflict


def _conflict(part):
    return part[2]


def _python_scalar(value):
    return value.item() if isinstance(value, np.generic) else value
