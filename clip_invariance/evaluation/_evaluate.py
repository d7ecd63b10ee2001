"""Evaluate like a paper on an embedding store: every protocol and method, selected without the target.

The data path is ``store -> every argument checked against it -> for each
protocol, target, seed and method: selection splits on the sources -> grid
search -> fit on the sources' training parts -> accuracy on the target -> one
tidy row per split``. :func:`evaluate_store` returns those rows as a pandas
DataFrame; ``_reporting.py`` writes them as files and plots
(:func:`~clip_invariance.evaluation.write_results`).

Protocols: ``"dg"``, DomainBed's leave-one-domain-out (CLIP-ICM Table 1);
``"open-class"``, the same rounds scored as CLIP-ICM's Table 2: the first
``floor(C / 2)`` classes are the base, the projector and the classifiers learn
from the base classes of the sources only, and the target's base and new
images are both classified among *all* ``C`` classes (the prompt methods reach
the new ones through ``with_prompts``), with the harmonic mean of the two;
``"base-to-new"``, a labelled variant (CoOp's scoring, this package's first
open-class protocol): ``ceil(C / 2)`` base classes, base images among the base classes,
new images among the new classes only, their ``"harmonic"`` mean (CoCoOp's H),
and ``"total"`` among all. Scoring new images among the new classes alone is
easier: the numbers of the two are not comparable. Selection rules: ``_protocols.py``
(:func:`~clip_invariance.evaluation.selection_splits`).

Rows layout of a store: the originals ``X`` first, then each round of views
``views[:, v]``, with ``view_groups = tile(arange(n), V + 1)``; the front door
reads the columns layout, every image's views side by side.
"""

import hashlib
import json
import os
import time
import warnings
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils import Bunch

from .. import __version__
from ..datasets import load_embeddings, load_image_folder
from ._checkpoint import append_round, open_checkpoint
from ._methods import (
    FEW_SHOT_METHODS,
    HYPER_PARAMETERS,
    ICM_METHODS,
    IMAGE_ONLY_METHODS,
    PROMPT_LEARNING_METHODS,
    VIEW_METHODS,
    check_grid_values,
    default_grids,
    make_method,
)
from ._plan import DEFAULT_SELECTION, INTERVENTIONS, PROTOCOLS, TEMPLATES, plan_evaluation
from ._protocols import select_and_fit, selection_splits

__all__ = [
    "PROTOCOLS",
    "INTERVENTIONS",
    "TEMPLATES",
    "COLUMNS",
    "DEFAULT_SELECTION",
    "evaluate_store",
    "evaluate_image_folder",
    "evaluate_ablation",
]

# The honest rules' mean accuracies (0-1) may differ by this much before selection="all" warns: more
# than the seed-to-seed spread of a selection on the synthetic benchmark's unshifted environments.
RULES_DISAGREE = 0.05

COLUMNS = ["protocol", "method", "interventions", "target", "seed", "split", "accuracy",
           "validation_accuracy", "selection", *HYPER_PARAMETERS, "n_train", "n_test", "templates",
           "train_views"]



