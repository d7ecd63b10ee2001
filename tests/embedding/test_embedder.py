"""CLIPEmbedder: inputs, laziness, the embedding cache, bad inputs and faults, pipelines."""

import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from _cases import cpu_embedder
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from clip_invariance import InvariantProjector
from clip_invariance._utils import l2_normalize
from clip_invariance.datasets import load_image_folder
from clip_invariance.embedding import _backbone, clear_backbone_cache
from clip_invariance.embedding import _embedder as embedding_module


@pytest.fixture(autouse=True)
def empty_memo():
    """Each test starts with an empty in-memory memo (it lives on the cached backbones)."""
    for backbone in list(_backbone._BACKBONES.values()):
        backbone.__dict__.pop("_embedding_memo", None)


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


# --------------------------------------------------------------- inputs
def test_matches_open_clip_reference(tiny_model, tiny_checkpoint, rgb_images):
    pil = [Image.fromarray(a) for a in rgb_images]
    expected = _reference(tiny_model, str(tiny_checkpoint["safetensors"]), pil)
    got = cpu_embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(pil)
    assert got.dtype == np.float32 and got.shape == (6, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_every_input_form_gives_the_same_embedding(tiny_model, rgb_images, image_files):
    import pandas as pd

    emb = cpu_embedder(tiny_model)
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
    emb = cpu_embedder(tiny_model)
    np.testing.assert_allclose(
        emb.transform([gray]), emb.transform([np.repeat(gray[:, :, None], 3, axis=2)]), atol=1e-6
    )
    np.testing.assert_allclose(emb.transform(gray[None]), emb.transform([gray]), atol=1e-6)


def test_normalize_and_batching(tiny_model, image_files):
    raw = cpu_embedder(tiny_model, batch_size=1).transform(image_files)
    np.testing.assert_allclose(cpu_embedder(tiny_model, batch_size=5).transform(image_files), raw, atol=1e-5)
    unit = cpu_embedder(tiny_model, normalize=True).transform(image_files)
    np.testing.assert_allclose(unit, l2_normalize(raw), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1, atol=1e-3)


def test_workers_give_the_same_result(tiny_model, image_files):
    serial = cpu_embedder(tiny_model, num_workers=0).transform(image_files)
    np.testing.assert_array_equal(cpu_embedder(tiny_model, num_workers=2).transform(image_files), serial)


def test_text_modality_matches_open_clip(tiny_model):
    import open_clip
    import torch

    texts = ["a photo of a dog", "a sketch of a house", "a cartoon giraffe"]
    got = cpu_embedder(tiny_model, modality="text").transform(texts)
    torch.manual_seed(0)
    model = open_clip.create_model(tiny_model, pretrained=None).eval()
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(tiny_model)(texts)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[0], got[1])


def test_fit_records_runtime_and_feature_names(tiny_model):
    import torch

    emb = cpu_embedder(tiny_model, device="auto", precision="auto").fit()
    expected = ("cuda", "fp16") if torch.cuda.is_available() else ("cpu", "fp32")  # no MPS on the CI
    assert (emb.device_, emb.precision_, emb.embedding_dim_) == (*expected, 32)
    emb = cpu_embedder(tiny_model, device="cpu", precision="auto").fit()
    assert (emb.device_, emb.precision_) == ("cpu", "fp32")
    assert emb.get_feature_names_out()[:2].tolist() == ["clipembedder0", "clipembedder1"]


def test_bf16_autocast_is_close_to_fp32(tiny_model, image_files):
    fp32 = cpu_embedder(tiny_model).transform(image_files)
    bf16 = cpu_embedder(tiny_model, precision="bf16").transform(image_files)
    assert bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(bf16, fp32, atol=0.1 * np.abs(fp32).max())


def _cuda_available():
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_model, image_files):
    cpu = cpu_embedder(tiny_model).transform(image_files)
    fp32 = cpu_embedder(tiny_model, device="cuda", precision="fp32").transform(image_files)
    np.testing.assert_allclose(fp32, cpu, atol=1e-4)
    fp16 = cpu_embedder(tiny_model, device="cuda", precision="auto").transform(image_files)
    assert fp16.dtype == np.float32 and not np.array_equal(fp16, fp32)
    np.testing.assert_allclose(fp16, cpu, atol=0.01 * np.abs(cpu).max())


