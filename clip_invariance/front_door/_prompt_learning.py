r"""Learned prompt contexts through the frozen open_clip text tower: CDC as published, and CoOp.

The data path is ``templates -> token ids of "<context> <class name><suffix>"
-> frozen token embeddings, the context positions replaced by learned vectors
-> the frozen text transformer -> one class embedding per (template, class)
-> the front door's evidence and fusion on cached image embeddings``.

Only the contexts learn: the image side is read from embeddings computed once
(the columns layout of :mod:`clip_invariance.views`), so a training step runs
the text tower on the ``M x C`` prompts and never the image tower. Prediction
is numpy: a fitted :class:`~clip_invariance.FrontDoorEnsembleClassifier`
holds the learned class embeddings and fuses the opinions. torch and
open_clip are imported inside the functions that train or encode; the model
lives in the backbone cache of :mod:`clip_invariance.embedding`, never on
the estimator, so a fitted classifier pickles as its contexts and the
model's identity.

The text forward is open_clip's ``CLIP.encode_text`` with the context
positions swapped in after the token embedding (CoOp's ``TextEncoder``):
``token_embedding -> contexts -> + positional_embedding -> transformer ->
ln_final -> the end-of-text token -> text_projection``. Sequences are cut
after their last end-of-text token: under the causal mask no later position
reaches it, so the embeddings are those of the full 77 tokens.
"""

import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils import DocLinkMixin, check_classes, encode_labels, is_dask_array, unchanged_on_error
from ..embedding import build_prompts, get_backbone
from ..views import split_columns
from ._classifier import FrontDoorEnsembleClassifier, make_pairs
from ._evidence import EVIDENCE_FUNCTIONS
from ._training import consistency_loss, decoupling_loss, torch_evidence, trusted_cross_entropy

__all__ = ["PromptLearningFrontDoorClassifier", "CoOpClassifier", "CDC_TEMPLATES"]

#: Four hand-written templates, one per image augmentation (CDC's main setting has ``M = 4``); each
#: one's words before the class name initialise its contexts.
CDC_TEMPLATES = ("a photo of a {}.", "a sketch of a {}.", "a painting of a {}.", "a cartoon of a {}.")

# CoOp draws contexts that no word initialises from N(0, 0.02^2).
_RANDOM_CONTEXT_STD = 0.02


