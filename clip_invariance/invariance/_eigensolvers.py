"""The eigenproblems of the invariant projection, on trace-normalised statistics.

:class:`~clip_invariance.InvariantProjector` reduces its data to two ``(D, D)``
matrices, the second moment ``z`` and the nuisance scatter ``d``, both scaled
to unit average eigenvalue; this module turns them into components. Each
solver returns ``(values, basis)``: the top eigenvalues, largest first, and a
``(D, K)`` basis with orthonormal columns.

- :func:`solve_ratio`: top generalized eigenvectors of ``z a = mu (I + lam d) a``;
- :func:`solve_difference`: top eigenvectors of ``z - lam d`` (the paper's form).

:data:`SOLVERS` maps the ``solver`` parameter to them; :func:`one_blas_thread` is
the context the projector solves them in (BLAS on one thread up to ``D = 1024``).

Examples
--------
>>> import numpy as np
>>> from clip_invariance.invariance._eigensolvers import SOLVERS
>>> z, d = np.diag([3.0, 2.0, 1.0]), np.diag([0.0, 3.0, 0.0])
>>> values, basis = SOLVERS["ratio"](z, d, 1.0, 2)
>>> values
array([3., 1.])
>>> np.abs(basis).round(6)  # the direction with nuisance comes last despite its variance
array([[1., 0.],
       [0., 0.],
       [0., 1.]])
"""

import contextlib

import numpy as np
from scipy import linalg

from ._threads import single_threaded_blas

__all__ = ["SOLVERS", "one_blas_thread", "solve_difference", "solve_ratio"]

# Up to this many features the D x D solves run their BLAS on one thread (one_blas_thread).
ONE_THREAD_FEATURES = 1024


def solve_ratio(z_hat, d_hat, lam, n_components):
    """Top generalized eigenpairs of ``z a = mu (I + lam d) a``, orthonormalised."""
    values, vectors = _top_eigh(z_hat, np.eye(len(d_hat), dtype=d_hat.dtype) + lam * d_hat, n_components)
    k = _n_kept(values, n_components, baseline=1.0 / (1.0 + lam))  # an isotropic direction's mu
    # Generalized eigenvectors are B-orthogonal; QR keeps their span and order.
    basis, _ = np.linalg.qr(vectors[:, :k])
    return values[:k], basis


def solve_difference(z_hat, d_hat, lam, n_components):
    """Top eigenpairs of ``z - lam d`` (the paper's form)."""
    values, vectors = _top_eigh(z_hat - lam * d_hat, None, n_components)
    k = _n_kept(values, n_components, baseline=0.0)
    return values[:k], vectors[:, :k]


SOLVERS = {"ratio": solve_ratio, "difference": solve_difference}


def one_blas_thread(n_features):
    """A context in which BLAS runs on one thread, for the solves of ``n_features <= 1024``; else a no-op.

    The solves are hundreds of small BLAS calls (LAPACK's tridiagonal
    reduction, one matrix-vector product a column): a second thread saves
    nothing there, and each call waits for both threads, so that one thread
    descheduled by another job stalls them all. Ratio solve, top K=64 of
    D=512, float32, 2 cores: 18 ms on one thread; on two, 17 ms at best and
    175 ms median with another job on the machine. See ``_threads.py``.
    """
    if n_features > ONE_THREAD_FEATURES:
        return contextlib.nullcontext()
    return single_threaded_blas()


def _top_eigh(a, b, n_components):
    """Eigenpairs of ``a v = w b v`` (``b=None``: ``I``), largest first; all when ``n_components`` is None."""
    if n_components is not None:
        # Top K alone (sygvx / syevr) vs whole spectrum (sygvd / syevd), K=64, D=512/768 float32:
        # ratio 28/52 vs 46/86 ms, difference 18/32 vs 33/62 ms (bench_projector.py --solvers).
        subset = [len(a) - n_components, len(a) - 1]
        values, vectors = linalg.eigh(a, b, subset_by_index=subset, overwrite_a=True)
    elif b is None:
        values, vectors = linalg.eigh(a, driver="evd", overwrite_a=True)
    else:
        values, vectors = _generalized_eigh(a, b)
    return values[::-1], vectors[:, ::-1]


def _generalized_eigh(a, b):
    """Eigenpairs of ``a v = w b v``, ascending, for ``b >= I``: ``L^-1 a L^-T y = w y``, ``v = L^-T y``."""
    # Not scipy.linalg.eigh(a, b): numpy's LAPACK avoids a hand-over to scipy's BLAS pool. Fit, K=None,
    # N=1e4, D=512/768: float32 108/234 ms vs 119/269, float64 132/259 ms vs 158/349 (2 threads).
    inv_lower = _invert_lower(np.linalg.cholesky(b))  # b = L L^T; b >= I keeps L^-1 well conditioned
    reduced = inv_lower @ a @ inv_lower.T
    values, vectors = np.linalg.eigh((reduced + reduced.T) / 2)
    return values, inv_lower.T @ vectors


def _invert_lower(lower):
    """Lower-triangular inverse in matmuls: ``[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]``."""
    # numpy has no triangular inverse; scipy's lapack.strtri/dtrtri in the same fit: 136/281 ms
    # float32, 166/350 ms float64 (against 108/234 and 132/259 ms above).
    n = lower.shape[0]
    if n <= 64:
        return np.tril(np.linalg.inv(lower))
    h = n // 2
    top, bottom = _invert_lower(lower[:h, :h]), _invert_lower(lower[h:, h:])
    inverse = np.zeros_like(lower)
    inverse[:h, :h], inverse[h:, h:] = top, bottom
    inverse[h:, :h] = -(bottom @ lower[h:, :h]) @ top
    return inverse


def _n_kept(values, n_components, baseline):
    if n_components is not None:
        return n_components
    # Eigenvalues within round-off of the baseline (e.g. the null space when rows
    # are fewer than features) are not components: a tolerance relative to the
    # spectrum's scale, as numpy's matrix_rank uses.
    tolerance = np.finfo(values.dtype).eps * len(values) * np.max(np.abs(values))
    return max(1, int(np.sum(values > baseline + tolerance)))
