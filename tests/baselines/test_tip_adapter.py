import numpy as np
import pytest
from _cases import assert_unchanged, snapshot
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import InvalidParameterError

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.baselines import TipAdapterClassifier, _tip_adapter
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.views import stack_views

# A 3-image cache in 3-D: keys e0, e1 and (e0 + e1) / sqrt(2), labels 0, 1, 1; prompts e0, e1, e2.
KEYS = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 3.0, 0.0]])  # any norm: the cache normalises
LABELS = np.array([0, 1, 1])
PROMPTS = np.eye(3)


@pytest.fixture(scope="module")
def data():
    data = make_invariant_embeddings(n_samples=300, random_state=0)
    data.X, data.X_views = data.X.astype(np.float64), data.X_views.astype(np.float64)
    data.prompt_embeddings = data.prompt_embeddings.astype(np.float64)
    data.train = data.environments != data.test_environment
    return data


def test_hand_computed_three_image_cache():
    # z = e0: affinities (1, 0, 1/sqrt 2). With beta = 2, class 0 gets exp(0) = 1 from the cache,
    # class 1 exp(-2) + exp(-2 (1 - 1/sqrt 2)) = 0.135335 + 0.556668, class 2 nothing.
    clf = TipAdapterClassifier(PROMPTS, alpha=2.0, beta=2.0, logit_scale=10.0).fit(KEYS, LABELS)
    cache = np.array([1.0, 0.135335283 + 0.556667905, 0.0])
    assert_allclose(clf.decision_function([[5.0, 0.0, 0.0]]), [[10.0, 0.0, 0.0] + 2.0 * cache], rtol=1e-8)
    # z = (e1 + e2) / sqrt 2: cosines 0, 1/sqrt 2, 1/2 with the keys.
    z = np.array([[0.0, 1.0, 1.0]])
    s = 1 / np.sqrt(2)
    cache = np.array([np.exp(-2.0), np.exp(-2.0 * (1 - s)) + np.exp(-2.0 * 0.5), 0.0])
    assert_allclose(clf.decision_function(z), [[0.0, 10 * s, 10 * s] + 2.0 * cache], rtol=1e-8)
    assert_allclose(clf.cache_keys_, normalize(KEYS))
    assert_array_equal(clf.cache_values_, [[1, 0], [0, 1], [0, 1]])
    assert_array_equal(clf.cache_classes_, [0, 1])


def test_alpha_zero_is_zero_shot_clip(data):
    X, y = data.X[data.train], data.y[data.train]
    tip = TipAdapterClassifier(data.prompt_embeddings, alpha=0.0).fit(X, y)
    clip = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(X)
    assert_allclose(tip.predict_proba(data.X), clip.predict_proba(data.X))
    assert_array_equal(tip.predict(data.X), clip.predict(data.X))


def test_the_cache_helps_in_domain(data):
    # A real effect, not only algebra: the cache adds what zero-shot misses on the sources' images.
    X, y = data.X[data.train], data.y[data.train]
    tip = TipAdapterClassifier(data.prompt_embeddings, alpha=1.0, beta=5.5).fit(X[::2], y[::2])
    clip = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(X)
    assert tip.score(X[1::2], y[1::2]) > clip.score(X[1::2], y[1::2])


def _hand_logits(z, prompts, labels, alpha=2.0, beta=2.0, scale=10.0):
    """The Tip-Adapter logits of one unit z, one class and one cached image at a time."""
    keys = normalize(KEYS)
    out = []
    for prompt, label in zip(prompts, labels):
        cache = sum(np.exp(-beta * (1 - key @ z)) for key, y in zip(keys, LABELS) if y == label)
        out.append(scale * prompt @ z + alpha * cache)
    return np.array(out)


def test_with_prompts_the_cache_adds_only_to_the_classes_it_holds():
    clf = TipAdapterClassifier(PROMPTS[:2], alpha=2.0, beta=2.0, logit_scale=10.0).fit(KEYS, LABELS)
    z = normalize([[0.3, 0.5, 0.8], [1.0, 0.1, 0.0]])
    order = [2, 1, 0]  # class 2 is new: no prompt at fit, no image in the cache; the others reordered
    renamed = clf.with_prompts(PROMPTS[order], classes=order)
    expected = [_hand_logits(row, PROMPTS[order], order) for row in z]
    assert_allclose(renamed.decision_function(z), expected, rtol=1e-12)
    assert_allclose(renamed.decision_function(z)[:, 0], 10.0 * z[:, 2])  # zero-shot alone
    assert renamed.cache_keys_ is clf.cache_keys_ and renamed.alpha == 2.0


