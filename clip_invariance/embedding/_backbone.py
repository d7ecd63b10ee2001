"""The frozen open_clip backbone behind :class:`~clip_invariance.CLIPEmbedder`.

The data path is ``(model_name, pretrained, device, precision) -> device and
precision checked against this machine -> weights resolved offline-first (a
cached tag file, a hub snapshot, a local checkpoint) -> open_clip builds the
model once, under a lock -> a Backbone in a small process-wide cache``.

The backbone never lives on the estimator: the cache is keyed on what
determines the weights, so a pickled embedder stores only its parameters and
clones (GridSearchCV candidates) share one loaded model. Loading holds one
lock, so a cold start from several threads loads the model once.

Every failure a user can cause comes out as one readable exception: an
unknown model or a checkpoint that does not fit it is a ValueError, a missing
file a FileNotFoundError, unreachable weights an OSError.
"""

import os
import pickle
import socket
import threading
import warnings
from collections import OrderedDict
from difflib import get_close_matches
from numbers import Integral
from pathlib import Path

__all__ = [
    "Backbone",
    "get_backbone",
    "clear_backbone_cache",
    "available_devices",
    "resolve_device",
    "resolve_precision",
    "load_model",
    "weights_kwargs",
]

# Loaded backbones, most recently used last. Two entries let a user compare two
# models without reloading, while bounding the memory held by the process.
_BACKBONES = OrderedDict()
_MAX_BACKBONES = 2
# One lock for lookups and loads: threads that start cold wait for the first load.
_LOCK = threading.Lock()

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_HOST = "huggingface.co"


def clear_backbone_cache():
    """Forget every loaded backbone (frees their memory once unreferenced).

    Examples
    --------
    >>> from clip_invariance.embedding import clear_backbone_cache
    >>> clear_backbone_cache()
    """
    with _LOCK:
        _BACKBONES.clear()


class Backbone:
    """A loaded model with its preprocessing, tokenizer and runtime settings.

    ``identity`` is the key of the backbone cache; ``weights`` adds what was
    actually read (the resolved checkpoint file, its size and modification
    time), so together they identify the embeddings this backbone gives.
    """

    def __init__(self, model, preprocess, tokenizer, device, precision, identity, weights):
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.identity = identity
        self.weights = weights
        self.embedding_dim = _embedding_dim(model, device)

    def autocast(self):
        """The autocast context of :attr:`precision` (none for fp32)."""
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def encode(self, inputs):
        """Embed a batch: pixels (floats) or token ids (integers) -> float32 ndarray (n, D)."""
        import torch

        with torch.inference_mode(), self.autocast():
            inputs = inputs.to(torch.device(self.device), non_blocking=True)
            if torch.is_floating_point(inputs):
                feats = self.model.encode_image(inputs)
            else:
                feats = self.model.encode_text(inputs)
        return feats.float().cpu().numpy()


def _embedding_dim(model, device):
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if isinstance(dim, Integral):
        return int(dim)
    import torch

    # No declared size (e.g. a timm tower): embed one token sequence and look.
    context = getattr(model, "context_length", None) or 77
    with torch.inference_mode():
        return int(model.encode_text(torch.zeros((1, context), dtype=torch.long, device=device)).shape[-1])


def get_backbone(model_name, pretrained, device, precision):
    """The cached backbone for these settings, loading it (once, under a lock) if needed.

    ``device`` and ``precision`` may be ``"auto"``; the backbone records what
    they resolved to.
    """
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    pretrained = os.fspath(pretrained) if pretrained is not None else None
    identity = (model_name, pretrained, _source_identity(model_name, pretrained), device, precision)
    with _LOCK:
        backbone = _BACKBONES.get(identity)
        if backbone is None:
            model, preprocess, tokenizer, weights = load_model(model_name, pretrained, device)
            backbone = Backbone(model, preprocess, tokenizer, device, precision, identity, weights)
            _BACKBONES[identity] = backbone
            while len(_BACKBONES) > _MAX_BACKBONES:
                _BACKBONES.popitem(last=False)
        _BACKBONES.move_to_end(identity)
    return backbone


