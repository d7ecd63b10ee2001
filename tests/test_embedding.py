"""CLIPEmbedder: inputs, weights, laziness, caching, bad files, pipelines."""

import io
import os
import pickle
import shutil

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from clip_invariance import CLIPEmbedder, InvariantProjector
from clip_invariance import embedding as embedding_module
from clip_invariance.datasets import load_image_folder
from clip_invariance.embedding import clear_backbone_cache, read_image
from clip_invariance.similarity import l2_normalize


def _embedder(model, **params):
    params = {"pretrained": None, "device": "cpu", "batch_size": 4, "num_workers": 0, **params}
    return CLIPEmbedder(model, **params)


def _reference(model_name, pretrained, images):
    """What open_clip itself gives: its preprocessing, one forward, no embedder code."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    with torch.no_grad():
        return model.eval().encode_image(torch.stack([preprocess(im) for im in images])).numpy()


@pytest.fixture
def rgb_images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 4 * i, 36, 3), dtype=np.uint8) for i in range(6)]


@pytest.fixture
def image_files(tmp_path, rgb_images):
    paths = []
    for i, arr in enumerate(rgb_images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def count_loads(monkeypatch):
    """Count calls to open_clip's model factory, starting from an empty backbone cache."""
    import open_clip

    clear_backbone_cache()
    calls = []
    real = open_clip.create_model_and_transforms

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", counting)
    yield calls
    clear_backbone_cache()


# --------------------------------------------------------------- inputs
def test_matches_open_clip_reference(tiny_model, tiny_checkpoint, rgb_images):
    pil = [Image.fromarray(a) for a in rgb_images]
    expected = _reference(tiny_model, str(tiny_checkpoint["safetensors"]), pil)
    got = _embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(pil)
    assert got.dtype == np.float32 and got.shape == (6, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_every_input_form_gives_the_same_embedding(tiny_model, rgb_images, image_files):
    import pandas as pd

    emb = _embedder(tiny_model)
    from_paths = emb.transform(image_files)
    np.testing.assert_allclose(emb.transform([Image.fromarray(a) for a in rgb_images]), from_paths, atol=1e-6)
    np.testing.assert_allclose(emb.transform(rgb_images), from_paths, atol=1e-6)
    np.testing.assert_allclose(emb.transform(pd.Series(image_files)), from_paths, atol=1e-6)
    np.testing.assert_allclose(emb.transform(np.array(image_files)), from_paths, atol=1e-6)
    same_size = np.stack([a[:40] for a in rgb_images])  # a 4-D batch array
    np.testing.assert_allclose(emb.transform(same_size), emb.transform(list(same_size)), atol=1e-6)
    np.testing.assert_allclose(emb.transform([rgb_images[0] / 255.0]), from_paths[:1], atol=1e-6)


def test_grayscale_array_equals_its_rgb_copy(tiny_model):
    gray = np.random.default_rng(1).integers(0, 256, (30, 30), dtype=np.uint8)
    emb = _embedder(tiny_model)
    np.testing.assert_allclose(
        emb.transform([gray]), emb.transform([np.repeat(gray[:, :, None], 3, axis=2)]), atol=1e-6
    )
    np.testing.assert_allclose(emb.transform(gray[None]), emb.transform([gray]), atol=1e-6)


def test_normalize_and_batching(tiny_model, image_files):
    raw = _embedder(tiny_model, batch_size=1).transform(image_files)
    np.testing.assert_allclose(_embedder(tiny_model, batch_size=5).transform(image_files), raw, atol=1e-5)
    unit = _embedder(tiny_model, normalize=True).transform(image_files)
    np.testing.assert_allclose(unit, l2_normalize(raw), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1, atol=1e-3)


def test_workers_give_the_same_result(tiny_model, image_files):
    serial = _embedder(tiny_model, num_workers=0).transform(image_files)
    np.testing.assert_array_equal(_embedder(tiny_model, num_workers=2).transform(image_files), serial)


def test_text_modality_matches_open_clip(tiny_model):
    import open_clip
    import torch

    texts = ["a photo of a dog", "a sketch of a house", "a cartoon giraffe"]
    got = _embedder(tiny_model, modality="text").transform(texts)
    torch.manual_seed(0)
    model = open_clip.create_model(tiny_model, pretrained=None).eval()
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(tiny_model)(texts)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[0], got[1])


