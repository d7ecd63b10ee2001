"""The two layouts of interventional views, and the conversions between them.

Several views (an image and its augmented copies) of ``n`` contents are held
either

- in the **rows layout**: the views stacked one under the other,
  ``(n_views * n, D)``, with ``view_groups`` saying which rows are views of
  one content. :class:`~clip_invariance.InvariantProjector` reads this; it is
  what :func:`~clip_invariance.embedding.make_image_interventions` produces
  once embedded (originals first, then each round of augmented views);
- or in the **columns layout**: the views of one content side by side in one
  row, ``(n, n_views * D)``. :class:`~clip_invariance.FrontDoorEnsembleClassifier`
  reads this, so that a scikit-learn splitter keeps the views of an image
  together.

``stack_views`` builds the rows layout from view arrays, ``interleave_views`` the
same with each content's views adjacent (what chunked, dask, fitting needs), ``rows_to_columns``
and ``columns_to_rows`` convert one layout into the other, ``split_columns``
gives the ``(n_views, n, D)`` stack of a columns-layout matrix and
``first_views`` marks the first view (the original) of every group.
"""

import numpy as np
from sklearn.utils.validation import check_array

from ._utils import is_dask_array

__all__ = [
    "stack_views", "interleave_views", "rows_to_columns", "columns_to_rows", "split_columns", "first_views",
]


def stack_views(*views):
    """Stack view arrays into the rows layout ``(X, view_groups)``.

    Row ``i`` of every view is the same content (an image and its augmented
    copies), so it gets group id ``i``. Two views give the paper's pairs:
    ``X = vstack([Z, Z~])``, ``view_groups = r_[arange(n), arange(n)]``.

    Parameters
    ----------
    *views : array-like of shape (n_samples, n_features)
        Two or more views; a single 3-D array of shape
        (n_views, n_samples, n_features) is accepted too.

    Returns
    -------
    X : ndarray of shape (n_views * n_samples, n_features)
        The views stacked one after the other.
    view_groups : ndarray of shape (n_views * n_samples,)
        The content id of each row.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.views import stack_views
    >>> X, view_groups = stack_views(np.zeros((3, 2)), np.ones((3, 2)))
    >>> X.shape, view_groups.tolist()
    ((6, 2), [0, 1, 2, 0, 1, 2])
    """
    if len(views) == 1 and np.ndim(views[0]) == 3:
        views = tuple(views[0])
    if len(views) < 2:
        raise ValueError(f"stack_views needs at least two views, got {len(views)}.")
    arrays = [
        check_array(v, dtype=[np.float64, np.float32], input_name=f"view {i}")
        for i, v in enumerate(views)
    ]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"All views must have the same shape, got {sorted(shapes)}.")
    n = arrays[0].shape[0]
    return np.vstack(arrays), np.tile(np.arange(n), len(arrays))


def interleave_views(X, views):
    """The rows layout with each content followed by its views: ``(rows, view_groups)``.

    Unlike :func:`stack_views`, the ``n_augmented + 1`` rows of a content are
    adjacent, so any cut between contents keeps view groups whole: the layout
    a chunked (dask) fit needs. Takes the fields of an embedding store as
    they are (``X`` and ``views``); dask inputs give lazy dask outputs whose
    row chunks all end between contents.

    Parameters
    ----------
    X : array-like or dask array of shape (n_samples, n_features)
        The originals.
    views : array-like or dask array of shape (n_samples, n_augmented, n_features)
        Their augmented views.

    Returns
    -------
    rows : ndarray or dask array of shape (n_samples * (n_augmented + 1), n_features)
        Original 0, its views, original 1, its views, ...
    view_groups : ndarray or dask array of shape (n_samples * (n_augmented + 1),)
        The content id of each row.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.views import interleave_views
    >>> rows, view_groups = interleave_views(np.zeros((2, 3)), np.ones((2, 2, 3)))
    >>> rows[:, 0].tolist(), view_groups.tolist()
    ([0.0, 1.0, 1.0, 0.0, 1.0, 1.0], [0, 0, 0, 1, 1, 1])
    """
    if views is None:
        raise ValueError("interleave_views needs the augmented views, got views=None: the store was saved "
                         "without views (save_embeddings(..., views=)); embed some with "
                         "make_image_interventions, or fit on labels instead.")
    lazy = is_dask_array(X) or is_dask_array(views)
    if not lazy:
        X = check_array(X, dtype=[np.float64, np.float32], input_name="X")
        views = check_array(views, dtype=[np.float64, np.float32], allow_nd=True, input_name="views")
    else:  # the other one may be a list: shapes are read from arrays
        import dask.array as da

        X, views = da.asarray(X), da.asarray(views)
    if X.ndim != 2 or views.ndim != 3:
        raise ValueError(f"interleave_views needs X of shape (n, D) and views of shape (n, n_augmented, D); "
                         f"got {X.shape} and {views.shape}.")
    if views.shape[0] != X.shape[0] or views.shape[2] != X.shape[1]:
        raise ValueError(f"views {views.shape} do not match X {X.shape}: expected "
                         f"({X.shape[0]}, n_augmented, {X.shape[1]}).")
    n, n_augmented, d = views.shape
    if not lazy:
        rows = np.concatenate([X[:, None], views.astype(X.dtype, copy=False)], axis=1).reshape(-1, d)
        return rows, np.repeat(np.arange(n), n_augmented + 1)
    views = views.rechunk({0: X.chunks[0], 1: -1, 2: -1})
    stacked = da.concatenate([X.rechunk({1: -1})[:, None], views.astype(X.dtype)], axis=1)
    rows = stacked.reshape(-1, d)  # whole contents per chunk: the reshape only merges axes 0 and 1
    return rows, da.arange(rows.shape[0], chunks=rows.chunks[0]) // (n_augmented + 1)


