"""WiSEClassifier: WiSE-FT's weight-space ensemble of the zero-shot head and a linear probe."""

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval

from ._base import _PromptHeadClassifier, scatter_columns

__all__ = ["WiSEClassifier"]


class WiSEClassifier(_PromptHeadClassifier):
    r"""WiSE-FT on frozen features: the zero-shot head and a linear probe, mixed in weight space.

    WiSE-FT (Wortsman et al., CVPR 2022 [1]_) interpolates the weights of the
    zero-shot model and of the fine-tuned one. On frozen CLIP features both
    are linear heads on the unit image embedding :math:`z`
    (:math:`z = A^\top x / \|A^\top x\|` in the invariant subspace of a
    fitted ``projector``, :math:`x / \|x\|` without one):

    - zero-shot: :math:`W_{zs} = s\,T`, the unit class prompt embeddings
      :math:`T` (projected and re-normalised, as in
      :class:`~clip_invariance.ZeroShotInvariantClassifier`) times the logit
      scale :math:`s`, and no bias;
    - probe: a multinomial logistic regression :math:`(W_p, b_p)` fitted on
      the labelled :math:`z` (``C`` as the evaluation's probe,
      :func:`~clip_invariance.evaluation.make_probe`).

    WiSE predicts with :math:`W = (1 - \alpha) W_{zs} + \alpha W_p` and
    :math:`b = \alpha b_p`. The heads are linear, so this equals mixing their
    logits: :math:`\ell = (1 - \alpha)\, s\, T z + \alpha\, (W_p z + b_p)`;
    :math:`\alpha = 0` is zero-shot CLIP, :math:`\alpha = 1` the probe.

    **How this differs from the paper.** The paper fine-tunes the whole
    image encoder (or, in its linear-classifier variant, the head starting
    from the zero-shot weights) and mixes every weight. Here the encoder is
    frozen, as everywhere in this package, and the probe is trained from
    scratch like the evaluation's other probes, so that the two ends of the
    path are exactly the ``zero-shot`` and ``probe`` baselines. A probe not
    started from the zero-shot head has its own logit scale, so the same
    :math:`\alpha` weighs the heads differently than in the paper; ``alpha``
    is tuned on the sources either way.

    A class the probe never saw (a new class given to :meth:`with_prompts`)
    has no probe weights: its logit is the zero-shot part alone,
    :math:`(1 - \alpha)\, s\, t_c^\top z`, as in a weight-space mix where
    that row of :math:`W_p` is zero.

    Parameters
    ----------
    prompt_embeddings : array-like of shape (C, D) or (M, C, D), default=None
        Text embeddings of the class prompts, or of an ensemble of ``M``
        templates (averaged as CLIP does). ``None``: the zero-shot head is
        the class means of the (projected) training images, the prototype
        classifier.
    classes : array-like of shape (n_classes,), default=None
        Label of each class prompt; ``0 .. n_classes - 1`` when None.
        Ignored without prompt embeddings (the labels then come from ``y``).
    projector : estimator with ``fit`` and ``transform``, default=None
        The projection, usually an :class:`~clip_invariance.InvariantProjector`.
        A clone is fitted on every row of ``X`` with ``view_groups`` and
        ``environments``, as in :class:`~clip_invariance.ZeroShotInvariantClassifier`;
        both heads then live in its subspace. ``None``: the raw embeddings.
    alpha : float in [0, 1], default=0.5
        The probe's share of the mixed weights (WiSE-FT's mixing
        coefficient; the paper's default is 0.5).
    C : float, default=0.316
        Inverse regularisation strength of the probe (the reference's probe).
    logit_scale : float, default=100.0
        :math:`s`, CLIP's learnt logit scale; ZeroShotInvariantClassifier's
        ``temperature``. Here it changes the predictions too: it sets the
        zero-shot head's weight against the probe's.
    head_on_views : bool, default=False
        Whether the probe also learns from the augmented views (the rows
        after the first of each group of ``view_groups`` in :meth:`fit`).
        By default the views are the projector's only, and the probe learns
        from the originals, as the evaluation's ``probe-icm`` does; ``True``
        is the ``probe-icm-views`` counterpart.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of :meth:`predict_proba`.
    class_embeddings_ : ndarray of shape (n_classes, n_components)
        Unit class embeddings :math:`T` in the space of the heads.
    probe_ : sklearn.linear_model.LogisticRegression
        The fitted probe, over the classes of ``y`` (``probe_.classes_``).
        It does not depend on ``alpha``: one probe serves every ``alpha``.
    projector_ : estimator or None
        The fitted clone of ``projector``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    clip_invariance.ZeroShotInvariantClassifier : The ``alpha=0`` end.
    TipAdapterClassifier : The other few-shot baseline.

    References
    ----------
    .. [1] M. Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022.

    Examples
    --------
    >>> from clip_invariance import ZeroShotInvariantClassifier
    >>> from clip_invariance.baselines import WiSEClassifier
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> data = make_invariant_embeddings(n_samples=400, random_state=0)
    >>> train = data.environments != data.test_environment
    >>> wise = WiSEClassifier(data.prompt_embeddings, alpha=0.5).fit(data.X[train], data.y[train])
    >>> wise.predict_proba(data.X[:2]).shape
    (2, 10)
    >>> zero_shot = wise.set_params(alpha=0.0).fit(data.X[train], data.y[train])
    >>> clip = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X[train])
    >>> bool((zero_shot.predict(data.X) == clip.predict(data.X)).all())
    True
    """

    # Read at prediction only: a search scores every alpha from one fit (evaluation._search).
    _prediction_parameters = ("alpha",)

    _parameter_constraints: dict = {
        **_PromptHeadClassifier._parameter_constraints,
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "C": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, prompt_embeddings=None, classes=None, projector=None, alpha=0.5, C=0.316,
                 logit_scale=100.0, head_on_views=False):
        self.prompt_embeddings = prompt_embeddings
        self.classes = classes
        self.projector = projector
        self.alpha = alpha
        self.C = C
        self.logit_scale = logit_scale
        self.head_on_views = head_on_views

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, view_groups=None, environments=None, sample_weight=None):
        """Fit the projector on ``X``, embed the classes, and fit the probe in the subspace.

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
            to the projector. Unless ``head_on_views``, the probe learns from
            the first row of each group only.
        environments : array-like of shape (n_samples,), default=None
            Environment of each row, passed to the projector; ignored
            without one.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in the probe (and the class means without
            prompts); the projector sees every row. Weight 0 keeps a row out
            of the probe.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        return self._fit_with_unchanged_state(X, y, view_groups, environments, sample_weight)

    def _check_head_targets(self, y, sample_weight):
        seen = np.unique(y[sample_weight > 0])
        if len(seen) < 2:
            raise ValueError(f"{type(self).__name__}'s probe needs at least two classes in y (among the "
                             f"rows of positive sample_weight); got one class, {seen.tolist()}.")

    def _fit_head(self, Z, y, sample_weight):
        # The evaluation's probe (make_probe), on the unit features of the zero-shot head.
        self.probe_ = LogisticRegression(C=self.C, max_iter=2000).fit(Z, y, sample_weight=sample_weight)

    def _zero_shot_weight(self):
        return 1.0 - self.alpha

    def _head_logits(self, Z):
        if self.alpha == 0:  # the probe adds nothing
            return 0.0
        scores = self.probe_.decision_function(Z)
        if scores.ndim == 1:  # binary: the logits (-z/2, z/2) have the probe's sigmoid as softmax
            scores = np.stack([-scores / 2, scores / 2], axis=1)
        return self.alpha * scatter_columns(scores, self.probe_.classes_, self.classes_)
