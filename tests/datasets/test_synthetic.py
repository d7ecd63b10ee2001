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


# Imperfect augmentations (issue 18): the views move part of the style, some content, or both.


def test_exact_views_are_the_default_and_unchanged():
    data = make_invariant_embeddings(n_samples=200, n_augmented=2, random_state=7)
    explicit = make_invariant_embeddings(n_samples=200, n_augmented=2, view_style_fraction=1.0,
                                         view_content_shift=0.0, random_state=7)
    for key in data:
        assert_array_equal(np.asarray(explicit[key]), np.asarray(data[key]), err_msg=key)
    # The views the generator drew before the two parameters existed.
    assert_allclose(data.X_views[:, 0, :3], [[-0.3121114, -0.7329662, 0.46420807],
                                             [0.05656573, -2.2345324, -0.8451695]], rtol=1e-5)
    assert_allclose(data.X_views[1, 199, -2:], [0.13083464, -0.67471933], rtol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_imperfect_views_change_the_views_only(normalize):
    exact = make_invariant_embeddings(n_samples=200, normalize=normalize, random_state=1)
    imperfect = make_invariant_embeddings(n_samples=200, normalize=normalize, view_style_fraction=0.5,
                                          view_content_shift=1.0, random_state=1)
    for key in exact:
        if key != "X_views":
            assert_array_equal(np.asarray(imperfect[key]), np.asarray(exact[key]), err_msg=key)
    assert not np.allclose(imperfect.X_views, exact.X_views)


@pytest.mark.parametrize("fraction, n_variant, n_moved",
                         [(0.5, 8, 4), (0.3, 10, 3), (0.01, 8, 1), (1.0, 5, 5)])
def test_style_fraction_moves_the_first_variant_directions_only(fraction, n_variant, n_moved):
    data = make_invariant_embeddings(n_samples=2000, n_variant=n_variant, noise=0.0,
                                     view_style_fraction=fraction, random_state=0)
    diff = data.X_views[0].astype(np.float64) - data.X
    moved = data.variant_basis[:, :n_moved]
    # The difference lies in the span of the moved directions: nothing is left outside it.
    residual = diff - (diff @ moved) @ moved.T
    assert np.abs(residual).max() < 1e-4
    # Along them it is the style draw, style_scale * N(0, 1) per factor.
    assert_allclose((diff @ moved).std(axis=0), 2.0, rtol=0.1)


def test_content_shift_moves_the_invariant_latents_by_its_scale():
    data = make_invariant_embeddings(n_samples=2000, noise=0.0, view_content_shift=0.5,
                                     view_style_fraction=0.5, random_state=0)
    diff = data.X_views[0].astype(np.float64) - data.X
    along_content = diff @ data.invariant_basis
    assert_allclose(along_content.std(axis=0), 0.5, rtol=0.1)
    assert_allclose(along_content.mean(axis=0), 0.0, atol=0.05)
    # The style part is still the first half of the variant directions only.
    style = diff - along_content @ data.invariant_basis.T
    moved = data.variant_basis[:, :4]
    assert np.abs(style - (style @ moved) @ moved.T).max() < 1e-4
    assert_allclose(np.linalg.norm(style @ moved, axis=1).mean(), 2.0 * np.sqrt(4), rtol=0.1)


@pytest.mark.parametrize("params, message", [
    ({"view_style_fraction": 0}, r"'view_style_fraction' parameter .* range \(0.0, 1.0\]. Got 0 instead"),
    ({"view_style_fraction": 1.5}, r"'view_style_fraction' parameter .* range \(0.0, 1.0\]. Got 1.5"),
    ({"view_style_fraction": "half"}, r"'view_style_fraction' parameter .* Got 'half'"),
    ({"view_content_shift": -0.1}, r"'view_content_shift' parameter .* range \[0.0, inf\). Got -0.1"),
])
def test_imperfect_view_parameters_are_validated(params, message):
    with pytest.raises(ValueError, match=message):
        make_invariant_embeddings(n_samples=40, **params)
