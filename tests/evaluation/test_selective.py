import re
from fractions import Fraction

import numpy as np
import pytest

from clip_invariance.evaluation import (
    abstention_threshold,
    confidence_roc_auc,
    risk_coverage_curve,
    selective_risk_auc,
)


def brute_force_curve(y_true, y_pred, confidence):
    """One point per distinct confidence, from the kept set itself, in exact fractions."""
    n = len(confidence)
    points = []
    for t in sorted(set(confidence), reverse=True):
        kept = [i for i in range(n) if confidence[i] >= t]
        errors = sum(y_true[i] != y_pred[i] for i in kept)
        points.append((Fraction(len(kept), n), Fraction(errors, len(kept)), t))
    return points


def brute_force_aurc(y_true, y_pred, confidence):
    """Mean over samples of the risk of the set kept at that sample's confidence."""
    n = len(confidence)
    total = Fraction(0)
    for i in range(n):
        kept = [j for j in range(n) if confidence[j] >= confidence[i]]
        total += Fraction(sum(y_true[j] != y_pred[j] for j in kept), len(kept))
    return total / n


def brute_force_auroc(correct, confidence):
    """P(conf of a correct > conf of a wrong), ties one half."""
    pos = [c for c, ok in zip(confidence, correct) if ok]
    neg = [c for c, ok in zip(confidence, correct) if not ok]
    wins = sum(Fraction(1) if p > q else Fraction(1, 2) if p == q else Fraction(0) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def random_case(seed, n=None, n_levels=None):
    """Labels and a coarse confidence, so that ties are common."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 30) if n is None else n
    y_true = rng.integers(0, 3, size=n)
    y_pred = rng.integers(0, 3, size=n)
    levels = rng.integers(1, 8) if n_levels is None else n_levels
    confidence = rng.integers(0, levels, size=n) / levels
    return y_true, y_pred, confidence


@pytest.mark.parametrize("seed", range(40))
def test_curve_matches_brute_force_with_ties(seed):
    y_true, y_pred, confidence = random_case(seed)
    coverage, risk, thresholds = risk_coverage_curve(y_true, y_pred, confidence)
    expected = brute_force_curve(list(y_true), list(y_pred), list(confidence))
    assert len(coverage) == len(expected) == len(np.unique(confidence))
    np.testing.assert_allclose(coverage, [float(c) for c, _, _ in expected], rtol=0, atol=1e-15)
    np.testing.assert_allclose(risk, [float(r) for _, r, _ in expected], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(thresholds, [t for _, _, t in expected])
    assert coverage[-1] == 1.0


@pytest.mark.parametrize("seed", range(40))
def test_aurc_matches_brute_force_with_ties(seed):
    y_true, y_pred, confidence = random_case(seed)
    expected = brute_force_aurc(list(y_true), list(y_pred), list(confidence))
    assert selective_risk_auc(y_true, y_pred, confidence) == pytest.approx(float(expected), abs=1e-14)


@pytest.mark.parametrize("seed", range(40))
def test_auroc_matches_brute_force_with_ties(seed):
    y_true, y_pred, confidence = random_case(seed, n=25)
    correct = y_true == y_pred
    if correct.all() or not correct.any():
        pytest.skip("a case with one kind of prediction only")
    expected = brute_force_auroc(list(correct), list(confidence))
    assert confidence_roc_auc(y_true, y_pred, confidence) == pytest.approx(float(expected), abs=1e-14)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("target_risk", [0.0, 0.2, 0.5, 0.7, 1.0])
def test_threshold_matches_brute_force(seed, target_risk):
    y_true, y_pred, confidence = random_case(seed)
    n = len(confidence)
    # Every candidate threshold, kept only when its exact risk reaches the target as written
    # (0.7 means 7/10, whose nearest float the function is given).
    ok = [
        t for t in set(confidence)
        if Fraction(int(np.sum((y_true != y_pred)[confidence >= t])), int(np.sum(confidence >= t)))
        <= Fraction(str(target_risk))
    ]
    if not ok:
        with pytest.raises(ValueError, match="No threshold reaches"):
            abstention_threshold(y_true, y_pred, confidence, target_risk=target_risk)
        return
    threshold, coverage = abstention_threshold(y_true, y_pred, confidence, target_risk=target_risk)
    assert threshold == min(ok)
    assert coverage == np.sum(confidence >= min(ok)) / n
    kept = confidence >= threshold
    assert np.mean(y_true[kept] != y_pred[kept]) <= target_risk


def test_known_curve_and_areas():
    y_true = np.array(["cat", "dog", "dog", "cat", "cat"])
    y_pred = np.array(["cat", "dog", "cat", "dog", "cat"])
    confidence = [0.9, 0.8, 0.8, 0.3, 0.1]
    coverage, risk, thresholds = risk_coverage_curve(y_true, y_pred, confidence)
    np.testing.assert_allclose(coverage, [0.2, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(risk, [0.0, 1 / 3, 0.5, 0.4])
    np.testing.assert_array_equal(thresholds, [0.9, 0.8, 0.3, 0.1])
    # 0.2 * 0 + 0.4 * 1/3 + 0.2 * 0.5 + 0.2 * 0.4
    assert selective_risk_auc(y_true, y_pred, confidence) == pytest.approx(0.4 / 3 + 0.1 + 0.08)
    # correct at 0.9, 0.8, 0.1; wrong at 0.8, 0.3: pairs 1 + 1 + 0.5 + 1 + 0 + 0 of 6
    assert confidence_roc_auc(y_true, y_pred, confidence) == pytest.approx(3.5 / 6)
    # The risk is not monotone: 0.4 is reached at full coverage, 1/3 only at 0.6.
    assert abstention_threshold(y_true, y_pred, confidence, target_risk=0.4) == (0.1, 1.0)
    assert abstention_threshold(y_true, y_pred, confidence, target_risk=0.39) == (0.8, 0.6)
    assert abstention_threshold(y_true, y_pred, confidence, target_risk=0.0) == (0.9, 0.2)


def test_perfect_and_uninformative_rankings():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 1])  # 2 errors of 8
    correct = y_true == y_pred
    perfect = np.where(correct, 1.0, 0.0) + np.arange(8) * 1e-3
    # Errors last: risk is 0 over coverage 6/8, then 1/7 and 2/8.
    assert selective_risk_auc(y_true, y_pred, perfect) == pytest.approx((1 / 7 + 2 / 8) / 8)
    assert confidence_roc_auc(y_true, y_pred, perfect) == 1.0
    assert confidence_roc_auc(y_true, y_pred, -perfect) == 0.0
    flat = np.full(8, 0.5)
    assert selective_risk_auc(y_true, y_pred, flat) == pytest.approx(0.25)
    assert confidence_roc_auc(y_true, y_pred, flat) == 0.5
    coverage, risk, thresholds = risk_coverage_curve(y_true, y_pred, flat)
    assert (coverage.tolist(), risk.tolist(), thresholds.tolist()) == ([1.0], [0.25], [0.5])


def test_any_monotone_rescaling_of_the_confidence_gives_the_same_answers():
    y_true, y_pred, confidence = random_case(3, n=200, n_levels=20)
    rescaled = np.exp(5 * confidence) - 7  # increasing, other scale and sign
    assert selective_risk_auc(y_true, y_pred, rescaled) == selective_risk_auc(y_true, y_pred, confidence)
    assert confidence_roc_auc(y_true, y_pred, rescaled) == confidence_roc_auc(y_true, y_pred, confidence)
    np.testing.assert_array_equal(
        risk_coverage_curve(y_true, y_pred, rescaled)[1], risk_coverage_curve(y_true, y_pred, confidence)[1]
    )
    threshold, coverage = abstention_threshold(y_true, y_pred, confidence, target_risk=0.6)
    threshold_r, coverage_r = abstention_threshold(y_true, y_pred, rescaled, target_risk=0.6)
    assert coverage == coverage_r
    assert threshold_r == np.exp(5 * threshold) - 7


def test_uncertainty_of_the_front_door_as_confidence():
    from clip_invariance import FrontDoorEnsembleClassifier
    from clip_invariance.datasets import make_multi_template_embeddings

    data = make_multi_template_embeddings(n_samples=400, random_state=0)
    clf = FrontDoorEnsembleClassifier(
        prompt_embeddings=data.prompt_embeddings, anchor_embeddings=data.anchor_embeddings,
        n_views=4, max_iter=0,
    ).fit(data.X, data.y)
    y_pred = clf.predict(data.X)
    confidence = 1 - clf.predict_uncertainty(data.X)
    threshold, coverage = abstention_threshold(data.y, y_pred, confidence, target_risk=0.2)
    kept = confidence >= threshold
    assert kept.mean() == coverage
    assert np.mean(data.y[kept] != y_pred[kept]) <= 0.2 < np.mean(data.y != y_pred)
    # The fused uncertainty ranks errors better than chance on this set-up.
    assert confidence_roc_auc(data.y, y_pred, confidence) > 0.6


@pytest.mark.parametrize(
    "func", [risk_coverage_curve, selective_risk_auc, confidence_roc_auc,
             lambda *a: abstention_threshold(*a, target_risk=0.5)],
)
def test_bad_inputs(func):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        func([0, 1], [0, 1, 1], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        func([0, 1], [0, 1], [0.5])
    with pytest.raises(ValueError, match=re.escape("confidence contains NaN")):
        func([0, 1], [0, 0], [0.5, np.nan])
    with pytest.raises(ValueError, match="are empty; at least one sample is needed"):
        func([], [], [])
    with pytest.raises(TypeError, match="confidence must hold real numbers, got dtype <U"):
        func([0, 1], [0, 0], ["high", "low"])
    with pytest.raises(ValueError, match="y should be a 1d array"):
        func([[0, 1]], [[0, 1]], [[0.5, 0.5]])
    # A string never equals a number: every prediction would count as wrong (scikit-learn raises too).
    mixed = r"^Mix of label input types \(string and number\): y_true holds {}, y_pred {}\."
    with pytest.raises(ValueError, match=mixed.format("strings", "numbers")):
        func(["a", "b"], [0, 1], [0.5, 0.4])
    with pytest.raises(ValueError, match=mixed.format("numbers", "strings")):
        func(np.array([0, 1]), np.array(["0", "1"], dtype=object), [0.5, 0.4])
    with pytest.raises(ValueError, match=mixed.format("strings and numbers", "strings")):
        func(np.array(["a", 1], dtype=object), ["a", "b"], [0.5, 0.4])


def test_auroc_needs_both_kinds_of_prediction():
    with pytest.raises(ValueError, match="needs both correct and wrong predictions; got 2 correct out of 2"):
        confidence_roc_auc([0, 1], [0, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match="got 0 correct out of 2"):
        confidence_roc_auc([0, 1], [1, 0], [0.2, 0.9])


@pytest.mark.parametrize("target_risk", [-0.1, 1.5, float("nan")])
def test_target_risk_outside_unit_interval(target_risk):
    with pytest.raises(ValueError, match=re.escape(f"target_risk must be in [0, 1], got {target_risk!r}")):
        abstention_threshold([0, 1], [0, 1], [0.2, 0.9], target_risk=target_risk)


@pytest.mark.parametrize("target_risk", ["0.1", None, True])
def test_target_risk_not_a_number(target_risk):
    with pytest.raises(TypeError, match="target_risk must be a real number in"):
        abstention_threshold([0, 1], [0, 1], [0.2, 0.9], target_risk=target_risk)


def test_no_threshold_reaches_the_target():
    # The most confident prediction is wrong, so no kept set has risk 0.
    with pytest.raises(ValueError, match=re.escape(
        "No threshold reaches target_risk=0.0: the lowest selective risk is 0.3333 (at coverage 0.75)"
    )):
        abstention_threshold([0, 1, 1, 0], [1, 1, 1, 1], [0.9, 0.8, 0.8, 0.1], target_risk=0.0)
    # target_risk=1 is always reached, at full coverage.
    assert abstention_threshold([0, 1], [1, 0], [0.9, 0.1], target_risk=1.0) == (0.1, 1.0)


def test_labels_of_one_kind_in_any_dtype_are_compared():
    confidence = [0.9, 0.8, 0.7]
    expected = risk_coverage_curve([0, 1, 1], [0, 1, 0], confidence)
    for y_true, y_pred in [(np.array([0.0, 1.0, 1.0]), [0, 1, 0]), ([False, True, True], [0, 1, 0])]:
        for a, b in zip(risk_coverage_curve(y_true, y_pred, confidence), expected):
            np.testing.assert_array_equal(a, b)
    strings = risk_coverage_curve(np.array(["a", "b", "b"], dtype=object), ["a", "b", "a"], confidence)
    np.testing.assert_array_equal(strings[1], [0.0, 0.0, 1 / 3])
