"""What an evaluation will run, checked against the store before anything is fitted.

:func:`plan_evaluation` turns the arguments of
:func:`~clip_invariance.evaluation.evaluate_store` into a plan (protocols,
targets, seeds, method variants, grids, the text interventions of every
target) or a ValueError naming the first argument the store cannot serve;
what the store cannot serve by default is dropped with a warning.
:class:`StoreLayout` holds the store's images in the rows layout (and the
columns layout on demand).
"""

import os
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch

from ..front_door import FrontDoorEnsembleClassifier
from ._methods import (
    DEFAULT_METHODS,
    HYPER_PARAMETERS,
    ICM_METHODS,
    METHODS,
    PROMPT_LEARNING_METHODS,
    PROMPT_METHODS,
    VIEW_METHODS,
    check_grid_values,
    default_grids,
    mentions_environment,
)
from ._protocols import SELECTION_RULES

__all__ = ["PROTOCOLS", "INTERVENTIONS", "TEMPLATES", "DEFAULT_SELECTION", "plan_evaluation",
           "StoreLayout", "target_text_interventions"]

PROTOCOLS = ("dg", "open-class", "base-to-new")
INTERVENTIONS = ("image", "text", "both")
TEMPLATES = ("single", "ensemble")

# The selection rule used unless another is asked for, chosen by measurement: the honest rule
# with the smallest worst-case regret against the oracle across synthetic stores whose
# augmentations are exact or imperfect (part of the style, some content, both; raw and
# L2-normalised) and real features (docs/selection_table.py -> docs/tables/selection_summary.csv).
# views-val trusts the augmentations to span the test shift and fails worst when they do not.
# A store with two environments (one source per target) falls back, with a warning.
DEFAULT_SELECTION = "lodo-cv"


