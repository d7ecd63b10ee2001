r"""Subjective-logic opinions, the evidence function and the reduced Dempster rule.

A classifier's temperature-scaled scores ``s`` become Dirichlet *evidence*
``e = h(s) >= 0`` over ``C`` classes (:func:`log_evidence`; its torch twin for
training is in ``_training.py``); with ``alpha = e + 1`` and
``S = sum(alpha)`` the opinion is

.. math:: b_c = e_c / S, \qquad u = C / S, \qquad \textstyle\sum_c b_c + u = 1.

Two opinions are fused by the reduced Dempster rule of Trusted Multi-View
Classification (Han et al., 2021):

.. math::

    b_c = \frac{b^1_c b^2_c + b^1_c u^2 + b^2_c u^1}{1 - k}, \qquad
    u = \frac{u^1 u^2}{1 - k}, \qquad k = \sum_{i \ne j} b^1_i b^2_j .

Because :math:`1 - k = \sum_c (b^1_c b^2_c + b^1_c u^2 + b^2_c u^1) + u^1 u^2`,
the rule is "form the unnormalised masses :math:`m_c = (b^1_c + u^1)(b^2_c + u^2)
- u^1 u^2` and :math:`m_u = u^1 u^2`, then normalise". Folding it over ``K``
opinions therefore gives :math:`m_c = \prod_k (b^k_c + u^k) - \prod_k u^k`
and :math:`m_u = \prod_k u^k`, so that

.. math::

    \frac{m_c}{m_u} = \exp(R_c) - 1, \qquad
    R_c = \sum_k \log\left(1 + \frac{b^k_c}{u^k}\right)
        = \sum_k \log\left(1 + \frac{e^k_c}{C}\right).

The fused opinion is :math:`b_c \propto \operatorname{expm1}(R_c)`,
:math:`u \propto 1`: a sum of logs and one normalisation
(:func:`fuse_evidence`), with no ``1 - k`` to cancel when the conflict is
close to 1 and no product to overflow when the evidence is huge. Evidence
travels as its logarithm, ``log(1 + e / C) = logaddexp(0, log e - log C)``,
so exp evidence is exact for any score (``e^s`` leaves float64 at
``s > 709``). Everything here runs in float64; opinions with ``u = 0`` (not
Dirichlet) fall back to the pairwise rule in log space.

Prediction fuses straight from the scores. :func:`fuse_scores` gives the opinion that
:func:`~clip_invariance.front_door.fuse_evidence` gives for the evidence
``h(s)`` of each score array ``s`` (:mod:`clip_invariance.front_door`), with
the fusion in linear space and in the scores' precision wherever that is
exact: with ``x = h(s) / C``,

.. math::

    D_c \leftarrow D_c (1 + x_c) + x_c \quad\Longrightarrow\quad
    D_c = \prod_k (1 + x^k_c) - 1 = \exp(R_c) - 1,

the fused belief-to-uncertainty ratio, with no cancellation (every term is
non-negative) and no logarithm: ``log1p`` costs about 20 ns an element, ten
times ``exp``, and was most of a front-door predict. Where the evidence
could leave the floating-point range, the fusion goes on in float64 log
space (:func:`~clip_invariance.front_door.fuse_evidence`), exact for any score.
"""

import itertools

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "EVIDENCE_FUNCTIONS",
    "log_evidence",
    "opinion_from_evidence",
    "fuse_evidence",
    "fuse_opinions",
    "fuse_scores",
]

EVIDENCE_FUNCTIONS = ("softplus", "relu", "exp")


# ------------------------------------------------------- the evidence function h
def log_evidence(scores, kind="softplus"):
    """Logarithm of the evidence ``h(scores)``, exact and without overflow.

    ``h`` is ``log(1 + exp(s))`` (softplus), ``max(s, 0)`` (relu) or
    ``exp(s)`` (exp, whose log is ``s`` itself: no clipping at any scale).
    Its torch twin in ``_training.py`` is the same ``h`` for training.

    Parameters
    ----------
    scores : array-like
        Temperature-scaled similarities, e.g. ``temperature * cosine``.
    kind : {"softplus", "relu", "exp"}, default="softplus"
        The non-negative evidence function ``h``. ``log(0) = -inf`` is a valid
        output (no evidence).

    Returns
    -------
    log_e : ndarray of float64, same shape as ``scores``.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import log_evidence
    >>> np.exp(log_evidence([-1.0, 0.0, 2.0], "relu"))
    array([0., 0., 2.])
    >>> float(log_evidence(1000.0, "softplus"))  # softplus(1000) = 1000
    6.907...
    >>> float(log_evidence(1000.0, "exp"))  # e^1000, beyond float64, as its log
    1000.0
    """
    x = np.asarray(scores, dtype=np.float64)
    if kind == "exp":
        return x
    if kind == "softplus":
        # log(log1p(exp(x))); below -30, log1p(exp(x)) == exp(x) to float64 precision.
        with np.errstate(over="ignore"):
            return np.where(x > -30.0, np.log(np.logaddexp(0.0, np.maximum(x, -30.0))), x)
    if kind == "relu":
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(x, 0.0))
    raise ValueError(f"The evidence function must be one of {EVIDENCE_FUNCTIONS}, got {kind!r}.")


