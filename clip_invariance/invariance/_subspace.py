"""Diagnostics for invariant subspaces: principal angles and overlap."""

import numpy as np
from scipy import linalg

__all__ = ["principal_angles", "subspace_overlap"]


def principal_angles(A, B):
    """Principal angles (radians, ascending) between the column spans of A and B.

    Parameters
    ----------
    A : array-like of shape (n_features, k_a)
        Basis of the first subspace (columns; need not be orthonormal).
    B : array-like of shape (n_features, k_b)
        Basis of the second subspace.

    Returns
    -------
    angles : ndarray of shape (min(k_a, k_b),)
        0 means a shared direction, pi/2 an orthogonal one.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.invariance import principal_angles
    >>> principal_angles(np.eye(3)[:, :2], np.eye(3)[:, 1:]).round(3)
    array([0.   , 1.571])
    """
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(
            f"A and B must be 2-D bases of the same space, got shapes {A.shape} and {B.shape}."
        )
    return linalg.subspace_angles(A, B)[::-1]


def subspace_overlap(A, B):
    """Mean squared cosine of the principal angles between two subspaces.

    1.0 when the span of the smaller basis lies inside the other, 0.0 when
    they are orthogonal.

    Parameters
    ----------
    A, B : array-like of shape (n_features, k)
        Bases of the two subspaces, as columns.

    Returns
    -------
    overlap : float

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.invariance import subspace_overlap
    >>> subspace_overlap(np.eye(4)[:, :2], np.eye(4)[:, [0, 2]])
    0.5
    """
    return float(np.mean(np.cos(principal_angles(A, B)) ** 2))
