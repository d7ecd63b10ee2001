"""The shared backbone: weights resolution offline-first, devices, the cache and its lock."""

import json
import os
import shutil
import threading

import numpy as np
import pytest
from _cases import cpu_embedder

from clip_invariance import CLIPEmbedder
from clip_invariance.embedding import _backbone, clear_backbone_cache
from clip_invariance.embedding._backbone import available_devices, get_backbone, resolve_device


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(3)]


# ------------------------------------------------------------- threads
def test_cold_start_from_threads_loads_once_and_matches_a_serial_load(tiny_model, count_loads, images):
    import torch

    torch.manual_seed(1234)
    rng_before = torch.random.get_rng_state()
    n_threads = 4
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def work(k):
        try:
            barrier.wait()
            results[k] = cpu_embedder(tiny_model).transform(images)
        except Exception as exc:  # surfaced below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count_loads == [tiny_model]  # one load for four cold threads
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    # The seeded random weights leave torch's global generator as it was.
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    clear_backbone_cache()
    torch.manual_seed(99)  # whatever the global state, the random weights are the same
    np.testing.assert_array_equal(cpu_embedder(tiny_model).transform(images), results[0])
    assert len(count_loads) == 2


def test_cache_keeps_the_two_most_recent_backbones(tiny_model, tiny_checkpoint, count_loads):
    first = get_backbone(tiny_model, None, "cpu", "fp32")
    get_backbone(tiny_model, str(tiny_checkpoint["safetensors"]), "cpu", "fp32")
    assert get_backbone(tiny_model, None, "cpu", "fp32") is first  # now the most recently used
    get_backbone(tiny_model, None, "cpu", "bf16")  # evicts the least recently used: the checkpoint
    assert get_backbone(tiny_model, None, "cpu", "fp32") is first
    assert len(count_loads) == 3
    get_backbone(tiny_model, str(tiny_checkpoint["safetensors"]), "cpu", "fp32")
    assert len(count_loads) == 4


# ------------------------------------------------------------- devices
def test_devices_are_checked_against_this_machine():
    import torch

    assert available_devices()[0] == "cpu"
    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    else:
        with pytest.raises(ValueError, match=r"device='cuda' is not available on this .*: 'cpu'"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match=r"device='cuda:99' is not available"):
        resolve_device("cuda:99")


def test_unavailable_device_fails_before_loading(tiny_model, monkeypatch, count_loads):
    monkeypatch.setattr(_backbone, "available_devices", lambda: ["cpu"])
    assert resolve_device("auto") == "cpu"
    for device in ["cuda", "cuda:1", "mps"]:
        with pytest.raises(ValueError, match=rf"device='{device}' is not .*available: 'cpu', 'auto'\."):
            cpu_embedder(tiny_model, device=device).fit()
    assert count_loads == []


# ------------------------------------------------------------- weights
@pytest.fixture
def tiny_local_dir(tmp_path, tiny_checkpoint):
    """A folder in the layout of an open_clip hub repo: config JSON and weights."""
    from conftest import TINY_CONFIG

    folder = tmp_path / "tiny-repo"
    folder.mkdir()
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    shutil.copy(tiny_checkpoint["safetensors"], folder / "open_clip_model.safetensors")
    return folder


def test_local_dir_and_cached_hub_repo(tiny_model, tiny_checkpoint, tiny_local_dir, images, monkeypatch):
    expected = cpu_embedder(tiny_model, pretrained=tiny_checkpoint["safetensors"]).transform(images)
    got = cpu_embedder(f"local-dir:{tiny_local_dir}").transform(images)
    np.testing.assert_array_equal(got, expected)
    # A cached hub repo is read from its snapshot folder, with no network call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_backbone, "cached_hub_snapshot", lambda repo: str(tiny_local_dir))
    np.testing.assert_array_equal(cpu_embedder("hf-hub:org/tiny").transform(images), expected)
    monkeypatch.setattr(_backbone, "cached_hub_snapshot", lambda repo: None)
    clear_backbone_cache()
    with pytest.raises(OSError, match="not in the local cache.*local-dir:"):
        cpu_embedder("hf-hub:org/tiny").fit()


def test_backbone_records_the_weights_it_read(tiny_model, tiny_checkpoint, tiny_local_dir):
    path = str(tiny_checkpoint["safetensors"])
    assert get_backbone(tiny_model, path, "cpu", "fp32").weights[0][0] == path
    assert get_backbone(tiny_model, None, "cpu", "fp32").weights == ()
    local = get_backbone(f"local-dir:{tiny_local_dir}", None, "cpu", "fp32")
    assert local.weights[0][0] == str(tiny_local_dir / "open_clip_model.safetensors")


def test_uncached_tag_offline_fails_fast_with_a_way_out(monkeypatch, count_loads):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_backbone, "cached_tag_file", lambda cfg: None)
    with pytest.raises(OSError, match=r"(?s)not in the local cache.*pretrained='/path/to/.*quickgelu"):
        CLIPEmbedder("ViT-B-32", pretrained="openai", device="cpu").fit()
    assert count_loads == []  # refused before open_clip starts any download


def test_cached_tag_is_loaded_from_its_file_with_the_tag_settings(monkeypatch):
    monkeypatch.setattr(_backbone, "cached_tag_file", lambda cfg: "/cache/model.safetensors")
    kwargs = _backbone.weights_kwargs("ViT-B-32", "openai")
    assert kwargs["pretrained"] == "/cache/model.safetensors"
    assert kwargs["force_quick_gelu"] is True  # OpenAI weights were trained with QuickGELU
    assert kwargs["image_mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_openai_checkpoint_without_quickgelu_warns(tiny_model, tiny_checkpoint, tmp_path):
    path = tmp_path / "openai-tiny.safetensors"
    shutil.copy(tiny_checkpoint["safetensors"], path)
    with pytest.warns(UserWarning, match="QuickGELU.*-quickgelu") as record:
        cpu_embedder(tiny_model, pretrained=str(path)).fit()
    assert record[0].filename == __file__  # points at the user's call


def test_new_weights_in_a_local_dir_load_a_new_backbone(tiny_model, tiny_checkpoint, tiny_local_dir, images):
    """The backbone cache is keyed by the folder's weights files, as by a checkpoint file (issue 20, 2)."""
    name = f"local-dir:{tiny_local_dir}"
    first = get_backbone(name, None, "cpu", "fp32")
    assert get_backbone(name, None, "cpu", "fp32") is first
    weights = tiny_local_dir / "open_clip_model.safetensors"
    shutil.copy(tiny_checkpoint["safetensors"], weights)  # the same bytes, a new file: new weights to us
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = get_backbone(name, None, "cpu", "fp32")
    assert second is not first and second.weights != first.weights