def evaluate_store(store, *, protocol="dg", methods=None, interventions=None, seeds=(0,),
                   selection=None, templates="single",
                   include_target_name=False, grids=None, holdout=0.2, front_door_params=None,
                   progress=False, n_jobs=None, checkpoint=None):
    """Evaluate methods on an embedding store, with hyper-parameters chosen without the target.

    For every protocol, target environment, seed and method: the selection
    rule (:func:`~clip_invariance.evaluation.selection_splits`) makes
    train/validation splits of the sources, the method's grid is searched on
    them, the chosen parameters are refitted on the sources' training parts
    (80% by default, drawn with the seed) and scored on the target's originals.
    Every argument is checked against the store before anything is fitted.

    Parameters
    ----------
    store : str, path or :class:`~sklearn.utils.Bunch`
        A store folder, or what :func:`~clip_invariance.datasets.load_embeddings` returns.
    protocol : {"dg", "open-class", "base-to-new", "all"}, default="dg"
        Leave-one-domain-out; its base/new class split scored as CLIP-ICM
        scores it (every image among all classes); the same split scored as
        CoOp does (each half among its own classes, a labelled variant); or
        all three.
    methods : list of str, "all" or None, default=None
        Among ``zero-shot, zero-shot-icm, prototype, probe, probe-views,
        probe-icm, probe-icm-views, front-door, front-door-icm, wise,
        wise-icm, tip-adapter, tip-adapter-icm, cdc-prompts, coop``
        (:data:`METHODS`).
        ``prototype`` is the cosine nearest class mean of the training
        images; ``probe`` and ``probe-icm`` train their logistic
        regression on the original images (the projector of ``probe-icm``
        learns from the views); ``probe-views`` and ``probe-icm-views`` train
        it on the originals and the augmented views alike: ``probe-views`` is
        the fair control of ``probe-icm``, separating "learns from
        augmentations" from "projects onto an invariant subspace". ``wise``
        and ``tip-adapter`` are the baselines a user would run instead
        (:mod:`clip_invariance.baselines`): the zero-shot head plus a probe or
        a cache of the original training images, scored like the prompt
        methods in the open-class protocols (the probe or cache adds nothing
        to a new class); their ``-icm`` variants put both heads in the
        invariant subspace. ``cdc-prompts`` and ``coop``
        (:data:`PROMPT_LEARNING_METHODS`) learn prompt contexts through the
        text tower of the model that made the store, recorded by
        :func:`~clip_invariance.embedding.embed_image_folder`, and reach new
        classes by encoding their names. ``None``:
        every method of :data:`DEFAULT_METHODS` (all but those two, much
        slower) the store supports, the others skipped with a warning
        (the prompt methods without prompts; the invariant ones without any
        intervention; the view methods without views). ``"all"``: every
        method, the learned prompts skipped too on a store that records no
        loadable model or no class names. A method asked for
        that the store cannot run is an error.
    interventions : {"image", "text", "both"}, list of them, or None, default=None
        Where the invariant methods learn their projection from: the
        augmented views (fitted on the rows layout with ``view_groups``), the
        text interventions (fitted on the originals), or both. ``None``:
        ``"both"``, or the one the store has (with a warning).
    seeds : sequence of int, default=(0,)
        One round per seed: the seed draws the sources' 80/20 split (and the
        front door's training).
    selection : {"source-val", "lodo-cv", "views-val", "oracle", "all"} or None, default=None
        How hyper-parameters are chosen (:data:`SELECTION_RULES`);
        ``"oracle"`` peeks at the target and every row says so in its
        ``selection`` column. ``"all"``: every honest rule the store supports
        (not the oracle), each in its own rows, with a warning when their
        mean accuracies for a method differ by more than 5 points -- then the
        rules' assumptions, not the method, decide the result. ``None``:
        :data:`DEFAULT_SELECTION`, ``"lodo-cv"``, the honest rule with the
        smallest worst-case regret against the oracle on stores with exact
        and imperfect augmentations and on real features
        (docs/evaluation.rst); with two environments, where each target
        leaves one source, ``"views-val"`` (or ``"source-val"`` without
        views), with a warning.
    templates : {"single", "ensemble"}, default="single"
        The zero-shot prompts: the paper's single template ("a photo of a
        {}.", ``prompt_embeddings``) or the ensemble
        (``prompt_ensemble_embeddings``). The front door always fuses the
        ensemble when the store has one.
    include_target_name : bool, default=False
        Keep the text interventions that name the target environment (a
        leak); by default they are dropped. Labelled ``"text+target-name"``.
    grids : dict, default=None
        Hyper-parameter -> values, overriding :func:`~clip_invariance.evaluation.default_grids`
        for ``n_components``, ``lam``, ``C``, ``temperature``, ``wise_alpha``,
        ``tip_alpha``, ``tip_beta``, ``prompt_epochs``.
    holdout : float, default=0.2
        Share of every source held out for validation.
    front_door_params : dict, default=None
        Other parameters of :class:`~clip_invariance.FrontDoorEnsembleClassifier`
        (e.g. ``{"max_iter": 20}``).
    progress : bool, default=False
        A progress bar over protocols x targets x seeds x methods.
    n_jobs : int or None, default=None
        Rounds (rule x protocol x target x seed x method) run in parallel
        with joblib; ``None`` is one, ``-1`` every core. The rows are the
        same whatever the number. Each round runs its BLAS on one thread
        (its fits are small), so more cores help through ``n_jobs`` only.
    checkpoint : str or path, default=None
        A file that keeps every finished round: it is written as each round
        ends, and a later call with the same store and arguments reads the
        rounds back instead of running them again (an interrupted evaluation
        resumes). A checkpoint written for another store or other arguments
        is refused.

    Returns
    -------
    results : pandas.DataFrame
        One row per protocol x method x interventions x target x seed x split,
        columns :data:`COLUMNS`: the selected hyper-parameters (NaN where the
        method has none), ``validation_accuracy`` (of the chosen parameters),
        ``n_train`` (source images trained on), ``n_test``. ``split`` is
        ``"all"`` in ``dg``; ``"base"``, ``"new"`` and their ``"harmonic"``
        mean in ``open-class``; ``"base"``, ``"new"``, ``"total"`` and the
        ``"harmonic"`` mean of base and new in ``base-to-new`` (the probes
        only have ``"base"``, among the base classes).
        ``results.attrs["config"]`` holds everything needed to rerun.

    Raises
    ------
    ValueError
        A bad argument, or one the store cannot serve (before any fit).
    ImportError
        Without pandas (``pip install 'clip-invariance[evaluate]'``).
    FileNotFoundError
        If the store folder does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
    >>> from clip_invariance.evaluation import evaluate_store
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> store = tempfile.mkdtemp() + "/store"
    >>> save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
    ...                 views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    >>> results = evaluate_store(store, methods=["probe", "probe-icm"], interventions="image",
    ...                          grids={"n_components": [8], "lam": [10], "C": [0.316]})
    >>> results.groupby("method")["accuracy"].size().to_dict()
    {'probe': 4, 'probe-icm': 4}
    """
    pd = _import("pandas", "evaluate")
    _check_n_jobs(n_jobs)
    path = None
    if not isinstance(store, Bunch):
        path = os.path.abspath(os.fspath(store))
        store = load_embeddings(path)
    plan = plan_evaluation(
        store, protocol=protocol, methods=methods, interventions=interventions, seeds=seeds,
        selection=selection, templates=templates,
        include_target_name=include_target_name, grids=grids, holdout=holdout,
        front_door_params=front_door_params, progress=progress,
    )
    from tqdm.auto import tqdm

    rounds = [(r, p, t, s, v) for r in plan.selections for p in plan.protocols for t in plan.targets
              for s in plan.seeds for v in plan.variants]
    done = {} if checkpoint is None else open_checkpoint(checkpoint, _fingerprint(store, plan))
    done = {i: done[_round_key(r)] for i, r in enumerate(rounds) if _round_key(r) in done}
    pending = [i for i in range(len(rounds)) if i not in done]
    jobs = (delayed(_indexed_round)(plan, i, *rounds[i][:4], *rounds[i][4]) for i in pending)
    with tqdm(total=len(rounds), initial=len(done), desc="Evaluating", unit="round",
              disable=not progress) as bar:
        for i, records, seconds in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
            done[i] = records
            if checkpoint is not None:
                append_round(checkpoint, _round_key(rounds[i]), records, seconds=seconds)
            rule, protocol_, target, seed, (method, _) = rounds[i]
            bar.set_postfix_str(f"{protocol_} {target} seed {seed} {method}", refresh=False)
            bar.update()
    records = [row for i in range(len(rounds)) for row in done[i]]
    results = pd.DataFrame.from_records(records, columns=COLUMNS)
    if len(plan.selections) > 1:
        _warn_if_rules_disagree(results)
    results.attrs["config"] = {
        "store": path,
        "arguments": plan.arguments,
        "clip_invariance_version": __version__,
        "store_settings": dict(store.settings or {}),
        "skipped": plan.skipped,
    }
    return results


