"""Dask arrays in, the same estimators out: checks of row-chunked input and lazy maps over rows.

Embeddings larger than one machine's memory arrive as a dask array chunked
along rows. Prediction is row-wise, so ``transform`` and ``predict`` of a
dask array are the in-memory methods mapped lazily over the chunks
(:func:`map_rows`, :func:`map_classifier_rows`); the projector's fit sums
per-chunk statistics (``invariance/_chunked.py``).

dask is imported here only once the input is a dask array:
:func:`is_dask_array` recognises one without importing dask, so
``import clip_invariance`` stays free of it.
"""

import copy
import sys

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import check_labels

__all__ = [
    "align_labels", "check_row_chunks", "chunk_error", "is_dask_array", "map_classifier_rows", "map_rows",
]


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


def chunk_error(error, block, index, start, input_name="X"):
    """A ValueError raised on one row chunk of dask ``X``, with the chunk, its rows and the first bad row.

    A worker sees one chunk; the client sees the error alone. This names
    where it happened, in rows of the whole array, and, when ``block`` (the
    chunk of ``X`` itself) holds NaN or infinity, the first such row.

    Parameters
    ----------
    error : ValueError
        Raised while processing the chunk.
    block : ndarray
        The chunk, its rows first.
    index : int
        Its position along the rows of ``X``.
    start : int
        The row of ``X`` it starts at.
    input_name : str, default="X"
        The array's name, in the message.

    Returns
    -------
    error : ValueError
        To raise ``from`` the original.

    Examples
    --------
    >>> import numpy as np
    >>> chunk_error(ValueError("X contains NaN or infinity."), np.array([[0.0], [np.nan]]), 3, 30)
    ValueError('X contains NaN or infinity. In chunk 3 of X (rows 30-31), first in row 31.')
    """
    where = f"In chunk {index} of {input_name} (rows {start}-{start + len(block) - 1})"
    block = np.asarray(block)
    if block.dtype.kind in "fc" and block.ndim:
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if bad.any():
            where += f", first in row {start + int(np.argmax(bad))}"
    return ValueError(f"{error} {where}.")


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
        ``check_labels``).
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


def _apply(block, estimator, method, block_info=None):
    try:
        return getattr(estimator, method)(block)
    except ValueError as error:  # raised on a worker: say which rows of X
        location = block_info[0]
        raise chunk_error(error, block, location["chunk-location"][0], location["array-location"][0][0]) \
            from error