class PromptLearningFrontDoorClassifier(DocLinkMixin, ClassifierMixin, BaseEstimator):
    r"""CDC with learned prompt contexts: the frozen text tower, cached image embeddings, evidential fusion.

    Each of the ``M`` templates ``t^m`` (e.g. ``"a photo of a {}."``) gets
    its own context vectors :math:`p^m_1 .. p^m_d` in the token-embedding
    space of the open_clip text tower, initialised from the template's words
    before the class name. The prompt ``[SOT] p^m_1 .. p^m_d <class
    name><suffix> [EOT]`` runs through the frozen text transformer and gives
    template ``m``'s class embedding :math:`w^m_c`; both encoders stay
    frozen and only the contexts learn (CDC, NeurIPS 2024; CoOp, Zhou et
    al., IJCV 2022).

    **Image side.** ``X`` holds cached image embeddings, the ``n_views``
    views of each image side by side (the columns layout of
    :mod:`clip_invariance.views`, as :class:`~clip_invariance.FrontDoorEnsembleClassifier`
    reads it). With ``pairing="paired"`` template ``m`` sees view ``m``
    (CDC pairs each template with its own augmentation; needs
    ``n_views == M``); with ``"all"`` every template sees every view;
    ``"auto"`` pairs when ``n_views == M``.

    **Loss.** Opinion ``k`` (a template and a view) has evidence
    :math:`e^k_c = h(\tau \cos(w^{m_k}_c, v_k))` and

    .. math::

        L = \sum_k \operatorname{mean}_i \left[\psi(S^k_i) - \psi(\alpha^k_{i, y_i})\right]
            + \beta L_{de} + \gamma L_{con},

    the trusted cross-entropy
    (:func:`~clip_invariance.front_door._training.trusted_cross_entropy`),
    the decoupling loss summed over the templates ``m``
    (:func:`~clip_invariance.front_door._training.decoupling_loss`,
    ``reduction="sum"``) and the consistency loss to the frozen encoder's
    embeddings of the hand-written prompts ``w^0``
    (:func:`~clip_invariance.front_door._training.consistency_loss`).
    ``loss="cross_entropy"`` replaces the first term by the softmax
    cross-entropy of :math:`\tau \cos` per opinion; with one template, one
    view and ``beta = gamma = 0`` that is CoOp (:class:`CoOpClassifier`).
    Adam minimises it for ``max_iter`` epochs over minibatches of images; each
    step runs the text tower on the ``M x C`` prompts.

    **Prediction** fuses the opinions by the reduced Dempster rule, in numpy
    (:class:`~clip_invariance.FrontDoorEnsembleClassifier` with the learned
    class embeddings, ``ensemble_``). With ``evidence_function="exp"`` and a
    single opinion, the fused probability is the softmax of
    :math:`\tau \cos`: CoOp's prediction.

    **New classes.** The contexts do not depend on the class:
    :meth:`with_classes` encodes other class names with them (base-to-new).

    **Pickling.** The model stays in the backbone cache of
    :mod:`clip_invariance.embedding`; a fitted classifier holds its contexts
    and the model's identity (``backbone_identity_``), and
    :meth:`with_classes` reloads the model by that identity.

    Parameters
    ----------
    model_name : str, default="ViT-B-32"
        open_clip architecture (as :class:`~clip_invariance.CLIPEmbedder`'s),
        whose image embeddings ``X`` holds. Its text tower must be CLIP's
        (token embedding, causal transformer, end-of-text pooling); another
        kind (a Hugging Face tower, CoCa's class token) is a ValueError.
    pretrained : str, path or None, default="openai"
        Its weights, as for :class:`~clip_invariance.CLIPEmbedder`; ``None``
        for random weights (tests, benchmarks).
    class_names : sequence of str, default=None
        The ``C`` class names, in the order of ``classes``; underscores read
        as spaces. ``None``: the labels of ``y``, as strings.
    classes : array-like of shape (n_classes,), default=None
        The label of each class name; ``None`` means ``0 .. C - 1``.
        Ignored without ``class_names``.
    templates : sequence of str, default=CDC_TEMPLATES
        The ``M`` hand-written templates, each with one ``{}`` (or
        ``{classname}``) placeholder. The words before it initialise the
        template's contexts; the words after it stay fixed.
    anchor_template : str or None, default=None
        The hand-written prompt ``t^0`` of the consistency loss. ``None``:
        the normalised mean of the frozen encoder's embeddings of
        ``templates`` (the prompt ensemble).
    n_ctx : int or None, default=None
        Context vectors per template. ``None``: as many as the template's
        words before the class name have tokens. More: the extra ones come
        first and start from N(0, 0.02^2), as CoOp's random initialisation.
        Fewer is a ValueError.
    n_views : int, default=1
        Number of view embeddings side by side in each row of ``X``.
    pairing : {"auto", "paired", "all"}, default="auto"
        How templates meet views, see above.
    loss : {"trusted", "cross_entropy"}, default="trusted"
        The classification term: CDC's trusted cross-entropy or the softmax
        cross-entropy (CoOp's).
    evidence_function : {"softplus", "relu", "exp"}, default="exp"
        The evidence function ``h`` (training and prediction).
    temperature : float, default=10.0
        Scale :math:`\tau` of the cosines, in the evidence, the losses and
        the prediction (see :class:`~clip_invariance.FrontDoorEnsembleClassifier`
        for why not CLIP's 100).
    beta : float, default=0.1
        Weight of the decoupling loss.
    gamma : float, default=1.0
        Weight of the consistency loss.
    learning_rate : float, default=2e-3
        Adam's step size.
    batch_size : int, default=32
        Images per step (capped at the number of training rows).
    max_iter : int, default=10
        Epochs; 0 keeps the hand-written contexts (the training-free
        ensemble of the templates).
    device : str, default="cpu"
        Where the text tower runs: a torch device, or ``"auto"`` (CUDA, then
        MPS, then CPU). Training is float32.
    random_state : int, RandomState instance or None, default=None
        Seeds the randomly initialised contexts and the minibatch order,
        through a local torch generator (torch's global one is not used).
    verbose : bool, default=False
        A progress bar (tqdm) over the epochs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of ``class_names_``.
    class_names_ : list of str
        The class names encoded, cleaned (underscores read as spaces).
    contexts_ : list of ndarray of shape (n_ctx_m, width), float32
        The learned context vectors of each template.
    class_embeddings_ : ndarray of shape (n_templates, n_classes, n_embedding)
        Normalised class embeddings of the learned prompts.
    ensemble_ : FrontDoorEnsembleClassifier
        The fitted numpy classifier that fuses the opinions at prediction.
    pairs_ : ndarray of shape (n_opinions, 2)
        ``(template, view)`` of every opinion, in fusion order.
    n_templates_ : int
        Number of templates ``M``.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    backbone_identity_ : tuple
        ``(model_name, pretrained, checkpoint file identity)``: the weights
        the contexts were learned with.
    n_features_in_ : int
        Number of columns of ``X`` (``n_views`` times the embedding size).

    See Also
    --------
    CoOpClassifier : One template, one view, cross-entropy.
    clip_invariance.FrontDoorEnsembleClassifier : The same fusion on fixed
        text embeddings, with adapters instead of prompt contexts.

    Examples
    --------
    A small random-weight CLIP stands in for a pretrained one; ``X`` would
    be its embeddings of each image and three augmentations (256 numbers
    each).

    >>> import numpy as np
    >>> from clip_invariance.front_door import PromptLearningFrontDoorClassifier
    >>> X = np.random.default_rng(0).normal(size=(8, 4 * 256)).astype(np.float32)
    >>> y = np.array([0, 1] * 4)
    >>> clf = PromptLearningFrontDoorClassifier(
    ...     "ViT-S-32-alt", pretrained=None, class_names=["dog", "guitar"], n_views=4,
    ...     max_iter=1, batch_size=8, random_state=0,
    ... ).fit(X, y)
    >>> [c.shape for c in clf.contexts_]  # "a photo of a", "a sketch of a", ...: 4 tokens each
    [(4, 256), (4, 256), (4, 256), (4, 256)]
    >>> clf.pairs_.tolist()  # template m sees view m
    [[0, 0], [1, 1], [2, 2], [3, 3]]
    >>> clf.with_classes(["cat", "piano", "house"]).predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints: dict = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "class_names": ["array-like", None],
        "classes": ["array-like", None],
        "templates": ["array-like"],
        "anchor_template": [str, None],
        "n_ctx": [Interval(Integral, 1, None, closed="left"), None],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "pairing": [StrOptions({"auto", "paired", "all"})],
        "loss": [StrOptions({"trusted", "cross_entropy"})],
        "evidence_function": [StrOptions(set(EVIDENCE_FUNCTIONS))],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        model_name="ViT-B-32",
        pretrained="openai",
        class_names=None,
        *,
        classes=None,
        templates=CDC_TEMPLATES,
        anchor_template=None,
        n_ctx=None,
        n_views=1,
        pairing="auto",
        loss="trusted",
        evidence_function="exp",
        temperature=10.0,
        beta=0.1,
        gamma=1.0,
        learning_rate=2e-3,
        batch_size=32,
        max_iter=10,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.model_name = model_name
        self.pretrained = pretrained
        self.class_names = class_names
        self.classes = classes
        self.templates = templates
        self.anchor_template = anchor_template
        self.n_ctx = n_ctx
        self.n_views = n_views
        self.pairing = pairing
        self.loss = loss
        self.evidence_function = evidence_function
        self.temperature = temperature
        self.beta = beta
        self.gamma = gamma
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn the context vectors of every template.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            Image embeddings of the model ``model_name``, the views of each
            image side by side.
        y : array-like of shape (n_samples,)
            Class labels, among ``classes`` (with ``class_names``).

        Returns
        -------
        self : object
            The fitted classifier.
        """
        with unchanged_on_error(self):  # a failed fit leaves the classifier as it was
            return self._fit(X, y)

    def _fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        templates = _check_templates(self.templates)
        if self.class_names is None:
            classes, y_idx = np.unique(y, return_inverse=True)
            names = [str(label) for label in classes]
        else:
            names = _check_class_names(self.class_names)
            classes = check_classes(self.classes, len(names))
            y_idx = encode_labels(y, classes)
        pairs = make_pairs(self.pairing, self.n_views, len(templates))
        backbone = get_backbone(self.model_name, self.pretrained, self.device, "fp32")
        if X.shape[1] != self.n_views * backbone.embedding_dim:
            raise ValueError(
                f"X has {X.shape[1]} columns; {self.n_views} view(s) of {self.model_name!r} embeddings "
                f"need {self.n_views} x {backbone.embedding_dim} = {self.n_views * backbone.embedding_dim}."
            )
        views = split_columns(X, self.n_views)
        encoder = _PromptEncoder(backbone, templates, self.n_ctx)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        contexts, loss_curve = _train_contexts(encoder, names, views, y_idx, pairs, self, seed)  # torch
        self.classes_ = classes
        self.class_names_ = _clean_names(names)
        self.templates_ = templates
        self.contexts_ = contexts
        self.pairs_ = pairs
        self.n_templates_ = len(templates)
        self.n_iter_ = len(loss_curve)
        self.loss_curve_ = loss_curve
        self.backbone_identity_ = backbone.identity[:3]
        self._set_ensemble(encoder.encode(contexts, names), X.dtype)
        return self

    def _set_ensemble(self, class_embeddings, dtype):
        """The numpy classifier of the fused opinions, holding the learned class embeddings."""
        ensemble = FrontDoorEnsembleClassifier(
            class_embeddings.astype(dtype), classes=self.classes_, n_views=self.n_views, pairing=self.pairing,
            evidence_function=self.evidence_function, temperature=self.temperature, max_iter=0,
        )
        # max_iter=0: no training; one row of ones and one label only set it up
        self.ensemble_ = ensemble.fit(np.ones((1, self.n_features_in_), dtype), self.classes_[:1])
        self.class_embeddings_ = self.ensemble_.class_embeddings_

    def predict_proba(self, X):
        """Fused, normalised belief ``P(y | do(x))``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            Image embeddings, the views side by side.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self.ensemble_.predict_proba(self._check_X(X))

    def predict(self, X):
        """Class with the largest fused belief.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            Image embeddings, the views side by side.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.ensemble_.predict(self._check_X(X))

    def predict_uncertainty(self, X):
        """Fused uncertainty ``U`` in [0, 1] (see :meth:`FrontDoorEnsembleClassifier.predict_uncertainty`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_views * n_features)
            Image embeddings, the views side by side.

        Returns
        -------
        uncertainty : ndarray of shape (n_samples,)
        """
        return self.ensemble_.predict_uncertainty(self._check_X(X))

    def _check_X(self, X):
        """``X`` checked against the fit (its columns, their names); a dask array stays lazy."""
        check_is_fitted(self)
        if is_dask_array(X):  # the ensemble maps it chunk by chunk
            return X
        return validate_data(self, X, dtype=[np.float32, np.float64], reset=False)

    def with_classes(self, class_names, classes=None):
        """A fitted copy that predicts other classes, their names encoded with the learned contexts.

        Nothing is refitted: the new names go through the frozen text tower
        with each template's learned contexts (base-to-new evaluation). The
        copy's ``class_names`` and ``classes`` parameters describe the new
        classes.

        Parameters
        ----------
        class_names : sequence of str
            The new class names.
        classes : array-like of shape (n_new_classes,), default=None
            Their labels; ``None`` means ``0 .. n_new_classes - 1``.

        Returns
        -------
        clf : PromptLearningFrontDoorClassifier
            A fitted copy whose ``classes_`` are the new classes.

        Examples
        --------
        >>> import numpy as np
        >>> from clip_invariance.front_door import CoOpClassifier
        >>> X = np.random.default_rng(0).normal(size=(4, 256))
        >>> coop = CoOpClassifier("ViT-S-32-alt", pretrained=None, class_names=["dog", "cat"], max_iter=0)
        >>> new = coop.fit(X, [0, 1, 0, 1]).with_classes(["car", "bus", "bike"], classes=["c", "b", "k"])
        >>> new.classes_.tolist(), new.predict(X).shape
        (['c', 'b', 'k'], (4,))
        """
        check_is_fitted(self)
        names = _check_class_names(class_names)
        labels = check_classes(classes, len(names))
        backbone = get_backbone(self.model_name, self.pretrained, self.device, "fp32")
        if backbone.identity[:3] != self.backbone_identity_:
            raise ValueError(
                f"The contexts were learned with the weights {self.backbone_identity_}, but "
                f"{backbone.identity[:3]} loads now (the checkpoint file changed?); refit."
            )
        encoder = _PromptEncoder(backbone, self.templates_, [len(c) for c in self.contexts_])
        embeddings = encoder.encode(self.contexts_, names)
        new = _fitted_copy(self)
        new.set_params(class_names=class_names, classes=classes)
        new.classes_ = labels
        new.class_names_ = _clean_names(names)
        new.ensemble_ = self.ensemble_.with_prompts(embeddings.astype(self.class_embeddings_.dtype),
                                                    classes=labels)
        new.class_embeddings_ = new.ensemble_.class_embeddings_
        return new

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None and self.max_iter > 0
        return tags


