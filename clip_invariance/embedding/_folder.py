"""Embed an image folder once into a store: images, augmented views, prompts and text interventions.

The data path is ``folder listing (with a shard, its part) -> every argument
and the weights checked -> one key per item (image, view, text) -> items
already in the store or its pending files are reused -> the others embedded
``save_every`` items at a time, each part saved at once (on an interruption,
every finished batch of the part in flight too) -> the store assembled and
swapped in``. An item's key is a digest of
the model's identity (with the weights files it reads) and what determines
the embedding: the image's path under the root, size and modification time
(or, with ``verify_content``, a digest of its bytes); for a view also its
index, the seed and the drawn transform; for a text the string. So an
interrupted run resumes where it stopped, another batch size re-embeds
nothing, and an added or changed file embeds only its own items. What is
reused is checked (damaged rows are embedded again), a store of another
model is not replaced without ``overwrite``, and each shard records the
listing it was cut from, so that shards of different listings never join.
"""

import hashlib
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..datasets import (
    check_shard_path,
    check_store_path,
    known_rows,
    load_embeddings,
    load_image_folder,
    save_embeddings,
    save_pending,
)
from ._augmentation import make_image_interventions
from ._backbone import get_backbone
from ._cache import digest
from ._embedder import CLIPEmbedder, listen_to_batches
from ._prompts import DEFAULT_SETTINGS, DEFAULT_STYLES, build_prompts, make_text_interventions

__all__ = [
    "embed_image_folder",
    "image_folder_views",
    "text_interventions_with_styles",
    "TEXT_TEMPLATE",
]

# The text-intervention template, passed explicitly so that each string's style can be told.
TEXT_TEMPLATE = "a {style} of a {classname}{setting}."


