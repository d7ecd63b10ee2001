"""What the baselines share: a zero-shot head of class prompts, in the (optionally projected) image space.

Both baselines add something learnt from labelled images to CLIP's
zero-shot head ``logit_scale * cos(A^T x, A^T t_c)``: WiSE-FT a linear
probe mixed into its weights, Tip-Adapter a cache of the training images.
:class:`_PromptHeadClassifier` does the rest the same way as
:class:`~clip_invariance.ZeroShotInvariantClassifier`: checks, the projector
fit (images with ``view_groups`` and/or fixed text interventions), the
class embeddings, :meth:`with_prompts`, and the prediction methods.
"""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._utils import (
    DocLinkMixin,
    average_prompt_ensemble,
    check_classes,
    check_labels,
    check_prompt_embeddings,
    encode_labels,
    l2_normalize,
    normalize_embeddings,
    project_embeddings,
    refit_prompts,
    unchanged_on_error,
)
from ..views import first_views

# Prompts keep their float dtype up to the (float64) projection, as X does.
_FLOATS = [np.float64, np.float32]


def scatter_columns(values, from_labels, to_labels):
    """``values[:, j]`` belongs to ``from_labels[j]``; the columns of ``to_labels``, zero where absent.

    A head learnt from images knows the classes it was trained on, and no
    other: it adds nothing to a class it never saw.

    Examples
    --------
    >>> import numpy as np
    >>> scatter_columns(np.array([[1.0, 2.0]]), np.array(["a", "b"]), np.array(["b", "c", "a"]))
    array([[2., 0., 1.]])
    """
    lookup = {label: j for j, label in enumerate(np.asarray(from_labels).tolist())}
    out = np.zeros((values.shape[0], len(to_labels)), dtype=np.float64)
    for i, label in enumerate(np.asarray(to_labels).tolist()):
        j = lookup.get(label)
        if j is not None:
            out[:, i] = values[:, j]
    return out


class _PromptHeadClassifier(DocLinkMixin, ClassifierMixin, BaseEstimator):
    """Zero-shot head + a head learnt from labelled images; subclasses define the latter.

    Subclasses implement ``_fit_head(Z, y, sample_weight)`` (unit, projected
    training features; labels; weights) and ``_head_logits(Z)`` (the
    image-learnt part of the logits over ``classes_``), and may override
    ``_zero_shot_weight`` (the factor on the zero-shot logits).
    """

    _parameter_constraints: dict = {
        "prompt_embeddings": ["array-like", None],
        "classes": ["array-like", None],
        "projector": [HasMethods(["fit", "transform"]), None],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
        "head_on_views": ["boolean"],
    }

    def _fit(self, X, y, view_groups, environments, sample_weight):
        X, y = validate_data(self, X, y, dtype=_FLOATS)
        check_classification_targets(y)
        sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        view_groups = check_labels(view_groups, X.shape[0], "view_groups")
        if view_groups is not None and not self.head_on_views:
            # The augmented views are for the projector; the head learns from the originals.
            sample_weight = sample_weight * first_views(view_groups)
        self._check_head_targets(y, sample_weight)
        prompts = classes = None
        if self.prompt_embeddings is not None:
            # Check the prompts and labels before the (costly) projector fit.
            prompts = check_prompt_embeddings(self.prompt_embeddings, X.shape[1], dtype=_FLOATS)
            classes = check_classes(self.classes, prompts.shape[1])
            encode_labels(y, classes)

        projector = None
        if self.projector is not None:
            # Forward only what was given, so any fit(X, y) transformer works too.
            extra = {"view_groups": view_groups, "environments": environments}
            extra = {key: value for key, value in extra.items() if value is not None}
            # The projector only needs to know which rows share a label; it sees every row (views too).
            codes = np.unique(y, return_inverse=True)[1]
            projector = clone(self.projector).fit(X, codes, **extra)
        self.projector_ = projector

        Z = self._features(X, transform=False)
        if prompts is None:
            # No prompts: the zero-shot head is the weighted class means (prototype classifier).
            labels, codes = np.unique(y, return_inverse=True)
            sums = np.zeros((len(labels), Z.shape[1]))
            np.add.at(sums, codes, sample_weight[:, None] * Z)
            weighted = np.bincount(codes, weights=sample_weight, minlength=len(labels)) > 0
            # A class whose rows all weigh zero is as absent as without those rows.
            self.classes_ = labels[weighted]
            self.class_embeddings_ = l2_normalize(sums[weighted])
        else:
            self.classes_ = classes
            self.class_embeddings_ = self._embed_prompts(prompts)
        self._fit_head(Z, y, sample_weight)
        return self

    def _check_head_targets(self, y, sample_weight):
        """Refuse, before the projector's fit, labels the head cannot learn from."""

    def _fit_with_unchanged_state(self, *args):
        with unchanged_on_error(self):  # a failed fit leaves the classifier as it was
            return self._fit(*args)

    def with_prompts(self, prompt_embeddings, classes=None):
        """A fitted copy that predicts over other class prompts.

        The copy shares the fitted projector and the head learnt from the
        images (nothing is refitted). That head knows only the classes it was
        trained on: a class it never saw is scored by the zero-shot head
        alone.

        Parameters
        ----------
        prompt_embeddings : array-like of shape (n_classes, n_features) or \
                (n_templates, n_classes, n_features)
            Embeddings of the new class prompts (or prompt ensemble).
        classes : array-like of shape (n_classes,), default=None
            Labels of the new classes; ``0 .. n_classes - 1`` when None.

        Returns
        -------
        classifier : estimator
            A fitted classifier of the same type whose parameters are this
            one's with ``prompt_embeddings`` and ``classes`` replaced.
        """
        return refit_prompts(self, prompt_embeddings, classes)

    def _embed_prompts(self, prompts):
        """(M, C, D) prompts -> unit class embeddings (C, K): average, project, normalise."""
        class_embeddings = project_embeddings(self.projector_, average_prompt_ensemble(prompts))
        name = "prompt_embeddings" + (" (projected)" if self.projector_ is not None else "")
        return normalize_embeddings(class_embeddings, input_name=name, zero_rows="raise")

    def _features(self, X, transform=True):
        """Image embeddings -> unit rows in the (projected) space of the heads."""
        if transform:
            X = validate_data(self, X, dtype=_FLOATS, reset=False)
        name = "X" + (" (projected)" if self.projector_ is not None else "")
        return normalize_embeddings(project_embeddings(self.projector_, X), input_name=name)

    def _zero_shot_weight(self):
        return 1.0

    def _logits(self, X):
        Z = self._features(X)
        zero_shot = self.logit_scale * (Z @ self.class_embeddings_.T)
        return self._zero_shot_weight() * zero_shot + self._head_logits(Z)

    def decision_function(self, X):
        """The logits: zero-shot part plus the part learnt from the images.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            One logit per class; with two classes, as scikit-learn expects,
            the second class's minus the first's.
        """
        check_is_fitted(self)
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns ordered as ``classes_``.
        """
        check_is_fitted(self)
        return softmax(self._logits(X))

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        logits = self._logits(X)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The class of the largest logit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self._logits(X), axis=1)]