def evaluate_image_folder(root, store, *, model_name="ViT-B-32", pretrained="openai", device="auto",
                          batch_size=64, n_augmented=1, random_state=0, progress=False, **evaluate_kwargs):
    """Embed an image folder into a store (resumably), then :func:`evaluate_store` on it.

    Every argument, the evaluation's included, is checked before the first
    image is embedded: the folder and its layout, the weights (loaded once,
    which gives the embedding size), then the evaluation's arguments against
    a placeholder of the store the folder will make (same rows, views,
    classes, environments and text interventions, no embeddings). An
    interrupted run resumes where it stopped; a second run embeds nothing.

    Parameters
    ----------
    root : str or path
        Folder laid out as ``<environment>/<class>/<image>``.
    store : str or path
        Where the embeddings are kept (created, or resumed).
    model_name, pretrained, device, batch_size, n_augmented, random_state
        As in :func:`~clip_invariance.embedding.embed_image_folder`.
    progress : bool, default=False
        Progress bars while embedding and evaluating.
    **evaluate_kwargs
        The keyword arguments of :func:`evaluate_store`.

    Returns
    -------
    results : pandas.DataFrame
        As :func:`evaluate_store` returns.
    """
    import inspect

    from ..embedding import CLIPEmbedder, embed_image_folder

    arguments = inspect.signature(evaluate_store).bind(None, progress=progress, **evaluate_kwargs)
    arguments.apply_defaults()
    plan_arguments = {k: v for k, v in arguments.arguments.items() if k != "store"}
    _check_n_jobs(plan_arguments["n_jobs"])
    data = load_image_folder(root)
    if len(data.environment_names) < 2:
        raise ValueError(f"{root}: leave-one-domain-out needs at least two environment folders, found "
                         f"{data.environment_names}.")
    embedder = CLIPEmbedder(model_name, pretrained, device=device, batch_size=batch_size, progress=False)
    dim = embedder.fit().embedding_dim_  # loads the weights once: the store's embedder reuses them
    run_options = ("n_jobs", "checkpoint")  # how to run, not what: the plan does not need them
    model = {"model_name": model_name, "pretrained": None if pretrained is None else os.fspath(pretrained),
             "embedding_dim": dim}
    plan_evaluation(_placeholder_store(data, dim, n_augmented, model),
                    **{k: v for k, v in plan_arguments.items() if k not in run_options})
    embedded = embed_image_folder(root, store, model_name=model_name, pretrained=pretrained, device=device,
                                  batch_size=batch_size, n_augmented=n_augmented, random_state=random_state,
                                  progress=progress)
    results = evaluate_store(embedded, **plan_arguments)
    results.attrs["config"]["store"] = os.path.abspath(os.fspath(store))  # the rerun reads the store
    return results


