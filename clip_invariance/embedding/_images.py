"""Decoding any image input to an RGB PIL image.

The data path is ``path, PIL image, array or lazy view -> decode -> RGB``:
:func:`read_image` is what :class:`~clip_invariance.CLIPEmbedder`'s DataLoader
workers and the augmented views of ``_augmentation.py`` call
on every image. It handles what real datasets contain: EXIF rotation,
grayscale, palette, 16-bit, CMYK and transparent images (composited on
white), and refuses empty, NaN or out-of-range arrays with a message that
says what is wrong. PIL is imported inside the functions that need it.
"""

import os

import numpy as np

__all__ = ["read_image", "is_pil_image", "is_lazy_image"]

# Modes PIL's convert("RGB") would clip instead of rescaling.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def is_pil_image(obj):
    """Whether ``obj`` is a PIL image (checked without importing PIL).

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding._images import is_pil_image
    >>> is_pil_image(np.zeros((2, 2)))
    False
    """
    return type(obj).__module__.startswith("PIL.")


def is_lazy_image(obj):
    """Whether ``obj`` is a lazy image: an object with a ``load_image()`` method.

    The augmented views of
    :func:`~clip_invariance.embedding.make_image_interventions` are lazy
    images: recipes decoded only when they are embedded.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import ImageView
    >>> from clip_invariance.embedding._images import is_lazy_image
    >>> image = np.zeros((2, 2, 3), dtype=np.uint8)
    >>> is_lazy_image(ImageView(image, "invert", {"alpha": 1.0})), is_lazy_image(image)
    (True, False)
    """
    return callable(getattr(obj, "load_image", None))


def read_image(source):
    """Decode one image into an RGB PIL image.

    Parameters
    ----------
    source : str, path, PIL image, ndarray or lazy image
        A file, an image, a uint8 array of shape (H, W), (H, W, 1), (H, W, 3)
        or (H, W, 4) (uint16, bool and float arrays with values in [0, 1] are
        accepted too), or an object with a ``load_image()`` method such as
        :class:`clip_invariance.embedding.ImageView`.

    Returns
    -------
    image : PIL.Image.Image in mode "RGB"
        EXIF rotation applied; grayscale, palette, 16-bit and CMYK converted;
        transparent pixels composited on white.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        An empty image, or an array of the wrong shape, dtype or range.
    TypeError
        ``source`` is none of the accepted kinds.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import read_image
    >>> read_image(np.zeros((4, 5), dtype=np.uint8)).size
    (5, 4)
    >>> np.asarray(read_image(np.array([[[1.0, 0.5, 0.0, 0.0]]])))[0, 0].tolist()  # transparent
    [255, 255, 255]
    >>> read_image(np.zeros((0, 0, 3), dtype=np.uint8))
    Traceback (most recent call last):
    ...
    ValueError: An image must have at least one pixel, got an array of shape (0, 0, 3).
    """
    from PIL import Image, ImageOps

    if isinstance(source, (str, os.PathLike)):
        path = str(os.fspath(source))  # np.str_ -> str: messages show the path, not np.str_('...')
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such image file: {path!r}")
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here
            image = ImageOps.exif_transpose(img)
    elif isinstance(source, np.ndarray):
        image = Image.fromarray(_array_to_uint8(source))
    elif is_pil_image(source):
        image = source
    elif is_lazy_image(source):
        image = source.load_image()
    else:
        raise TypeError(f"Cannot read an image from {type(source).__name__}.")
    if 0 in image.size:
        raise ValueError(f"An image must have at least one pixel, got {image.size[0]} x {image.size[1]}.")
    return _to_rgb(image)


def _array_to_uint8(arr):
    """Check an image array and bring it to uint8 of shape (H, W), (H, W, 3) or (H, W, 4)."""
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"An image array must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"An image must have at least one pixel, got an array of shape {arr.shape}.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("An image array contains NaN or infinity.")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError("A float image array must have values in [0, 1].")
        return np.round(arr * 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    raise ValueError(f"Image arrays must be uint8, uint16, bool or float in [0, 1], got {arr.dtype}.")


def _to_rgb(image):
    from PIL import Image

    if image.mode in _WIDE_GRAY_MODES:
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and arr.max() <= 1 else 65535.0
        arr = np.clip(arr / top * 255, 0, 255)
        image = Image.fromarray(np.round(arr).astype(np.uint8))  # mode "L"
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image
