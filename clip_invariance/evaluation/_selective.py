"""Selective prediction: abstain where the confidence is low.

A classifier that may abstain keeps the predictions whose confidence reaches
a threshold ``t`` and hands the others back. Its *coverage* is the fraction
kept and its *selective risk* the error rate among the kept. These functions
work with any confidence (larger means surer), in the style of
:mod:`sklearn.metrics`: the largest ``predict_proba`` of any classifier, a
margin, or ``-U`` for the front door's fused uncertainty
``U = FrontDoorEnsembleClassifier.predict_uncertainty(X)`` (not ``1 - U``,
which rounds to exactly 1 when ``U`` is tiny).

Samples of equal confidence are kept or dropped together: a threshold
cannot split a tie, so every curve here moves from one distinct confidence
to the next.
"""

from numbers import Real

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.utils import check_consistent_length, column_or_1d

__all__ = [
    "abstention_threshold",
    "confidence_roc_auc",
    "risk_coverage_curve",
    "selective_risk_auc",
]


def _check_selective_inputs(y_true, y_pred, confidence):
    """1-D arrays of equal, non-zero length, labels of one kind, and a confidence free of NaN."""
    y_true = column_or_1d(y_true)
    y_pred = column_or_1d(y_pred)
    confidence = column_or_1d(confidence)
    check_consistent_length(y_true, y_pred, confidence)
    if y_true.shape[0] == 0:
        raise ValueError("y_true, y_pred and confidence are empty; at least one sample is needed.")
    kinds = _label_kinds(y_true), _label_kinds(y_pred)
    if len(kinds[0] | kinds[1]) > 1:
        # A string never equals a number: every prediction would count as an error.
        names = [" and ".join(sorted(kind, reverse=True)) for kind in kinds]
        raise ValueError(f"Mix of label input types (string and number): y_true holds {names[0]}, y_pred "
                         f"{names[1]}. Give both as the same kind of label.")
    if not np.issubdtype(confidence.dtype, np.number) or np.issubdtype(confidence.dtype, np.complexfloating):
        raise TypeError(f"confidence must hold real numbers, got dtype {confidence.dtype}.")
    confidence = confidence.astype(np.float64)
    if np.isnan(confidence).any():
        raise ValueError("confidence contains NaN; every sample needs a confidence to be ranked.")
    return y_true, y_pred, confidence


def _label_kinds(labels):
    """``{"strings"}``, ``{"numbers"}`` or both: what the labels are, as scikit-learn tells them apart."""
    if labels.dtype.kind in "US":
        return {"strings"}
    if labels.dtype.kind != "O":
        return {"numbers"}
    return {"strings" if isinstance(label, str) else "numbers" for label in labels}


def risk_coverage_curve(y_true, y_pred, confidence):
    """Selective risk against coverage, one point per distinct confidence.

    For each threshold ``t`` (a distinct value of ``confidence``, largest
    first) the kept set is ``confidence >= t``::

        coverage(t) = |kept| / n,    risk(t) = #(y_pred != y_true in kept) / |kept|

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    confidence : array-like of shape (n_samples,)
        Confidence of each prediction; larger means surer. Any real scale.

    Returns
    -------
    coverage : ndarray of shape (n_thresholds,)
        Fraction of samples kept, increasing; the last is 1.
    risk : ndarray of shape (n_thresholds,)
        Error rate among the kept samples.
    thresholds : ndarray of shape (n_thresholds,)
        The distinct confidences, decreasing (as in
        :func:`sklearn.metrics.roc_curve`).

    Examples
    --------
    >>> from clip_invariance.evaluation import risk_coverage_curve
    >>> coverage, risk, thresholds = risk_coverage_curve(
    ...     [0, 1, 1, 0], [0, 1, 0, 1], [0.9, 0.8, 0.8, 0.3])
    >>> coverage, risk, thresholds
    (array([0.25, 0.75, 1.  ]), array([0. , 0.333..., 0.5 ]), array([0.9, 0.8, 0.3]))
    """
    y_true, y_pred, confidence = _check_selective_inputs(y_true, y_pred, confidence)
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence = confidence[order]
    errors = np.cumsum(y_true[order] != y_pred[order])
    # The last sample of each run of equal confidences closes a group: a
    # threshold keeps the whole group or none of it.
    last = np.r_[sorted_confidence[1:] != sorted_confidence[:-1], True]
    kept = np.flatnonzero(last) + 1
    return kept / len(confidence), errors[last] / kept, sorted_confidence[last]


