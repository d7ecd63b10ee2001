"""Several prompt templates and augmented views on top of the CLIP-ICM causal model.

Every template says the same thing about a class (its invariant content) and
adds its own nuisance: template ``m`` pushes class embeddings along a few
template-specific directions of the *variant* space, with class-specific
amounts. A single template is therefore noisy in its own way, several
templates are noisy in different ways (so fusing them helps), and since the
nuisance directions do not depend on the class, a class-agnostic map per
template can learn to remove them and still work for unseen classes.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._synthetic import CAUSAL_MODEL_CONSTRAINTS, make_invariant_embeddings

__all__ = ["make_multi_template_embeddings"]


@validate_params(
    {
        **CAUSAL_MODEL_CONSTRAINTS,
        "n_templates": [Interval(Integral, 1, None, closed="left")],
        "template_rank": [Interval(Integral, 1, None, closed="left")],
        "template_nuisance": [Interval(Real, 0, None, closed="left")],
        "style_shift": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def make_multi_template_embeddings(
    n_samples=2000,
    *,
    n_classes=10,
    n_templates=4,
    n_views=4,
    template_rank=4,
    template_nuisance=4.0,
    style_shift=False,
    n_environments=4,
    n_invariant=8,
    n_variant=8,
    n_features=64,
    spurious_correlation=0.9,
    class_separation=1.5,
    style_scale=0.5,
    noise=0.1,
    normalize=False,
    random_state=None,
):
    """Generate image views and multi-template class prompts with known structure.

    Images, environments, augmented views and the hand-written prompt come
    from :func:`~clip_invariance.datasets.make_invariant_embeddings` (same
    causal model, same train/test split by environment). On top of it:

    - view 0 is the image itself, views ``1 .. n_views - 1`` are augmented
      copies (same invariant latents, new variant latents);
    - template ``m`` embeds class ``c`` as
      ``p_c + template_nuisance * B_m r_mc + noise``, where ``p_c`` is the
      hand-written prompt (``anchor_embeddings``), ``B_m`` is an orthonormal
      ``(n_features, template_rank)`` basis drawn inside the variant
      subspace -- different for every template -- and ``r_mc`` a standard
      normal vector. The variant subspace is the span the augmentations
      move, estimated from the view differences.

    With ``style_shift=True`` the templates differ by *style words* instead:
    ``r_m`` is one vector shared by all classes of template ``m``, and ``p_c``
    is the hand-written prompt's invariant part only. The images' variant
    latents carry a class pattern in the training environments (with
    probability ``spurious_correlation``) that is permuted in the test
    environment, so a class embedding that drifts towards the images' style
    directions gains in domain and loses out of domain (issue 10: with
    ``spurious_correlation=1`` and ``normalize=True``, 2000 samples, seed 0,
    the training-free front door scores 0.89 on the test environment, and
    0.53 after 50 epochs of full-rank adapters).

    Parameters
    ----------
    n_samples : int, default=2000
        Number of images, split evenly over environments.
    n_classes : int, default=10
        Number of classes; the first half are the *base* classes, the rest
        the *new* ones (for base-to-new evaluation).
    n_templates : int, default=4
        Number of prompt templates ``M``.
    n_views : int, default=4
        Views per image ``V`` (the image and ``V - 1`` augmentations).
    template_rank : int, default=4
        Dimension of each template's nuisance subspace; at most ``n_variant``.
    template_nuisance : float, default=4.0
        Scale of the template nuisance (of the style words with ``style_shift``).
    style_shift : bool, default=False
        Templates that differ by a class-agnostic style word, and clean class
        prompts, see above: the situation where training can trade
        out-of-domain accuracy for in-domain accuracy.
    style_scale : float, default=0.5
        Scale of environment and augmentation styles; smaller than in
        :func:`~clip_invariance.datasets.make_invariant_embeddings` so that
        the template nuisance, not the image style, dominates the errors.
    n_environments, n_invariant, n_variant, n_features, spurious_correlation, \
