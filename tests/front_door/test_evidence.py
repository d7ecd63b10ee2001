"""Subjective-logic opinions and the reduced Dempster rule."""

from fractions import Fraction

import numpy as np
import pytest

from clip_invariance.front_door import (
    EVIDENCE_FUNCTIONS,
    fuse_evidence,
    fuse_opinions,
    fuse_scores,
    log_evidence,
    opinion_from_evidence,
)
from clip_invariance.front_door._evidence import _dempster_combine
from clip_invariance.front_door._training import EXP_CLIP, torch_evidence


def direct_dempster(b1, u1, b2, u2):
    """The textbook formula, term by term (works on floats and Fractions)."""
    n_classes = len(b1)
    conflict = sum(b1[i] * b2[j] for i in range(n_classes) for j in range(n_classes) if i != j)
    belief = [(b1[c] * b2[c] + b1[c] * u2 + b2[c] * u1) / (1 - conflict) for c in range(n_classes)]
    return belief, u1 * u2 / (1 - conflict)


def random_opinions(rng, n_opinions, n_classes, n_samples=None):
    shape = (n_opinions,) if n_samples is None else (n_opinions, n_samples)
    evidence = rng.gamma(0.7, 3.0, size=shape + (n_classes,))
    return opinion_from_evidence(evidence)


def test_opinion_from_evidence_hand_example():
    # e = [3, 1, 0] -> alpha = [4, 2, 1], S = 7, u = 3 / 7.
    b, u = opinion_from_evidence([3.0, 1.0, 0.0])
    np.testing.assert_allclose(b, [3 / 7, 1 / 7, 0.0])
    assert u == pytest.approx(3 / 7)


def test_opinion_from_log_evidence_handles_evidence_beyond_float64():
    b, u = opinion_from_evidence([1000.0, 0.0], log=True)  # e = [e^1000, 1]
    np.testing.assert_allclose(b, [1.0, 0.0], atol=1e-300)
    assert 0 < u < 1e-400 or u == 0.0
    assert np.isfinite(b).all()


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("softplus", np.log(np.log1p(np.exp([-5.0, 0.0, 3.0])))),
        ("relu", np.log([0.0 + 1e-300, 1e-300, 3.0])),
        ("exp", [-5.0, 0.0, 3.0]),
    ],
)
def test_log_evidence_matches_naive_formula(kind, expected):
    got = log_evidence([-5.0, 0.0, 3.0], kind)
    if kind == "relu":
        assert np.isneginf(got[:2]).all()
        assert got[2] == pytest.approx(np.log(3.0))
    else:
        np.testing.assert_allclose(got, expected)


def test_log_evidence_is_stable_at_extremes():
    assert log_evidence(-1000.0, "softplus") == pytest.approx(-1000.0)
    assert log_evidence(1000.0, "softplus") == pytest.approx(np.log(1000.0))
    assert log_evidence(1000.0, "exp") == 1000.0  # e^1000 as its log: no clip at inference


def test_unknown_evidence_function():
    with pytest.raises(ValueError, match="evidence function must be one of"):
        log_evidence([1.0], "sigmoid")


def test_combine_agrees_with_direct_formula():
    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 7):
        (b1, b2), (u1, u2) = random_opinions(rng, 2, n_classes)
        expected_b, expected_u = direct_dempster(b1, u1, b2, u2)
        b, u = _dempster_combine(b1, u1, b2, u2)
        np.testing.assert_allclose(b, expected_b, rtol=1e-12)
        assert u == pytest.approx(expected_u, rel=1e-12)


def test_combine_hand_example():
    # masses: 0.6*0.5 + 0.6*0.5 + 0.5*0.2 = 0.7, 0.2*0.5 = 0.1, u: 0.1; 1 - k = 0.9
    b, u = _dempster_combine([0.6, 0.2], 0.2, [0.5, 0.0], 0.5)
    np.testing.assert_allclose(b, [7 / 9, 1 / 9])
    assert u == pytest.approx(1 / 9)


