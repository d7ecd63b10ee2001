"""The text side: class prompts, prompt ensembles and text-based interventions.

Strings are built here and embedded by any text encoder -- a callable from a
list of strings to an ``(n, D)`` array -- so this works with
:class:`clip_invariance.CLIPEmbedder`-style encoders and with embeddings
computed elsewhere. CLIP's template lists come from open_clip, imported only
when they are asked for (open_clip imports torch).
"""

import numpy as np

__all__ = [
    "DEFAULT_SETTINGS",
    "DEFAULT_STYLES",
    "build_prompts",
    "encode_prompts",
    "get_templates",
    "make_text_interventions",
]

# Domain/style words: each changes how a class looks, never what it is.
DEFAULT_STYLES = (
    "photo",
    "sketch",
    "painting",
    "cartoon",
    "clipart illustration",
    "thermal infrared photo",
    "low-light photo",
    "blurry photo",
    "black and white photo",
    "pixelated photo",
    "pencil drawing",
    "3D render",
)

# Background/setting phrases; "" leaves the setting unsaid.
DEFAULT_SETTINGS = ("", "indoors", "in the snow", "on the grass", "on a plain white background")


def get_templates(name="simple"):
    """Return one of CLIP's zero-shot template lists, as shipped by open_clip.

    Parameters
    ----------
    name : {"simple", "openai"}, default="simple"
        ``"simple"``: the 7 templates of open_clip's
        ``SIMPLE_IMAGENET_TEMPLATES``; ``"openai"``: the 80 templates of
        CLIP's ImageNet prompt ensemble (``OPENAI_IMAGENET_TEMPLATES``).

    Returns
    -------
    templates : list of callable
        Each maps a class name to a prompt string.

    Examples
    --------
    >>> from clip_invariance.embedding import get_templates
    >>> len(get_templates("simple")), len(get_templates("openai"))
    (7, 80)
    >>> get_templates("openai")[0]("dog")
    'a bad photo of a dog.'
    """
    # open_clip's package import pulls torch: keep it out of `import clip_invariance`.
    from open_clip import zero_shot_metadata

    lists = {
        "simple": zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES,
        "openai": zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES,
    }
    if name not in lists:
        raise ValueError(f"Unknown template set {name!r}; choose 'simple' or 'openai'.")
    return list(lists[name])


def build_prompts(class_names, templates="simple"):
    """Prompt strings for every template and class, shaped ``(M, C)``.

    Parameters
    ----------
    class_names : sequence of str
        The ``C`` class names, e.g. ``["dog", "guitar"]``. Underscores are
        read as spaces (``"hot_dog"`` -> ``"hot dog"``), as in folder names.
    templates : {"simple", "openai"} or sequence of (str or callable), default="simple"
        A template set of :func:`get_templates`, or ``M`` templates: strings
        with a ``{}`` or ``{classname}`` placeholder, or callables from a class
        name to a string.

    Returns
    -------
    prompts : list of M lists of C str
        ``prompts[m][c]`` is template ``m`` filled with class ``c``.

    Examples
    --------
    >>> from clip_invariance.embedding import build_prompts
    >>> build_prompts(["dog", "hot_dog"], ["a photo of a {}.", "a sketch of a {classname}."])
    [['a photo of a dog.', 'a photo of a hot dog.'],
     ['a sketch of a dog.', 'a sketch of a hot dog.']]
    """
    names = _clean_class_names(class_names)
    if isinstance(templates, str):
        templates = get_templates(templates)
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty.")
    return [[_fill(template, name) for name in names] for template in templates]


