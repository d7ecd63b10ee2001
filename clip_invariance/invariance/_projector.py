"""InvariantProjector: the closed-form invariant subspace of CLIP-ICM.

The data path, in the order :meth:`InvariantProjector.fit` reads:
``validate -> sufficient statistics -> nuisance scatter -> solver -> components``.
The statistics (``_statistics.py``) are ``(D, D)`` sums over
the rows, accumulated in one pass (``partial_fit`` adds them batch by batch);
the solver is a symmetric eigenproblem on them, so fitting costs ``O(N D^2)``
time and ``O(D^2)`` memory beyond ``X``.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import svd_flip
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .._utils import (
    DocLinkMixin,
    align_labels,
    check_labels,
    check_row_chunks,
    is_dask_array,
    map_rows,
    unchanged_on_error,
)
from ._chunked import chunked_statistics
from ._eigensolvers import SOLVERS, one_blas_thread
from ._statistics import InterventionStatistics

__all__ = ["InvariantProjector"]


class InvariantProjector(DocLinkMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
    2. ``intervention_embeddings`` / ``intervention_view_groups`` given to the constructor:
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
        components whose eigenvalue beats that of an isotropic direction (0 for
        the difference form, :math:`1/(1+\lambda)` for the ratio form) by more
        than round-off, relative to the largest eigenvalue; at least one.
    lam : float, default=10.0
        Trade-off between keeping variance (``lam = 0``: uncentred PCA) and
        invariance, in units of the trace-normalised statistics: dimensionless,
        the same value works for raw and L2-normalised embeddings. The default
        10 recovered the synthetic benchmark's invariant subspace (overlap
        > 0.98) for both with the ratio solver. A ``lam`` of the paper's raw
        formula is divided by ``lam_scale_`` to give this one.
    solver : {"ratio", "difference"}, default="ratio"
        Which objective to solve, see above.
    intervention_embeddings : array-like of shape (n_interventions, n_features), default=None
        Fixed extra interventional embeddings (e.g. the embeddings of text interventions).
    intervention_view_groups : array-like of shape (n_interventions,), default=None
        Group id of each row of ``intervention_embeddings``; rows sharing an id
        describe the same content. Required when ``intervention_embeddings`` is given.

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
    statistics_ : :class:`~clip_invariance.invariance.InterventionStatistics` or None
        The sufficient statistics of every row seen, the only ``(D, D)`` state
        kept: ``partial_fit`` adds to them. None after :meth:`compact`.
    second_moment_ : ndarray of shape (n_features, n_features)
        :math:`S_Z`, derived from ``statistics_`` on access (a property), in
        the units of ``X`` (inf where those overflow float64); not available
        after :meth:`compact`.
    nuisance_scatter_ : ndarray of shape (n_features, n_features)
        :math:`S_\Delta`, derived likewise (with the constructor's
        ``intervention_embeddings``).
    lam_scale_ : float
        :math:`\operatorname{tr} S_Z / \operatorname{tr} S_\Delta`.
    intervention_source_ : str
        Which source was used: ``"view_groups"``, ``"intervention_embeddings"``,
        ``"view_groups+intervention_embeddings"``, ``"environments"`` or ``"labels"``.
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
    clip_invariance.invariance.InterventionStatistics : The sufficient statistics.
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
    >>> from clip_invariance.invariance import subspace_overlap
    >>> round(subspace_overlap(proj.components_.T, data.invariant_basis), 2)
    1.0
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "lam": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"ratio", "difference"})],
        "intervention_embeddings": ["array-like", None],
        "intervention_view_groups": ["array-like", None],
    }

    def __init__(
        self,
        n_components=None,
        *,
        lam=10.0,
        solver="ratio",
        intervention_embeddings=None,
        intervention_view_groups=None,
    ):
        self.n_components = n_components
        self.lam = lam
        self.solver = solver
        self.intervention_embeddings = intervention_embeddings
        self.intervention_view_groups = intervention_view_groups

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, view_groups=None, environments=None):
        """Learn the invariant subspace from ``X`` and interventional data.

        A failed call leaves the projector as it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (raw or L2-normalised). A dask array, chunked along rows
            with complete view groups per chunk, is reduced chunk by chunk on
            the workers (:func:`~clip_invariance.invariance.chunked_statistics`);
            its labels may be dask arrays too.
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
        with unchanged_on_error(self):
            statistics, source, dtype = self._batch_statistics(X, y, view_groups, environments, reset=True)
            return self._fit_statistics(statistics, source, dtype, reset=True)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, view_groups=None, environments=None):
        """Add the sufficient statistics of one batch and re-solve.

        Gives the same result as :meth:`fit` on the concatenated batches.
        Group ids are local to a batch: keep all views of one content in the
        same call. Class/environment statistics, in contrast, are pooled
        across calls by label. A failed call leaves the projector as it was.

        Parameters
        ----------
        X, y, view_groups, environments
            As in :meth:`fit`, for one batch.

        Returns
        -------
        self : object
            The projector, solved on everything seen so far.
        """
        first = not hasattr(self, "statistics_")
        if not first:  # _fit_context validates the parameters of a first call only
            self._validate_params()
            if self.statistics_ is None:
                raise ValueError("partial_fit cannot continue a compacted projector: compact() dropped the "
                                 "statistics it adds to. Call fit to start again.")
        with unchanged_on_error(self):
            statistics, source, dtype = self._batch_statistics(X, y, view_groups, environments, reset=first)
            if not first:
                statistics = self.statistics_ + statistics
            return self._fit_statistics(statistics, source, dtype, reset=first)

    def _batch_statistics(self, X, y, view_groups, environments, *, reset):
        """The statistics of one batch, its intervention source and dtype; per chunk for dask ``X``."""
        if is_dask_array(X):
            X, source, labels = self._validate_chunked_batch(X, y, view_groups, environments, reset=reset)
        else:
            X, source, labels = self._validate_batch(X, y, view_groups, environments, reset=reset)
        if not reset and source != self.intervention_source_:
            raise ValueError(f"partial_fit was started with intervention source "
                             f"{self.intervention_source_!r}; this batch provides {source!r}.")
        if is_dask_array(X):  # on the workers; the statistics alone come back
            return chunked_statistics(X, **labels), source, X.dtype
        return InterventionStatistics.from_block(X, **labels), source, X.dtype

    def _validate_batch(self, X, y, view_groups, environments, *, reset):
        """Checked ``X``, the intervention source, and the labels it needs."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset, ensure_min_samples=1)
        n, d = X.shape
        if self.n_components is not None and self.n_components > d:
            raise ValueError(f"n_components={self.n_components} must be at most the number of "
                             f"features, n_features={d}.")
        y = check_labels(y, n, "y")
        view_groups = check_labels(view_groups, n, "view_groups")
        environments = check_labels(environments, n, "environments")
        if environments is not None and y is None:
            raise ValueError("environments were given without y: class-conditional environment "
                             "means need the class labels.")
        return (X, *_source_and_labels(self, view_groups, environments, y, _type_of_target))

    def _validate_chunked_batch(self, X, y, view_groups, environments, *, reset):
        """As ``_validate_batch`` for a dask ``X``; the rows are checked on the workers."""
        X = check_row_chunks(X)
        validate_data(self, X, skip_check_array=True, reset=reset)
        if self.n_components is not None and self.n_components > X.shape[1]:
            raise ValueError(f"n_components={self.n_components} must be at most the number of "
                             f"features, n_features={X.shape[1]}.")
        named = ((y, "y"), (view_groups, "view_groups"), (environments, "environments"))
        y, view_groups, environments = (align_labels(labels, X, name) for labels, name in named)
        if environments is not None and y is None:
            raise ValueError("environments were given without y: class-conditional environment "
                             "means need the class labels.")
        return (X, *_source_and_labels(self, view_groups, environments, y, _type_of_chunked_target))

    # ---------------------------------------------------------------- solve
    def _fit_statistics(self, statistics, source, dtype, *, reset):
        """Nuisance scatter -> solver -> components, from the statistics of every row seen."""
        fixed_scatter = None
        if "intervention_embeddings" in source:  # fixed data: computed once per fit, not per partial_fit
            fixed_scatter = None if reset else self._fixed_scatter
            if fixed_scatter is None:
                fixed_scatter = self._fixed_intervention_scatter(statistics.gram.shape[0])
        gram, n = statistics.gram, statistics.n_samples
        with one_blas_thread(gram.shape[0]):  # D x D work: small BLAS calls, see one_blas_thread
            nuisance = _nuisance_scatter(statistics, source, fixed_scatter)
            z_hat, d_hat = _unit_average_eigenvalue(gram, nuisance, dtype)
            values, basis = SOLVERS[self.solver](z_hat, d_hat, self.lam, self.n_components)
            basis, _ = svd_flip(basis, None)  # deterministic signs
            kept_z = np.sum((gram @ basis) * basis, axis=0)  # n a_k^T S_Z a_k
            kept_d = np.sum((nuisance @ basis) * basis, axis=0)
        self.components_ = basis.T.astype(dtype, copy=False)
        self.eigenvalues_ = values
        self.invariance_ratio_ = n * kept_d / np.maximum(kept_z, np.finfo(float).tiny)
        self.explained_variance_ratio_ = kept_z / np.trace(gram)
        self.n_components_ = len(values)
        self.lam_scale_ = float(np.trace(gram) / n / np.trace(nuisance))
        self.intervention_source_ = source
        self.n_samples_seen_ = n
        self.statistics_ = statistics
        self._fixed_scatter = fixed_scatter
        return self

    def _fixed_intervention_scatter(self, d):
        """Nuisance scatter of the constructor's interventions and its exponent."""
        if self.intervention_view_groups is None:
            raise ValueError("intervention_embeddings were given without intervention_view_groups: say "
                             "which rows describe the same content.")
        extra = check_array(self.intervention_embeddings, dtype=[np.float64, np.float32],
                            input_name="intervention_embeddings")
        if extra.shape[1] != d:
            raise ValueError(f"intervention_embeddings have {extra.shape[1]} features but X has {d}.")
        groups = check_labels(self.intervention_view_groups, extra.shape[0], "intervention_view_groups")
        statistics = InterventionStatistics.from_block(extra, view_groups=groups)
        return statistics.group_nuisance("intervention_view_groups"), statistics.exponent

    def compact(self):
        """Drop the sufficient statistics, keeping what ``transform`` needs; ends ``partial_fit``.

        A fitted projector keeps the ``(D, D)`` float64 sums of every row
        seen (``statistics_``), so that :meth:`partial_fit` can add to them:
        two such matrices when the interventions are view groups, 4 MiB at
        ``D = 512``, against ``K D`` numbers for the components. A deployed
        projector does not need them: ``compact`` sets ``statistics_`` to
        None and drops the constructor's interventions' scatter. Every other
        fitted attribute, :meth:`transform` and :meth:`inverse_transform` stay
        as they were; ``second_moment_`` and ``nuisance_scatter_`` are no
        longer available, and :meth:`partial_fit` raises (:meth:`fit` starts
        afresh).

        Returns
        -------
        self : object
            The compacted projector.

        Examples
        --------
        >>> import pickle
        >>> import numpy as np
        >>> from clip_invariance import InvariantProjector
        >>> X = np.random.default_rng(0).normal(size=(200, 64))
        >>> proj = InvariantProjector(4).fit(X, view_groups=np.arange(200) // 2)
        >>> Z = proj.transform(X)
        >>> before = len(pickle.dumps(proj))
        >>> after = len(pickle.dumps(proj.compact()))
        >>> after < before / 10, proj.statistics_ is None, np.array_equal(proj.transform(X), Z)
        (True, True, True)
        """
        check_is_fitted(self)
        self.statistics_ = None
        self._fixed_scatter = None
        return self

    # ------------------------------------------- statistics, derived views
    @property
    def second_moment_(self):
        check_is_fitted(self)
        self._check_statistics("second_moment_")
        return self.statistics_.unscaled(self.statistics_.second_moment())

    @property
    def nuisance_scatter_(self):
        check_is_fitted(self)
        self._check_statistics("nuisance_scatter_")
        statistics = self.statistics_
        nuisance = _nuisance_scatter(statistics, self.intervention_source_, self._fixed_scatter)
        return statistics.unscaled(nuisance)

    def _check_statistics(self, name):
        if self.statistics_ is None:
            raise AttributeError(f"{name} was dropped by compact(); fit again to get it.")

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
            Coordinates in the invariant subspace (float32 stays float32); a
            lazy dask array, chunked like the rows of ``X``, for a dask ``X``.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return map_rows(self, "transform", X, n_columns=self.n_components_, dtype=_float_dtype(X))
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite=False)
        # NaN/inf in X always reaches the output, D/K times smaller than X: checking it there
        # keeps transform at the speed of the bare product (numpy's warnings would be noise).
        with np.errstate(over="ignore", invalid="ignore"):
            X_new = X @ self.components_.T.astype(X.dtype, copy=False)
            finite = np.isfinite(X_new.sum())
        if not finite:
            check_array(X, dtype=None, input_name="X")  # names NaN or infinity in X
            raise ValueError(f"The projection of X overflowed: X has values too large for {X.dtype.name}.")
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
            The projected embeddings; lazy for a dask ``X``, as in :meth:`transform`.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            if X.ndim == 2 and X.shape[1] != self.n_components_:
                raise ValueError(f"X has {X.shape[1]} features, but inverse_transform expects "
                                 f"{self.n_components_} (n_components_).")
            return map_rows(self, "inverse_transform", X, n_columns=self.n_features_in_,
                            dtype=_float_dtype(X), check_features=False)
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_components_:
            raise ValueError(f"X has {X.shape[1]} features, but inverse_transform expects "
                             f"{self.n_components_} (n_components_).")
        return X @ self.components_.astype(X.dtype, copy=False)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# ------------------------------------------------------------ source, state
