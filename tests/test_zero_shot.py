import numpy as np
import pytest
from _cases import PROMPT_SHAPES, assert_unchanged, snapshot, with_value
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import config_context
from sklearn.exceptions import NotFittedError
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.utils.extmath import softmax

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance._utils import average_prompt_ensemble
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.views import stack_views

K = 8  # invariant dimension of the synthetic benchmark


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "normalized"])
def bench(request):
    # 12 text styles > 8 variant dimensions, so text interventions span them.
    data = make_invariant_embeddings(
        n_samples=2000, n_text_styles=12, normalize=request.param, random_state=0
    )
    train = data.environments != data.test_environment
    X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])
    return data, train, ~train, X_pairs, view_groups


def _text_projector(data, keep=None):
    keep = slice(None) if keep is None else keep
    return InvariantProjector(
        n_components=K,
        intervention_embeddings=data.text_interventions[keep],
        intervention_view_groups=data.text_view_groups[keep],
    )


@pytest.mark.parametrize("variant", ["image", "text", "both"])
def test_invariant_subspace_beats_plain_zero_shot_out_of_distribution(bench, variant):
    data, train, test, X_pairs, view_groups = bench
    plain = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X[train])
    if variant == "image":
        clf = ZeroShotInvariantClassifier(
            data.prompt_embeddings, projector=InvariantProjector(n_components=K)
        ).fit(X_pairs, view_groups=view_groups)
    elif variant == "text":
        clf = ZeroShotInvariantClassifier(
            data.prompt_embeddings, projector=_text_projector(data)
        ).fit(data.X[train])
    else:
        clf = ZeroShotInvariantClassifier(
            data.prompt_embeddings, projector=_text_projector(data)
        ).fit(X_pairs, view_groups=view_groups)
    expected_source = {"image": "view_groups", "text": "intervention_embeddings",
                       "both": "view_groups+intervention_embeddings"}
    assert clf.projector_.intervention_source_ == expected_source[variant]
    baseline = plain.score(data.X[test], data.y[test])
    invariant = clf.score(data.X[test], data.y[test])
    assert baseline < 0.5
    assert invariant > 0.85
    assert invariant > baseline + 0.3


def test_open_class_keeps_gain_on_unseen_classes(bench):
    data, train, test, _, _ = bench
    base = data.y < 5  # projector sees classes 0-4 only, images and texts
    X_pairs, view_groups = stack_views(data.X[train & base], *data.X_views[:, train & base])
    base_text = data.text_view_groups < 5
    clf = ZeroShotInvariantClassifier(
        data.prompt_embeddings[:5], projector=_text_projector(data, base_text)
    ).fit(X_pairs, view_groups=view_groups)
    assert_array_equal(clf.classes_, np.arange(5))

    all_classes = clf.with_prompts(data.prompt_embeddings)
    assert all_classes.projector_ is clf.projector_  # no refit
    assert_array_equal(all_classes.classes_, np.arange(10))
    novel = test & ~base
    plain = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X[train])
    baseline = plain.score(data.X[novel], data.y[novel])
    invariant = all_classes.score(data.X[novel], data.y[novel])
    assert invariant > 0.8
    assert invariant > baseline + 0.3


def test_no_projector_is_plain_clip_zero_shot():
    data = make_invariant_embeddings(n_samples=200, random_state=1)
    clf = ZeroShotInvariantClassifier(data.prompt_embeddings, temperature=50.0).fit(data.X)
    cos = cosine_similarity(data.X, data.prompt_embeddings)
    assert clf.projector_ is None
    assert_allclose(clf.decision_function(data.X), 50.0 * cos, atol=1e-4)
    assert_allclose(clf.predict_proba(data.X), softmax(50.0 * cos), rtol=1e-4)
    assert_array_equal(clf.predict(data.X), np.argmax(cos, axis=1))