def plan_evaluation(store, *, protocol, methods, interventions, seeds, selection, templates,
                    include_target_name, grids, holdout, front_door_params, progress):
    """Check every argument against the store, before anything is fitted; return the plan.

    The arguments are those of :func:`~clip_invariance.evaluation.evaluate_store`; a ValueError names the
    first one that cannot be served. Methods or interventions the store
    cannot serve by default are dropped with a warning (listed in ``skipped``).
    """
    skipped = []

    def skip(message):
        skipped.append(message)
        warnings.warn(message, UserWarning, stacklevel=4)

    protocols = _choice("protocol", protocol, (*PROTOCOLS, "all"))
    protocols = PROTOCOLS if protocols == "all" else (protocols,)
    if selection is not None:
        _choice("selection", selection, (*SELECTION_RULES, "all"))
    _choice("templates", templates, TEMPLATES)
    for name, value in (("include_target_name", include_target_name), ("progress", progress)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}.")
    if isinstance(holdout, bool) or not isinstance(holdout, Real) or not 0 < holdout < 1:
        raise ValueError(f"holdout must be a number in (0, 1), got {holdout!r}.")
    seeds = _seeds(seeds)
    every_method = isinstance(methods, str) and methods == "all"  # what the store cannot run is skipped
    asked_methods, asked_sources = methods is not None and not every_method, interventions is not None
    methods = _names("methods", DEFAULT_METHODS if methods is None else METHODS if every_method else methods,
                     METHODS)
    sources = _names("interventions", interventions, INTERVENTIONS) if asked_sources else ["both"]
    front_door_params = _front_door_params(front_door_params)

    n, dim = store.X.shape
    n_classes = len(store.class_names) if store.class_names else int(np.max(store.y)) + 1
    targets = [e for e in (store.environment_names or np.unique(store.environments).tolist())
               if np.any(store.environments == e)]
    if len(targets) < 2:
        raise ValueError(f"Leave-one-domain-out needs at least two environments; the store has {targets}.")
    if selection == "lodo-cv" and len(targets) < 3:
        raise ValueError(f"selection='lodo-cv' needs at least three environments (two sources for "
                         f"every target); the store has {targets}.")
    has_views = store.views is not None and store.views.shape[1] > 0
    has_text = store.text_interventions is not None
    if selection is None:
        selection = DEFAULT_SELECTION if len(targets) >= 3 else "views-val" if has_views else "source-val"
        if selection != DEFAULT_SELECTION:
            skip(f"The store has two environments, one source per target, and {DEFAULT_SELECTION} needs two: "
                 f"hyper-parameters chosen by selection={selection!r} instead of the default.")
    if selection == "all":  # every honest rule the store supports, side by side
        selections = [rule for rule in SELECTION_RULES if rule != "oracle"
                      and (rule != "views-val" or has_views) and (rule != "lodo-cv" or len(targets) >= 3)]
    else:
        selections = [selection]
    if selection == "views-val" and not has_views:
        raise ValueError("selection='views-val' validates on augmented views, but the store has none: "
                         "embed at least one view per image, or choose another selection rule.")
    if {"open-class", "base-to-new"} & set(protocols) and n_classes < 2:
        raise ValueError("The open-class protocols need at least two classes (base and new).")
    grids = _grids(grids, dim)
    prompts = store.prompt_embeddings if templates == "single" else store.prompt_ensemble_embeddings
    if templates == "ensemble" and prompts is None:
        raise ValueError("templates='ensemble' needs prompt_ensemble_embeddings, which the store lacks.")

    needing = [m for m in methods if m in PROMPT_METHODS]
    if store.prompt_embeddings is None and needing:
        if asked_methods:
            raise ValueError(f"The methods {needing} need class prompts; the store has no prompt_embeddings.")
        skip(f"The store has no prompt embeddings: skipping {needing}.")
        methods = [m for m in methods if m not in PROMPT_METHODS]
    needing = [m for m in methods if m in VIEW_METHODS]
    if not has_views and needing:
        if asked_methods:
            raise ValueError(f"The methods {needing} train on augmented views; the store has none.")
        skip(f"The store has no augmented views: skipping {needing}.")
        methods = [m for m in methods if m not in VIEW_METHODS]
    model = None
    needing = [m for m in methods if m in PROMPT_LEARNING_METHODS]
    if needing:
        model, reason = _store_model(store)
        if reason is not None:
            if asked_methods:
                raise ValueError(f"The methods {needing} learn prompts through the text tower of the model "
                                 f"that made the embeddings, but {reason}.")
            skip(f"{reason[0].upper()}{reason[1:]}: skipping {needing}.")
            methods = [m for m in methods if m not in PROMPT_LEARNING_METHODS]
    icm = [m for m in methods if m in ICM_METHODS]
    available = {"image": has_views, "text": has_text, "both": has_views and has_text}
    if icm and asked_sources:
        for source in sources:
            if not available[source]:
                needs = {"image": "augmented views", "text": "text interventions",
                         "both": "augmented views and text interventions"}[source]
                raise ValueError(f"interventions={source!r} needs {needs}, which the store lacks "
                                 f"({icm} asked for).")
    elif icm and not available["both"]:
        sources = [s for s in ("image", "text") if available[s]]
        lacking = "augmented views" if not has_views else "text interventions"
        if sources:
            skip(f"The store has no {lacking}: the invariant methods use {sources[0]} interventions only.")
        elif asked_methods:
            raise ValueError(f"The methods {icm} need augmented views or text interventions; the store "
                             "has neither.")
        else:
            skip(f"The store has no augmented views and no text interventions: skipping {icm}.")
            methods = [m for m in methods if m not in ICM_METHODS]
    if not methods:
        raise ValueError("No method is left to evaluate on this store.")

    icm = [m for m in methods if m in ICM_METHODS]
    texts = None
    if icm and any(s in ("text", "both") for s in sources):
        texts = target_text_interventions(store, targets, include_target_name, skip)
    variants = [(m, s) for m in methods for s in (sources if m in ICM_METHODS else [None])]
    ensemble = store.prompt_ensemble_embeddings
    return Bunch(
        protocols=protocols, targets=targets, seeds=seeds, variants=variants, selections=selections,
        holdout=holdout, grids=grids, prompts=prompts, templates=templates,
        front_door_prompts=ensemble if ensemble is not None else store.prompt_embeddings,
        include_target_name=bool(include_target_name), texts=texts,
        # No style labels and no texts: nothing names the target for sure, so nothing is dropped.
        texts_unfiltered=texts is not None and not include_target_name and _style_strings(store) is None,
        front_door_params=front_door_params, layout=StoreLayout(store), n_classes=n_classes,
        model=model, class_names=None if store.class_names is None else list(store.class_names),
        skipped=skipped, progress=bool(progress),
        arguments={
            "protocol": protocol, "methods": list(methods), "interventions": list(sources) if icm else None,
            "seeds": seeds, "selection": selection, "templates": templates,
            "include_target_name": bool(include_target_name),
            "grids": grids, "holdout": float(holdout), "front_door_params": front_door_params,
        },
    )


def _store_model(store):
    """``({"model_name", "pretrained"}, None)`` for a store whose model loads, else ``(None, reason)``.

    The model is loaded (once: the backbone cache keeps it for the training
    that follows), so a tag that cannot be downloaded or a checkpoint that
    moved is found before any fit.
    """
    if not store.class_names:
        return None, "the store has no class names to encode"
    model = (store.settings or {}).get("model")
    if not isinstance(model, dict) or not model.get("model_name"):
        return None, ("the store records no model (its features were made elsewhere; embed_image_folder "
                      "records the model)")
    pretrained = model.get("pretrained")
    if isinstance(pretrained, dict):  # a checkpoint file, by its size and modification time
        path = pretrained.get("file")
        if path is None or not os.path.isfile(path):
            return None, f"the checkpoint the store was embedded with, {path!r}, is not there any more"
        stat = os.stat(path)
        if (stat.st_size, stat.st_mtime_ns) != (pretrained.get("size"), pretrained.get("mtime_ns")):
            return None, f"the checkpoint {path!r} changed since the store was embedded"
        pretrained = path
    if model.get("embedding_dim") not in (None, store.X.shape[1]):
        return None, (f"the store's model {model['model_name']!r} gives {model['embedding_dim']} numbers "
                      f"per embedding and the store holds {store.X.shape[1]}")
    from ..embedding import get_backbone

    try:
        get_backbone(model["model_name"], pretrained, "auto", "fp32")
    except Exception as exc:  # whatever stops it loading is the reason not to run
        return None, f"its model {model['model_name']!r} ({pretrained!r}) does not load: {exc}"
    return {"model_name": model["model_name"], "pretrained": pretrained}, None


