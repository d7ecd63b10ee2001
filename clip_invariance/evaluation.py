"""The DomainBed leave-one-domain-out protocol, for any scikit-learn estimator."""

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length

__all__ = ["leave_one_domain_out"]


def leave_one_domain_out(
    estimator,
    X,
    y,
    domains,
    *,
    fit_params=None,
    holdout=0.2,
    content_ids=None,
    scored=None,
    random_state=0,
):
    """Evaluate out-of-domain accuracy with the DomainBed protocol.

    For every domain in turn: that domain is the target; each other (source)
    domain is split 80/20 with a fixed seed; a clone of ``estimator`` is fitted
    on the 80% parts and scored on the whole target domain (out of domain) and
    on the 20% parts (in-domain validation, what DomainBed selects models on).

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score``
        E.g. a pipeline ending in a classifier. Cloned for every target domain.
    X : array-like of shape (n_samples, n_features)
        Embeddings.
    y : array-like of shape (n_samples,)
        Class labels.
    domains : array-like of shape (n_samples,)
        Domain (environment) of each row; at least two distinct values.
    fit_params : dict, default=None
        Extra arguments of ``fit``. Arrays with ``n_samples`` rows are
        subset like ``X`` (e.g. ``{"proj__view_groups": view_groups}``); anything
        else is passed unchanged.
    holdout : float, default=0.2
        Share of every source domain kept out of training for validation.
    content_ids : array-like of shape (n_samples,), default=None
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
        One per target domain: ``domain``, ``test_accuracy``,
        ``validation_accuracy``, ``n_train``, ``n_test``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.evaluation import leave_one_domain_out
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> rows = leave_one_domain_out(LogisticRegression(), data.X, data.y, data.environments)
    >>> [row["domain"] for row in rows], rows[0]["n_test"]
    ([0, 1, 2, 3], 100)
    """
    y = np.asarray(y)
    domains = np.asarray(domains)
    n = len(y)
    check_consistent_length(X, y, domains)
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}.")
    unique_domains = np.unique(domains)
    if len(unique_domains) < 2:
        raise ValueError(
            f"leave-one-domain-out needs at least two domains, got {unique_domains.tolist()}."
        )
    content_ids = np.arange(n) if content_ids is None else np.asarray(content_ids)
    scored = np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    check_consistent_length(y, content_ids, scored)
    fit_params = fit_params or {}

    # One fixed 80/20 split of every domain, by content, reused for all targets.
    rng = check_random_state(random_state)
    contents, content_index = np.unique(content_ids, return_inverse=True)
    is_validation_content = rng.uniform(size=len(contents)) < holdout
    is_validation = is_validation_content[content_index]

    def subset(mask):
        X_sub = X[mask] if hasattr(X, "shape") else [x for x, m in zip(X, mask) if m]
        params = {
            key: (np.asarray(value)[mask] if _is_row_aligned(value, n) else value)
            for key, value in fit_params.items()
        }
        return X_sub, y[mask], params

    rows = []
    for target in unique_domains:
        is_target = domains == target
        train = ~is_target & ~is_validation
        validation = ~is_target & is_validation
        X_train, y_train, params = subset(train)
        model = clone(estimator).fit(X_train, y_train, **params)
        X_test, y_test, _ = subset(is_target & scored)
        X_val, y_val, _ = subset(validation & scored)
        rows.append(
            {
                "domain": target.item() if isinstance(target, np.generic) else target,
                "test_accuracy": float(model.score(X_test, y_test)),
                "validation_accuracy": float(model.score(X_val, y_val))
                if len(y_val)
                else float("nan"),
                "n_train": int(train.sum()),
                "n_test": int(len(y_test)),
            }
        )
    return rows


def _is_row_aligned(value, n):
    return hasattr(value, "__len__") and not isinstance(value, (str, dict)) and len(value) == n
