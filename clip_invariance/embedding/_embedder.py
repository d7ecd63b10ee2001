"""CLIPEmbedder: a frozen open_clip backbone as a scikit-learn transformer.

The data path is ``inputs -> embedding cache lookup (per input: on disk,
then the in-memory memo) -> the distinct misses in batches -> decode and
preprocess (DataLoader workers, :func:`~clip_invariance.embedding.read_image`)
-> batched forward -> float32 embeddings -> written to the caches, batch by
batch``. torch and open_clip are imported inside
the functions that need them, so importing this module is cheap; the loaded
model lives in the process-wide cache of ``_backbone.py``, never on the
estimator.

The embedding caches (``memory=`` on disk, ``memo_size=`` in memory) are in
``_cache.py``.
"""

import contextlib
import contextvars
import os
import sys
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .._utils import DocLinkMixin, l2_normalize
from ._backbone import get_backbone
from ._cache import item_key, open_cache, open_memo
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
    memo_size : float, default=512
        Megabytes of embeddings kept in memory, per loaded model and shared
        by every embedder of that model in the process (the clones of a
        ``GridSearchCV`` too), keyed per input as ``memory`` is (a file's
        identity also holds its inode and status-change time). So a grid
        search over ``Pipeline([CLIPEmbedder(), ...])`` embeds each input
        once, not once per candidate and fold, without ``memory``. Least
        recently used entries go first, but never those of the running call:
        one call larger than the memo keeps its first inputs. 512 MB hold
        about 200,000 ViT-B embeddings (512 floats, plus about 500 bytes of
        key each). ``0`` turns it off. ``clear_backbone_cache()`` frees it
        with the model. With ``n_jobs > 1`` each worker process has its own.
    progress : bool or "auto", default="auto"
        Show a tqdm bar that moves per batch, in inputs per second; ``"auto"``
        shows it when there are more than 10 batches and stderr is a terminal.
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
        "memo_size": [Interval(Real, 0, None, closed="left")],
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
        memo_size=512,
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
        self.memo_size = memo_size
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
        memo = open_memo(backbone, self.modality, self.memo_size)
        (todo, copies), disk_keys, memo_keys = self._look_up(items, cache, memo, out)
        batches = [todo[start : start + self.batch_size] for start in range(0, len(todo), self.batch_size)]

        skipped = []
        listener = _BATCH_LISTENER.get()
        for kept, inputs, failures in self._prepared_batches(items, batches, backbone):
            for i, reason in failures:
                if self.on_error == "raise":
                    raise ValueError(f"Cannot read input {i} ({_describe(items[i])}): {reason}")
                skipped.append(f"{i} ({_describe(items[i])}): {reason}")
            if len(kept):
                out[kept] = backbone.encode(inputs)
                if cache is not None:
                    cache.write([disk_keys[i] for i in kept], out[kept])
                if memo is not None:
                    memo.write([memo_keys[i] for i in kept], out[kept])
            if listener is not None:
                listener(kept, out[kept], len(kept) + len(failures))
        for i, first in copies:
            out[i] = out[first]
        if skipped:
            message = f"Skipped {len(skipped)} unreadable input(s); their rows are NaN: "
            warnings.warn(message + "; ".join(skipped), UserWarning, stacklevel=2)
        return l2_normalize(out) if self.normalize else out

    # ---------------------------------------------------------------- helpers
    def _look_up(self, items, cache, memo, out):
        """Fill ``out`` from the disk cache, then the memo; returns the distinct misses and both keys.

        The misses come as ``(indices, [(index, index of its first copy), ...])``:
        an input given twice is embedded once (when it has a key).
        """
        todo = np.arange(len(items))
        disk_keys = memo_keys = [None] * len(items)
        if cache is not None:
            disk_keys = [item_key(item, self.modality) for item in items]
            todo = np.flatnonzero(~cache.read(disk_keys, out))
        if memo is not None and len(todo):
            memo_keys = [None] * len(items)
            for i, key in zip(todo, memo.keys([items[i] for i in todo])):
                memo_keys[i] = key
            rows = memo.read([memo_keys[i] for i in todo])
            hits = [i for i, row in zip(todo, rows) if row is not None]
            for i, row in zip(todo, rows):
                if row is not None:
                    out[i] = row
            if cache is not None and hits:  # on disk too: memory= keeps all this process embedded
                cache.write([disk_keys[i] for i in hits], out[hits])
            todo = np.asarray([i for i, row in zip(todo, rows) if row is None], dtype=np.intp)
        return _distinct(todo, memo_keys if memo is not None else disk_keys), disk_keys, memo_keys

    def _prepared_batches(self, items, batches, backbone):
        """Yield ``(kept indices, model inputs, [(index, reason), ...])`` per batch."""
        if not batches:
            return
        with self._progress(sum(map(len, batches)), len(batches)) as bar:
            if self.modality == "text":
                for idx in batches:
                    yield idx, backbone.tokenizer([items[i] for i in idx]), []
                    bar.update(len(idx))
                return
            for inputs, kept, failures in self._image_loader(items, batches, backbone):
                yield np.asarray(kept, dtype=np.intp), inputs, failures
                bar.update(len(kept) + len(failures))

    def _image_loader(self, items, batches, backbone):
        """The DataLoader that decodes and preprocesses ``batches`` of ``items``: (tensor, kept, failures)."""
        import torch
        from torch.utils.data import DataLoader

        # Workers pay off for decoding files and augmenting views, not for pixels in memory.
        todo = (items[i] for batch in batches for i in batch)
        lazy = any(isinstance(item, (str, os.PathLike)) or is_lazy_image(item) for item in todo)
        workers = self._n_workers(backbone.device) if lazy else 0
        return DataLoader(
            _ImageDataset(items, backbone.preprocess),
            batch_sampler=[np.asarray(b).tolist() for b in batches],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=backbone.device.startswith("cuda"),
            worker_init_fn=_single_thread_worker if workers else None,
            generator=torch.Generator(),  # its worker seeds must not draw from the global generator
        )

    def _n_workers(self, device):
        if self.num_workers != "auto":
            return self.num_workers
        cores = os.cpu_count() or 1
        if device.startswith(("cuda", "mps")):
            return min(8, max(cores - 1, 0))
        return max(cores // 2 - 1, 0)

    def _progress(self, total, n_batches):
        show = self.progress
        if show == "auto":
            show = n_batches > 10 and sys.stderr.isatty()
        if not show:
            return contextlib.nullcontext(_NoBar())
        from tqdm.auto import tqdm

        # Counts the inputs embedded (not those found in a cache), batch by batch: the rate is theirs.
        return tqdm(total=total, desc=f"Embedding ({self.model_name})", unit=self.modality)

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
    import torch

    # Stacked in the worker: one tensor crosses to the main process, not one per image.
    tensors = [t for _, t, err in samples if err is None]
    kept = [i for i, _, err in samples if err is None]
    failures = [(i, err) for i, _, err in samples if err is not None]
    return (torch.stack(tensors) if tensors else None), kept, failures


def _distinct(todo, keys):
    """``todo`` without repeated keys, and the ``(index, first index)`` pairs of the repeats."""
    first, distinct, copies = {}, [], []
    for i in todo.tolist():
        key = keys[i]
        if key is None:
            distinct.append(i)
        elif key in first:
            copies.append((i, first[key]))
        else:
            first[key] = i
            distinct.append(i)
    return np.asarray(distinct, dtype=np.intp), copies


class _NoBar:
    def update(self, n):
        pass


# Who is told of each finished batch: (indices, rows, inputs done). embed_image_folder
# listens, to move its bar per batch and save every finished batch when interrupted.
_BATCH_LISTENER = contextvars.ContextVar("clip_invariance_batch_listener", default=None)


@contextlib.contextmanager
def listen_to_batches(listener):
    """Call ``listener(indices, rows, n_done)`` after each batch that ``transform`` embeds in this context."""
    token = _BATCH_LISTENER.set(listener)
    try:
        yield
    finally:
        _BATCH_LISTENER.reset(token)


def _single_thread_worker(_):
    import torch

    torch.set_num_threads(1)  # workers decode; the main process owns the cores for the forward
