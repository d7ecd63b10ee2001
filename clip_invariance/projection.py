"""InvariantProjector: the closed-form invariant subspace of CLIP-ICM.

The data path is ``embeddings -> second moments -> eigen-solution -> projection``.
The sufficient statistics are two ``(D, D)`` matrices accumulated in one pass
over the rows (``partial_fit`` streams them batch by batch); the solution is a
symmetric eigenproblem on them, so fitting costs ``O(N D^2)`` time and
``O(D^2)`` memory beyond ``X``.
"""

from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["InvariantProjector"]

# Rows gathered per block when forming within-group contrasts; small enough to
# stay in cache, large enough for BLAS to run at full speed.
_CHUNK_ROWS = 16384


class InvariantProjector(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    r"""Project embeddings onto the environment-invariant subspace (CLIP-ICM).

    CLIP-ICM (Song et al., ICML 2025) models a CLIP embedding as a linear
    mixture of *invariant* latents, caused by the class, and *variant* latents,
    changed by the environment. Given interventional data -- samples that
    share their content and differ only in style -- the invariant part is
    recovered by a linear projection ``A`` (``D x K``, orthonormal columns)
    that keeps the variance of the embeddings while staying unchanged under
    intervention.

    With :math:`S_Z = Z^\top Z / N` the (uncentred) second moment of ``X`` and
    :math:`S_\Delta` the nuisance scatter of the interventions (for pairs,
    :math:`\Delta^\top \Delta / N` with :math:`\Delta = Z - \tilde Z`), both
    are first rescaled to unit average eigenvalue,
    :math:`\hat S = S / (\operatorname{tr} S / D)`, so that ``lam`` has the
    same meaning whatever the scale of the embeddings. Then:

    - ``solver="difference"`` (the paper's form): ``A`` holds the
      eigenvectors of the ``K`` **largest** eigenvalues of
      :math:`\hat S_Z - \lambda \hat S_\Delta`.
    - ``solver="ratio"``: ``A`` spans the top ``K`` generalized eigenvectors of
      :math:`\hat S_Z a = \mu (I + \lambda \hat S_\Delta) a`, orthonormalised.
      ``lam = 0`` is uncentred PCA; large ``lam`` tends to the scale-free
      ratio :math:`a^\top S_Z a / a^\top S_\Delta a`. Unlike the difference
      form it stays reliable when the embeddings were L2-normalised one by
      one, because normalisation leaks a little scale change into
      :math:`S_\Delta` along the invariant directions, which a large ``lam``
      in the difference form over-penalises.

    Where the interventional information comes from, in this order:

    1. ``view_groups`` passed to :meth:`fit`: rows of ``X`` sharing a group id are
       interventional views of one content (an image and its augmented copies).
       See :func:`clip_invariance.views.stack_views`.
    2. ``interventions`` / ``intervention_view_groups`` given to the constructor:
       fixed extra interventional embeddings, e.g. text prompts describing one
       class under several domains. Pooled with 1. when both are present (each
       source weighs equally).
    3. ``environments`` with ``y``: class-conditional environment means (same
       class, different environment) act as the interventions.
    4. ``y`` alone: within-class variation is treated as nuisance. This is the
       weakest source: it also removes genuine intra-class variation.

    Parameters
    ----------
    n_components : int or None, default=None
        Dimension ``K`` of the invariant subspace. ``None`` keeps the
        components whose variance gain beats their nuisance penalty: positive
        eigenvalues for the difference form, eigenvalues above that of an
        isotropic direction, :math:`1/(1+\lambda)`, for the ratio form; at
        least one.
    lam : float, default=10.0
        Trade-off between keeping variance (``lam = 0``: uncentred PCA) and
        invariance, in units of the trace-normalised statistics, so it is
        dimensionless and the same value works for raw and L2-normalised
        embeddings. The default 10 recovered the invariant subspace of the
        synthetic benchmark (overlap > 0.98) for raw and normalised inputs
        with the ratio solver; see ``benchmarks/bench_projector.py``. To
        translate a ``lam`` of the paper's raw formula, divide it by
        ``lam_scale_`` (:math:`\operatorname{tr} S_Z / \operatorname{tr} S_\Delta`).
    solver : {"ratio", "difference"}, default="ratio"
        Which objective to solve, see above.
    interventions : array-like of shape (n_interventions, n_features), default=None
        Fixed extra interventional embeddings (e.g. text-based interventions).
    intervention_view_groups : array-like of shape (n_interventions,), default=None
        Group id of each row of ``interventions``; rows sharing an id describe
        the same content. Required when ``interventions`` is given.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal basis of the invariant subspace, most invariant-and-
        informative direction first.
    eigenvalues_ : ndarray of shape (n_components,)
        Objective value of each component (difference or ratio eigenvalue).
    invariance_ratio_ : ndarray of shape (n_components,)
        :math:`a^\top S_\Delta a / a^\top S_Z a` per component: 0 is perfectly
        invariant; an isotropic noise direction has 2.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Share of the (uncentred) second moment kept by each component.
    n_components_ : int
        Number of components kept.
    second_moment_ : ndarray of shape (n_features, n_features)
        :math:`S_Z`.
    nuisance_scatter_ : ndarray of shape (n_features, n_features)
        :math:`S_\Delta`.
    lam_scale_ : float
        :math:`\operatorname{tr} S_Z / \operatorname{tr} S_\Delta`.
    intervention_source_ : str
        Which source was used: ``"view_groups"``, ``"interventions"``,
        ``"view_groups+interventions"``, ``"environments"`` or ``"labels"``.
    n_samples_seen_ : int
        Rows of ``X`` seen so far.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    clip_invariance.views.stack_views : Build ``X, view_groups`` from views.
    clip_invariance.datasets.make_invariant_embeddings : Synthetic benchmark.

    Examples
    --------
    >>> from clip_invariance import InvariantProjector
    >>> from clip_invariance.datasets import make_invariant_embeddings
    >>> from clip_invariance.views import stack_views
    >>> data = make_invariant_embeddings(random_state=0)
    >>> X, view_groups = stack_views(data.X, *data.X_views)
    >>> proj = InvariantProjector(n_components=data.invariant_basis.shape[1])
    >>> proj.fit(X, view_groups=view_groups).transform(data.X).shape
    (2000, 8)
    >>> from clip_invariance.metrics import subspace_overlap
    >>> round(subspace_overlap(proj.components_.T, data.invariant_basis), 2)
    1.0
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "lam": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"ratio", "difference"})],
        "interventions": ["array-like", None],
        "intervention_view_groups": ["array-like", None],
    }

    def __init__(
        self,
        n_components=None,
        *,
        lam=10.0,
        solver="ratio",
        interventions=None,
        intervention_view_groups=None,
    ):
        self.n_components = n_components
        self.lam = lam
        self.solver = solver
        self.interventions = interventions
        self.intervention_view_groups = intervention_view_groups

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, view_groups=None, environments=None):
        """Learn the invariant subspace from ``X`` and interventional data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (raw or L2-normalised).
        y : array-like of shape (n_samples,), default=None
            Class labels; used with ``environments``, or alone as the weakest
            source of interventions.
        view_groups : array-like of shape (n_samples,), default=None
            Interventional group id of each row (views of one content share it).
        environments : array-like of shape (n_samples,), default=None
            Environment (domain) of each row; needs ``y``.

        Returns
        -------
        self : object
            The fitted projector.
        """
        self._reset()
        self._accumulate(X, y, view_groups, environments, reset=True)
        return self._solve()

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, view_groups=None, environments=None):
        """Accumulate the sufficient statistics of one batch and re-solve.

        Gives the same result as :meth:`fit` on the concatenated batches.
        Group ids are local to a batch: keep all views of one content in the
        same call. Class/environment statistics, in contrast, are pooled
        across calls by label.

        Parameters
        ----------
        X, y, view_groups, environments
            As in :meth:`fit`, for one batch.

        Returns
        -------
        self : object
            The projector, solved on everything seen so far.
        """
        first = not hasattr(self, "_stats")
        if first:
            self._reset()
        self._accumulate(X, y, view_groups, environments, reset=first)
        return self._solve()

    def _reset(self):
        self._stats = {
            "gram": None,  # sum of x x^T over all rows (float64)
            "n": 0,
            "groups_scatter": None,  # sum of within-group scatter W
            "groups_dof": 0,
            "cells": {},  # (label, environment) -> [sum, count]
            "source": None,
            "fixed_scatter": None,  # scatter of the constructor's interventions
        }

    def _accumulate(self, X, y, view_groups, environments, *, reset):
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], reset=reset, ensure_min_samples=1
        )
        n, d = X.shape
        if reset and self.n_components is not None and self.n_components > d:
            raise ValueError(
                f"n_components={self.n_components} must be at most the number of "
                f"features, n_features={d}."
            )
        y = _check_labels(y, n, "y")
        if y is not None and view_groups is None:
            type_of_target(y, input_name="y", raise_unknown=True)
        view_groups = _check_labels(view_groups, n, "view_groups")
        environments = _check_labels(environments, n, "environments")
        if environments is not None and y is None:
            raise ValueError(
                "environments were given without y: class-conditional environment "
                "means need the class labels."
            )
        source = _choose_source(view_groups, self.interventions is not None, environments, y)
        stats = self._stats
        if stats["source"] is not None and stats["source"] != source:
            raise ValueError(
                f"partial_fit was started with intervention source "
                f"{stats['source']!r}; this batch provides {source!r}."
            )
        stats["source"] = source
        self._dtype = X.dtype

        if view_groups is not None:
            gram, scatter, dof = _grouped_second_moments(X, view_groups)
            stats["groups_scatter"] = _add(stats["groups_scatter"], scatter)
            stats["groups_dof"] += dof
        else:
            gram = _as64(X.T @ X)
        stats["gram"] = _add(stats["gram"], gram)
        stats["n"] += n

        if view_groups is None and y is not None:
            for key, total, count in _cell_sums(X, y, environments):
                cell = stats["cells"].setdefault(key, [np.zeros(d), 0])
                cell[0] += total
                cell[1] += count

    def _solve(self):
        stats = self._stats
        d = self.n_features_in_
        source = stats["source"]
        second_moment = stats["gram"] / stats["n"]
        scatters = []  # per-source nuisance scatter, in the paper's Delta scale
        if source in ("view_groups", "view_groups+interventions"):
            if stats["groups_dof"] == 0:
                raise ValueError(
                    "Every group in `view_groups` is a singleton: no row has an "
                    "interventional partner. Rows that are views of the same "
                    "content must share a group id (see stack_views)."
                )
            scatters.append(2.0 * stats["groups_scatter"] / stats["groups_dof"])
        if "interventions" in source:
            # Fixed data: computed once, not again at every partial_fit.
            if stats["fixed_scatter"] is None:
                stats["fixed_scatter"] = self._fixed_intervention_scatter(d)
            scatters.append(stats["fixed_scatter"])
        if source == "environments":
            scatters.append(_environment_scatter(stats["cells"], d))
        if source == "labels":
            scatters.append(_within_class_scatter(stats["cells"], stats["gram"], stats["n"]))
        nuisance = sum(scatters) / len(scatters)

        trace_z = np.trace(second_moment)
        trace_d = np.trace(nuisance)
        if not trace_z > 0:
            raise ValueError("X is all zeros: there is no variance to keep.")
        if not trace_d > 0:
            raise ValueError(
                "The interventional data shows no variation at all (identical views): "
                "the nuisance scatter is zero."
            )
        # Solved in the input's precision, as PCA does: float32 inputs give float32
        # components, and LAPACK runs about twice as fast on them.
        z_hat = (second_moment / (trace_z / d)).astype(self._dtype)
        d_hat = (nuisance / (trace_d / d)).astype(self._dtype)
        # numpy's LAPACK throughout, like the statistics above: handing over between
        # numpy's and scipy's BLAS thread pools costs more than these D x D solves.
        if self.solver == "difference":
            values, vectors = np.linalg.eigh(z_hat - self.lam * d_hat)
            baseline = 0.0
        else:
            values, vectors = _generalized_eigh(z_hat, np.eye(d, dtype=self._dtype) + self.lam * d_hat)
            baseline = 1.0 / (1.0 + self.lam)
        values, vectors = values[::-1], vectors[:, ::-1]
        if self.n_components is None:
            k = max(1, int(np.sum(values > baseline * (1 + 1e-9))))
        else:
            k = self.n_components
        basis = vectors[:, :k]
        if self.solver == "ratio":
            # Generalized eigenvectors are B-orthogonal; QR keeps their span and order.
            basis, _ = np.linalg.qr(basis)
        basis = _fix_signs(basis)

        kept_z = np.sum((second_moment @ basis) * basis, axis=0)  # a_k^T S_Z a_k
        kept_d = np.sum((nuisance @ basis) * basis, axis=0)
        self.components_ = basis.T.astype(self._dtype, copy=False)
        self.eigenvalues_ = values[:k].copy()
        self.invariance_ratio_ = kept_d / np.maximum(kept_z, np.finfo(float).tiny)
        self.explained_variance_ratio_ = kept_z / trace_z
        self.n_components_ = k
        self.second_moment_ = second_moment
        self.nuisance_scatter_ = nuisance
        self.lam_scale_ = float(trace_z / trace_d)
        self.intervention_source_ = source
        self.n_samples_seen_ = stats["n"]
        return self

    def _fixed_intervention_scatter(self, d):
        if self.intervention_view_groups is None:
            raise ValueError(
                "interventions were given without intervention_view_groups: say which rows "
                "describe the same content."
            )
        extra = check_array(
            self.interventions, dtype=[np.float64, np.float32], input_name="interventions"
        )
        if extra.shape[1] != d:
            raise ValueError(
                f"interventions have {extra.shape[1]} features but X has {d}."
            )
        extra_groups = _check_labels(self.intervention_view_groups, extra.shape[0], "intervention_view_groups")
        _, scatter, dof = _grouped_second_moments(extra, extra_groups)
        if dof == 0:
            raise ValueError(
                "Every group in intervention_view_groups is a singleton: each content "
                "needs at least two interventional rows."
            )
        return 2.0 * scatter / dof

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Project ``X`` onto the invariant subspace.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Coordinates in the invariant subspace (float32 stays float32).
        """
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite=False
        )
        # NaN/inf in X always reaches the output, which is D/K times smaller than X:
        # checking it there keeps transform at the speed of the bare product. A
        # non-finite result raises below, so numpy's warnings would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            X_new = X @ self.components_.T.astype(X.dtype, copy=False)
            finite = np.isfinite(X_new.sum())
        if not finite:
            check_array(X, dtype=None, input_name="X")  # names NaN or infinity in X
            raise ValueError(
                "The projection of X overflowed: X has values too large for "
                f"{X.dtype.name}."
            )
        return X_new

    def inverse_transform(self, X):
        """Map subspace coordinates back to the embedding space.

        ``inverse_transform(transform(X))`` is the orthogonal projection of
        ``X`` onto the invariant subspace.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Coordinates in the invariant subspace.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            The projected embeddings.
        """
        check_is_fitted(self)
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {X.shape[1]} features, but inverse_transform expects "
                f"{self.n_components_} (n_components_)."
            )
        return X @ self.components_.astype(X.dtype, copy=False)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# ---------------------------------------------------------------- helpers
