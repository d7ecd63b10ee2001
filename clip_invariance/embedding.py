"""CLIPEmbedder: a frozen open_clip backbone as a scikit-learn transformer.

The data path is ``inputs -> decode (DataLoader workers) -> preprocess ->
batched forward -> float32 embeddings``. torch and open_clip are imported
inside the functions that need them, so importing this module is cheap.

The loaded backbone never lives on the estimator: it sits in a small
module-level cache keyed on what determines the weights, so pickling an
embedder stores only its parameters and clones (GridSearchCV candidates)
share one loaded model.
"""

import os
import socket
import sys
import warnings
from collections import OrderedDict
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_memory

from .similarity import l2_normalize

__all__ = ["CLIPEmbedder", "read_image", "clear_backbone_cache"]

# Loaded backbones, most recently used last. Two entries let a user compare two
# models without reloading, while bounding the memory held by the process.
_BACKBONES = OrderedDict()
_MAX_BACKBONES = 2

_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HUB_HOST = "huggingface.co"


def clear_backbone_cache():
    """Forget every loaded backbone (frees their memory once unreferenced).

    Examples
    --------
    >>> from clip_invariance.embedding import clear_backbone_cache
    >>> clear_backbone_cache()
    """
    _BACKBONES.clear()


class CLIPEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Embed images or texts with a frozen open_clip model.

    The first step of ``Pipeline([CLIPEmbedder(), InvariantProjector(),
    LogisticRegression()])``. Nothing is learned: :meth:`fit` only loads the
    backbone and records the embedding size, and :meth:`transform` works
    without it.

    Parameters
    ----------
    model_name : str, default="ViT-B-32"
        open_clip architecture, or ``"hf-hub:org/repo"`` /
        ``"local-dir:/path"`` (then ``pretrained`` is ignored, as in open_clip).
        OpenAI checkpoints were trained with QuickGELU: with a pretrained
        *tag* open_clip switches it on by itself; with a checkpoint *file*
        use a ``-quickgelu`` name (e.g. ``"ViT-B-32-quickgelu"``), otherwise
        the embeddings are silently degraded (a warning is issued when the
        file name contains "openai").
    pretrained : str, path or None, default="openai"
        open_clip pretrained tag (looked up in the local cache first; when it
        is not cached and the hub cannot be reached, a clear error comes
        at once instead of minutes of retries), a local ``.safetensors`` /
        ``.bin`` / ``.pt`` checkpoint (read with ``weights_only=True``, so no
        arbitrary object is unpickled), or ``None`` for random weights
        (seeded, hence reproducible; for tests and benchmarks).
    device : str, default="auto"
        ``"auto"`` picks CUDA, then MPS, then CPU; or any torch device string.
    precision : {"auto", "fp32", "fp16", "bf16"}, default="auto"
        Autocast precision of the forward pass; ``"auto"`` is fp16 on CUDA and
        MPS and fp32 on CPU. Outputs are float32 whatever the precision.
    batch_size : int, default=64
        Inputs per forward pass (and per cache entry when ``memory`` is set).
    num_workers : int or "auto", default="auto"
        DataLoader processes that decode and preprocess image files.
        ``"auto"``: up to 8 on a GPU, and on CPU half the cores minus one
        (the forward pass needs the rest). In-memory images and texts are
        always prepared in the main process.
    normalize : bool, default=False
        L2-normalise each embedding. Off by default because
        :class:`InvariantProjector` recovers the invariant subspace best from
        raw embeddings (what CLIP-ICM uses): on the synthetic benchmark the
        subspace overlap is 0.999 raw against 0.988 normalised (ratio solver,
        ``lam=10``), and the paper's difference solver fails on normalised
        inputs. Cosine-based zero-shot scoring normalises anyway.
    modality : {"image", "text"}, default="image"
        What :meth:`transform` embeds.
    memory : str, path or joblib.Memory, default=None
        Cache of embeddings, in the scikit-learn style. Each batch is stored
        under the model's identity and the identity of its inputs (a file's
        absolute path, size and modification time; the pixels of an
        in-memory image; the text), so re-embedding the same files is free
        and the batches done before a failure are kept.
    progress : bool or "auto", default="auto"
        Show a tqdm bar over batches; ``"auto"`` shows it when there are more
        than 10 batches and stderr is a terminal.
    on_error : {"raise", "nan"}, default="raise"
        What an unreadable image does: ``"raise"`` a ValueError naming its
        index and file; ``"nan"`` gives its row NaN values (so the output
        stays aligned with ``y``) and warns with the list of skipped inputs.

    Attributes
    ----------
    embedding_dim_ : int
        Size ``D`` of the embeddings.
    device_ : str
        Device the backbone runs on.
    precision_ : str
        Precision actually used.

    See Also
    --------
    clip_invariance.augmentation.make_image_interventions : Augmented views
        and group ids for :class:`InvariantProjector`.

    Notes
    -----
    Accepted inputs: a list, tuple, 1-D array or pandas Series of image file
    paths, PIL images or uint8 arrays of shape (H, W), (H, W, 3) or (H, W, 4)
    (float arrays in [0, 1] too); a 4-D (n, H, W, C) or 3-D (n, H, W) array
    of images; a list of strings when ``modality="text"``. A bare 2-D array
    is refused as ambiguous. Grayscale, palette, 16-bit and CMYK images are
    converted to RGB; transparent pixels are composited on white.

    Examples
    --------
    Random weights stand in for a pretrained model here:

    >>> import numpy as np
    >>> from clip_invariance import CLIPEmbedder
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    >>> emb = CLIPEmbedder("RN50", pretrained=None, device="cpu", batch_size=2)
    >>> emb.fit_transform(images).shape
    (2, 1024)
    >>> emb.set_params(modality="text").transform(["a photo of a dog"]).dtype
    dtype('float32')
    """

    _parameter_constraints: dict = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "precision": [StrOptions({"auto", "fp32", "fp16", "bf16"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "normalize": ["boolean"],
        "modality": [StrOptions({"image", "text"})],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "progress": ["boolean", StrOptions({"auto"})],
        "on_error": [StrOptions({"raise", "nan"})],
    }

    def __init__(
        self,
        model_name="ViT-B-32",
        pretrained="openai",
        *,
        device="auto",
        precision="auto",
        batch_size=64,
        num_workers="auto",
        normalize=False,
        modality="image",
        memory=None,
        progress="auto",
        on_error="raise",
    ):
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.modality = modality
        self.memory = memory
        self.progress = progress
        self.on_error = on_error

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the backbone and record the embedding size.

        Parameters
        ----------
        X : ignored
            Present for API consistency; nothing is learned from the inputs
            (a sparse matrix is refused: it cannot hold images or texts).
        y : ignored

        Returns
        -------
        self : object
            The embedder, with its backbone loaded.
        """
        if hasattr(X, "tocsr"):
            raise TypeError("Sparse matrices are not images or texts.")
        backbone = self._backbone()
        self.device_ = backbone.device
        self.precision_ = backbone.precision
        self.embedding_dim_ = backbone.embedding_dim
        self._n_features_out = backbone.embedding_dim
        return self

    def transform(self, X):
        """Embed every input.

        Parameters
        ----------
        X : list, tuple, ndarray or pandas Series of n inputs
            Images (paths, PIL images, arrays) or, for ``modality="text"``,
            strings. See the class notes for the exact contract.

        Returns
        -------
        X_embedded : ndarray of shape (n, embedding_dim), float32
            One embedding per input; NaN rows for skipped images when
            ``on_error="nan"``.
        """
        self._validate_params()
        items = _as_items(X, self.modality)
        backbone = self._backbone()
        batches = [
            np.arange(start, min(start + self.batch_size, len(items)))
            for start in range(0, len(items), self.batch_size)
        ]
        out = np.full((len(items), backbone.embedding_dim), np.nan, dtype=np.float32)

        memory = self.memory
        memory = check_memory(os.fspath(memory) if isinstance(memory, os.PathLike) else memory)
        cached, keys = None, {}
        if memory.location is not None:
            cached = memory.cache(_forward_batch, ignore=["inputs", "backbone"])
            keys = {i: _item_key(item, self.modality) for i, item in enumerate(items)}
        model_id = backbone.identity

        def cache_keys(idx):
            """The batch's cache key, or None when it must not be cached."""
            batch_keys = [keys[i] for i in idx] if cached is not None else [None]
            return None if None in batch_keys else batch_keys

        todo = []
        for idx in batches:
            batch_keys = cache_keys(idx)
            if batch_keys and cached.check_call_in_cache(model_id, batch_keys, inputs=None, backbone=None):
                out[idx] = cached(model_id, batch_keys, inputs=None, backbone=None)
            else:
                todo.append(idx)

        skipped = []
        for idx, kept, inputs, failures in self._prepared_batches(items, todo, backbone):
            for i, reason in failures:
                if self.on_error == "raise":
                    raise ValueError(f"Cannot read input {i} ({_describe(items[i])}): {reason}")
                skipped.append(f"{i} ({_describe(items[i])}): {reason}")
            batch_keys = cache_keys(idx)
            if batch_keys and not failures:
                out[idx] = cached(model_id, batch_keys, inputs=inputs, backbone=backbone)
            elif len(kept):
                # Batches with a bad or unidentifiable input are computed, never cached.
                out[kept] = _forward_batch(model_id, None, inputs, backbone)
        if skipped:
            warnings.warn(
                f"Skipped {len(skipped)} unreadable input(s); their rows are NaN: "
                + "; ".join(skipped),
                UserWarning,
                stacklevel=2,
            )
        return l2_normalize(out) if self.normalize else out

    # ---------------------------------------------------------------- helpers
    def _backbone(self):
        return _get_backbone(self.model_name, self.pretrained, self.device, self.precision)

    def _prepared_batches(self, items, batches, backbone):
        """Yield ``(indices, kept indices, model inputs, [(index, reason), ...])`` per batch."""
        if not batches:
            return
        if self.modality == "text":
            for idx in self._progress(batches):
                yield idx, idx, backbone.tokenizer([items[i] for i in idx]), []
            return
        import torch
        from torch.utils.data import DataLoader

        # Workers pay off for decoding files and augmenting views, not for pixels in memory.
        lazy = any(isinstance(items[i], (str, os.PathLike)) or _is_view(items[i]) for b in batches for i in b)
        workers = self._n_workers(backbone.device) if lazy else 0
        loader = DataLoader(
            _ImageDataset(items, backbone.preprocess),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=backbone.device.startswith("cuda"),
            worker_init_fn=_single_thread_worker if workers else None,
            persistent_workers=False,
        )
        for idx, (tensors, kept, failures) in zip(batches, self._progress(loader, len(batches))):
            inputs = torch.stack(tensors) if tensors else None
            yield idx, np.asarray(kept, dtype=np.intp), inputs, failures

    def _n_workers(self, device):
        if self.num_workers != "auto":
            return self.num_workers
        cores = os.cpu_count() or 1
        if device.startswith(("cuda", "mps")):
            return min(8, max(cores - 1, 0))
        return max(cores // 2 - 1, 0)

    def _progress(self, iterable, total=None):
        total = len(iterable) if total is None else total
        show = self.progress
        if show == "auto":
            show = total > 10 and sys.stderr.isatty()
        if not show:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=f"Embedding ({self.model_name})", unit="batch")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.string = self.modality == "text"
        tags.transformer_tags.preserves_dtype = ["float32"]
        # Outputs depend on batch composition at rounding level (BLAS paths, fp16 on GPU).
        tags.non_deterministic = True
        return tags