def make_text_interventions(
    class_names,
    styles=DEFAULT_STYLES,
    settings=DEFAULT_SETTINGS,
    template="a {style} of a {classname}{setting}.",
):
    """Text-based interventional data: each class described under many styles.

    Every description of one class shares its content (the class) and differs
    only in variant factors (domain/style and background/setting), which is
    exactly what the invariant projection needs. All style x setting
    combinations are generated, and each string's group id is its class
    index, so once embedded they go straight into
    :class:`~clip_invariance.InvariantProjector` as ``intervention_embeddings``
    and ``intervention_view_groups``.

    Parameters
    ----------
    class_names : sequence of str
        The class names (underscores read as spaces).
    styles : sequence of str, default=DEFAULT_STYLES
        Domain/style words (photo, sketch, painting, cartoon, clipart,
        infrared, low-light, blurry, ...).
    settings : sequence of str, default=DEFAULT_SETTINGS
        Background/setting phrases; ``""`` means none.
    template : str, default="a {style} of a {classname}{setting}."
        Format string with ``{style}``, ``{classname}`` and optionally
        ``{setting}``, which receives ``" " + setting`` (or ``""``).

    Returns
    -------
    texts : list of str
        ``len(class_names) * len(styles) * len(settings)`` descriptions (fewer
        when ``template`` has no ``{setting}``: duplicates are dropped).
    view_groups : ndarray of shape (len(texts),)
        The class index of each description.

    Examples
    --------
    >>> from clip_invariance.embedding import make_text_interventions
    >>> texts, view_groups = make_text_interventions(
    ...     ["dog", "guitar"], styles=["photo", "sketch"], settings=["", "in the snow"]
    ... )
    >>> texts[:4]
    ['a photo of a dog.', 'a photo of a dog in the snow.',
     'a sketch of a dog.', 'a sketch of a dog in the snow.']
    >>> view_groups.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    """
    names = _clean_class_names(class_names)
    styles, settings = list(styles), list(settings)
    if len(styles) * len(settings) < 2:
        raise ValueError(
            "Text interventions need at least two descriptions per class: give "
            "several styles or settings."
        )
    if "{style}" not in template or "{classname}" not in template:
        raise ValueError(
            f"template must contain '{{style}}' and '{{classname}}', got {template!r}."
        )
    texts, view_groups = [], []
    for index, name in enumerate(names):
        seen = set()
        for style in styles:
            for setting in settings:
                text = template.format(
                    style=style, classname=name, setting=f" {setting}" if setting else ""
                )
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
                    view_groups.append(index)
    return texts, np.asarray(view_groups)


def encode_prompts(encoder, prompts, batch_size=256):
    """Embed prompt strings with any text encoder, keeping their layout.

    Parameters
    ----------
    encoder : callable
        Maps a list of ``n`` strings to an array-like of shape ``(n, D)``
        (a numpy array, or a CPU torch tensor).
    prompts : list of str or list of lists of str
        Flat strings (class prompts or text interventions) or the ``M x C``
        nested lists of :func:`build_prompts`.
    batch_size : int, default=256
        Strings passed to ``encoder`` per call.

    Returns
    -------
    embeddings : ndarray of shape (n, D) or (M, C, D)
        One row per string, in the layout of ``prompts``; a prompt ensemble
        is ready for :class:`~clip_invariance.ZeroShotInvariantClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.embedding import build_prompts, encode_prompts
    >>> def encoder(texts):  # a toy encoder: length and number of spaces
    ...     return np.array([[len(t), t.count(" ")] for t in texts], dtype=float)
    >>> prompts = build_prompts(["cat", "zebra"], ["a {}.", "a photo of a {}."])
    >>> encode_prompts(encoder, prompts).shape
    (2, 2, 2)
    >>> encode_prompts(encoder, ["a cat."])
    array([[6., 1.]])
    """
    if not callable(encoder):
        raise TypeError(f"encoder must be callable (strings -> (n, D) array), got {encoder!r}.")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string.")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty.")
    nested = not isinstance(prompts[0], str)
    if nested:
        rows = [list(row) for row in prompts]
        if len({len(row) for row in rows}) != 1:
            raise ValueError(
                "Every template must cover the same classes: got rows of lengths "
                f"{sorted({len(row) for row in rows})}."
            )
        flat = [text for row in rows for text in row]
    else:
        flat = prompts
    if not all(isinstance(text, str) for text in flat):
        raise TypeError("prompts must contain strings only.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")

    parts = []
    for start in range(0, len(flat), batch_size):
        batch = flat[start : start + batch_size]
        out = _to_numpy(encoder(batch))
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(
                f"encoder returned shape {out.shape} for {len(batch)} strings; "
                "expected (n_strings, n_features)."
            )
        parts.append(out)
    embeddings = np.concatenate(parts)
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("encoder returned NaN or infinite values.")
    if nested:
        return embeddings.reshape(len(rows), len(rows[0]), -1)
    return embeddings


def _clean_class_names(class_names):
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of strings, not a single string.")
    names = [" ".join(str(name).replace("_", " ").split()) for name in class_names]
    if not names:
        raise ValueError("class_names is empty.")
    if any(not name for name in names):
        raise ValueError("class_names contains an empty name.")
    return names


def _fill(template, name):
    if callable(template):
        return template(name)
    if not isinstance(template, str):
        raise TypeError(f"A template must be a string or a callable, got {template!r}.")
    if "{}" not in template and "{classname}" not in template:
        raise ValueError(f"Template {template!r} has no '{{}}' or '{{classname}}' placeholder.")
    return template.format(name, classname=name)


def _to_numpy(array):
    # Torch tensors (possibly requiring grad) expose detach(); numpy arrays do not.
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    return array if array.dtype.kind == "f" else array.astype(np.float64)
