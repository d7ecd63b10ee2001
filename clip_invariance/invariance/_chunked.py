"""The sufficient statistics of a dask array: per chunk on the workers, summed in a tree.

Embeddings larger than one machine's memory arrive as a dask array chunked
along rows. The projector's sufficient statistics are sums over rows
(:class:`InterventionStatistics`), so each chunk's statistics are computed
where the chunk lives, on a worker, and added up pairwise in a tree: the
client receives one :class:`InterventionStatistics`,
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
>>> from clip_invariance.invariance import chunked_statistics
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

import numpy as np

from .._utils import align_labels, check_labels, check_row_chunks, chunk_error
from ._statistics import InterventionStatistics, _python_scalar

__all__ = ["check_complete_groups", "chunked_statistics"]

# Statistics added per task of the tree: a task holds split_every pairs of (D, D)
# matrices (8 x 4 MiB at D = 512), and the tree is log_8(chunks) deep.
SPLIT_EVERY = 8


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
    starts = np.cumsum((0,) + view_groups.chunks[0])
    ranges = dask.compute(*[dask.delayed(_id_range)(block, i, starts[i]) for i, block in enumerate(blocks)])
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
        Group ids; every chunk must hold complete groups (checked before
        ``X`` is read: a group found in two chunks is a ValueError).
    y, environments : array-like or dask array of shape (n_samples,), default=None
        Class and environment labels; pooled across chunks by label.
    split_every : int, default=8
        Statistics added per task of the tree.

    Returns
    -------
    statistics : :class:`~clip_invariance.invariance.InterventionStatistics`
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
    starts = np.cumsum((0,) + X.chunks[0])
    parts = [
        dask.delayed(_chunk_statistics)(block, i, starts[i], **{name: b[i] for name, b in blocks.items()})
        for i, block in enumerate(X.to_delayed().ravel())
    ]
    return dask.compute(_tree(parts, _add, split_every))[0]


# ------------------------------------------------------------ on the workers
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


def _chunk_statistics(block, index, start, **labels):
    """``from_block`` of one chunk; its errors name the chunk and its rows."""
    try:
        return InterventionStatistics.from_block(block, **labels)
    except ValueError as error:
        raise chunk_error(error, block, index, start) from error


def _id_range(block, index, start):
    """Smallest and largest group id of one chunk (None when empty)."""
    try:
        ids = np.unique(check_labels(block, len(block), "view_groups"))
    except ValueError as error:
        raise chunk_error(error, block, index, start) from error
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