def rows_to_columns(X, view_groups):
    """Rows layout to columns layout: the views of each group side by side.

    Row ``g`` of the result holds the views of the ``g``-th group (groups
    sorted by id) side by side, in their order of appearance in ``X``.

    Parameters
    ----------
    X : array-like of shape (n_views * n, D)
        Embeddings of views, e.g. of embedded
        :func:`~clip_invariance.embedding.make_image_interventions` output.
    view_groups : array-like of shape (n_views * n,)
        Group id of each row; every group must have the same number of views.

    Returns
    -------
    X_columns : ndarray of shape (n, n_views * D)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.views import rows_to_columns
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])  # image 0, image 1, view of 0, view of 1
    >>> rows_to_columns(X, [0, 1, 0, 1])
    array([[ 0., 10.],
           [ 1., 11.]])
    """
    X = np.asarray(X)
    view_groups = np.asarray(view_groups)
    if X.ndim != 2 or view_groups.shape != (X.shape[0],):
        raise ValueError(
            "X must be 2-D with one view group id per row, got X of shape "
            f"{X.shape} and view_groups of shape {view_groups.shape}."
        )
    ids, counts = np.unique(view_groups, return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise ValueError(
            "Every view group must have the same number of views, got counts "
            f"{sorted(set(counts.tolist()))}."
        )
    order = np.argsort(view_groups, kind="stable")  # stable: keeps view order within a group
    return X[order].reshape(len(ids), counts[0] * X.shape[1])


def split_columns(X, n_views):
    """The ``(n_views, n, D)`` stack of a columns-layout matrix (a view, no copy).

    Parameters
    ----------
    X : ndarray of shape (n, n_views * D)
        Views side by side.
    n_views : int
        Number of views per row.

    Returns
    -------
    views : ndarray of shape (n_views, n, D)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.views import split_columns
    >>> split_columns(np.arange(8.0).reshape(2, 4), 2)[1].tolist()
    [[2.0, 3.0], [6.0, 7.0]]
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, n_views * D), got shape {X.shape}.")
    n, p = X.shape
    if n_views < 1 or p % n_views:
        raise ValueError(
            f"X has {p} feature(s), which is not a multiple of n_views={n_views}: "
            "each row must hold n_views embeddings of the same size side by side."
        )
    return X.reshape(n, n_views, p // n_views).transpose(1, 0, 2)


def columns_to_rows(X, n_views):
    """Columns layout to rows layout ``(X_rows, view_groups)``.

    The inverse of :func:`rows_to_columns` on its output: view ``v`` of every
    content comes in the ``v``-th block of rows.

    Parameters
    ----------
    X : array-like of shape (n, n_views * D)
        Views side by side.
    n_views : int
        Number of views per row; at least 2.

    Returns
    -------
    X_rows : ndarray of shape (n_views * n, D)
    view_groups : ndarray of shape (n_views * n,)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.views import columns_to_rows, rows_to_columns
    >>> X_rows, view_groups = columns_to_rows(np.array([[0.0, 10.0], [1.0, 11.0]]), 2)
    >>> X_rows.ravel().tolist(), view_groups.tolist()
    ([0.0, 1.0, 10.0, 11.0], [0, 1, 0, 1])
    >>> rows_to_columns(X_rows, view_groups).tolist()
    [[0.0, 10.0], [1.0, 11.0]]
    """
    return stack_views(split_columns(X, n_views))


def first_views(view_groups):
    """Mark the first row of every view group: the originals of a rows layout.

    Parameters
    ----------
    view_groups : array-like of shape (n_rows,)
        Group id of each row.

    Returns
    -------
    is_first : ndarray of bool, shape (n_rows,)

    Examples
    --------
    >>> from clip_invariance.views import first_views
    >>> first_views([0, 1, 0, 1]).tolist()
    [True, True, False, False]
    """
    view_groups = np.asarray(view_groups)
    if view_groups.ndim != 1:
        raise ValueError(f"view_groups must be 1-D, got shape {view_groups.shape}.")
    _, first = np.unique(view_groups, return_index=True)
    is_first = np.zeros(view_groups.shape[0], dtype=bool)
    is_first[first] = True
    return is_first