# -------------------------------------------------------------- weights
@pytest.mark.parametrize("kind", ["safetensors", "bin", "pt"])
def test_checkpoint_round_trip(tiny_model, tiny_checkpoint, rgb_images, kind):
    from_file = cpu_embedder(tiny_model, pretrained=str(tiny_checkpoint[kind])).transform(rgb_images)
    from_safetensors = cpu_embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(
        rgb_images)
    np.testing.assert_array_equal(from_file, from_safetensors)
    assert not np.allclose(from_file, cpu_embedder(tiny_model).transform(rgb_images))


# ---------------------------------------------- laziness, pickling, clones
def test_backbone_is_lazy_and_not_pickled(tiny_model, tiny_checkpoint, count_loads, rgb_images):
    emb = cpu_embedder(tiny_model, pretrained=str(tiny_checkpoint["safetensors"]))
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
    pipe = make_pipeline(cpu_embedder(tiny_model, batch_size=8), LogisticRegression(max_iter=500))
    grid = GridSearchCV(
        pipe,
        {"clipembedder__normalize": [False, True], "logisticregression__C": [0.1, 1.0, 10.0]},
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 6
    assert len(count_loads) == 1  # 12 fits + refit share one loaded backbone
    assert grid.best_score_ > 0.9


# -------------------------------------------------------------- caching
@pytest.fixture
def count_decodes(monkeypatch):
    """Indices of the images decoded (cache misses), in the main process (num_workers=0)."""
    decoded = []
    real = embedding_module._ImageDataset.__getitem__
    monkeypatch.setattr(
        embedding_module._ImageDataset, "__getitem__", lambda self, i: decoded.append(i) or real(self, i)
    )
    return decoded


def _entries(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def test_memory_makes_re_embedding_free(tiny_model, image_files, tmp_path, count_decodes):
    memory = tmp_path / "cache"
    emb = cpu_embedder(tiny_model, memory=str(memory), batch_size=2)
    first = emb.transform(image_files)
    assert count_decodes == [0, 1, 2, 3, 4, 5]
    count_decodes.clear()
    np.testing.assert_array_equal(emb.transform(image_files), first)
    assert count_decodes == []
    with_joblib = emb.set_params(memory=joblib.Memory(str(memory), verbose=0))  # only its location is used
    np.testing.assert_array_equal(with_joblib.transform(image_files), first)
    assert count_decodes == []

    # Rewriting a file changes its identity: only it is recomputed.
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(image_files[3])
    os.utime(image_files[3], ns=(1, 1))
    again = emb.transform(image_files)
    assert count_decodes == [3]
    assert not np.allclose(again[3], first[3])
    np.testing.assert_array_equal(np.delete(again, 3, axis=0), np.delete(first, 3, axis=0))

    # Another model is another cache entry.
    count_decodes.clear()
    emb.set_params(normalize=True).transform(image_files)  # normalisation is applied after the cache
    assert count_decodes == []
    emb.set_params(precision="bf16").transform(image_files)
    assert len(count_decodes) == len(image_files)


def test_cache_is_per_input(tiny_model, rgb_images, tmp_path, count_decodes):
    """Another batch size, another order or one added input does not re-embed the rest."""
    emb = cpu_embedder(tiny_model, memory=tmp_path, batch_size=2)
    first = emb.transform(rgb_images[:5])
    count_decodes.clear()
    order = [5, 4, 0, 1, 2, 3]
    got = emb.set_params(batch_size=3).transform([rgb_images[i] for i in order])
    assert count_decodes == [0]  # only the new image, now at index 0
    np.testing.assert_allclose(got[1:], first[order[1:]], atol=1e-6)
    np.testing.assert_allclose(got[0], cpu_embedder(tiny_model).transform(rgb_images[5:])[0], atol=1e-5)
    texts = cpu_embedder(tiny_model, memory=tmp_path, modality="text")
    np.testing.assert_array_equal(texts.transform(["a dog", "a cat"])[1], texts.transform(["a cat"])[0])


def test_cache_holds_only_plain_npy_files(tiny_model, rgb_images, tmp_path):
    cpu_embedder(tiny_model, memory=tmp_path).transform(rgb_images)
    entries = _entries(tmp_path)
    assert len(entries) == len(rgb_images) and {p.suffix for p in entries} == {".npy"}
    for path in entries:
        row = np.load(path, allow_pickle=False)
        assert row.dtype == np.float32 and row.shape == (32,)


class _Planted:
    """Unpickling it would create a file: proof that the cache ran code."""

    marker = os.path.join(tempfile.gettempdir(), "clipinv-planted-pickle-ran")

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _damage(kind, path):
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:70])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "planted pickle":
        path.write_bytes(pickle.dumps(_Planted()))
    elif kind == "object array":
        np.save(path, np.array([_Planted()], dtype=object), allow_pickle=True)
    elif kind == "wrong shape":
        np.save(path, np.zeros(7, dtype=np.float32))
    elif kind == "float64":
        np.save(path, np.zeros(32))
    elif kind == "nan":
        np.save(path, np.full(32, np.nan, dtype=np.float32))


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "planted pickle", "object array", "wrong shape", "float64", "nan"]
)
def test_damaged_entry_is_recomputed_with_one_warning(tiny_model, rgb_images, tmp_path, kind, count_decodes):
    if os.path.exists(_Planted.marker):
        os.remove(_Planted.marker)
    emb = cpu_embedder(tiny_model, memory=tmp_path, memo_size=0)  # the disk cache alone
    first = emb.transform(rgb_images)
    entry = _entries(tmp_path)[0]
    _damage(kind, entry)
    count_decodes.clear()
    expected = r"Recomputed 1 damaged or foreign embedding cache file\(s\); the first: "
    with pytest.warns(UserWarning, match=expected) as record:
        again = emb.transform(rgb_images)
    assert len(record) == 1 and str(entry) in str(record[0].message)
    assert not os.path.exists(_Planted.marker)  # nothing in the cache was executed
    assert len(count_decodes) == 1
    np.testing.assert_allclose(again, first, atol=1e-5)  # a batch of one: equal up to rounding
    # The entry was rewritten: the next call reads it, silently.
    count_decodes.clear()
    np.testing.assert_array_equal(emb.transform(rgb_images), again)
    assert count_decodes == []
    assert np.load(entry, allow_pickle=False).shape == (32,)


