"""Interventional data: views that share content and differ in style, with group ids."""

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["stack_views"]


def stack_views(*views):
    """Stack interventional views into ``(X, groups)`` for :class:`InvariantProjector`.

    Row ``i`` of every view is the same content (an image and its augmented
    copies), so it gets group id ``i``. Two views give the paper's pairs:
    ``X = vstack([Z, Z~])``, ``groups = r_[arange(n), arange(n)]``.

    Parameters
    ----------
    *views : array-like of shape (n_samples, n_features)
        Two or more views; a single 3-D array of shape
        (n_views, n_samples, n_features) is accepted too.

    Returns
    -------
    X : ndarray of shape (n_views * n_samples, n_features)
        The views stacked one after the other.
    groups : ndarray of shape (n_views * n_samples,)
        The content id of each row.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.interventions import stack_views
    >>> X, groups = stack_views(np.zeros((3, 2)), np.ones((3, 2)))
    >>> X.shape, groups.tolist()
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
