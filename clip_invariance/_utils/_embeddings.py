"""Cosine scoring and the prompt/class checks shared by the two classifiers (pure numpy).

Both :class:`~clip_invariance.ZeroShotInvariantClassifier` and
:class:`~clip_invariance.FrontDoorEnsembleClassifier` read class prompts as
``prompt_embeddings`` of shape ``(C, D)`` or ``(M, C, D)`` with ``classes``
naming the ``C`` classes, and score normalised embeddings by cosine. The
checks live here so that both say the same thing about the same bad input:
:func:`check_prompt_embeddings`, :func:`check_classes`, :func:`encode_labels`
and :func:`normalize_embeddings` (which refuses rows that have no direction).
"""

import warnings
from numbers import Real

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = [
    "l2_normalize",
    "normalize_embeddings",
    "project_embeddings",
    "average_prompt_ensemble",
    "class_prototypes",
    "check_prompt_embeddings",
    "check_classes",
    "encode_labels",
]


def _unit_rows(X):
    """Rows (along the last axis) of a float array scaled to unit L2 norm, and their norms.

    ``np.linalg.norm`` squares the entries: the sum overflows to inf above
    about 1e154 (float64) or 1e19 (float32), and squares below the smallest
    normal number lose their precision. Only rows whose norm is not finite or
    is below ``sqrt(D * tiny / eps)`` (where such losses can reach ``eps``)
    are redone, divided by their largest entry first; the common rows keep
    the one-pass norm (scaling every row costs two more passes, about 10% of
    a front-door predict at D = 512).

    Any number of leading axes: several views are normalised in one call, in
    their memory order (30% faster than view by view for 4 side-by-side views).
    Returns the unit rows (zero rows stay zero) and the float64 norms, shape
    ``X.shape[:-1] + (1,)``: 0 for a zero row, NaN for a row holding NaN or infinity.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norms = np.linalg.norm(X, axis=-1, keepdims=True)
    info = np.finfo(X.dtype)
    accurate = np.isfinite(norms) & (norms >= np.sqrt(X.shape[-1] * info.tiny / info.eps))
    unit = X / np.where(accurate, norms, 1).astype(X.dtype, copy=False)
    norms = norms.astype(np.float64)
    redo = ~accurate[..., 0]
    if redo.any():
        rows = X[redo]
        scale = np.abs(rows).max(axis=1, keepdims=True)  # NaN or inf for non-finite rows
        with np.errstate(invalid="ignore"):
            rows = rows / np.where(scale > 0, scale, 1).astype(X.dtype, copy=False)
            scaled_norms = np.linalg.norm(rows, axis=1, keepdims=True)  # in [1, sqrt(D)], or 0
            unit[redo] = rows / np.where(scaled_norms > 0, scaled_norms, 1).astype(X.dtype)
            norms[redo] = scale.astype(np.float64) * scaled_norms
    return unit, norms


def l2_normalize(X, axis=-1):
    """Scale rows (or slices along ``axis``) to unit L2 norm; zero rows stay zero.

    Rows whose squared norm over- or underflows the dtype (``1e160 * x`` in
    float64, ``1e37 * x`` or ``1e-30 * x`` in float32) are normalised exactly
    too: they are divided by their largest entry first.

    Parameters
    ----------
    X : ndarray
        Array to normalise; float32 stays float32.
    axis : int, default=-1
        Axis along which the norm is taken.

    Returns
    -------
    X_normalized : ndarray of the same shape and dtype.

    See Also
    --------
    normalize_embeddings : The same, refusing zero rows.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import l2_normalize
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    >>> l2_normalize(np.array([[3e200, 4e200]]))
    array([[0.6, 0.8]])
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    unit, _ = _unit_rows(np.moveaxis(X, axis, -1))
    return np.moveaxis(unit, -1, axis)


