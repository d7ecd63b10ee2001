"""benchmarks/bench_real_features.py and benchmarks/real_features_why.py: what they compute, on data
with known answers (neither the images, the model nor the cached store are needed)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def why():
    return _load("real_features_why")


@pytest.fixture(scope="module")
def bench():
    return _load("bench_real_features")


def _views_along(rng, X, directions, scale=1.0, n_views=2):
    """Views of every row that move along the given coordinates only."""
    views = np.repeat(X[:, None], n_views, axis=1)
    views[..., directions] += scale * rng.normal(size=(len(X), n_views, len(directions)))
    return views


def test_shift_in_the_view_directions_is_captured_whole(why):
    rng = np.random.default_rng(0)
    d, n = 20, 400
    X = 0.1 * rng.normal(size=(n, d))  # class means are estimated to about 0.01 in every coordinate
    y = rng.integers(0, 3, n)
    is_target = np.arange(n) >= 300
    X[is_target, 0] += 2.0 + y[is_target]  # the target moves along coordinate 0, by class
    views = _views_along(rng, X, [0, 1, 2])
    shift = why.shift_scatter(X, y, is_target)
    basis = why.top_directions(why.view_scatter(X[~is_target], views[~is_target]), 3)
    assert why.captured(shift, basis) == pytest.approx(1.0, abs=0.02)
    # Views that vary other coordinates hold almost none of it.
    other = why.top_directions(why.view_scatter(X, _views_along(rng, X, [5, 6, 7])), 3)
    assert why.captured(shift, other) < 0.05


def test_random_directions_capture_m_over_d(why):
    rng = np.random.default_rng(1)
    d, m = 30, 6
    A = rng.normal(size=(d, d))
    scatter = A @ A.T  # any scatter: the expectation over random subspaces does not depend on it
    shares = [why.captured(scatter, np.linalg.qr(rng.normal(size=(d, m)))[0]) for _ in range(2000)]
    assert np.mean(shares) == pytest.approx(why.random_captured(m, d), abs=0.01)
    assert why.random_captured(m, d) == m / d


def test_scatters_by_hand(why):
    # Two classes; the sources' class means are (0, 0) and (2, 0); the target's (1, 0) and (2, 3).
    X = np.array([[0, 0], [0, 0], [2, 0], [2, 0], [1, 0], [2, 3], [2, 3], [2, 3]], dtype=float)
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    is_target = np.arange(8) >= 4
    # Target deviations (1, 0) for 1 image of class 0 and (0, 3) for 3 of class 1.
    expected = (np.outer([1, 0], [1, 0]) * 1 + np.outer([0, 3], [0, 3]) * 3) / 4
    np.testing.assert_allclose(why.shift_scatter(X, y, is_target), expected)
    # Class scatter of the sources: means (0, 0) and (2, 0) around (1, 0).
    np.testing.assert_allclose(why.class_scatter(X[:4], y[:4]), [[1, 0], [0, 0]])
    # Environment scatter: class 1's two environment means (2, 0) x2 and (2, 3) x3 around (2, 1.5).
    environments = np.array(["s", "s", "s", "s", "t", "t", "t", "t"])
    class0 = 1 * np.outer([-0.5, 0], [-0.5, 0]) * 2 + 1 * np.outer([0.5, 0], [0.5, 0])
    class1 = 2 * np.outer([0, -1.5], [0, -1.5]) + 3 * np.outer([0, 1.5], [0, 1.5])
    np.testing.assert_allclose(why.environment_scatter(X, y, environments), (class0 + class1) / 8)


def test_view_scatter_is_half_the_projectors_pair_scatter_and_skips_missing_views(why):
    from clip_invariance import InvariantProjector

    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 6))
    views = X[:, None] + rng.normal(size=(50, 1, 6))
    proj = InvariantProjector(2).fit(np.concatenate([X, views[:, 0]]), view_groups=np.tile(np.arange(50), 2))
    # A pair's deviations from its mean are +-(x - x')/2: half of the mean (x - x')(x - x')^T.
    np.testing.assert_allclose(2 * why.view_scatter(X, views), proj.nuisance_scatter_, rtol=1e-6, atol=1e-9)
    # A missing view (NaN) is left out, and an image without views adds nothing.
    two = np.concatenate([views, np.full_like(views, np.nan)], axis=1)
    np.testing.assert_allclose(why.view_scatter(X, two), why.view_scatter(X, views))
    two[:10, 0] = np.nan
    np.testing.assert_allclose(why.view_scatter(X, two), why.view_scatter(X[10:], views[10:]))


def test_ratio_bases_span_what_the_projector_keeps(why):
    from clip_invariance import InvariantProjector
    from clip_invariance.datasets import make_invariant_embeddings
    from clip_invariance.invariance import subspace_overlap
    from clip_invariance.views import stack_views

    data = make_invariant_embeddings(n_samples=300, random_state=0)
    X, groups = stack_views(data.X, *data.X_views)
    full = InvariantProjector(1).fit(X, view_groups=groups)
    bases = why.ratio_bases(full.second_moment_, full.nuisance_scatter_, [0.0, 10.0, 1000.0])
    for lam, basis in bases.items():
        np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-8)
        for k in (2, 8, 20):
            proj = InvariantProjector(k, lam=lam).fit(X, view_groups=groups)
            assert subspace_overlap(proj.components_.T, basis[:k].T) == pytest.approx(1.0, abs=1e-6)


def test_view_transforms_are_those_make_image_interventions_drew(why):
    from clip_invariance.embedding import make_image_interventions

    paths = np.array([f"{e}/img{i}.jpg" for e in ("a", "b") for i in range(5)])
    environments = np.repeat(["a", "b"], 5)
    transforms = why.view_transforms(paths, environments, ["a", "b"], n_augmented=2, random_state=3)
    assert transforms.shape == (10, 2)
    for e, name in enumerate(["a", "b"]):
        views, _ = make_image_interventions(list(paths[environments == name]), n_augmented=2,
                                            include_original=False, random_state=3 * 1000 + e)
        drawn = [[views[v * 5 + i].transform for v in range(2)] for i in range(5)]
        assert transforms[environments == name].tolist() == drawn


def test_split_scores_keys_and_the_whole_space_is_the_control(why):
    from clip_invariance.evaluation import selection_splits

    rng = np.random.default_rng(3)
    n, d = 120, 8
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, 2, n)
    X[:, 0] += 2 * y
    env = np.repeat(["a", "b", "c", "d"], 30)
    views = X[:, None] + 0.3 * rng.normal(size=(n, 1, d)).astype(np.float32)
    rows = np.concatenate([X, views[:, 0]])
    groups, original = np.tile(np.arange(n), 2), np.arange(2 * n) < n
    labels, environments = np.tile(y, 2), np.tile(env, 2)
    validation, test = why.lodo_scores(rows, groups, original, labels, environments, "c", 0, ks=[2, d])
    assert validation.keys() == test.keys()
    assert ("views", "probe-icm-views", 2, 10.0) in test and ("environments", "probe-icm", d, 1.0) in test
    # K = D keeps the whole space: the invariant probe on the views is probe-views, rotated.
    for lam in (1.0, 100.0):
        assert test[("views", "probe-icm-views", d, lam)] == pytest.approx(
            test[("probe-views", None, None, None)], abs=0.02)
    splits, _ = selection_splits("lodo-cv", environments, "c", view_groups=groups, is_original=original)
    assert len(splits) == 3  # the sources a, b and d in turn


def test_select_breaks_ties_by_order(why):
    validation = {"a": 0.9, "b": 0.95, "c": 0.95}
    assert why.select(validation, ["a", "c", "b"]) == "c"
    assert why.select(validation, ["a"]) == "a"


def test_why_skips_without_the_store(why, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(why, "STORE", tmp_path / "absent")
    assert why.main(["--output", str(tmp_path / "out.csv")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "out.csv").exists()


def test_table_gains_are_against_probe_views(bench, tmp_path):
    pd = pytest.importorskip("pandas")
    records = []
    for seed in (0, 1):
        for method, accuracy in (("prototype", 0.5), ("probe", 0.6), ("probe-views", 0.7),
                                 ("probe-icm", 0.72 + 0.02 * seed), ("probe-icm-views", 0.65)):
            for target in ("a", "b"):
                records.append({"features": "raw", "selection": "oracle", "method": method, "seed": seed,
                                "target": target, "accuracy": accuracy})
    pd.DataFrame(records).to_csv(tmp_path / "rows.csv", index=False)
    bench.write_table([tmp_path / "rows.csv"], output=tmp_path / "table.csv")
    table = pd.read_csv(tmp_path / "table.csv", dtype=str).set_index("method")
    assert table.loc["probe-icm gain", "a"] == "+3.0"  # (2 + 4) / 2 points
    assert table.loc["probe-icm-views gain", "avg"] == "-5.0"
    assert table.loc["probe-icm", "avg"] == "73.0 ± 1.0"
    assert table.loc["probe", "seeds"] == "2"