def test_scores_are_cosines_renormalised_after_projection():
    # The projector learns span(e0, e1): views differ only along e2.
    rng = np.random.RandomState(0)
    X = rng.standard_normal((200, 3))
    views = X + np.outer(rng.standard_normal(200), [0.0, 0.0, 3.0])
    X_pairs, view_groups = stack_views(X, views)
    prompts = np.array([[1.0, 0.0, 0.0], [0.2, 0.2, 0.96]])
    clf = ZeroShotInvariantClassifier(
        prompts, classes=["a", "b"], projector=InvariantProjector(n_components=2)
    ).fit(X_pairs, view_groups=view_groups)
    image = np.array([[0.5, 0.5, 0.0]])
    # In the subspace, "b" projects to (0.2, 0.2): same direction as the image,
    # cosine 1, but a shorter vector. Without re-normalising, "a" would win.
    assert clf.predict(image).tolist() == ["b"]
    logits = clf.predict_log_proba(image) - clf.predict_log_proba(image)[:, :1]
    assert_allclose(logits[0, 1] / clf.temperature, 1.0 - np.sqrt(0.5), atol=1e-3)


def test_prompt_ensemble_is_averaged_like_clip():
    data = make_invariant_embeddings(n_samples=300, n_text_styles=4, random_state=2)
    C, D = data.prompt_embeddings.shape
    ensemble = data.text_interventions.reshape(C, 4, D).transpose(1, 0, 2)  # (M, C, D)
    projector = InvariantProjector(n_components=K)
    X, view_groups = stack_views(data.X, *data.X_views)
    from_ensemble = ZeroShotInvariantClassifier(ensemble, projector=projector)
    averaged = ZeroShotInvariantClassifier(average_prompt_ensemble(ensemble), projector=projector)
    from_ensemble.fit(X, view_groups=view_groups)
    averaged.fit(X, view_groups=view_groups)
    # float32 embeddings: scores are 100 * cosine, equal up to float32 rounding.
    assert_allclose(
        from_ensemble.decision_function(data.X), averaged.decision_function(data.X),
        rtol=1e-5, atol=1e-4,
    )
    assert_allclose(np.linalg.norm(from_ensemble.class_embeddings_, axis=1), 1.0)


def test_probabilities_and_temperature():
    data = make_invariant_embeddings(n_samples=200, random_state=3)
    cold = ZeroShotInvariantClassifier(data.prompt_embeddings, temperature=100.0).fit(data.X)
    warm = ZeroShotInvariantClassifier(data.prompt_embeddings, temperature=1.0).fit(data.X)
    assert_array_equal(cold.predict(data.X), warm.predict(data.X))
    confidence = [c.predict_proba(data.X).max(axis=1).mean() for c in (cold, warm)]
    assert confidence[0] > confidence[1]
    assert_allclose(cold.predict_proba(data.X).sum(axis=1), 1.0)
    assert_allclose(np.exp(cold.predict_log_proba(data.X)), cold.predict_proba(data.X), atol=1e-10)


def test_binary_decision_function_is_one_dimensional():
    data = make_invariant_embeddings(n_samples=200, n_classes=2, random_state=4)
    clf = ZeroShotInvariantClassifier(data.prompt_embeddings, classes=["no", "yes"]).fit(data.X)
    scores = clf.decision_function(data.X)
    assert scores.shape == (200,)
    assert_array_equal(clf.predict(data.X), np.where(scores > 0, "yes", "no"))


def test_class_names_and_optional_labels():
    data = make_invariant_embeddings(n_samples=300, random_state=5)
    names = np.array([f"class{c}" for c in range(10)])
    unnamed = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X)
    clf = ZeroShotInvariantClassifier(data.prompt_embeddings, classes=names)
    clf.fit(data.X)  # zero-shot: no labels needed
    assert_array_equal(clf.predict(data.X), names[unnamed.predict(data.X)])
    clf.fit(data.X, names[data.y])  # labels are allowed and checked
    assert clf.score(data.X, names[data.y]) == unnamed.score(data.X, data.y)


def test_prototypes_without_prompts_learn_from_labels():
    data = make_invariant_embeddings(n_samples=2000, random_state=0)
    train = data.environments != data.test_environment
    test = ~train
    X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])
    y_pairs = np.tile(data.y[train], 2)
    plain = ZeroShotInvariantClassifier().fit(data.X[train], data.y[train])
    clf = ZeroShotInvariantClassifier(projector=InvariantProjector(n_components=K))
    clf.fit(X_pairs, y_pairs, view_groups=view_groups)
    assert_array_equal(clf.classes_, np.arange(10))
    assert clf.class_embeddings_.shape == (10, K)
    # The prototypes learn the spurious variant features; the subspace drops them.
    assert clf.score(data.X[test], data.y[test]) > plain.score(data.X[test], data.y[test]) + 0.2