def test_combine_is_commutative_and_associative_and_valid():
    rng = np.random.default_rng(1)
    (b1, b2, b3), (u1, u2, u3) = random_opinions(rng, 3, 5, n_samples=50)
    b12, u12 = _dempster_combine(b1, u1, b2, u2)
    b21, u21 = _dempster_combine(b2, u2, b1, u1)
    np.testing.assert_allclose(b12, b21, rtol=1e-12)
    np.testing.assert_allclose(u12, u21, rtol=1e-12)
    left = _dempster_combine(*_dempster_combine(b1, u1, b2, u2), b3, u3)
    right = _dempster_combine(b1, u1, *_dempster_combine(b2, u2, b3, u3))
    np.testing.assert_allclose(left[0], right[0], rtol=1e-10)
    np.testing.assert_allclose(left[1], right[1], rtol=1e-10)
    assert (left[0] >= 0).all() and (left[1] > 0).all()
    np.testing.assert_allclose(left[0].sum(axis=1) + left[1], 1.0)


def test_vacuous_opinion_is_the_identity():
    rng = np.random.default_rng(2)
    (b,), (u,) = random_opinions(rng, 1, 4, n_samples=10)
    fused_b, fused_u = _dempster_combine(b, u, np.zeros_like(b), np.ones_like(u))
    np.testing.assert_allclose(fused_b, b, rtol=1e-12)
    np.testing.assert_allclose(fused_u, u, rtol=1e-12)


def test_fuse_opinions_is_the_pairwise_fold():
    rng = np.random.default_rng(3)
    beliefs, uncertainties = random_opinions(rng, 5, 6, n_samples=20)
    b, u = beliefs[0], uncertainties[0]
    for k in range(1, 5):
        b, u = _dempster_combine(b, u, beliefs[k], uncertainties[k])
    fused_b, fused_u = fuse_opinions(beliefs, uncertainties)
    np.testing.assert_allclose(fused_b, b, rtol=1e-10)
    np.testing.assert_allclose(fused_u, u, rtol=1e-10)


def test_conflict_close_to_one_matches_exact_arithmetic():
    # Two near-certain opinions on different classes: k = 1 - O(1e-12).
    e1, e2 = [1e12, 1.0, 0.0], [0.0, 1e12, 2.0]
    exact = []
    for e in (e1, e2):
        strength = sum(Fraction(x) for x in e) + 3
        exact.append(([Fraction(x) / strength for x in e], Fraction(3) / strength))
    expected_b, expected_u = direct_dempster(exact[0][0], exact[0][1], exact[1][0], exact[1][1])

    (b1, b2), (u1, u2) = opinion_from_evidence(np.array([e1, e2]))
    b, u = _dempster_combine(b1, u1, b2, u2)
    np.testing.assert_allclose(b, [float(x) for x in expected_b], rtol=1e-9)
    assert u == pytest.approx(float(expected_u), rel=1e-9)
    # The textbook formula in float64 cancels catastrophically in 1 - k.
    naive_b, _ = direct_dempster(b1, u1, b2, u2)
    assert abs(naive_b[2] - float(expected_b[2])) > 1e-6 * float(expected_b[2])


def test_huge_evidence_stays_finite_and_symmetric():
    # e = e^600 ~ 1e260: u ~ 1e-261, so u1 * u2 and 1 - k underflow in float64.
    log_e = np.array([[600.0, 0.0], [0.0, 600.0]])
    beliefs, uncertainties = opinion_from_evidence(log_e, log=True)
    assert (uncertainties > 0).all()
    b, u = fuse_opinions(beliefs, uncertainties)
    assert np.isfinite(b).all() and np.isfinite(u)
    np.testing.assert_allclose(b, [0.5, 0.5])
    assert 0 < u < 1e-200


def test_certain_opinions_fall_back_to_the_pairwise_rule():
    b, u = _dempster_combine([1.0, 0.0], 0.0, [0.5, 0.0], 0.5)
    np.testing.assert_allclose(b, [1.0, 0.0])
    assert u == 0.0
    with pytest.raises(ValueError, match="Total conflict"):
        _dempster_combine([1.0, 0.0], 0.0, [0.0, 1.0], 0.0)


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.5, np.nan], 0.5, [0.5, 0.0], 0.5), "NaN"),
        (([0.5, 0.2], 0.5, [0.5, 0.0], 0.5), "must equal 1"),
        (([0.5, 0.5], [0.0, 0.0], [0.5, 0.0], 0.5), "uncertainty of shape"),
        (([0.5, 0.0], 0.5, [0.5, 0.0, 0.0], 0.5), "classes"),
        (([1.5, -0.5], 0.0, [0.5, 0.0], 0.5), "non-negative"),
    ],
)
def test_invalid_opinions_raise(args, match):
    with pytest.raises(ValueError, match=match):
        _dempster_combine(*args)


