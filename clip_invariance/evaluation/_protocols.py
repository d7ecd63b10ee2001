"""Evaluation protocols: DomainBed splits, and choosing hyper-parameters without the target.

:func:`leave_one_domain_out` runs the DomainBed protocol for any scikit-learn
estimator: each environment in turn is the target, and every source is split
80/20 by content (:func:`holdout_split`).

Selection rules say how hyper-parameters are chosen. A rule turns the rows of
one leave-one-domain-out round (sources and target, originals and augmented
views) into train/validation index pairs, which any scikit-learn search takes
as ``cv``:

- ``"source-val"``: DomainBed's training-domain validation. Train on 80% of
  every source's contents, validate on the originals of the other 20%. It
  rewards in-domain fit, so it tends to pick the weakest invariance.
- ``"lodo-cv"``: leave-one-source-domain-out cross-validation. For each source
  in turn, train on the others' 80% parts and validate on its originals: a
  real shift, seen only among the sources.
- ``"views-val"``: train on the 80% parts, validate on the *augmented views* of
  the held-out 20%: a shifted domain built from the interventions themselves.
- ``"oracle"``: train on the 80% parts, validate on the target's originals.
  This peeks at the target; every output that uses it says "oracle".

Training rows never include the target; only ``"oracle"`` validates on it.
"""

import hashlib

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length

from ._search import grid_scores
from ._search import is_row_aligned as _is_row_aligned

__all__ = [
    "SELECTION_RULES",
    "holdout_split",
    "leave_one_domain_out",
    "selection_splits",
    "select_and_fit",
]

SELECTION_RULES = ("source-val", "lodo-cv", "views-val", "oracle")


def leave_one_domain_out(
    estimator,
    X,
    y,
    environments,
    *,
    fit_params=None,
    holdout=0.2,
    view_groups=None,
    scored=None,
    random_state=0,
):
    """Evaluate out-of-domain accuracy with the DomainBed protocol.

    For every environment in turn: that environment is the target; each
    other (source) environment is split 80/20 with a fixed seed; a clone of
    ``estimator`` is fitted on the 80% parts and scored on the whole target
    (out of domain) and on the 20% parts (in-domain validation, what DomainBed
    selects models on).

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score``
        E.g. a pipeline ending in a classifier. Cloned for every target.
    X : array-like of shape (n_samples, n_features)
        Embeddings.
    y : array-like of shape (n_samples,)
        Class labels.
    environments : array-like of shape (n_samples,)
        Environment (domain) of each row; at least two distinct values.
    fit_params : dict, default=None
        Extra arguments of ``fit``. Arrays with ``n_samples`` rows are
        subset like ``X`` (e.g. ``{"proj__view_groups": view_groups}``);
        anything else is passed unchanged.
    holdout : float, default=0.2
        Share of every source environment kept out of training for validation.
    view_groups : array-like of shape (n_samples,), default=None
        Rows sharing an id (an image and its augmented views) fall on the same
        side of the 80/20 split. ``None``: every row is its own content.
    scored : array-like of bool, shape (n_samples,), default=None
        Rows that count in the accuracies; the others (e.g. augmented views)
        are used for training only. ``None``: all rows.
    random_state : int, RandomState instance or None, default=0
        Seed of the 80/20 split (fixed by default, as in DomainBed).

    Returns
    -------
    rows : list of dict
        One per target: ``target``, ``test_accuracy``,
        ``validation_accuracy``, ``n_train``, ``n_test``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.evaluation import leave_one_domain_out
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> rows = leave_one_domain_out(LogisticRegression(), data.X, data.y, data.environments)
    >>> [row["target"] for row in rows], rows[0]["n_test"]
    ([0, 1, 2, 3], 100)
    """
    y = np.asarray(y)
    environments = np.asarray(environments)
    n = len(y)
    check_consistent_length(X, y, environments)
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}.")
    targets = np.unique(environments)
    if len(targets) < 2:
        raise ValueError(
            f"leave-one-domain-out needs at least two environments, got {targets.tolist()}."
        )
    view_groups = np.arange(n) if view_groups is None else np.asarray(view_groups)
    scored = np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    check_consistent_length(y, view_groups, scored)
    fit_params = {} if fit_params is None else fit_params

    is_validation = holdout_split(environments, view_groups, holdout, random_state)

    def subset(mask):
        X_sub = X[mask] if hasattr(X, "shape") else [x for x, m in zip(X, mask) if m]
        params = {
            key: (np.asarray(value)[mask] if _is_row_aligned(value, n) else value)
            for key, value in fit_params.items()
        }
        return X_sub, y[mask], params

    rows = []
    for target in targets:
        is_target = environments == target
        train = ~is_target & ~is_validation
        X_train, y_train, params = subset(train)
        model = clone(estimator).fit(X_train, y_train, **params)
        X_test, y_test, _ = subset(is_target & scored)
        X_val, y_val, _ = subset(~is_target & is_validation & scored)
        rows.append(
            {
                "target": target.item() if isinstance(target, np.generic) else target,
                "test_accuracy": float(model.score(X_test, y_test)),
                "validation_accuracy": float(model.score(X_val, y_val)) if len(y_val) else float("nan"),
                "n_train": int(train.sum()),
                "n_test": len(y_test),
            }
        )
    return rows


