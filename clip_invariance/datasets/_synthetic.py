"""Synthetic CLIP-like embeddings drawn from the CLIP-ICM causal model.

environment -> variant latents <- class -> invariant latents;
embedding = orthonormal linear mixture of both + isotropic noise.
The text side shares the mixing, so class prompts align with images.
"""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["make_invariant_embeddings"]


# Shared with make_multi_template_embeddings, which builds on this generator.
CAUSAL_MODEL_CONSTRAINTS = {
    "n_samples": [Interval(Integral, 1, None, closed="left")],
    "n_classes": [Interval(Integral, 2, None, closed="left")],
    "n_environments": [Interval(Integral, 2, None, closed="left")],
    "n_invariant": [Interval(Integral, 1, None, closed="left")],
    "n_variant": [Interval(Integral, 1, None, closed="left")],
    "n_features": [Interval(Integral, 2, None, closed="left")],
    "n_augmented": [Interval(Integral, 1, None, closed="left")],
    "spurious_correlation": [Interval(Real, 0, 1, closed="both")],
    "class_separation": [Interval(Real, 0, None, closed="left")],
    "style_scale": [Interval(Real, 0, None, closed="left")],
    "noise": [Interval(Real, 0, None, closed="left")],
    "normalize": ["boolean"],
    "random_state": ["random_state"],
}


