r"""FrontDoorEnsembleClassifier: evidential front-door fusion over templates and views (CDC).

The data path is ``views x templates -> cosine -> evidence -> opinions ->
reduced Dempster fusion -> P(y | do(x))``. Every (template, view) pair is one
decoupled semantic ``s`` of CDC's front-door adjustment; its temperature-
scaled cosines become Dirichlet evidence, and the opinions are fused by
:mod:`clip_invariance.evidence`. Training learns one class-agnostic adapter
per template in embedding space (torch, imported only when training), so a
trained model still predicts classes it never saw from their prompts.
"""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .evidence import EVIDENCE_FUNCTIONS, EXP_CLIP, _opinion_from_ratio, opinion_from_evidence
from .views import stack_views
from .similarity import average_prompt_ensemble, class_prototypes, l2_normalize

__all__ = ["FrontDoorEnsembleClassifier"]


class FrontDoorEnsembleClassifier(ClassifierMixin, BaseEstimator):
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
    exp (clipped at ``exp(60)``). All opinions are fused by the reduced
    Dempster rule (:func:`clip_invariance.evidence.fuse_opinions`);
    :meth:`predict_proba` is the fused belief normalised to sum to 1 and
    :meth:`predict_uncertainty` the fused uncertainty ``U``.

    **Views and templates.** ``X`` holds the ``n_views`` view embeddings of
    each image side by side: columns ``[v * D, (v + 1) * D)`` are view ``v``
    (view 0 is usually the image itself, the others augmentations). With
    ``pairing="paired"`` template ``m`` sees view ``m`` only (CDC pairs each
    template with one augmentation; needs ``n_views == M``): ``M`` opinions.
    With ``pairing="all"`` every template sees every view: ``M * n_views``
    opinions, template-major. ``"auto"`` pairs when ``n_views == M``.

    **Training.** Each template gets a class-agnostic residual map
    :math:`W_m = I + \Delta_m` (``rank=None``) or
    :math:`W_m = I + U_m V_m^\top` (low rank), applied to all of its class
    embeddings, which are then re-normalised. The maps start at the identity
    and minimise, with Adam on CPU,

    .. math::

        L = \sum_k \operatorname{mean}_i \left[\psi(S^k_i) - \psi(\alpha^k_{i, y_i})\right]
            + \beta L_{de} + \gamma L_{con},

    the trusted cross-entropy summed over the opinions ``k`` (the ``pairs_``;
    :math:`\psi` = digamma); the
    decoupling loss :math:`L_{de}`, the mean over template pairs
    ``m != m'`` and classes ``c`` of
    :math:`\sum_{\bar c} P(\bar c \mid w^m_c, w^{m'}) \log P(\bar c \mid w^m_c, w^{m'})`
    (``P`` a softmax of ``temperature`` times cosines), which pushes templates
    apart; and the consistency loss
    :math:`L_{con} = -\frac{1}{C} \sum_m \sum_c \log P(c \mid w^m_c, w^0)`,
    which keeps every template anchored to the hand-written one ``w^0``
    (``base_embeddings``). Training runs ``max_iter`` epochs, or stops early
    when the epoch loss has not improved by ``tol`` for ``n_iter_no_change``
    epochs. ``max_iter=0`` is the training-free fused ensemble.

    **New classes.** The adapters do not depend on the class, so
    :meth:`with_classes` returns a copy that predicts any set of classes from
    their template embeddings, without refitting (base-to-new evaluation).

    **Without template embeddings** the classifier uses the normalised
    class means of the (view-averaged) training embeddings as a single
    template, so it is a complete classifier for labelled ``X``.

    **Invariant projection.** With ``projector`` (e.g. an
    :class:`~clip_invariance.InvariantProjector`), a clone is fitted on the
    views stacked row-wise with one group per image
    (:func:`~clip_invariance.views.stack_views`; with a single view,
    on ``X`` and ``y``) and then applied to the views *and* to the template
    and base embeddings, so both sides are compared in the same invariant
    subspace.

    Parameters
    ----------
    template_embeddings : array-like of shape (n_templates, n_classes, n_features), default=None
        Class-prompt embeddings, one set per template (a 2-D array is one
        template). ``None``: class prototypes learned from ``X``.
    base_embeddings : array-like of shape (n_classes, n_features), default=None
        The hand-written template ``w^0`` of the consistency loss. ``None``:
        the prompt-ensemble average of ``template_embeddings``.
    classes : array-like of shape (n_classes,), default=None
        The label of each row of the template embeddings; ``None`` means
        ``0 .. n_classes - 1``. Ignored without template embeddings, where
        the classes are those of ``y``.
    n_views : int, default=1
        Number of view embeddings concatenated in each row of ``X``.
    pairing : {"auto", "paired", "all"}, default="auto"
        How templates meet views, see above.
    evidence : {"softplus", "relu", "exp"}, default="exp"
        The evidence function ``h``. ``"exp"`` makes each opinion's belief a
        softmax-like function of the cosines; softplus and ReLU are nearly
        linear in them and separate classes less (on the synthetic set-up
        the training-free ensemble scored 0.49 with exp, 0.42 with softplus,
        1000 samples, seed 0).
    temperature : float, default=10.0
        Scale :math:`\tau` of the cosines, in the evidence and in the
        softmaxes of the decoupling and consistency losses. CLIP's own logit
        scale is 100, but with exp evidence that makes every opinion nearly
        certain (``u ~ 0``); 10 keeps the uncertainty informative.
    beta : float, default=0.1
        Weight of the decoupling loss.
    gamma : float, default=1.0
        Weight of the consistency loss.
    rank : int or None, default=None
        Rank of each adapter's update; ``None`` for a full residual map.
    learning_rate : float, default=1e-3
        Adam step size.
    batch_size : int, default=256
        Minibatch size (capped at the number of samples).
    max_iter : int, default=50
        Maximum number of epochs; 0 skips training.
    tol : float or None, default=1e-4
        Minimum improvement of the epoch loss; ``None`` always runs
        ``max_iter`` epochs.
    n_iter_no_change : int, default=5
        Epochs without improvement before stopping.
    projector : estimator or None, default=None
        Unfitted transformer (e.g. ``InvariantProjector``) applied to views
        and templates alike; cloned at fit.
    random_state : int, RandomState instance or None, default=None
        Seeds the adapter initialisation and the minibatch order (through a
        local torch generator).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the template rows.
    class_embeddings_ : ndarray of shape (n_templates, n_classes, n_embedding)
        Adapted, normalised class embeddings used for prediction.
    adapters_ : ndarray of shape (n_templates, n_embedding, n_embedding)
        The learned maps :math:`W_m` (identity when ``max_iter=0``).
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
    clip_invariance.evidence.fuse_opinions : The fusion rule.
    clip_invariance.datasets.make_multi_template_embeddings : Synthetic set-up.

    Examples
    --------
    >>> from clip_invariance import FrontDoorEnsembleClassifier
    >>> from clip_invariance.datasets import make_multi_template_embeddings
    >>> data = make_multi_template_embeddings(n_samples=400, random_state=0)
    >>> clf = FrontDoorEnsembleClassifier(
    ...     data.template_embeddings, data.base_embeddings, n_views=4, max_iter=0
    ... ).fit(data.X, data.y)
    >>> clf.predict_proba(data.X[:2]).shape, clf.predict_uncertainty(data.X[:2]).shape
    ((2, 10), (2,))
    >>> clf.pairs_.tolist()  # template m sees view m
    [[0, 0], [1, 1], [2, 2], [3, 3]]
    """

    _parameter_constraints: dict = {
        "template_embeddings": ["array-like", None],
        "base_embeddings": ["array-like", None],
        "classes": ["array-like", None],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "pairing": [StrOptions({"auto", "paired", "all"})],
        "evidence": [StrOptions(set(EVIDENCE_FUNCTIONS))],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "rank": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "projector": [HasMethods(["fit", "transform"]), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        template_embeddings=None,
        base_embeddings=None,
        *,
        classes=None,
        n_views=1,
        pairing="auto",
        evidence="exp",
        temperature=10.0,
        beta=0.1,
        gamma=1.0,
        rank=None,
        learning_rate=1e-3,
        batch_size=256,
        max_iter=50,
        tol=1e-4,
        n_iter_no_change=5,
        projector=None,
        random_state=None,
    ):
        self.template_embeddings = template_embeddings
        self.base_embeddings = base_embeddings
        self.classes = classes
        self.n_views = n_views
        self.pairing = pairing
        self.evidence = evidence
        self.temperature = temperature
        self.beta = beta
        self.gamma = gamma
        self.rank = rank
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.projector = projector
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Learn the per-template adapters (or only set up the ensemble).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings of each image, concatenated.
        y : array-like of shape (n_samples,)
            Class labels; with template embeddings they must be among
            ``classes``.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        views = self._split_views(X)

        if self.template_embeddings is None:
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            templates = base = None
        else:
            templates = self._check_templates(self.template_embeddings, views.shape[2])
            self.classes_ = self._check_classes(self.classes, templates.shape[1])
            y_idx = _encode(y, self.classes_)
            if self.base_embeddings is None:
                base = average_prompt_ensemble(templates)
            else:
                base = check_array(
                    self.base_embeddings, dtype=np.float64, input_name="base_embeddings"
                )
                if base.shape != templates.shape[1:]:
                    raise ValueError(
                        f"base_embeddings must have shape {templates.shape[1:]} "
                        f"(n_classes, n_features), got {base.shape}."
                    )

        self.projector_ = None
        if self.projector is not None:
            self.projector_ = _fit_projector(clone(self.projector), views, y)
            views = self._project(views)
            if templates is not None:
                templates, base = self._project(templates), self._project(base)
        views = l2_normalize(views)  # training runs in float32 anyway: keep X's dtype

        if templates is None:
            # Class prototypes: normalised means of the view-averaged embeddings.
            means = class_prototypes(views.mean(axis=0, dtype=np.float64), y_idx, len(self.classes_))
            templates, base = means[None], means
        templates = l2_normalize(templates)
        base = l2_normalize(base)
        self.n_templates_ = templates.shape[0]
        self.pairs_ = self._make_pairs(self.n_templates_)

        dim = templates.shape[2]
        if self.max_iter == 0:
            self.adapters_ = np.broadcast_to(np.eye(dim), (self.n_templates_, dim, dim)).copy()
            self.n_iter_, self.loss_curve_ = 0, []
        else:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            self.adapters_, self.loss_curve_ = _train_adapters(
                views,
                y_idx,
                templates,
                base,
                self.pairs_,
                seed=seed,
                **{name: getattr(self, name) for name in _TRAINING_PARAMS},
            )
            self.n_iter_ = len(self.loss_curve_)
        self.class_embeddings_ = _adapt(templates, self.adapters_)
        return self

    # ------------------------------------------------------------ predict
    def predict_proba(self, X):
        """Fused, normalised belief ``P(y | do(x))``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, concatenated.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            The fused belief divided by its sum (uniform where it is 0, i.e.
            when no opinion holds any evidence).
        """
        belief, _ = self._fused_opinion(X)
        total = belief.sum(axis=1, keepdims=True)
        uniform = np.full_like(belief, 1.0 / belief.shape[1])
        return np.where(total > 0, belief / np.where(total > 0, total, 1.0), uniform)

    def predict(self, X):
        """Class with the largest fused belief.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, concatenated.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_uncertainty(self, X):
        """Fused uncertainty ``U`` in (0, 1]: large when the evidence is weak.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, concatenated.

        Returns
        -------
        uncertainty : ndarray of shape (n_samples,)
        """
        _, uncertainty = self._fused_opinion(X)
        return uncertainty

    def predict_opinions(self, X):
        """The opinion of every (template, view) pair, before fusion.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            View embeddings, concatenated.

        Returns
        -------
        opinions : :class:`~sklearn.utils.Bunch`
            ``belief`` (n_opinions, n_samples, n_classes), ``uncertainty``
            (n_opinions, n_samples) and ``pairs`` (n_opinions, 2), the
            ``(template, view)`` of each opinion (same as ``pairs_``).
        """
        beliefs, uncertainties = [], []
        for evidence in self._evidence(self._transform_views(X)):
            b, u = opinion_from_evidence(evidence)
            beliefs.append(b)
            uncertainties.append(u)
        return Bunch(
            belief=np.stack(beliefs), uncertainty=np.stack(uncertainties), pairs=self.pairs_.copy()
        )

    def with_classes(self, template_embeddings, classes=None):
        """A copy that predicts other classes with the same trained adapters.

        The adapters are class-agnostic, so new classes need only their
        template embeddings (same templates, same order; raw, the copy applies
        the fitted projector and the adapters). Nothing is refitted; the copy's
        ``template_embeddings`` and ``classes`` parameters describe the new
        classes (refitting the copy would train on them).

        Parameters
        ----------
        template_embeddings : array-like of shape (n_templates, n_new_classes, n_features)
            Class-prompt embeddings of the new classes (2-D for one template).
        classes : array-like of shape (n_new_classes,), default=None
            Their labels; ``None`` means ``0 .. n_new_classes - 1``.

        Returns
        -------
        clf : FrontDoorEnsembleClassifier
            A fitted copy whose ``classes_`` are the new classes.

        Examples
        --------
        >>> from clip_invariance import FrontDoorEnsembleClassifier
        >>> from clip_invariance.datasets import make_multi_template_embeddings
        >>> data = make_multi_template_embeddings(n_samples=400, random_state=0)
        >>> base = data.base_classes
        >>> clf = FrontDoorEnsembleClassifier(
        ...     data.template_embeddings[:, base], n_views=4, max_iter=2, random_state=0
        ... ).fit(data.X[data.y < 5], data.y[data.y < 5])
        >>> new = clf.with_classes(data.template_embeddings[:, 5:], classes=data.new_classes)
        >>> new.classes_.tolist()
        [5, 6, 7, 8, 9]
        """
        check_is_fitted(self)
        templates = self._check_templates(template_embeddings, self._n_raw_features())
        if templates.shape[0] != self.n_templates_:
            raise ValueError(
                f"The classifier was fitted with {self.n_templates_} template(s); "
                f"template_embeddings has {templates.shape[0]}."
            )
        new_classes = self._check_classes(classes, templates.shape[1])
        new = copy.deepcopy(self)
        new.template_embeddings = template_embeddings
        new.classes = classes
        new.base_embeddings = None
        if self.projector_ is not None:
            templates = self._project(templates)
        new.class_embeddings_ = _adapt(l2_normalize(templates), self.adapters_)
        new.classes_ = new_classes
        return new

    # -------------------------------------------------------------- helpers
    def _split_views(self, X):
        n, p = X.shape
        if p % self.n_views:
            raise ValueError(
                f"X has {p} feature(s), which is not a multiple of n_views={self.n_views}: "
                "each row must hold n_views embeddings of the same size side by side."
            )
        return X.reshape(n, self.n_views, p // self.n_views).transpose(1, 0, 2)

    def _n_raw_features(self):
        return self.n_features_in_ // self.n_views

    @staticmethod
    def _check_templates(template_embeddings, n_features):
        templates = np.asarray(template_embeddings)
        if templates.ndim == 2:
            templates = templates[None]
        if templates.ndim != 3:
            raise ValueError(
                "template_embeddings must have shape (n_templates, n_classes, n_features) "
                f"or (n_classes, n_features), got {templates.shape}."
            )
        templates = check_array(
            templates.reshape(-1, templates.shape[2]),
            dtype=np.float64,
            input_name="template_embeddings",
        ).reshape(templates.shape)
        if templates.shape[2] != n_features:
            raise ValueError(
                f"template_embeddings have {templates.shape[2]} features but each view "
                f"of X has {n_features}."
            )
        return templates

    @staticmethod
    def _check_classes(classes, n_classes):
        if classes is None:
            return np.arange(n_classes)
        classes = np.asarray(classes)
        if classes.shape != (n_classes,):
            raise ValueError(
                f"classes must list one label per template row ({n_classes}), "
                f"got shape {classes.shape}."
            )
        if len(np.unique(classes)) != n_classes:
            raise ValueError("classes contains duplicate labels.")
        return classes

    def _make_pairs(self, n_templates):
        pairing = self.pairing
        if pairing == "auto":
            pairing = "paired" if self.n_views == n_templates else "all"
        if pairing == "paired":
            if self.n_views != n_templates:
                raise ValueError(
                    f"pairing='paired' needs one view per template, got n_views="
                    f"{self.n_views} and {n_templates} template(s)."
                )
            return np.column_stack([np.arange(n_templates)] * 2)
        m, v = np.meshgrid(np.arange(n_templates), np.arange(self.n_views), indexing="ij")
        return np.column_stack([m.ravel(), v.ravel()])

    def _project(self, embeddings):
        flat = embeddings.reshape(-1, embeddings.shape[-1])
        projected = np.asarray(self.projector_.transform(flat), dtype=np.float64)
        return projected.reshape(embeddings.shape[:-1] + (projected.shape[-1],))

    def _transform_views(self, X):
        """Validated, projected, normalised views: a list of (n_samples, n_embedding).

        Views keep the float dtype of ``X`` (float32 cosines are accurate to
        1e-7, and the matrix products are twice as fast); evidence and fusion
        run in float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        d = self._n_raw_features()
        views = [X[:, v * d : (v + 1) * d] for v in range(self.n_views)]
        if self.projector_ is not None:
            views = [self.projector_.transform(view) for view in views]
        return [l2_normalize(view) for view in views]

    def _evidence(self, views):
        """Yield the evidence (n_samples, n_classes) of every opinion, in ``pairs_`` order."""
        dtype = views[0].dtype
        for m, v in self.pairs_:
            cosine = views[v] @ self.class_embeddings_[m].T.astype(dtype, copy=False)
            scores = cosine.astype(np.float64)
            scores *= self.temperature
            if self.evidence == "exp":
                yield np.exp(np.minimum(scores, EXP_CLIP, out=scores), out=scores)
            elif self.evidence == "softplus":
                yield np.logaddexp(0.0, scores, out=scores)
            else:
                yield np.maximum(scores, 0.0, out=scores)

    def _fused_opinion(self, X):
        views = self._transform_views(X)
        n_classes = len(self.classes_)
        # Fusing Dirichlet opinions only needs R_c = sum_k log(1 + e^k_c / C);
        # see clip_invariance.evidence.
        log_ratio = np.zeros((views[0].shape[0], n_classes))
        for evidence in self._evidence(views):
            evidence /= n_classes
            log_ratio += np.log1p(evidence, out=evidence)
        return _opinion_from_ratio(log_ratio)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None and self.max_iter > 0
        return tags


# ----------------------------------------------------------------- helpers
def _encode(y, classes):
    order = np.argsort(classes)
    sorted_classes = classes[order]
    pos = np.clip(np.searchsorted(sorted_classes, y), 0, len(classes) - 1)
    unknown = sorted_classes[pos] != y
    if unknown.any():
        raise ValueError(
            f"y contains label(s) {np.unique(y[unknown]).tolist()} that are not in "
            f"classes {classes.tolist()}."
        )
    return order[pos]


def _fit_projector(projector, views, y):
    """An image and its augmentations are interventional views of one content."""
    if len(views) >= 2:
        stacked, view_groups = stack_views(views)
        return projector.fit(stacked, view_groups=view_groups)
    return projector.fit(views[0], y)


def _adapt(templates, adapters):
    """Apply each template's map to its class embeddings and re-normalise."""
    return l2_normalize(np.einsum("mcd,med->mce", templates, adapters))


def _evidence_torch(scores, kind):
    import torch

    if kind == "exp":
        return torch.exp(torch.clamp(scores, max=EXP_CLIP))
    if kind == "softplus":
        return torch.nn.functional.softplus(scores)
    return torch.relu(scores)


def _trusted_cross_entropy(evidence, y):
    """``sum_k mean_i [digamma(S^k_i) - digamma(alpha^k_{i, y_i})]``; evidence (K, n, C)."""
    import torch

    alpha = evidence + 1.0
    strength = alpha.sum(dim=-1)
    alpha_y = alpha.gather(-1, y.expand(alpha.shape[0], -1)[..., None])[..., 0]
    return (torch.digamma(strength) - torch.digamma(alpha_y)).mean(dim=1).sum()


def _decoupling_loss(class_embeddings, temperature):
    """Mean over ``m != m'`` and ``c`` of ``sum_cbar P log P`` (negative entropy)."""
    import torch

    n_templates = class_embeddings.shape[0]
    if n_templates < 2:
        return class_embeddings.new_zeros(())
    logits = temperature * torch.einsum("mcd,ned->mnce", class_embeddings, class_embeddings)
    log_p = torch.log_softmax(logits, dim=-1)
    neg_entropy = (log_p.exp() * log_p).sum(dim=-1).mean(dim=-1)  # (M, M)
    off_diagonal = ~torch.eye(n_templates, dtype=torch.bool)
    return neg_entropy[off_diagonal].mean()


def _consistency_loss(class_embeddings, base, temperature):
    """``-(1/C) sum_m sum_c log P(c | w^m_c, w^0)``."""
    import torch

    logits = temperature * torch.einsum("mcd,ed->mce", class_embeddings, base)
    log_p = torch.log_softmax(logits, dim=-1)
    return -torch.diagonal(log_p, dim1=1, dim2=2).mean(dim=1).sum()


# The constructor parameters passed on to _train_adapters.
_TRAINING_PARAMS = (
    "evidence",
    "temperature",
    "beta",
    "gamma",
    "rank",
    "learning_rate",
    "batch_size",
    "max_iter",
    "tol",
    "n_iter_no_change",
)


def _train_adapters(
    views,
    y_idx,
    templates,
    base,
    pairs,
    *,
    seed,
    evidence,
    temperature,
    beta,
    gamma,
    rank,
    learning_rate,
    batch_size,
    max_iter,
    tol,
    n_iter_no_change,
):
    """Adam on ``L_tce + beta L_de + gamma L_con``; returns (adapters, loss curve).

    ``views`` (V, n, D) and ``templates`` (M, C, D) are normalised; the keyword
    arguments are the estimator's parameters of the same names.
    """
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    dtype = torch.float32
    views_t = torch.as_tensor(views, dtype=dtype)
    templates_t = torch.as_tensor(templates, dtype=dtype)
    base_t = torch.as_tensor(base, dtype=dtype)
    y_t = torch.as_tensor(y_idx, dtype=torch.long)
    pair_m = torch.as_tensor(pairs[:, 0], dtype=torch.long)
    pair_v = torch.as_tensor(pairs[:, 1], dtype=torch.long)
    n_templates, _, dim = templates.shape
    n = views.shape[1]

    # Updates start at zero, so every adapter starts at the identity.
    if rank is None:
        delta = torch.zeros(n_templates, dim, dim, dtype=dtype, requires_grad=True)
        weights = [delta]

        def update():
            return delta
    else:
        left = torch.zeros(n_templates, dim, rank, dtype=dtype, requires_grad=True)
        right = torch.randn(n_templates, dim, rank, generator=generator, dtype=dtype)
        right = (right / dim**0.5).requires_grad_(True)
        weights = [left, right]

        def update():
            return left @ right.transpose(1, 2)

    def class_embeddings():
        adapted = templates_t + templates_t @ update().transpose(1, 2)
        return torch.nn.functional.normalize(adapted, dim=-1)

    optimizer = torch.optim.Adam(weights, lr=learning_rate)
    batch_size = min(batch_size, n)
    t = temperature
    loss_curve, best, stall = [], np.inf, 0
    for _ in range(max_iter):
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            emb = class_embeddings()
            scores = torch.bmm(views_t[:, idx][pair_v], emb[pair_m].transpose(1, 2))
            loss = _trusted_cross_entropy(_evidence_torch(t * scores, evidence), y_t[idx])
            if beta > 0:
                loss = loss + beta * _decoupling_loss(emb, t)
            if gamma > 0:
                loss = loss + gamma * _consistency_loss(emb, base_t, t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(idx)
        loss_curve.append(epoch_loss / n)
        if tol is not None:
            if loss_curve[-1] < best - tol:
                best, stall = loss_curve[-1], 0
            else:
                stall += 1
                if stall >= n_iter_no_change:
                    break

    eye = torch.eye(dim, dtype=dtype)
    with torch.no_grad():
        adapters = (eye + update()).double().numpy()
    return adapters, loss_curve
