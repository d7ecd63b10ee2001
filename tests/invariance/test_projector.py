"""InvariantProjector: ground-truth recovery, OOD gains, statistics, API, bad input and state."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import linalg
from sklearn import config_context
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
from sklearn.pipeline import Pipeline

import clip_invariance.invariance._statistics as statistics_module
from clip_invariance import InvariantProjector
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.invariance import subspace_overlap
from clip_invariance.views import stack_views


def _split(data):
    train = data.environments != data.test_environment
    return train, ~train


def _ood_accuracy(features, data):
    if features is data.X and "raw_accuracy" in data:
        return data.raw_accuracy
    train, test = _split(data)
    clf = LogisticRegression(max_iter=2000).fit(features[train], data.y[train])
    return clf.score(features[test], data.y[test])


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "normalized"])
def data(request):
    data = make_invariant_embeddings(n_samples=3000, random_state=1, normalize=request.param)
    data.raw_accuracy = _ood_accuracy(data.X, data)  # baseline shared by the tests
    return data


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "normalized"])
def many_env_data(request):
    return make_invariant_embeddings(
        n_samples=3000, n_environments=9, random_state=1, normalize=request.param
    )


def _fit_source(source, data):
    """Fit on the training environments with one source of interventions."""
    train, _ = _split(data)
    k = data.invariant_basis.shape[1]
    text = {
        "intervention_embeddings": data.text_interventions,
        "intervention_view_groups": data.text_view_groups,
    }
    X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])
    if source == "view_groups":
        return InvariantProjector(k).fit(X_pairs, view_groups=view_groups)
    if source == "intervention_embeddings":
        return InvariantProjector(k, **text).fit(data.X[train])
    if source == "view_groups+intervention_embeddings":
        return InvariantProjector(k, **text).fit(X_pairs, view_groups=view_groups)
    if source == "environments":
        return InvariantProjector(k).fit(
            data.X[train], data.y[train], environments=data.environments[train]
        )
    raise AssertionError(source)


# Measured overlaps (raw / normalised), seed 1: view_groups 0.997/0.975,
# interventions 0.87/0.88, both 0.99/0.94, environments (9 envs) 0.86/0.85.
@pytest.mark.parametrize(
    "source, min_overlap",
    [("view_groups", 0.95), ("intervention_embeddings", 0.8), ("view_groups+intervention_embeddings", 0.9)],
)
def test_recovers_invariant_subspace_and_improves_ood(data, source, min_overlap):
    proj = _fit_source(source, data)
    assert proj.intervention_source_ == source
    assert subspace_overlap(proj.components_.T, data.invariant_basis) > min_overlap
    raw = _ood_accuracy(data.X, data)
    projected = _ood_accuracy(proj.transform(data.X), data)
    assert projected > raw + 0.05


def test_environment_means_recover_subspace(many_env_data):
    proj = _fit_source("environments", many_env_data)
    assert proj.intervention_source_ == "environments"
    assert subspace_overlap(proj.components_.T, many_env_data.invariant_basis) > 0.8
    raw = _ood_accuracy(many_env_data.X, many_env_data)
    assert _ood_accuracy(proj.transform(many_env_data.X), many_env_data) > raw + 0.1


def test_labels_alone_is_the_weakest_source():
    # Within-class variation also contains invariant noise; with well separated
    # classes the labels still find the subspace, but less sharply than pairs.
    data = make_invariant_embeddings(
        n_samples=3000, n_environments=9, class_separation=3.0, random_state=1
    )
    train, _ = _split(data)
    proj = InvariantProjector(8).fit(data.X[train], data.y[train])
    assert proj.intervention_source_ == "labels"
    overlap = subspace_overlap(proj.components_.T, data.invariant_basis)
    assert 0.7 < overlap < subspace_overlap(_fit_source("view_groups", data).components_.T,
                                              data.invariant_basis)
    assert _ood_accuracy(proj.transform(data.X), data) >= _ood_accuracy(data.X, data)


def test_keeps_largest_not_smallest_eigenvalues(data):
    """The public reference script keeps eigh(M)[:, :K], the smallest: it fails."""
    train, _ = _split(data)
    X, view_groups = stack_views(data.X[train], *data.X_views[:, train])
    proj = InvariantProjector(8, solver="difference", lam=10.0 if data.X.std() > 0.2 else 1.0)
    proj.fit(X, view_groups=view_groups)
    d = X.shape[1]
    S_z, S_d = proj.second_moment_, proj.nuisance_scatter_
    M = S_z / (np.trace(S_z) / d) - proj.lam * S_d / (np.trace(S_d) / d)
    _, vectors = linalg.eigh(M)
    smallest = vectors[:, :8]
    assert subspace_overlap(smallest, data.invariant_basis) < 0.2
    assert subspace_overlap(proj.components_.T, data.invariant_basis) > 0.6


def test_difference_form_is_the_paper_formula_on_raw_embeddings():
    data = make_invariant_embeddings(n_samples=1000, random_state=0)
    Z, Z_tilde = data.X.astype(np.float64), data.X_views[0].astype(np.float64)
    X, view_groups = stack_views(Z, Z_tilde)
    lam = 10.0
    proj = InvariantProjector(8, lam=lam, solver="difference").fit(X, view_groups=view_groups)
    # Paper: S_Z = Z^T Z / N over all rows, S_delta = Delta^T Delta / N_pairs.
    S_z = X.T @ X / len(X)
    delta = Z - Z_tilde
    S_d = delta.T @ delta / len(delta)
    assert_allclose(proj.second_moment_, S_z, rtol=1e-10)
    assert_allclose(proj.nuisance_scatter_, S_d, rtol=1e-10)
    d = X.shape[1]
    raw_lam = lam * (np.trace(S_z) / d) / (np.trace(S_d) / d)
    _, vectors = linalg.eigh(S_z - raw_lam * S_d)
    expected = vectors[:, ::-1][:, :8]
    assert subspace_overlap(expected, proj.components_.T) == pytest.approx(1.0)
    assert proj.lam_scale_ == pytest.approx(np.trace(S_z) / np.trace(S_d))


def test_normalised_embeddings_break_the_difference_form_but_not_the_ratio():
    data = make_invariant_embeddings(n_samples=2000, normalize=True, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    ratio = InvariantProjector(8, lam=10.0).fit(X, view_groups=view_groups)
    difference = InvariantProjector(8, lam=10.0, solver="difference").fit(X, view_groups=view_groups)
    assert subspace_overlap(ratio.components_.T, data.invariant_basis) > 0.9
    assert subspace_overlap(difference.components_.T, data.invariant_basis) < 0.1


def test_fitted_statistics_are_the_paper_moments_and_keep_dtype():
    rng = np.random.RandomState(0)
    view_groups = rng.randint(0, 15, size=60)
    for dtype in (np.float32, np.float64):
        X = (rng.standard_normal((60, 5)) + 3).astype(dtype)
        proj = InvariantProjector(2).fit(X, view_groups=view_groups)
        X64 = X.astype(np.float64)
        tol = 1e-4 if dtype == np.float32 else 1e-10
        assert_allclose(proj.second_moment_, X64.T @ X64 / len(X), rtol=tol)
        expected = proj.statistics_.group_nuisance()  # brute force in tests/invariance/test_statistics.py
        assert_allclose(proj.nuisance_scatter_, expected, rtol=1e-12)
        assert proj.components_.dtype == dtype
        assert proj.transform(X).dtype == dtype


@pytest.mark.parametrize("n_augmented", [1, 3, 7])
def test_float32_products_find_the_float64_subspace(n_augmented, monkeypatch):
    # float32 rows are multiplied in float32 (accumulated by BLAS over a tile of rows, the tiles
    # summed in float64), as PCA's X^T X is: the subspace is the float64 one to round-off, and
    # the true one. Small tiles: many products. Measured 1 - overlap: 3e-12 for 2, 4 and 8 views.
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", 256)
    data = make_invariant_embeddings(n_samples=2000, n_augmented=n_augmented, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)  # n_augmented + 1 views, the stacked path
    X = X.astype(np.float32)
    single = InvariantProjector(8).fit(X, view_groups=view_groups)
    double = InvariantProjector(8).fit(X.astype(np.float64), view_groups=view_groups)
    assert single.components_.dtype == np.float32
    assert subspace_overlap(single.components_.T, double.components_.T) > 1 - 1e-9
    assert_allclose(single.eigenvalues_, double.eigenvalues_, rtol=1e-5)
    assert subspace_overlap(double.components_.T, data.invariant_basis) > 0.99
    # The same rows in another order take the general path (gathered groups): the same fit.
    shuffle = np.random.RandomState(0).permutation(len(X))
    shuffled = InvariantProjector(8).fit(X.astype(np.float64)[shuffle], view_groups=view_groups[shuffle])
    assert subspace_overlap(shuffled.components_.T, double.components_.T) > 1 - 1e-12
    assert_allclose(shuffled.eigenvalues_, double.eigenvalues_, rtol=1e-12)
    # The tiles shared out to two threads (BLAS on one thread each): the same fit.
    monkeypatch.setattr(statistics_module, "_row_workers", lambda X: 2)
    threaded = InvariantProjector(8).fit(X, view_groups=view_groups)
    assert subspace_overlap(threaded.components_.T, single.components_.T) > 1 - 1e-9
    assert_allclose(threaded.eigenvalues_, single.eigenvalues_, rtol=1e-5)


def test_partial_fit_matches_fit():
    data = make_invariant_embeddings(n_samples=600, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    full = InvariantProjector(8).fit(X, view_groups=view_groups)
    streamed = InvariantProjector(8)
    for batch in np.array_split(np.arange(600), 3):  # views of one image stay together
        Xb, gb = stack_views(data.X[batch], *data.X_views[:, batch])
        streamed.partial_fit(Xb, view_groups=gb)
    assert streamed.n_samples_seen_ == len(X)
    # float32 data: only the summation order differs.
    assert_allclose(streamed.second_moment_, full.second_moment_, rtol=1e-4, atol=1e-6)
    assert_allclose(streamed.nuisance_scatter_, full.nuisance_scatter_, rtol=1e-4, atol=1e-6)
    assert_allclose(np.abs(streamed.components_ @ full.components_.T), np.eye(8), atol=1e-4)

    # Class / environment statistics pool across batches by label.
    full = InvariantProjector(4).fit(data.X, data.y, environments=data.environments)
    streamed = InvariantProjector(4)
    for batch in np.array_split(np.random.RandomState(0).permutation(600), 4):
        streamed.partial_fit(data.X[batch], data.y[batch], environments=data.environments[batch])
    assert_allclose(streamed.nuisance_scatter_, full.nuisance_scatter_, rtol=1e-4, atol=1e-6)
    assert_allclose(np.abs(streamed.components_ @ full.components_.T), np.eye(4), atol=1e-5)


def test_partial_fit_with_intervention_embeddings_matches_fit():
    data = make_invariant_embeddings(n_samples=600, random_state=0)
    text = {"intervention_embeddings": data.text_interventions,
            "intervention_view_groups": data.text_view_groups}
    full = InvariantProjector(8, **text).fit(data.X)
    streamed = InvariantProjector(8, **text)
    for batch in np.array_split(np.arange(600), 3):
        streamed.partial_fit(data.X[batch])
    assert streamed.intervention_source_ == "intervention_embeddings"
    assert_allclose(streamed.nuisance_scatter_, full.nuisance_scatter_, rtol=1e-12)
    assert_allclose(streamed.second_moment_, full.second_moment_, rtol=1e-4, atol=1e-6)
    assert_allclose(np.abs(streamed.components_ @ full.components_.T), np.eye(8), atol=1e-4)
    # A new fit recomputes the constructor's interventions after set_params.
    refit = full.set_params(intervention_embeddings=2 * data.text_interventions).fit(data.X)
    assert_allclose(refit.nuisance_scatter_, 4 * streamed.nuisance_scatter_, rtol=1e-5)


def test_partial_fit_refuses_to_mix_sources():
    data = make_invariant_embeddings(n_samples=200, random_state=0)
    proj = InvariantProjector(4).partial_fit(data.X, data.y)
    with pytest.raises(ValueError, match="started with intervention source 'labels'"):
        proj.partial_fit(*stack_views(data.X, data.X_views[0])[:1], view_groups=np.arange(400) // 2)


def test_fitted_attributes_and_round_trip():
    data = make_invariant_embeddings(n_samples=500, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    proj = InvariantProjector(8).fit(X, view_groups=view_groups)
    assert proj.components_.shape == (8, 64)
    assert_allclose(proj.components_ @ proj.components_.T, np.eye(8), atol=1e-5)
    assert proj.n_components_ == 8 and proj.n_features_in_ == 64
    assert np.all(np.diff(proj.eigenvalues_) <= 1e-12)
    assert np.all(proj.invariance_ratio_ < 0.1)  # invariant directions barely move
    truth = data.invariant_basis
    true_share = np.trace(truth.T @ proj.second_moment_ @ truth) / np.trace(proj.second_moment_)
    assert proj.explained_variance_ratio_.sum() == pytest.approx(true_share, abs=0.02)
    projected = proj.inverse_transform(proj.transform(data.X))
    assert_allclose(proj.inverse_transform(proj.transform(projected)), projected, atol=1e-4)
    assert proj.get_feature_names_out().tolist() == [f"invariantprojector{i}" for i in range(8)]


def test_auto_n_components_finds_the_invariant_dimension():
    data = make_invariant_embeddings(n_samples=2000, random_state=0)
    proj = InvariantProjector().fit(*stack_views(data.X, *data.X_views)[:1],
                                    view_groups=np.tile(np.arange(2000), 2))
    assert 8 <= proj.n_components_ <= 12


def test_set_output_pandas():
    pd = pytest.importorskip("pandas")
    data = make_invariant_embeddings(n_samples=200, random_state=0)
    proj = InvariantProjector(3).set_output(transform="pandas")
    out = proj.fit(data.X, data.y).transform(data.X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["invariantprojector0", "invariantprojector1", "invariantprojector2"]


# ------------------------------------------------------------------ bad input
_X = np.random.RandomState(0).standard_normal((20, 5))
_PAIRS = np.arange(20) // 2


def _with(X=None, **changes):
    """A copy of the clean 20 x 5 input with one thing changed."""
    X = _X.copy() if X is None else X
    for (i, j), value in changes.pop("cells", {}).items():
        X[i, j] = value
    return X


# (id, constructor parameters, X, fit keyword arguments, error, message regex)
BAD_INPUTS = [
    ("no interventional data", {}, _with(), {}, ValueError, "needs interventional data. Pass `view_groups`"),
    ("singleton groups", {}, _with(), {"view_groups": np.arange(20)}, ValueError, "is a singleton"),
    ("view_groups length", {}, _with(), {"view_groups": np.arange(19)}, ValueError,
     "view_groups has 19 entries but X has 20 rows"),
    ("view_groups 2-D", {}, _with(), {"view_groups": np.zeros((20, 2))}, ValueError,
     r"view_groups must be one-dimensional, got shape \(20, 2\)"),
    ("view_groups NaN", {}, _with(), {"view_groups": np.r_[np.nan, np.zeros(19)]}, ValueError,
     "view_groups contains NaN or infinity"),
    ("view_groups mixed types", {}, _with(), {"view_groups": np.array([None, 1, "a", 1] * 5, dtype=object)},
     TypeError, r"view_groups mixes values that cannot be sorted together \(NoneType, int, str\)"),
    ("y length", {}, _with(), {"y": np.zeros(3)}, ValueError, "y has 3 entries but X has 20 rows"),
    ("y NaN", {}, _with(), {"y": np.r_[np.nan, _PAIRS[1:] % 2]}, ValueError, "^y contains NaN or infinity.$"),
    ("continuous y", {}, _with(), {"y": np.linspace(0, 1, 20)}, ValueError,
     "y looks continuous .* needs class labels"),
    ("every class a single sample", {}, _with(), {"y": np.arange(20)}, ValueError,
     "Every class has a single sample"),
    ("one environment", {}, _with(), {"y": _PAIRS % 2, "environments": np.zeros(20)}, ValueError,
     "single environment"),
    ("environments without y", {}, _with(), {"environments": _PAIRS % 2}, ValueError,
     "environments were given without y"),
    ("n_components > n_features", {"n_components": 6}, _with(), {"view_groups": _PAIRS}, ValueError,
     "n_components=6 must be at most the number of features, n_features=5"),
    ("negative lam", {"lam": -1.0}, _with(), {"view_groups": _PAIRS}, ValueError,
     "The 'lam' parameter of InvariantProjector must be a float in the range"),
    ("unknown solver", {"solver": "svd"}, _with(), {"view_groups": _PAIRS}, ValueError,
     "The 'solver' parameter of InvariantProjector must be a str among"),
    ("interventions without view groups", {"intervention_embeddings": np.ones((4, 5))}, _with(), {},
     ValueError,
     "without intervention_view_groups"),
    ("interventions' features",
     {"intervention_embeddings": np.ones((4, 3)), "intervention_view_groups": [0, 0, 1, 1]}, _with(), {},
     ValueError, "intervention_embeddings have 3 features but X has 5"),
    ("interventions' singleton groups",
     {"intervention_embeddings": _X[:4], "intervention_view_groups": [0, 1, 2, 3]}, _with(), {}, ValueError,
     "Every group in `intervention_view_groups` is a singleton"),
    ("NaN in X", {}, _with(cells={(3, 1): np.nan}), {"view_groups": _PAIRS}, ValueError,
     "Input X contains NaN"),
    ("inf in X", {}, _with(cells={(3, 1): np.inf}), {"view_groups": _PAIRS}, ValueError,
     "Input X contains infinity"),
    ("1-D X", {}, _X[:, 0], {"view_groups": _PAIRS}, ValueError, "Expected 2D array, got 1D array instead"),
    ("empty X", {}, _X[:0], {}, ValueError, r"Found array with 0 sample\(s\)"),
    ("X all zeros", {}, np.zeros((20, 5)), {"view_groups": _PAIRS}, ValueError, "X is all zeros"),
    ("identical views", {}, np.repeat(_X[:10], 2, axis=0), {"view_groups": _PAIRS}, ValueError,
     "no variation at all"),
]


@pytest.mark.parametrize(
    "params, X, fit_kwargs, error, message",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_raises_a_clear_error(params, X, fit_kwargs, error, message):
    with pytest.raises(error, match=message):
        InvariantProjector(**params).fit(X, **fit_kwargs)
    with pytest.raises(error, match=message):
        InvariantProjector(**params).partial_fit(X, **fit_kwargs)


def _same(a, b):
    """Exact equality of estimator state: arrays elementwise (NaN-aware), dataclasses field by field."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and _same(vars(a), vars(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _fitted(how):
    proj = InvariantProjector(2)
    if how == "fit":
        return proj.fit(_X, view_groups=_PAIRS)
    if how == "partial_fit":
        return proj.partial_fit(_X, view_groups=_PAIRS)
    return proj


