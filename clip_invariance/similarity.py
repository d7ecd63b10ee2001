"""Cosine scoring shared by the zero-shot and front-door classifiers (pure numpy)."""

import numpy as np

__all__ = [
    "l2_normalize",
    "cosine_similarity_matrix",
    "average_prompt_ensemble",
    "class_prototypes",
]


def l2_normalize(X, axis=-1):
    """Scale rows (or slices along ``axis``) to unit L2 norm; zero rows stay zero.

    Parameters
    ----------
    X : ndarray
        Array to normalise; float32 stays float32.
    axis : int, default=-1
        Axis along which the norm is taken.

    Returns
    -------
    X_normalized : ndarray of the same shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.similarity import l2_normalize
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    X = np.asarray(X)
    norms = np.linalg.norm(X, axis=axis, keepdims=True)
    return X / np.where(norms > 0, norms, 1).astype(X.dtype, copy=False)


def cosine_similarity_matrix(X, P):
    """Cosine similarity between every row of ``X`` and every row of ``P``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    P : ndarray of shape (n_prompts, n_features)

    Returns
    -------
    S : ndarray of shape (n_samples, n_prompts), values in [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.similarity import cosine_similarity_matrix
    >>> cosine_similarity_matrix(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 5.0]]))
    array([[1., 0.]])
    """
    return l2_normalize(X) @ l2_normalize(P).T


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
    >>> from clip_invariance.similarity import average_prompt_ensemble
    >>> P = np.array([[[1.0, 0.0]], [[0.0, 2.0]]])  # 2 templates, 1 class
    >>> average_prompt_ensemble(P).round(3)
    array([[0.707, 0.707]])
    """
    P = np.asarray(prompt_embeddings)
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
    >>> from clip_invariance.similarity import class_prototypes
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