class CoOpClassifier(PromptLearningFrontDoorClassifier):
    r"""CoOp: one learned prompt context, softmax cross-entropy (Zhou et al., IJCV 2022).

    :class:`PromptLearningFrontDoorClassifier` with one template, one view
    and ``loss="cross_entropy"``, no decoupling or consistency term
    (``beta = gamma = 0``) and exp evidence: the fused probability of the one
    opinion is the softmax of :math:`\tau \cos(w_c, v)`, so training and
    prediction are CoOp's. The baseline every prompt-learning paper
    compares with; its default ``temperature`` is CLIP's logit scale, 100,
    which CoOp trains with.

    Parameters
    ----------
    model_name : str, default="ViT-B-32"
        open_clip architecture whose image embeddings ``X`` holds.
    pretrained : str, path or None, default="openai"
        Its weights; ``None`` for random weights.
    class_names : sequence of str, default=None
        The class names; ``None``: the labels of ``y``, as strings.
    classes : array-like of shape (n_classes,), default=None
        The label of each class name; ``None`` means ``0 .. C - 1``.
    template : str, default="a photo of a {}."
        The hand-written prompt whose words before ``{}`` initialise the
        contexts (CoOp's ``ctx_init``).
    n_ctx : int or None, default=None
        Context vectors; ``None``: the tokens of those words. More: the extra
        ones come first, drawn from N(0, 0.02^2).
    temperature : float, default=100.0
        Scale of the cosines in the softmax.
    learning_rate : float, default=2e-3
        Adam's step size.
    batch_size : int, default=32
        Images per step.
    max_iter : int, default=10
        Epochs.
    device : str, default="cpu"
        A torch device, or ``"auto"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the random contexts and the minibatch order.
    verbose : bool, default=False
        A progress bar over the epochs.

    Attributes
    ----------
    classes_, class_names_, contexts_, class_embeddings_, ensemble_, pairs_
        As :class:`PromptLearningFrontDoorClassifier`'s.
    n_templates_, n_iter_, loss_curve_, backbone_identity_, n_features_in_
        As :class:`PromptLearningFrontDoorClassifier`'s.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import CoOpClassifier
    >>> X = np.random.default_rng(0).normal(size=(6, 256)).astype(np.float32)
    >>> coop = CoOpClassifier("ViT-S-32-alt", pretrained=None, class_names=["dog", "cat"],
    ...                       max_iter=2, random_state=0).fit(X, [0, 1, 0, 1, 0, 1])
    >>> coop.contexts_[0].shape, coop.n_iter_  # "a photo of a": 4 tokens
    ((4, 256), 2)
    >>> coop.pairs_.tolist(), coop.loss
    ([[0, 0]], 'cross_entropy')
    """

    _parameter_constraints: dict = {
        **{name: PromptLearningFrontDoorClassifier._parameter_constraints[name] for name in (
            "model_name", "pretrained", "class_names", "classes", "n_ctx", "temperature", "learning_rate",
            "batch_size", "max_iter", "device", "random_state", "verbose")},
        "template": [str],
    }

    # What makes the front door CoOp: fixed, so not parameters.
    n_views = 1
    pairing = "paired"
    loss = "cross_entropy"
    evidence_function = "exp"
    beta = 0.0
    gamma = 0.0
    anchor_template = None

    def __init__(
        self,
        model_name="ViT-B-32",
        pretrained="openai",
        class_names=None,
        *,
        classes=None,
        template="a photo of a {}.",
        n_ctx=None,
        temperature=100.0,
        learning_rate=2e-3,
        batch_size=32,
        max_iter=10,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.model_name = model_name
        self.pretrained = pretrained
        self.class_names = class_names
        self.classes = classes
        self.template = template
        self.n_ctx = n_ctx
        self.temperature = temperature
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @property
    def templates(self):
        return (self.template,)


# ------------------------------------------------------------ input helpers
def _check_templates(templates):
    if isinstance(templates, str):
        raise TypeError(f"templates must be a sequence of strings, not a single string: use [{templates!r}].")
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty.")
    for template in templates:
        if not isinstance(template, str):
            raise TypeError(f"Each template must be a string with a '{{}}' placeholder, got {template!r}.")
        placeholders = template.count("{}") + template.count("{classname}")
        if placeholders != 1:
            raise ValueError(
                f"Template {template!r} must hold exactly one '{{}}' or '{{classname}}' placeholder "
                f"(where the class name goes), found {placeholders}."
            )
    return templates


def _check_class_names(class_names):
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of strings, not a single string.")
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty.")
    bad = [name for name in names if not isinstance(name, str)]
    if bad:
        raise TypeError(f"class_names must hold strings, got {bad[0]!r}.")
    cleaned = _clean_names(names)
    if len(set(cleaned)) != len(cleaned):
        repeated = sorted(name for name in set(cleaned) if cleaned.count(name) > 1)
        raise ValueError(f"class_names has duplicates: {repeated}.")
    return names


def _clean_names(names):
    # build_prompts reads underscores as spaces: the names as the text tower reads them.
    return [prompt[:-1] for prompt in build_prompts(names, ["{}."])[0]]


def _fitted_copy(estimator):
    """A new estimator with the same parameters and fitted attributes (no deep copy of the arrays)."""
    new = type(estimator)(**estimator.get_params(deep=False))
    vars(new).update({k: v for k, v in vars(estimator).items() if k.endswith("_")})
    return new


# ---------------------------------------------------------------- torch side
class _PromptEncoder:
    """The frozen text tower of a backbone with each template's context positions learnable.

    ``n_ctx`` is None, one int, or one int per template. For template ``m``
    with ``k`` prefix tokens and ``n`` contexts, the prompt of class ``c`` is
    ``"X " * (n - k) + template.format(c)``, tokenised as the model's
    tokenizer does; positions ``1 .. n`` (after the start token) hold the
    contexts.
    """

    def __init__(self, backbone, templates, n_ctx):
        self.backbone = backbone
        self.tower = _text_tower(backbone.model)
        self.templates = list(templates)
        counts = n_ctx if isinstance(n_ctx, (list, tuple)) else [n_ctx] * len(self.templates)
        self.prefixes = []
        self.n_ctx = []
        for template, count in zip(self.templates, counts):
            prefix = template.replace("{classname}", "{}").split("{}")[0].strip()
            k = self._n_tokens(prefix) if prefix else 0
            if count is None:
                if k == 0:
                    raise ValueError(f"Template {template!r} has no words before the class name to "
                                     f"initialise its contexts: set n_ctx.")
                count = k
            if count < k:
                raise ValueError(f"n_ctx={count} is fewer than the {k} tokens of {prefix!r} in template "
                                 f"{template!r}: raise n_ctx, or shorten the words before the class name.")
            self.prefixes.append(prefix)
            self.n_ctx.append(count)

    def _n_tokens(self, text):
        tokens = self.backbone.tokenizer([text])[0]
        return int((tokens != 0).sum()) - 2  # without the start and end tokens

    def tokens(self, names):
        """Token ids (M * C, L) of every template's prompts, cut after the last end token, on the device."""
        import torch

        rows = []
        for template, prefix, count in zip(self.templates, self.prefixes, self.n_ctx):
            k = self._n_tokens(prefix) if prefix else 0
            prompts = [("X " * (count - k)) + text for text in build_prompts(names, [template])[0]]
            tokens = self.backbone.tokenizer(prompts)
            if prefix:  # the prefix must tokenise the same alone and in the prompt
                alone = self.backbone.tokenizer([prefix])[0, 1 : 1 + k]
                if not bool((tokens[:, 1 + count - k : 1 + count] == alone).all()):
                    raise ValueError(f"The words before the class name in {template!r} do not end on a "
                                     f"token boundary; put a space before the placeholder.")
            rows.append(tokens)
        tokens = torch.cat(rows)
        if self.tower.attn_mask is not None:  # causal: no position after the end token reaches it
            tokens = tokens[:, : int(self.tower.pool_positions(tokens).max()) + 1]
        return tokens.to(self.backbone.device)

    def initial_contexts(self, generator):
        """Each template's contexts: its prefix's token embeddings, after N(0, 0.02^2) extra ones."""
        import torch

        contexts = []
        for prefix, count in zip(self.prefixes, self.n_ctx):
            k = self._n_tokens(prefix) if prefix else 0
            width = self.tower.token_embedding.weight.shape[1]
            extra = torch.randn(count - k, width, generator=generator) * _RANDOM_CONTEXT_STD
            with torch.no_grad():
                ids = self.backbone.tokenizer([prefix])[0, 1 : 1 + k].to(self.backbone.device)
                words = self.tower.token_embedding(ids).float().cpu()
            contexts.append(torch.cat([extra, words]))
        return contexts

    def forward(self, contexts, tokens, base):
        """Class embeddings (M, C, D), unnormalised, from contexts (list of (n_m, width)) and tokens."""
        import torch
        from open_clip.transformer import text_global_pool

        tower = self.tower
        n_classes = tokens.shape[0] // len(contexts)
        parts = []
        for m, ctx in enumerate(contexts):
            rows = base[m * n_classes : (m + 1) * n_classes]
            ctx = ctx.to(rows.dtype)[None].expand(n_classes, -1, -1)
            parts.append(torch.cat([rows[:, :1], ctx, rows[:, 1 + ctx.shape[1] :]], dim=1))
        x = torch.cat(parts) + tower.positional_embedding[: tokens.shape[1]].to(base.dtype)
        mask = None if tower.attn_mask is None else tower.attn_mask[: tokens.shape[1], : tokens.shape[1]]
        x = tower.ln_final(tower.transformer(x, attn_mask=mask))
        x = text_global_pool(x, tokens, tower.pool_type, eos_token_id=tower.eos_id)
        if isinstance(tower.text_projection, torch.nn.Linear):
            x = tower.text_projection(x)
        elif tower.text_projection is not None:
            x = x @ tower.text_projection
        return x.reshape(len(contexts), n_classes, -1)

    def base_embeddings(self, tokens):
        """The frozen token embeddings (M * C, L, width) of ``tokens``."""
        import torch

        with torch.no_grad():
            return self.tower.token_embedding(tokens).to(self.tower.transformer.get_cast_dtype())

    def encode(self, contexts, names):
        """Normalised class embeddings (M, C, D), float32 ndarray, of ``names`` with numpy ``contexts``."""
        import torch

        tokens = self.tokens(names)
        contexts = [torch.as_tensor(c, device=self.backbone.device) for c in contexts]
        with torch.no_grad():
            out = torch.nn.functional.normalize(self.forward(contexts, tokens, self.base_embeddings(tokens)),
                                                dim=-1)
        return out.float().cpu().numpy()

    def encode_texts(self, texts):
        """The frozen encoder's normalised embeddings of plain strings (the anchors ``w^0``)."""
        import torch

        with torch.no_grad():
            tokens = self.backbone.tokenizer(list(texts)).to(self.backbone.device)
            return torch.nn.functional.normalize(self.backbone.model.encode_text(tokens).float(), dim=-1)


class _TextTower:
    """The parts of an open_clip text tower that ``encode_text`` uses, for CLIP and CustomTextCLIP."""

    def __init__(self, module, pool_type, eos_id):
        self.token_embedding = module.token_embedding
        self.positional_embedding = module.positional_embedding
        self.transformer = module.transformer
        self.ln_final = module.ln_final
        self.text_projection = module.text_projection
        self.attn_mask = module.attn_mask
        self.pool_type = pool_type
        self.eos_id = eos_id

    def pool_positions(self, tokens):
        """Index of the pooled (end-of-text) token of each row."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.eos_id).int().argmax(dim=-1)


def _text_tower(model):
    """CLIP keeps its text tower's parts on the model, CustomTextCLIP in ``model.text``."""
    text = getattr(model, "text", None)
    if text is None and hasattr(model, "token_embedding"):
        module, pool, eos = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    elif text is not None and hasattr(text, "token_embedding") and hasattr(text, "positional_embedding"):
        if getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False):
            raise ValueError(f"The text tower of {type(model).__name__} appends a class token or masks "
                             f"padding: learned prompt contexts support CLIP's causal text tower only.")
        module, pool, eos = text, text.pool_type, getattr(text, "eos_id", None)
    else:
        raise ValueError(f"{type(model).__name__} has no CLIP text tower (a Hugging Face or timm text "
                         f"encoder?): learned prompt contexts need open_clip's own TextTransformer.")
    if pool not in ("argmax", "eos"):
        raise ValueError(f"The text tower pools with {pool!r}; learned prompt contexts need the end-of-text "
                         f"token ('argmax' or 'eos').")
    return _TextTower(module, pool, eos)