def _placeholder_store(data, dim, n_augmented, model):
    """What embed_image_folder will store, with zero-cost zero arrays in place of embeddings."""
    from ..embedding import DEFAULT_SETTINGS, DEFAULT_STYLES, get_templates, text_interventions_with_styles

    def zeros(*shape):
        return np.broadcast_to(np.float32(0), shape)

    n, n_classes = len(data.y), len(data.class_names)
    texts, text_view_groups, styles = text_interventions_with_styles(
        data.class_names, DEFAULT_STYLES, DEFAULT_SETTINGS
    )
    return Bunch(
        X=zeros(n, dim), y=data.y, environments=data.environments,
        views=zeros(n, n_augmented, dim) if n_augmented else None,
        class_names=data.class_names, environment_names=data.environment_names,
        prompt_embeddings=zeros(n_classes, dim),
        prompt_ensemble_embeddings=zeros(len(get_templates("simple")), n_classes, dim),
        text_interventions=zeros(len(texts), dim), text_view_groups=text_view_groups,
        text_intervention_texts=np.asarray(texts), text_intervention_styles=np.asarray(styles),
        settings={"model": model},
    )


def evaluate_ablation(store, *, method="zero-shot-icm", n_components=None, lam=None,
                      fixed_n_components=None, fixed_lam=10.0, **kwargs):
    """Target accuracy against ``K`` (``lam`` fixed) and against ``lam`` (``K`` fixed): the papers' ablations.

    Descriptive only: target accuracy across a grid is what the selection
    rules must not look at. Each grid point is one :func:`evaluate_store` run
    with that single value (the other tuned parameters, e.g. the probe's
    ``C``, are still chosen by ``selection``); the method without ``-icm``
    is run once as the reference.

    Parameters
    ----------
    store : str, path or Bunch
        As in :func:`evaluate_store`.
    method : {"zero-shot-icm", "probe-icm", "front-door-icm"}, default="zero-shot-icm"
    n_components, lam : list, default=None
        The values swept; ``None``: the default grids.
    fixed_n_components : int, default=None
        ``K`` while ``lam`` is swept; ``None``: ``D // 8``.
    fixed_lam : float, default=10.0
        ``lam`` while ``K`` is swept.
    **kwargs
        Passed to :func:`evaluate_store` (``protocol`` is ``"dg"``).

    Returns
    -------
    results : pandas.DataFrame
        :func:`evaluate_store`'s columns, plus ``parameter`` (``"n_components"``,
        ``"lam"``, or ``"reference"`` for the method without projection) and ``value``.

    Examples
    --------
    >>> import tempfile
    >>> from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
    >>> from clip_invariance.evaluation import evaluate_ablation
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> store = tempfile.mkdtemp() + "/store"
    >>> save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
    ...                 views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    >>> ablation = evaluate_ablation(store, n_components=[4, 8], lam=[1, 10], interventions="image")
    >>> ablation["parameter"].unique().tolist()
    ['reference', 'n_components', 'lam']
    >>> ablation.query("parameter == 'lam'")[["lam", "n_components"]].drop_duplicates().values.tolist()
    [[1.0, 8.0], [10.0, 8.0]]
    """
    pd = _import("pandas", "evaluate")
    if method not in ICM_METHODS:
        raise ValueError(f"The ablation sweeps the projector: method must be one of {list(ICM_METHODS)}, "
                         f"got {method!r}.")
    if not isinstance(store, Bunch):
        store = load_embeddings(store)
    dim = store.X.shape[1]
    grids = {**default_grids(dim), **dict(kwargs.pop("grids", None) or {})}
    fixed = {"n_components": max(1, dim // 8) if fixed_n_components is None else fixed_n_components,
             "lam": fixed_lam}
    sweeps = {"n_components": grids["n_components"] if n_components is None else n_components,
              "lam": grids["lam"] if lam is None else lam}
    for name in sweeps:  # every value checked before anything is fitted
        check_grid_values(name, [fixed[name]], dim)
        sweeps[name] = check_grid_values(name, sweeps[name], dim)
    kwargs = {**kwargs, "protocol": "dg"}
    frames = []
    reference = evaluate_store(store, methods=[method.replace("-icm", "")], grids=grids, **{
        k: v for k, v in kwargs.items() if k != "interventions"})
    frames.append(reference.assign(parameter="reference", value=np.nan))
    for name, values in sweeps.items():
        other = "lam" if name == "n_components" else "n_components"
        for value in values:
            point = {**grids, name: [value], other: [fixed[other]]}
            run = evaluate_store(store, methods=[method], grids=point, **kwargs)
            frames.append(run.assign(parameter=name, value=float(value)))
    return pd.concat(frames, ignore_index=True)


def _warn_if_rules_disagree(results):
    """Warn when the honest rules' mean accuracies for a method differ by more than RULES_DISAGREE."""
    keys = ["protocol", "method", "interventions", "split"]
    means = results.groupby([*keys, "selection"], sort=False)["accuracy"].mean().unstack("selection")
    spread = means.max(axis=1) - means.min(axis=1)
    for key, gap in spread[spread > RULES_DISAGREE].items():
        cells = ", ".join(f"{rule} {100 * value:.1f}" for rule, value in means.loc[key].dropna().items())
        warnings.warn(
            f"The selection rules disagree by {100 * gap:.1f} points on {key[1]} ({key[0]}, "
            f"{key[2]}, split {key[3]}; mean accuracy: {cells}): which rule's assumption holds decides "
            "the result on this store. Report the rules side by side (see the guide on choosing K and "
            "lam).", UserWarning, stacklevel=3)


# BLAS threads of a round; None leaves them as they are (benchmarks/bench_evaluate.py's reference).
_ROUND_BLAS_THREADS = 1


def _check_n_jobs(n_jobs):
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0):
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core) or None, got {n_jobs!r}.")


