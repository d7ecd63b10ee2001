"""Image interventions of CLIP-ICM: augmented views that keep the content and change the style.

``images -> (views, view_groups)``: every image gets ``n_augmented`` augmented
copies, each from one style transform picked at random (colour jitter,
grayscale, Gaussian blur, invert, posterize, solarize, equalize), and all
copies of an image share its view-group id. Embed the views with
:class:`~clip_invariance.CLIPEmbedder` and the result goes straight into
``InvariantProjector.fit(X, view_groups=view_groups)``;
:func:`clip_invariance.views.rows_to_columns` reshapes the same embeddings
into the per-image view blocks a front-door classifier reads.

A view is a small recipe (source, transform, drawn parameters), not pixels:
the embedder's DataLoader workers decode and augment it, so views cost no
memory until they are embedded, and they are cached by recipe. Parameters are
drawn from a generator seeded by ``(random_state, view, image index)``, so
the same call gives the same views in any process.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._images import read_image

__all__ = ["IMAGE_TRANSFORMS", "ImageView", "make_image_interventions"]

IMAGE_TRANSFORMS = (
    "color_jitter",
    "grayscale",
    "gaussian_blur",
    "invert",
    "posterize",
    "solarize",
    "equalize",
)


class ImageView:
    """One augmented view of an image: its source, a transform and its drawn parameters.

    Parameters
    ----------
    source : str, path, PIL image or ndarray
        The original image, as accepted by :func:`clip_invariance.embedding.read_image`.
    transform : str
        One of :data:`IMAGE_TRANSFORMS`.
    params : dict
        The transform's parameters (already drawn).

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import ImageView
    >>> view = ImageView(np.full((2, 2, 3), 10, dtype=np.uint8), "invert", {"alpha": 1.0})
    >>> np.asarray(view.load_image())[0, 0].tolist()
    [245, 245, 245]
    """

    __slots__ = ("source", "transform", "params")

    def __init__(self, source, transform, params):
        self.source = source
        self.transform = transform
        self.params = params

    def load_image(self):
        """Decode the source and apply the transform; returns an RGB PIL image."""
        return _APPLY[self.transform](read_image(self.source), **self.params)

    def cache_key(self, source_key):
        """Identity of the view for the embedder's cache, given its source's identity."""
        return ("view", source_key, self.transform, tuple(sorted(self.params.items())))

    def __repr__(self):
        params = ", ".join(f"{k}={v:.3g}" for k, v in sorted(self.params.items()))
        return f"ImageView({self.transform}: {params})"


@validate_params(
    {
        "images": ["array-like"],
        "n_augmented": [Interval(Integral, 1, None, closed="left")],
        "transforms": [list, tuple, None],
        "strength": [Interval(Real, 0, 1, closed="both"), dict],
        "include_original": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_image_interventions(
    images,
    *,
    n_augmented=1,
    transforms=None,
    strength=1.0,
    include_original=True,
    random_state=None,
):
    """Augmented views of each image and their view groups (CLIP-ICM image interventions).

    Parameters
    ----------
    images : list, 1-D array or pandas Series of n images
        Paths, PIL images or arrays, as accepted by the embedder.
    n_augmented : int, default=1
        Augmented views per image (the paper uses one).
    transforms : list of str, default=None
        Which transforms to pick from, uniformly per view; ``None`` means all
        of :data:`IMAGE_TRANSFORMS`.
    strength : float in [0, 1] or dict, default=1.0
        How strong each transform is (1: the paper-like default range, 0: no
        change); a dict ``{name: strength}`` sets it per transform (missing
        names get 1).
    include_original : bool, default=True
        Put the original images first, as view 0.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws; an int makes the views reproducible.

    Returns
    -------
    views : list of length n * n_total
        View-major: the originals (if kept), then the first augmented view of
        every image, and so on. Originals are the inputs themselves, the
        others :class:`ImageView` recipes.
    view_groups : ndarray of shape (n * n_total,)
        The index of the source image of each view, for
        ``InvariantProjector.fit(X, view_groups=view_groups)``.

    See Also
    --------
    clip_invariance.views.rows_to_columns : Per-image blocks ``(n, n_total * D)``
        of the embedded views, for the front-door classifier.
    clip_invariance.views.stack_views : The same rows layout from embedding arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import make_image_interventions
    >>> images = [np.zeros((8, 8, 3), dtype=np.uint8), np.ones((8, 8), dtype=np.uint8)]
    >>> views, view_groups = make_image_interventions(images, n_augmented=2, random_state=0)
    >>> len(views), view_groups.tolist()
    (6, [0, 1, 0, 1, 0, 1])
    >>> views[2].load_image().size
    (8, 8)
    """
    if hasattr(images, "tolist") and not isinstance(images, np.ndarray):
        images = images.tolist()  # pandas Series
    elif isinstance(images, np.ndarray) and images.dtype.kind not in "OUS":
        images = list(images)  # a batch array: one image per row
    images = list(images)
    if not images:
        raise ValueError("Found 0 images; at least one is required.")
    names = IMAGE_TRANSFORMS if transforms is None else tuple(transforms)
    unknown = sorted(set(names) - set(IMAGE_TRANSFORMS))
    if unknown or not names:
        raise ValueError(f"Unknown or no transforms {unknown}; choose from {list(IMAGE_TRANSFORMS)}.")
    strengths = _strengths(strength, names)
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)

    views = list(images) if include_original else []
    for v in range(n_augmented):
        for i, image in enumerate(images):
            rng = np.random.default_rng([seed, v, i])
            name = names[rng.integers(len(names))]
            views.append(ImageView(image, name, _DRAW[name](rng, strengths[name])))
    n_total = n_augmented + bool(include_original)
    return views, np.tile(np.arange(len(images)), n_total)


def _strengths(strength, names):
    if isinstance(strength, dict):
        unknown = sorted(set(strength) - set(IMAGE_TRANSFORMS))
        if unknown:
            raise ValueError(f"Unknown transforms in strength: {unknown}.")
        bad = {k: v for k, v in strength.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"Strengths must be in [0, 1], got {bad}.")
        return {name: float(strength.get(name, 1.0)) for name in names}
    return dict.fromkeys(names, float(strength))


# -------------------------------------------------------- parameter draws
# Each draw maps a strength s in [0, 1] to concrete parameters; s = 0 is the
# identity, s = 1 the ranges commonly used for CLIP-style augmentation.
def _draw_color_jitter(rng, s):
    return {
        "brightness": 1 + s * rng.uniform(-0.4, 0.4),
        "contrast": 1 + s * rng.uniform(-0.4, 0.4),
        "saturation": 1 + s * rng.uniform(-0.4, 0.4),
        "hue": s * rng.uniform(-0.1, 0.1),
    }


def _draw_blend(rng, s):
    return {"alpha": s}


def _draw_blur(rng, s):
    return {"sigma": s * rng.uniform(0.5, 2.0)}


def _draw_posterize(rng, s):
    return {"bits": float(np.clip(8 - round(s * rng.uniform(3, 6)), 1, 8))}


def _draw_solarize(rng, s):
    return {"threshold": float(round(256 - s * rng.uniform(64, 160)))}


_DRAW = {
    "color_jitter": _draw_color_jitter,
    "grayscale": _draw_blend,
    "gaussian_blur": _draw_blur,
    "invert": _draw_blend,
    "posterize": _draw_posterize,
    "solarize": _draw_solarize,
    "equalize": _draw_blend,
}


# --------------------------------------------------------- applying them
def _color_jitter(image, brightness, contrast, saturation, hue):
    from PIL import Image, ImageEnhance

    image = ImageEnhance.Brightness(image).enhance(brightness)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    image = ImageEnhance.Color(image).enhance(saturation)
    if hue:
        h, s, v = image.convert("HSV").split()
        shift = int(round(hue * 255))
        h = h.point(lambda x: (x + shift) % 256)
        image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return image


def _blend(op):
    def apply(image, alpha):
        from PIL import Image

        changed = op(image).convert("RGB")
        return changed if alpha == 1 else Image.blend(image, changed, alpha)

    return apply


def _grayscale(image):
    return image.convert("L")


def _invert(image):
    from PIL import ImageOps

    return ImageOps.invert(image)


def _equalize(image):
    from PIL import ImageOps

    return ImageOps.equalize(image)


def _gaussian_blur(image, sigma):
    from PIL import ImageFilter

    return image.filter(ImageFilter.GaussianBlur(sigma)) if sigma > 0 else image


def _posterize(image, bits):
    from PIL import ImageOps

    return ImageOps.posterize(image, int(bits))


def _solarize(image, threshold):
    from PIL import ImageOps

    return ImageOps.solarize(image, threshold=int(threshold))


_APPLY = {
    "color_jitter": _color_jitter,
    "grayscale": _blend(_grayscale),
    "gaussian_blur": _gaussian_blur,
    "invert": _blend(_invert),
    "posterize": _posterize,
    "solarize": _solarize,
    "equalize": _blend(_equalize),
}