def test_fit_records_runtime_and_feature_names(tiny_model):
    emb = _embedder(tiny_model, device="auto", precision="auto").fit()
    assert (emb.device_, emb.precision_, emb.embedding_dim_) == ("cpu", "fp32", 32)
    assert emb.get_feature_names_out()[:2].tolist() == ["clipembedder0", "clipembedder1"]


def test_bf16_autocast_is_close_to_fp32(tiny_model, image_files):
    fp32 = _embedder(tiny_model).transform(image_files)
    bf16 = _embedder(tiny_model, precision="bf16").transform(image_files)
    assert bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(bf16, fp32, atol=0.1 * np.abs(fp32).max())


@pytest.mark.parametrize(
    "X, error, match",
    [
        ("img.png", TypeError, "single str"),
        (np.zeros((4, 5)), ValueError, "ambiguous"),
        (np.zeros(4), ValueError, "batch of images"),
        ([], ValueError, "0 inputs"),
        (["ok.png", 3.5], TypeError, "Input 1 must be an image path"),
        ([np.zeros((4, 4, 3), dtype=np.float32) * np.nan], ValueError, "NaN"),
        ([np.full((4, 4, 3), 2.0)], ValueError, r"\[0, 1\]"),
        ([np.zeros((4, 4, 2), dtype=np.uint8)], ValueError, r"\(H, W, 3\)"),
    ],
)
def test_bad_inputs_are_named(tiny_model, X, error, match):
    with pytest.raises(error, match=match):
        _embedder(tiny_model).transform(X)


def test_text_modality_requires_strings(tiny_model):
    with pytest.raises(TypeError, match="Input 0 must be a string"):
        _embedder(tiny_model, modality="text").transform([np.zeros((4, 4), dtype=np.uint8)])


# -------------------------------------------------------------- weights
@pytest.mark.parametrize("kind", ["safetensors", "bin", "pt"])
def test_checkpoint_round_trip(tiny_model, tiny_checkpoint, rgb_images, kind):
    from_file = _embedder(tiny_model, pretrained=str(tiny_checkpoint[kind])).transform(rgb_images)
    from_safetensors = _embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(rgb_images)
    np.testing.assert_array_equal(from_file, from_safetensors)
    assert not np.allclose(from_file, _embedder(tiny_model).transform(rgb_images))


def test_checkpoint_with_pickled_objects_is_refused(tiny_model, tmp_path, rgb_images):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Unsafe()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        _embedder(tiny_model, pretrained=str(path)).transform(rgb_images)


class _Unsafe:
    """An arbitrary object: loading it would require unpickling code."""


def test_openai_checkpoint_without_quickgelu_warns(tiny_model, tiny_checkpoint, tmp_path, rgb_images):
    path = tmp_path / "openai-tiny.safetensors"
    shutil.copy(tiny_checkpoint["safetensors"], path)
    with pytest.warns(UserWarning, match="QuickGELU.*-quickgelu"):
        _embedder(tiny_model, pretrained=str(path)).fit()


@pytest.fixture
def tiny_local_dir(tmp_path, tiny_checkpoint):
    """A folder in the layout of an open_clip hub repo: config JSON and weights."""
    import json

    from conftest import TINY_CONFIG

    folder = tmp_path / "tiny-repo"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    shutil.copy(tiny_checkpoint["safetensors"], folder / "open_clip_model.safetensors")
    return folder


def test_local_dir_and_cached_hub_repo(tiny_model, tiny_checkpoint, tiny_local_dir, rgb_images, monkeypatch):
    expected = _embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(rgb_images)
    got = _embedder(f"local-dir:{tiny_local_dir}").transform(rgb_images)
    np.testing.assert_array_equal(got, expected)
    # A cached hub repo is read from its snapshot folder, with no network call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(embedding_module, "_cached_hub_snapshot", lambda repo: str(tiny_local_dir))
    np.testing.assert_array_equal(_embedder("hf-hub:org/tiny").transform(rgb_images), expected)
    monkeypatch.setattr(embedding_module, "_cached_hub_snapshot", lambda repo: None)
    clear_backbone_cache()
    with pytest.raises(OSError, match="not in the local cache.*local-dir:"):
        _embedder("hf-hub:org/tiny").fit()