def test_sample_weight_scales_values_and_zero_leaves_a_row_out():
    weighted = TipAdapterClassifier(PROMPTS, beta=2.0).fit(KEYS, LABELS, sample_weight=[2, 1, 0])
    repeated = TipAdapterClassifier(PROMPTS, beta=2.0).fit(KEYS[[0, 0, 1]], LABELS[[0, 0, 1]])
    z = np.random.default_rng(0).normal(size=(5, 3))
    assert_allclose(weighted.decision_function(z), repeated.decision_function(z))
    assert weighted.cache_keys_.shape == (2, 3)


def test_prediction_in_blocks_equals_at_once(data, monkeypatch):
    X, y = data.X[data.train], data.y[data.train]
    tip = TipAdapterClassifier(data.prompt_embeddings).fit(X, y)
    at_once = tip.decision_function(data.X)
    monkeypatch.setattr(_tip_adapter, "_BLOCK", len(X) * 7)  # blocks of 7 rows, a ragged last one
    assert_allclose(tip.decision_function(data.X), at_once, rtol=1e-12)


def test_invariant_variant_caches_projected_originals(data):
    X, view_groups = stack_views(data.X[data.train], *data.X_views[:, data.train])
    y = np.tile(data.y[data.train], len(data.X_views) + 1)
    n = data.train.sum()
    projector = InvariantProjector(n_components=8)
    tip = TipAdapterClassifier(data.prompt_embeddings, projector=projector).fit(X, y, view_groups=view_groups)
    icm = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=projector).fit(
        X, view_groups=view_groups)
    assert_allclose(tip.cache_keys_, normalize(icm.projector_.transform(X[:n])))  # the originals only
    assert_allclose(tip.set_params(alpha=0.0).predict_proba(data.X), icm.predict_proba(data.X))
    views_too = TipAdapterClassifier(data.prompt_embeddings, projector=projector, head_on_views=True)
    assert len(views_too.fit(X, y, view_groups=view_groups).cache_keys_) == len(X)


BAD_INPUT = {
    "negative beta": (
        lambda: TipAdapterClassifier(beta=-1).fit(KEYS, LABELS), InvalidParameterError,
        r"The 'beta' parameter of TipAdapterClassifier must be a float in the range \[0.0, inf\). Got -1",
    ),
    "negative alpha": (
        lambda: TipAdapterClassifier(alpha=-0.5).fit(KEYS, LABELS), InvalidParameterError,
        r"The 'alpha' parameter of TipAdapterClassifier must be a float in the range \[0.0, inf\)",
    ),
    "label without a prompt": (
        lambda: TipAdapterClassifier(PROMPTS[:1]).fit(KEYS, LABELS), ValueError,
        r"y contains label\(s\) \[1\] that are not in classes \[0\].",
    ),
    "NaN in X": (
        lambda: TipAdapterClassifier(PROMPTS).fit(np.where(KEYS == 0, np.nan, KEYS), LABELS), ValueError,
        "Input X contains NaN",
    ),
    "all weights zero": (
        lambda: TipAdapterClassifier(PROMPTS).fit(KEYS, LABELS, sample_weight=[0, 0, 0]), ValueError,
        "Sample weights must contain at least one non-zero number",
    ),
    "view_groups of another length": (
        lambda: TipAdapterClassifier(PROMPTS).fit(KEYS, LABELS, view_groups=[0, 1]), ValueError,
        "view_groups has 2 entries but X has 3 rows.",
    ),
    "predict before fit": (
        lambda: TipAdapterClassifier(PROMPTS).predict(KEYS), NotFittedError, "is not fitted yet",
    ),
    "prompts of another model in with_prompts": (
        lambda: TipAdapterClassifier(PROMPTS).fit(KEYS, LABELS).with_prompts(np.eye(4)), ValueError,
        "prompt_embeddings have 4 features but the embeddings of X have 3",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_raises_a_clear_error(case):
    action, error, message = BAD_INPUT[case]
    with pytest.raises(error, match=message):
        action()


def test_failed_fit_leaves_the_classifier_unchanged():
    clf = TipAdapterClassifier(PROMPTS).fit(KEYS, LABELS)
    state, proba = snapshot(clf), clf.predict_proba(KEYS)
    with pytest.raises(ValueError, match="not in classes"):
        clf.fit(KEYS, [0, 1, 5])
    assert_unchanged(clf, state)
    assert_allclose(clf.predict_proba(KEYS), proba)
