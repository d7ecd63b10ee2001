"""Image interventions: what each transform does, seeding, layout, and use with the projector."""

import numpy as np
import pytest
from PIL import Image

from clip_invariance import CLIPEmbedder, InvariantProjector
from clip_invariance.embedding import IMAGE_TRANSFORMS, ImageView, make_image_interventions
from clip_invariance.views import rows_to_columns, stack_views


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 20, 3), dtype=np.uint8) for _ in range(5)]


def _pixels(view):
    return np.asarray(view.load_image() if isinstance(view, ImageView) else Image.fromarray(view), dtype=int)


def test_layout_matches_stack_views(images):
    views, view_groups = make_image_interventions(images, n_augmented=2, random_state=0)
    assert len(views) == 15
    assert views[:5] == images  # the originals first, unchanged
    assert all(isinstance(v, ImageView) for v in views[5:])
    _, expected_groups = stack_views(np.zeros((3, 5, 1)))
    np.testing.assert_array_equal(view_groups, expected_groups)
    views, view_groups = make_image_interventions(images, include_original=False, random_state=0)
    assert len(views) == 5 and view_groups.tolist() == [0, 1, 2, 3, 4]


def test_views_are_seeded_per_image(images):
    a, _ = make_image_interventions(images, n_augmented=3, random_state=7)
    b, _ = make_image_interventions(images, n_augmented=3, random_state=7)
    for va, vb in zip(a[5:], b[5:]):
        np.testing.assert_array_equal(_pixels(va), _pixels(vb))
    # A view of image 0 does not depend on which other images are in the call.
    alone, _ = make_image_interventions(images[:1], n_augmented=3, random_state=7)
    assert [repr(v) for v in alone[1:]] == [repr(v) for v in a[5::5]]
    other, _ = make_image_interventions(images, n_augmented=3, random_state=8)
    assert [repr(v) for v in other[5:]] != [repr(v) for v in a[5:]]


def test_transforms_are_drawn_uniformly(images):
    views, _ = make_image_interventions(images * 60, random_state=0, include_original=False)
    names, counts = np.unique([v.transform for v in views], return_counts=True)
    assert sorted(names) == sorted(IMAGE_TRANSFORMS)
    assert counts.min() > 20  # 300 draws over 7 transforms: about 43 each


@pytest.mark.parametrize("name", IMAGE_TRANSFORMS)
def test_each_transform_changes_style_not_size(images, name):
    views, _ = make_image_interventions(images, transforms=[name], random_state=0, include_original=False)
    for view, original in zip(views, images):
        out = np.asarray(view.load_image(), dtype=int)
        assert out.shape == original.shape
        if name == "invert":
            np.testing.assert_array_equal(out, 255 - original)
        elif name == "grayscale":
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        elif name == "posterize":
            bits = int(view.params["bits"])
            assert bits < 8 and (out % (1 << (8 - bits)) == 0).all()
        elif name == "solarize":
            t = view.params["threshold"]
            np.testing.assert_array_equal(out, np.where(original >= t, 255 - original, original))
        elif name == "gaussian_blur":
            assert np.abs(np.diff(out, axis=0)).mean() < np.abs(np.diff(original, axis=0)).mean()
        else:  # colour jitter and equalize change the pixels
            assert not np.array_equal(out, original)


@pytest.mark.parametrize("name", IMAGE_TRANSFORMS)
def test_strength_zero_is_the_identity(images, name):
    views, _ = make_image_interventions(
        images, transforms=[name], strength={name: 0.0}, random_state=0, include_original=False
    )
    for view, original in zip(views, images):
        np.testing.assert_array_equal(np.asarray(view.load_image()), original)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown or no transforms \\['sepia'\\]"):
        make_image_interventions(["a.png"], transforms=["sepia"])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        make_image_interventions(["a.png"], strength={"invert": 2.0})
    with pytest.raises(ValueError, match="0 images"):
        make_image_interventions([])


def test_views_go_through_the_embedder_and_the_projector(tiny_model, images, tmp_path):
    views, view_groups = make_image_interventions(images, n_augmented=2, random_state=0)
    emb = CLIPEmbedder(tiny_model, pretrained=None, device="cpu", batch_size=4, memory=tmp_path)
    X = emb.transform(views)
    # The lazy views embed exactly like their decoded pixels, in workers too.
    pixels = [v.load_image() if isinstance(v, ImageView) else v for v in views]
    np.testing.assert_allclose(X, emb.transform(pixels), atol=1e-5)
    np.testing.assert_allclose(emb.set_params(num_workers=2).transform(views), X, atol=1e-6)
    assert not np.allclose(X[:5], X[5:10])
    projector = InvariantProjector(n_components=4).fit(X, view_groups=view_groups)
    assert projector.transform(X).shape == (15, 4)
    assert rows_to_columns(X, view_groups).shape == (5, 3 * 32)
