r"""The fused opinion straight from every opinion's scores, at the speed of prediction.

:func:`fuse_scores` gives the opinion that
:func:`~clip_invariance.evidence.fuse_evidence` gives for the evidence
``h(s)`` of each score array ``s`` (:mod:`clip_invariance.evidence`), with
the fusion in linear space and in the scores' precision wherever that is
exact: with ``x = h(s) / C``,

.. math::

    D_c \leftarrow D_c (1 + x_c) + x_c \quad\Longrightarrow\quad
    D_c = \prod_k (1 + x^k_c) - 1 = \exp(R_c) - 1,

the fused belief-to-uncertainty ratio, with no cancellation (every term is
non-negative) and no logarithm: ``log1p`` costs about 20 ns an element, ten
times ``exp``, and was most of a front-door predict. Where the evidence
could leave the floating-point range, the fusion goes on in float64 log
space (:func:`~clip_invariance.evidence.fuse_evidence`), exact for any score.
"""

import itertools

import numpy as np

from .evidence import EVIDENCE_FUNCTIONS, fuse_evidence, log_evidence

__all__ = ["fuse_scores"]


def fuse_scores(scores, kind="softplus"):
    """Fuse the opinions of the evidence ``h(s)`` of several score arrays.

    The same opinion as ``fuse_evidence((log_evidence(s, kind) for s in scores),
    log=True)``. While the fused evidence stays inside the scores'
    floating-point range (bounded from each array's largest and smallest
    score as it arrives), it is accumulated in linear space, in the scores'
    precision (float32 scores: float32 fusion, at the precision of the
    scores themselves); past that range, in float64 log space.

    Parameters
    ----------
    scores : iterable of array-like of shape (..., n_classes)
        Temperature-scaled similarities of each opinion (a generator is fine:
        one array is held at a time).
    kind : {"softplus", "relu", "exp"}, default="softplus"
        The evidence function ``h``.

    Returns
    -------
    belief : ndarray of float64, shape (..., n_classes)
    uncertainty : ndarray of float64, shape (...)

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.evidence import fuse_evidence
    >>> from clip_invariance.score_fusion import fuse_scores
    >>> s = np.array([[2.0, 0.0], [1.0, -1.0]])
    >>> b, u = fuse_scores(s, "exp")
    >>> b.round(4), round(float(u), 4)
    (array([0.8501, 0.0655]), 0.0844)
    >>> np.allclose(b, fuse_evidence(np.exp(s))[0])
    True
    >>> fuse_scores([[1000.0, 0.0], [900.0, 0.0]], "exp")[0]  # e^1000: in log space
    array([1., 0.])
    """
    if kind not in EVIDENCE_FUNCTIONS:
        raise ValueError(f"evidence must be one of {EVIDENCE_FUNCTIONS}, got {kind!r}.")
    scores = iter(scores)
    ratio, work, bound = None, None, 0.0  # D_c, work arrays, an upper bound of log(1 + max D)
    for s in scores:
        s = np.asarray(s)
        if not np.issubdtype(s.dtype, np.floating):
            s = s.astype(np.float64)
        if s.ndim == 0:
            raise ValueError("scores must have a class axis (at least one dimension).")
        if ratio is not None and s.shape != ratio.shape:
            raise ValueError(f"All scores must have the same shape, got {ratio.shape} and {s.shape}.")
        info, log_c = np.finfo(s.dtype), np.log(s.shape[-1])
        hi, lo = (float(log_evidence(f(s, initial=0.0), kind)) - log_c for f in (np.max, np.min))
        if np.isnan(hi) or np.isnan(lo):
            raise ValueError("evidence contains NaN.")
        bound += max(hi, 0.0) + np.log(2.0)  # log(1 + x) <= max(log x, 0) + log 2
        # Room for the sum over classes, and no evidence below the normal range
        # (lost there; relu's zero evidence is exact).
        if bound >= np.log(info.max) - log_c - 1.0 or (kind != "relu" and lo < np.log(info.tiny) + 1.0):
            # Log space from here: what is fused so far is one opinion of evidence C D.
            with np.errstate(divide="ignore"):
                done = [] if ratio is None else [np.log(ratio.astype(np.float64)) + log_c]
            rest = (log_evidence(t, kind) for t in scores)
            return fuse_evidence(itertools.chain(done, [log_evidence(s, kind)], rest), log=True)
        ratio, work = _add_ratio(ratio, s, kind, work)
    if ratio is None:
        raise ValueError("fuse_scores needs at least one score array.")
    total = ratio.sum(axis=-1, keepdims=True, dtype=np.float64)
    total += 1.0
    return ratio / total, 1.0 / total[..., 0]


def _add_ratio(ratio, s, kind, work):
    """``D (1 + x) + x`` with ``x = h(s) / C``, in ``s``'s precision; returns (D, work arrays).

    Two work arrays serve every opinion: fresh ones per opinion cost their page faults.
    """
    x, product = (np.empty_like(s), np.empty_like(s)) if work is None else work
    if kind == "exp":
        np.subtract(s, np.log(s.shape[-1]), out=x)
        np.exp(x, out=x)
    else:
        np.logaddexp(0.0, s, out=x) if kind == "softplus" else np.maximum(s, 0.0, out=x)
        x /= s.shape[-1]
    if ratio is None:
        return x.copy(), (x, product)
    np.multiply(ratio, x, out=product)
    ratio += x
    ratio += product
    return ratio, (x, product)
