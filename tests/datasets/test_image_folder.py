"""load_image_folder: the DomainBed <environment>/<class>/<file> layout."""

import numpy as np
import pytest

from clip_invariance.datasets import load_image_folder


@pytest.fixture
def folder(tmp_path):
    layout = {
        "photo": {"dog": ["b.jpg", "a.PNG"], "cat": ["c.jpeg"]},
        "sketch": {"dog": ["d.png"], "horse": ["e.png"]},
    }
    for domain, classes in layout.items():
        for cls, files in classes.items():
            (tmp_path / domain / cls).mkdir(parents=True)
            for name in files:
                (tmp_path / domain / cls / name).write_bytes(b"x")
    (tmp_path / "photo" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "photo" / "dog" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "README").write_text("a file at the top level is not a domain")
    return tmp_path


def test_lists_paths_labels_and_environments(folder):
    data = load_image_folder(folder)
    names = [p.split("/")[-3:] for p in data.paths]
    assert names == [
        ["photo", "cat", "c.jpeg"],
        ["photo", "dog", "a.PNG"],
        ["photo", "dog", "b.jpg"],
        ["sketch", "dog", "d.png"],
        ["sketch", "horse", "e.png"],
    ]
    assert data.class_names == ["cat", "dog", "horse"]
    assert data.y.tolist() == [0, 1, 1, 1, 2]
    assert data.environments.tolist() == ["photo"] * 3 + ["sketch"] * 2
    assert data.environment_names == ["photo", "sketch"]


def test_environment_selection_keeps_order(folder):
    data = load_image_folder(folder, environments=["sketch"])
    assert data.class_names == ["dog", "horse"] and data.y.tolist() == [0, 1]
    assert load_image_folder(folder, environments=["sketch", "photo"]).environments[0] == "sketch"


def _add_empty_environment(folder):
    (folder / "cartoon").mkdir()


def _add_environment_without_images(folder):
    (folder / "cartoon" / "dog").mkdir(parents=True)
    (folder / "cartoon" / "dog" / "readme.txt").write_text("")


def _link_an_environment(folder):
    (folder / "photo_again").symlink_to(folder / "photo", target_is_directory=True)


def _link_a_file(folder):
    (folder / "sketch" / "dog" / "copy.png").symlink_to(folder / "photo" / "dog" / "b.jpg")


@pytest.mark.parametrize(
    "prepare, kwargs, error, message",
    [
        (None, {"root": "nowhere"}, FileNotFoundError, "Image folder not found"),
        (None, {"environments": ["art"]}, FileNotFoundError,
         r"Environments \['art'\] not found.*available: \['photo', 'sketch'\]"),
        (None, {"environments": "photo"}, TypeError, "list of environment names"),
        (None, {"environments": []}, ValueError, "environments is empty"),
        (None, {"environments": ["photo", "photo"]}, ValueError, "lists a folder twice"),
        (_add_empty_environment, {}, ValueError, "'cartoon' has no class folder"),
        (_add_environment_without_images, {}, ValueError, "'cartoon' holds no image file"),
        (_link_an_environment, {}, ValueError, "same image is listed twice.*photo_again"),
        (_link_a_file, {}, ValueError, "same image is listed twice.*copy.png"),
    ],
)
def test_bad_folders(folder, prepare, kwargs, error, message):
    if prepare is not None:
        prepare(folder)
    kwargs = dict(kwargs)
    root = folder / kwargs.pop("root") if "root" in kwargs else folder
    with pytest.raises(error, match=message):
        load_image_folder(root, **kwargs)


def test_an_empty_root_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="No environment folder"):
        load_image_folder(tmp_path)


def test_pacs_mini(pacs_mini):
    data = load_image_folder(pacs_mini)
    assert data.environment_names == ["art_painting", "cartoon", "photo", "sketch"]
    assert data.class_names == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert len(data.paths) == len(data.y) == len(data.environments) == 420
    assert np.bincount(data.y).min() > 0
