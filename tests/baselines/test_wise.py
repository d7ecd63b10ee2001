import numpy as np
import pytest
from _cases import assert_unchanged, snapshot
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import InvalidParameterError

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.baselines import WiSEClassifier
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.views import stack_views


@pytest.fixture(scope="module")
def data():
    data = make_invariant_embeddings(n_samples=300, random_state=0)
    # float64 throughout, so that the reference probe computes in the precision of the classifier.
    data.X, data.X_views = data.X.astype(np.float64), data.X_views.astype(np.float64)
    data.prompt_embeddings = data.prompt_embeddings.astype(np.float64)
    data.train = data.environments != data.test_environment
    return data


def _probe(Z, y, C=0.316, sample_weight=None):
    return LogisticRegression(C=C, max_iter=2000).fit(Z, y, sample_weight=sample_weight)


def test_alpha_zero_is_zero_shot_clip(data):
    X, y = data.X[data.train], data.y[data.train]
    wise = WiSEClassifier(data.prompt_embeddings, alpha=0.0).fit(X, y)
    clip = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(X)
    assert_allclose(wise.predict_proba(data.X), clip.predict_proba(data.X))
    assert_array_equal(wise.predict(data.X), clip.predict(data.X))


def test_alpha_one_is_the_probe_on_unit_features(data):
    X, y = data.X[data.train], data.y[data.train]
    wise = WiSEClassifier(data.prompt_embeddings, alpha=1.0, C=1.0).fit(X, y)
    probe = _probe(normalize(X), y, C=1.0)
    assert_allclose(wise.predict_proba(data.X), probe.predict_proba(normalize(data.X)), atol=1e-8)
    assert_array_equal(wise.predict(data.X), probe.predict(normalize(data.X)))


def test_logits_mix_the_two_heads_weights(data):
    # W = (1 - a) s T + a W_p and b = a b_p, applied to the unit features: the logits by hand.
    X, y = data.X[data.train], data.y[data.train]
    wise = WiSEClassifier(data.prompt_embeddings, alpha=0.3, logit_scale=50.0).fit(X, y)
    Z, T = normalize(data.X), normalize(data.prompt_embeddings)
    probe = _probe(normalize(X), y)
    W = 0.7 * 50.0 * T + 0.3 * probe.coef_
    assert_allclose(wise.decision_function(data.X), Z @ W.T + 0.3 * probe.intercept_, atol=1e-8)
    assert_allclose(wise.probe_.coef_, probe.coef_)


def test_binary_probe_enters_as_symmetric_logits():
    # Two classes: LogisticRegression has one weight vector w; the logits (-w.z/2, w.z/2) keep its sigmoid.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) + np.repeat([[2.0, 0, 0], [0, 2.0, 0]], 20, axis=0)
    y = np.repeat(["a", "b"], 20)
    prompts = np.eye(3)[:2]
    wise = WiSEClassifier(prompts, classes=["a", "b"], alpha=1.0).fit(X, y)
    probe = _probe(normalize(X), y)
    assert_allclose(wise.predict_proba(X), probe.predict_proba(normalize(X)), atol=1e-8)
    assert_allclose(wise.decision_function(X), probe.decision_function(normalize(X)), atol=1e-8)
    half = WiSEClassifier(prompts, classes=["a", "b"], alpha=0.5, logit_scale=10.0).fit(X, y)
    Z = normalize(X)
    expected = 0.5 * 10.0 * (Z[:, 1] - Z[:, 0]) + 0.5 * probe.decision_function(Z)
    assert_allclose(half.decision_function(X), expected, atol=1e-8)


def test_with_prompts_new_classes_get_the_zero_shot_part_only(data):
    base = np.arange(5)
    X, y = data.X[data.train], data.y[data.train]
    keep = np.isin(y, base)
    wise = WiSEClassifier(data.prompt_embeddings[base], classes=base, alpha=0.4).fit(X[keep], y[keep])
    every = wise.with_prompts(data.prompt_embeddings, classes=np.arange(10))
    Z, T = normalize(data.X), normalize(data.prompt_embeddings)
    logits = every.decision_function(data.X)
    assert_allclose(logits[:, 5:], 0.6 * 100.0 * Z @ T[5:].T, atol=1e-8)  # no probe weights
    assert_allclose(logits[:, :5], wise.decision_function(data.X), atol=1e-8)
    # Reordered and renamed classes: the probe follows the labels, not the positions.
    order = np.array([3, 7, 1])
    some = wise.with_prompts(data.prompt_embeddings[order], classes=order)
    assert_allclose(some.decision_function(data.X), logits[:, order], atol=1e-8)
    assert some.alpha == 0.4 and some.probe_ is wise.probe_


