"""The grid search of a selection rule, at the cost of what really differs between candidates.

:func:`grid_scores` returns what :class:`~sklearn.model_selection.GridSearchCV`
would (the mean validation accuracy of every candidate, in
:class:`~sklearn.model_selection.ParameterGrid` order) and lets
:func:`~clip_invariance.evaluation.select_and_fit` break ties the same way. For the
two estimators the evaluation searches most, it shares the work between the
candidates:

- the probe (``LogisticRegression``, grid over ``C``): the training rows are
  taken once, and rows of zero ``sample_weight`` (the views a plain probe does
  not learn from) are dropped rather than carried at zero weight, which
  leaves the objective unchanged;
- the invariant probe (``Pipeline([("proj", InvariantProjector), ("clf",
  LogisticRegression)])``, grid over ``n_components``, ``lam`` and ``C``):
  one pass of sufficient statistics per split serves every ``(K, lam)``
  (:func:`~clip_invariance.invariance.projector_path`), each subspace is
  computed once for all ``C``, and the probe trains on the rows it weighs;
- an estimator whose ``_prediction_parameters`` are read at prediction only
  (WiSE's mixing weight, Tip-Adapter's two weights): one fit per setting of
  the others, then every value of those is scored from it. Tip-Adapter's
  cache logits, ``alpha * exp(-beta (1 - affinity)) @ values``, are computed
  once per ``beta`` and scaled by each ``alpha`` (the same floats: its own
  computation at ``alpha = 1`` times ``alpha``): 5 cache computations a fit
  for the default grid's 25 pairs. Scoring was most of Tip-Adapter's search:
  at 10,000 images x D=512, a lodo-cv split's 25 scores took 7 to 12 s, its
  fit 0.2 to 0.3 s.

The scores are those of ``GridSearchCV`` bit for bit: the projectors are the
same (``projector_path`` is exact) and so are the fits. Every other
estimator goes through ``GridSearchCV`` unchanged.
"""

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline

from ..baselines import TipAdapterClassifier
from ..invariance import InvariantProjector, projector_path

__all__ = ["grid_scores"]

# False: every candidate through GridSearchCV (the reference that benchmarks/bench_evaluate.py times).
_SHARE_WORK = True

_PROJECTOR_KEYS = {"proj__n_components": "n_components", "proj__lam": "lam", "proj__solver": "solver"}


def grid_scores(estimator, param_grid, X, y, splits, *, fit_params=None, warm_start=False):
    """Mean validation accuracy of every candidate of ``param_grid`` over ``splits``.

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score``
    param_grid : dict
        Parameter -> values, as :class:`~sklearn.model_selection.GridSearchCV` takes.
    X : ndarray of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,)
    splits : list of (train_rows, validation_rows)
    fit_params : dict, default=None
        Row-aligned fit parameters, subset with the rows of every fit.
    warm_start : bool, default=False
        Start each probe along the ``C`` grid from the previous one's
        solution. Off by default: it stops lbfgs elsewhere within its
        tolerance, which can change a selection, and it saved no time in
        ``benchmarks/bench_evaluate.py``.

    Returns
    -------
    candidates : list of dict
        In ``ParameterGrid`` order.
    scores : ndarray of shape (n_candidates,)
        Mean validation accuracy over the splits.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.evaluation import selection_splits
    >>> from clip_invariance.evaluation._search import grid_scores
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> splits, _ = selection_splits("lodo-cv", data.environments, data.test_environment)
    >>> candidates, scores = grid_scores(LogisticRegression(), {"C": [0.01, 1.0]}, data.X, data.y, splits)
    >>> candidates, scores.shape
    ([{'C': 0.01}, {'C': 1.0}], (2,))
    """
    fit_params = {} if fit_params is None else fit_params
    candidates = list(ParameterGrid(param_grid))
    if not _SHARE_WORK:
        pass
    elif _is_probe(estimator, param_grid, fit_params, prefix=""):
        return candidates, _probe_grid(estimator, candidates, X, y, splits, fit_params, warm_start)
    elif _is_projected_probe(estimator, param_grid, fit_params):
        return candidates, _projected_probe_grid(estimator, candidates, X, y, splits, fit_params, warm_start)
    elif _prediction_only(estimator, param_grid, fit_params):
        return candidates, _refit_free_grid(estimator, candidates, X, y, splits, fit_params)
    search = GridSearchCV(clone(estimator), param_grid, cv=splits, refit=False, error_score="raise")
    search.fit(X, y, **fit_params)
    return list(search.cv_results_["params"]), np.asarray(search.cv_results_["mean_test_score"])


def _is_probe(estimator, param_grid, fit_params, prefix):
    grid_ok = set(param_grid) <= {prefix + "C"}
    params_ok = set(fit_params) <= {prefix + "sample_weight"}
    return type(estimator) is LogisticRegression and grid_ok and params_ok and _binary_weights(
        fit_params.get(prefix + "sample_weight"))


def _is_projected_probe(estimator, param_grid, fit_params):
    if not (isinstance(estimator, Pipeline) and len(estimator.steps) == 2
            and [name for name, _ in estimator.steps] == ["proj", "clf"]
            and type(estimator.named_steps["proj"]) is InvariantProjector
            and estimator.memory is None):
        return False
    clf_grid = {k: v for k, v in param_grid.items() if k.startswith("clf__")}
    clf_params = {k: v for k, v in fit_params.items() if k.startswith("clf__")}
    other_grid = set(param_grid) - set(clf_grid) - set(_PROJECTOR_KEYS)
    other_params = set(fit_params) - set(clf_params) - {"proj__view_groups", "proj__environments"}
    return (not other_grid and not other_params
            and _is_probe(estimator.named_steps["clf"], clf_grid, clf_params, prefix="clf__"))