def normalize_embeddings(X, *, input_name="X", zero_rows="warn"):
    """L2-normalise the rows of ``X`` for cosine scoring; flag rows without a direction.

    A zero row has the same cosine (0) with every class: alone, it can only
    get uniform probabilities and the first class. That is never silent: a
    warning by default (scikit-learn's estimator checks, and a batch with one
    broken image, have such rows), or an error. Rows holding NaN or infinity
    are always an error. Large or tiny finite rows are fine
    (see :func:`l2_normalize`).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features) or (..., n_features)
        Embeddings, one per row (along the last axis).
    input_name : str, default="X"
        The name used in messages.
    zero_rows : {"warn", "raise"}, default="warn"
        What to do about all-zero rows: a ``UserWarning`` or a ``ValueError``.

    Returns
    -------
    X_normalized : ndarray of the same shape and dtype; zero rows stay zero.

    Raises
    ------
    ValueError
        If a row holds a value that is not finite, or is all zeros with
        ``zero_rows="raise"``.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import normalize_embeddings
    >>> normalize_embeddings(np.array([[3.0, 4.0]]))
    array([[0.6, 0.8]])
    >>> normalize_embeddings(np.array([[3.0, 4.0], [0.0, 0.0]]), zero_rows="raise")
    Traceback (most recent call last):
    ...
    ValueError: X has 1 all-zero row(s) (row 1): a zero embedding has no direction...
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    unit, norms = _unit_rows(X)
    if np.isnan(norms).any():
        raise ValueError(f"{input_name} contains NaN or infinity.")
    zero = norms[..., 0] == 0
    if zero.any():
        where = np.argwhere(zero)
        rows = ", ".join(str(i[0] if len(i) == 1 else tuple(i)) for i in where[:5].tolist())
        message = (
            f"{input_name} has {len(where)} all-zero row(s) (row {rows}"
            f"{', ...' if len(where) > 5 else ''}): a zero embedding has no direction, so "
            "its cosine with every class is 0 and it favours no class."
        )
        if zero_rows == "raise":
            raise ValueError(message)
        warnings.warn(
            message + " A prediction that rests on it alone is uniform (the first class "
            "wins the tie).", UserWarning, stacklevel=3,
        )
    return unit


def project_embeddings(projector, embeddings):
    """Apply a fitted projector (or none) to the last axis of a stack of embeddings, in float64.

    Images and prompts are projected alike before cosine scoring. Scores are
    then computed in float64: a softmax at temperature 100 is not exact in
    float32.

    Parameters
    ----------
    projector : fitted transformer or None
        ``None`` leaves the embeddings as they are.
    embeddings : ndarray of shape (..., n_features)

    Returns
    -------
    projected : ndarray of shape (..., n_components), float64

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from clip_invariance._utils import project_embeddings
    >>> pca = PCA(n_components=1).fit([[0.0, 0.0], [2.0, 0.0]])
    >>> project_embeddings(pca, np.zeros((2, 3, 2))).shape
    (2, 3, 1)
    """
    embeddings = np.asarray(embeddings)
    if projector is None:
        return embeddings.astype(np.float64, copy=False)
    flat = embeddings.reshape(-1, embeddings.shape[-1])
    projected = np.asarray(projector.transform(flat), dtype=np.float64)
    return projected.reshape(embeddings.shape[:-1] + (projected.shape[-1],))


def average_prompt_ensemble(prompt_embeddings):
    """Collapse a prompt ensemble (M, C, D) into one embedding per class (C, D).

    As in CLIP's prompt ensembling: normalise every template's embedding,
    average over templates, normalise again. A (C, D) input is returned
    normalised.

    Parameters
    ----------
    prompt_embeddings : ndarray of shape (n_templates, n_classes, n_features) or (n_classes, n_features)

    Returns
    -------
    class_embeddings : ndarray of shape (n_classes, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import average_prompt_ensemble
    >>> P = np.array([[[1.0, 0.0]], [[0.0, 2.0]]])  # 2 templates, 1 class
    >>> average_prompt_ensemble(P).round(3)
    array([[0.707, 0.707]])
    """
    P = np.asarray(prompt_embeddings)
    if P.ndim == 3 and P.shape[0] == 1:  # a single template is its own average
        P = P[0]
    if P.ndim == 2:
        return l2_normalize(P)
    if P.ndim != 3:
        raise ValueError(
            "prompt embeddings must have shape (n_classes, n_features) or "
            f"(n_templates, n_classes, n_features), got {P.shape}."
        )
    return l2_normalize(l2_normalize(P).mean(axis=0))


def class_prototypes(X, codes, n_classes):
    """Unit-norm class means: the prototype classifier of both zero-shot and front-door models.

    A class mean has the direction of the class sum, and only the direction
    counts for cosine scoring, so the sums are normalised directly.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    codes : ndarray of int, shape (n_samples,)
        Class index of each row, in ``[0, n_classes)``.
    n_classes : int

    Returns
    -------
    prototypes : ndarray of shape (n_classes, n_features), float64

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import class_prototypes
    >>> class_prototypes(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), np.array([0, 0, 1]), 2)
    array([[1., 0.],
           [0., 1.]])
    """
    from scipy import sparse

    codes = np.asarray(codes)
    indicator = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_classes, len(codes))
    )
    return l2_normalize(np.asarray(indicator @ np.asarray(X, dtype=np.float64)))


# ------------------------------------------------------------------ checks
_PROMPT_SHAPES = "(n_classes, n_features) or (n_templates, n_classes, n_features)"


def check_prompt_embeddings(
    prompt_embeddings, n_features, *, dtype=np.float64, input_name="prompt_embeddings"
):
    """Validate class-prompt embeddings; return them as an (M, C, D) float array.

    Parameters
    ----------
    prompt_embeddings : array-like of shape (n_classes, n_features) or \