class_separation, noise, normalize, random_state
        As in :func:`~clip_invariance.datasets.make_invariant_embeddings`.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X`` (n_samples, n_views * n_features) float32, the views side by side
        (the columns layout of :mod:`clip_invariance.views`, the input of
        :class:`~clip_invariance.FrontDoorEnsembleClassifier`); ``X_views``
        (n_views, n_samples, n_features); ``y``; ``environments``;
        ``test_environment``; ``prompt_embeddings``
        (n_templates, n_classes, n_features), the class prompts of every
        template; ``anchor_embeddings`` (n_classes, n_features), the
        hand-written prompts;
        ``template_nuisance_bases`` (n_templates, n_features, template_rank);
        ``base_classes`` and ``new_classes`` (class ids); ``invariant_basis``.

    Examples
    --------
    >>> from clip_invariance.datasets import make_multi_template_embeddings
    >>> data = make_multi_template_embeddings(n_samples=200, random_state=0)
    >>> data.X.shape, data.prompt_embeddings.shape, data.base_classes.tolist()
    ((200, 256), (4, 10, 64), [0, 1, 2, 3, 4])
    """
    if template_rank > n_variant:
        raise ValueError(
            f"template_rank={template_rank} must be at most n_variant={n_variant}."
        )
    rng = check_random_state(random_state)
    base = make_invariant_embeddings(
        n_samples,
        n_classes=n_classes,
        n_environments=n_environments,
        n_invariant=n_invariant,
        n_variant=n_variant,
        n_features=n_features,
        n_augmented=max(n_views - 1, 1),
        spurious_correlation=spurious_correlation,
        class_separation=class_separation,
        style_scale=style_scale,
        noise=noise,
        normalize=False,
        random_state=rng,
    )
    X0 = base.X.astype(np.float64)
    augmented = base.X_views.astype(np.float64)
    views = np.concatenate([X0[None], augmented[: n_views - 1]])

    # Augmentations move the variant latents only: the top singular vectors
    # of the view differences span the variant subspace.
    differences = (augmented - X0).reshape(-1, n_features)
    _, _, vt = np.linalg.svd(differences, full_matrices=False)
    variant_basis = vt[:n_variant].T

    prompts = base.prompt_embeddings.astype(np.float64)
    if style_shift:
        # Clean prompts: the class content only, no class-specific textual nuisance.
        prompts = prompts @ base.invariant_basis @ base.invariant_basis.T
    templates = np.empty((n_templates, n_classes, n_features))
    nuisance_bases = np.empty((n_templates, n_features, template_rank))
    for m in range(n_templates):
        rotation, _ = np.linalg.qr(rng.standard_normal((n_variant, template_rank)))
        nuisance_bases[m] = variant_basis @ rotation
        # A style word is the same for every class of a template; a nuisance is not.
        amounts = rng.standard_normal((1 if style_shift else n_classes, template_rank))
        templates[m] = (
            prompts
            + template_nuisance * amounts @ nuisance_bases[m].T
            + noise * rng.standard_normal((n_classes, n_features))
        )

    if normalize:
        views, templates, prompts = (
            a / np.linalg.norm(a, axis=-1, keepdims=True) for a in (views, templates, prompts)
        )
    f32 = np.float32
    classes = np.arange(n_classes)
    return Bunch(
        X=np.concatenate(list(views), axis=1).astype(f32),
        X_views=views.astype(f32),
        y=base.y,
        environments=base.environments,
        test_environment=base.test_environment,
        prompt_embeddings=templates.astype(f32),
        anchor_embeddings=prompts.astype(f32),
        template_nuisance_bases=nuisance_bases,
        base_classes=classes[: n_classes // 2],
        new_classes=classes[n_classes // 2 :],
        invariant_basis=base.invariant_basis,
    )
