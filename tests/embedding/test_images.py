"""read_image: every image mode of real datasets to RGB, and clear errors for what is not an image."""

import numpy as np
import pytest
from PIL import Image

from clip_invariance.embedding import ImageView, read_image
from clip_invariance.embedding._images import is_lazy_image, is_pil_image


def test_image_modes_are_converted_to_rgb(tmp_path):
    gray16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    assert np.asarray(read_image(tmp_path / "g16.png"))[0, :, 0].tolist() == [0, 128, 255]

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red; the rest fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(read_image(tmp_path / "rgba.png"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]

    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "p_transparent.png", transparency=1)
    assert np.asarray(read_image(tmp_path / "p.png")).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    assert np.asarray(read_image(tmp_path / "p_transparent.png"))[0, 1].tolist() == [255, 255, 255]

    Image.fromarray(np.full((3, 3), 77, dtype=np.uint8)).save(tmp_path / "l.jpg")
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("LA", (3, 3), (40, 255)).save(tmp_path / "la.png")
    for name in ["l.jpg", "cmyk.jpg", "la.png", "g16.png", "p.png"]:
        image = read_image(tmp_path / name)
        assert image.mode == "RGB"
    assert np.asarray(read_image(tmp_path / "la.png"))[0, 0].tolist() == [40, 40, 40]
    r, g, b = np.asarray(read_image(tmp_path / "cmyk.jpg"))[1, 1].tolist()
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW" orientation tag
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").size == (10, 20)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0, 255]], dtype=np.uint8), [0, 255]),
        (np.array([[[0], [255]]], dtype=np.uint8), [0, 255]),  # (H, W, 1)
        (np.array([[0.0, 1.0]]), [0, 255]),
        (np.array([[False, True]]), [0, 255]),
        (np.array([[0, 65535]], dtype=np.uint16), [0, 255]),
    ],
)
def test_array_dtypes_map_to_the_full_range(array, expected):
    out = np.asarray(read_image(array))
    assert out.shape == (1, 2, 3)
    assert out[0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    "source, error, match",
    [
        (np.zeros((0, 0, 3), dtype=np.uint8), ValueError, r"one pixel, got an array of shape \(0, 0, 3\)"),
        (np.zeros((3, 0), dtype=np.uint8), ValueError, r"at least one pixel.*\(3, 0\)"),
        (Image.new("RGB", (0, 4)), ValueError, "at least one pixel, got 0 x 4"),
        (np.zeros((2, 2, 2), dtype=np.uint8), ValueError, r"\(H, W, 3\) or \(H, W, 4\), got \(2, 2, 2\)"),
        (np.zeros((2, 2, 3, 1), dtype=np.uint8), ValueError, r"got \(2, 2, 3, 1\)"),
        (np.full((2, 2), np.nan), ValueError, "NaN or infinity"),
        (np.full((2, 2), -0.5), ValueError, r"values in \[0, 1\]"),
        (np.zeros((2, 2), dtype=np.int64), ValueError, "got int64"),
        (3.5, TypeError, "Cannot read an image from float"),
        ("no/such/file.png", FileNotFoundError, "No such image file: 'no/such/file.png'"),
    ],
)
def test_bad_sources_are_named(source, error, match):
    with pytest.raises(error, match=match):
        read_image(source)


def test_corrupt_file_fails_when_read(tmp_path):
    path = tmp_path / "half.png"
    Image.fromarray(np.full((32, 32, 3), 9, dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(OSError, match="(?i)truncated|broken|not enough"):
        read_image(path)


def test_predicates():
    view = ImageView(np.zeros((2, 2, 3), dtype=np.uint8), "invert", {"alpha": 1.0})
    assert is_lazy_image(view) and not is_pil_image(view)
    image = Image.new("RGB", (2, 2))
    assert is_pil_image(image) and not is_lazy_image(image)
    assert not is_pil_image("a.png") and not is_lazy_image("a.png")
    assert np.asarray(read_image(view)).tolist() == [[[255] * 3] * 2] * 2


def test_numpy_string_paths_are_named_as_plain_strings(tmp_path):
    # Paths often come out of numpy arrays (a store's paths): messages show the path, not np.str_('...').
    with pytest.raises(FileNotFoundError, match=r"^No such image file: 'no/such/file\.png'$"):
        read_image(np.str_("no/such/file.png"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(OSError) as raised:
        read_image(np.array([str(junk)])[0])
    assert "np.str_" not in str(raised.value) and str(junk) in str(raised.value)
    image = tmp_path / "ok.png"
    Image.new("RGB", (3, 2)).save(image)
    assert read_image(np.str_(image)).size == (3, 2)
