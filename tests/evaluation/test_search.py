"""The shared-work grid search: the scores GridSearchCV gives, from fewer fits."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import clip_invariance.evaluation._search as search
from clip_invariance import InvariantProjector
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.evaluation import evaluate_store, selection_splits
from clip_invariance.evaluation._search import grid_scores
from clip_invariance.views import stack_views

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def rows():
    data = make_invariant_embeddings(n_samples=300, n_features=16, n_variant=4, n_invariant=4,
                                     random_state=0)
    X, groups = stack_views(data.X, *data.X_views)
    n = len(data.X)
    y = np.tile(data.y, 2)
    environments = np.tile(data.environments, 2)
    is_original = np.arange(len(X)) < n
    splits, _ = selection_splits("lodo-cv", environments, data.test_environment, view_groups=groups,
                                 is_original=is_original)
    return X, y, groups, is_original, splits


def reference(estimator, grid, X, y, splits, fit_params):
    """What GridSearchCV scores, every candidate fitted from scratch."""
    found = GridSearchCV(estimator, grid, cv=splits, refit=False).fit(X, y, **fit_params)
    return found.cv_results_["params"], found.cv_results_["mean_test_score"]


# lbfgs stops at tol=1e-4 (the evaluation's probe): from another start it stops at another point of
# the optimum's neighbourhood, which moves a few validation images of the ~150 per split here.
WARM_TOLERANCE = 0.02


def probe():
    return LogisticRegression(max_iter=2000)  # the evaluation's probe


@pytest.mark.parametrize("warm_start", [False, True])
def test_probe_grid_scores_equal_grid_search(rows, warm_start):
    X, y, _, is_original, splits = rows
    grid = {"C": [3.16, 0.1, 1.0]}  # unsorted: the path sorts them, the output keeps the grid's order
    weights = {"sample_weight": is_original.astype(float)}
    candidates, scores = grid_scores(probe(), grid, X, y, splits, fit_params=weights, warm_start=warm_start)
    expected_candidates, expected = reference(probe(), grid, X, y, splits, weights)
    assert candidates == expected_candidates
    if warm_start:  # the same optimum to the solver's tolerance, from a closer start
        np.testing.assert_allclose(scores, expected, atol=WARM_TOLERANCE)
    else:  # zero-weight rows dropped instead of weighed by zero: the same fits
        np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("warm_start", [False, True])
def test_projected_probe_grid_scores_equal_grid_search(rows, weighted, warm_start):
    X, y, groups, is_original, splits = rows
    pipeline = Pipeline([("proj", InvariantProjector()), ("clf", probe())])
    grid = {"proj__n_components": [2, 8], "proj__lam": [1.0, 100.0], "clf__C": [0.1, 3.16]}
    fit_params = {"proj__view_groups": groups}
    if weighted:
        fit_params["clf__sample_weight"] = is_original.astype(float)
    calls = []
    real_path = search.projector_path
    search.projector_path = lambda *a, **k: calls.append(k["params"]) or real_path(*a, **k)
    try:
        candidates, scores = grid_scores(pipeline, grid, X, y, splits, fit_params=fit_params,
                                         warm_start=warm_start)
    finally:
        search.projector_path = real_path
    expected_candidates, expected = reference(pipeline, grid, X, y, splits, fit_params)
    assert candidates == expected_candidates
    if warm_start:
        np.testing.assert_allclose(scores, expected, atol=WARM_TOLERANCE)
    else:  # bit-identical projectors, the same probes
        np.testing.assert_array_equal(scores, expected)
    # One statistics pass per split for the four (K, lam) settings.
    assert len(calls) == len(splits) and all(len(settings) == 4 for settings in calls)


def test_other_estimators_go_through_grid_search(rows):
    X, y, _, _, splits = rows
    weighted = {"sample_weight": np.linspace(0.5, 1.5, len(y))}  # real weights: not a row filter
    for estimator, grid, params in [(LogisticRegression(), {"C": [1.0]}, weighted),
                                    (LogisticRegression(), {"tol": [1e-4]}, {})]:
        assert not search._is_probe(estimator, grid, params, prefix="")
        candidates, scores = grid_scores(estimator, grid, X, y, splits, fit_params=params)
        np.testing.assert_allclose(scores, reference(estimator, grid, X, y, splits, params)[1])


def test_evaluation_selects_the_same_with_shared_work(tmp_path, monkeypatch):
    """Every row the same with and without shared work, on a small store and every rule."""
    from clip_invariance.datasets import save_embeddings

    data = make_invariant_embeddings(n_samples=400, n_features=32, normalize=True, random_state=1)
    store = tmp_path / "store"
    save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2))
    kwargs = {"methods": ["probe", "probe-views", "probe-icm", "probe-icm-views"], "interventions": "image",
              "selection": "all", "grids": {"n_components": [4, 16], "lam": [1.0, 100.0], "C": [0.1, 3.16]}}
    shared = evaluate_store(store, **kwargs)
    monkeypatch.setattr(search, "_SHARE_WORK", False)
    alone = evaluate_store(store, **kwargs)
    pd.testing.assert_frame_equal(shared, alone)


def test_default_methods_select_the_same_with_shared_work(tmp_path, monkeypatch):
    """Every default method (the prompt heads, the front door, the baselines, the probes): the same rows.

    The store has views, prompts and styled text interventions, so that every method of
    DEFAULT_METHODS runs, the invariant ones on both kinds of intervention; every tuned parameter has
    two values, so every search shares (or not) its work.
    """
    from clip_invariance.datasets import save_embeddings
    from clip_invariance.evaluation import DEFAULT_METHODS

    data = make_invariant_embeddings(n_samples=240, n_features=16, n_invariant=4, n_variant=4,
                                     n_text_styles=3, normalize=True, random_state=2)
    store = tmp_path / "store"
    save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings,
                    text_interventions=data.text_interventions, text_view_groups=data.text_view_groups,
                    text_intervention_styles=[f"style {i % 3}" for i in range(len(data.text_view_groups))])
    grids = {"n_components": [2, 8], "lam": [10.0, 100.0], "C": [0.316, 3.16], "temperature": [10.0, 30.0],
             "wise_alpha": [0.5, 1.0], "tip_alpha": [1.0, 100.0], "tip_beta": [3.5, 14.0]}
    kwargs = {"selection": "lodo-cv", "grids": grids, "front_door_params": {"max_iter": 2}}
    shared = evaluate_store(store, **kwargs)
    assert set(shared["method"]) == set(DEFAULT_METHODS)
    assert set(shared.loc[shared["method"] == "wise-icm", "interventions"]) == {"both"}
    monkeypatch.setattr(search, "_SHARE_WORK", False)
    alone = evaluate_store(store, **kwargs)
    pd.testing.assert_frame_equal(shared, alone)
    # Real selections: the searched parameters vary across methods and targets, not one corner of the grid.
    chosen = shared[shared["method"].isin(["probe-icm", "wise-icm", "front-door-icm", "tip-adapter-icm"])]
    assert chosen["n_components"].notna().all() and chosen["lam"].notna().all()
    assert shared["accuracy"].between(0, 1).all() and shared["accuracy"].gt(0.2).any()


@pytest.mark.parametrize("projected", [False, True])
@pytest.mark.parametrize("name", ["wise", "tip-adapter"])
def test_prediction_parameters_are_scored_from_one_fit(projected, name, monkeypatch):
    from clip_invariance.baselines import TipAdapterClassifier, WiSEClassifier

    data = make_invariant_embeddings(n_samples=300, n_features=16, n_invariant=4, n_variant=4,
                                     random_state=0)
    X, groups = stack_views(data.X, *data.X_views)
    y, environments = np.tile(data.y, 2), np.tile(data.environments, 2)
    splits, _ = selection_splits("lodo-cv", environments, data.test_environment, view_groups=groups,
                                 is_original=np.arange(len(X)) < len(data.X))
    projector = InvariantProjector() if projected else None
    if name == "wise":
        estimator = WiSEClassifier(data.prompt_embeddings, projector=projector)
        grid = {"alpha": [0.0, 0.5, 1.0], "C": [0.1, 1.0]}
    else:
        estimator = TipAdapterClassifier(data.prompt_embeddings, projector=projector)
        grid = {"alpha": [0.1, 10.0], "beta": [1.0, 7.0]}
    if projected:
        grid["projector__n_components"] = [4, 8]
    fits, caches = [], []
    real_fit, real_head = type(estimator).fit, type(estimator)._head_logits
    monkeypatch.setattr(type(estimator), "fit", lambda est, *a, **k: fits.append(1) or real_fit(est, *a, **k))
    monkeypatch.setattr(type(estimator), "_head_logits",
                        lambda est, Z: caches.append(est.alpha) or real_head(est, Z))
    candidates, scores = grid_scores(estimator, grid, X, y, splits, fit_params={"view_groups": groups})
    n_fits, n_heads = len(fits), len(caches)
    monkeypatch.undo()
    expected_candidates, expected = reference(estimator, grid, X, y, splits, {"view_groups": groups})
    assert candidates == expected_candidates
    np.testing.assert_array_equal(scores, expected)
    late = [k for k in grid if k in type(estimator)._prediction_parameters]
    n_settings = len(candidates) // int(np.prod([len(grid[k]) for k in late]))
    assert n_fits == n_settings * len(splits)
    if name == "tip-adapter":  # the cache logits once per beta (at alpha 1), scaled by every alpha
        assert n_heads == n_fits * len(grid["beta"]) and set(caches) == {1.0}
    else:  # WiSE's probe logits are cheap: computed at every alpha, as its score does
        assert n_heads == n_fits * len(grid["alpha"])


def test_tip_adapter_scores_of_a_zero_alpha_and_repeated_betas_equal_grid_search():
    """alpha = 0 skips the cache; an alpha of 1 and a beta met again reuse it: the same scores."""
    from clip_invariance.baselines import TipAdapterClassifier

    data = make_invariant_embeddings(n_samples=300, n_features=16, n_invariant=4, n_variant=4,
                                     random_state=3)
    splits, _ = selection_splits("lodo-cv", data.environments, data.test_environment)
    estimator = TipAdapterClassifier(data.prompt_embeddings)
    grid = {"beta": [7.0, 1.0, 7.0], "alpha": [0.0, 1.0, 3.0, 1000.0]}
    candidates, scores = grid_scores(estimator, grid, data.X, data.y, splits)
    expected_candidates, expected = reference(estimator, grid, data.X, data.y, splits, {})
    assert candidates == expected_candidates
    np.testing.assert_array_equal(scores, expected)
    assert len(set(np.round(scores, 6))) > 1  # the weights matter here
