"""The synthetic causal generator follows its documented model."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from clip_invariance.datasets import make_invariant_embeddings


def test_shapes_and_reproducibility():
    a = make_invariant_embeddings(n_samples=400, n_augmented=2, random_state=3)
    b = make_invariant_embeddings(n_samples=400, n_augmented=2, random_state=3)
    assert a.X.shape == (400, 64) and a.X.dtype == np.float32
    assert a.X_views.shape == (2, 400, 64)
    assert a.text_interventions.shape == (10 * 12, 64)
    assert_array_equal(a.X, b.X)
    assert_array_equal(np.unique(a.environments), [0, 1, 2, 3])
    assert a.test_environment == 3
    assert_allclose(a.invariant_basis.T @ a.invariant_basis, np.eye(8), atol=1e-12)


def test_views_share_the_invariant_part_only():
    data = make_invariant_embeddings(n_samples=500, noise=0.0, random_state=0)
    A = data.invariant_basis
    diff = data.X_views[0].astype(np.float64) - data.X
    # Interventions move the variant part: nothing along the invariant basis changes.
    assert np.abs(diff @ A).max() < 1e-4
    assert np.linalg.norm(diff, axis=1).mean() > 1.0
    # Text interventions of one class differ only in style as well.
    text = data.text_interventions.astype(np.float64)
    same_class = text[data.text_view_groups == 0]
    assert np.abs((same_class - same_class[0]) @ A).max() < 1e-4


def test_variant_part_is_spurious_in_training_only():
    data = make_invariant_embeddings(n_samples=4000, noise=0.0, random_state=0)
    A = data.invariant_basis
    variant = data.X - (data.X @ A) @ A.T  # remove the invariant part
    train = data.environments != data.test_environment
    means = np.array([variant[train & (data.y == c)].mean(axis=0) for c in range(10)])
    nearest = ((variant[:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
    assert np.mean(nearest[train] == data.y[train]) > 0.4  # predictive in training (chance 0.1)
    assert np.mean(nearest[~train] == data.y[~train]) < 0.05  # misleading under shift


def test_normalize_gives_unit_rows():
    data = make_invariant_embeddings(n_samples=100, normalize=True, random_state=0)
    for array in (data.X, data.X_views[0], data.prompt_embeddings, data.text_interventions):
        assert_allclose(np.linalg.norm(array, axis=-1), 1.0, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="n_features=10 must be at least"):
        make_invariant_embeddings(n_features=10)
    with pytest.raises(ValueError, match="spurious_correlation"):
        make_invariant_embeddings(spurious_correlation=1.5)


@pytest.mark.parametrize("n_samples", [1, 2, 3])
def test_too_few_samples_for_the_environments_is_an_error(n_samples):
    # Every environment, the shifted test environment included, must get a sample.
    with pytest.raises(ValueError, match=f"n_samples={n_samples} is smaller than n_environments=4"):
        make_invariant_embeddings(n_samples=n_samples)
    data = make_invariant_embeddings(n_samples=4, random_state=0)
    assert np.unique(data.environments).tolist() == [0, 1, 2, 3]
