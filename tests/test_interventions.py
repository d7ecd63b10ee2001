"""stack_views: the (X, groups) layout of interventional views."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from clip_invariance.interventions import stack_views


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
