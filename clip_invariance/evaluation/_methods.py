"""The method catalogue of the evaluation: which estimator each method name stands for.

Every method is a scikit-learn estimator fitted on embeddings, with the
hyper-parameters a selection rule may tune:

- ``zero-shot``: ``ZeroShotInvariantClassifier(prompts)``, CLIP; nothing tuned;
- ``zero-shot-icm``: the same with ``projector=InvariantProjector``, CLIP-ICM;
  ``n_components``, ``lam``;
- ``probe``: :func:`make_probe`, a logistic regression; ``C``;
- ``probe-icm``: ``Pipeline([("proj", InvariantProjector), ("clf", probe)])``;
  ``n_components``, ``lam``, ``C``;
- ``front-door``: ``FrontDoorEnsembleClassifier`` on the columns layout, CDC;
  ``temperature``;
- ``front-door-icm``: the same with ``projector=InvariantProjector``;
  ``n_components``, ``lam``, ``temperature``;
- ``wise``: :class:`~clip_invariance.baselines.WiSEClassifier`, WiSE-FT's mix
  of the zero-shot head and a probe; ``wise_alpha``, ``C``;
- ``wise-icm``: the same with ``projector=InvariantProjector``;
  ``n_components``, ``lam``, ``wise_alpha``, ``C``;
- ``tip-adapter``: :class:`~clip_invariance.baselines.TipAdapterClassifier`,
  the training-free cache model; ``tip_alpha``, ``tip_beta``;
- ``tip-adapter-icm``: the same with ``projector=InvariantProjector``;
  ``n_components``, ``lam``, ``tip_alpha``, ``tip_beta``;
- ``cdc-prompts``: :class:`~clip_invariance.front_door.PromptLearningFrontDoorClassifier`
  on the columns layout, CDC as published: the context words of the four
  :data:`~clip_invariance.front_door.CDC_TEMPLATES` learned through the
  frozen text tower, each template paired with a view when the store has
  four per image (every template with every view otherwise);
  ``prompt_epochs``, ``temperature``;
- ``coop``: :class:`~clip_invariance.front_door.CoOpClassifier` on the
  originals, one learned context (CoOp); ``prompt_epochs`` (its temperature
  stays CLIP's logit scale, 100, as CoOp trains).

The last two (:data:`PROMPT_LEARNING_METHODS`) run the store's own model: a
training step encodes the class prompts with its text tower, so they need a
store made by :func:`~clip_invariance.embedding.embed_image_folder` (which
records the model) and its class names; they reach new classes by encoding
the new names with the learned contexts (``with_classes``). They are not in
the default set (:data:`DEFAULT_METHODS`): much slower than the others
(the text tower at every step, one training per candidate and split), they
run when named.

The baselines are tuned like the invariant methods: the probe's ``C`` grid is
the same for ``probe``, ``probe-icm``, ``wise`` and ``wise-icm``, and every
``-icm`` variant searches the same ``n_components`` x ``lam`` grid
(:func:`default_grids`).

Text interventions come from the store; :func:`mentions_environment` tells
which of them name an environment, so that the evaluation can drop those that
name its held-out target (otherwise the target's own name is in the training
interventions).
"""

import re
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from ..baselines import TipAdapterClassifier, WiSEClassifier
from ..front_door import CoOpClassifier, FrontDoorEnsembleClassifier, PromptLearningFrontDoorClassifier
from ..invariance import InvariantProjector
from ..views import first_views
from ..zero_shot import ZeroShotInvariantClassifier

__all__ = [
    "METHODS",
    "DEFAULT_METHODS",
    "PROMPT_LEARNING_METHODS",
    "ICM_METHODS",
    "PROMPT_METHODS",
    "IMAGE_ONLY_METHODS",
    "VIEW_METHODS",
    "FEW_SHOT_METHODS",
    "STYLE_SYNONYMS",
    "HYPER_PARAMETERS",
    "PROBE_C",
    "make_probe",
    "default_grids",
    "make_method",
    "mentions_environment",
    "FirstViewsProjector",
    "check_grid_values",
]