def _train_contexts(encoder, names, views, y_idx, pairs, params, seed):
    """Learn the contexts by Adam; returns (contexts as float32 ndarrays, loss curve)."""
    import torch
    from tqdm.auto import tqdm

    device = encoder.backbone.device
    generator = torch.Generator().manual_seed(int(seed))
    contexts = [c.to(device).requires_grad_(True) for c in encoder.initial_contexts(generator)]
    loss_curve = []
    if params.max_iter > 0:
        objective = _Objective(encoder, names, views, y_idx, pairs, params)
        optimizer = torch.optim.Adam(contexts, lr=params.learning_rate)
        n_samples = views.shape[1]
        batch_size = min(params.batch_size, n_samples)
        bar = tqdm(total=params.max_iter, desc="Prompt learning", unit="epoch", disable=not params.verbose,
                   leave=False)
        for _ in range(params.max_iter):
            order = torch.randperm(n_samples, generator=generator)
            epoch_loss = 0.0
            for start in range(0, n_samples, batch_size):
                rows = order[start : start + batch_size].to(device)
                loss = objective(contexts, rows)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += loss.item() * len(rows)
            loss_curve.append(epoch_loss / n_samples)
            bar.update()
        bar.close()
    return [c.detach().float().cpu().numpy() for c in contexts], loss_curve