class StoreLayout:
    """A store's images in the rows layout, and on demand in the columns layout.

    Rows: ``X`` is the originals then each round of views, ``(n (V + 1), D)``,
    with ``y``, ``environments``, ``view_groups = tile(arange(n), V + 1)`` and
    ``is_original`` (the first ``n`` rows). :meth:`columns` gives the front
    door's input with the same row indices.
    """

    def __init__(self, store):
        self.store = store
        n = len(store.y)
        views = () if store.views is None else [store.views[:, v] for v in range(store.views.shape[1])]
        self.n_views = 1 + len(views)
        self.X = np.concatenate([np.asarray(store.X), *views]) if views else np.asarray(store.X)
        self.y = np.tile(np.asarray(store.y), self.n_views)
        self.environments = np.tile(np.asarray(store.environments), self.n_views)
        self.view_groups = np.tile(np.arange(n), self.n_views)
        self.is_original = np.arange(n * self.n_views) < n
        self._columns = {}

    def columns(self, with_view_rows=False):
        """``(n, (V + 1) D)``: every image's views side by side; with ``with_view_rows``,
        ``V n`` more rows, each one view repeated ``V + 1`` times (the image seen only
        through that augmentation), at the indices of that view in the rows layout."""
        if with_view_rows not in self._columns:
            blocks = np.split(self.X, self.n_views)
            columns = [np.hstack(blocks)]
            if with_view_rows:
                columns += [np.tile(block, (1, self.n_views)) for block in blocks[1:]]
            self._columns[with_view_rows] = np.concatenate(columns)
        return self._columns[with_view_rows]


def _style_strings(store):
    """What tells a text intervention's style: its style word, else its text, else None."""
    if store.text_intervention_styles is not None:
        return store.text_intervention_styles
    return store.text_intervention_texts


def target_text_interventions(store, targets, include_target_name, skip):
    """Target -> (text interventions, their view groups) without those naming the target."""
    texts, groups = np.asarray(store.text_interventions), np.asarray(store.text_view_groups)
    strings = _style_strings(store)
    if strings is None and not include_target_name:
        skip("The store's text interventions carry neither texts nor styles: those naming the target "
             "environment cannot be told, and none is dropped (rows labelled +unfiltered).")
    out = {}
    for target in targets:
        keep = np.ones(len(texts), dtype=bool)
        if strings is not None and not include_target_name:
            keep = ~mentions_environment(strings, target)
        if not keep.any():
            raise ValueError(f"Every text intervention names the target {target!r}: none is left to train "
                             "on without it (include_target_name=True keeps them, labelled).")
        out[target] = texts[keep], groups[keep]
    return out


def _choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"Unknown {name} {value!r}; choose from {list(options)}.")
    return value


def _names(name, values, options):
    values = [values] if isinstance(values, str) else values
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a list of names, got {values!r}.") from None
    if not values:
        raise ValueError(f"{name} is empty; choose among {list(options)}.")
    for value in values:
        _choice(name.rstrip("s") if name == "methods" else name, value, options)
    return list(dict.fromkeys(values))


def _seeds(seeds):
    seeds = [seeds] if isinstance(seeds, Integral) and not isinstance(seeds, bool) else seeds
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be a list of integers, got {seeds!r}.") from None
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed.")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ValueError(f"seeds must be non-negative integers, got {seed!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}.")
    return [int(s) for s in seeds]


def _grids(grids, dim):
    out = default_grids(dim)
    if grids is None:
        return out
    if not isinstance(grids, dict):
        raise ValueError(f"grids must be a dict of hyper-parameter -> values, got {type(grids).__name__}.")
    unknown = set(grids) - set(HYPER_PARAMETERS)
    if unknown:
        raise ValueError(f"Unknown hyper-parameter(s) {sorted(unknown)} in grids; choose from "
                         f"{list(HYPER_PARAMETERS)}.")
    out.update({name: check_grid_values(name, values, dim) for name, values in grids.items()})
    return out


def _front_door_params(params):
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"front_door_params must be a dict, got {type(params).__name__}.")
    managed = {"prompt_embeddings", "anchor_embeddings", "classes", "n_views", "projector",
               "random_state", "temperature"}
    unknown = set(params) - set(FrontDoorEnsembleClassifier().get_params())
    if unknown or managed & set(params):
        raise ValueError(f"front_door_params cannot set {sorted(unknown | (managed & set(params)))}: "
                         f"the evaluation sets {sorted(managed)} (the temperature through grids).")
    # The values too, now: the estimator's own checks would run only at its first fit, after the
    # other methods' rounds.
    try:
        FrontDoorEnsembleClassifier(**params)._validate_params()
    except ValueError as exc:
        raise ValueError(f"front_door_params: {exc}") from None
    return dict(params)
