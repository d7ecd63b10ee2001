"""Principal angles and subspace overlap."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from clip_invariance.invariance import principal_angles, subspace_overlap


def test_known_angles_and_basis_invariance():
    theta = 0.3
    A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    B = np.array([[1.0, 0.0], [0.0, np.cos(theta)], [0.0, np.sin(theta)]])
    assert_allclose(principal_angles(A, B), [0.0, theta], atol=1e-12)
    # Any other basis of the same spans gives the same angles.
    mix = np.array([[2.0, 1.0], [0.5, -3.0]])
    assert_allclose(principal_angles(A @ mix, B @ mix.T), [0.0, theta], atol=1e-12)
    assert subspace_overlap(A, B) == pytest.approx((1 + np.cos(theta) ** 2) / 2)


def test_overlap_bounds():
    rng = np.random.RandomState(0)
    Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert subspace_overlap(Q[:, :3], Q[:, :3]) == pytest.approx(1.0)
    assert subspace_overlap(Q[:, :3], Q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)
    assert subspace_overlap(Q[:, :2], Q[:, :5]) == pytest.approx(1.0)  # nested


def test_shape_errors():
    with pytest.raises(ValueError, match="same space"):
        principal_angles(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="2-D bases"):
        principal_angles(np.ones(3), np.eye(3))