def test_cache_is_written_atomically(tiny_model, rgb_images, tmp_path, monkeypatch):
    """A write that fails midway leaves no entry and no temporary file behind."""

    def failing_save(file, arr, allow_pickle=True):
        file.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(embedding_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cpu_embedder(tiny_model, memory=tmp_path).transform(rgb_images)
    assert _entries(tmp_path) == []


def test_work_before_a_corrupt_file_is_kept(tiny_model, image_files, tmp_path, count_decodes):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    paths = image_files[:4] + [str(bad)] + image_files[4:]
    emb = cpu_embedder(tiny_model, memory=tmp_path / "cache", batch_size=2)
    with pytest.raises(ValueError, match=r"Cannot read input 4 \('.*broken.jpg'\)"):
        emb.transform(paths)
    count_decodes.clear()
    with pytest.warns(UserWarning, match="Skipped 1"):
        emb.set_params(on_error="nan").transform(paths)
    assert sorted(count_decodes) == [4, 5, 6]  # batches (0, 1) and (2, 3) came from the cache


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
            cpu_embedder(tiny_model).transform([image_files[0], bad, image_files[1]])


def test_corrupt_files_become_nan_rows_with_a_warning(tiny_model, image_files, tmp_path):
    bad = _corrupt_files(tmp_path)
    paths = [image_files[0], bad[0], image_files[1], bad[1], bad[2], image_files[2], bad[3]]
    with pytest.warns(UserWarning, match="Skipped 4") as record:
        X = cpu_embedder(tiny_model, on_error="nan", batch_size=3).transform(paths)
    message = str(record[0].message)
    assert all(os.path.basename(b) in message for b in bad)
    assert np.isnan(X[[1, 3, 4, 6]]).all()
    np.testing.assert_allclose(X[[0, 2, 5]], cpu_embedder(tiny_model).transform(image_files[:3]), atol=1e-6)


# ------------------------------------------------ bad inputs and faults
WIDE_MODEL = "clipinv-tiny-test-wide"
GOOD = [np.zeros((8, 8, 3), dtype=np.uint8)]


class _Unsafe:
    """An arbitrary object: loading it would require unpickling code."""


def _other_architecture(ctx):
    import open_clip
    from conftest import TINY_CONFIG

    if WIDE_MODEL not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="clipinv-config-"))
        (folder / f"{WIDE_MODEL}.json").write_text(json.dumps({**TINY_CONFIG, "embed_dim": 16}))
        open_clip.add_model_config(folder)
    return {"model_name": WIDE_MODEL, "pretrained": str(ctx.checkpoint["safetensors"])}, GOOD


