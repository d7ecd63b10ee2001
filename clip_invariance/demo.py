"""The built-in experiments of the command line's first version, with fixed hyper-parameters.

- :func:`evaluate_synthetic`: the benchmark on the package's causal
  generator, where the true invariant subspace is known (``clip-invariance
  demo``).
- :func:`evaluate_image_folder`: CLIP and CLIP-ICM on a DomainBed image
  folder, embedded and evaluated in one go with a fixed ``K`` and ``lam``.
  :func:`clip_invariance.evaluation.evaluate_store` supersedes it (every
  method and protocol, hyper-parameters chosen without the target); it stays
  while the command line still calls it.

Every experiment returns plain rows (dictionaries); printing is the command
line's job.
"""

import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .methods import make_probe
from .protocols import leave_one_domain_out

__all__ = ["evaluate_synthetic", "evaluate_image_folder"]


@validate_params(
    {
        "n_samples": [Interval(Integral, 8, None, closed="left")],
        "normalize": ["boolean"],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "lam": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def evaluate_synthetic(n_samples=2000, normalize=False, n_components=None, lam=10.0, random_state=0):
    """Leave-one-environment-out accuracy on the synthetic causal benchmark.

    The generator (:func:`~clip_invariance.datasets.make_invariant_embeddings`)
    knows the true invariant subspace, so next to the accuracies of zero-shot
    and probe classifiers, raw and in the invariant subspace, each row gives
    an oracle (a probe on the true invariant latents) and the largest
    principal angle between the learned and the true subspace.

    Parameters
    ----------
    n_samples : int, default=2000
        Images generated (spread over the environments).
    normalize : bool, default=False
        L2-normalise the embeddings, as many CLIP pipelines do.
    n_components : int or None, default=None
        Subspace dimension ``K``; ``None``: the true invariant dimension.
    lam : float, default=10.0
        The projector's invariance weight.
    random_state : int, RandomState instance or None, default=0
        Seed of the generator.

    Returns
    -------
    rows : list of dict
        One per held-out environment: ``env``, ``shifted`` (the environment
        whose style and spurious association change), the accuracies
        ``zero-shot``, ``ZS ICM img``, ``ZS ICM txt``, ``ZS ICM``, ``probe``,
        ``probe ICM``, ``oracle``, and ``max angle`` in degrees.

    Examples
    --------
    >>> from clip_invariance.demo import evaluate_synthetic
    >>> rows = evaluate_synthetic(n_samples=400, random_state=0)
    >>> [row["env"] for row in rows], rows[-1]["shifted"]
    ([0, 1, 2, 3], True)
    """
    from .datasets import make_invariant_embeddings
    from .metrics import principal_angles
    from .projection import InvariantProjector
    from .views import stack_views
    from .zero_shot import ZeroShotInvariantClassifier

    data = make_invariant_embeddings(n_samples=n_samples, normalize=normalize, random_state=random_state)
    k = data.invariant_basis.shape[1] if n_components is None else n_components
    if k > data.X.shape[1]:
        raise ValueError(f"n_components={k} must be at most the embedding size, {data.X.shape[1]}.")
    text = {
        "interventions": data.text_interventions,
        "intervention_view_groups": data.text_view_groups,
    }

    def probe_accuracy(features, train, test):
        probe = make_probe().fit(features[train], data.y[train])
        return float(probe.score(features[test], data.y[test]))

    rows = []
    for env in np.unique(data.environments):
        test = data.environments == env
        train = ~test
        X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])

        def zero_shot(projector, X_fit, test=test, **fit_params):
            clf = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=projector)
            clf.fit(X_fit, **fit_params)
            return clf, float(clf.score(data.X[test], data.y[test]))

        _, plain = zero_shot(None, data.X[train])
        _, image_only = zero_shot(InvariantProjector(k, lam=lam), X_pairs, view_groups=view_groups)
        _, text_only = zero_shot(InvariantProjector(k, lam=lam, **text), data.X[train])
        both, both_score = zero_shot(
            InvariantProjector(k, lam=lam, **text), X_pairs, view_groups=view_groups
        )
        projector = both.projector_
        angles = np.degrees(principal_angles(projector.components_.T, data.invariant_basis))
        rows.append(
            {
                "env": int(env),
                "shifted": bool(env == data.test_environment),
                "zero-shot": plain,
                "ZS ICM img": image_only,
                "ZS ICM txt": text_only,
                "ZS ICM": both_score,
                "probe": probe_accuracy(data.X, train, test),
                "probe ICM": probe_accuracy(projector.transform(data.X), train, test),
                "oracle": probe_accuracy(data.invariant_latents, train, test),
                "max angle": float(angles.max()),
            }
        )
    return rows


