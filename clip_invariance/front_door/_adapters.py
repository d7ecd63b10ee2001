r"""The front door's learned maps, stored at their rank and in the input's precision.

:class:`~clip_invariance.FrontDoorEnsembleClassifier` learns one
class-agnostic map per template (torch, in ``_training.py``),

.. math:: W_m = I + L_m R_m^\top,

and keeps them as :class:`TemplateAdapters`: a rank-``r`` update as its two
``D x r`` factors, a map whose update is not of low rank (``2 r >= D``) as
one ``D x D`` matrix, the identity as nothing. Applying a map to class
embeddings costs ``O(C D r)`` with the factors. Numpy only.
"""

import numpy as np

__all__ = ["TemplateAdapters"]


class TemplateAdapters:
    r"""The maps :math:`W_m = I + L_m R_m^\top` of ``n_templates`` templates.

    Build them with :meth:`identity` or :meth:`from_factors`, which picks
    the smaller storage: the factors while ``2 r < D``, else the dense maps.

    Parameters
    ----------
    left, right : ndarray of shape (n_templates, n_features, rank) or None
        Factors of the updates (``rank`` may be 0: the identity).
    maps : ndarray of shape (n_templates, n_features, n_features) or None
        The dense maps, when there are no factors.

    Attributes
    ----------
    rank : int
        Stored rank of each update (``n_features`` for dense maps).
    nbytes : int
        Bytes held by the stored arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import TemplateAdapters
    >>> left = np.zeros((2, 3, 1), dtype=np.float32)
    >>> left[0, 0, 0] = 1.0  # template 0: W = I + e_0 e_1^T
    >>> right = np.zeros((2, 3, 1), dtype=np.float32)
    >>> right[:, 1, 0] = 1.0
    >>> adapters = TemplateAdapters.from_factors(left, right)
    >>> adapters
    TemplateAdapters(n_templates=2, n_features=3, rank=1, dtype=float32)
    >>> adapters.toarray()[0]
    array([[1., 1., 0.],
           [0., 1., 0.],
           [0., 0., 1.]], dtype=float32)
    >>> adapters.apply(np.array([[[0.0, 2.0, 0.0]], [[0.0, 2.0, 0.0]]]))[:, 0]
    array([[2., 2., 0.],
           [0., 2., 0.]])
    """

    def __init__(self, left=None, right=None, *, maps=None):
        if (maps is None) == (left is None or right is None):
            raise ValueError("TemplateAdapters needs either left and right factors, or maps.")
        if maps is not None:
            maps = np.asarray(maps)
            if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
                raise ValueError(f"maps must have shape (n_templates, D, D), got {maps.shape}.")
            _check_finite("maps", maps)
        else:
            left, right = np.asarray(left), np.asarray(right)
            if left.ndim != 3 or left.shape != right.shape:
                raise ValueError(
                    "left and right must have the same shape (n_templates, D, rank), "
                    f"got {left.shape} and {right.shape}."
                )
            _check_finite("left", left)
            _check_finite("right", right)
        self.left = left
        self.right = right
        self.maps = maps

    @classmethod
    def identity(cls, n_templates, n_features, dtype=np.float64):
        """The identity maps: rank-0 factors, no storage."""
        empty = np.zeros((n_templates, n_features, 0), dtype=dtype)
        return cls(empty, empty.copy())

    @classmethod
    def from_factors(cls, left, right, dtype=None):
        """Maps ``I + left right^T``, stored as factors while ``2 rank < D``.

        Parameters
        ----------
        left, right : array-like of shape (n_templates, n_features, rank)
            ``right`` may also have shape (n_features, rank), shared.
        dtype : dtype, default=None
            Storage precision; ``None`` keeps ``left``'s.

        Returns
        -------
        adapters : TemplateAdapters
        """
        left = np.asarray(left, dtype=dtype)
        right = np.broadcast_to(np.asarray(right, dtype=left.dtype), left.shape)
        _check_finite("left", left)  # before the dense maps, so that the message names the factor
        _check_finite("right", right)
        n_templates, dim, rank = left.shape
        if 2 * rank < dim:
            return cls(left, np.ascontiguousarray(right))
        maps = left @ right.transpose(0, 2, 1)
        maps[:, np.arange(dim), np.arange(dim)] += 1
        return cls(maps=maps)

    @property
    def n_templates(self):
        return (self.left if self.maps is None else self.maps).shape[0]

    @property
    def n_features(self):
        return (self.left if self.maps is None else self.maps).shape[1]

    @property
    def rank(self):
        return self.n_features if self.maps is not None else self.left.shape[2]

    @property
    def dtype(self):
        return (self.left if self.maps is None else self.maps).dtype

    @property
    def nbytes(self):
        return self.maps.nbytes if self.maps is not None else self.left.nbytes + self.right.nbytes

    def apply(self, embeddings):
        """``W_m x`` for every row ``x`` of template ``m``'s embeddings.

        Parameters
        ----------
        embeddings : ndarray of shape (n_templates, n_rows, n_features)

        Returns
        -------
        mapped : ndarray of shape (n_templates, n_rows, n_features), not normalised.
        """
        if self.maps is not None:
            return embeddings @ self.maps.transpose(0, 2, 1)
        return embeddings + (embeddings @ self.right) @ self.left.transpose(0, 2, 1)

    def toarray(self):
        """The dense maps, shape (n_templates, n_features, n_features)."""
        if self.maps is not None:
            return self.maps.copy()
        eye = np.eye(self.n_features, dtype=self.dtype)
        return self.apply(np.broadcast_to(eye, (self.n_templates,) + eye.shape)).transpose(0, 2, 1)

    def __array__(self, dtype=None, copy=None):
        return self.toarray() if dtype is None else self.toarray().astype(dtype)

    def __repr__(self):
        return (f"{type(self).__name__}(n_templates={self.n_templates}, n_features="
                f"{self.n_features}, rank={self.rank}, dtype={self.dtype})")


def _check_finite(name, array):
    """Raise a ValueError naming the first template whose ``array`` holds NaN or infinity."""
    if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
        template = int(np.argmax(~np.isfinite(array).reshape(len(array), -1).all(axis=1)))
        raise ValueError(f"{name} contains NaN or infinity (template {template}): the maps "
                         "W = I + L R^T must be finite.")