def _pickled_objects(ctx):
    import torch

    path = ctx.tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Unsafe()}, path)
    return {"pretrained": str(path)}, GOOD


def _damaged_checkpoint(ctx):
    path = ctx.tmp_path / "damaged.safetensors"
    path.write_bytes(ctx.checkpoint["safetensors"].read_bytes()[:100])
    return {"pretrained": str(path)}, GOOD


def _offline_tag(ctx):
    ctx.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx.monkeypatch.setattr(_backbone, "cached_tag_file", lambda cfg: None)
    return {"model_name": "ViT-B-32", "pretrained": "openai"}, GOOD


def _offline_hub(ctx):
    ctx.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx.monkeypatch.setattr(_backbone, "cached_hub_snapshot", lambda repo: None)
    return {"model_name": "hf-hub:org/tiny"}, GOOD


def _no_gpu(device):
    def case(ctx):
        ctx.monkeypatch.setattr(_backbone, "available_devices", lambda: ["cpu"])
        return {"device": device}, GOOD

    return case


def _file(name, data):
    def case(ctx):
        path = ctx.tmp_path / name
        if data is not None:
            path.write_bytes(data)
        return {}, [GOOD[0], str(path)]

    return case


def _bomb(ctx):
    ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses images over twice the limit
    path = ctx.tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    return {}, [str(path)]


def _memory_is_a_file(ctx):
    path = ctx.tmp_path / "cache.txt"
    path.write_text("")
    return {"memory": str(path)}, GOOD


def _inputs(X, **params):
    return lambda ctx: (params, X() if callable(X) else X)


def _frame():
    import pandas as pd

    return pd.DataFrame({"a": ["x.png"], "b": ["y.png"]})


def _sparse():
    import scipy.sparse

    return scipy.sparse.csr_matrix(np.eye(3))


