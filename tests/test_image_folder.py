"""load_image_folder: the DomainBed <domain>/<class>/<file> layout."""

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


def test_lists_paths_labels_and_domains(folder):
    data = load_image_folder(folder)
    names = [p.split("/")[-3:] for p in data.paths]
    assert names == [
        ["photo", "cat", "c.jpeg"],
        ["photo", "dog", "a.PNG"],
        ["photo", "dog", "b.jpg"],
        ["sketch", "dog", "d.png"],
        ["sketch", "horse", "e.png"],
    ]
    assert data.target_names == ["cat", "dog", "horse"]
    assert data.y.tolist() == [0, 1, 1, 1, 2]
    assert data.environments.tolist() == ["photo"] * 3 + ["sketch"] * 2
    assert data.domain_names == ["photo", "sketch"]


def test_domain_selection_keeps_order(folder):
    data = load_image_folder(folder, domains=["sketch"])
    assert data.target_names == ["dog", "horse"] and data.y.tolist() == [0, 1]
    assert load_image_folder(folder, domains=["sketch", "photo"]).environments[0] == "sketch"


def test_clear_errors(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"Domains \['art'\] not found.*available: \['photo', 'sketch'\]"):
        load_image_folder(folder, domains=["art"])
    with pytest.raises(TypeError, match="list of domain names"):
        load_image_folder(folder, domains="photo")
    (folder / "cartoon").mkdir()
    with pytest.raises(ValueError, match="'cartoon' has no class folder"):
        load_image_folder(folder)
    (folder / "cartoon" / "dog").mkdir()
    (folder / "cartoon" / "dog" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match="'cartoon' holds no image file"):
        load_image_folder(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No domain folder"):
        load_image_folder(empty)


def test_pacs_mini(pacs_mini):
    data = load_image_folder(pacs_mini)
    assert data.domain_names == ["art_painting", "cartoon", "photo", "sketch"]
    assert data.target_names == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert len(data.paths) == len(data.y) == len(data.environments) == 420
    assert np.bincount(data.y).min() > 0