def test_missing_checkpoint_and_unknown_tag(tiny_model):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        _embedder(tiny_model, pretrained="missing.safetensors").fit()
    with pytest.raises(ValueError, match="Unknown pretrained tag 'nope'.*local checkpoint"):
        _embedder("ViT-B-32", pretrained="nope").fit()


def test_uncached_tag_offline_fails_fast_with_a_way_out(monkeypatch, count_loads):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(embedding_module, "_cached_tag_file", lambda cfg: None)
    with pytest.raises(OSError, match=r"(?s)not in the local cache.*pretrained='/path/to/.*quickgelu"):
        CLIPEmbedder("ViT-B-32", pretrained="openai", device="cpu").fit()
    assert count_loads == []  # refused before open_clip starts any download


def test_cached_tag_is_loaded_from_its_file_with_the_tag_settings(monkeypatch):
    monkeypatch.setattr(embedding_module, "_cached_tag_file", lambda cfg: "/cache/model.safetensors")
    kwargs = embedding_module._weights_kwargs("ViT-B-32", "openai")
    assert kwargs["pretrained"] == "/cache/model.safetensors"
    assert kwargs["force_quick_gelu"] is True  # OpenAI weights were trained with QuickGELU
    assert kwargs["image_mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))


# ---------------------------------------------- laziness, pickling, clones
def test_backbone_is_lazy_and_not_pickled(tiny_model, tiny_checkpoint, count_loads, rgb_images):
    emb = _embedder(tiny_model, pretrained=str(tiny_checkpoint["safetensors"]))
    assert count_loads == []
    before = emb.fit_transform(rgb_images)
    assert len(count_loads) == 1
    blob = pickle.dumps(emb)
    assert len(blob) < 5000  # parameters only, no weights
    clear_backbone_cache()
    restored = pickle.loads(blob)
    assert len(count_loads) == 1
    np.testing.assert_array_equal(restored.transform(rgb_images), before)
    assert len(count_loads) == 2


def test_grid_search_loads_the_weights_once(tiny_model, count_loads, rgb_images):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    X[:12, :, :, 0] = 255  # class 1 is red
    y = np.r_[np.ones(12), np.zeros(12)].astype(int)
    pipe = make_pipeline(_embedder(tiny_model, batch_size=8), LogisticRegression(max_iter=500))
    grid = GridSearchCV(
        pipe,
        {"clipembedder__normalize": [False, True], "logisticregression__C": [0.1, 1.0, 10.0]},
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 6
    assert len(count_loads) == 1  # 12 fits + refit share one loaded backbone
    assert grid.best_score_ > 0.9


# -------------------------------------------------------------- caching
def test_memory_makes_re_embedding_free(tiny_model, image_files, tmp_path, monkeypatch):
    memory = tmp_path / "cache"
    emb = _embedder(tiny_model, memory=str(memory), batch_size=2)
    first = emb.transform(image_files)
    decoded = []
    real = embedding_module._ImageDataset.__getitem__
    monkeypatch.setattr(
        embedding_module._ImageDataset, "__getitem__", lambda self, i: decoded.append(i) or real(self, i)
    )
    np.testing.assert_array_equal(emb.transform(image_files), first)
    assert decoded == []
    np.testing.assert_array_equal(emb.set_params(memory=joblib.Memory(str(memory), verbose=0)).transform(image_files), first)
    assert decoded == []

    # Rewriting a file changes its identity: only its batch is recomputed.
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(image_files[3])
    os.utime(image_files[3], ns=(1, 1))
    again = emb.transform(image_files)
    assert sorted(decoded) == [2, 3]
    assert not np.allclose(again[3], first[3])
    np.testing.assert_array_equal(np.delete(again, 3, axis=0), np.delete(first, 3, axis=0))

    # Another model is another cache entry.
    decoded.clear()
    emb.set_params(normalize=True).transform(image_files)  # normalisation is applied after the cache
    assert decoded == []
    emb.set_params(precision="bf16").transform(image_files)
    assert len(decoded) == len(image_files)


def test_work_before_a_corrupt_file_is_kept(tiny_model, image_files, tmp_path, monkeypatch):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    paths = image_files[:4] + [str(bad)] + image_files[4:]
    emb = _embedder(tiny_model, memory=tmp_path / "cache", batch_size=2)
    with pytest.raises(ValueError, match=r"Cannot read input 4 \('.*broken.jpg'\)"):
        emb.transform(paths)
    decoded = []
    real = embedding_module._ImageDataset.__getitem__
    monkeypatch.setattr(
        embedding_module._ImageDataset, "__getitem__", lambda self, i: decoded.append(i) or real(self, i)
    )
    with pytest.warns(UserWarning, match="Skipped 1"):
        emb.set_params(on_error="nan").transform(paths)
    assert sorted(decoded) == [4, 5, 6]  # batches (0, 1) and (2, 3) came from the cache


# -------------------------------------------------------------- bad files
def _corrupt_files(folder):
    files = {}
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, dtype=np.uint8)).save(jpeg, format="JPEG")
    files["truncated.jpg"] = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]
    files["random.png"] = np.random.default_rng(0).bytes(500)
    files["empty.jpg"] = b""
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in files] + [str(folder / "does-not-exist.png")]


