"""FrontDoorEnsembleClassifier: evidential front-door fusion over templates and views (CDC).

The data path is ``views x templates -> cosine -> evidence -> opinions ->
reduced Dempster fusion -> P(y | do(x))``. Every (template, view) pair is one
decoupled semantic ``s`` of CDC's front-door adjustment; its temperature-
scaled cosines become Dirichlet evidence, and the opinions are fused by
``_evidence.py`` (:func:`~clip_invariance.front_door.fuse_scores`). This
module is the estimator, its numpy inference and the helpers that check and
prepare its inputs; training (one class-agnostic adapter per template, so
that a trained model still predicts classes it never saw from their prompts)
lives in ``_training.py``, which imports torch only when it trains.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils import (
    DocLinkMixin,
    average_prompt_ensemble,
    check_classes,
    check_labels,
    check_prompt_embeddings,
    class_prototypes,
    encode_labels,
    is_dask_array,
    l2_normalize,
    map_classifier_rows,
    normalize_embeddings,
    project_embeddings,
    unchanged_on_error,
)
from ..views import columns_to_rows, split_columns
from ._adapters import TemplateAdapters
from ._evidence import EVIDENCE_FUNCTIONS, fuse_scores, log_evidence, opinion_from_evidence
from ._training import TrainingOptions, train_adapters

__all__ = ["FrontDoorEnsembleClassifier", "CDC_LOSS"]

# The training parameters that make the objective CDC's published loss, L_tce + beta L_de + gamma L_con
# (no proximal penalty, no span, no fused opinion, no KL; L_de summed over m as printed, with the
# 1/(M-1) of its sum over m'). FrontDoorEnsembleClassifier.cdc sets them.
CDC_LOSS = {
    "alpha": 0.0,
    "prompt_span": False,
    "style_guard": False,
    "fused_loss": False,
    "kl_annealing_epochs": None,
    "decoupling_reduction": "sum",
}


class FrontDoorEnsembleClassifier(DocLinkMixin, ClassifierMixin, BaseEstimator):
    r"""Fuse prompt templates and augmented views as subjective-logic opinions (CDC).

    CDC (NeurIPS 2024) estimates :math:`P(y \mid do(x))` by a front-door
    adjustment through decoupled semantics: each of ``M`` prompt templates,
    seen through an image view, gives one opinion, and the opinions are
    fused. For template ``m`` with (adapted, normalised) class embeddings
    :math:`w^m_c` and a normalised view embedding ``v``:

    .. math::

        e^m_c = h(\tau \cos(w^m_c, v)), \quad \alpha^m = e^m + 1, \quad
        b^m_c = e^m_c / S^m, \quad u^m = C / S^m,

    with :math:`S^m = \sum_c \alpha^m_c` and ``h`` one of softplus, ReLU,
    exp (``evidence_function``, :func:`~clip_invariance.front_door.log_evidence`).
    All opinions are fused by the reduced Dempster rule
    (:func:`~clip_invariance.front_door.fuse_evidence`); :meth:`predict_proba`
    is the fused belief normalised to sum to 1 and :meth:`predict_uncertainty`
    the fused uncertainty ``U``. Evidence is handled as its logarithm wherever
    it could leave the floating-point range, so exp evidence stays exact at
    any temperature. Read more in the :ref:`User Guide <front_door>`.

    **Views and templates.** ``X`` holds the ``n_views`` view embeddings of
    each image side by side (the columns layout of
    :mod:`clip_invariance.views`): columns ``[v * D, (v + 1) * D)`` are view
    ``v`` (view 0 is usually the image itself, the others augmentations).
    With ``pairing="paired"`` template ``m`` sees view ``m`` only (CDC pairs
    each template with one augmentation; needs ``n_views == M``): ``M``
    opinions. With ``pairing="all"`` every template sees every view:
    ``M * n_views`` opinions, template-major. ``"auto"`` pairs when
    ``n_views == M``.

    **Training** (``max_iter > 0``, torch). CDC learns the templates'
    prompt tokens through the text encoder; on fixed embeddings there is no
    encoder, so each template gets instead a class-agnostic residual map
    :math:`W_m = I + \Delta_m` (``rank=None``) or
    :math:`W_m = I + U_m V_m^\top` (low rank), applied to all of its class
    embeddings, which are then re-normalised. Two additions of this package
    (not in CDC) confine the update: ``prompt_span`` to the span of the prompt
    and anchor embeddings, ``style_guard`` to directions the augmented views
    do not move (the style). The maps start at the identity and minimise,
    with Adam on CPU,

    .. math::

        L = \sum_k \operatorname{mean}_i \left[\psi(S^k_i) - \psi(\alpha^k_{i, y_i})\right]
            + \beta L_{de} + \gamma L_{con}
            + \alpha \sum_m \operatorname{mean}_c \lVert w^m_c - p^m_c \rVert^2,

    the trusted cross-entropy summed over the opinions ``k`` (the ``pairs_``,
    and with ``fused_loss`` the fused opinion too; :math:`\psi` = digamma);
    the decoupling loss :math:`L_{de}`, the mean over template pairs
    ``m != m'`` and classes ``c`` of
    :math:`\sum_{\bar c} P(\bar c \mid w^m_c, w^{m'}) \log P(\bar c \mid w^m_c, w^{m'})`
    (``P`` a softmax of ``temperature`` times cosines), which pushes templates
    apart; the consistency loss
    :math:`L_{con} = -\frac{1}{C} \sum_m \sum_c \log P(c \mid w^m_c, w^0)`,
    which keeps every template anchored to the hand-written prompts ``w^0``
    (``anchor_embeddings``); and, an addition of this package (``alpha``), a
    proximal penalty that keeps the adapted class embeddings near the
    training-free ones :math:`p^m_c`. ``fused_loss`` (on by default) and
    ``kl_annealing_epochs`` add TMC's fused-opinion and KL terms, also not in
    CDC's loss. The first three terms alone are CDC's published loss:
    :meth:`cdc` sets the parameters that reproduce it (``CDC_LOSS``), and
    :ref:`front_door_deviations` says what each addition measured. Training runs ``max_iter``
    epochs, or stops early when the epoch loss (with ``validation_fraction``,
    the held-out loss) has not improved by ``tol`` for ``n_iter_no_change``
    epochs. ``max_iter=0`` is the training-free fused ensemble.

    **New classes.** The adapters do not depend on the class, so
    :meth:`with_prompts` returns a copy that predicts any set of classes from
    their prompt embeddings, without refitting (base-to-new evaluation).

    **Without prompt embeddings** the classifier uses the normalised
    class means of the (view-averaged) training embeddings as a single
    template, so it is a complete classifier for labelled ``X``.

    **Invariant projection.** With ``projector`` (e.g. an
    :class:`~clip_invariance.InvariantProjector`), a clone is fitted on the
    views in the rows layout with one group per image
    (:func:`~clip_invariance.views.columns_to_rows`; with a single view, on
    ``X`` and ``y``) and then applied to the views *and* to the prompt and
    anchor embeddings, so both sides are compared in the same invariant
    subspace.

    **Bad input.** A zero prompt row has no direction: it is a
    ``ValueError``. A zero view embedding has none either: a warning, and
    uniform probabilities at prediction, never a silent first class. A failed
    :meth:`fit` leaves the classifier as it was.

    **Dask.** Predictions of a dask ``X`` are lazy dask arrays, computed
    chunk by chunk.

    Parameters
    ----------
    prompt_embeddings : array-like of shape (n_templates, n_classes, n_features), default=None
        Class-prompt embeddings, one set per template (a 2-D array is one
        template). ``None``: class prototypes learned from ``X``.
    anchor_embeddings : array-like of shape (n_classes, n_features), default=None
        The hand-written prompts ``w^0`` of the consistency loss. ``None``:
        the prompt-ensemble average of ``prompt_embeddings``. Needs
        ``prompt_embeddings``.
    classes : array-like of shape (n_classes,), default=None
        The label of each class row of the prompt embeddings; ``None`` means
        ``0 .. n_classes - 1``. Ignored without prompt embeddings, where
        the classes are those of ``y``.
    n_views : int, default=1
        Number of view embeddings side by side in each row of ``X``.
    pairing : {"auto", "paired", "all"}, default="auto"
        How templates meet views, see above.
    evidence_function : {"softplus", "relu", "exp"}, default="exp"
        The evidence function ``h``. ``"exp"`` makes each opinion's belief a
        softmax of the cosines; softplus and ReLU are nearly linear in them
        and separate classes less (on the synthetic set-up the training-free
        ensemble scores 0.49 with exp, 0.47 with softplus and 0.46 with relu,
        1000 samples, seed 0).
    temperature : float, default=10.0
        Scale :math:`\tau` of the cosines, in the evidence and in the
        softmaxes of the decoupling and consistency losses. CLIP's own logit
        scale is 100, but with exp evidence that makes every opinion nearly
        certain (``u ~ 0``); 10 keeps the uncertainty informative.
    beta : float, default=0.1
        Weight of the decoupling loss.
    decoupling_reduction : {"mean", "sum"}, default="mean"
        Mean or sum of the decoupling loss over templates (``"sum"`` is ``M``
        times the mean), see :func:`clip_invariance.front_door._training.decoupling_loss`.
        CDC's formula reads as the sum (:meth:`cdc`).
    gamma : float, default=1.0
        Weight of the consistency loss.
    fused_loss : bool, default=True
        Add the trusted cross-entropy of the fused opinion (TMC's full loss;
        an addition to CDC's): more in-domain accuracy at no out-of-domain
        cost on the training table of the :ref:`User Guide <front_door>`.
    kl_annealing_epochs : int or None, default=None
        Add TMC's KL term, weighted ``min(1, epoch / kl_annealing_epochs)``
        (epochs counted from 1), which penalises evidence for the wrong
        classes; ``None``: no KL term (it costs in-domain accuracy).
    alpha : float, default=10.0
        Weight of the proximal penalty ``sum_m mean_c ||w^m_c - p^m_c||^2``
        that keeps the adapted class embeddings near the training-free ones;
        an addition of this package, not in CDC's loss. 10 with
        ``style_guard``, chosen on the shift table of
        :ref:`front_door_deviations` (20 before the guard).
    rank : int or None, default=None
        Rank of each adapter's update; ``None`` for a full residual map.
    prompt_span : bool, default=True
        Confine each update to the span of the prompt and anchor embeddings
        (what a soft prompt can reach); an addition of this package, chosen
        with ``alpha`` on the training table of the :ref:`User Guide <front_door>`.
    style_guard : bool, default=True
        Leave out of each update every direction with any style in it: the
        directions the augmented views move (the top right singular vectors of
        the differences between each view and view 0, those above the mean
        variance), so that training cannot align a class embedding with a
        style that is spuriously linked to the class in the training
        environments. An addition of this package; no effect with one view.
        On the shift table of :ref:`front_door_deviations` it is what keeps
        the trained classifier from losing accuracy out of domain.
    learning_rate : float, default=1e-3
        Adam step size.
    batch_size : int, default=256
        Minibatch size (capped at the number of training rows).
    max_iter : int, default=50
        Maximum number of epochs; 0 skips training (and torch).
    tol : float or None, default=1e-4
        Minimum improvement of the epoch loss, or of the held-out loss with
        ``validation_fraction``. ``None``: without ``validation_fraction``,
        always run ``max_iter`` epochs; with it, any improvement counts.
    n_iter_no_change : int, default=5
        Epochs without improvement before stopping.
    validation_fraction : float in (0, 1) or None, default=None
        Hold out this fraction of the samples (of the environments, rounded,
        when ``fit`` gets ``environments``) and stop on their loss instead,
        keeping the best epoch's adapters (like scikit-learn's MLP).
    projector : estimator or None, default=None
        Unfitted transformer (e.g. ``InvariantProjector``) applied to views
        and prompts alike; cloned at fit.
    random_state : int, RandomState instance or None, default=None
        Seeds the adapter initialisation, the validation split and the
        minibatch order, through a local torch generator: torch's global
        generator is never used, and numpy's only with ``None`` (which draws
        the seed from it, as scikit-learn does).
    verbose : bool, default=False
        A progress bar (tqdm) over the training epochs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the prompt rows.
    class_embeddings_ : ndarray of shape (n_templates, n_classes, n_embedding)
        Adapted, normalised class embeddings used for prediction.
    adapters_ : :class:`~clip_invariance.front_door.TemplateAdapters`
        The learned maps :math:`W_m` in ``X``'s precision and at their rank
        (the identity, stored as nothing, when ``max_iter=0``).
    pairs_ : ndarray of shape (n_opinions, 2)
        ``(template, view)`` of every opinion, in fusion order.
    n_templates_ : int
        Number of templates ``M``.
    projector_ : estimator or None
        The fitted clone of ``projector``.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_features_in_ : int
        Number of columns of ``X`` (``n_views`` times the embedding size).
    feature_names_in_ : ndarray of shape (`n_features`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    clip_invariance.front_door.fuse_evidence : The fusion rule.
    clip_invariance.datasets.make_multi_template_embeddings : Synthetic set-up.

    Examples
    --------
    >>> from clip_invariance import FrontDoorEnsembleClassifier
    >>> from clip_invariance.datasets import make_multi_template_embeddings
    >>> data = make_multi_template_embeddings(n_samples=400, random_state=0)
    >>> clf = FrontDoorEnsembleClassifier(
    ...     data.prompt_embeddings, data.anchor_embeddings, n_views=4, max_iter=0
    ... ).fit(data.X, data.y)
    >>> clf.predict_proba(data.X[:2]).shape, clf.predict_uncertainty(data.X[:2]).shape
    ((2, 10), (2,))
    >>> clf.pairs_.tolist()  # template m sees view m
    [[0, 0], [1, 1], [2, 2], [3, 3]]
    """

    _parameter_constraints: dict = {
        "prompt_embeddings": ["array-like", None],
        "anchor_embeddings": ["array-like", None],
        "classes": ["array-like", None],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "pairing": [StrOptions({"auto", "paired", "all"})],
        "evidence_function": [StrOptions(set(EVIDENCE_FUNCTIONS))],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "decoupling_reduction": [StrOptions({"mean", "sum"})],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "fused_loss": ["boolean"],
        "kl_annealing_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "rank": [Interval(Integral, 1, None, closed="left"), None],
        "prompt_span": ["boolean"],
        "style_guard": ["boolean"],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "projector": [HasMethods(["fit", "transform"]), None],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        prompt_embeddings=None,
        anchor_embeddings=None,
        *,
        classes=None,
        n_views=1,
        pairing="auto",
        evidence_function="exp",
        temperature=10.0,
        beta=0.1,
        decoupling_reduction="mean",
        gamma=1.0,
        fused_loss=True,
        kl_annealing_epochs=None,
        alpha=10.0,
        rank=None,
        prompt_span=True,
        style_guard=True,
        learning_rate=1e-3,
        batch_size=256,
        max_iter=50,
        tol=1e-4,
        n_iter_no_change=5,
        validation_fraction=None,
        projector=None,
        random_state=None,
        verbose=False,
    ):
        self.prompt_embeddings = prompt_embeddings
        self.anchor_embeddings = anchor_embeddings
        self.classes = classes
        self.n_views = n_views
        self.pairing = pairing
        self.evidence_function = evidence_function
        self.temperature = temperature
        self.beta = beta
        self.decoupling_reduction = decoupling_reduction
        self.gamma = gamma
        self.fused_loss = fused_loss
        self.kl_annealing_epochs = kl_annealing_epochs
        self.alpha = alpha
        self.rank = rank
        self.prompt_span = prompt_span
        self.style_guard = style_guard
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.projector = projector
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def cdc(cls, prompt_embeddings=None, anchor_embeddings=None, **params):
        r"""The classifier trained on CDC's published loss, :math:`L_{tce} + \beta L_{de} + \gamma L_{con}`.

        Sets the parameters of
        :data:`~clip_invariance.front_door.CDC_LOSS`: ``alpha=0``,
        ``prompt_span=False`` and ``style_guard=False`` (the package's
        additions off),
        ``fused_loss=False`` and ``kl_annealing_epochs=None`` (TMC's terms,
        not in CDC's loss) and ``decoupling_reduction="sum"`` (:math:`L_{de}`
        summed over the templates ``m``, as :math:`L_{tce}` and
        :math:`L_{con}` are). Everything else is an ordinary parameter, so
        the result clones and grid-searches like any classifier. What stays a
        deviation: adapters on fixed text embeddings instead of prompt
        tokens, and ``evidence_function`` and ``temperature``, which the paper
        does not publish (:ref:`front_door_deviations`).

        Parameters
        ----------
        prompt_embeddings, anchor_embeddings : array-like, default=None
            As in the constructor.
        **params
            Any other constructor parameter; not those of ``CDC_LOSS``.

        Returns
        -------
        clf : FrontDoorEnsembleClassifier
            Unfitted.

        Examples
        --------
        >>> from clip_invariance import FrontDoorEnsembleClassifier
        >>> clf = FrontDoorEnsembleClassifier.cdc(n_views=4, max_iter=20)
        >>> clf.alpha, clf.prompt_span, clf.fused_loss, clf.decoupling_reduction
        (0.0, False, False, 'sum')
        """
        overridden = sorted(set(params) & set(CDC_LOSS))
        if overridden:
            raise ValueError(
                f"FrontDoorEnsembleClassifier.cdc sets {overridden} to reproduce CDC's published loss; "
                "use the constructor to change them."
            )
        return cls(prompt_embeddings, anchor_embeddings, **CDC_LOSS, **params)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, environments=None):
        """Learn the per-template adapters (or only set up the ensemble).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings of each image, side by side.
        y : array-like of shape (n_samples,)
            Class labels; with prompt embeddings they must be among
            ``classes``.
        environments : array-like of shape (n_samples,), default=None
            The environment of each row: ``validation_fraction`` then holds out
            whole environments (routed like ``InvariantProjector``'s metadata).

        Returns
        -------
        self : object
            The fitted classifier.
        """
        with unchanged_on_error(self):  # a failed fit leaves the classifier as it was
            return self._fit(X, y, environments)

    def _fit(self, X, y, environments):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        environments = check_labels(environments, X.shape[0], "environments")
        if environments is not None and self.validation_fraction is None:
            raise ValueError("environments are used to hold out whole environments for "
                             "validation: set validation_fraction too.")
        views = split_columns(X, self.n_views)
        prompts = anchors = None
        if self.prompt_embeddings is None:
            if self.anchor_embeddings is not None:
                raise ValueError("anchor_embeddings are the hand-written prompts of "
                                 "prompt_embeddings, which is None: give prompt_embeddings too.")
            classes, y_idx = np.unique(y, return_inverse=True)
        else:
            prompts = check_prompt_embeddings(self.prompt_embeddings, views.shape[2])
            classes = check_classes(self.classes, prompts.shape[1])
            y_idx = encode_labels(y, classes)
            anchors = check_anchor_embeddings(self.anchor_embeddings, prompts)
        pairs = make_pairs(self.pairing, self.n_views, 1 if prompts is None else prompts.shape[0])

        projector = None
        if self.projector is not None:
            projector = fit_view_projector(clone(self.projector), X, y, self.n_views)
            views = project_embeddings(projector, views)
        if prompts is not None:  # float64, projected or not
            prompts, anchors = (project_embeddings(projector, a) for a in (prompts, anchors))
        views = self._normalize_views(views)  # training is float32: keep X's dtype
        if prompts is None:
            # Class prototypes: normalised means of the view-averaged embeddings.
            anchors = class_prototypes(views.mean(axis=0, dtype=np.float64), y_idx, len(classes))
            prompts = anchors[None]
        prompts = normalize_prompts(prompts)
        anchors = l2_normalize(anchors)

        n_templates, _, dim = prompts.shape
        if self.max_iter == 0:
            adapters = TemplateAdapters.identity(n_templates, dim, views.dtype)
            loss_curve = []
        else:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            options = TrainingOptions.from_estimator(self)
            adapters, loss_curve = train_adapters(views, y_idx, prompts, anchors, pairs, options, seed=seed,
                                                  environments=environments)  # torch from here on
        self.classes_ = classes
        self.projector_ = projector
        self.n_templates_ = n_templates
        self.pairs_ = pairs
        self.adapters_ = adapters
        self.n_iter_ = len(loss_curve)
        self.loss_curve_ = loss_curve
        self.class_embeddings_ = l2_normalize(adapters.apply(prompts)).astype(views.dtype)
        return self

    def predict_proba(self, X):
        """Fused, normalised belief ``P(y | do(x))``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, side by side.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            The fused belief divided by its sum (uniform where no opinion holds any evidence).
        """
        if is_dask_array(X):
            return map_classifier_rows(self, "predict_proba", X)
        belief, _ = self._fused_opinion(X)
        total = belief.sum(axis=1, keepdims=True)
        np.divide(belief, total, out=belief, where=total > 0)
        belief[total[:, 0] == 0] = 1.0 / belief.shape[1]
        return belief

    def predict(self, X):
        """Class with the largest fused belief.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, side by side.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        if is_dask_array(X):
            return map_classifier_rows(self, "predict", X)
        proba = self.predict_proba(X)  # checks that the classifier is fitted first
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_uncertainty(self, X):
        """Fused uncertainty ``U`` in [0, 1]: large when the evidence is weak.

        ``U`` is often tiny (1e-7 .. 1e-2 on the synthetic set-up): rank by it, and pass ``-U``
        (not ``1 - U``, which rounds to 1) as the confidence of the selective-classification
        metrics of :mod:`clip_invariance.evaluation` (:ref:`uncertainty`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, side by side.

        Returns
        -------
        uncertainty : ndarray of shape (n_samples,)
        """
        if is_dask_array(X):
            return map_classifier_rows(self, "predict_uncertainty", X)
        return self._fused_opinion(X)[1]

    def predict_opinions(self, X):
        """The opinion of every (template, view) pair, before fusion.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, side by side.

        Returns
        -------
        opinions : :class:`~sklearn.utils.Bunch`
            ``belief`` (n_opinions, n_samples, n_classes), ``uncertainty``
            (n_opinions, n_samples) and ``pairs`` (n_opinions, 2), the
            ``(template, view)`` of each opinion (same as ``pairs_``).
        """
        opinions = [opinion_from_evidence(log_evidence(scores, self.evidence_function), log=True)
                    for scores in self._scores(X)]
        belief, uncertainty = (np.stack(parts) for parts in zip(*opinions))
        return Bunch(belief=belief, uncertainty=uncertainty, pairs=self.pairs_.copy())

    def with_prompts(self, prompt_embeddings, classes=None):
        """A fitted copy that predicts other classes with the same trained adapters.

        The adapters are class-agnostic, so new classes need only their
        prompt embeddings (same templates, same order; raw, the copy applies
        the fitted projector and the adapters). Nothing is refitted; the copy's
        ``prompt_embeddings`` and ``classes`` parameters describe the new
        classes, its ``anchor_embeddings`` is None (refitting the copy would
        train on them).

        Parameters
        ----------
        prompt_embeddings : array-like of shape (n_templates, n_new_classes, n_features)
            Class-prompt embeddings of the new classes (2-D for one template).
        classes : array-like of shape (n_new_classes,), default=None
            Their labels; ``None`` means ``0 .. n_new_classes - 1``.

        Returns
        -------
        clf : FrontDoorEnsembleClassifier
            A fitted copy whose ``classes_`` are the new classes.

        Examples
        --------
        >>> import numpy as np
        >>> from clip_invariance import FrontDoorEnsembleClassifier
        >>> clf = FrontDoorEnsembleClassifier(np.eye(3)[:2], max_iter=0).fit(np.eye(3)[:2], [0, 1])
        >>> clf.with_prompts(np.eye(3), classes=["a", "b", "c"]).predict([[0.1, 0.0, 1.0]])
        array(['c'], dtype='<U1')

        Base-to-new: train on five classes, predict the other five.

        >>> from clip_invariance.datasets import make_multi_template_embeddings
        >>> data = make_multi_template_embeddings(n_samples=400, random_state=0)
        >>> base = data.base_classes
        >>> clf = FrontDoorEnsembleClassifier(
        ...     data.prompt_embeddings[:, base], n_views=4, max_iter=2, random_state=0
        ... ).fit(data.X[data.y < 5], data.y[data.y < 5])
        >>> new = clf.with_prompts(data.prompt_embeddings[:, 5:], classes=data.new_classes)
        >>> new.classes_.tolist()
        [5, 6, 7, 8, 9]
        """
        check_is_fitted(self)
        prompts = check_prompt_embeddings(prompt_embeddings, self.n_features_in_ // self.n_views)
        if prompts.shape[0] != self.n_templates_:
            raise ValueError(
                f"The classifier was fitted with {self.n_templates_} template(s); "
                f"prompt_embeddings has {prompts.shape[0]}."
            )
        labels = check_classes(classes, prompts.shape[1])
        new = clone(self).set_params(prompt_embeddings=prompt_embeddings, classes=classes,
                                     anchor_embeddings=None)
        vars(new).update({k: v for k, v in vars(self).items() if k.endswith("_")})
        new.classes_ = labels
        prompts = normalize_prompts(project_embeddings(self.projector_, prompts))
        new.class_embeddings_ = l2_normalize(self.adapters_.apply(prompts)).astype(
            self.class_embeddings_.dtype)
        return new

    def _normalize_views(self, views):
        """Unit-norm (n_views, n, D) views, all in one call; zero rows are named (view, row)."""
        name = ("projected " if self.projector is not None else "") + "X"
        if self.n_views == 1:
            return normalize_embeddings(views[0], input_name=name)[None]
        return normalize_embeddings(views, input_name=name + " (view, row)")

    def _transform_views(self, X):
        """Validated, projected views (n_views, n_samples, n_embedding) and ``temperature / |v|``.

        Scaling the (n, C) products beats normalising the (n, D) views; zero, tiny or huge rows take
        the exact normalisation (and its warning). Views keep X's dtype: float32 cosines are accurate
        to 1e-7, and their products twice as fast.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        views = split_columns(X, self.n_views)
        if self.projector_ is not None:
            views = np.stack([self.projector_.transform(view) for view in views])
        # In X's memory order when X is not projected: 40% faster than through the strided views.
        unprojected = self.projector_ is None
        spec, rows = ("nvd,nvd->vn", views.transpose(1, 0, 2)) if unprojected else ("vnd,vnd->vn", views)
        squares = np.einsum(spec, rows, rows)[..., None]
        info = np.finfo(views.dtype)
        bad = ~((squares >= views.shape[2] * info.tiny / info.eps) & (squares < np.inf))[..., 0]
        if bad.any():  # only those rows change: a row's scores do not depend on the batch
            unit = self._normalize_views(views)
            views = views.copy()
            views[bad] = unit[bad]
            squares[bad] = 1.0
        return views, self.temperature / np.sqrt(squares)

    def _scores(self, X):
        """Yield ``temperature * cosine`` (n_samples, n_classes) of every opinion, in ``pairs_`` order."""
        views, scale = self._transform_views(X)
        embeddings = self.class_embeddings_.astype(views.dtype, copy=False)
        for m, v in self.pairs_:
            scores = views[v] @ embeddings[m].T
            yield np.multiply(scores, scale[v], out=scores)

    def _fused_opinion(self, X):
        return fuse_scores(self._scores(X), self.evidence_function)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None and self.max_iter > 0
        return tags


# ------------------------------------------------------------ input helpers
def make_pairs(pairing, n_views, n_templates):
    """``(template, view)`` of every opinion, template-major (``pairing`` as the classifier's)."""
    if pairing == "auto":
        pairing = "paired" if n_views == n_templates else "all"
    if pairing == "paired":
        if n_views != n_templates:
            raise ValueError(
                f"pairing='paired' needs one view per template, got n_views="
                f"{n_views} and {n_templates} template(s)."
            )
        return np.column_stack([np.arange(n_templates)] * 2)
    m, v = np.meshgrid(np.arange(n_templates), np.arange(n_views), indexing="ij")
    return np.column_stack([m.ravel(), v.ravel()])


def fit_view_projector(projector, X, y, n_views):
    """An image and its augmentations are interventional views of one content."""
    if n_views >= 2:
        X_rows, view_groups = columns_to_rows(X, n_views)
        return projector.fit(X_rows, view_groups=view_groups)
    return projector.fit(X, y)


def normalize_prompts(prompts):
    """Unit-norm (M, C, D) prompts; a row the projection zeroed is an error too."""
    flat = prompts.reshape(-1, prompts.shape[-1])
    unit = normalize_embeddings(flat, input_name="projected prompt_embeddings", zero_rows="raise")
    return unit.reshape(prompts.shape)


def check_anchor_embeddings(anchor_embeddings, prompts):
    """The (C, D) anchors ``w^0``: given, or the prompt-ensemble average of the (M, C, D) prompts."""
    if anchor_embeddings is None:
        return average_prompt_ensemble(prompts)
    anchors = check_prompt_embeddings(anchor_embeddings, prompts.shape[2], input_name="anchor_embeddings")
    if np.ndim(anchor_embeddings) != 2 or anchors.shape[1] != prompts.shape[1]:
        raise ValueError(
            f"anchor_embeddings must have shape {prompts.shape[1:]} "
            f"(n_classes, n_features), got {np.shape(anchor_embeddings)}."
        )
    return anchors[0]