@validate_params(
    {
        "root": [str, os.PathLike],
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "lam": [Interval(Real, 0, None, closed="left")],
        "templates": [StrOptions({"simple", "openai"})],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def evaluate_image_folder(
    root,
    *,
    model_name="ViT-B-32",
    pretrained="openai",
    device="auto",
    batch_size=64,
    n_views=1,
    n_components=None,
    lam=10.0,
    templates="simple",
    memory=None,
    random_state=0,
):
    """Leave-one-domain-out evaluation of CLIP and CLIP-ICM on a DomainBed image folder.

    Everything that can fail on a user's mistake is checked before any image
    is embedded: the folder and its layout, the number of environments, the
    model and its weights (loaded once), and ``n_components`` against the
    embedding size. Then every image (and ``n_views`` augmented views of it),
    the class prompts and the text interventions are embedded with one
    open_clip backbone, and
    :func:`~clip_invariance.protocols.leave_one_domain_out` runs zero-shot and
    linear-probe classifiers, raw and in the invariant subspace (image and
    text interventions pooled).

    Parameters
    ----------
    root : str or path
        Folder laid out as ``<environment>/<class>/<image>``.
    model_name, pretrained, device, batch_size, memory
        As in :class:`~clip_invariance.CLIPEmbedder`.
    n_views : int, default=1
        Augmented views per image (image interventions).
    n_components : int or None, default=None
        Subspace dimension ``K``; ``None``: ``min(64, D)``.
    lam : float, default=10.0
        The projector's invariance weight.
    templates : {"simple", "openai"}, default="simple"
        Prompt templates: ``"a photo of a {}."`` or CLIP's ensemble.
    random_state : int, default=0
        Seed of the augmentations and of the 80/20 split.

    Returns
    -------
    rows : list of dict
        One per target environment, then their ``average``: ``target`` and
        the accuracies ``zero-shot``, ``ZS ICM``, ``probe``, ``probe ICM``.
    """
    from sklearn.pipeline import Pipeline

    from .augmentation import make_image_interventions
    from .datasets import load_image_folder
    from .embedding import CLIPEmbedder
    from .projection import InvariantProjector
    from .prompts import build_prompts, encode_prompts, make_text_interventions
    from .views import first_views
    from .zero_shot import ZeroShotInvariantClassifier

    data = load_image_folder(root)
    if len(data.environment_names) < 2:
        raise ValueError(
            f"{root}: leave-one-domain-out needs at least two environment folders, found "
            f"{data.environment_names}."
        )
    backbone = {
        "model_name": model_name,
        "pretrained": pretrained,
        "device": device,
        "batch_size": batch_size,
        "memory": memory,
    }
    images = CLIPEmbedder(**backbone, progress="auto").fit()  # loads the weights: fails fast
    dim = images.embedding_dim_
    k = min(64, dim) if n_components is None else n_components
    if k > dim:
        raise ValueError(f"n_components={k} must be at most the embedding size of {model_name}, {dim}.")
    texts = CLIPEmbedder(**backbone, modality="text", progress=False)

    views, view_groups = make_image_interventions(
        list(data.paths), n_views=n_views, random_state=random_state
    )
    X = images.transform(views)
    y = data.y[view_groups]  # view_groups index the images
    environments = data.environments[view_groups]
    prompts = encode_prompts(texts.transform, build_prompts(data.class_names, templates))
    text_strings, text_view_groups = make_text_interventions(data.class_names)
    projector = InvariantProjector(
        k,
        lam=lam,
        interventions=encode_prompts(texts.transform, text_strings),
        intervention_view_groups=text_view_groups,
    )
    candidates = {
        "zero-shot": (ZeroShotInvariantClassifier(prompts), {}),
        "ZS ICM": (
            ZeroShotInvariantClassifier(prompts, projector=projector),
            {"view_groups": view_groups},
        ),
        "probe": (make_probe(), {}),
        "probe ICM": (
            Pipeline([("proj", projector), ("clf", make_probe())]),
            {"proj__view_groups": view_groups},
        ),
    }
    table = {}
    for name, (estimator, fit_params) in candidates.items():
        for row in leave_one_domain_out(
            estimator,
            X,
            y,
            environments,
            fit_params=fit_params,
            view_groups=view_groups,
            scored=first_views(view_groups),  # accuracies on the original images only
            random_state=random_state,
        ):
            table.setdefault(row["target"], {"target": row["target"]})[name] = row["test_accuracy"]
    rows = list(table.values())
    average = {name: float(np.mean([row[name] for row in rows])) for name in candidates}
    rows.append({"target": "average", **average})
    return rows