def test_corrupt_files_raise_with_index_and_name(tiny_model, image_files, tmp_path):
    for bad in _corrupt_files(tmp_path):
        with pytest.raises(ValueError, match=rf"Cannot read input 1 \('{bad}'\)"):
            _embedder(tiny_model).transform([image_files[0], bad, image_files[1]])


def test_corrupt_files_become_nan_rows_with_a_warning(tiny_model, image_files, tmp_path):
    bad = _corrupt_files(tmp_path)
    paths = [image_files[0], bad[0], image_files[1], bad[1], bad[2], image_files[2], bad[3]]
    with pytest.warns(UserWarning, match="Skipped 4") as record:
        X = _embedder(tiny_model, on_error="nan", batch_size=3).transform(paths)
    message = str(record[0].message)
    assert all(os.path.basename(b) in message for b in bad)
    assert np.isnan(X[[1, 3, 4, 6]]).all()
    np.testing.assert_allclose(X[[0, 2, 5]], _embedder(tiny_model).transform(image_files[:3]), atol=1e-6)


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


# ------------------------------------------------------------ real images
def test_pacs_pipeline_fit_save_reload(tiny_model, tiny_checkpoint, pacs_mini, tmp_path, count_loads):
    from clip_invariance.augmentation import make_image_interventions

    data = load_image_folder(pacs_mini, domains=["photo", "sketch"])
    emb = _embedder(tiny_model, pretrained=str(tiny_checkpoint["safetensors"]), batch_size=32, num_workers=1)
    views, view_groups = make_image_interventions(data.paths, random_state=0)
    projector = InvariantProjector(n_components=8).fit(emb.transform(views), view_groups=view_groups)
    assert projector.intervention_source_ == "view_groups"

    pipe = make_pipeline(emb, InvariantProjector(n_components=8), LogisticRegression(max_iter=1000))
    pipe.fit(data.paths, data.y, invariantprojector__environments=data.environments)
    predicted = pipe.predict(data.paths)
    assert (predicted == data.y).mean() > 1 / len(data.target_names)  # better than chance on its training set

    joblib.dump(pipe, tmp_path / "pipe.joblib")
    assert os.path.getsize(tmp_path / "pipe.joblib") < 100_000  # no weights inside
    clear_backbone_cache()
    loads_before = len(count_loads)
    reloaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(reloaded.predict(data.paths), predicted)
    assert len(count_loads) == loads_before + 1


def test_progress_bar_is_optional(tiny_model, image_files, capsys):
    _embedder(tiny_model, progress=True, batch_size=2).transform(image_files)
    assert "Embedding" in capsys.readouterr().err
    _embedder(tiny_model, progress=False, batch_size=2).transform(image_files)
    assert "Embedding" not in capsys.readouterr().err