(n_templates, n_classes, n_features)
        Text embeddings of the class prompts (a 2-D array is one template).
    n_features : int
        The embedding size of the images they will be compared with.
    dtype : dtype or list of dtypes, default=np.float64
        As in :func:`sklearn.utils.check_array`: a list keeps a listed dtype.
    input_name : str, default="prompt_embeddings"
        The name used in error messages.

    Returns
    -------
    prompts : ndarray of shape (n_templates, n_classes, n_features)

    Raises
    ------
    TypeError
        If ``prompt_embeddings`` is None.
    ValueError
        If it is ragged, not 2-D or 3-D, empty, not finite, of another
        embedding size than ``n_features``, or has an all-zero class row.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import check_prompt_embeddings
    >>> check_prompt_embeddings(np.eye(3)[:2], 3).shape
    (1, 2, 3)
    >>> check_prompt_embeddings(np.eye(3)[:2], 4)
    Traceback (most recent call last):
    ...
    ValueError: prompt_embeddings have 3 features but the embeddings of X have 4: ...
    """
    if prompt_embeddings is None:
        raise TypeError(f"{input_name} must be an array of shape {_PROMPT_SHAPES}, got None.")
    try:
        ndim = np.ndim(prompt_embeddings)
    except ValueError:  # numpy refuses nested sequences of unequal lengths
        raise ValueError(
            f"{input_name} is ragged: every template of a prompt ensemble (and every "
            "class row) must have the same shape."
        ) from None
    shape = np.shape(prompt_embeddings)
    if ndim not in (2, 3):
        raise ValueError(f"{input_name} must have shape {_PROMPT_SHAPES}, got {shape}.")
    if 0 in shape:
        raise ValueError(f"{input_name} is empty: shape {shape}.")
    values = np.asarray(prompt_embeddings)
    if values.dtype.kind in "US" or (
        values.dtype.kind == "O" and not all(isinstance(v, Real) for v in values.flat)
    ):
        raise ValueError(f"{input_name} must hold numbers, got dtype {values.dtype}.")
    P = check_array(prompt_embeddings, dtype=dtype, allow_nd=True, input_name=input_name)
    P = P if P.ndim == 3 else P[None]
    if P.shape[2] != n_features:
        raise ValueError(
            f"{input_name} have {P.shape[2]} features but the embeddings of X have "
            f"{n_features}: image and text embeddings must come from the same CLIP model."
        )
    zero = ~P.any(axis=2)
    if zero.any():
        raise ValueError(
            f"{input_name} has all-zero class row(s) for class index(es) "
            f"{np.unique(np.nonzero(zero)[1]).tolist()[:10]}: a zero embedding has no "
            "direction, so the class could never be scored."
        )
    return P


def check_classes(classes, n_classes):
    """Validate the class labels of the prompt rows; ``None`` means ``0 .. n_classes - 1``.

    Parameters
    ----------
    classes : array-like of shape (n_classes,) or None
        One distinct label per class row of the prompt embeddings.
    n_classes : int
        Number of class rows.

    Returns
    -------
    classes : ndarray of shape (n_classes,)

    Examples
    --------
    >>> from clip_invariance._utils import check_classes
    >>> check_classes(None, 3)
    array([0, 1, 2])
    >>> check_classes(["cat", "cat"], 2)
    Traceback (most recent call last):
    ...
    ValueError: classes contains duplicate labels: ['cat'].
    """
    if classes is None:
        return np.arange(n_classes)
    labels = np.asarray(classes)
    if labels.ndim != 1 or labels.shape[0] != n_classes:
        raise ValueError(
            f"classes has shape {labels.shape} but the prompt embeddings describe "
            f"{n_classes} classes: give one label per class row."
        )
    unique, counts = np.unique(labels, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"classes contains duplicate labels: {unique[counts > 1].tolist()[:10]}.")
    return labels


def encode_labels(y, classes):
    """Index of every label of ``y`` in ``classes``; unknown labels are an error.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels.
    classes : ndarray of shape (n_classes,)
        Distinct known labels, in any order (see :func:`check_classes`).

    Returns
    -------
    codes : ndarray of int, shape (n_samples,)
        ``classes[codes] == y``.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance._utils import encode_labels
    >>> encode_labels(["dog", "cat", "dog"], np.array(["dog", "cat"])).tolist()
    [0, 1, 0]
    >>> encode_labels(["cow"], np.array(["dog", "cat"]))
    Traceback (most recent call last):
    ...
    ValueError: y contains label(s) ['cow'] that are not in classes ['dog', 'cat'].
    """
    y = np.asarray(y)
    classes = np.asarray(classes)
    order = np.argsort(classes)
    sorted_classes = classes[order]
    try:
        pos = np.clip(np.searchsorted(sorted_classes, y), 0, len(classes) - 1)
        unknown = sorted_classes[pos] != y
    except TypeError:  # labels that cannot be compared with the classes at all
        pos, unknown = None, np.ones(y.shape, dtype=bool)
    if np.any(unknown):
        raise ValueError(
            f"y contains label(s) {np.unique(y[unknown].astype(object)).tolist()[:10]} "
            f"that are not in classes {classes.tolist()[:10]}."
        )
    return order[pos]


def refit_prompts(estimator, prompt_embeddings, classes):
    """A fitted copy of a prompt classifier with other class prompts: the ``with_prompts`` of every one.

    Checks the prompts against the fitted input size, clones ``estimator`` with
    the new ``prompt_embeddings`` and ``classes``, copies its fitted state and
    embeds the new prompts with the estimator's own ``_embed_prompts`` (the
    projection and normalisation it fitted); ``estimator`` is not changed.
    """
    check_is_fitted(estimator)
    prompts = check_prompt_embeddings(prompt_embeddings, estimator.n_features_in_,
                                      dtype=[np.float64, np.float32])
    labels = check_classes(classes, prompts.shape[1])
    new = clone(estimator).set_params(prompt_embeddings=prompt_embeddings, classes=classes)
    vars(new).update({k: v for k, v in vars(estimator).items() if k.endswith("_")})
    new.classes_ = labels
    new.class_embeddings_ = estimator._embed_prompts(prompts)
    return new