METHODS = ("zero-shot", "zero-shot-icm", "prototype", "probe", "probe-views", "probe-icm", "probe-icm-views",
           "front-door", "front-door-icm", "wise", "wise-icm", "tip-adapter", "tip-adapter-icm",
           "cdc-prompts", "coop")
# Learned prompt contexts: the store's own model encodes the prompts at every training step.
PROMPT_LEARNING_METHODS = ("cdc-prompts", "coop")
# What runs when no method is named: everything that needs the embeddings alone.
DEFAULT_METHODS = tuple(m for m in METHODS if m not in PROMPT_LEARNING_METHODS)
ICM_METHODS = ("zero-shot-icm", "probe-icm", "probe-icm-views", "front-door-icm", "wise-icm",
               "tip-adapter-icm")
PROMPT_METHODS = ("zero-shot", "zero-shot-icm", "front-door", "front-door-icm", "wise", "wise-icm",
                  "tip-adapter", "tip-adapter-icm")
# Prompt heads plus a head learnt from the labelled source images (the baselines a user would run).
FEW_SHOT_METHODS = ("wise", "wise-icm", "tip-adapter", "tip-adapter-icm")
# Heads learned from images alone: they know the classes they were trained on, no other.
IMAGE_ONLY_METHODS = ("prototype", "probe", "probe-views", "probe-icm", "probe-icm-views")
# Heads trained on the augmented views as well as the originals: the fair control of anything that
# learns from views (probe-views for probe-icm) and the best of the invariant probe's family.
VIEW_METHODS = ("probe-views", "probe-icm-views")
HYPER_PARAMETERS = ("n_components", "lam", "C", "temperature", "wise_alpha", "tip_alpha", "tip_beta",
                    "prompt_epochs")

# The reference implementation's linear probe: LogisticRegression(C=0.316).
PROBE_C = 0.316

# Where each hyper-parameter lives in each method's estimator.
_PARAMETER_PATHS = {
    "zero-shot": {},
    "zero-shot-icm": {"n_components": "projector__n_components", "lam": "projector__lam"},
    "prototype": {},
    "probe": {"C": "C"},
    "probe-views": {"C": "C"},
    "probe-icm": {"n_components": "proj__n_components", "lam": "proj__lam", "C": "clf__C"},
    "probe-icm-views": {"n_components": "proj__n_components", "lam": "proj__lam", "C": "clf__C"},
    "front-door": {"temperature": "temperature"},
    "front-door-icm": {
        "n_components": "projector__n_components",
        "lam": "projector__lam",
        "temperature": "temperature",
    },
    "wise": {"wise_alpha": "alpha", "C": "C"},
    "wise-icm": {
        "n_components": "projector__n_components",
        "lam": "projector__lam",
        "wise_alpha": "alpha",
        "C": "C",
    },
    "tip-adapter": {"tip_alpha": "alpha", "tip_beta": "beta"},
    "tip-adapter-icm": {
        "n_components": "projector__n_components",
        "lam": "projector__lam",
        "tip_alpha": "alpha",
        "tip_beta": "beta",
    },
    "cdc-prompts": {"prompt_epochs": "max_iter", "temperature": "temperature"},
    "coop": {"prompt_epochs": "max_iter"},
}


def make_probe(C=PROBE_C):
    """The papers' linear probe: ``LogisticRegression(C=0.316)``.

    Parameters
    ----------
    C : float, default=PROBE_C
        Inverse regularisation strength.

    Returns
    -------
    probe : sklearn.linear_model.LogisticRegression
        Unfitted.

    Examples
    --------
    >>> from clip_invariance.evaluation import make_probe
    >>> make_probe().C
    0.316
    """
    return LogisticRegression(C=C, max_iter=2000)


