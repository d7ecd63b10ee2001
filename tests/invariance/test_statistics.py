"""InterventionStatistics: blocks add up to the concatenation, brute-force references, scale, pickling."""

import pickle
import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import clip_invariance.invariance._statistics as statistics_module
from clip_invariance.invariance import InterventionStatistics
from clip_invariance.invariance._statistics import check_labels


def _blocks(dtype=np.float64, seed=0):
    """Three blocks of unequal size; view group ids repeat across blocks but are local to each."""
    rng = np.random.RandomState(seed)
    blocks = []
    for n in (23, 7, 31):
        X = (rng.standard_normal((n, 6)) + 2).astype(dtype)
        view_groups = rng.randint(0, 6, size=n)  # sizes 1..many, unsorted
        y = rng.choice(["cat", "dog", "cow"], size=n)
        environments = rng.randint(0, 3, size=n)
        blocks.append((X, view_groups, y, environments))
    return blocks


def _reference(blocks):
    """Brute force over the concatenation: groups are (block, id), cells are pooled by label."""
    X = np.concatenate([b[0] for b in blocks]).astype(np.float64)
    d = X.shape[1]
    scatter, dof = np.zeros((d, d)), 0
    for Xb, view_groups, _, _ in blocks:
        for g in np.unique(view_groups):
            rows = Xb[view_groups == g].astype(np.float64)
            deviations = rows - rows.mean(axis=0)
            scatter += deviations.T @ deviations
            dof += len(rows) - 1
    y = np.concatenate([b[2] for b in blocks])
    environments = np.concatenate([b[3] for b in blocks])
    cells = {}
    for key in sorted(set(zip(y.tolist(), environments.tolist()))):
        rows = X[(y == key[0]) & (environments == key[1])]
        cells[key] = (rows.sum(axis=0), len(rows))
    return X, scatter, dof, cells


def _from_blocks(blocks):
    return sum(
        InterventionStatistics.from_block(X, view_groups=g, y=y, environments=e)
        for X, g, y, e in blocks
    )


def test_blocks_add_up_to_the_concatenation():
    blocks = _blocks()
    total = _from_blocks(blocks)
    X, scatter, dof, cells = _reference(blocks)
    assert total.n_samples == len(X) and total.exponent == 0
    assert_allclose(total.gram, X.T @ X, rtol=1e-12)
    assert_allclose(total.group_scatter, scatter, rtol=1e-10, atol=1e-12)
    assert total.group_dof == dof
    assert set(total.cell_sums) == set(cells)
    for key, (row_sum, count) in cells.items():
        assert_allclose(total.cell_sums[key], row_sum, rtol=1e-12)
        assert total.cell_counts[key] == count
    # a + b is the same sum as sum([...]) in another order.
    a, b, c = (InterventionStatistics.from_block(X, view_groups=g, y=y, environments=e)
               for X, g, y, e in blocks)
    assert_allclose((c + a + b).gram, total.gram, rtol=1e-12)
    assert (c + a + b).cell_counts == total.cell_counts


def test_derived_nuisance_scatters_match_brute_force():
    blocks = _blocks()
    total = _from_blocks(blocks)
    X, scatter, dof, cells = _reference(blocks)
    assert_allclose(total.second_moment(), X.T @ X / len(X), rtol=1e-12)
    assert_allclose(total.group_nuisance(), 2 * scatter / dof, rtol=1e-10)

    # Environments: class-conditional environment means around their class mean.
    expected, env_dof = np.zeros((6, 6)), 0
    for label in ("cat", "cow", "dog"):
        means = np.array([s / n for (lab, _), (s, n) in cells.items() if lab == label])
        deviations = means - means.mean(axis=0)
        expected += deviations.T @ deviations
        env_dof += len(means) - 1
    assert_allclose(total.environment_nuisance(), 2 * expected / env_dof, rtol=1e-10)

    # Labels alone: the within-class scatter, pooled over blocks by label.
    labels_only = sum(InterventionStatistics.from_block(X, y=y) for X, _, y, _ in blocks)
    y = np.concatenate([b[2] for b in blocks])
    within = sum(
        (X[y == c] - X[y == c].mean(0)).T @ (X[y == c] - X[y == c].mean(0)) for c in np.unique(y)
    )
    assert_allclose(labels_only.label_nuisance(), 2 * within / (len(X) - 3), rtol=1e-8)