# ------------------------------------------------------------------- opinions
def opinion_from_evidence(evidence, *, log=False):
    """Dirichlet opinion ``(belief, uncertainty)`` from evidence over classes.

    Infinite evidence is the limit of ever larger evidence: the classes with
    infinite evidence share the belief equally and ``u = 0``.

    Parameters
    ----------
    evidence : array-like of shape (..., n_classes)
        Non-negative evidence ``e``; with ``log=True``, ``log(e)`` instead,
        which allows evidence far beyond the float64 range.
    log : bool, default=False
        Whether ``evidence`` holds log-evidence.

    Returns
    -------
    belief : ndarray of shape (..., n_classes)
        ``e / S``.
    uncertainty : ndarray of shape (...)
        ``C / S``; ``belief.sum(-1) + uncertainty == 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import opinion_from_evidence
    >>> b, u = opinion_from_evidence([2.0, 0.0])  # alpha = [3, 1], S = 4
    >>> b, float(u)
    (array([0.5, 0. ]), 0.5)
    >>> b, u = opinion_from_evidence([np.inf, 1.0])
    >>> b, float(u)
    (array([1., 0.]), 0.0)
    """
    e = _check_evidence(evidence, log=log)
    if not log:
        with np.errstate(divide="ignore"):
            e = np.log(e)
    log_b, log_u = _log_opinion(e)
    return np.exp(log_b), np.exp(log_u)


def _check_evidence(evidence, *, log):
    """Evidence (or log-evidence) as float64 with a class axis, checked."""
    e = np.asarray(evidence, dtype=np.float64)
    if e.ndim == 0:
        raise ValueError("evidence must have a class axis (at least one dimension).")
    if np.isnan(e).any():
        raise ValueError("evidence contains NaN.")
    if not log and (e < 0).any():
        raise ValueError("evidence must be non-negative.")
    return e


def _log_opinion(log_e):
    n_classes = log_e.shape[-1]
    infinite = np.isposinf(log_e)
    log_c = np.full(log_e.shape[:-1] + (1,), np.log(n_classes))
    with np.errstate(invalid="ignore"):  # inf - inf in rows with infinite evidence, redone below
        log_s = logsumexp(np.concatenate([log_e, log_c], axis=-1), axis=-1, keepdims=True)
        log_b, log_u = log_e - log_s, (log_c - log_s)[..., 0]
    rows = infinite.any(axis=-1)
    if rows.any():  # the limit: infinite classes share the belief, u = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_share = np.log(infinite / infinite.sum(axis=-1, keepdims=True))
        log_b = np.where(rows[..., None], log_share, log_b)
        log_u = np.where(rows, -np.inf, log_u)
    return log_b, log_u


