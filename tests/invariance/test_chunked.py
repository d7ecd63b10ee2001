"""Fit, transform and predict on dask arrays (clip_invariance._utils).

The in-memory estimators are the reference: a dask fit must give the statistics
of ``partial_fit`` over the same blocks, and a lazy prediction the in-memory one.
"""

import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.invariance import subspace_overlap

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

VIEWS = 2


def views_block(block_id=None, *, groups, d, k, seed=0, precision=np.float64):
    """``groups`` contents, ``VIEWS`` adjacent rows each: shared invariant latents, per-view style.

    The style has the larger variance, so PCA alone would keep it; the first
    ``k`` columns of :func:`planted_basis` span the invariant subspace.
    """
    rng = np.random.default_rng([seed, block_id[0]])
    content = np.repeat(rng.standard_normal((groups, k)), VIEWS, axis=0)
    style = 3.0 * rng.standard_normal((groups * VIEWS, d - k))
    return (np.hstack([content, style]) @ planted_basis(d).T).astype(precision)


def planted_basis(d):
    return np.linalg.qr(np.random.default_rng(d).standard_normal((d, d)))[0]


def lazy_views(n_chunks, *, groups=50, d=16, k=3, seed=0, dtype=np.float64):
    """A lazily generated dask ``X`` (complete groups per chunk) and its lazy group ids."""
    rows = groups * VIEWS
    X = da.map_blocks(views_block, groups=groups, d=d, k=k, seed=seed, precision=dtype, dtype=dtype,
                      chunks=((rows,) * n_chunks, (d,)), meta=np.empty((0, 0), dtype))
    return X, da.arange(n_chunks * rows, chunks=rows) // VIEWS