def _all_pairs_scatter(X, view_groups):
    """Average over view_groups' pairs, weighted as the projector documents: 2 W / dof."""
    total, dof = np.zeros((X.shape[1],) * 2), 0
    for g in np.unique(view_groups):
        rows = X[view_groups == g]
        n = len(rows)
        for i in range(n):
            for j in range(i + 1, n):
                diff = rows[i] - rows[j]
                total += np.outer(diff, diff) / n  # pair scatter * (n-1)/2 / C(n,2)
        dof += n - 1
    return 2 * total / dof


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_helmert_blocks_match_all_pairs(dtype, monkeypatch):
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", 7)  # force several blocks
    rng = np.random.RandomState(0)
    view_groups = rng.randint(0, 15, size=60)  # sizes 1..many, unsorted
    X = (rng.standard_normal((60, 5)) + 3).astype(dtype)
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    X64 = X.astype(np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert stats.gram.dtype == np.float64
    assert_allclose(stats.second_moment(), X64.T @ X64 / len(X), rtol=tol)
    assert_allclose(stats.group_nuisance(), _all_pairs_scatter(X64, view_groups), rtol=tol)


def _brute_force_moments(X, view_groups):
    X = X.astype(np.float64)
    scatter = np.zeros((X.shape[1],) * 2)
    for g in np.unique(view_groups):
        deviations = X[view_groups == g] - X[view_groups == g].mean(axis=0)
        scatter += deviations.T @ deviations
    return X.T @ X, scatter


@pytest.mark.parametrize("layout", ["stacked", "repeated", "shuffled", "unequal", "with singletons"])
@pytest.mark.parametrize("block_rows", [6, 16384])
def test_every_layout_gives_the_exact_moments(layout, block_rows, monkeypatch):
    # Stacked (row i and i + n/V: views, strided reads), repeated (consecutive rows), any order (gathers),
    # groups of unequal sizes (rows scaled by 1/sqrt(n_g)), singletons (their rows count in the gram only).
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", block_rows)
    rng = np.random.RandomState(1)
    view_groups = {
        "stacked": np.tile(np.arange(10), 4),
        "repeated": np.repeat(np.arange(10), 4),
        "shuffled": rng.permutation(np.repeat(np.arange(10), 4)),
        "unequal": np.repeat(np.arange(10), [2, 3, 4, 5, 6, 2, 3, 7, 4, 4]),
        "with singletons": rng.permutation(np.repeat(np.arange(13), [1] * 3 + [3] * 5 + [2] * 5 + [7] * 0)),
    }[layout]
    X = rng.standard_normal((len(view_groups), 5)) + 3
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(stats.gram, gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, scatter, rtol=1e-10, atol=1e-12)
    assert stats.group_dof == len(X) - len(np.unique(view_groups))


def test_float32_scatter_of_close_views_keeps_its_digits():
    # CLIP views of one image are close: W is small next to X^T X. The Helmert contrasts form W
    # from differences, so float32 products keep W to float32 precision relative to W itself
    # (X^T X - sum s s^T / n would lose the digits W shares with the gram: a 25% error here).
    rng = np.random.RandomState(2)
    content = rng.standard_normal((2000, 16)) + 5
    X = np.concatenate([content + 1e-2 * rng.standard_normal(content.shape) for _ in range(2)])
    view_groups = np.tile(np.arange(2000), 2)
    X32 = X.astype(np.float32)
    stats = InterventionStatistics.from_block(X32, view_groups=view_groups)
    _, scatter = _brute_force_moments(X32, view_groups)
    assert np.linalg.norm(stats.group_scatter - scatter) < 1e-4 * np.linalg.norm(scatter)


def test_pickle_round_trip():
    stats = _from_blocks(_blocks())
    clone = pickle.loads(pickle.dumps(stats))
    for name in ("n_samples", "group_dof", "exponent", "cell_counts"):
        assert getattr(clone, name) == getattr(stats, name)
    assert_array_equal(clone.gram, stats.gram)
    assert_array_equal(clone.group_scatter, stats.group_scatter)
    assert clone.cell_sums.keys() == stats.cell_sums.keys()
    for key, value in stats.cell_sums.items():
        assert_array_equal(clone.cell_sums[key], value)


@pytest.mark.parametrize(
    "dtype, factor",
    [(np.float32, 1e30), (np.float32, 1e-30), (np.float64, 1e200), (np.float64, 1e-200)],
)
def test_out_of_range_blocks_are_rescaled_exactly(dtype, factor):
    X, view_groups, y, _ = _blocks()[0]
    X = X.astype(dtype)
    base = InterventionStatistics.from_block(X, view_groups=view_groups, y=y)
    scaled = InterventionStatistics.from_block(X * dtype(factor), view_groups=view_groups, y=y)
    assert base.exponent == 0 and scaled.exponent != 0
    # Up to the power of two, the same numbers: the rounding of X * factor is all that differs.
    shift = scaled.exponent + np.log2(1 / factor)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert_allclose(scaled.gram * 4.0**shift, base.gram, rtol=tol)
    assert_allclose(scaled.group_nuisance() * 4.0**shift, base.group_nuisance(), rtol=tol * 10)
    for key, total in base.cell_sums.items():
        assert_allclose(scaled.cell_sums[key] * 2.0**shift, total, rtol=tol)
    if dtype == np.float32:  # the float64 sums hold float32's whole range in X's units
        assert_allclose(scaled.unscaled(scaled.gram), base.gram * factor**2, rtol=1e-6)


def test_blocks_of_different_scale_add_at_the_larger_exponent():
    X, view_groups, _, _ = _blocks()[0]
    small = InterventionStatistics.from_block(X * 1e-200, view_groups=view_groups)
    large = InterventionStatistics.from_block(X * 1e200, view_groups=view_groups)
    zeros = InterventionStatistics.from_block(np.zeros_like(X), view_groups=view_groups)
    both = small + large
    assert both.exponent == large.exponent
    assert_allclose(both.gram, large.gram, rtol=1e-15)  # the small block is below round-off
    # An all-zero block has no scale of its own: it does not flush the small one to zero.
    assert (small + zeros).exponent == small.exponent
    assert_allclose((zeros + small).gram, small.gram)
    assert (zeros + small).n_samples == 2 * len(X)


def test_all_zero_block_stays_zero():
    stats = InterventionStatistics.from_block(np.zeros((4, 3), dtype=np.float32))
    assert stats.exponent == 0 and not np.any(stats.gram)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda X: InterventionStatistics.from_block(X[0]), ValueError, "two-dimensional"),
        (lambda X: InterventionStatistics.from_block(X, environments=np.zeros(4)), ValueError,
         "environments were given without y"),
        (lambda X: InterventionStatistics.from_block(X, view_groups=[0, "a", None, 1]), TypeError,
         r"view_groups mixes values .* \(int, str, NoneType\)"),
        (lambda X: InterventionStatistics.from_block(X, y=[0, 1, 2]), ValueError,
         "y has 3 entries but X has 4 rows"),
        (lambda X: InterventionStatistics.from_block(X) + InterventionStatistics.from_block(X[:, :2]),
         ValueError, "statistics of 2 features to statistics of 3"),
        (lambda X: InterventionStatistics.from_block(X).group_nuisance(), ValueError, "without view_groups"),
        (lambda X: InterventionStatistics.from_block(X, view_groups=np.arange(4)).group_nuisance(),
         ValueError, "singleton"),
        (lambda X: InterventionStatistics.from_block(X).label_nuisance(), ValueError, "without y"),
        (lambda X: InterventionStatistics.from_block(X * np.inf), ValueError, "NaN or infinity"),
    ],
)
def test_errors(call, error, message):
    X = np.random.RandomState(0).standard_normal((4, 3))
    with pytest.raises(error, match=message):
        call(X)


