"""Shared fixtures: a tiny open_clip model (random weights, no network) and pacs-mini."""

import json
import tempfile
from pathlib import Path

import pytest

TINY_MODEL = "clipinv-tiny-test"

# ViT with 4 patches of 16 px and a 2-layer text tower: builds and runs in
# milliseconds on CPU. The vocabulary matches open_clip's bundled tokenizer.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

PACS_MINI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pacs-mini"


def register_tiny_model():
    """Register the tiny config with open_clip (idempotent); return its name."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="clipinv-config-"))
        (folder / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(folder)
    return TINY_MODEL


# Registered at collection time: tests/test_common.py builds its estimator list on import.
register_tiny_model()


@pytest.fixture(scope="session")
def tiny_model():
    return register_tiny_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """A tiny-model checkpoint with weights unlike the seeded random init, saved three ways."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(123)
    model = open_clip.create_model(tiny_model, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {
        "safetensors": folder / "tiny.safetensors",
        "bin": folder / "tiny.bin",
        "pt": folder / "tiny.pt",
    }
    save_file(state, str(paths["safetensors"]))
    torch.save(state, paths["bin"])
    torch.save({"state_dict": state}, paths["pt"])
    return paths


def pytest_collection_modifyitems(items):
    """Every test that asks for the real pacs-mini images is end to end: mark it slow.

    Here rather than on each test, so that a new pacs-mini test is marked too. The other
    slow tests (examples, docs, README) carry ``@pytest.mark.slow`` themselves.
    """
    for item in items:
        if "pacs_mini" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pacs_mini():
    if not PACS_MINI.is_dir():
        pytest.skip(f"pacs-mini images not found at {PACS_MINI}")
    return PACS_MINI.resolve()


@pytest.fixture
def count_loads(monkeypatch):
    """Count calls to open_clip's model factory, starting from an empty backbone cache."""
    import open_clip

    from clip_invariance.embedding import clear_backbone_cache

    clear_backbone_cache()
    calls = []
    real = open_clip.create_model_and_transforms

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", counting)
    yield calls
    clear_backbone_cache()