def test_invariant_variant_projects_both_heads(data):
    X, view_groups = stack_views(data.X[data.train], *data.X_views[:, data.train])
    y = np.tile(data.y[data.train], len(data.X_views) + 1)
    projector = InvariantProjector(n_components=8)
    wise = WiSEClassifier(data.prompt_embeddings, projector=projector, alpha=0.0).fit(
        X, y, view_groups=view_groups)
    icm = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=projector).fit(
        X, view_groups=view_groups)
    assert_allclose(wise.projector_.components_, icm.projector_.components_)
    assert_allclose(wise.predict_proba(data.X), icm.predict_proba(data.X))
    assert wise.probe_.coef_.shape == (10, 8)
    # The views are the projector's: the probe learns from the first row of each group, the originals.
    Z = normalize(wise.projector_.transform(X))
    originals = np.arange(len(X)) < data.train.sum()
    assert_allclose(wise.probe_.coef_, _probe(Z[originals], y[originals]).coef_, rtol=1e-4, atol=1e-6)
    # head_on_views: the probe learns from every row, as probe-icm-views does.
    views_too = WiSEClassifier(data.prompt_embeddings, projector=projector, head_on_views=True).fit(
        X, y, view_groups=view_groups)
    assert_allclose(views_too.probe_.coef_, _probe(Z, y).coef_, rtol=1e-4, atol=1e-6)


def test_prompt_ensemble_is_averaged_like_zero_shot(data):
    ensemble = np.stack([data.prompt_embeddings, data.prompt_embeddings + 0.1])
    X, y = data.X[data.train], data.y[data.train]
    wise = WiSEClassifier(ensemble, alpha=0.0).fit(X, y)
    clip = ZeroShotInvariantClassifier(ensemble).fit(X)
    assert_allclose(wise.predict_proba(data.X), clip.predict_proba(data.X))


def test_without_prompts_the_zero_shot_head_is_the_class_means():
    X = np.array([[1.0, 0.0], [3.0, 1.0], [0.0, 2.0], [1.0, 5.0], [9.0, 9.0]])
    y = np.array([0, 0, 1, 1, 1])
    wise = WiSEClassifier(alpha=0.0).fit(X, y, sample_weight=[1, 1, 1, 1, 0])
    means = normalize(np.array([normalize(X[:2]).sum(0), normalize(X[2:4]).sum(0)]))
    assert_allclose(wise.class_embeddings_, means)


BAD_INPUT = {
    "alpha above one": (
        lambda: WiSEClassifier(alpha=1.5).fit(np.eye(3), [0, 1, 2]), InvalidParameterError,
        r"The 'alpha' parameter of WiSEClassifier must be a float in the range \[0.0, 1.0\]. Got 1.5",
    ),
    "zero C": (
        lambda: WiSEClassifier(C=0.0).fit(np.eye(3), [0, 1, 2]), InvalidParameterError,
        r"The 'C' parameter of WiSEClassifier must be a float in the range \(0.0, inf\)",
    ),
    "one class": (
        lambda: WiSEClassifier(np.eye(3)).fit(np.eye(3), [0, 0, 0]), ValueError,
        r"WiSEClassifier's probe needs at least two classes in y \(among the rows of positive "
        r"sample_weight\); got one class, \[0\].",
    ),
    "one weighted class": (
        lambda: WiSEClassifier(np.eye(3)).fit(np.eye(3), [0, 1, 1], sample_weight=[0, 1, 1]), ValueError,
        r"got one class, \[1\].",
    ),
    "label without a prompt": (
        lambda: WiSEClassifier(np.eye(3)[:2]).fit(np.eye(3), [0, 1, 2]), ValueError,
        r"y contains label\(s\) \[2\] that are not in classes \[0, 1\].",
    ),
    "prompts of another model": (
        lambda: WiSEClassifier(np.eye(4)[:2]).fit(np.eye(3), [0, 1, 1]), ValueError,
        "prompt_embeddings have 4 features but the embeddings of X have 3",
    ),
    "negative weight": (
        lambda: WiSEClassifier().fit(np.eye(3), [0, 1, 1], sample_weight=[-1, 1, 1]), ValueError,
        "Negative values in data passed to `sample_weight`",
    ),
    "no y": (
        lambda: WiSEClassifier(np.eye(3)).fit(np.eye(3), None), ValueError, "requires y to be passed",
    ),
    "with_prompts before fit": (
        lambda: WiSEClassifier(np.eye(3)).with_prompts(np.eye(3)), NotFittedError, "is not fitted yet",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_raises_a_clear_error(case):
    action, error, message = BAD_INPUT[case]
    with pytest.raises(error, match=message):
        action()


def test_failed_fit_leaves_the_classifier_unchanged(data):
    X, y = data.X[data.train], data.y[data.train]
    wise = WiSEClassifier(data.prompt_embeddings).fit(X, y)
    state, proba = snapshot(wise), wise.predict_proba(data.X)
    with pytest.raises(ValueError, match="not in classes"):
        wise.fit(X, y + 100)
    with pytest.raises(ValueError, match="have 64 features but the embeddings of X have 3"):
        wise.fit(np.eye(3), [0, 1, 2])
    assert_unchanged(wise, state)
    assert_allclose(wise.predict_proba(data.X), proba)