def _prediction_only(estimator, param_grid, fit_params):
    """Some parameters of the grid are read at prediction only (``_prediction_parameters``)."""
    # A scorer weighted by sample_weight (GridSearchCV routes it there) is left to GridSearchCV.
    late = set(getattr(estimator, "_prediction_parameters", ()))
    return bool(late & set(param_grid)) and "sample_weight" not in fit_params


def _refit_free_grid(estimator, candidates, X, y, splits, fit_params):
    """One fit per setting of the fitted parameters and split; each prediction parameter only scores."""
    late = set(estimator._prediction_parameters)
    groups = {}
    for i, candidate in enumerate(candidates):
        fitted = tuple(sorted((k, v) for k, v in candidate.items() if k not in late))
        groups.setdefault(fitted, []).append(i)
    scores = np.empty((len(splits), len(candidates)))
    n = len(y)
    for s, (train, validation) in enumerate(splits):
        params = {k: (np.asarray(v)[train] if is_row_aligned(v, n) else v) for k, v in fit_params.items()}
        for fitted, members in groups.items():
            model = clone(estimator).set_params(**dict(fitted)).fit(X[train], y[train], **params)
            if type(model) is TipAdapterClassifier:  # its validation rows only, so one cache per beta
                model._head_logits = _CacheLogitsPerBeta(model)
            for i in members:
                model.set_params(**{k: v for k, v in candidates[i].items() if k in late})
                scores[s, i] = model.score(X[validation], y[validation])
    return np.mean(scores, axis=0)


class _CacheLogitsPerBeta:
    """A fitted Tip-Adapter's cache logits on one set of rows, computed once per ``beta``.

    Its cache logits are ``alpha * A(beta)`` (``A`` the cache's affinities, sharpened by ``beta``, times
    its labels): ``A(beta)`` is its own ``_head_logits`` at ``alpha = 1`` (which multiplies by 1.0, an
    exact no-op), and ``alpha * A(beta)`` the very product it computes at ``alpha``. Only for a model
    scored on one set of rows (the memo does not look at them).
    """

    def __init__(self, model):
        self.model = model
        self.head_logits = type(model)._head_logits
        self.by_beta = {}

    def __call__(self, Z):
        model = self.model
        if model.alpha == 0:  # no cache at all, as it computes it
            return self.head_logits(model, Z)
        if model.beta not in self.by_beta:
            alpha = model.alpha
            model.alpha = 1.0
            try:
                self.by_beta[model.beta] = self.head_logits(model, Z)
            finally:
                model.alpha = alpha
        return model.alpha * self.by_beta[model.beta]


def is_row_aligned(value, n):
    """A fit parameter with one entry per row (subset with the rows of every fit)."""
    return hasattr(value, "__len__") and not isinstance(value, (str, dict)) and len(value) == n


def _binary_weights(weights):
    """Weights that only keep or drop rows (None, or every weight 0 or 1)."""
    return weights is None or bool(np.isin(np.asarray(weights), (0.0, 1.0)).all())


def _kept(rows, weights):
    """The training rows a probe weighs: those of weight 1."""
    return rows if weights is None else rows[np.asarray(weights)[rows] > 0]


def _probe_scores(probe, Cs, X_train, y_train, X_val, y_val, warm_start):
    """Validation accuracy of ``probe`` at each ``C``, fitted from strong to weak regularisation."""
    scores = {}
    model = clone(probe).set_params(warm_start=warm_start)
    for C in sorted(set(Cs)):
        model.set_params(C=C).fit(X_train, y_train)
        scores[C] = model.score(X_val, y_val)
    return scores


def _probe_grid(probe, candidates, X, y, splits, fit_params, warm_start, prefix=""):
    weights = fit_params.get(prefix + "sample_weight")
    Cs = [c.get(prefix + "C", probe.C) for c in candidates]
    scores = np.empty((len(splits), len(candidates)))
    for s, (train, validation) in enumerate(splits):
        train = _kept(train, weights)
        by_C = _probe_scores(probe, Cs, X[train], y[train], X[validation], y[validation], warm_start)
        scores[s] = [by_C[C] for C in Cs]
    return np.mean(scores, axis=0)


def _projected_probe_grid(pipeline, candidates, X, y, splits, fit_params, warm_start):
    projector, probe = pipeline.named_steps["proj"], pipeline.named_steps["clf"]
    weights = fit_params.get("clf__sample_weight")
    row_params = {key[len("proj__"):]: np.asarray(value) for key, value in fit_params.items()
                  if key.startswith("proj__")}
    # Candidates sharing a projector setting share its subspace: one entry per distinct setting.
    settings = []
    for candidate in candidates:
        setting = {_PROJECTOR_KEYS[k]: v for k, v in candidate.items() if k in _PROJECTOR_KEYS}
        if setting not in settings:
            settings.append(setting)
    scores = np.empty((len(splits), len(candidates)))
    for s, (train, validation) in enumerate(splits):
        fitted = projector_path(projector, X[train], y[train], params=settings,
                                **{k: v[train] for k, v in row_params.items()})
        kept = _kept(train, weights)
        for setting, subspace in zip(settings, fitted):
            members = [i for i, c in enumerate(candidates)
                       if {_PROJECTOR_KEYS[k]: v for k, v in c.items() if k in _PROJECTOR_KEYS} == setting]
            Cs = [candidates[i].get("clf__C", probe.C) for i in members]
            by_C = _probe_scores(probe, Cs, subspace.transform(X[kept]), y[kept],
                                 subspace.transform(X[validation]), y[validation], warm_start)
            scores[s, members] = [by_C[C] for C in Cs]
    return np.mean(scores, axis=0)