def _choose_source(view_groups, has_fixed, environments, y):
    if view_groups is not None:
        return "view_groups+intervention_embeddings" if has_fixed else "view_groups"
    if has_fixed:
        return "intervention_embeddings"
    if environments is not None:
        return "environments"
    if y is not None:
        return "labels"
    raise ValueError(
        "InvariantProjector needs interventional data. Pass `view_groups` (rows that "
        "are views of the same content share an id; see stack_views), give "
        "`intervention_embeddings` and `intervention_view_groups` to the constructor, pass "
        "`environments` together with `y`, or at least `y`."
    )


def _source_and_labels(projector, view_groups, environments, y, target_type):
    """The intervention source and the labels that ``from_block`` needs for it."""
    source = _choose_source(view_groups, projector.intervention_embeddings is not None, environments, y)
    if source in ("environments", "labels"):
        if target_type(y).startswith("continuous"):
            raise ValueError("y looks continuous (floats that are not whole numbers): the projector "
                             "needs class labels, whose variation it treats as nuisance.")
        return source, {"y": y, "environments": environments}
    return source, {"view_groups": view_groups}


def _float_dtype(X):
    """The dtype ``transform`` gives ``X``: float32 stays float32, anything else becomes float64."""
    return X.dtype if X.dtype == np.float32 else np.dtype(np.float64)


