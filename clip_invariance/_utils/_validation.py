"""Checks shared by the estimators of every subpackage, and the rule that a failed fit changes nothing."""

from contextlib import contextmanager

import numpy as np

__all__ = ["check_labels", "unchanged_on_error"]


@contextmanager
def unchanged_on_error(estimator):
    """Restore ``estimator``'s attributes if the block raises, then re-raise.

    Fitted attributes are rebound, never modified in place, so a shallow copy
    of the instance dictionary restores them (``validate_data`` sets
    ``n_features_in_`` before anything can fail).

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> scaler = StandardScaler().fit([[0.0], [2.0]])
    >>> try:
    ...     with unchanged_on_error(scaler):
    ...         scaler.fit([["a"]])
    ... except ValueError:
    ...     pass
    >>> scaler.mean_
    array([1.])
    """
    state = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(state)
        raise


def check_labels(labels, n, name):
    """Validate one label per row: 1-D, ``n`` long, finite, of comparable values.

    Parameters
    ----------
    labels : array-like of shape (n,) or None
    n : int
        Number of rows.
    name : str
        The argument's name, for the error messages.

    Returns
    -------
    labels : ndarray of shape (n,) or None

    Examples
    --------
    >>> check_labels([0, 0, 1], 3, "view_groups")
    array([0, 0, 1])
    >>> check_labels([0, "a", None], 3, "view_groups")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: view_groups mixes values that cannot be sorted together (int, str, NoneType): ...
    """
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}.")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but X has {n} rows.")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} contains NaN or infinity.")
    if labels.dtype.kind == "O":
        try:
            np.sort(labels)
        except TypeError:
            types = ", ".join(dict.fromkeys(type(value).__name__ for value in labels))
            raise TypeError(
                f"{name} mixes values that cannot be sorted together ({types}): "
                "use ids of one type."
            ) from None
    elif labels.dtype.kind not in "biufUS":
        raise TypeError(f"{name} must hold integers or strings, got dtype {labels.dtype}.")
    return labels
