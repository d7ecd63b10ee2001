"""The rows and columns layouts of views, and the conversions between them."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from clip_invariance.views import (
    columns_to_rows,
    first_views,
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
