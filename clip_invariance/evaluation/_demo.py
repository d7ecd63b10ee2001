"""The built-in demo (``clip-invariance demo``): CLIP-ICM on the package's causal generator.

:func:`evaluate_synthetic` runs leave-one-environment-out with fixed
hyper-parameters on :func:`~clip_invariance.datasets.make_invariant_embeddings`,
where the true invariant subspace is known, so it can report how well the
subspace was recovered next to the accuracies. It needs no weights and no
network and runs in seconds. It returns plain rows (dictionaries); printing
is the command line's job. Evaluations that choose hyper-parameters without
the target are :func:`~clip_invariance.evaluation.evaluate_store`'s
(``_evaluate.py``).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from ._methods import make_probe

__all__ = ["evaluate_synthetic"]


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
    >>> from clip_invariance.evaluation import evaluate_synthetic
    >>> rows = evaluate_synthetic(n_samples=400, random_state=0)
    >>> [row["env"] for row in rows], rows[-1]["shifted"]
    ([0, 1, 2, 3], True)
    """
    from ..datasets import make_invariant_embeddings
    from ..invariance import InvariantProjector, principal_angles
    from ..views import stack_views
    from ..zero_shot import ZeroShotInvariantClassifier

    data = make_invariant_embeddings(n_samples=n_samples, normalize=normalize, random_state=random_state)
    k = data.invariant_basis.shape[1] if n_components is None else n_components
    if k > data.X.shape[1]:
        raise ValueError(f"n_components={k} must be at most the embedding size, {data.X.shape[1]}.")
    text = {
        "intervention_embeddings": data.text_interventions,
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