# ----------------------------------------------------------------- inputs
def _as_items(X, modality):
    """Turn the accepted collections into a list of single inputs."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            f"Expected a collection of inputs, got a single {type(X).__name__}; wrap it in a list."
        )
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # a DataFrame
        if X.shape[1] != 1:
            raise ValueError(f"A DataFrame input must have one column, got {X.shape[1]}.")
        X = X.iloc[:, 0]
    if hasattr(X, "tolist") and hasattr(X, "iloc"):  # a Series
        X = X.tolist()
    if hasattr(X, "tocsr"):
        raise TypeError("Sparse matrices are not images or texts.")
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim != 1:
                raise ValueError(f"An array of paths or texts must be 1-D, got shape {X.shape}.")
        elif X.ndim not in (3, 4):
            raise ValueError(
                f"A numeric array input must hold a batch of images of shape (n, H, W) or "
                f"(n, H, W, C), got shape {X.shape}; a 2-D array is ambiguous (pass "
                f"[image] for a single image)."
            )
    try:
        items = list(X)
    except TypeError:
        raise TypeError(f"Expected a collection of inputs, got {type(X).__name__}.") from None
    if not items:
        raise ValueError("Found 0 inputs; at least one is required.")
    for i, item in enumerate(items):
        if modality == "text":
            if not isinstance(item, str):
                raise TypeError(f"Input {i} must be a string for modality='text', got {type(item).__name__}.")
        elif not (isinstance(item, (str, os.PathLike, np.ndarray)) or _is_pil(item) or _is_view(item)):
            raise TypeError(
                f"Input {i} must be an image path, a PIL image, an array or a view with a "
                f"load_image() method, got {type(item).__name__}."
            )
    return items


def _is_pil(obj):
    return type(obj).__module__.startswith("PIL.")


def _is_view(obj):
    """Lazy images, such as the augmented views of make_image_interventions."""
    return callable(getattr(obj, "load_image", None))


def _describe(item):
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape}"
    if _is_view(item) and hasattr(item, "source"):
        return f"{item!r} of {_describe(item.source)}"
    return type(item).__name__


def _item_key(item, modality):
    """What identifies an input for the cache: file identity, pixels or text."""
    if modality == "text":
        return ("text", item)
    if _is_view(item):
        source = getattr(item, "source", None)
        if hasattr(item, "cache_key") and source is not None:
            return item.cache_key(_item_key(source, modality))
        return None  # an opaque view has no stable identity: never cached
    if isinstance(item, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(item))
        if not os.path.isfile(path):
            return ("missing", path)  # reported by the decoder with its index
        stat = os.stat(path)
        return ("file", path, stat.st_size, stat.st_mtime_ns)
    from joblib import hash as joblib_hash

    arr = np.asarray(item)
    return ("pixels", getattr(item, "mode", None), arr.shape, joblib_hash(arr))


# ------------------------------------------------------------------ images
def read_image(source):
    """Decode one image into an RGB PIL image.

    Handles what real datasets contain: EXIF rotation, grayscale, palette,
    16-bit, CMYK and transparent images (composited on white).

    Parameters
    ----------
    source : str, path, PIL image, ndarray or view
        A file, an image, a uint8 array of shape (H, W), (H, W, 3) or
        (H, W, 4) (float arrays with values in [0, 1] are accepted too), or
        an object with a ``load_image()`` method such as
        :class:`clip_invariance.augmentation.ImageView`.

    Returns
    -------
    image : PIL.Image.Image in mode "RGB"

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import read_image
    >>> read_image(np.zeros((4, 5), dtype=np.uint8)).size
    (5, 4)
    """
    from PIL import Image, ImageOps

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such image file: {path!r}")
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here
            image = ImageOps.exif_transpose(img)
    elif isinstance(source, np.ndarray):
        image = Image.fromarray(_array_to_uint8(source))
    elif _is_pil(source):
        image = source
    elif _is_view(source):
        image = source.load_image()
    else:
        raise TypeError(f"Cannot read an image from {type(source).__name__}.")
    return _to_rgb(image)


def _array_to_uint8(arr):
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"An image array must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}.")
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

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit (or int/float) grayscale: PIL's convert("RGB") would clip it.
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and arr.max() <= 1 else 65535.0
        arr = np.clip(arr / top * 255, 0, 255)
        image = Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


class _ImageDataset:
    """Decode + preprocess in DataLoader workers; failures become data, not crashes."""

    def __init__(self, items, preprocess):
        self.items = items
        self.preprocess = preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        try:
            return i, self.preprocess(read_image(self.items[i])), None
        except Exception as exc:  # reported with the index and file in the main process
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate(samples):
    tensors = [t for _, t, err in samples if err is None]
    kept = [i for i, _, err in samples if err is None]
    failures = [(i, err) for i, _, err in samples if err is not None]
    return tensors, kept, failures


def _single_thread_worker(_):
    import torch

    torch.set_num_threads(1)  # workers decode; the main process owns the cores for the forward


# ----------------------------------------------------------------- forward
def _forward_batch(model_id, keys, inputs, backbone):
    """Embed one batch; cached by ``(model_id, keys)`` when ``memory`` is set."""
    import torch

    device = torch.device(backbone.device)
    with torch.inference_mode(), backbone.autocast():
        inputs = inputs.to(device, non_blocking=True)
        if backbone.modality_of(inputs) == "text":
            feats = backbone.model.encode_text(inputs)
        else:
            feats = backbone.model.encode_image(inputs)
    return feats.float().cpu().numpy()


class _Backbone:
    """A loaded model with its preprocessing, tokenizer and runtime settings."""

    def __init__(self, model, preprocess, tokenizer, device, precision, identity):
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.identity = identity
        self.embedding_dim = _embedding_dim(model, device)

    def autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    @staticmethod
    def modality_of(inputs):
        import torch

        # Token ids are integers, pixels are floats.
        return "text" if not torch.is_floating_point(inputs) else "image"


def _embedding_dim(model, device):
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if isinstance(dim, Integral):
        return int(dim)
    import torch

    # No declared size (e.g. a timm tower): embed one token sequence and look.
    context = getattr(model, "context_length", None) or 77
    with torch.inference_mode():
        return int(model.encode_text(torch.zeros((1, context), dtype=torch.long, device=device)).shape[-1])


def _resolve_device(device):
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _resolve_precision(precision, device):
    if precision != "auto":
        return precision
    return "fp16" if device.startswith(("cuda", "mps")) else "fp32"


def _get_backbone(model_name, pretrained, device, precision):
    device = _resolve_device(device)
    precision = _resolve_precision(precision, device)
    pretrained = os.fspath(pretrained) if pretrained is not None else None
    identity = (model_name, pretrained, _file_identity(pretrained), device, precision)
    if identity in _BACKBONES:
        _BACKBONES.move_to_end(identity)
        return _BACKBONES[identity]
    model, preprocess, tokenizer = _load_model(model_name, pretrained, device)
    backbone = _Backbone(model, preprocess, tokenizer, device, precision, identity)
    _BACKBONES[identity] = backbone
    while len(_BACKBONES) > _MAX_BACKBONES:
        _BACKBONES.popitem(last=False)
    return backbone


def _file_identity(pretrained):
    if pretrained is not None and os.path.isfile(pretrained):
        stat = os.stat(pretrained)
        return (os.path.abspath(pretrained), stat.st_size, stat.st_mtime_ns)
    return None


def _load_model(model_name, pretrained, device):
    """Build the model with open_clip, resolving the weights offline-first."""
    import open_clip
    import torch

    kwargs = _weights_kwargs(model_name, pretrained)
    name = kwargs.pop("model_name")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # pretrained=None: the same random weights every load
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, device=device, weights_only=True, **kwargs
        )
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer


def _weights_kwargs(model_name, pretrained):
    """open_clip arguments that load the requested weights without needless network calls."""
    import open_clip

    if model_name.startswith("local-dir:"):
        return {"model_name": model_name}
    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:") :]
        snapshot = _cached_hub_snapshot(repo)
        if snapshot is not None:
            return {"model_name": f"local-dir:{snapshot}"}
        _require_hub(f"the model {model_name!r}", "CLIPEmbedder('local-dir:/path/to/folder')")
        return {"model_name": model_name}
    if pretrained is None:
        return {"model_name": model_name, "pretrained": None}
    if os.path.isfile(pretrained):
        if "openai" in os.path.basename(pretrained).lower() and "quickgelu" not in model_name.lower():
            warnings.warn(
                f"{pretrained!r} looks like an OpenAI checkpoint, which needs QuickGELU; "
                f"use model_name={model_name + '-quickgelu'!r} or the embeddings will be wrong.",
                UserWarning,
                stacklevel=4,
            )
        return {"model_name": model_name, "pretrained": pretrained}
    if Path(pretrained).suffix in _CHECKPOINT_SUFFIXES or os.sep in pretrained:
        raise FileNotFoundError(f"Checkpoint file not found: {pretrained!r}")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"Unknown pretrained tag {pretrained!r} for model {model_name!r}; known tags: {tags}. "
            "Or pass the path of a local checkpoint file."
        )
    cached = _cached_tag_file(cfg)
    if cached is None:
        _require_hub(
            f"the weights {model_name!r} / {pretrained!r}",
            f"CLIPEmbedder({model_name!r}, pretrained='/path/to/checkpoint.safetensors')",
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


def _cached_tag_file(cfg):
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


def _cached_hub_snapshot(repo):
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "open_clip_config.json")
    if not isinstance(config, str):
        return None
    folder = os.path.dirname(config)
    weights = [f for f in os.listdir(folder) if f.endswith(_CHECKPOINT_SUFFIXES)]
    return folder if weights else None


def _require_hub(what, alternative, quick_gelu=False):
    """Fail at once, with a way out, when the hub cannot be reached."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    if not offline:
        try:
            socket.create_connection((_HUB_HOST, 443), timeout=3).close()
            return
        except OSError:
            pass
    hint = " (OpenAI weights: use a '-quickgelu' model name with a file)" if quick_gelu else ""
    raise OSError(
        f"Cannot load {what}: they are not in the local cache and {_HUB_HOST} cannot be "
        f"reached. Download them once on a connected machine, or point at a local "
        f"checkpoint: {alternative}{hint}."
    )