def holdout_split(environments, view_groups, holdout=0.2, random_state=0):
    """DomainBed's fixed split: the same share of every environment's contents held out.

    Exactly ``round(holdout * n_e)`` of the ``n_e`` contents of every
    environment are drawn (not a Bernoulli draw per content, whose share
    varies), and all views of a content fall on the same side. Each
    environment is drawn with its own generator, seeded by ``random_state``
    and the environment's name, so its split depends on nothing else: adding,
    removing or resizing another environment leaves it unchanged.

    Parameters
    ----------
    environments : array-like of shape (n_samples,)
        Environment of each row.
    view_groups : array-like of shape (n_samples,)
        Content id of each row; the rows of one content share an environment.
    holdout : float, default=0.2
        Share of every environment's contents held out.
    random_state : int, RandomState instance or None, default=0
        Seed of the draw (a RandomState instance or None: one int is drawn
        from it first).

    Returns
    -------
    is_holdout : ndarray of bool, shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.evaluation import holdout_split
    >>> environments = np.repeat(["a", "b"], [10, 30])
    >>> held = holdout_split(environments, np.arange(40), holdout=0.2)
    >>> int(held[:10].sum()), int(held[10:].sum())
    (2, 6)
    """
    environments = np.asarray(environments)
    view_groups = np.asarray(view_groups)
    check_consistent_length(environments, view_groups)
    contents, content_index = np.unique(view_groups, return_inverse=True)
    content_environment = np.empty(len(contents), dtype=environments.dtype)
    content_environment[content_index] = environments
    if np.any(content_environment[content_index] != environments):
        raise ValueError("The views of one content (one view group) span several environments.")
    seed = _base_seed(random_state)
    held = np.zeros(len(contents), dtype=bool)
    for environment in np.unique(content_environment):
        members = np.flatnonzero(content_environment == environment)
        n_held = int(round(holdout * len(members)))
        # Each environment's draw is seeded by the seed and its own name alone: a source's split does
        # not change when another environment (the target, say) gains or loses rows.
        rng = np.random.default_rng([seed, _name_code(environment)])
        held[rng.permutation(members)[:n_held]] = True
    return held[content_index]


def _base_seed(random_state):
    """An int seed: ``random_state`` itself, or one drawn from a RandomState (None: fresh entropy)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}.")
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _name_code(name):
    """A stable non-negative integer of an environment's name (the same in every process)."""
    value = name.item() if isinstance(name, np.generic) else name
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little")



