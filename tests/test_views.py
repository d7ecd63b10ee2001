"""The rows and columns layouts of views, and the conversions between them."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from clip_invariance.views import (
    columns_to_rows,
    first_views,
    interleave_views,
    rows_to_columns,
    split_columns,
    stack_views,
)


def test_pairs_are_the_papers_layout():
    Z = np.arange(6.0).reshape(3, 2)
    X, groups = stack_views(Z, Z + 10)
    assert_array_equal(X, np.vstack([Z, Z + 10]))
    assert_array_equal(groups, np.r_[np.arange(3), np.arange(3)])


def test_many_views_and_3d_input_agree():
    views = np.random.RandomState(0).standard_normal((4, 5, 3))
    X3, g3 = stack_views(views)
    Xn, gn = stack_views(*views)
    assert_array_equal(X3, Xn)
    assert_array_equal(g3, gn)
    assert X3.shape == (20, 3) and np.bincount(g3).tolist() == [4] * 5


def test_dtype_is_kept():
    X, _ = stack_views(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    assert X.dtype == np.float32


@pytest.mark.parametrize(
    "views, message",
    [
        ((np.zeros((3, 2)),), "at least two views"),
        ((np.zeros((3, 2)), np.zeros((4, 2))), "same shape"),
        ((np.zeros((3, 2)), np.full((3, 2), np.nan)), "NaN"),
    ],
)
def test_errors(views, message):
    with pytest.raises(ValueError, match=message):
        stack_views(*views)


def test_rows_to_columns_gives_per_image_blocks():
    X = np.arange(12.0).reshape(6, 2)  # 3 images x 2 views, view-major
    out = rows_to_columns(X, [0, 1, 2, 0, 1, 2])
    assert_array_equal(out, [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]])
    with pytest.raises(ValueError, match="same number of views"):
        rows_to_columns(X, [0, 0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="one view group id per row"):
        rows_to_columns(X, [0, 1])


def test_the_two_layouts_round_trip():
    rng = np.random.RandomState(0)
    columns = rng.standard_normal((5, 3 * 4))
    X_rows, view_groups = columns_to_rows(columns, 3)
    assert X_rows.shape == (15, 4)
    assert_array_equal(rows_to_columns(X_rows, view_groups), columns)
    # A shuffled rows layout comes back in group order, views in order of appearance.
    shuffled = np.argsort(view_groups, kind="stable")
    assert_array_equal(rows_to_columns(X_rows[shuffled], view_groups[shuffled]), columns)
    assert_array_equal(split_columns(columns, 3)[2], columns[:, 8:])


def test_split_columns_checks_the_width():
    with pytest.raises(ValueError, match="not a multiple of n_views=3"):
        split_columns(np.zeros((2, 4)), 3)
    with pytest.raises(ValueError, match="2-D"):
        split_columns(np.zeros(4), 2)


def test_first_views_marks_the_originals():
    assert first_views([2, 0, 1, 2, 0, 1]).tolist() == [True, True, True, False, False, False]
    assert first_views(np.array(["b", "a", "b"])).tolist() == [True, True, False]


def test_interleave_views_puts_each_content_before_its_views():
    rng = np.random.default_rng(0)
    X, views = rng.standard_normal((4, 3)), rng.standard_normal((4, 2, 3))
    rows, view_groups = interleave_views(X, views)
    assert rows.shape == (12, 3) and view_groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in range(4):
        np.testing.assert_array_equal(rows[3 * i], X[i])
        np.testing.assert_array_equal(rows[3 * i + 1: 3 * i + 3], views[i])
    # The same rows and groups as stack_views, in another order: the same statistics.
    stacked, groups = stack_views(X, views[:, 0], views[:, 1])
    order = np.lexsort((np.tile(np.arange(3), 4), view_groups))
    assert sorted(map(tuple, rows[order])) == sorted(map(tuple, stacked))
    assert sorted(groups.tolist()) == view_groups.tolist()


@pytest.mark.parametrize(("views", "message"), [
    (np.zeros((4, 3)), r"views of shape \(n, n_augmented, D\); got \(4, 3\) and \(4, 3\)"),
    (np.zeros((5, 2, 3)), r"views \(5, 2, 3\) do not match X \(4, 3\): expected \(4, n_augmented, 3\)"),
    (np.zeros((4, 2, 2)), r"views \(4, 2, 2\) do not match X \(4, 3\)"),
])
def test_interleave_views_names_mismatched_shapes(views, message):
    with pytest.raises(ValueError, match=message):
        interleave_views(np.zeros((4, 3)), views)


def test_interleave_views_of_dask_arrays_is_lazy_and_fits_as_in_memory():
    da = pytest.importorskip("dask.array")
    from clip_invariance import InvariantProjector

    rng = np.random.default_rng(1)
    content = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 12))
    X = content + 0.5 * rng.standard_normal((300, 12))
    views = content[:, None] + 0.5 * rng.standard_normal((300, 2, 12))
    rows, view_groups = interleave_views(da.from_array(X, chunks=(70, 12)), da.from_array(views, chunks=50))
    expected_rows, expected_groups = interleave_views(X, views)
    assert all(size % 3 == 0 for size in rows.chunks[0])  # every cut falls between contents
    assert rows.chunks[0] == view_groups.chunks[0]
    np.testing.assert_array_equal(rows.compute(), expected_rows)
    np.testing.assert_array_equal(view_groups.compute(), expected_groups)
    lazy = InvariantProjector(3).fit(rows, view_groups=view_groups)
    eager = InvariantProjector(3).fit(expected_rows, view_groups=expected_groups)
    np.testing.assert_allclose(lazy.eigenvalues_, eager.eigenvalues_, rtol=1e-10)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_interleave_views_of_a_store_without_views_says_so(lazy):
    # A store saved without views loads with views=None.
    X = np.zeros((4, 3))
    if lazy:
        X = pytest.importorskip("dask.array").from_array(X, chunks=2)
    message = (r"interleave_views needs the augmented views, got views=None: the store was saved without "
               r"views \(save_embeddings\(\.\.\., views=\)\)")
    with pytest.raises(ValueError, match=message):
        interleave_views(X, None)


def test_interleave_views_takes_lists_next_to_a_dask_array():
    da = pytest.importorskip("dask.array")
    X, views = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(2, 2, 3)
    rows, groups = interleave_views(da.from_array(X, chunks=1), views.tolist())
    expected_rows, expected_groups = interleave_views(X, views)
    np.testing.assert_array_equal(rows.compute(), expected_rows)
    np.testing.assert_array_equal(groups.compute(), expected_groups)