_READ = r"Cannot read input {} \({}\): "
BAD_INPUTS = {
    # the collection
    "single path": (_inputs("img.png"), TypeError, "got a single str; wrap it in a list"),
    "2-D array": (_inputs(np.zeros((4, 5))), ValueError, "a 2-D array is ambiguous"),
    "1-D numbers": (_inputs(np.zeros(4)), ValueError, r"batch of images .* got shape \(4,\)"),
    "2-D paths": (_inputs(np.array([["a.png"]])), ValueError, r"must be 1-D, got shape \(1, 1\)"),
    "DataFrame": (_inputs(_frame), ValueError, "one column, got 2"),
    "not a collection": (_inputs(5), TypeError, "Expected a collection of inputs, got int"),
    "sparse": (_inputs(_sparse), TypeError, "Sparse matrices are not images or texts"),
    "empty list": (_inputs([]), ValueError, "Found 0 inputs"),
    "empty batch": (_inputs(np.zeros((0, 8, 8, 3), dtype=np.uint8)), ValueError, "Found 0 inputs"),
    # wrong modality
    "number as image": (_inputs(["ok.png", 3.5]), TypeError, "Input 1 must be an image path.*got float"),
    "image as text": (
        _inputs(GOOD, modality="text"),
        TypeError,
        "Input 0 must be a string for modality='text', got ndarray",
    ),
    # pixels
    "NaN float image": (
        _inputs([np.full((4, 4, 3), np.nan)]),
        ValueError,
        _READ.format(0, r"array of shape \(4, 4, 3\)") + "ValueError: .*NaN",
    ),
    "float above 1": (_inputs([np.full((4, 4, 3), 2.0)]), ValueError, r"values in \[0, 1\]"),
    "2 channels": (_inputs([np.zeros((4, 4, 2), dtype=np.uint8)]), ValueError, r"\(H, W, 3\).*\(4, 4, 2\)"),
    "(0, 0, 3) image": (
        _inputs([np.zeros((0, 0, 3), dtype=np.uint8)]),
        ValueError,
        _READ.format(0, r"array of shape \(0, 0, 3\)") + "ValueError: An image must have at least one pixel",
    ),
    "empty images in a batch": (
        _inputs(np.zeros((2, 0, 4, 3), dtype=np.uint8)),
        ValueError,
        _READ.format(0, r"array of shape \(0, 4, 3\)") + ".*at least one pixel",
    ),
    # files
    "missing file": (
        _file("missing.png", None),
        ValueError,
        _READ.format(1, "'.*missing.png'") + "FileNotFoundError: No such image file",
    ),
    "corrupt file": (_file("corrupt.jpg", b"not an image"), ValueError, _READ.format(1, "'.*corrupt.jpg'")),
    "empty file": (_file("empty.png", b""), ValueError, _READ.format(1, "'.*empty.png'")),
    "decompression bomb": (_bomb, ValueError, _READ.format(0, "'.*bomb.png'") + "DecompressionBombError"),
    # weights and devices
    "unknown model": (
        _inputs(GOOD, model_name="ViT-B-3"),
        ValueError,
        r"Unknown model_name 'ViT-B-3'; did you mean 'ViT-B-32'.*list_models",
    ),
    "unknown tag": (
        _inputs(GOOD, model_name="ViT-B-32", pretrained="nope"),
        ValueError,
        "Unknown pretrained tag 'nope' for model 'ViT-B-32'; known tags: .*'openai'",
    ),
    "missing checkpoint": (
        _inputs(GOOD, pretrained="missing.safetensors"),
        FileNotFoundError,
        "Checkpoint file not found: 'missing.safetensors'",
    ),
    "missing local dir": (_inputs(GOOD, model_name="local-dir:/no/dir"), OSError, "not found: /no/dir"),
    "offline tag": (_offline_tag, OSError, "not in the local cache and huggingface.co cannot be reached"),
    "offline hub repo": (_offline_hub, OSError, "Cannot load the model 'hf-hub:org/tiny'.*local-dir:"),
    "other architecture": (
        _other_architecture,
        ValueError,
        rf"checkpoint '.*tiny.safetensors' does not fit the model '{WIDE_MODEL}'.*size mismatch",
    ),
    "pickled objects": (_pickled_objects, ValueError, r"holds pickled objects.*weights_only=True"),
    "damaged checkpoint": (_damaged_checkpoint, ValueError, "Cannot read the checkpoint '.*damaged"),
    "no cuda": (_no_gpu("cuda"), ValueError, r"device='cuda' is not available on this .*; available: 'cpu',"),
    "no mps": (_no_gpu("mps"), ValueError, r"device='mps' is not available on this machine"),
    "unknown device": (_inputs(GOOD, device="gpu0"), ValueError, "Unknown device 'gpu0'; available on this"),
    "batch_size 0": (_inputs(GOOD, batch_size=0), ValueError, "'batch_size' parameter .* must be an int in"),
    "memory is a file": (_memory_is_a_file, ValueError, r"memory='.*cache.txt' is a file"),
}