def _indexed_round(plan, index, *args):
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    # One BLAS thread per round: the fits of a round are small (lbfgs steps, D x D solves), and numpy's and
    # scipy's two BLAS pools spinning on the same cores made the probes' search 8.6x slower on 2 cores
    # (benchmarks/bench_evaluate.py); more cores go to rounds in parallel (n_jobs).
    with threadpool_limits(limits=_ROUND_BLAS_THREADS, user_api="blas"):
        records = _evaluate_round(plan, *args)
    return index, records, round(time.perf_counter() - start, 3)


def _round_key(round_):
    rule, protocol, target, seed, (method, source) = round_
    return json.dumps([rule, protocol, str(target), int(seed), method, source])


def _fingerprint(store, plan):
    """What a checkpoint must have been written for: the store's rows and the evaluation's arguments."""
    digest = hashlib.blake2b(digest_size=16)
    layout = plan.layout
    for array in (layout.X, layout.y, layout.environments, layout.view_groups):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data if array.dtype.kind != "O" else repr(array.tolist()).encode())
    arguments = {**plan.arguments, "store_settings": dict(store.settings or {})}
    digest.update(json.dumps(arguments, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _evaluate_round(plan, rule, protocol, target, seed, method, source):
    """The rows of one method on one target and seed: select, fit on the sources, score the target."""
    layout = plan.layout
    every = np.arange(plan.n_classes)
    classes, keep = every, np.ones(len(layout.y), dtype=bool)
    if protocol == "open-class":  # CLIP-ICM's split: base = the first half, rounded down
        classes = every[: plan.n_classes // 2]
        keep = np.isin(layout.y, classes)
    elif protocol == "base-to-new":  # CoOp's split: base = the first half, rounded up
        classes = every[: (plan.n_classes + 1) // 2]
        keep = np.isin(layout.y, classes)
    learned = method in PROMPT_LEARNING_METHODS  # prompts encoded from the class names by the store's model
    front_door = method.startswith("front-door") or method == "cdc-prompts"  # the columns layout
    prompts = None if learned else plan.front_door_prompts if front_door else plan.prompts
    text = text_groups = None
    if source in ("text", "both"):
        text, text_groups = plan.texts[target]
        # Open-class: no description of a new class either. Text view groups are class indices, as
        # make_invariant_embeddings and embed_image_folder write them.
        base = np.isin(text_groups, classes)
        text, text_groups = text[base], text_groups[base]
    estimator, grid, paths = make_method(
        method, grids=plan.grids, prompts=None if prompts is None else prompts[..., classes, :],
        classes=classes, text_interventions=text, text_view_groups=text_groups,
        n_views=layout.n_views, text_only=source == "text", random_state=seed,
        front_door_params={"verbose": plan.progress, **plan.front_door_params},  # a bar per training
        model=plan.model, class_names=None if not learned else [plan.class_names[c] for c in classes],
        prompt_params={"device": "auto", "verbose": plan.progress},
    )
    if not grid:  # nothing to choose, but the validation accuracy is still measured
        grid = {"temperature": [estimator.temperature]}

    rows = np.flatnonzero(keep)
    splits, train = selection_splits(
        rule, layout.environments[rows], target, view_groups=layout.view_groups[rows],
        is_original=layout.is_original[rows], holdout=plan.holdout, random_state=seed,
    )
    splits, train = [(rows[a], rows[b]) for a, b in splits], rows[train]
    image_icm = method in ("zero-shot-icm", "probe-icm", "probe-icm-views", *FEW_SHOT_METHODS) and source in (
        "image", "both")
    image_only = method in IMAGE_ONLY_METHODS
    train_views = method in VIEW_METHODS
    if not (image_icm or train_views):  # training rows: the originals only
        splits = [(a[layout.is_original[a]], b) for a, b in splits]
        train = train[layout.is_original[train]]
    fit_params = {}
    if image_icm and method in ("zero-shot-icm", *FEW_SHOT_METHODS):
        # The baselines' heads learn from the first view of each group, the originals (head_on_views=False).
        fit_params = {"view_groups": layout.view_groups}
    elif image_icm:
        fit_params = {"proj__view_groups": layout.view_groups}
        if not train_views:  # the projector learns from the views, the probe from the originals
            fit_params["clf__sample_weight"] = layout.is_original.astype(float)
    X, y = layout.X, layout.y
    if front_door:  # same row indices; the view rows exist only to validate on (views-val)
        X = layout.columns(with_view_rows=rule == "views-val")
        y = layout.y[: len(X)]
    model, best, validation = select_and_fit(estimator, grid, X, y, splits, train, fit_params=fit_params)

    label = "none" if source is None else source
    if plan.include_target_name and source in ("text", "both"):
        label += "+target-name"
    elif plan.texts_unfiltered and source in ("text", "both"):
        label += "+unfiltered"  # the store's texts carry no style: those naming the target may remain
    templates = "learned" if learned else None
    if prompts is not None and not image_only:
        templates = plan.templates if not front_door else ("ensemble" if np.ndim(prompts) == 3 else "single")
    common = {
        "protocol": protocol, "method": method, "interventions": label, "target": target,
        "seed": seed, "validation_accuracy": validation, "selection": rule,
        **{name: best.get(paths[name], np.nan) if name in paths else np.nan for name in HYPER_PARAMETERS},
        "n_train": int(np.count_nonzero(layout.is_original[train])),
        "templates": templates, "train_views": train_views,
    }
    new = every[len(classes):]
    if protocol == "dg":
        scored = [("all", classes, model)]
    elif image_only:  # a head learned from images knows the base classes only: base images among them
        scored = [("base", classes, model)]
    elif learned:  # the learned contexts encode the other class names (nothing refitted)
        names = np.asarray(plan.class_names, dtype=object)
        everything = model.with_classes(list(names), classes=every)
        if protocol == "open-class":
            scored = [("base", classes, everything), ("new", new, everything)]
        else:
            only_new = model.with_classes(list(names[new]), classes=new)
            scored = [("base", classes, model), ("new", new, only_new), ("total", every, everything)]
    elif protocol == "open-class":  # every image among all the classes
        everything = model.with_prompts(prompts, classes=every)
        scored = [("base", classes, everything), ("new", new, everything)]
    else:  # base-to-new: each half among its own classes
        scored = [("base", classes, model),
                  ("new", new, model.with_prompts(prompts[..., new, :], classes=new)),
                  ("total", every, model.with_prompts(prompts, classes=every))]
    test = layout.is_original & (layout.environments == target)
    out = []
    for split, split_classes, scorer in scored:
        mask = (test & np.isin(layout.y, split_classes))[: len(X)]  # originals come first
        accuracy = float(scorer.score(X[mask], y[mask])) if mask.any() else np.nan
        out.append({**common, "split": split, "accuracy": accuracy, "n_test": int(mask.sum())})
    if protocol in ("open-class", "base-to-new") and not image_only:  # H, the number CoOp's papers report
        base_accuracy, new_accuracy = out[0]["accuracy"], out[1]["accuracy"]
        harmonic = (2 * base_accuracy * new_accuracy / (base_accuracy + new_accuracy)
                    if base_accuracy + new_accuracy > 0 else 0.0)
        out.append({**common, "split": "harmonic", "accuracy": harmonic,
                    "n_test": out[0]["n_test"] + out[1]["n_test"]})
    return out


def _import(module, extra):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"This needs {module}: pip install 'clip-invariance[{extra}]'") from exc