def _type_of_target(y):
    return type_of_target(y, input_name="y", raise_unknown=True)


def _type_of_chunked_target(y):
    """``"continuous"`` for a dask ``y`` of floats that are not whole numbers (one pass over ``y``).

    NaN or infinity is an error naming its first row: ``y % 1`` alone would call it continuous.
    """
    if y.dtype.kind != "f":
        return "labels"
    import dask
    import dask.array as da

    bad = ~da.isfinite(y)
    finite = da.where(bad, 0.0, y)  # NaN % 1 would warn
    any_bad, first_bad, fractional = dask.compute(bad.any(), bad.argmax(), (finite % 1 != 0).any())
    if any_bad:
        starts = np.cumsum((0,) + y.chunks[0])
        chunk = int(np.searchsorted(starts, first_bad, side="right")) - 1
        raise ValueError(f"y contains NaN or infinity, first in row {first_bad} (chunk {chunk}, rows "
                         f"{starts[chunk]}-{starts[chunk + 1] - 1}).")
    return "continuous" if fractional else "labels"


def _nuisance_scatter(statistics, source, fixed_scatter):
    """:math:`S_\\Delta` of ``source`` in the statistics' units; two sources weigh equally.

    ``fixed_scatter``: ``(scatter, exponent)`` of the constructor's interventions, or None.
    """
    derived = {"view_groups": statistics.group_nuisance, "environments": statistics.environment_nuisance,
               "labels": statistics.label_nuisance}
    scatters = [derived[part]() for part in source.split("+") if part in derived]
    if fixed_scatter is not None:
        scatters.append(np.ldexp(fixed_scatter[0], 2 * (fixed_scatter[1] - statistics.exponent)))
    return sum(scatters) / len(scatters)


def _unit_average_eigenvalue(gram, nuisance, dtype):
    """``S / (tr S / D)`` for both statistics, in the solver's precision."""
    d = gram.shape[0]
    trace_z, trace_d = np.trace(gram), np.trace(nuisance)
    if not (np.isfinite(trace_z) and np.isfinite(trace_d)):
        raise ValueError("The second moments overflowed: intervention_embeddings and X differ too much in "
                         "scale.")
    if not trace_z > 0:
        raise ValueError("X is all zeros: there is no variance to keep.")
    if not trace_d > 0:
        raise ValueError("The interventional data shows no variation at all (identical views): "
                         "the nuisance scatter is zero.")
    # Solved in the input's precision, as PCA does: float32 inputs give float32
    # components, and LAPACK runs about twice as fast on them.
    return (gram / (trace_z / d)).astype(dtype), (nuisance / (trace_d / d)).astype(dtype)