def test_invalid_evidence_raises():
    with pytest.raises(ValueError, match="non-negative"):
        opinion_from_evidence([1.0, -1.0])
    with pytest.raises(ValueError, match="NaN"):
        opinion_from_evidence([1.0, np.nan])
    with pytest.raises(ValueError, match="class axis"):
        opinion_from_evidence(1.0)


@pytest.mark.parametrize("kind", EVIDENCE_FUNCTIONS)
def test_torch_evidence_is_the_same_function(kind):
    torch = pytest.importorskip("torch")
    scores = np.linspace(-40.0, 55.0, 97)
    expected = np.exp(log_evidence(scores, kind))
    got = torch_evidence(torch.tensor(scores, dtype=torch.float64), kind).numpy()
    # (torch's softplus returns x itself above 20: off by e^-20 / 20 ~ 1e-10 relative.)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-300)
    if kind == "exp":  # training clips, so that float32 sums of C evidences cannot overflow
        assert torch_evidence(torch.tensor([100.0]), kind).item() == pytest.approx(np.exp(EXP_CLIP))


def test_unknown_evidence_function_in_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="evidence function must be one of"):
        torch_evidence(torch.zeros(2), "sigmoid")


@pytest.mark.filterwarnings("error")
def test_infinite_evidence_is_the_limit_of_huge_evidence():
    b, u = opinion_from_evidence([np.inf, 1.0])
    np.testing.assert_array_equal(b, [1.0, 0.0])
    assert u == 0.0
    b, u = opinion_from_evidence([[np.inf, np.inf, 0.0], [2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(b[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(b[1], [0.4, 0.0, 0.0])
    np.testing.assert_allclose(u, [0.0, 0.6])
    b, u = opinion_from_evidence([np.inf, 0.0], log=True)
    np.testing.assert_array_equal(b, [1.0, 0.0])
    # Huge finite evidence tends to the same opinion.
    b, u = opinion_from_evidence([700.0, 0.0], log=True)
    np.testing.assert_allclose(b, [1.0, 0.0], atol=1e-300)
    b, u = fuse_evidence([[np.inf, 1.0], [2.0, 1.0]])
    np.testing.assert_array_equal(b, [1.0, 0.0])
    assert u == 0.0


def test_fuse_evidence_equals_fusing_the_opinions():
    rng = np.random.default_rng(4)
    evidence = rng.gamma(0.7, 3.0, size=(5, 20, 6))
    expected_b, expected_u = fuse_opinions(*opinion_from_evidence(evidence))
    for args, kwargs in [
        ((evidence,), {}),
        ((list(evidence),), {}),
        (((e for e in evidence),), {}),  # a generator: opinions accumulated one by one
        ((np.log(evidence),), {"log": True}),
    ]:
        b, u = fuse_evidence(*args, **kwargs)
        np.testing.assert_allclose(b, expected_b, rtol=1e-10)
        np.testing.assert_allclose(u, expected_u, rtol=1e-10)


def test_fuse_evidence_is_exact_beyond_float64():
    # e = [e^1000, e^999]: R = [1000 - log 2, 999 - log 2] (to float64), so b0 / b1 = e.
    b, u = fuse_evidence([[1000.0, 999.0]], log=True)
    assert b[0] / b[1] == pytest.approx(np.e)
    assert b.sum() == pytest.approx(1.0) and 0.0 <= u < 1e-300
    b, _ = fuse_evidence([[800.0, 0.0], [0.0, 800.0]], log=True)
    np.testing.assert_allclose(b, [0.5, 0.5])


@pytest.mark.parametrize(
    "evidences, match",
    [
        ([], "at least one evidence array"),
        ([[1.0, 2.0], [1.0, 2.0, 3.0]], "same shape"),
        ([[1.0, -2.0]], "non-negative"),
        ([[1.0, np.nan]], "NaN"),
        ([1.0, 2.0], "class axis"),
    ],
)
def test_fuse_evidence_rejects_bad_evidence(evidences, match):
    with pytest.raises(ValueError, match=match):
        fuse_evidence(evidences)


# ------------------------------------------------ fusion straight from scores
@pytest.mark.parametrize("kind", EVIDENCE_FUNCTIONS)
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0, 1000.0])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_fuse_scores_equals_the_log_space_fusion(kind, scale, dtype, rtol):
    # The linear-space path (in the scores' precision) and the log-space one agree,
    # and huge scores (exp evidence far beyond float64) take the exact log path.
    rng = np.random.default_rng(0)
    scores = (scale * rng.uniform(-1.0, 1.0, size=(6, 40, 12))).astype(dtype)
    belief, uncertainty = fuse_scores(scores, kind)
    reference = fuse_evidence((log_evidence(s, kind) for s in scores), log=True)
    assert belief.dtype == uncertainty.dtype == np.float64
    np.testing.assert_allclose(belief, reference[0], rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(uncertainty, reference[1], rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(belief.sum(axis=-1) + uncertainty, 1.0, rtol=1e-12)


def test_fuse_scores_moves_to_log_space_mid_stream_and_keeps_what_it_fused():
    # Three moderate opinions, then one that would overflow float32 (and float64: e^800).
    rng = np.random.default_rng(1)
    scores = [rng.uniform(-5, 5, size=(30, 7)).astype(np.float32) for _ in range(3)]
    scores.append(np.float32(800.0) * rng.uniform(-1, 1, size=(30, 7)).astype(np.float32))
    belief, uncertainty = fuse_scores(iter(scores), "exp")
    reference = fuse_evidence([log_evidence(s, "exp") for s in scores], log=True)
    np.testing.assert_allclose(belief, reference[0], rtol=2e-6, atol=1e-300)
    np.testing.assert_allclose(uncertainty, reference[1], rtol=2e-6, atol=1e-300)
    assert (uncertainty < 1e-300).any()  # up to e^800 of evidence: beyond float64, fused exactly


def test_fuse_scores_tiny_evidence_is_not_lost_to_underflow():
    # exp(-200) underflows float32: such scores are fused in float64 log space, where the
    # class with the larger score keeps the larger belief.
    scores = np.array([[[-200.0, -210.0]], [[-205.0, -215.0]]], dtype=np.float32)
    belief, _ = fuse_scores(scores, "exp")
    expected, _ = fuse_evidence(scores.astype(np.float64), log=True)
    np.testing.assert_allclose(belief, expected, rtol=1e-6)
    assert belief[0, 0] > 1e3 * belief[0, 1] > 0


@pytest.mark.parametrize(
    "scores, kind, message",
    [
        ([], "exp", "fuse_scores needs at least one score array"),
        ([[0.0, 1.0], [0.0, 1.0, 2.0]], "exp", r"the same shape, got \(2,\) and \(3,\)"),
        ([np.array(1.0)], "exp", "scores must have a class axis"),
        ([[0.0, np.nan]], "exp", "evidence contains NaN"),
        ([[0.0, 1.0]], "sigmoid", "evidence function must be one of"),
    ],
)
def test_fuse_scores_bad_input(scores, kind, message):
    with pytest.raises(ValueError, match=message):
        fuse_scores(scores, kind)


@pytest.mark.parametrize("scores", [[np.zeros((3, 0))], np.zeros((1, 3, 0)), [np.zeros(0)]])
@pytest.mark.parametrize("kind", ["softplus", "exp"])
def test_fuse_scores_needs_a_class(scores, kind):
    with pytest.raises(ValueError, match=r"^scores must have at least one class \(their last axis\), got "
                                         r"shape \((3, )?0,?\)\.$"):
        fuse_scores(scores, kind)


def _with_nan(shape, index, value=np.nan):
    array = np.zeros(shape)
    array[index] = value
    return array


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda adapters: adapters(_with_nan((2, 4, 1), (1, 2, 0)), np.zeros((2, 4, 1))),
         r"left contains NaN or infinity \(template 1\)"),
        (lambda adapters: adapters(np.zeros((2, 4, 1)), _with_nan((2, 4, 1), (0, 0, 0), np.inf)),
         r"right contains NaN or infinity \(template 0\)"),
        (lambda adapters: adapters(maps=_with_nan((3, 2, 2), (2, 1, 1))),
         r"maps contains NaN or infinity \(template 2\)"),
        # low rank stored as factors, high rank as dense maps: both name the factor given
        (lambda adapters: adapters.from_factors(_with_nan((2, 4, 1), (1, 0, 0)), np.ones((4, 1))),
         r"left contains NaN or infinity \(template 1\)"),
        (lambda adapters: adapters.from_factors(np.ones((2, 2, 2)), _with_nan((2, 2, 2), (0, 1, 1))),
         r"right contains NaN or infinity \(template 0\)"),
    ],
)
def test_template_adapters_refuse_nan_factors(build, message):
    from clip_invariance.front_door import TemplateAdapters

    with pytest.raises(ValueError, match=f"^{message}: the maps W = I \\+ L R\\^T must be finite\\.$"):
        build(TemplateAdapters)