class _Context:
    def __init__(self, tmp_path, checkpoint, monkeypatch):
        self.tmp_path, self.checkpoint, self.monkeypatch = tmp_path, checkpoint, monkeypatch


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_inputs(tiny_model, tiny_checkpoint, tmp_path, monkeypatch, case):
    """Each bad input or fault: one exception of a clear type, with a message that names it."""
    make, error, match = BAD_INPUTS[case]
    params, X = make(_Context(tmp_path, tiny_checkpoint, monkeypatch))
    emb = cpu_embedder(params.pop("model_name", tiny_model), **params)
    before = emb.get_params()
    with pytest.raises(error, match=match) as info:
        emb.transform(X)
    assert type(info.value) not in (AttributeError, KeyError, RuntimeError)
    assert emb.get_params() == before and not hasattr(emb, "embedding_dim_")


# ------------------------------------------------------------ real images
def test_pacs_pipeline_fit_save_reload(tiny_model, tiny_checkpoint, pacs_mini, tmp_path, count_loads):
    from clip_invariance.embedding import make_image_interventions

    data = load_image_folder(pacs_mini, environments=["photo", "sketch"])
    emb = cpu_embedder(tiny_model, pretrained=str(tiny_checkpoint["safetensors"]), batch_size=32,
                       num_workers=1)
    views, view_groups = make_image_interventions(data.paths, random_state=0)
    projector = InvariantProjector(n_components=8).fit(emb.transform(views), view_groups=view_groups)
    assert projector.intervention_source_ == "view_groups"

    pipe = make_pipeline(emb, InvariantProjector(n_components=8), LogisticRegression(max_iter=1000))
    pipe.fit(data.paths, data.y, invariantprojector__environments=data.environments)
    predicted = pipe.predict(data.paths)
    assert (predicted == data.y).mean() > 1 / len(data.class_names)  # better than chance on its training set

    joblib.dump(pipe, tmp_path / "pipe.joblib")
    assert os.path.getsize(tmp_path / "pipe.joblib") < 100_000  # no weights inside
    clear_backbone_cache()
    loads_before = len(count_loads)
    reloaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(reloaded.predict(data.paths), predicted)
    assert len(count_loads) == loads_before + 1


def test_progress_bar_is_optional_and_reaches_its_total(tiny_model, image_files, capsys):
    cpu_embedder(tiny_model, progress=True, batch_size=2).transform(image_files)
    err = capsys.readouterr().err
    assert "Embedding" in err and "6/6" in err and "image/s" in err  # inputs, not batches
    cpu_embedder(tiny_model, progress=True, batch_size=4, modality="text").transform(list("abcdef"))
    err = capsys.readouterr().err
    assert "6/6" in err and "text/s" in err
    cpu_embedder(tiny_model, progress=False, batch_size=2).transform(image_files)
    assert "Embedding" not in capsys.readouterr().err


def test_progress_bar_moves_per_batch_and_counts_only_what_is_embedded(tiny_model, image_files, monkeypatch):
    from tqdm import auto

    updates = []
    real = auto.tqdm.update
    monkeypatch.setattr(auto.tqdm, "update", lambda bar, n=1: updates.append(n) or real(bar, n))
    emb = cpu_embedder(tiny_model, progress=True, batch_size=4)
    emb.transform(image_files[:3])
    assert updates == [3]
    updates.clear()
    emb.transform(image_files)  # the first three come from the memo: 3 to embed, one batch
    assert updates == [3]
    updates.clear()
    emb.set_params(memo_size=0).transform(image_files)
    assert updates == [4, 2]


# ------------------------------------------------- the in-memory memo
@pytest.fixture
def count_rows(monkeypatch):
    """Rows that go through the backbone's forward pass."""
    rows = []
    real = _backbone.Backbone.encode
    monkeypatch.setattr(_backbone.Backbone, "encode", lambda self, x: rows.append(len(x)) or real(self, x))
    return rows