@validate_params(
    {
        **CAUSAL_MODEL_CONSTRAINTS,
        "n_text_styles": [Interval(Integral, 2, None, closed="left")],
        "view_style_fraction": [Interval(Real, 0, 1, closed="right")],
        "view_content_shift": [Interval(Real, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def make_invariant_embeddings(
    n_samples=2000,
    *,
    n_classes=10,
    n_environments=4,
    n_invariant=8,
    n_variant=8,
    n_features=64,
    n_augmented=1,
    n_text_styles=12,
    spurious_correlation=0.9,
    class_separation=1.5,
    style_scale=2.0,
    noise=0.1,
    normalize=False,
    view_style_fraction=1.0,
    view_content_shift=0.0,
    random_state=None,
):
    """Generate CLIP-like image and text embeddings with a known invariant subspace.

    The generative model follows CLIP-ICM:

    - the class ``y`` sets the *invariant* latents
      ``z_inv = offset + class_separation * mu[y] + N(0, I)``;
    - the environment ``e`` sets a style ``s_e`` of the *variant* latents, and
      in the training environments the class also shifts them
      (``z_var = s_e + nu[y] + N(0, 0.25 I)`` with probability
      ``spurious_correlation``, another class's ``nu`` otherwise), which makes
      them spuriously predictive; in the last (test) environment the
      class-to-``nu`` assignment is permuted and the style is new;
    - the embedding is ``x = A_inv z_inv + A_var z_var + noise`` with
      ``[A_inv, A_var]`` orthonormal columns.

    Interventional views keep ``z_inv`` and move ``z_var`` (an augmentation
    changes style only): ``z_var' = z_var + style_scale * eps`` with
    ``eps ~ N(0, I)``. Real augmentations are never that exact, and two
    parameters make them imperfect. ``view_style_fraction = f`` moves only
    the first ``m = ceil(f * n_variant)`` variant latents
    (``eps_j = 0`` for ``j >= m``), so the views do not span the styles the
    test environment moves; ``view_content_shift = c`` also moves the
    content, ``z_inv' = z_inv + c * delta`` with ``delta ~ N(0, I)``. A view
    minus its original is then
    ``A_var[:, :m] style_scale eps[:m] + c A_inv delta`` plus the difference
    of the two noise draws. The defaults (``f = 1``, ``c = 0``) give the
    exact augmentations, and for a given seed every output but ``X_views``
    is the same whatever ``f`` and ``c``. Class prompts share the mixing: the prompt of class
    ``c`` is ``A_inv (offset + class_separation * mu[c]) + A_var tau_c``,
    where ``tau_c`` is a class-specific textual nuisance (what "a photo of a
    dog" says beyond dog-ness). Text interventions describe each class under
    ``n_text_styles`` styles.

    Parameters
    ----------
    n_samples : int, default=2000
        Total number of images, split evenly over environments.
    n_classes : int, default=10
        Number of classes.
    n_environments : int, default=4
        Number of environments; the last one is the test environment.
    n_invariant, n_variant : int, default=8
        Dimensions of the invariant and variant latents.
    n_features : int, default=64
        Embedding dimension; at least ``n_invariant + n_variant``.
    n_augmented : int, default=1
        Augmented views per image.
    n_text_styles : int, default=12
        Styles per class in the text interventions.
    spurious_correlation : float, default=0.9
        Probability, in training environments, that the variant latents carry
        the image's own class pattern.
    class_separation : float, default=1.5
        Scale of class means in the invariant latents (noise there is 1).
    style_scale : float, default=2.0
        Scale of environment, augmentation and text styles.
    noise : float, default=0.1
        Standard deviation of isotropic embedding noise.
    normalize : bool, default=False
        L2-normalise every embedding, as CLIP pipelines usually do.
    view_style_fraction : float in (0, 1], default=1.0
        Share ``f`` of the variant latents an augmentation moves: the first
        ``ceil(f * n_variant)``. ``1.0``: every style factor, the exact
        augmentations of the causal model.
    view_content_shift : float, default=0.0
        Scale ``c`` of the change an augmentation also makes to the invariant
        latents (whose within-class spread is 1). ``0.0``: content is kept.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X`` (n_samples, n_features) float32 image embeddings; ``y``;
        ``environments``; ``test_environment`` (int); ``X_views``
        (n_augmented, n_samples, n_features); ``prompt_embeddings``
        (n_classes, n_features); ``text_interventions``
        (n_classes * n_text_styles, n_features) with
        ``text_view_groups`` (the class of each row);
        ``invariant_basis`` (n_features, n_invariant) orthonormal ground
        truth; ``variant_basis`` (n_features, n_variant), the variant
        directions in the order of the latents (the views move the first
        ``ceil(view_style_fraction * n_variant)``);
        ``invariant_latents`` (n_samples, n_invariant) for an oracle.

    Examples
    --------
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> data.X.shape, data.X_views.shape, data.prompt_embeddings.shape
    ((400, 64), (1, 400, 64), (10, 64))

    Augmentations that move half of the style factors and some content:

    >>> imperfect = make_invariant_embeddings(n_samples=400, view_style_fraction=0.5,
    ...                                       view_content_shift=0.5, random_state=0)
    >>> bool((imperfect.X == data.X).all()), bool((imperfect.X_views == data.X_views).all())
    (True, False)
    """
    if n_features < n_invariant + n_variant:
        raise ValueError(
            f"n_features={n_features} must be at least n_invariant + n_variant "
            f"= {n_invariant + n_variant}."
        )
    if n_samples < n_environments:
        raise ValueError(
            f"n_samples={n_samples} is smaller than n_environments={n_environments}: every "
            "environment, the test environment included, needs at least one sample."
        )
    rng = check_random_state(random_state)
    mixing, _ = np.linalg.qr(rng.standard_normal((n_features, n_invariant + n_variant)))
    a_inv, a_var = mixing[:, :n_invariant], mixing[:, n_invariant:]

    offset = rng.standard_normal(n_invariant)
    offset *= 3.0 / np.linalg.norm(offset)  # CLIP embeddings share a large common direction
    class_means = class_separation * rng.standard_normal((n_classes, n_invariant))
    class_patterns = 1.5 * rng.standard_normal((n_classes, n_variant))
    env_styles = style_scale * rng.standard_normal((n_environments, n_variant))
    env_styles[-1] *= 1.5  # the test environment is further away
    text_nuisance = style_scale * rng.standard_normal((n_classes, n_variant))

    test_env = n_environments - 1
    environments = np.arange(n_samples) * n_environments // n_samples
    y = rng.randint(n_classes, size=n_samples)
    z_inv = offset + class_means[y] + rng.standard_normal((n_samples, n_invariant))

    # Which class pattern the variant latents carry: own class with prob p in
    # training environments, a fixed permutation of classes in the test one.
    pattern_of = y.copy()
    flip = rng.uniform(size=n_samples) > spurious_correlation
    pattern_of[flip] = rng.randint(n_classes, size=flip.sum())
    is_test = environments == test_env
    pattern_of[is_test] = np.roll(np.arange(n_classes), 1)[y[is_test]]
    z_var = (
        env_styles[environments]
        + class_patterns[pattern_of]
        + 0.5 * rng.standard_normal((n_samples, n_variant))
    )

    def embed(inv, var):
        return inv @ a_inv.T + var @ a_var.T + noise * rng.standard_normal((len(inv), n_features))

    X = embed(z_inv, z_var)
    # The moved style factors: a mask, so the draws (and every other output) stay those of f = 1;
    # the tolerance keeps float products whole (0.3 * 10 moves 3 factors, not 4).
    moved = np.arange(n_variant) < math.ceil(view_style_fraction * n_variant - 1e-9)
    X_views = np.stack(
        [
            embed(z_inv, z_var + style_scale * rng.standard_normal(z_var.shape) * moved)
            for _ in range(n_augmented)
        ]
    )
    prompt_inv = offset + class_means
    prompts = embed(prompt_inv, text_nuisance)
    text_styles = style_scale * rng.standard_normal((n_text_styles, n_variant))
    text_groups = np.repeat(np.arange(n_classes), n_text_styles)
    text_interventions = embed(
        prompt_inv[text_groups], text_nuisance[text_groups] + np.tile(text_styles, (n_classes, 1))
    )

    if view_content_shift > 0:
        # Drawn last, so the prompts and texts are those of the exact views; the mixing is linear.
        delta = rng.standard_normal((n_augmented, n_samples, n_invariant))
        X_views = X_views + view_content_shift * delta @ a_inv.T

    if normalize:
        X, X_views, prompts, text_interventions = (
            a / np.linalg.norm(a, axis=-1, keepdims=True)
            for a in (X, X_views, prompts, text_interventions)
        )
    f32 = np.float32
    return Bunch(
        X=X.astype(f32),
        y=y,
        environments=environments,
        test_environment=test_env,
        X_views=X_views.astype(f32),
        prompt_embeddings=prompts.astype(f32),
        text_interventions=text_interventions.astype(f32),
        text_view_groups=text_groups,
        invariant_basis=a_inv,
        variant_basis=a_var,
        invariant_latents=z_inv,
    )
