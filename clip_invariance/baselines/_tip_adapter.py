"""TipAdapterClassifier: Tip-Adapter's training-free cache model added to the zero-shot head."""

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ._base import _PromptHeadClassifier, scatter_columns

__all__ = ["TipAdapterClassifier"]

# Affinity entries computed at once (test rows x cached images): bounds the memory of a prediction.
_BLOCK = 1 << 22


class TipAdapterClassifier(_PromptHeadClassifier):
    r"""Tip-Adapter: CLIP's zero-shot logits plus a key-value cache of the training images.

    Tip-Adapter (Zhang et al., ECCV 2022 [1]_) is training-free. Its cache holds
    the unit training image embeddings as keys :math:`F` (:math:`N \times K`)
    and their one-hot labels as values :math:`L` (:math:`N \times C`). For a
    unit test embedding :math:`z`,

    .. math::

        \ell = s\, T z + \alpha\, \exp\!\big(-\beta\,(1 - F z)\big)^\top L

    with :math:`T` the unit class prompt embeddings, :math:`s` the logit
    scale, :math:`\alpha` the residual ratio (the cache's weight) and
    :math:`\beta` the sharpness of the affinities. :math:`\alpha = 0` is
    zero-shot CLIP. With a ``projector``, keys, test embeddings and prompts
    are all projected into its subspace and re-normalised (``-icm``).

    A class the cache holds no image of (a new class given to
    :meth:`with_prompts`) gets nothing from the cache: its logit is the
    zero-shot one. That is how Tip-Adapter scores classes it has no shots of.

    **How this differs from the paper.** The paper caches ``K`` shots per
    class; here the cache holds every training image (of positive
    ``sample_weight``; the originals only, unless ``head_on_views``), with
    the weight on its value (an integer weight is the
    image repeated), so an unbalanced training set gives its larger classes
    larger cache logits. Tip-Adapter-F, which fine-tunes the keys, is not
    implemented: this is the training-free model.

    Parameters
    ----------
    prompt_embeddings : array-like of shape (C, D) or (M, C, D), default=None
        Text embeddings of the class prompts, or of an ensemble of ``M``
        templates. ``None``: the class means of the (projected) training
        images stand in for :math:`T`.
    classes : array-like of shape (n_classes,), default=None
        Label of each class prompt; ``0 .. n_classes - 1`` when None.
        Ignored without prompt embeddings.
    projector : estimator with ``fit`` and ``transform``, default=None
        The projection, usually an :class:`~clip_invariance.InvariantProjector`,
        fitted on every row of ``X`` with ``view_groups`` and
        ``environments``. ``None``: the raw embeddings.
    alpha : float, default=1.0
        Residual ratio: the cache logits' weight (the paper's ablation
        default).
    beta : float, default=5.5
        Sharpness: how fast a cached image's vote decays with its cosine
        distance (the paper's ablation default).
    logit_scale : float, default=100.0
        :math:`s`, CLIP's logit scale; it weighs the zero-shot head against
        the cache.
    head_on_views : bool, default=False
        Whether the cache also learns from the augmented views (the rows
        after the first of each group of ``view_groups`` in :meth:`fit`).
        By default the views are the projector's only, and the cache learns
        from the originals, as the evaluation's ``probe-icm`` does; ``True``
        is the ``probe-icm-views`` counterpart.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of :meth:`predict_proba`.
    class_embeddings_ : ndarray of shape (n_classes, n_components)
        Unit class embeddings :math:`T` in the space of the heads.
    cache_keys_ : ndarray of shape (n_cached, n_components)
        :math:`F`: the unit (projected) training embeddings of positive weight.
    cache_values_ : ndarray of shape (n_cached, n_cache_classes)
        :math:`L`: their one-hot labels times their weights.
    cache_classes_ : ndarray of shape (n_cache_classes,)
        The label of each column of ``cache_values_``.
    projector_ : estimator or None
        The fitted clone of ``projector``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    clip_invariance.ZeroShotInvariantClassifier : The ``alpha=0`` model.
    WiSEClassifier : The other few-shot baseline.

    References
    ----------
    .. [1] R. Zhang et al., "Tip-Adapter: Training-free adaption of CLIP for
       few-shot classification", ECCV 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.baselines import TipAdapterClassifier
    >>> prompts = np.eye(3)[:2]  # two classes, prompts along the first two axes
    >>> X = np.array([[0.0, 0.6, 0.8], [0.0, 0.8, 0.6]])  # two shots of class 0, near prompt 1
    >>> clf = TipAdapterClassifier(prompts, alpha=100.0, beta=5.0).fit(X, [0, 0])
    >>> clf.cache_values_.tolist()
    [[1.0], [1.0]]
    >>> clf.predict([[0.1, 0.6, 0.8]]), clf.set_params(alpha=0.0).predict([[0.1, 0.6, 0.8]])
    (array([0]), array([1]))
    """

    # Read at prediction only: a search scores every (alpha, beta) from one cache (evaluation._search).
    _prediction_parameters = ("alpha", "beta")

    _parameter_constraints: dict = {
        **_PromptHeadClassifier._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, prompt_embeddings=None, classes=None, projector=None, alpha=1.0, beta=5.5,
                 logit_scale=100.0, head_on_views=False):
        self.prompt_embeddings = prompt_embeddings
        self.classes = classes
        self.projector = projector
        self.alpha = alpha
        self.beta = beta
        self.logit_scale = logit_scale
        self.head_on_views = head_on_views

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, view_groups=None, environments=None, sample_weight=None):
        """Fit the projector on ``X``, embed the classes, and cache the training images.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings (raw or L2-normalised), including any
            interventional views marked by ``view_groups``.
        y : array-like of shape (n_samples,)
            Class labels; with prompts, each must be one of ``classes``.
        view_groups : array-like of shape (n_samples,), default=None
            Interventional group id of each row (rows of one group are
            views of one image, the original first, as
            :func:`~clip_invariance.views.stack_views` lays them out), passed
            to the projector. Unless ``head_on_views``, the cache learns from
            the first row of each group only.
        environments : array-like of shape (n_samples,), default=None
            Environment of each row, passed to the projector; ignored
            without one.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row's cache value; rows of weight 0 are not
            cached. The projector sees every row.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        return self._fit_with_unchanged_state(X, y, view_groups, environments, sample_weight)

    def _fit_head(self, Z, y, sample_weight):
        cached = sample_weight > 0
        self.cache_classes_, codes = np.unique(y[cached], return_inverse=True)
        self.cache_keys_ = Z[cached]
        values = np.zeros((len(codes), len(self.cache_classes_)))
        values[np.arange(len(codes)), codes] = sample_weight[cached]
        self.cache_values_ = values

    def _head_logits(self, Z):
        if self.alpha == 0:  # the cache adds nothing
            return 0.0
        cache = np.empty((len(Z), self.cache_values_.shape[1]))
        step = max(1, _BLOCK // max(1, len(self.cache_keys_)))
        for start in range(0, len(Z), step):
            affinity = Z[start:start + step] @ self.cache_keys_.T
            cache[start:start + step] = np.exp(-self.beta * (1.0 - affinity)) @ self.cache_values_
        return self.alpha * scatter_columns(cache, self.cache_classes_, self.classes_)