def _check_opinion(belief, uncertainty, name):
    b = np.asarray(belief, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    if b.shape[:-1] != u.shape:
        raise ValueError(
            f"{name}: belief of shape {b.shape} needs an uncertainty of shape "
            f"{b.shape[:-1]}, got {u.shape}."
        )
    if np.isnan(b).any() or np.isnan(u).any():
        raise ValueError(f"{name} contains NaN.")
    if (b < 0).any() or (u < 0).any():
        raise ValueError(f"{name}: belief and uncertainty must be non-negative.")
    if not np.allclose(b.sum(axis=-1) + u, 1.0, atol=1e-6):
        raise ValueError(f"{name}: belief.sum(-1) + uncertainty must equal 1.")
    with np.errstate(divide="ignore"):
        return np.log(b), np.log(u)


# --------------------------------------------------------------------- fusion
def fuse_evidence(evidences, *, log=False):
    """Fuse the Dirichlet opinions of several evidence arrays (reduced Dempster rule).

    The fast path of :func:`fuse_opinions` for opinions made from evidence:
    only ``R_c = sum_k log(1 + e^k_c / C)`` is needed (module docstring), and
    it is accumulated one opinion at a time, so ``evidences`` may be a
    generator that never holds all opinions at once.

    Parameters
    ----------
    evidences : iterable of array-like of shape (..., n_classes)
        The evidence of each opinion (an array of shape
        ``(n_opinions, ..., n_classes)`` is iterated along its first axis).
        With ``log=True``, log-evidence (:func:`log_evidence`), which allows
        evidence beyond the float64 range.
    log : bool, default=False
        Whether ``evidences`` hold log-evidence.

    Returns
    -------
    belief : ndarray of shape (..., n_classes)
    uncertainty : ndarray of shape (...)
        The fused opinion; equal to ``fuse_opinions`` of the opinions.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import fuse_evidence
    >>> b, u = fuse_evidence(np.array([[4.0, 1.0], [3.0, 0.0]]))
    >>> b.round(4), round(float(u), 4)
    (array([0.8125, 0.0625]), 0.125)
    >>> b, u = fuse_evidence([[1000.0, 0.0], [900.0, 0.0]], log=True)  # e^1000, e^900
    >>> b.round(3), float(u)
    (array([1., 0.]), 0.0)
    """
    # One scratch array for every opinion after the first, and one NaN check
    # at the end (NaN survives every step): fewer passes than checking each.
    log_ratio = scratch = None
    for evidence in evidences:
        e = np.asarray(evidence, dtype=np.float64)
        if e.ndim == 0:
            raise ValueError("evidence must have a class axis (at least one dimension).")
        if log_ratio is not None and e.shape != log_ratio.shape:
            raise ValueError(
                f"All evidences must have the same shape, got {log_ratio.shape} and {e.shape}."
            )
        if log:  # log(1 + e / C) = logaddexp(0, log e - log C): exact for any log e
            scratch = np.subtract(e, np.log(e.shape[-1]), out=scratch)
            if scratch.max() < 700.0:
                # exp cannot overflow: log1p(exp(.)) is as exact, and numpy's
                # vectorised exp and log1p beat its logaddexp loop (front-door
                # predict, 10^4 x 100 classes x 4 opinions: 7% of the time).
                np.exp(scratch, out=scratch)
                np.log1p(scratch, out=scratch)
            else:
                np.logaddexp(0.0, scratch, out=scratch)
        else:
            if (e < 0).any():
                raise ValueError("evidence must be non-negative.")
            scratch = np.divide(e, e.shape[-1], out=scratch)
            np.log1p(scratch, out=scratch)
        if log_ratio is None:
            log_ratio, scratch = scratch, None
        else:
            log_ratio += scratch
    if log_ratio is None:
        raise ValueError("fuse_evidence needs at least one evidence array.")
    if np.isnan(log_ratio).any():
        raise ValueError("evidence contains NaN.")
    return _opinion_from_ratio(log_ratio)


def _opinion_from_ratio(log_ratio_sum):
    """Fused opinion from ``R_c = sum_k log(1 + b_c^k / u^k)`` (module docstring).

    ``b_c : u = expm1(R_c) : 1``. With ``R* = max_c R_c``, multiply both by
    ``exp(-R*)``: ``expm1(R_c) exp(-R*) = exp(R_c - R*) (1 - exp(-R_c))``,
    which neither overflows for huge ``R`` nor cancels for ``R`` near 0.
    ``R_c = inf`` (infinite evidence) is its limit: those classes share the
    belief and ``u = 0``.
    """
    R = np.asarray(log_ratio_sum, dtype=np.float64)
    r_max = np.maximum(R.max(axis=-1, keepdims=True), 0.0)
    # In place: the fused opinion of a large batch is several (n, C) passes.
    with np.errstate(invalid="ignore"):  # inf - inf in rows with infinite R, redone below
        mass = np.subtract(R, r_max)
        np.exp(mass, out=mass)
        tail = np.negative(R)
        np.expm1(tail, out=tail)
        mass *= tail
    np.negative(mass, out=mass)
    umass = np.exp(-r_max[..., 0])
    total = mass.sum(axis=-1) + umass
    mass /= total[..., None]
    belief, uncertainty = mass, umass / total
    rows = np.isposinf(r_max[..., 0])
    if rows.any():
        infinite = np.isposinf(R)
        with np.errstate(invalid="ignore"):  # 0 / 0 in the other rows, not used
            share = infinite / infinite.sum(axis=-1, keepdims=True)
        belief = np.where(rows[..., None], share, belief)
        uncertainty = np.where(rows, 0.0, uncertainty)
    return belief, uncertainty


def _log_combine(log_b1, log_u1, log_b2, log_u2):
    """Reduced Dempster rule on log masses; returns the normalised log opinion.

    Unnormalised class mass ``b1 (b2 + u2) + b2 u1`` and uncertainty mass
    ``u1 u2``, normalised by their sum (which equals ``1 - k``). Used for
    opinions with ``u = 0``, where the ratio form does not apply.
    """
    lu1, lu2 = log_u1[..., None], log_u2[..., None]
    log_mass = np.logaddexp(log_b1 + np.logaddexp(log_b2, lu2), log_b2 + lu1)
    log_umass = log_u1 + log_u2
    log_total = np.logaddexp(logsumexp(log_mass, axis=-1), log_umass)
    if np.isneginf(log_total).any():
        raise ValueError(
            "Total conflict: opinions with zero uncertainty believe in "
            "disjoint classes, so the Dempster rule is undefined."
        )
    return log_mass - log_total[..., None], log_umass - log_total


def _fuse(log_beliefs, log_uncertainties):
    """Fuse stacked log opinions (first axis) with the reduced Dempster rule."""
    if log_uncertainties.ndim == 1:  # a single opinion per stack entry
        b, u = _fuse(log_beliefs[:, None], log_uncertainties[:, None])
        return b[0], u[0]
    certain = np.isneginf(log_uncertainties).any(axis=0)
    with np.errstate(invalid="ignore"):  # rows with u = 0 are redone below
        log_ratio = np.logaddexp(0.0, log_beliefs - log_uncertainties[..., None])
        belief, uncertainty = _opinion_from_ratio(log_ratio.sum(axis=0))
    if certain.any():
        lb, lu = log_beliefs[:, certain], log_uncertainties[:, certain]
        fused_b, fused_u = lb[0], lu[0]
        for k in range(1, len(lb)):
            fused_b, fused_u = _log_combine(fused_b, fused_u, lb[k], lu[k])
        belief[certain], uncertainty[certain] = np.exp(fused_b), np.exp(fused_u)
    return belief, uncertainty


def _dempster_combine(belief1, uncertainty1, belief2, uncertainty2):
    """Fuse two opinions with the reduced Dempster rule.

    Parameters
    ----------
    belief1, belief2 : array-like of shape (..., n_classes)
        Beliefs of the two opinions.
    uncertainty1, uncertainty2 : array-like of shape (...)
        Their uncertainties; ``belief.sum(-1) + uncertainty`` must be 1.

    Returns
    -------
    belief : ndarray of shape (..., n_classes)
    uncertainty : ndarray of shape (...)
        The fused opinion, again summing to 1. The rule is commutative and
        associative, and the vacuous opinion (``b = 0, u = 1``) is its identity.

    Raises
    ------
    ValueError
        On invalid opinions, or under total conflict (``k = 1``).

    Examples
    --------
    >>> import numpy as np
    >>> b, u = _dempster_combine([0.6, 0.2], 0.2, [0.5, 0.0], 0.5)
    >>> b.round(3), round(float(u), 3)
    (array([0.778, 0.111]), 0.111)
    """
    lb1, lu1 = _check_opinion(belief1, uncertainty1, "opinion 1")
    lb2, lu2 = _check_opinion(belief2, uncertainty2, "opinion 2")
    if lb1.shape[-1] != lb2.shape[-1]:
        raise ValueError(
            f"The opinions cover {lb1.shape[-1]} and {lb2.shape[-1]} classes."
        )
    lb1, lb2 = np.broadcast_arrays(lb1, lb2)
    lu1, lu2 = np.broadcast_arrays(lu1, lu2)
    return _fuse(np.stack([lb1, lb2]), np.stack([lu1, lu2]))


def fuse_opinions(beliefs, uncertainties):
    """Fuse a stack of opinions (first axis) with the reduced Dempster rule.

    Parameters
    ----------
    beliefs : array-like of shape (n_opinions, ..., n_classes)
    uncertainties : array-like of shape (n_opinions, ...)

    Returns
    -------
    belief : ndarray of shape (..., n_classes)
    uncertainty : ndarray of shape (...)

    See Also
    --------
    fuse_evidence : The same fusion, straight from evidence.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.front_door import fuse_opinions, opinion_from_evidence
    >>> b, u = opinion_from_evidence(np.array([[4.0, 1.0], [3.0, 0.0]]))
    >>> fb, fu = fuse_opinions(b, u)
    >>> fb.round(4), round(float(fu), 4)
    (array([0.8125, 0.0625]), 0.125)
    """
    lb, lu = _check_opinion(beliefs, uncertainties, "opinions")
    if lb.ndim < 2 or lb.shape[0] == 0:
        raise ValueError(
            f"beliefs must have shape (n_opinions, ..., n_classes), got {lb.shape}."
        )
    return _fuse(lb, lu)


# ------------------------------------------------------- fusion straight from scores
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
    >>> from clip_invariance.front_door import fuse_evidence
    >>> from clip_invariance.front_door import fuse_scores
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
        raise ValueError(f"The evidence function must be one of {EVIDENCE_FUNCTIONS}, got {kind!r}.")
    scores = iter(scores)
    ratio, work, bound = None, None, 0.0  # D_c, work arrays, an upper bound of log(1 + max D)
    for s in scores:
        s = np.asarray(s)
        if not np.issubdtype(s.dtype, np.floating):
            s = s.astype(np.float64)
        if s.ndim == 0:
            raise ValueError("scores must have a class axis (at least one dimension).")
        if s.shape[-1] == 0:
            raise ValueError(f"scores must have at least one class (their last axis), got shape {s.shape}.")
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