def selective_risk_auc(y_true, y_pred, confidence):
    """Area under the risk-coverage curve (AURC); lower is better.

    The curve is a step function: the risk of a group of tied confidences
    holds over the coverage that group adds, so

    ``AURC = sum_t (coverage(t) - coverage(t_prev)) * risk(t)``

    which is the mean, over samples, of the selective risk at that sample's
    own confidence (Geifman et al., 2019, without ties). It lies between the
    AURC of a perfect ranking, for the same errors, and the error rate
    itself for an uninformative one (all confidences equal).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    confidence : array-like of shape (n_samples,)
        Confidence of each prediction; larger means surer.

    Returns
    -------
    aurc : float

    Examples
    --------
    >>> from clip_invariance.evaluation import selective_risk_auc
    >>> selective_risk_auc([0, 1, 1, 0], [0, 1, 0, 1], [0.9, 0.8, 0.7, 0.3])
    0.208...
    >>> selective_risk_auc([0, 1, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1])  # no ranking: the error rate
    0.5
    """
    coverage, risk, _ = risk_coverage_curve(y_true, y_pred, confidence)
    return float(np.dot(np.diff(coverage, prepend=0.0), risk))


def confidence_roc_auc(y_true, y_pred, confidence):
    """AUROC of the confidence for telling correct predictions from errors.

    The probability that a correct prediction, drawn at random, is more
    confident than a wrong one (ties count one half): 0.5 for a confidence
    that knows nothing, 1 when every error is less confident than every
    correct prediction. Unlike the AURC it does not depend on the error rate.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels; both correct and wrong predictions are
        needed.
    confidence : array-like of shape (n_samples,)
        Confidence of each prediction; larger means surer.

    Returns
    -------
    auroc : float

    Examples
    --------
    >>> from clip_invariance.evaluation import confidence_roc_auc
    >>> confidence_roc_auc([0, 1, 1, 0], [0, 1, 0, 1], [0.9, 0.8, 0.7, 0.3])
    1.0
    """
    y_true, y_pred, confidence = _check_selective_inputs(y_true, y_pred, confidence)
    correct = y_true == y_pred
    if correct.all() or not correct.any():
        raise ValueError(
            "confidence_roc_auc needs both correct and wrong predictions; "
            f"got {int(correct.sum())} correct out of {len(correct)}."
        )
    return float(roc_auc_score(correct, confidence))


def abstention_threshold(y_true, y_pred, confidence, *, target_risk):
    """Smallest confidence threshold whose kept set has risk <= ``target_risk``.

    Chosen on validation data, then applied as ``keep = confidence >= threshold``
    on new data. The smallest such threshold keeps the most samples; the
    risk need not fall monotonically with the threshold, and every threshold
    is considered. Under a distribution shift the risk realised on new data
    can exceed the target: check it where labels allow.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels of the validation data.
    confidence : array-like of shape (n_samples,)
        Confidence of each prediction; larger means surer.
    target_risk : float in [0, 1]
        Largest acceptable error rate among the kept predictions.

    Returns
    -------
    threshold : float
        Keep a prediction when its confidence is ``>= threshold``.
    coverage : float
        Fraction of the validation samples that the threshold keeps.

    Raises
    ------
    ValueError
        When no threshold reaches ``target_risk`` (even the most confident
        group errs too often), or for bad inputs.

    Examples
    --------
    >>> from clip_invariance.evaluation import abstention_threshold
    >>> abstention_threshold([0, 1, 1, 0], [0, 1, 0, 1], [0.9, 0.8, 0.7, 0.3], target_risk=0.4)
    (0.7, 0.75)
    """
    if isinstance(target_risk, bool) or not isinstance(target_risk, Real):
        raise TypeError(f"target_risk must be a real number in [0, 1], got {target_risk!r}.")
    if not 0.0 <= target_risk <= 1.0:  # also refuses NaN
        raise ValueError(f"target_risk must be in [0, 1], got {target_risk!r}.")
    coverage, risk, thresholds = risk_coverage_curve(y_true, y_pred, confidence)
    reached = np.flatnonzero(risk <= target_risk)
    if reached.size == 0:
        raise ValueError(
            f"No threshold reaches target_risk={target_risk!r}: the lowest selective risk is "
            f"{risk.min():.4g} (at coverage {coverage[np.argmin(risk)]:.4g})."
        )
    best = reached[-1]  # thresholds decrease, so the last one reached is the smallest
    return float(thresholds[best]), float(coverage[best])