def test_with_prompts_switches_classes_without_refitting():
    data = make_invariant_embeddings(n_samples=300, random_state=6)
    X, view_groups = stack_views(data.X, *data.X_views)
    clf = ZeroShotInvariantClassifier(
        data.prompt_embeddings[:3], projector=InvariantProjector(n_components=K)
    ).fit(X, view_groups=view_groups)
    components = clf.projector_.components_.copy()
    other = clf.with_prompts(data.prompt_embeddings[3:], classes=list("abcdefg"))
    assert other.get_params()["classes"] == list("abcdefg")
    assert_array_equal(other.classes_, list("abcdefg"))
    assert_array_equal(clf.classes_, [0, 1, 2])  # the original is untouched
    assert_array_equal(other.projector_.components_, components)
    assert other.predict(data.X).shape == (300,)
    with pytest.raises(NotFittedError):
        ZeroShotInvariantClassifier(data.prompt_embeddings).with_prompts(data.prompt_embeddings)


def test_metadata_routing_sends_groups_to_the_projector():
    data = make_invariant_embeddings(n_samples=600, random_state=7)
    X, view_groups = stack_views(data.X, *data.X_views)
    y = np.tile(data.y, 2)
    with config_context(enable_metadata_routing=True):
        clf = ZeroShotInvariantClassifier(
            data.prompt_embeddings, projector=InvariantProjector(n_components=K)
        ).set_fit_request(view_groups=True)
        search = GridSearchCV(clf, {"projector__lam": [1.0, 10.0]}, cv=GroupKFold(3))
        search.fit(X, y, groups=view_groups, view_groups=view_groups)
    assert search.best_estimator_.projector_.intervention_source_ == "view_groups"


def test_plain_cross_validation_passes_groups_as_fit_params():
    data = make_invariant_embeddings(n_samples=600, random_state=7)
    X, view_groups = stack_views(data.X, *data.X_views)
    y = np.tile(data.y, 2)
    clf = ZeroShotInvariantClassifier(
        data.prompt_embeddings, projector=InvariantProjector(n_components=K)
    )
    result = cross_validate(
        clf, X, y, groups=view_groups, cv=GroupKFold(3), params={"view_groups": view_groups},
        return_estimator=True,
    )
    assert all(e.projector_.intervention_source_ == "view_groups" for e in result["estimator"])
    assert result["test_score"].min() > 0.5


# ------------------------------------------------------------ bad input
X4 = np.random.RandomState(0).standard_normal((6, 4))
P2 = np.eye(4)[:2]


def _fitted():
    return ZeroShotInvariantClassifier(P2, classes=["cat", "dog"]).fit(X4)