def partial_fit_blocks(projector, X, **labels):
    """The in-memory reference: partial_fit chunk by chunk, each chunk computed alone."""
    bounds = np.cumsum((0,) + X.chunks[0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        projector.partial_fit(X[lo:hi].compute(), **{k: np.asarray(v[lo:hi]) for k, v in labels.items()})
    return projector


def assert_same_fit(a, b, rtol=1e-10):
    assert a.n_samples_seen_ == b.n_samples_seen_
    assert a.statistics_.group_dof == b.statistics_.group_dof
    assert_allclose(a.statistics_.gram, b.statistics_.gram, rtol=rtol)
    assert_allclose(a.eigenvalues_, b.eigenvalues_, rtol=rtol)
    assert_allclose(a.components_, b.components_, rtol=rtol, atol=rtol)


# ------------------------------------------------------------------ fit
def test_fit_equals_partial_fit_over_the_same_blocks():
    X, view_groups = lazy_views(7)
    proj = InvariantProjector(3).fit(X, view_groups=view_groups)
    reference = partial_fit_blocks(InvariantProjector(3), X, view_groups=view_groups)
    assert_same_fit(proj, reference)
    assert_allclose(proj.nuisance_scatter_, reference.nuisance_scatter_, rtol=1e-10)
    assert subspace_overlap(proj.components_.T, planted_basis(16)[:, :3]) > 0.95
    assert proj.n_features_in_ == 16 and proj.components_.dtype == np.float64


@pytest.mark.parametrize("split_every", [2, 3, 100])
def test_the_tree_sums_every_chunk_once(split_every):
    from clip_invariance.invariance._chunked import chunked_statistics

    X, view_groups = lazy_views(7)  # 2: a tree 3 deep; 3: uneven; 100: one sum
    statistics = chunked_statistics(X, view_groups=view_groups, split_every=split_every)
    reference = partial_fit_blocks(InvariantProjector(3), X, view_groups=view_groups).statistics_
    assert (statistics.n_samples, statistics.group_dof) == (700, 350)
    assert_allclose(statistics.gram, reference.gram, rtol=1e-10)
    assert_allclose(statistics.group_scatter, reference.group_scatter, rtol=1e-10)


def test_numpy_labels_and_uneven_chunks():
    X, view_groups = lazy_views(4)
    X = X.rechunk({0: (100, 200, 2, 98)})  # boundaries between pairs of rows: whole groups
    proj = InvariantProjector(3).fit(X, view_groups=view_groups.compute())
    assert_same_fit(proj, InvariantProjector(3).fit(X.compute(), view_groups=view_groups.compute()))


def test_float32_stays_float32():
    X, view_groups = lazy_views(3, dtype=np.float32)
    assert X.compute().dtype == np.float32
    proj = InvariantProjector(3).fit(X, view_groups=view_groups)
    reference = partial_fit_blocks(InvariantProjector(3), X, view_groups=view_groups)
    assert proj.components_.dtype == np.float32
    assert_allclose(proj.statistics_.gram, reference.statistics_.gram, rtol=1e-10)


def test_partial_fit_with_dask_adds_as_numpy_does():
    X, view_groups = lazy_views(4)
    X_np, groups_np = X.compute(), view_groups.compute()
    mixed = InvariantProjector(3).partial_fit(X_np[:200], view_groups=groups_np[:200])
    mixed.partial_fit(X[200:], view_groups=view_groups[200:])
    in_memory = InvariantProjector(3).partial_fit(X_np[:200], view_groups=groups_np[:200])
    in_memory.partial_fit(X_np[200:], view_groups=groups_np[200:])
    assert_same_fit(mixed, in_memory)


def test_classes_and_environments_pool_across_chunks():
    X, _ = lazy_views(4)
    rng = np.random.default_rng(0)
    y, environments = rng.integers(0, 3, 400), rng.integers(0, 2, 400)
    lazy_y, lazy_environments = da.from_array(y, chunks=150), da.from_array(environments, chunks=70)
    proj = InvariantProjector(3).fit(X, lazy_y, environments=lazy_environments)
    reference = InvariantProjector(3).fit(X.compute(), y, environments=environments)
    assert proj.intervention_source_ == "environments"
    assert_allclose(proj.nuisance_scatter_, reference.nuisance_scatter_, rtol=1e-10)
    assert_allclose(proj.components_, reference.components_, atol=1e-10)


def test_fixed_interventions_join_the_chunked_statistics():
    X, view_groups = lazy_views(3)
    extra = np.random.default_rng(1).standard_normal((6, 16))
    params = {"intervention_embeddings": extra, "intervention_view_groups": [0, 0, 1, 1, 2, 2]}
    proj = InvariantProjector(3, **params).fit(X, view_groups=view_groups)
    reference = InvariantProjector(3, **params).fit(X.compute(), view_groups=view_groups.compute())
    assert proj.intervention_source_ == "view_groups+intervention_embeddings"
    assert_same_fit(proj, reference)


# ------------------------------------------------------- bad input, state
def test_a_group_split_between_chunks_is_named():
    X, view_groups = lazy_views(3)  # chunks of 100 rows; shifting by one splits groups at both cuts
    X = X.rechunk({0: (99, 100, 101)})
    with pytest.raises(ValueError, match=r"view_groups: group 49 has rows in chunk 0 \(rows 0-98\) and "
                                         r"chunk 1 \(rows 99-198\) of X: every chunk must hold complete "
                                         r"view groups .* X.rechunk\(\{0: sizes\}\)"):
        InvariantProjector(3).fit(X, view_groups=view_groups)


def test_a_group_id_reused_in_distant_chunks_is_found():
    X, _ = lazy_views(20)  # 2000 rows in 20 chunks; the last row joins group 0 of chunk 0
    view_groups = np.arange(2000) // 2
    view_groups[-1] = 0
    with pytest.raises(ValueError, match=r"group 0 has rows in chunk 0 \(rows 0-99\) and chunk 19 "):
        InvariantProjector(3).fit(X, view_groups=da.from_array(view_groups, chunks=500))


def test_ids_growing_with_the_rows_need_no_id_lists(monkeypatch):
    from clip_invariance.invariance import _chunked as chunked

    def listed(block, index):
        raise AssertionError("the id lists were merged")

    monkeypatch.setattr(chunked, "_chunk_groups", listed)
    X, view_groups = lazy_views(3)
    InvariantProjector(3).fit(X, view_groups=view_groups)  # disjoint ranges: the small pass suffices
    interleaved = 3 * (np.arange(300) % 100 // 2) + np.arange(300) // 100  # ranges overlap
    with pytest.raises(AssertionError, match="the id lists were merged"):
        InvariantProjector(3).fit(X, view_groups=da.from_array(interleaved, chunks=100))


def test_complete_groups_with_interleaved_ids_are_accepted():
    X, _ = lazy_views(3)  # chunk c holds the groups 3 j + c: overlapping id ranges, no group split
    view_groups = (3 * (np.arange(300) % 100 // 2) + np.arange(300) // 100)
    proj = InvariantProjector(3).fit(X, view_groups=da.from_array(view_groups, chunks=100))
    assert_same_fit(proj, InvariantProjector(3).fit(X.compute(), view_groups=view_groups))
    assert proj.statistics_.group_dof == 150


def test_a_failed_partial_fit_leaves_the_projector_unchanged():
    X, view_groups = lazy_views(3)
    proj = InvariantProjector(3).partial_fit(X, view_groups=view_groups)
    before = dict(vars(proj))
    bad = X.rechunk({0: (99, 100, 101)})
    with pytest.raises(ValueError, match="group 49 has rows in chunk 0"):
        proj.partial_fit(bad, view_groups=view_groups)
    nan = da.where(da.arange(300)[:, None] == 150, np.nan, X)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):  # raised on a worker
        proj.partial_fit(nan, view_groups=view_groups)
    assert vars(proj).keys() == before.keys()
    assert all(vars(proj)[key] is value for key, value in before.items())


GROUPS = "the lazy view groups"


@pytest.mark.parametrize(
    "change, labels, message",
    [
        (lambda X: X.rechunk({1: 8}), {"view_groups": GROUPS},
         r"X is chunked along its columns \(2 column chunks\): every chunk must hold whole rows. "
         r"Rechunk with X.rechunk\(\{1: -1\}\)"),
        (lambda X: X[X[:, 0] > 0], {"view_groups": GROUPS},
         r"X has unknown chunk sizes along its rows: call X.compute_chunk_sizes\(\) first."),
        (lambda X: X[:, :, None], {"view_groups": GROUPS}, "X must be two-dimensional, got shape"),
        (lambda X: X.astype(str), {"view_groups": GROUPS}, "X must hold numbers, got dtype <U"),
        (lambda X: X, {"view_groups": da.arange(299)}, "view_groups has 299 entries but X has 300 rows."),
        (lambda X: X, {"view_groups": np.arange(299)}, "view_groups has 299 entries but X has 300 rows."),
        (lambda X: X, {"y": da.zeros(300) + 0.5}, "y looks continuous"),
        (lambda X: X, {"y": da.where(da.arange(300, chunks=100) == 150, np.nan, 0.0)},
         r"^y contains NaN or infinity, first in row 150 \(chunk 1, rows 100-199\)\.$"),
        (lambda X: X, {"y": da.where(da.arange(300, chunks=100) == 7, np.inf, 0.0),
                       "environments": da.zeros(300)},
         r"^y contains NaN or infinity, first in row 7 \(chunk 0, rows 0-99\)\.$"),
        (lambda X: da.where(da.arange(300)[:, None] == 150, np.nan, X), {"view_groups": GROUPS},
         r"^X contains NaN or infinity\. In chunk 1 of X \(rows 100-199\), first in row 150\.$"),
        (lambda X: da.where(da.arange(300)[:, None] == 299, np.inf, X), {"y": da.arange(300) % 2},
         r"^X contains NaN or infinity\. In chunk 2 of X \(rows 200-299\), first in row 299\.$"),
        (lambda X: X, {"view_groups": da.where(da.arange(300, chunks=100) == 42, np.nan,
                                               da.arange(300) // 2)},
         r"^view_groups contains NaN or infinity\. In chunk 0 of X \(rows 0-99\), first in row 42\.$"),
        (lambda X: X, {"environments": da.zeros(300)}, "environments were given without y"),
    ],
)
def test_bad_dask_input_is_named(change, labels, message):
    X, view_groups = lazy_views(3)
    labels = {name: view_groups if value is GROUPS else value for name, value in labels.items()}
    with pytest.raises((ValueError, TypeError), match=message):
        InvariantProjector(3).fit(change(X), **labels)


def test_features_must_match_the_fitted_projector():
    X, view_groups = lazy_views(2)
    proj = InvariantProjector(3).fit(X, view_groups=view_groups)
    with pytest.raises(ValueError, match="X has 15 features, but InvariantProjector is expecting 16"):
        proj.partial_fit(X[:, 1:], view_groups=view_groups)
    with pytest.raises(ValueError, match="X has 15 features, but InvariantProjector is expecting 16"):
        proj.transform(X[:, 1:])


# ------------------------------------------------------------ lazy output
CALLS = []


def counted_block(block_id=None):
    CALLS.append(block_id)
    return views_block(block_id, groups=50, d=16, k=3)


def counted_views(n_chunks=3):
    return da.map_blocks(counted_block, chunks=((100,) * n_chunks, (16,)), dtype=np.float64,
                         meta=np.empty((0, 0)))


def test_transform_is_lazy_and_equals_in_memory():
    X_np, view_groups = lazy_views(3)[0].compute(), np.arange(300) // 2
    proj = InvariantProjector(3).fit(X_np, view_groups=view_groups)
    X = counted_views()
    CALLS.clear()
    Z, back = proj.transform(X), proj.inverse_transform(proj.transform(X))
    assert CALLS == []  # nothing computed yet
    assert (Z.shape, Z.chunks, Z.dtype) == ((300, 3), ((100, 100, 100), (3,)), np.float64)
    assert back.chunks == ((100, 100, 100), (16,))
    assert_allclose(Z.compute(), proj.transform(X_np), rtol=1e-12)
    assert_allclose(back.compute(), proj.inverse_transform(proj.transform(X_np)), rtol=1e-12)
    assert proj.transform(X.astype(np.float32)).dtype == np.float32


def test_lazy_results_use_the_projector_as_it_was():
    X, view_groups = lazy_views(2)
    proj = InvariantProjector(3).fit(X, view_groups=view_groups)
    Z = proj.transform(X)
    expected = proj.transform(X.compute())
    proj.set_params(n_components=5).fit(X, view_groups=view_groups)  # refitted: Z keeps the old one
    assert_allclose(Z.compute(), expected)


def test_errors_in_chunks_are_raised_on_compute():
    def broken(block_id=None):
        raise RuntimeError(f"chunk {block_id[0]} read")

    proj = InvariantProjector(3).fit(*lazy_views(2))
    X = da.map_blocks(broken, chunks=((100, 100), (16,)), dtype=np.float64, meta=np.empty((0, 0)))
    Z = proj.transform(X)
    with pytest.raises(RuntimeError, match="chunk 0 read|chunk 1 read"):
        Z.compute()
    nan = da.where(da.arange(200)[:, None] == 3, np.inf, da.ones((200, 16), chunks=(100, 16)))
    message = (r"^Input X contains infinity or a value too large for dtype\('float64'\)\. "
               r"In chunk 0 of X \(rows 0-99\), first in row 3\.$")
    with pytest.raises(ValueError, match=message):
        proj.transform(nan).compute()
    late = da.where(da.arange(200)[:, None] == 150, np.nan, da.ones((200, 16), chunks=(100, 16)))
    with pytest.raises(ValueError, match=r"In chunk 1 of X \(rows 100-199\), first in row 150\.$"):
        proj.transform(late).compute()


@pytest.mark.parametrize("n_classes", [2, 4])
def test_zero_shot_predictions_are_lazy(n_classes):
    X_np, view_groups = lazy_views(3)[0].compute(), np.arange(300) // 2
    prompts = planted_basis(16)[:, :n_classes].T
    classes = np.array(["cat", "dog", "owl", "yak"][:n_classes])
    clf = ZeroShotInvariantClassifier(prompts, classes=classes, projector=InvariantProjector(3))
    clf.fit(X_np, view_groups=view_groups)
    X = counted_views()
    CALLS.clear()
    lazy = {method: getattr(clf, method)(X)
            for method in ("predict", "predict_proba", "predict_log_proba", "decision_function")}
    assert CALLS == []
    for method, result in lazy.items():
        expected = getattr(clf, method)(X_np)
        assert result.shape == expected.shape and result.dtype == expected.dtype
        assert result.chunks[0] == (100, 100, 100)
        if method == "predict":
            assert_array_equal(result.compute(), expected)
        else:
            assert_allclose(result.compute(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="X has 15 features, but ZeroShotInvariantClassifier is expecting"):
        clf.predict(X[:, 1:])
    nan = da.where(da.arange(300)[:, None] == 222, np.nan, X)
    message = r"^Input X contains NaN\.(.|\n)*In chunk 2 of X \(rows 200-299\), first in row 222\.$"
    with pytest.raises(ValueError, match=message):
        clf.predict(nan).compute()
    with pytest.raises(NotFittedError):
        ZeroShotInvariantClassifier(prompts).predict_proba(X)
    with pytest.raises(NotFittedError):
        InvariantProjector(3).transform(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_front_door_predictions_are_lazy(dtype):
    from clip_invariance import FrontDoorEnsembleClassifier

    X, _ = lazy_views(3, dtype=dtype)
    X_np = X.compute()
    prompts = np.stack([planted_basis(16)[:, :4].T, planted_basis(16)[:, 1:5].T]).astype(dtype)
    y = np.array(list("abcd"))[np.arange(len(X_np)) % 4]
    clf = FrontDoorEnsembleClassifier(prompts, classes=["a", "b", "c", "d"], max_iter=0).fit(X_np, y)
    lazy = {method: getattr(clf, method)(X) for method in ("predict", "predict_proba", "predict_uncertainty")}
    for method, result in lazy.items():
        expected = getattr(clf, method)(X_np)
        assert result.shape == expected.shape and result.chunks[0] == (100, 100, 100)
        computed = result.compute()
        assert computed.dtype == expected.dtype
        if method == "predict":
            assert_array_equal(computed, expected)
        else:
            assert_allclose(computed, expected, rtol=1e-12)
    with pytest.raises(NotFittedError):
        FrontDoorEnsembleClassifier(prompts, max_iter=0).predict(X)


def test_in_memory_fit_and_transform_never_import_dask():
    # Not import lightness (tests/test_layout.py checks that): numpy in, numpy out, no dask on the way.
    code = (
        "import sys, numpy as np, clip_invariance, clip_invariance._utils;"
        "from clip_invariance import InvariantProjector;"
        "X = np.random.RandomState(0).standard_normal((20, 4));"
        "InvariantProjector(2).fit(X, view_groups=np.arange(20) // 2).transform(X);"
        "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------- on a memory-limited cluster
# 2 worker processes of 300 MB each: an idle worker holds about 170 MB here (numpy, scipy,
# scikit-learn), and one task about 30 MB more. The data (64 chunks of 5000 x 128 float64,
# 328 MB) is larger than a worker's memory.
CLUSTER_CHUNKS, CLUSTER_GROUPS, CLUSTER_D, CLUSTER_K = 64, 2500, 128, 8


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("dask.distributed", reason="the cluster tests need dask.distributed")
    import cloudpickle

    # Workers cannot import this test module: send its block generator by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="300MB",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_cluster_fit_matches_memory_and_client_memory_stays_flat(client):
    psutil = pytest.importorskip("psutil")
    X, view_groups = lazy_views(CLUSTER_CHUNKS, groups=CLUSTER_GROUPS, d=CLUSTER_D, k=CLUSTER_K)
    assert X.nbytes > 300e6
    process = psutil.Process()
    before = process.memory_info().rss
    proj = InvariantProjector(CLUSTER_K).fit(X, view_groups=view_groups)
    grown = process.memory_info().rss - before
    assert grown < 64 * 2**20, f"the client grew by {grown / 2**20:.0f} MiB for {X.nbytes / 2**20:.0f} MiB"
    assert proj.n_samples_seen_ == X.shape[0]
    assert proj.statistics_.gram.shape == (CLUSTER_D, CLUSTER_D)  # all that came back: O(D^2)

    # The same blocks, one at a time, in this process; one BLAS thread as on a worker (two cores
    # shared with other jobs: more threads made this 30 times slower here).
    with dask.config.set(scheduler="sync"), threadpool_limits(1):
        reference = partial_fit_blocks(InvariantProjector(CLUSTER_K), X, view_groups=view_groups)
    assert_same_fit(proj, reference, rtol=1e-9)
    assert subspace_overlap(proj.components_.T, reference.components_.T) > 0.999
    assert subspace_overlap(proj.components_.T, planted_basis(CLUSTER_D)[:, :CLUSTER_K]) > 0.99


def test_cluster_reports_a_split_group_and_predicts_lazily(client):
    X, view_groups = lazy_views(4, groups=50, d=16, k=3)
    with pytest.raises(ValueError, match=r"group 49 has rows in chunk 0 \(rows 0-98\)"):
        InvariantProjector(3).fit(X.rechunk({0: (99, 100, 101, 100)}), view_groups=view_groups)
    proj = InvariantProjector(3).fit(X, view_groups=view_groups)
    assert_allclose(proj.transform(X).compute(), proj.transform(X.compute()), rtol=1e-12)