def _source_identity(model_name, pretrained):
    """The files the weights will be read from, by size and modification time: new weights, new backbone.

    A ``local-dir:`` folder is named by ``model_name`` (``pretrained`` is
    ignored there): its weights files are what identifies it.
    """
    if model_name.startswith("local-dir:"):
        folder = model_name[len("local-dir:") :]
        return _weights_identity(model_name, None) if os.path.isdir(folder) else None
    return _file_identity(pretrained)


def _file_identity(path):
    if path is not None and os.path.isfile(path):
        stat = os.stat(path)
        return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    return None


# ------------------------------------------------------ device, precision
def available_devices():
    """The torch devices this machine can run on, e.g. ``["cpu", "cuda:0"]``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device):
    """``"auto"`` -> CUDA, then MPS, then CPU; any other device is checked now.

    A device this machine lacks raises a ValueError at once, instead of a torch
    error deep inside the first forward pass.

    Examples
    --------
    >>> from clip_invariance.embedding._backbone import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("tpu-please")
    Traceback (most recent call last):
    ...
    ValueError: Unknown device 'tpu-please'; available on this machine: ...
    """
    import torch

    available = available_devices()
    if device == "auto":
        if any(d.startswith("cuda") for d in available):
            return "cuda"
        return "mps" if "mps" in available else "cpu"
    listed = ", ".join(repr(d) for d in [*available, "auto"])
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {device!r}; available on this machine: {listed}.") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        usable = any(d.startswith("cuda") for d in available) and (
            parsed.index is None or f"cuda:{parsed.index}" in available
        )
    else:
        usable = parsed.type in available
    if not usable:
        raise ValueError(f"device={device!r} is not available on this machine; available: {listed}.")
    return device


def resolve_precision(precision, device):
    """``"auto"`` -> fp16 on CUDA and MPS, fp32 on CPU."""
    if precision != "auto":
        return precision
    return "fp16" if device.startswith(("cuda", "mps")) else "fp32"


# ----------------------------------------------------------------- loading
def load_model(model_name, pretrained, device):
    """Build the model with open_clip; returns ``(model, preprocess, tokenizer, weights)``.

    Random weights (``pretrained=None``) are seeded with 0 inside
    ``torch.random.fork_rng``, which puts torch's global generator back as it
    was; the caller holds the load lock, so no two loads interleave their
    draws. (torch has one CPU generator per process: a thread drawing from it
    *during* a load, outside this module, would still perturb that load.)
    """
    import open_clip
    import torch

    kwargs = weights_kwargs(model_name, pretrained)
    name = kwargs.pop("model_name")
    checkpoint = kwargs.get("pretrained")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # pretrained=None: the same random weights every load
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, device=device, weights_only=True, **kwargs
            )
    except (OSError, ValueError):
        raise
    except Exception as exc:
        if checkpoint is not None and os.path.isfile(checkpoint):
            raise ValueError(_checkpoint_error(checkpoint, model_name, exc)) from exc
        if checkpoint is not None or name.startswith("hf-hub:"):
            raise OSError(f"Cannot load the weights of {model_name!r} ({pretrained!r}): {exc}") from exc
        raise
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer, _weights_identity(name, checkpoint)


def _checkpoint_error(path, model_name, exc):
    message = " ".join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError) and "global" in message.lower():
        return (
            f"The checkpoint {path!r} holds pickled objects besides tensors; it is refused "
            f"(read with torch.load(weights_only=True), so that no code in it runs)."
        )
    if "state_dict" in message:  # torch's load_state_dict: missing, unexpected or mis-sized tensors
        return (
            f"The checkpoint {path!r} does not fit the model {model_name!r} (a checkpoint of "
            f"another architecture?): {message[:300]}"
        )
    return (
        f"Cannot read the checkpoint {path!r} (damaged, or not a checkpoint?): "
        f"{type(exc).__name__}: {message[:300]}"
    )


def _weights_identity(name, checkpoint):
    """The files the weights were read from, with their size and modification time."""
    if name.startswith("local-dir:"):
        folder = name[len("local-dir:") :]
        files = sorted(f for f in os.listdir(folder) if f.endswith(CHECKPOINT_SUFFIXES))
        return tuple(_file_identity(os.path.join(folder, f)) for f in files)
    if checkpoint is not None and os.path.isfile(checkpoint):
        return (_file_identity(checkpoint),)
    return ()


def weights_kwargs(model_name, pretrained):
    """open_clip arguments that load the requested weights without needless network calls."""
    import open_clip

    if model_name.startswith("local-dir:"):
        return {"model_name": model_name}
    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:") :]
        snapshot = cached_hub_snapshot(repo)
        if snapshot is not None:
            return {"model_name": f"local-dir:{snapshot}"}
        require_hub(f"the model {model_name!r}", "--model-name local-dir:/path/to/folder on the command "
                    "line, CLIPEmbedder('local-dir:/path/to/folder') in Python")
        return {"model_name": model_name}
    if open_clip.get_model_config(model_name.replace("/", "-")) is None:
        close = get_close_matches(model_name, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(
            f"Unknown model_name {model_name!r}; {hint}open_clip.list_models() lists the "
            "architectures, or use 'hf-hub:org/repo' or 'local-dir:/path'."
        )
    if pretrained is None:
        return {"model_name": model_name, "pretrained": None}
    if os.path.isfile(pretrained):
        if "openai" in os.path.basename(pretrained).lower() and "quickgelu" not in model_name.lower():
            warnings.warn(
                f"{pretrained!r} looks like an OpenAI checkpoint, which needs QuickGELU; "
                f"use model_name={model_name + '-quickgelu'!r} or the embeddings will be wrong.",
                UserWarning,
                stacklevel=6,  # the user's fit or transform call
            )
        return {"model_name": model_name, "pretrained": pretrained}
    if Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained:
        raise FileNotFoundError(f"Checkpoint file not found: {pretrained!r}")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"Unknown pretrained tag {pretrained!r} for model {model_name!r}; known tags: {tags}. "
            "Or pass the path of a local checkpoint file."
        )
    cached = cached_tag_file(cfg)
    if cached is None:
        require_hub(
            f"the weights {model_name!r} / {pretrained!r}",
            f"--pretrained /path/to/checkpoint.safetensors on the command line, "
            f"CLIPEmbedder({model_name!r}, pretrained='/path/to/checkpoint.safetensors') in Python",
            quick_gelu=cfg.get("quick_gelu", False),
        )
        return {"model_name": model_name, "pretrained": pretrained}
    # Load the cached file directly, carrying over what the tag implies.
    return {
        "model_name": model_name,
        "pretrained": cached,
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
    }


def cached_tag_file(cfg):
    """Local file of a pretrained tag if it was downloaded before, else None."""
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        stem = os.path.splitext(filename)[0]
        candidates = [stem + ".safetensors", filename, "open_clip_model.safetensors"]
        for name in candidates:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def cached_hub_snapshot(repo):
    """Folder of a cached ``hf-hub:`` repo holding a config and weights, else None."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "open_clip_config.json")
    if not isinstance(config, str):
        return None
    folder = os.path.dirname(config)
    weights = [f for f in os.listdir(folder) if f.endswith(CHECKPOINT_SUFFIXES)]
    return folder if weights else None


def require_hub(what, alternative, quick_gelu=False):
    """Fail at once, with a way out, when the hub cannot be reached."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    if not offline:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=3).close()
            return
        except OSError:
            pass
    hint = " (OpenAI weights: use a '-quickgelu' model name with a file)" if quick_gelu else ""
    raise OSError(
        f"Cannot load {what}: they are not in the local cache and {HUB_HOST} cannot be "
        f"reached. Download them once on a connected machine, or point at a local "
        f"checkpoint: {alternative}{hint}."
    )