def test_check_labels_flattens_columns_and_rejects_bad_values():
    assert_array_equal(check_labels([[1], [2]], 2, "y"), [1, 2])
    with pytest.raises(ValueError, match="y must be one-dimensional"):
        check_labels(np.zeros((2, 2)), 2, "y")
    with pytest.raises(ValueError, match="environments contains NaN"):
        check_labels([0.0, np.nan], 2, "environments")
    with pytest.raises(TypeError, match="view_groups must hold integers or strings"):
        check_labels(np.array([1 + 2j, 3j]), 2, "view_groups")


def test_the_saved_state_stacks_the_cells_and_restores_the_dicts():
    # skops stores dict keys as JSON strings: the (label, environment) keys travel as a list.
    X = np.arange(12.0).reshape(6, 2)
    statistics = InterventionStatistics.from_block(X, y=["b", "a", "b", "a", "b", "a"],
                                                   environments=[0, 0, 1, 1, 1, 1])
    state = statistics.__getstate__()
    assert state["cell_keys"] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    np.testing.assert_array_equal(state["cell_sums"], [[2.0, 3.0], [16.0, 18.0], [0.0, 1.0], [12.0, 14.0]])
    np.testing.assert_array_equal(state["cell_counts"], [1, 2, 1, 2])
    twin = InterventionStatistics.__new__(InterventionStatistics)
    twin.__setstate__(state)
    assert list(twin.cell_sums) == list(statistics.cell_sums) and twin.cell_counts == statistics.cell_counts
    assert all(np.array_equal(twin.cell_sums[key], statistics.cell_sums[key]) for key in statistics.cell_sums)
    np.testing.assert_array_equal(twin.label_nuisance(), statistics.label_nuisance())
    # A state saved before the cells were stacked (dicts) still loads.
    old = InterventionStatistics.__new__(InterventionStatistics)
    old.__setstate__(dict(vars(statistics)))
    assert old.cell_counts == statistics.cell_counts
    np.testing.assert_array_equal(old.environment_nuisance(), statistics.environment_nuisance())
    # Without y: no cells, an empty (0, D) stack.
    empty = InterventionStatistics.from_block(X).__getstate__()
    assert empty["cell_keys"] == [] and empty["cell_sums"].shape == (0, 2)