def _environment_images(folder, n_per_environment=8):
    """3 environments x 2 classes of small PNG files; class 1 is redder."""
    rng = np.random.default_rng(3)
    paths, y, environments = [], [], []
    for e in range(3):
        for i in range(n_per_environment):
            pixels = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
            pixels[:, :, 0] += 50 * (i % 2)
            paths.append(str(folder / f"{e}-{i}.png"))
            Image.fromarray(pixels).save(paths[-1])
            y.append(i % 2)
            environments.append(e)
    return paths, np.array(y), np.array(environments)


def test_grid_search_embeds_each_image_once(tiny_model, tmp_path, count_rows):
    """The README's pipeline in a GridSearchCV: without memory=, each distinct image is embedded once."""
    from sklearn.model_selection import LeaveOneGroupOut

    paths, y, environments = _environment_images(tmp_path)

    def search(memo_size):
        pipe = make_pipeline(cpu_embedder(tiny_model, memo_size=memo_size), InvariantProjector(),
                             LogisticRegression(max_iter=1000))
        grid = {"invariantprojector__n_components": [2, 4], "logisticregression__C": [0.1, 1.0]}
        return GridSearchCV(pipe, grid, cv=LeaveOneGroupOut()).fit(
            paths, y, groups=environments, invariantprojector__environments=environments)

    reused = search(512)
    assert sum(count_rows) == len(paths)
    count_rows.clear()
    again = search(0)
    # 4 candidates x 3 folds (fit on two environments, score on the third) + the refit
    assert sum(count_rows) == 4 * 3 * len(paths) + len(paths)
    np.testing.assert_array_equal(reused.cv_results_["mean_test_score"], again.cv_results_["mean_test_score"])
    assert reused.best_params_ == again.best_params_
    np.testing.assert_array_equal(reused.predict(paths), again.predict(paths))
    np.testing.assert_allclose(reused.best_estimator_[0].transform(paths),
                               again.best_estimator_[0].transform(paths), rtol=1e-5, atol=1e-6)


def test_memo_is_shared_by_clones_and_can_be_turned_off(tiny_model, rgb_images, count_rows):
    emb = cpu_embedder(tiny_model)
    first = emb.transform(rgb_images)
    assert sum(count_rows) == 6
    np.testing.assert_array_equal(clone(emb).transform(rgb_images[::-1]), first[::-1])
    assert sum(count_rows) == 6
    off = cpu_embedder(tiny_model, memo_size=0)
    np.testing.assert_allclose(off.transform(rgb_images), first, atol=1e-6)
    assert sum(count_rows) == 12
    emb.set_params(precision="bf16").transform(rgb_images)  # another model: other entries
    assert sum(count_rows) == 18


def test_memo_is_bounded_and_keeps_the_first_inputs_of_a_call_too_large(tiny_model, rgb_images, count_rows):
    from clip_invariance.embedding._cache import _entry_size, item_key

    row = np.zeros(32, np.float32)
    sizes = {_entry_size(item_key(image, "image", strict=True), row) for image in rgb_images}
    (entry,) = sizes  # a row of the tiny model and its key: the same for every image here
    emb = cpu_embedder(tiny_model, memo_size=3.5 * entry / 2**20)  # room for 3 entries
    first = emb.transform(rgb_images)
    memo = _backbone.get_backbone(tiny_model, None, "cpu", "fp32")._embedding_memo
    assert len(memo.rows) == 3 and memo.nbytes == 3 * entry
    count_rows.clear()
    # The first three are kept (least-recently-used eviction alone would keep the last
    # three, and a call in input order would then miss every one): only the rest is embedded.
    np.testing.assert_allclose(emb.transform(rgb_images), first, atol=1e-6)
    assert sum(count_rows) == 3
    count_rows.clear()
    emb.transform(rgb_images[3:])  # a new call: the entries of older calls make room for it
    assert sum(count_rows) == 3
    emb.transform(rgb_images[3:])
    assert sum(count_rows) == 3
    emb.set_params(memo_size=1.5 * entry / 2**20).transform(rgb_images[:1])  # a smaller size trims the memo
    assert len(memo.rows) == 1 and memo.nbytes <= 1.5 * entry