def _check_labels(labels, n, name):
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1:
        labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}.")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but X has {n} rows.")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} contains NaN or infinity.")
    return labels


def _choose_source(view_groups, has_fixed, environments, y):
    if view_groups is not None:
        return "view_groups+interventions" if has_fixed else "view_groups"
    if has_fixed:
        return "interventions"
    if environments is not None:
        return "environments"
    if y is not None:
        return "labels"
    raise ValueError(
        "InvariantProjector needs interventional data. Pass `view_groups` (rows that "
        "are views of the same content share an id; see stack_views), give "
        "`interventions` and `intervention_view_groups` to the constructor, pass "
        "`environments` together with `y`, or at least `y`."
    )


def _as64(a):
    return np.asarray(a, dtype=np.float64)


def _add(total, increment):
    return increment.copy() if total is None else total + increment


def _grouped_second_moments(X, view_groups):
    """Return ``(sum x x^T, within-group scatter W, dof)`` without forming pairs.

    Each group's rows are rotated by a Helmert matrix: one row is the scaled
    group sum ``s / sqrt(n_g)``, the other ``n_g - 1`` are orthonormal
    contrasts whose scatter is exactly the within-group scatter
    ``W_g = sum (x - mean)(x - mean)^T``. The rotation is orthogonal, so the
    same rows also give ``sum x x^T``: one pass of ``N`` rows through a
    symmetric rank-k update, and no cancellation between large numbers.
    ``W_g`` is ``(n_g - 1) / 2`` times the average pair scatter of the group.
    """
    n, d = X.shape
    dtype = X.dtype
    order = np.argsort(view_groups, kind="stable")
    sorted_groups = view_groups[order]
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.append(starts, n))

    gram = np.zeros((d, d))
    scatter = np.zeros((d, d))
    singles = order[starts[sizes == 1]]
    for lo in range(0, singles.size, _CHUNK_ROWS):
        block = X[singles[lo : lo + _CHUNK_ROWS]]
        gram += block.T @ block

    multi_starts = starts[sizes > 1]
    multi_sizes = sizes[sizes > 1]
    if multi_starts.size == 0:
        return gram, scatter, n - starts.size
    rows_before = np.concatenate([[0], np.cumsum(multi_sizes)])
    # Buffers reused by every block: fresh large arrays cost page faults.
    max_groups = min(multi_starts.size, _CHUNK_ROWS // 2)
    running_sum = np.empty((max_groups, d), dtype=dtype)
    first, member = (np.empty((max_groups, d), dtype=dtype) for _ in range(2))
    contrasts = np.empty((min(_CHUNK_ROWS, n), d), dtype=dtype)
    g0 = 0
    while g0 < multi_starts.size:
        g1 = int(np.searchsorted(rows_before, rows_before[g0] + _CHUNK_ROWS, side="right")) - 1
        g1 = min(max(g1, g0 + 1), multi_starts.size, g0 + max_groups)
        st, sz = multi_starts[g0:g1], multi_sizes[g0:g1]
        g = g1 - g0
        n_contrasts = rows_before[g1] - rows_before[g0] - g
        if n_contrasts > contrasts.shape[0]:
            contrasts = np.empty((n_contrasts, d), dtype=dtype)
        # Members 0 and 1 (every group here has both): first contrast and running sum.
        x0 = _rows(X, order[st], first[:g])
        x1 = _rows(X, order[st + 1], member[:g])
        total = running_sum[:g]
        np.subtract(x0, x1, out=contrasts[:g])
        contrasts[:g] *= dtype.type(np.sqrt(0.5))
        np.add(x0, x1, out=total)
        filled = g
        for k in range(2, int(sz.max())):
            scale = dtype.type(1.0 / np.sqrt(k * (k + 1.0)))
            alive = np.flatnonzero(sz > k)
            out = contrasts[filled : filled + alive.size]
            if alive.size == g:  # every group has a k-th member: work in place
                xk = _rows(X, order[st + k], member[:g])
                np.multiply(xk, dtype.type(-k), out=out)
                out += total
                out *= scale
                total += xk
            else:
                xk = X[order[st[alive] + k]]
                prefix = total[alive]
                np.multiply((prefix - dtype.type(k) * xk), scale, out=out)
                total[alive] = prefix + xk
            filled += alive.size
        block = contrasts[:filled]
        within = _as64(block.T @ block)
        scatter += within
        if sz.min() == sz.max():  # equal sizes: divide the product, not the rows
            gram += within + _as64(total.T @ total) / sz[0]
        else:
            total *= (1.0 / np.sqrt(sz)).astype(dtype)[:, None]  # s_g / sqrt(n_g)
            gram += within + total.T @ total
        g0 = g1
    return gram, scatter, n - starts.size


def _rows(X, index, out):
    """``X[index]``: a view when the rows are consecutive (stack_views layout), else into ``out``."""
    first = index[0]
    if index[-1] - first == len(index) - 1 and np.all(np.diff(index) == 1):
        return X[first : first + len(index)]
    return np.take(X, index, axis=0, out=out)


def _cell_sums(X, y, environments):
    """Yield ``(key, row sum, count)`` per class (or per class and environment)."""
    y_values, y_codes = np.unique(y, return_inverse=True)
    if environments is None:
        e_values, e_codes = [None], np.zeros_like(y_codes)
    else:
        e_values, e_codes = np.unique(environments, return_inverse=True)
    codes = y_codes * len(e_values) + e_codes
    cell_ids, codes = np.unique(codes, return_inverse=True)
    indicator = sparse.csr_matrix(
        (np.ones(len(codes), dtype=X.dtype), (codes, np.arange(len(codes)))),
        shape=(len(cell_ids), len(codes)),
    )
    sums = _as64(indicator @ X)
    counts = np.bincount(codes, minlength=len(cell_ids))
    for cell, total, count in zip(cell_ids, sums, counts):
        label = _python_scalar(y_values[cell // len(e_values)])
        env = e_values[cell % len(e_values)]
        key = label if environments is None else (label, _python_scalar(env))
        yield key, total, count


def _generalized_eigh(a, b):
    """Eigenpairs of ``a v = w b v`` (ascending) for symmetric ``a`` and ``b >= I``.

    Reduced to a standard problem with the Cholesky factor ``b = L L^T``:
    ``L^-1 a L^-T y = w y``, ``v = L^-T y``. ``b``'s eigenvalues are at least 1,
    so the explicit inverse of ``L`` is well conditioned.
    """
    inv_lower = _invert_lower(np.linalg.cholesky(b))
    reduced = inv_lower @ a @ inv_lower.T
    values, vectors = np.linalg.eigh((reduced + reduced.T) / 2)
    return values, inv_lower.T @ vectors


def _invert_lower(lower):
    """Inverse of a lower-triangular matrix by 2 x 2 blocks, so the work is in matmuls.

    ``[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]``; numpy has no
    triangular solver, and its general ``inv`` (LU) is several times slower.
    """
    n = lower.shape[0]
    if n <= 64:
        return np.tril(np.linalg.inv(lower))
    h = n // 2
    top = _invert_lower(lower[:h, :h])
    bottom = _invert_lower(lower[h:, h:])
    inverse = np.zeros_like(lower)
    inverse[:h, :h] = top
    inverse[h:, h:] = bottom
    inverse[h:, :h] = -(bottom @ lower[h:, :h]) @ top
    return inverse


def _python_scalar(value):
    # Dictionary keys must compare equal across batches: numpy scalars -> Python.
    return value.item() if isinstance(value, np.generic) else value


def _environment_scatter(cells, d):
    """Scatter of class-conditional environment means around their class mean."""
    by_class = {}
    for (label, _env), (total, count) in cells.items():
        by_class.setdefault(label, []).append(total / count)
    scatter = np.zeros((d, d))
    dof = 0
    for means in by_class.values():
        if len(means) < 2:
            continue
        means = np.asarray(means)
        dev = means - means.mean(axis=0)
        scatter += dev.T @ dev
        dof += len(means) - 1
    if dof == 0:
        raise ValueError(
            "Every class is observed in a single environment: class-conditional "
            "environment means need at least two environments per class."
        )
    return 2.0 * scatter / dof


def _within_class_scatter(cells, gram, n):
    between = sum(np.outer(total, total) / count for total, count in cells.values())
    dof = n - len(cells)
    if dof == 0:
        raise ValueError(
            f"Every class has a single sample (n_samples={n}, {len(cells)} classes): "
            "within-class variation needs at least two samples of some class."
        )
    return 2.0 * (gram - between) / dof


def _fix_signs(basis):
    # Deterministic output: the largest-magnitude loading of each column is positive.
    idx = np.argmax(np.abs(basis), axis=0)
    signs = np.sign(basis[idx, np.arange(basis.shape[1])])
    signs[signs == 0] = 1
    return basis * signs