@validate_params(
    {
        "root": [str, os.PathLike],
        "store": [str, os.PathLike],
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "n_augmented": [Interval(Integral, 0, None, closed="left")],
        "template": [str],
        "ensemble_templates": [StrOptions({"simple", "openai"}), list, tuple, None],
        "text_styles": [list, tuple, None],
        "text_settings": [list, tuple],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "save_every": [Interval(Integral, 1, None, closed="left")],
        "progress": ["boolean"],
        "shard": [tuple, None],
        "verify_content": ["boolean"],
        "overwrite": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def embed_image_folder(
    root,
    store,
    *,
    model_name="ViT-B-32",
    pretrained="openai",
    device="auto",
    batch_size=64,
    num_workers="auto",
    n_augmented=1,
    template="a photo of a {}.",
    ensemble_templates="simple",
    text_styles=DEFAULT_STYLES,
    text_settings=DEFAULT_SETTINGS,
    random_state=0,
    save_every=512,
    progress=True,
    shard=None,
    verify_content=False,
    overwrite=False,
):
    """Embed a DomainBed-style image folder into an embedding store, resumably.

    Everything cheap is checked before anything is embedded: the arguments,
    the folder and its layout, the store path, the templates, and the weights
    (loaded once). Then the originals, ``n_augmented`` augmented views of each
    image, the class prompts (``template`` and the ensemble) and the text
    interventions are embedded ``save_every`` items at a time, each part saved
    under per-item keys as soon as it is done; the finished store replaces the
    previous one, and a second run over an unchanged folder embeds nothing.

    Parameters
    ----------
    root : str or path
        Folder laid out as ``<environment>/<class>/<image>``.
    store : str or path
        The store folder (created; an earlier store there is reused and
        replaced).
    model_name, pretrained, device, batch_size, num_workers
        As in :class:`~clip_invariance.CLIPEmbedder`.
    n_augmented : int, default=1
        Augmented views per image (:func:`~clip_invariance.embedding.make_image_interventions`);
        0 embeds the originals only.
    template : str, default="a photo of a {}."
        The single prompt template (CLIP-ICM's), stored as ``prompt_embeddings`` (C, D).
    ensemble_templates : {"simple", "openai"}, list of str or None, default="simple"
        Template ensemble stored as ``prompt_ensemble_embeddings`` (M, C, D);
        ``None``: none.
    text_styles : list of str or None, default=DEFAULT_STYLES
        Style words of the text interventions; ``None``: none.
    text_settings : list of str, default=DEFAULT_SETTINGS
        Background phrases of the text interventions.
    random_state : int, default=0
        Seed of the augmentations. Each image's views depend only on it and
        the image's path under ``root``, so adding a file changes no other view.
    save_every : int, default=512
        Items embedded and saved together in one pending file. An
        interruption (Ctrl-C, or any exception) loses only the batch in
        flight: the finished batches of the part are saved before it
        propagates.
    progress : bool, default=True
        Show a progress bar over items that moves per batch (those found in
        the store count as done); its rate is texts per second, then images
        per second, counting only what this run embeds.
    shard : tuple of (int, int), default=None
        ``(i, n)``: embed only the ``i``-th of ``n`` contiguous parts of the
        sorted image list (all the views of an image in its part) into the
        store's own folder ``store/shards/IIIII-of-NNNNN`` (prompts and text
        interventions in every shard). Each shard resumes like a store, and
        the ``n`` may run at once on machines sharing the filesystem: no file
        is written by two of them. ``load_embeddings(store)`` reads the
        complete shards as one store; each shard records a digest of the whole
        listing (paths, sizes, modification times) and its part, so shards cut
        from different listings are refused there, by name.
    verify_content : bool, default=False
        Key each image by a digest of its bytes instead of its modification
        time: a file rewritten with new content of the same size and its old
        modification time restored (``cp -p``, ``rsync -t``) is embedded
        again. Reads every image once per run. Switching it on or off embeds
        the images again once (other keys).
    overwrite : bool, default=False
        Replace a store of another model (another ``model_name`` or
        ``pretrained``). Without it such a store is refused, naming both
        models, before anything is embedded.

    Returns
    -------
    store : :class:`~sklearn.utils.Bunch`
        The store (with ``shard``, the shard's), as
        :func:`~clip_invariance.datasets.load_embeddings` reads it.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist, or a checkpoint file is missing.
    ValueError
        For a bad argument (``InvalidParameterError``, a ValueError), a folder
        without environment, class or image, an unknown model, a template
        without ``{}``, a store path that is not a store or lies inside
        ``root``, an unreadable image, a store of another model (without
        ``overwrite``); with ``shard``, more shards than images, or a store
        split into another number of shards.
    OSError
        If the weights are not cached and cannot be downloaded.

    Examples
    --------
    Random weights stand in for a pretrained model here:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from clip_invariance.embedding import embed_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for environment, cls in [("photo", "dog"), ("photo", "cat"), ("sketch", "dog")]:
    ...     (root / environment / cls).mkdir(parents=True)
    ...     Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / environment / cls / "1.png")
    >>> store = embed_image_folder(root, str(root) + "-store", model_name="RN50", pretrained=None,
    ...                            device="cpu", num_workers=0, ensemble_templates=None,
    ...                            text_styles=None, progress=False)
    >>> store.X.shape, store.views.shape, store.prompt_embeddings.shape
    ((3, 1024), (3, 1, 1024), (2, 1024))
    >>> store.environments.tolist(), store.class_names, store.text_interventions is None
    (['photo', 'photo', 'sketch'], ['cat', 'dog'], True)
    """
    # Absolute, links not resolved: every listed path stays under root.
    root, store = Path(os.path.abspath(root)), Path(os.path.abspath(store))
    index, count = (0, 1) if shard is None else _check_shard(shard)
    data = load_image_folder(root)
    cut = None
    if store == root or root in store.parents:
        raise ValueError(f"The store {str(store)!r} must not be inside the image folder {str(root)!r}: it "
                         "would be listed as an environment.")
    if shard is None:
        check_store_path(store)
    else:
        if count > len(data.paths):
            raise ValueError(f"{len(data.paths)} images cannot be split into {count} shards: use at most "
                             f"{len(data.paths)}.")
        store = check_shard_path(store, index, count)
        part = slice(index * len(data.paths) // count, (index + 1) * len(data.paths) // count)
        # What load_embeddings checks: every shard cut from this listing, together tiling it.
        listing = digest([_image_identity(path, root, verify_content=False) for path in data.paths])
        cut = {"index": index, "count": count, "listing": listing, "images": len(data.paths),
               "start": part.start, "stop": part.stop}
        data.update(paths=data.paths[part], y=data.y[part], environments=data.environments[part])
    classes = data.class_names
    strings = {"prompt_embeddings": build_prompts(classes, [template])[0]}
    if ensemble_templates is not None:
        strings["prompt_ensemble_embeddings"] = build_prompts(classes, ensemble_templates)
    texts = None
    if text_styles is not None:
        texts = text_interventions_with_styles(classes, text_styles, text_settings)
        strings["text_interventions"] = texts[0]

    # No memo: each item is embedded once here, and the store is what keeps it.
    images = CLIPEmbedder(model_name, pretrained, device=device, batch_size=batch_size,
                          num_workers=num_workers, memo_size=0, progress=False).fit()  # loads: fails fast
    encoders = {"image": images, "text": clone(images).set_params(modality="text")}
    model = _model_identity(images)
    model_key = digest(model)
    check_store_path(store, model=model, overwrite=overwrite)  # a store of another model: refused

    # One key per item; the item keys of a field have the field's shape without its last axis.
    views = image_folder_views(data.paths, root, n_augmented=n_augmented, random_state=random_state,
                               verify_content=verify_content)
    image_items = [(digest((model_key, view_key)), view) for _, image in views for view_key, view in image]
    image_keys = np.array([key for key, _ in image_items], dtype=str).reshape(len(views), 1 + n_augmented)
    item_keys = {"X": image_keys[:, 0]}
    if n_augmented:
        item_keys["views"] = image_keys[:, 1:]
    text_items = []
    for name, texts_of_field in strings.items():
        flat = np.ravel(texts_of_field).tolist()
        keys = [digest((model_key, "text", text)) for text in flat]
        item_keys[name] = np.array(keys, dtype=str).reshape(np.shape(texts_of_field))
        text_items += zip(keys, flat)

    known = known_rows(store, dim=model["embedding_dim"])
    todo = {"text": _missing(text_items, known), "image": _missing(image_items, known)}
    n_items = len({key for key, _ in image_items + text_items})
    with _progress_bar(progress, n_items, n_items - sum(map(len, todo.values())), model_name) as bar:
        for modality, items in todo.items():  # texts first: seconds, and then only images remain
            if items:
                _start_phase(bar, modality, model_name)
            for start in range(0, len(items), save_every):
                keys, inputs = zip(*items[start : start + save_every])
                embeddings = _embed_part(encoders[modality], store, keys, inputs, bar)
                save_pending(store, keys, embeddings)
                known.update(zip(keys, embeddings))

    arrays = {name: _gather(known, keys) for name, keys in item_keys.items()}
    if texts is not None:
        arrays.update(text_view_groups=texts[1], text_intervention_texts=texts[0],
                      text_intervention_styles=texts[2])
    settings = {
        "model": model,
        "device": getattr(images, "device_", device),
        "root": str(root),
        "images": {"n_augmented": n_augmented, "random_state": random_state, "transforms": "all",
                   "strength": 1.0, "key": "content" if verify_content else "mtime"},
        "prompts": {"template": template, "ensemble_templates": _template_strings(ensemble_templates)},
        "text_interventions": None if texts is None else {
            "template": TEXT_TEMPLATE, "styles": list(text_styles), "settings": list(text_settings)},
    }
    if cut is not None:
        settings["shard"] = cut
    save_embeddings(store, y=data.y, environments=data.environments, class_names=classes,
                    environment_names=data.environment_names, paths=data.paths, settings=settings,
                    item_keys=item_keys, **arrays)
    return load_embeddings(store)


def image_folder_views(paths, root, *, n_augmented, random_state, verify_content=False):
    """Each image's identity and its views: the original, then ``n_augmented`` augmented ones.

    An image's views are drawn by
    :func:`~clip_invariance.embedding.make_image_interventions` from a
    seed made of ``random_state`` and the image's path under ``root``, so
    they do not depend on which other files the folder holds.

    Parameters
    ----------
    paths : sequence of str
        Image files under ``root``.
    root : str or path
        The folder the identities are relative to.
    n_augmented : int
        Augmented views per image.
    random_state : int
        Seed of the augmentations.
    verify_content : bool, default=False
        Identify each image by a digest of its bytes instead of its
        modification time.

    Returns
    -------
    views : list of (tuple, list)
        Per image, its identity ``("file", path under root, size,
        modification time in ns)`` (with ``verify_content``, ``("content",
        path under root, size, BLAKE2b digest)``) and its ``1 + n_augmented`` views (the path,
        then :class:`~clip_invariance.embedding.ImageView` recipes), each
        view given as its identity and the input to embed.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from clip_invariance.embedding import image_folder_views
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "a.png").write_bytes(b"123")
    >>> [(identity, [key[0] for key, _ in views])
    ...  for identity, views in image_folder_views([root / "a.png"], root, n_augmented=2, random_state=0)]
    [(('file', 'a.png', 3, ...), ['original', 'view', 'view'])]
    """
    out = []
    for path in paths:
        path = os.fspath(path)
        identity = _image_identity(path, root, verify_content)
        views = [(("original", identity), path)]
        if n_augmented:
            seed = int.from_bytes(hashlib.blake2b(repr((random_state, identity[1])).encode(),
                                                  digest_size=4).digest(), "little") >> 1
            augmented, _ = make_image_interventions([path], n_augmented=n_augmented, include_original=False,
                                                    random_state=seed)
            views += [(("view", v + 1, random_state, view.cache_key(identity)), view)
                      for v, view in enumerate(augmented)]
        out.append((identity, views))
    return out


def _check_shard(shard):
    """``(index, count)`` of a shard given as a pair of integers, ``0 <= index < count``.

    >>> _check_shard((3, 8))
    (3, 8)
    >>> _check_shard((8, 8))
    Traceback (most recent call last):
    ...
    ValueError: shard must be (index, count) with 0 <= index < count, got (8, 8).
    """
    if (
        not isinstance(shard, (tuple, list)) or len(shard) != 2
        or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in shard)
        or not 0 <= shard[0] < shard[1]
    ):
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}.")
    return int(shard[0]), int(shard[1])


def text_interventions_with_styles(class_names, styles, settings):
    """Text interventions, their view groups and the style word of each string.

    The strings and groups are those of
    :func:`~clip_invariance.embedding.make_text_interventions` with
    :data:`TEXT_TEMPLATE`; the styles let an evaluation drop the strings that
    name its held-out environment.

    Examples
    --------
    >>> from clip_invariance.embedding import text_interventions_with_styles
    >>> texts, view_groups, styles = text_interventions_with_styles(["dog"], ["photo", "sketch"], [""])
    >>> texts, view_groups.tolist(), styles
    (['a photo of a dog.', 'a sketch of a dog.'], [0, 0], ['photo', 'sketch'])
    """
    texts, view_groups = make_text_interventions(class_names, styles, settings, template=TEXT_TEMPLATE)
    style_of = {}
    for style in styles:
        for setting in settings:
            setting = f" {setting}" if setting else ""
            filled = TEXT_TEMPLATE.format(style=style, classname="{}", setting=setting)
            for c, text in enumerate(build_prompts(class_names, [filled])[0]):
                style_of.setdefault((c, text), style)  # the first style that writes it, as the dedup keeps
    return texts, view_groups, [style_of[int(c), text] for text, c in zip(texts, view_groups)]


# ------------------------------------------------------------------ helpers
def _image_identity(path, root, verify_content):
    """What an image's key holds: its path under ``root``, size, and modification time or content digest."""
    stat = os.stat(path)
    relative = Path(os.path.relpath(path, root)).as_posix()
    if not verify_content:
        return ("file", relative, stat.st_size, stat.st_mtime_ns)
    content = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            content.update(block)
    return ("content", relative, stat.st_size, content.hexdigest())


def _model_identity(embedder):
    pretrained = embedder.pretrained
    if pretrained is not None and os.path.isfile(pretrained):
        stat = os.stat(pretrained)
        pretrained = {"file": os.path.abspath(pretrained), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    elif pretrained is not None:
        pretrained = os.fspath(pretrained)
    identity = {
        "model_name": embedder.model_name,
        "pretrained": pretrained,
        # fp16 on a GPU and fp32 on CPU give different embeddings: not the same items.
        "precision": getattr(embedder, "precision_", getattr(embedder, "precision", None)),
        "embedding_dim": int(embedder.embedding_dim_),
    }
    if embedder.model_name.startswith(("local-dir:", "hf-hub:")):  # the weights are in a folder, not named
        backbone = get_backbone(embedder.model_name, embedder.pretrained, embedder.device_,
                                embedder.precision_)
        identity["weights"] = [list(weights) for weights in backbone.weights]
    return identity


def _missing(items, known):
    seen, todo = set(), []
    for key, item in items:
        if key not in known and key not in seen:
            seen.add(key)
            todo.append((key, item))
    return todo


def _gather(known, keys):
    rows = [known[key] for key in keys.ravel().tolist()]
    return np.asarray(rows, dtype=np.float32).reshape(*keys.shape, -1)


def _template_strings(templates):
    if templates is None:
        return None
    return [row[0] for row in build_prompts(["{}"], templates)]


def _embed_part(encoder, store, keys, inputs, bar):
    """Embed one part; if anything interrupts it, save its finished batches before letting it through."""
    finished = []

    def on_batch(indices, rows, n_done):
        finished.append((indices, rows))
        bar.update(n_done)

    try:
        with listen_to_batches(on_batch):
            return encoder.transform(list(inputs))
    except BaseException:  # KeyboardInterrupt above all
        done = [(i, row) for indices, rows in finished for i, row in zip(indices.tolist(), rows)]
        if done:
            save_pending(store, [keys[i] for i, _ in done], np.asarray([row for _, row in done]))
        raise


def _progress_bar(show, total, done, model_name):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"Embedding ({model_name})", unit="item", disable=not show)


def _start_phase(bar, modality, model_name):
    """Name the phase in the bar and start its rate afresh: texts per second, then images per second."""
    n = bar.n
    bar.unit = modality
    bar.set_description(f"Embedding {modality}s ({model_name})", refresh=False)
    bar.reset(total=bar.total)  # a fresh clock and rate: the texts' speed says nothing of the images'
    bar.n = bar.last_print_n = bar.initial = n