# Valid as a later batch: the total already has pairs, variance and variation.
_ACCEPTED_WHEN_CONTINUING = {"singleton groups", "X all zeros", "identical views"}


@pytest.mark.parametrize("state", ["unfitted", "fit", "partial_fit"])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize(
    "case, params, X, fit_kwargs", [case[:4] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_failed_call_leaves_the_estimator_unchanged(state, method, case, params, X, fit_kwargs):
    proj = _fitted(state).set_params(**params)
    before = copy.deepcopy(proj.__dict__)
    continuing = method == "partial_fit" and state != "unfitted"
    if continuing and case in _ACCEPTED_WHEN_CONTINUING:
        proj.partial_fit(X, **fit_kwargs)
        assert proj.n_samples_seen_ == 40
        return
    with pytest.raises((ValueError, TypeError)):
        getattr(proj, method)(X, **fit_kwargs)
    assert _same(proj.__dict__, before)
    # ... and it still works: the next good call proceeds from the same state.
    proj.set_params(**InvariantProjector(2).get_params())
    getattr(proj, method)(_X, view_groups=_PAIRS)
    assert proj.n_samples_seen_ == (40 if continuing else 20)


def test_partial_fit_rejects_features_and_sources_that_change():
    proj = InvariantProjector(2).partial_fit(_X, view_groups=_PAIRS)
    with pytest.raises(ValueError, match="X has 4 features, but InvariantProjector is expecting 5"):
        proj.partial_fit(_X[:, :4], view_groups=_PAIRS)
    with pytest.raises(ValueError, match="started with intervention source 'view_groups'"):
        proj.partial_fit(_X, _PAIRS % 2)
    assert proj.n_samples_seen_ == 20


def test_transform_and_inverse_transform_check_their_input():
    proj = InvariantProjector(2).fit(_X, view_groups=_PAIRS)
    with pytest.raises(ValueError, match="features"):
        proj.transform(_X[:, :3])
    with pytest.raises(ValueError, match="expects 2"):
        proj.inverse_transform(_X)


# ------------------------------------------------------- range and round-off
@pytest.mark.parametrize(
    "dtype, factors",
    [
        (np.float32, [1e-30, 1e-20, 1e-10, 1e10, 1e18, 1e30]),
        (np.float64, [1e-300, 1e-150, 1e-50, 1e50, 1e150, 1e300]),
    ],
)
@pytest.mark.parametrize("solver", ["ratio", "difference"])
def test_subspace_is_the_same_for_any_scale_of_x(dtype, factors, solver):
    data = make_invariant_embeddings(n_samples=300, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    X = X.astype(dtype)
    reference = InvariantProjector(8, solver=solver).fit(X, view_groups=view_groups)
    projector = reference.components_.T @ reference.components_
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for factor in factors:
        proj = InvariantProjector(8, solver=solver).fit(X * dtype(factor), view_groups=view_groups)
        assert np.all(np.isfinite(proj.components_))
        assert_allclose(proj.components_.T @ proj.components_, projector, atol=tol)
        assert_allclose(proj.eigenvalues_, reference.eigenvalues_, rtol=tol)
        assert proj.lam_scale_ == pytest.approx(reference.lam_scale_, rel=tol)
        assert_allclose(proj.explained_variance_ratio_, reference.explained_variance_ratio_, rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_shot_difference_form_keeps_no_round_off_components(dtype):
    # 10 pairs in 512 dimensions: by Sylvester's law of inertia S_Z - lam S_Delta has
    # exactly 10 positive eigenvalues (the pair sums); the other 502 are 0 or negative.
    X = np.random.RandomState(0).standard_normal((20, 512)).astype(dtype)
    proj = InvariantProjector(solver="difference").fit(X, view_groups=_PAIRS)
    assert proj.n_components_ == 10
    ratio = InvariantProjector().fit(X, view_groups=_PAIRS)
    assert ratio.n_components_ <= 20  # at most the rank of X
    assert np.all(ratio.eigenvalues_ > 1 / 11)


def test_auto_n_components_agrees_with_a_fixed_k():
    # n_components=None solves the whole spectrum, a fixed K only its top: same answer.
    data = make_invariant_embeddings(n_samples=500, random_state=0)
    X, view_groups = stack_views(data.X.astype(np.float64), *data.X_views)
    for solver in ("ratio", "difference"):
        auto = InvariantProjector(solver=solver).fit(X, view_groups=view_groups)
        fixed = InvariantProjector(auto.n_components_, solver=solver).fit(X, view_groups=view_groups)
        assert_allclose(fixed.eigenvalues_, auto.eigenvalues_, rtol=1e-10)
        assert_allclose(fixed.components_, auto.components_, atol=1e-8)


@pytest.mark.parametrize("n", [1, 64, 65, 200])
def test_block_triangular_inverse_matches_scipy(n):
    from clip_invariance.invariance._eigensolvers import _invert_lower

    A = np.random.RandomState(n).standard_normal((n, n))
    lower = np.linalg.cholesky(np.eye(n) + A @ A.T / n)  # as in the ratio solver: b >= I
    inverse = _invert_lower(lower)
    assert_allclose(inverse, linalg.solve_triangular(lower, np.eye(n), lower=True), atol=1e-12)
    assert_allclose(inverse @ lower, np.eye(n), atol=1e-12)
    assert not np.any(np.triu(inverse, 1))


def test_pickle_holds_the_statistics_once():
    # D=512, K=64: 8.1 MiB before the statistics were stored once, 4.1 MiB after
    # (gram and within-group scatter, 2 MiB each, which partial_fit needs).
    X = np.random.RandomState(0).standard_normal((2000, 512)).astype(np.float32)
    proj = InvariantProjector(64).fit(X, view_groups=np.arange(2000) // 2)
    needed = proj.statistics_.gram.nbytes + proj.statistics_.group_scatter.nbytes
    size = len(pickle.dumps(proj))
    assert size < needed + proj.components_.nbytes + 64 * 1024
    twin = pickle.loads(pickle.dumps(proj))
    assert_allclose(twin.second_moment_, proj.second_moment_)
    assert_allclose(twin.nuisance_scatter_, proj.nuisance_scatter_)
    twin.partial_fit(X[:10], view_groups=np.arange(10) // 2)
    assert twin.n_samples_seen_ == 2010


def test_intervention_embeddings_survive_clone():
    extra = np.random.RandomState(0).standard_normal((6, 4))
    proj = InvariantProjector(2, intervention_embeddings=extra, intervention_view_groups=[0, 0, 1, 1, 2, 2])
    twin = clone(proj)
    assert_allclose(twin.get_params()["intervention_embeddings"], extra)
    X = np.random.RandomState(1).standard_normal((30, 4))
    assert_allclose(twin.fit(X).components_, proj.fit(X).components_)


def _grid_data():
    data = make_invariant_embeddings(n_samples=800, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    y = np.tile(data.y, 2)
    environments = np.tile(data.environments, 2)
    return X, y, view_groups, environments


def _grid(proj):
    pipe = Pipeline([("proj", proj), ("clf", LogisticRegression(max_iter=500))])
    return GridSearchCV(
        pipe,
        {"proj__n_components": [4, 8], "proj__lam": [1.0, 10.0]},
        cv=LeaveOneGroupOut(),
    )


def test_grid_search_classic_style():
    X, y, view_groups, environments = _grid_data()
    search = _grid(InvariantProjector()).fit(X, y, groups=environments, proj__view_groups=view_groups)
    assert search.best_params_["proj__n_components"] == 8
    assert search.best_estimator_.named_steps["proj"].intervention_source_ == "view_groups"


def test_grid_search_with_metadata_routing():
    X, y, view_groups, environments = _grid_data()
    with config_context(enable_metadata_routing=True):
        proj = InvariantProjector().set_fit_request(view_groups=True)
        search = _grid(proj).fit(X, y, groups=environments, view_groups=view_groups)
        assert search.best_params_["proj__n_components"] == 8
        assert search.best_estimator_.named_steps["proj"].intervention_source_ == "view_groups"

        # `groups` is the splitter's (environments here); the projector's views are
        # `view_groups`, so the two names never collide.
        proj = InvariantProjector().set_fit_request(environments=True, view_groups=False)
        search = _grid(proj).fit(X, y, groups=environments, environments=environments)
        assert search.best_estimator_.named_steps["proj"].intervention_source_ == "environments"


def test_string_labels_of_any_dtype():
    data = make_invariant_embeddings(n_samples=300, random_state=0)
    names = np.array([f"class{c}" for c in range(10)])
    expected = InvariantProjector(4).fit(data.X, data.y, environments=data.environments)
    for y in (names[data.y], names[data.y].astype(object)):
        envs = np.array(["a", "b", "c", "d"], dtype=object)[data.environments]
        proj = InvariantProjector(4).fit(data.X, y, environments=envs)
        assert_allclose(proj.nuisance_scatter_, expected.nuisance_scatter_, rtol=1e-5)


def test_ratio_solver_matches_scipy_generalized_eigh():
    data = make_invariant_embeddings(n_samples=500, random_state=0)
    X, view_groups = stack_views(data.X.astype(np.float64), *data.X_views)
    proj = InvariantProjector(5, lam=3.0).fit(X, view_groups=view_groups)
    d = X.shape[1]
    z_hat = proj.second_moment_ / (np.trace(proj.second_moment_) / d)
    d_hat = proj.nuisance_scatter_ / (np.trace(proj.nuisance_scatter_) / d)
    values, vectors = linalg.eigh(z_hat, np.eye(d) + 3.0 * d_hat)
    assert_allclose(proj.eigenvalues_, values[::-1][:5], rtol=1e-8)
    assert subspace_overlap(vectors[:, ::-1][:, :5], proj.components_.T) == pytest.approx(1.0)


def test_transform_reports_nan_in_x():
    X = np.random.RandomState(0).standard_normal((10, 4))
    proj = InvariantProjector(2).fit(X, view_groups=np.arange(10) // 2)
    bad = X.copy()
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        proj.transform(bad)
    with pytest.raises(ValueError, match="overflowed"):
        proj.transform(np.full((2, 4), 1e308))


# ------------------------------------------------------------ compact
def test_compact_leaves_a_projector_that_weighs_its_components():
    # At D=512, K=64 the statistics (two (D, D) float64 sums) are 4 MiB of a 4.1 MiB pickle.
    X = np.random.RandomState(0).standard_normal((600, 512)).astype(np.float32)
    proj = InvariantProjector(64).fit(X, view_groups=np.arange(600) // 2)
    full = len(pickle.dumps(proj))
    expected = {name: copy.deepcopy(getattr(proj, name)) for name in vars(proj)
                if name.endswith("_") and name != "statistics_"}
    Z = proj.transform(X)
    assert proj.compact() is proj
    assert proj.statistics_ is None
    size = len(pickle.dumps(proj))
    assert size < proj.components_.nbytes + 16 * 1024 < full / 20
    assert all(_same(getattr(proj, name), value) for name, value in expected.items())
    assert np.array_equal(proj.transform(X), Z)
    twin = pickle.loads(pickle.dumps(proj))
    assert np.array_equal(twin.inverse_transform(Z), proj.inverse_transform(Z))


def test_a_compact_projector_refuses_partial_fit_and_the_dropped_statistics():
    proj = InvariantProjector(2).fit(_X, view_groups=_PAIRS).compact()
    before = copy.deepcopy(proj.__dict__)
    with pytest.raises(ValueError, match=r"partial_fit cannot continue a compacted projector: compact\(\) "
                                         r"dropped the statistics it adds to\. Call fit to start again\."):
        proj.partial_fit(_X, view_groups=_PAIRS)
    assert _same(proj.__dict__, before)
    for name in ("second_moment_", "nuisance_scatter_"):
        with pytest.raises(AttributeError, match=rf"{name} was dropped by compact\(\); fit again to get it"):
            getattr(proj, name)
    # fit starts afresh, with statistics again.
    refit = proj.fit(_X, view_groups=_PAIRS)
    assert_allclose(refit.components_, InvariantProjector(2).fit(_X, view_groups=_PAIRS).components_)
    assert refit.statistics_.n_samples == 20
    assert refit.partial_fit(_X, view_groups=_PAIRS).n_samples_seen_ == 40


def test_compact_needs_a_fitted_projector():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="This InvariantProjector instance is not fitted yet"):
        InvariantProjector(2).compact()


def test_the_d_by_d_solve_runs_blas_on_one_thread_and_restores_the_threads(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    import clip_invariance.invariance._projector as projector_module
    from clip_invariance.invariance._eigensolvers import one_blas_thread

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with one_blas_thread(512):
            assert blas_threads() == [1] * len(before)
        with one_blas_thread(2048):  # larger solves keep their threads
            assert blas_threads() == before
        assert blas_threads() == before
        seen = []

        def recording(n_features):
            seen.append((n_features, blas_threads()))
            return one_blas_thread(n_features)

        monkeypatch.setattr(projector_module, "one_blas_thread", recording)
        X = np.random.RandomState(0).standard_normal((100, 6))
        InvariantProjector(2).fit(X, view_groups=np.arange(100) // 2)
        assert seen == [(6, before)] and blas_threads() == before