class _Objective:
    """The training loss of a minibatch of images as a function of the contexts (see the class docstring)."""

    def __init__(self, encoder, names, views, y_idx, pairs, params):
        import torch

        device = encoder.backbone.device
        self.encoder = encoder
        self.params = params
        self.tokens = encoder.tokens(names)
        self.base = encoder.base_embeddings(self.tokens)
        views = torch.as_tensor(np.asarray(views, dtype=np.float32), device=device)
        self.views = torch.nn.functional.normalize(views, dim=-1)
        self.y = torch.as_tensor(y_idx, dtype=torch.long, device=device)
        self.pair_templates = torch.as_tensor(pairs[:, 0], device=device)
        self.pair_views = torch.as_tensor(pairs[:, 1], device=device)
        self.anchors = None
        if params.gamma > 0:
            anchor = params.anchor_template
            if anchor is None:  # the prompt ensemble of the hand-written templates
                texts = [t for template in encoder.templates for t in build_prompts(names, [template])[0]]
                hand = encoder.encode_texts(texts).reshape(len(encoder.templates), len(names), -1)
                self.anchors = torch.nn.functional.normalize(hand.mean(dim=0), dim=-1)
            else:
                self.anchors = encoder.encode_texts(build_prompts(names, [anchor])[0])

    def class_embeddings(self, contexts):
        import torch

        return torch.nn.functional.normalize(self.encoder.forward(contexts, self.tokens, self.base), dim=-1)

    def __call__(self, contexts, rows):
        import torch

        params = self.params
        t = params.temperature
        emb = self.class_embeddings(contexts)
        y = self.y[rows]
        scores = t * torch.bmm(self.views[:, rows][self.pair_views], emb[self.pair_templates].transpose(1, 2))
        if params.loss == "trusted":
            loss = trusted_cross_entropy(torch_evidence(scores, params.evidence_function), y)
        else:
            loss = sum(torch.nn.functional.cross_entropy(s, y) for s in scores)
        if params.beta > 0 and emb.shape[0] > 1:  # L_de summed over m, as L_tce and L_con are
            loss = loss + params.beta * decoupling_loss(emb, t, reduction="sum")
        if params.gamma > 0:
            loss = loss + params.gamma * consistency_loss(emb, self.anchors, t)
        return loss