BAD_INPUT = {
    "NaN in X": (
        lambda: ZeroShotInvariantClassifier(P2).fit(with_value(X4, (0, 0), np.nan)),
        ValueError, "Input X contains NaN",
    ),
    "infinity in X at predict": (
        lambda: _fitted().predict(with_value(X4, (0, 0), np.inf)),
        ValueError, "Input X contains infinity",
    ),
    "wrong feature count at predict": (
        lambda: _fitted().predict(np.ones((2, 5))),
        ValueError, "X has 5 features, but ZeroShotInvariantClassifier is expecting 4",
    ),
    "prompt width differs from X": (
        lambda: ZeroShotInvariantClassifier(np.ones((3, 5))).fit(X4),
        ValueError, "prompt_embeddings have 5 features but the embeddings of X have 4",
    ),
    "prompt width differs in with_prompts": (
        lambda: _fitted().with_prompts(np.ones((3, 5))),
        ValueError, "prompt_embeddings have 5 features but the embeddings of X have 4",
    ),
    "4-D prompts": (
        lambda: ZeroShotInvariantClassifier(np.ones((1, 2, 3, 4))).fit(X4),
        ValueError, PROMPT_SHAPES + r", got \(1, 2, 3, 4\)",
    ),
    "1-D prompts": (
        lambda: ZeroShotInvariantClassifier(np.ones(4)).fit(X4),
        ValueError, PROMPT_SHAPES + r", got \(4,\)",
    ),
    "ragged ensemble": (
        lambda: ZeroShotInvariantClassifier([np.ones((3, 4)), np.ones((2, 4))]).fit(X4),
        ValueError, "prompt_embeddings is ragged",
    ),
    "ragged rows": (
        lambda: ZeroShotInvariantClassifier([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0]]).fit(X4),
        ValueError, "prompt_embeddings is ragged",
    ),
    "empty prompts": (
        lambda: ZeroShotInvariantClassifier(np.ones((0, 4))).fit(X4),
        ValueError, r"prompt_embeddings is empty: shape \(0, 4\)",
    ),
    "text prompts": (
        lambda: ZeroShotInvariantClassifier([["a", "b", "c", "d"]]).fit(X4),
        ValueError, "prompt_embeddings must hold numbers",
    ),
    "NaN in prompts": (
        lambda: ZeroShotInvariantClassifier(with_value(P2, (1, 1), np.nan)).fit(X4),
        ValueError, "Input prompt_embeddings contains NaN",
    ),
    "all-zero prompt": (
        lambda: ZeroShotInvariantClassifier(with_value(P2, 1, 0.0)).fit(X4),
        ValueError, r"prompt_embeddings has all-zero class row\(s\) for class index\(es\) \[1\]",
    ),
    "all-zero template row in an ensemble": (
        lambda: ZeroShotInvariantClassifier(np.stack([P2, with_value(P2, 0, 0.0)])).fit(X4),
        ValueError, r"all-zero class row\(s\) for class index\(es\) \[0\]",
    ),
    "duplicate classes": (
        lambda: ZeroShotInvariantClassifier(P2, classes=["a", "a"]).fit(X4),
        ValueError, r"classes contains duplicate labels: \['a'\]",
    ),
    "classes length mismatch": (
        lambda: ZeroShotInvariantClassifier(P2, classes=["a", "b", "c"]).fit(X4),
        ValueError, r"classes has shape \(3,\) but the prompt embeddings describe 2 classes",
    ),
    "classes length mismatch in with_prompts": (
        lambda: _fitted().with_prompts(P2, classes=["a"]),
        ValueError, r"classes has shape \(1,\) but the prompt embeddings describe 2 classes",
    ),
    "unknown labels": (
        lambda: ZeroShotInvariantClassifier(P2, classes=["cat", "dog"]).fit(
            X4, ["cat", "dog", "cow", "dog", "cat", "cat"]
        ),
        ValueError, r"y contains label\(s\) \['cow'\] that are not in classes \['cat', 'dog'\]",
    ),
    "labels of another type": (
        lambda: ZeroShotInvariantClassifier(P2, classes=["cat", "dog"]).fit(X4, [0, 1] * 3),
        ValueError, r"y contains label\(s\) \[0, 1\] that are not in classes",
    ),
    "y of another length": (
        lambda: ZeroShotInvariantClassifier(P2).fit(X4, [0, 1]),
        ValueError, "inconsistent numbers of samples",
    ),
    "prototypes without y": (
        lambda: ZeroShotInvariantClassifier().fit(X4),
        ValueError, "requires y to be passed",
    ),
    "with_prompts(None)": (
        lambda: _fitted().with_prompts(None),
        TypeError, "prompt_embeddings must be an array of shape .* got None",
    ),
    "with_prompts before fit": (
        lambda: ZeroShotInvariantClassifier(P2).with_prompts(P2),
        NotFittedError, "is not fitted yet",
    ),
    "zero temperature": (
        lambda: ZeroShotInvariantClassifier(P2, temperature=0.0).fit(X4),
        ValueError, "The 'temperature' parameter",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_raises_a_clear_error(case):
    action, error, message = BAD_INPUT[case]
    with pytest.raises(error, match=message):
        action()


def test_all_zero_rows_warn_and_get_uniform_probabilities():
    # A zero embedding has no direction: never a silent first class.
    clf = _fitted()
    X = with_value(X4, 1, 0.0)
    message = r"X has 1 all-zero row\(s\) \(row 1\): .* favours no class. .* uniform"
    with pytest.warns(UserWarning, match=message):
        proba = clf.predict_proba(X)
    assert_allclose(proba[1], 0.5)
    assert_allclose(np.delete(proba, 1, axis=0), clf.predict_proba(np.delete(X4, 1, axis=0)))
    with pytest.warns(UserWarning, match=r"X has 1 all-zero row\(s\) \(row 2\)"):
        ZeroShotInvariantClassifier().fit(with_value(X4, 2, 0.0), [0, 1, 0, 1, 0, 1])


def test_failed_fit_leaves_a_fitted_classifier_unchanged():
    pd = pytest.importorskip("pandas")
    clf = ZeroShotInvariantClassifier(P2, classes=["cat", "dog"]).fit(X4)
    state, proba = snapshot(clf), clf.predict_proba(X4)
    X5 = pd.DataFrame(np.ones((6, 5)), columns=list("abcde"))  # would set feature_names_in_
    with pytest.raises(ValueError, match="have 4 features but the embeddings of X have 5"):
        clf.fit(X5)
    with pytest.raises(ValueError, match="not in classes"):
        clf.fit(X4, ["cow"] * 6)
    assert_unchanged(clf, state)
    assert not hasattr(clf, "feature_names_in_") and clf.n_features_in_ == 4
    assert_allclose(clf.predict_proba(X4), proba)
    # A failed first fit leaves no fitted attribute behind.
    fresh = ZeroShotInvariantClassifier(np.ones((2, 5)))
    with pytest.raises(ValueError, match="features"):
        fresh.fit(X4)
    assert not any(key.endswith("_") for key in vars(fresh))


# scikit-learn's finiteness check sums X, which overflows (harmlessly) at 1e37 in float32.
@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce:RuntimeWarning")
@pytest.mark.parametrize(
    "dtype, scale", [(np.float64, 1e160), (np.float64, 1e-160), (np.float32, 1e37), (np.float32, 1e-30)]
)
def test_huge_and_tiny_embeddings_are_scored_like_ordinary_ones(dtype, scale):
    data = make_invariant_embeddings(n_samples=200, random_state=9)
    X, P = data.X.astype(dtype), data.prompt_embeddings.astype(dtype)
    clf = ZeroShotInvariantClassifier(P * dtype(scale)).fit(X)
    reference = ZeroShotInvariantClassifier(P).fit(X)
    expected = reference.predict_proba(X)
    assert_allclose(clf.predict_proba(X * dtype(scale)), expected, atol=1e-5)
    assert len(set(clf.predict(X * dtype(scale)))) > 1  # not everyone in class 0
    assert_array_equal(clf.predict(X * dtype(scale)), reference.predict(X))


def test_error_projector_without_interventional_data():
    X = np.random.RandomState(0).standard_normal((20, 4))
    clf = ZeroShotInvariantClassifier(np.eye(4)[:2], projector=InvariantProjector())
    with pytest.raises(ValueError, match="needs interventional data"):
        clf.fit(X)


def test_any_transformer_works_as_projector_and_none_ignores_groups():
    from sklearn.decomposition import PCA

    data = make_invariant_embeddings(n_samples=300, random_state=8)
    X, view_groups = stack_views(data.X, *data.X_views)
    pca = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=PCA(n_components=5))
    pca.fit(X)  # no view_groups given: PCA.fit(X, y) is called as is
    assert pca.class_embeddings_.shape == (10, 5)
    plain = ZeroShotInvariantClassifier(data.prompt_embeddings)
    assert_array_equal(
        plain.fit(X, view_groups=view_groups).predict(data.X), plain.fit(X).predict(data.X)
    )


def test_predictions_match_values_recorded_before_the_refactor():
    # Recorded with the code of commit 089b92c, before the prompt and label checks
    # moved to clip_invariance._utils (float32 prompts stay float32 until scored).
    data = make_invariant_embeddings(n_samples=300, random_state=0)
    clf = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X)
    assert_allclose(
        clf.predict_proba(data.X[:2])[:, :4],
        [[3.412369379158755e-08, 9.48118358936484e-35, 3.450266620449588e-11, 4.0941158625625965e-18],
         [1.1016418769670607e-33, 6.330030508652315e-30, 1.2420172339060364e-12, 3.894092142204625e-21]],
        rtol=1e-9,
    )
    prototypes = ZeroShotInvariantClassifier().fit(data.X, data.y)
    assert_allclose(
        prototypes.predict_proba(data.X[:1])[:, :4],
        [[0.9999999948806912, 9.556310124994698e-18, 1.787902458224796e-21, 8.832678812252006e-17]],
        rtol=1e-9,
    )
