"""Many projectors from one pass over the data: a grid of ``(n_components, lam)`` at the cost of one fit.

Every setting of :class:`~clip_invariance.InvariantProjector` that differs only in
``n_components``, ``lam`` or ``solver`` is solved from the same sufficient
statistics (``_statistics.py``): the ``N x D x D`` product over the rows is
shared, and each setting pays its ``D x D`` eigenproblem alone. A grid search
over the projector (the evaluation's selection rules) therefore costs one
statistics pass per split instead of one per candidate, with projectors
bit-identical to fitting each one.
"""

from sklearn.base import clone

from .._utils import is_dask_array
from ._projector import InvariantProjector

__all__ = ["projector_path"]

# The parameters a setting may change: those that act after the statistics.
_SOLVE_PARAMETERS = ("n_components", "lam", "solver")


def projector_path(projector, X, y=None, *, params, view_groups=None, environments=None):
    """Fit one clone of ``projector`` per parameter setting, from one pass over ``X``.

    Equivalent to ``[clone(projector).set_params(**p).fit(X, y, ...) for p
    in params]``, with the same results bit for bit, but the sufficient
    statistics of ``X`` are computed once.

    Parameters
    ----------
    projector : InvariantProjector
        The template; cloned for every setting.
    X : array-like of shape (n_samples, n_features)
        Embeddings; a dask array is reduced on its workers once.
    y, view_groups, environments : array-like of shape (n_samples,), default=None
        As in :meth:`InvariantProjector.fit`.
    params : list of dict
        One dict per projector, with keys among ``n_components``, ``lam`` and
        ``solver`` (the others would change the statistics).

    Returns
    -------
    projectors : list of InvariantProjector
        Fitted, in the order of ``params``.

    Raises
    ------
    TypeError
        If ``projector`` is not an :class:`~clip_invariance.InvariantProjector`.
    ValueError
        If a setting changes another parameter, or holds an invalid value
        (named as ``fit`` would name it).

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance import InvariantProjector
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.invariance import projector_path
    >>> from clip_invariance.views import stack_views
    >>> data = make_invariant_embeddings(n_samples=200, random_state=0)
    >>> X, groups = stack_views(data.X, *data.X_views)
    >>> settings = [{"n_components": 4, "lam": 1.0}, {"n_components": 8, "lam": 100.0}]
    >>> path = projector_path(InvariantProjector(), X, params=settings, view_groups=groups)
    >>> [p.n_components_ for p in path]
    [4, 8]
    >>> alone = InvariantProjector(8, lam=100.0).fit(X, view_groups=groups)
    >>> bool(np.array_equal(path[1].components_, alone.components_))
    True
    """
    if not isinstance(projector, InvariantProjector):
        raise TypeError(f"projector_path needs an InvariantProjector, got {type(projector).__name__}.")
    params = list(params)
    for setting in params:
        other = sorted(set(setting) - set(_SOLVE_PARAMETERS))
        if other:
            raise ValueError(f"projector_path varies {list(_SOLVE_PARAMETERS)} only; a setting changes "
                             f"{other}, which changes the statistics: fit those one by one.")
    fitted = []
    statistics = None
    for setting in params:
        candidate = clone(projector).set_params(**setting)
        candidate._validate_params()
        # Validation sets n_features_in_ and checks n_components against X, as fit would.
        if statistics is None:
            statistics, source, dtype = candidate._batch_statistics(X, y, view_groups, environments,
                                                                    reset=True)
        elif is_dask_array(X):
            candidate._validate_chunked_batch(X, y, view_groups, environments, reset=True)
        else:
            candidate._validate_batch(X, y, view_groups, environments, reset=True)
        fitted.append(candidate._fit_statistics(statistics, source, dtype, reset=True))
    return fitted