def _stacked(n_contents, n_views, d=7, dtype=np.float64, seed=3):
    rng = np.random.RandomState(seed)
    X = (rng.standard_normal((n_contents * n_views, d)) + 2).astype(dtype)
    return X, np.tile(rng.permutation(n_contents), n_views)  # stack_views: the same ids in every block


@pytest.mark.parametrize("n_views", [2, 3, 8])
@pytest.mark.parametrize("block_rows", [5, 64, 16384])
def test_stacked_views_are_rotated_in_one_product_per_tile(n_views, block_rows, monkeypatch):
    # stack_views' layout (V blocks of the same ids): the Helmert rotation of a tile is one product.
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", block_rows)
    X, view_groups = _stacked(50, n_views)
    order = np.argsort(view_groups, kind="stable")
    sizes = np.bincount(view_groups)
    assert statistics_module._stacked_views(X, order, sizes) == n_views
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(stats.gram, gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, scatter, rtol=1e-10, atol=1e-12)
    assert stats.group_dof == len(X) - 50
    # The general path (gathered members, Helmert by recursion) gives the same numbers.
    monkeypatch.setattr(statistics_module, "_stacked_views", lambda *args: 0)
    general = InterventionStatistics.from_block(X, view_groups=view_groups)
    assert_allclose(stats.gram, general.gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, general.group_scatter, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "view_groups",
    [np.repeat(np.arange(10), 3),  # groups of adjacent rows
     np.r_[np.tile(np.arange(10), 2), np.arange(10)[::-1]],  # a block in another order
     np.tile(np.arange(10), 3)[:-1],  # a group short of a view
     np.r_[np.tile(np.arange(5), 2), np.tile(np.arange(5, 10), 2)]],  # pairs, not two blocks
    ids=["repeated", "reordered block", "short group", "two stacks"],
)
def test_only_the_stacked_layout_takes_the_stacked_path(view_groups):
    X = np.random.RandomState(0).standard_normal((len(view_groups), 4))
    order = np.argsort(view_groups, kind="stable")
    assert statistics_module._stacked_views(X, order, np.bincount(view_groups)) == 0
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(stats.gram, gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, scatter, rtol=1e-10, atol=1e-12)