def default_grids(n_features):
    """The hyper-parameter grids a selection rule chooses from, relative to the embedding size ``D``.

    ``n_components`` (``K``) in ``{D/8, D/4, D/2}``, ``lam`` in
    ``{10, 100}`` (the projector's ``lam`` is dimensionless, 10 its default),
    the probe's ``C`` in ``{0.1, 1, 3.16}`` and the front door's
    ``temperature`` at 10 (its default): grids a CPU can search at the size
    of a real dataset, cut from wider ones (``K`` also ``D/16``, ``lam``
    also 1, ``C`` also 0.316, ``temperature`` also 30) on the evidence of
    the selection table (``docs/selection_table.py``: 8 synthetic conditions
    x 3 seeds, the four probes, every rule; 192 choices of ``(K, lam)`` per
    rule) and of every candidate's score in every search on its 8 conditions
    (seed 0: every default method on three of them, the probes on all;
    ``lodo-cv`` and the oracle on all, ``source-val`` on 6, ``views-val`` on
    5). ``benchmarks/grid_evidence.py`` records those searches and writes
    every figure below to ``docs/tables/grid_evidence.csv``:

    - ``K = D/16`` was never chosen, by any rule or the oracle, for any
      method; the best candidate with it was always below the best without
      it in target accuracy, by 7.6 points or more;
    - ``lam = 1``: chosen by ``lodo-cv`` 2 times in 192 (the table; never
      in the 112 searches with a projector here) and by the oracle 28 times
      in 192 (5 in 112), where its best candidate beat the best without it by
      0.2 point at most; ``source-val`` and ``views-val`` chose it more
      often (119 and 43 times in 192), and lost by it: without it their
      choices gain 2.5 points on average (over 64 and 40 searches);
    - ``C = 0.316``: its best candidate beat the best without it in 29 of
      152 searches, by 1 point at most;
    - ``temperature = 30`` beat 10 in 7 of 24 front-door searches, by 2
      points at most (the plain front door), 0.01 on average.

    Together, on the 200 searches the cuts touch, the accuracy of
    ``lodo-cv``'s choices changed by less than 0.01 point on average (from
    -1.2 to +1.0 on one target) and the oracle's fell by 0.09 (2.0 at
    most). Each cut divides the fits of a search: ``front-door-icm`` trains
    6 candidates a split instead of 24, ``probe-icm`` fits 18 probes instead
    of 48. ``C`` keeps both ends (``lodo-cv`` chose 0.1 or 3.16 for most
    probes in the selection table). The wider grids are a ``grids=``
    argument away; ``docs/selection_table.py`` pins them, so that its cached
    evidence stays valid.

    The baselines: WiSE's mixing weight ``wise_alpha`` in
    ``{0, 0.25, 0.5, 0.75, 1}`` (the whole path from zero-shot to the probe,
    in the quarter steps of the WiSE-FT paper's plots), with the probe's
    ``C`` grid; Tip-Adapter's residual ratio ``tip_alpha`` in
    ``{0.1, 1, 10, 100, 1000}`` and sharpness ``tip_beta`` in
    ``{1, 3.5, 7, 14, 28}``. Its authors search alpha in [0.1, 3) and beta in
    [0.1, 7) for caches of 16 shots per class at most; the cache here holds
    every training image, and on the README's synthetic benchmark (weak
    zero-shot head) the selection chose the top alpha, 3, on every target
    and, given larger alphas, betas above 7; so both grids go on, in decades
    and doublings, to where the cache alone decides (alpha x the cache
    logits >> ``100 cos``): like WiSE's, the grid spans both ends. These three
    are not cut: they are read at prediction only, so the search scores them
    from one fit (and Tip-Adapter's cache once per beta), and the synthetic
    benchmark's zero-shot head is too weak to tell what the small weights are
    worth with a real CLIP.

    The learned prompts (``cdc-prompts``, ``coop``): ``prompt_epochs`` (their
    ``max_iter``) in ``{2, 10}``, a short training and the estimators'
    default length, not chosen by measurement; ``0`` (the hand-written
    contexts) is a valid value. ``cdc-prompts`` searches the front door's
    ``temperature`` grid too, so its 10 alone: measured on the adapters'
    front door, not on it.

    Parameters
    ----------
    n_features : int
        The embedding size ``D``.

    Returns
    -------
    grids : dict
        Hyper-parameter name -> list of values.

    Examples
    --------
    >>> from clip_invariance.evaluation import default_grids
    >>> default_grids(512)["n_components"], default_grids(4)["n_components"]
    ([64, 128, 256], [1, 2])
    """
    ks = sorted({max(1, n_features // d) for d in (8, 4, 2)})
    return {"n_components": ks, "lam": [10.0, 100.0], "C": [0.1, 1.0, 3.16],
            "temperature": [10.0], "wise_alpha": [0.0, 0.25, 0.5, 0.75, 1.0],
            "tip_alpha": [0.1, 1.0, 10.0, 100.0, 1000.0], "tip_beta": [1.0, 3.5, 7.0, 14.0, 28.0],
            "prompt_epochs": [2, 10]}


def make_method(method, *, grids, prompts=None, classes=None, text_interventions=None,
                text_view_groups=None, n_views=1, text_only=False, random_state=0,
                front_door_params=None, model=None, class_names=None, prompt_params=None):
    """One method's unfitted estimator and the grid to choose its parameters from.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    grids : dict
        Hyper-parameter name -> values (:func:`default_grids`); only the
        method's own are used.
    prompts : ndarray of shape (C, D) or (M, C, D), default=None
        Class prompts (the methods of :data:`PROMPT_METHODS`).
    classes : array-like of shape (C,), default=None
        The label of each prompt's class.
    text_interventions, text_view_groups : ndarray, default=None
        Fixed text interventions for the projector of an ``-icm`` method.
    n_views : int, default=1
        Views side by side in a row of the front door's columns layout.
    text_only : bool, default=False
        The front door's projector learns from the text interventions alone
        (:class:`FirstViewsProjector`), not from the image views.
    random_state : int, default=0
        Seed of the front door's training.
    front_door_params : dict, default=None
        Other parameters of :class:`~clip_invariance.FrontDoorEnsembleClassifier`
        (e.g. ``max_iter``).
    model : dict, default=None
        ``{"model_name": ..., "pretrained": ...}``, the open_clip model that
        made the embeddings (the methods of :data:`PROMPT_LEARNING_METHODS`).
    class_names : sequence of str, default=None
        The name of each class of ``classes`` (the same methods).
    prompt_params : dict, default=None
        Other parameters of their estimators (e.g. ``device``, ``verbose``).

    Returns
    -------
    estimator : estimator
    param_grid : dict
        Estimator parameter -> values, as :class:`~sklearn.model_selection.GridSearchCV` takes.
    parameter_paths : dict
        Hyper-parameter name -> estimator parameter, for the method's tuned ones.

    Examples
    --------
    >>> from clip_invariance.evaluation import default_grids, make_method
    >>> estimator, grid, paths = make_method("probe-icm", grids=default_grids(64))
    >>> sorted(grid), paths["C"]
    (['clf__C', 'proj__lam', 'proj__n_components'], 'clf__C')
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}.")
    if method in PROMPT_LEARNING_METHODS:
        return _make_prompt_learning(method, grids, classes, model, class_names, n_views, random_state,
                                     prompt_params)
    projector = None
    if method in ICM_METHODS:
        projector = InvariantProjector(intervention_embeddings=text_interventions,
                                       intervention_view_groups=text_view_groups)
    if method in ("zero-shot", "zero-shot-icm"):
        estimator = ZeroShotInvariantClassifier(prompts, classes=classes, projector=projector)
    elif method == "prototype":  # no prompts: the cosine nearest class mean of the training images
        estimator = ZeroShotInvariantClassifier()
    elif method in ("probe", "probe-views"):
        estimator = make_probe()
    elif method in ("probe-icm", "probe-icm-views"):
        estimator = Pipeline([("proj", projector), ("clf", make_probe())])
    elif method in ("wise", "wise-icm"):
        estimator = WiSEClassifier(prompts, classes=classes, projector=projector, C=PROBE_C)
    elif method in ("tip-adapter", "tip-adapter-icm"):
        estimator = TipAdapterClassifier(prompts, classes=classes, projector=projector)
    else:
        if projector is not None and text_only and n_views > 1:
            projector = FirstViewsProjector(projector)
        params = {} if front_door_params is None else dict(front_door_params)
        estimator = FrontDoorEnsembleClassifier(
            prompts, classes=classes, n_views=n_views, projector=projector, random_state=random_state,
            **params,
        )
        if isinstance(projector, FirstViewsProjector):
            paths = {k: v.replace("projector__", "projector__projector__")
                     for k, v in _PARAMETER_PATHS[method].items()}
            return estimator, {paths[k]: list(grids[k]) for k in paths}, paths
    paths = _PARAMETER_PATHS[method]
    return estimator, {path: list(grids[name]) for name, path in paths.items()}, dict(paths)


def _make_prompt_learning(method, grids, classes, model, class_names, n_views, random_state, params):
    """The learned-prompt CDC or CoOp, on the store's model and class names."""
    if model is None or class_names is None:
        raise ValueError(f"The method {method!r} learns prompts through the text tower of the model that "
                         "made the embeddings: give model and class_names.")
    kwargs = {"class_names": list(class_names), "classes": classes, "random_state": random_state,
              **({} if params is None else params)}
    if method == "cdc-prompts":
        estimator = PromptLearningFrontDoorClassifier(model["model_name"], model["pretrained"],
                                                      n_views=n_views, **kwargs)
    else:
        estimator = CoOpClassifier(model["model_name"], model["pretrained"], **kwargs)
    paths = _PARAMETER_PATHS[method]
    return estimator, {path: list(grids[name]) for name, path in paths.items()}, dict(paths)


# Look-alike style words of the domain names of PACS, VLCS, Office-31, OfficeHome, DomainNet, NICO and
# ImageNet's variants: a text intervention that names any of them describes the target's style even
# without its exact name ("pencil drawing" for sketch, "clipart illustration" for cartoon). A word of an
# environment's name pulls in its whole row. Phrases of several words match as a sequence.
STYLE_SYNONYMS = {
    "sketch": ("sketch", "sketches", "pencil", "drawing", "drawn", "line art", "charcoal", "doodle"),
    "quickdraw": ("quickdraw", "quick draw", "doodle", "scribble", "sketch", "drawing"),
    "cartoon": ("cartoon", "cartoons", "comic", "animated", "animation", "anime", "clipart", "clip art",
                "illustration"),
    "clipart": ("clipart", "clip art", "clip-art", "illustration", "vector", "icon", "cartoon"),
    "painting": ("painting", "paintings", "painted", "artwork", "art", "watercolor", "watercolour",
                 "oil painting", "acrylic"),
    "art": ("art", "artwork", "artistic", "painting", "painted"),
    "photo": ("photo", "photos", "photograph", "photography", "picture", "real", "realistic", "camera",
              "snapshot"),
    "real": ("real", "realistic", "photo", "photograph", "picture", "camera"),
    "product": ("product", "catalog", "catalogue", "studio photo", "white background"),
    "infograph": ("infograph", "infographic", "chart", "diagram", "poster"),
    "sculpture": ("sculpture", "statue", "carving", "figurine"),
    "rendition": ("rendition", "render", "rendering", "tattoo", "embroidery", "origami", "toy"),
    "webcam": ("webcam", "web camera", "low quality", "low resolution", "blurry"),
    "dslr": ("dslr", "high resolution", "professional photo"),
}


def mentions_environment(strings, environment):
    """Which strings name an environment: its name, its words, or a look-alike style word.

    ``"art_painting"`` is named by ``"art painting"``, ``"a painting of a
    dog."`` and ``"Art"``, and, through :data:`STYLE_SYNONYMS`, by ``"an
    oil painting"`` or ``"watercolor"``; ``"sketch"`` by ``"a pencil drawing"``;
    ``"Real World"`` by ``"a photo"``. Words of one or two letters are ignored
    (``"of"`` would match everything). Matching is by whole words, case-insensitive.

    Parameters
    ----------
    strings : array-like of str
        Text interventions, or their style words.
    environment : str
        The environment's name.

    Returns
    -------
    mentioned : ndarray of bool, shape (len(strings),)

    Examples
    --------
    >>> from clip_invariance.evaluation._methods import mentions_environment
    >>> mentions_environment(["painting", "sketch", "black and white photo"], "art_painting").tolist()
    [True, False, False]
    >>> mentions_environment(["a sketch of a dog.", "a photo of a sketchbook.", "pencil drawing"],
    ...                      "sketch").tolist()
    [True, False, True]
    >>> mentions_environment(["clipart illustration", "photo"], "cartoon").tolist()
    [True, False]
    """
    phrases = set()
    for word in _words(environment):
        if len(word) > 2:
            phrases.add((word,))
            phrases.update(tuple(_words(synonym)) for synonym in STYLE_SYNONYMS.get(word, ()))
    mentioned = []
    for text in np.asarray(strings, dtype=str).ravel():
        words = _words(text)
        grams = {tuple(words[i:i + k]) for k in range(1, 4) for i in range(len(words) - k + 1)}
        mentioned.append(bool(phrases & grams))
    return np.array(mentioned, dtype=bool)


def _words(text):
    return [w for w in re.split(r"[^0-9a-z]+", str(text).lower()) if w]


class FirstViewsProjector(TransformerMixin, BaseEstimator):
    """Fit a projector on the first view of every group only, without the view groups.

    :class:`~clip_invariance.FrontDoorEnsembleClassifier` fits its projector
    on every view with their view groups (image interventions). Wrapped in
    this, the projector sees the originals alone, so an ``InvariantProjector``
    with fixed ``intervention_embeddings`` learns from them only (text
    interventions).

    Parameters
    ----------
    projector : estimator with ``fit`` and ``transform``
        Cloned at fit.

    Attributes
    ----------
    projector_ : estimator
        The fitted clone.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from clip_invariance.evaluation._methods import FirstViewsProjector
    >>> X = np.random.default_rng(0).normal(size=(6, 3))
    >>> proj = FirstViewsProjector(PCA(2)).fit(X, view_groups=[0, 1, 2, 0, 1, 2])
    >>> proj.projector_.n_samples_, proj.transform(X).shape
    (3, (6, 2))
    """

    _parameter_constraints: dict = {"projector": [HasMethods(["fit", "transform"])]}

    def __init__(self, projector):
        self.projector = projector

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, view_groups=None):
        """Fit a clone of ``projector`` on the first view of every group (all rows without groups).

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        y : array-like of shape (n_rows,), default=None
            Passed on (for the first views) to the projector, which may use
            labels when it has no other interventional data.
        view_groups : array-like of shape (n_rows,), default=None

        Returns
        -------
        self : object
        """
        if y is None:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        if view_groups is not None:
            check_consistent_length(X, view_groups)
            first = first_views(view_groups)
            X, y = X[first], None if y is None else y[first]
        projector = clone(self.projector)
        self.projector_ = projector.fit(X) if y is None else projector.fit(X, y)
        return self

    def transform(self, X):
        """Project ``X`` with the fitted projector."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.projector_.transform(X)


def check_grid_values(name, values, n_features):
    """A hyper-parameter grid as a list, checked; raise a ValueError naming it."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"grids[{name!r}] must be a list of values, got {values!r}.")
    values = list(values)
    if not values:
        raise ValueError(f"grids[{name!r}] is empty.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (Integral, float, np.floating)):
            raise ValueError(f"grids[{name!r}] holds {value!r}, which is not a number.")
        if name == "n_components" and not (isinstance(value, Integral) and 1 <= value <= n_features):
            raise ValueError(f"grids['n_components'] holds {value!r}: every K must be an integer "
                             f"between 1 and the embedding size, {n_features}.")
        if name == "lam" and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"grids['lam'] holds {value!r}: lam must be finite and >= 0.")
        if name in ("C", "temperature") and not (np.isfinite(value) and value > 0):
            raise ValueError(f"grids[{name!r}] holds {value!r}: {name} must be finite and > 0.")
        if name == "wise_alpha" and not 0 <= value <= 1:
            raise ValueError(f"grids['wise_alpha'] holds {value!r}: the mixing weight must be in [0, 1].")
        if name in ("tip_alpha", "tip_beta") and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"grids[{name!r}] holds {value!r}: {name} must be finite and >= 0.")
        if name == "prompt_epochs" and not (isinstance(value, Integral) and value >= 0):
            raise ValueError(f"grids['prompt_epochs'] holds {value!r}: the epochs of prompt learning must "
                             "be an integer >= 0.")
    return [int(v) if name in ("n_components", "prompt_epochs") else float(v) for v in values]