def test_an_input_given_twice_is_embedded_once(tiny_model, rgb_images, image_files, count_rows):
    X = cpu_embedder(tiny_model).transform(image_files[:3] + image_files[:3] + rgb_images[:1] * 2)
    assert sum(count_rows) == 4
    np.testing.assert_array_equal(X[:3], X[3:6])
    np.testing.assert_array_equal(X[6], X[7])


def test_memo_sees_a_file_rewritten_with_its_old_size_and_mtime(tiny_model, tmp_path, count_rows):
    """``cp -p`` keeps size and mtime; the memo's key also holds the status-change time."""
    path = tmp_path / "image.bmp"  # BMP: same size whatever the pixels
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    stat = os.stat(path)
    emb = cpu_embedder(tiny_model)
    before = emb.transform([str(path)])
    Image.fromarray(np.full((32, 32, 3), 255, dtype=np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    after = emb.transform([str(path)])
    assert sum(count_rows) == 2 and not np.allclose(after, before)


def test_memo_hits_are_written_to_the_disk_cache(tiny_model, image_files, tmp_path, count_rows):
    first = cpu_embedder(tiny_model).transform(image_files)  # in memory only
    cached = cpu_embedder(tiny_model, memory=tmp_path / "cache").transform(image_files)
    np.testing.assert_array_equal(cached, first)
    assert sum(count_rows) == 6 and len(_entries(tmp_path / "cache")) == 6
    from_disk = cpu_embedder(tiny_model, memory=tmp_path / "cache", memo_size=0).transform(image_files)
    np.testing.assert_array_equal(from_disk, first)
    assert sum(count_rows) == 6


def test_memo_shared_by_threads_gives_the_same_search(tiny_model, tmp_path):
    """GridSearchCV with threads: the clones read and write one memo at once (it holds a lock)."""
    from joblib import parallel_backend
    from sklearn.model_selection import LeaveOneGroupOut

    paths, y, environments = _environment_images(tmp_path)
    pipe = make_pipeline(cpu_embedder(tiny_model), InvariantProjector(), LogisticRegression(max_iter=1000))
    grid = {"invariantprojector__n_components": [2, 4], "logisticregression__C": [0.1, 1.0]}
    fit = {"groups": environments, "invariantprojector__environments": environments}
    serial = GridSearchCV(clone(pipe).set_params(clipembedder__memo_size=0), grid,
                          cv=LeaveOneGroupOut()).fit(paths, y, **fit)
    with parallel_backend("threading", n_jobs=4):
        threaded = GridSearchCV(pipe, grid, cv=LeaveOneGroupOut(), n_jobs=4).fit(paths, y, **fit)
    scores = [search.cv_results_["mean_test_score"] for search in (threaded, serial)]
    np.testing.assert_array_equal(*scores)


@pytest.mark.parametrize("params", [{}, {"memo_size": 0, "memory": "cache"}], ids=["memo", "memory"])
def test_ctrl_c_keeps_every_finished_batch(tiny_model, image_files, tmp_path, monkeypatch, params):
    """Interrupted in its third batch of two, a transform run again embeds only the last two images."""
    if "memory" in params:
        params = {**params, "memory": tmp_path / "cache"}
    rows = []
    real = _backbone.Backbone.encode

    def encode(self, inputs):
        if len(rows) == 2:
            raise KeyboardInterrupt
        rows.append(len(inputs))
        return real(self, inputs)

    monkeypatch.setattr(_backbone.Backbone, "encode", encode)
    emb = cpu_embedder(tiny_model, batch_size=2, **params)
    with pytest.raises(KeyboardInterrupt):
        emb.transform(image_files)
    monkeypatch.setattr(_backbone.Backbone, "encode", lambda self, x: rows.append(len(x)) or real(self, x))
    resumed = emb.transform(image_files)
    assert rows == [2, 2, 2]
    reference = cpu_embedder(tiny_model, memo_size=0).transform(image_files)
    np.testing.assert_allclose(resumed, reference, atol=1e-5)