def test_stacked_rows_in_fortran_order_take_the_general_path():
    X, view_groups = _stacked(30, 3)
    order, sizes = np.argsort(view_groups, kind="stable"), np.bincount(view_groups)
    assert statistics_module._stacked_views(X, order, sizes) == 3
    assert statistics_module._stacked_views(np.asfortranarray(X), order, sizes) == 0
    stats = InterventionStatistics.from_block(np.asfortranarray(X), view_groups=view_groups)
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(stats.gram, gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, scatter, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", ["stacked", "shuffled"])
@pytest.mark.parametrize("block_rows", [6, 256, 16384])
def test_float32_products_give_the_float64_moments(layout, block_rows, monkeypatch):
    # float32 rows: every tile's products are accumulated in float32 by BLAS (as PCA's X^T X is),
    # the tiles' sums in float64. Float32 precision relative to the matrices, whatever the tiling.
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", block_rows)
    X, view_groups = _stacked(400, 4, d=9, dtype=np.float32)
    if layout == "shuffled":
        shuffle = np.random.RandomState(0).permutation(len(X))
        X, view_groups = X[shuffle], view_groups[shuffle]
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    gram, scatter = _brute_force_moments(X, view_groups)
    assert stats.gram.dtype == stats.group_scatter.dtype == np.float64
    assert np.linalg.norm(stats.gram - gram) < 1e-6 * np.linalg.norm(gram)
    assert np.linalg.norm(stats.group_scatter - scatter) < 1e-6 * np.linalg.norm(scatter)
    assert_array_equal(stats.gram, stats.gram.T)
    assert_array_equal(stats.group_scatter, stats.group_scatter.T)


def test_equal_sized_groups_of_many_sizes_keep_memory_bounded(monkeypatch):
    # Tiles of equal-sized groups of many sizes (here one group a tile): a few sizes keep their own
    # unscaled sum, the others share the scaled one, so memory stays O(D^2) and the moments exact.
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", 2)
    created = []

    class Counted(statistics_module._SymmetricSum):
        def __init__(self, *args):
            super().__init__(*args)
            created.append(self)

    monkeypatch.setattr(statistics_module, "_SymmetricSum", Counted)
    sizes = np.repeat(np.arange(2, 12), 3)  # three groups of each size 2..11
    view_groups = np.repeat(np.arange(len(sizes)), sizes)
    X = np.random.RandomState(0).standard_normal((len(view_groups), 5)) + 3
    stats = InterventionStatistics.from_block(X, view_groups=view_groups)
    assert len(created) == 1 + statistics_module._MAX_SIZE_SUMS + 1  # W, kept sizes, the shared sum
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(stats.gram, gram, rtol=1e-12)
    assert_allclose(stats.group_scatter, scatter, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", ["stacked", "repeated", "shuffled", "unequal", "with singletons"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_shared_out_to_threads_give_the_same_moments(layout, dtype, monkeypatch):
    # Several workers (threads, BLAS on one thread each), each with sums of its own, added in a
    # fixed order: the moments of the serial pass, and the same from one run to the next.
    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", 24)  # tiles of 8 rows for 3 workers
    rng = np.random.RandomState(4)
    view_groups = {
        "stacked": np.tile(np.arange(40), 4),
        "repeated": np.repeat(np.arange(40), 4),
        "shuffled": rng.permutation(np.repeat(np.arange(40), 4)),
        "unequal": np.repeat(np.arange(40), rng.randint(2, 9, size=40)),
        "with singletons": rng.permutation(np.repeat(np.arange(60), [1] * 20 + [3] * 20 + [2] * 20)),
    }[layout]
    X = (rng.standard_normal((len(view_groups), 6)) + 3).astype(dtype)
    serial = InterventionStatistics.from_block(X, view_groups=view_groups)
    monkeypatch.setattr(statistics_module, "_row_workers", lambda X: 3)
    ran = []
    original = statistics_module._Moments

    class Recorded(original):
        def __init__(self, *args):
            super().__init__(*args)
            ran.append(threading.get_ident())

    monkeypatch.setattr(statistics_module, "_Moments", Recorded)
    threaded = InterventionStatistics.from_block(X, view_groups=view_groups)
    assert len(ran) == 3  # three workers' sums
    again = InterventionStatistics.from_block(X, view_groups=view_groups)
    assert_array_equal(again.gram, threaded.gram)
    assert_array_equal(again.group_scatter, threaded.group_scatter)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert_allclose(threaded.gram, serial.gram, rtol=rtol)
    assert_allclose(threaded.group_scatter, serial.group_scatter, rtol=rtol * 100, atol=rtol * 1e-2)
    assert threaded.group_dof == serial.group_dof
    gram, scatter = _brute_force_moments(X, view_groups)
    assert_allclose(threaded.gram, gram, rtol=rtol)
    assert_allclose(threaded.group_scatter, scatter, rtol=rtol * 100, atol=rtol * 1e-2)


def test_a_worker_error_reaches_the_caller_and_threads_restore_blas(monkeypatch):
    from clip_invariance.invariance._threads import blas_threads

    monkeypatch.setattr(statistics_module, "_BLOCK_ROWS", 8)
    monkeypatch.setattr(statistics_module, "_row_workers", lambda X: 2)
    X, view_groups = _stacked(40, 2)
    before = blas_threads()

    def broken(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(statistics_module, "_stacked_tile", broken)
    with pytest.raises(MemoryError, match="no room"):
        InterventionStatistics.from_block(X, view_groups=view_groups)
    assert blas_threads() == before