def selection_splits(
    rule,
    environments,
    target,
    *,
    view_groups=None,
    is_original=None,
    holdout=0.2,
    random_state=0,
):
    """Train/validation index pairs for choosing hyper-parameters in one round.

    Parameters
    ----------
    rule : {"source-val", "lodo-cv", "views-val", "oracle"}
        The selection rule (module docstring).
    environments : array-like of shape (n_rows,)
        Environment of each row.
    target : object
        The held-out environment of this round.
    view_groups : array-like of shape (n_rows,), default=None
        Content id of each row (an image and its views share it); ``None``:
        every row is its own content.
    is_original : array-like of bool, shape (n_rows,), default=None
        Which rows are original images (the others are augmented views);
        ``None``: all rows are originals.
    holdout : float, default=0.2
        Share of every source's contents held out for validation.
    random_state : int, default=0
        Seed of the split (:func:`holdout_split`).

    Returns
    -------
    splits : list of (train_indices, validation_indices)
        Indices into the rows; pass as ``cv`` to a scikit-learn search.
    train : ndarray of int
        The rows a final model is fitted on once the parameters are chosen
        (the sources' training parts).

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.evaluation import selection_splits
    >>> environments = np.repeat(["a", "b", "c"], 10)
    >>> splits, train = selection_splits("lodo-cv", environments, "c")
    >>> [np.unique(environments[val]).tolist() for _, val in splits]
    [['a'], ['b']]
    >>> np.unique(environments[train]).tolist()
    ['a', 'b']
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"Unknown selection rule {rule!r}; choose from {list(SELECTION_RULES)}.")
    environments = np.asarray(environments)
    n = len(environments)
    view_groups = np.arange(n) if view_groups is None else np.asarray(view_groups)
    is_original = np.ones(n, dtype=bool) if is_original is None else np.asarray(is_original, dtype=bool)
    check_consistent_length(environments, view_groups, is_original)
    is_target = environments == target
    if not is_target.any():
        raise ValueError(f"The target {target!r} has no row.")
    sources = np.unique(environments[~is_target])
    if sources.size == 0:
        raise ValueError("There is no source environment besides the target.")

    held = holdout_split(environments, view_groups, holdout, random_state)
    train = ~is_target & ~held
    if rule == "source-val":
        splits = [(train, ~is_target & held & is_original)]
    elif rule == "views-val":
        validation = ~is_target & held & ~is_original
        if not validation.any():
            raise ValueError(
                "selection='views-val' validates on augmented views, but the rows hold none: "
                "embed at least one view per image."
            )
        splits = [(train, validation)]
    elif rule == "lodo-cv":
        if sources.size < 2:
            raise ValueError(
                f"selection='lodo-cv' needs at least two source environments, got {sources.tolist()}."
            )
        splits = [(train & (environments != s), (environments == s) & is_original) for s in sources]
    else:  # oracle
        splits = [(train, is_target & is_original)]
    return [(np.flatnonzero(a), np.flatnonzero(b)) for a, b in splits], np.flatnonzero(train)


def select_and_fit(estimator, param_grid, X, y, splits, train, *, fit_params=None):
    """Choose parameters on ``splits`` by accuracy, then fit on the ``train`` rows.

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score``
    param_grid : dict or list of dict
        As in :class:`~sklearn.model_selection.GridSearchCV`; an empty dict
        skips the search.
    X : array-like of shape (n_rows, n_features)
    y : array-like of shape (n_rows,)
    splits, train
        The output of :func:`selection_splits`.
    fit_params : dict, default=None
        Row-aligned fit parameters (e.g. ``{"proj__view_groups": ...}``);
        subset with the rows for every fit.

    Returns
    -------
    model : estimator
        Fitted on ``train`` with the chosen parameters.
    best_params : dict
        The chosen parameters (empty without a search).
    validation_score : float
        Mean validation accuracy of the chosen parameters (NaN without a search).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.evaluation import select_and_fit, selection_splits
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> splits, train = selection_splits("lodo-cv", data.environments, data.test_environment)
    >>> model, best, score = select_and_fit(
    ...     LogisticRegression(), {"C": [0.01, 1.0]}, data.X, data.y, splits, train
    ... )
    >>> sorted(best)
    ['C']
    """
    fit_params = {} if fit_params is None else fit_params
    X = np.asarray(X)
    y = np.asarray(y)
    best_params, score = {}, float("nan")
    if param_grid:
        candidates, scores = grid_scores(estimator, param_grid, X, y, splits, fit_params=fit_params)
        best = int(np.argmax(scores))  # the first of equals, as GridSearchCV ranks them
        best_params, score = candidates[best], float(scores[best])
    params = {
        key: (np.asarray(value)[train] if _is_row_aligned(value, len(y)) else value)
        for key, value in fit_params.items()
    }
    model = clone(estimator).set_params(**best_params).fit(X[train], y[train], **params)
    return model, best_params, score
