"""CLIPEmbedder: a frozen open_clip backbone as a scikit-learn transformer.

The data path is ``inputs -> embedding cache lookup (per input) -> the misses
in batches -> decode and preprocess (DataLoader workers,
:func:`~clip_invariance.embedding.read_image`) -> batched forward -> float32
embeddings -> written to the cache``. torch and open_clip are imported inside
the functions that need them, so importing this module is cheap; the loaded
model lives in the process-wide cache of ``_backbone.py``, never on the
estimator.

The embedding cache (``memory=``) is in ``_cache.py``.
"""

import os
import sys
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .._utils import DocLinkMixin, l2_normalize
from ._backbone import get_backbone
from ._cache import item_key, open_cache
from ._images import is_lazy_image, is_pil_image, read_image

__all__ = ["CLIPEmbedder"]


class CLIPEmbedder(DocLinkMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
        is not cached and the hub cannot be reached, an OSError comes at once
        instead of minutes of retries), a local ``.safetensors`` / ``.bin`` /
        ``.pt`` checkpoint (read with ``weights_only=True``, so no arbitrary
        object is unpickled), or ``None`` for random weights (seeded, hence
        reproducible; for tests and benchmarks).
    device : str, default="auto"
        ``"auto"`` picks CUDA, then MPS, then CPU; or a torch device string.
        A device this machine lacks is a ValueError at the first
        :meth:`fit` or :meth:`transform`.
    precision : {"auto", "fp32", "fp16", "bf16"}, default="auto"
        Autocast precision of the forward pass; ``"auto"`` is fp16 on CUDA and
        MPS and fp32 on CPU. Outputs are float32 whatever the precision.
    batch_size : int, default=64
        Inputs per forward pass.
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
        Folder of an embedding cache. Each input's embedding is one ``.npy``
        file under the model's identity and the input's identity (a file's
        absolute path, size and modification time; the pixels of an
        in-memory image; a view's recipe; the text), so re-embedding the same
        inputs is free whatever the batch size or order, adding inputs embeds
        only those, and the work done before a failure is kept. Entries are
        read with ``allow_pickle=False``; a damaged one is recomputed with a
        warning. A ``joblib.Memory`` is accepted for scikit-learn habits: only
        its ``location`` is used (``None``: no cache).
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
    clip_invariance.embedding.make_image_interventions : Augmented views
        and their ``view_groups`` for :class:`InvariantProjector`.
    clip_invariance.embedding.read_image : How every image input is decoded.

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
        backbone = get_backbone(self.model_name, self.pretrained, self.device, self.precision)
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
        backbone = get_backbone(self.model_name, self.pretrained, self.device, self.precision)
        out = np.full((len(items), backbone.embedding_dim), np.nan, dtype=np.float32)

        cache = open_cache(self.memory, backbone, self.modality)
        keys = [None] * len(items)
        todo = np.arange(len(items))
        if cache is not None:
            keys = [item_key(item, self.modality) for item in items]
            found = cache.read(keys, out)
            todo = np.flatnonzero(~found)
        batches = [todo[start : start + self.batch_size] for start in range(0, len(todo), self.batch_size)]

        skipped = []
        for kept, inputs, failures in self._prepared_batches(items, batches, backbone):
            for i, reason in failures:
                if self.on_error == "raise":
                    raise ValueError(f"Cannot read input {i} ({_describe(items[i])}): {reason}")
                skipped.append(f"{i} ({_describe(items[i])}): {reason}")
            if len(kept):
                out[kept] = backbone.encode(inputs)
                if cache is not None:
                    cache.write([keys[i] for i in kept], out[kept])
        if skipped:
            message = f"Skipped {len(skipped)} unreadable input(s); their rows are NaN: "
            warnings.warn(message + "; ".join(skipped), UserWarning, stacklevel=2)
        return l2_normalize(out) if self.normalize else out

    # ---------------------------------------------------------------- helpers
    def _prepared_batches(self, items, batches, backbone):
        """Yield ``(kept indices, model inputs, [(index, reason), ...])`` per batch."""
        if not batches:
            return
        if self.modality == "text":
            for idx in self._progress(batches, len(batches)):
                yield idx, backbone.tokenizer([items[i] for i in idx]), []
            return
        import torch
        from torch.utils.data import DataLoader

        # Workers pay off for decoding files and augmenting views, not for pixels in memory.
        todo = (items[i] for batch in batches for i in batch)
        lazy = any(isinstance(item, (str, os.PathLike)) or is_lazy_image(item) for item in todo)
        workers = self._n_workers(backbone.device) if lazy else 0
        loader = DataLoader(
            _ImageDataset(items, backbone.preprocess),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=backbone.device.startswith("cuda"),
            worker_init_fn=_single_thread_worker if workers else None,
            generator=torch.Generator(),  # its worker seeds must not draw from the global generator
        )
        # The bar wraps the loader itself: it must see the loader's end to reach its total.
        for tensors, kept, failures in self._progress(loader, len(batches)):
            inputs = torch.stack(tensors) if tensors else None
            yield np.asarray(kept, dtype=np.intp), inputs, failures

    def _n_workers(self, device):
        if self.num_workers != "auto":
            return self.num_workers
        cores = os.cpu_count() or 1
        if device.startswith(("cuda", "mps")):
            return min(8, max(cores - 1, 0))
        return max(cores // 2 - 1, 0)

    def _progress(self, iterable, total):
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
        single = type(X).__name__
        raise TypeError(f"Expected a collection of inputs, got a single {single}; wrap it in a list.")
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
        if modality == "text" and not isinstance(item, str):
            raise TypeError(f"Input {i} must be a string for modality='text', got {type(item).__name__}.")
        image_like = isinstance(item, (str, os.PathLike, np.ndarray)) or is_pil_image(item)
        if modality == "image" and not (image_like or is_lazy_image(item)):
            raise TypeError(
                f"Input {i} must be an image path, a PIL image, an array or a view with a "
                f"load_image() method, got {type(item).__name__}."
            )
    return items


def _describe(item):
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape}"
    if is_lazy_image(item) and hasattr(item, "source"):
        return f"{item!r} of {_describe(item.source)}"
    return type(item).__name__


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
