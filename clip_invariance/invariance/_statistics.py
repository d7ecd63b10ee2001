"""Per-block sufficient statistics of interventions, the sums the projector is solved from.

Every statistic is a sum over rows, so the statistics of a concatenation of
blocks are the sum of the blocks' statistics: ``partial_fit`` adds them batch
by batch, and a distributed fit can compute them per dask chunk on workers and add
them up. Plain numpy and BLAS, float64 sums, no estimator state, picklable.

From one block of rows ``X`` (``n`` rows, ``D`` features) and its labels:

- ``gram``: :math:`\\sum_i x_i x_i^\\top`;
- ``group_scatter``, ``group_dof``: with ``view_groups``, the within-group
  scatter :math:`\\sum_g \\sum_{i \\in g} (x_i - \\bar x_g)(x_i - \\bar x_g)^\\top`
  and its degrees of freedom :math:`\\sum_g (n_g - 1)`;
- ``cell_sums``, ``cell_counts``: with ``y`` (and ``environments``), the row
  sum and the row count of each class (or each class and environment).

The nuisance scatters of :class:`~clip_invariance.InvariantProjector`
(``S_Delta``) are derived from them by :meth:`InterventionStatistics.group_nuisance`,
:meth:`~InterventionStatistics.environment_nuisance` and
:meth:`~InterventionStatistics.label_nuisance`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from .._utils import check_labels
from ._threads import blas_threads, single_threaded_blas

__all__ = ["InterventionStatistics"]

# Rows per tile: the rotated rows (group sums, within-group contrasts) of a tile are
# formed in a buffer and multiplied by BLAS, in X's precision, as PCA's X^T X is; the
# tiles' products are summed in float64. Few enough products for their per-call cost
# (a D x D copy and sum each) to vanish next to the O(rows D^2) product. With several
# workers (threads), each gets _BLOCK_ROWS / workers rows a tile, at least _MIN_TILE_ROWS,
# so that the buffers stay about the size of one tile.
_BLOCK_ROWS = 16384
_MIN_TILE_ROWS = 2048
# Entries of X from which the tiles are shared out to threads (below, one thread).
_PARALLEL_SIZE = 1 << 20
# Sizes of equal-sized groups whose sums are kept apart, unscaled (one D x D sum each);
# the sums of other groups are scaled by 1 / sqrt(n_g) and share one.
_MAX_SIZE_SUMS = 4


@dataclass(eq=False)
class InterventionStatistics:
    r"""Sufficient statistics of one block of rows; blocks add up with ``+``.

    The matrices are float64 sums stored in units of :math:`4^{e}`, the
    cell sums in units of :math:`2^{e}`, with ``e = exponent``: a block whose
    products would overflow or underflow in its precision is divided by a
    power of two first (exact), so ``X`` and ``c * X`` give the same
    statistics up to that factor over the whole floating-point range. Use
    :meth:`unscaled` for a matrix in the units of ``X``.

    Build them with :meth:`from_block`; add them with ``a + b`` or ``sum``.
    View groups are local to a block; classes and environments are pooled
    across blocks by label.

    Attributes
    ----------
    n_samples : int
        Rows summed.
    gram : ndarray of shape (n_features, n_features)
        :math:`\sum_i x_i x_i^\top`.
    group_scatter : ndarray of shape (n_features, n_features) or None
        Within-view-group scatter :math:`W`; None without ``view_groups``.
    group_dof : int
        Its degrees of freedom, :math:`\sum_g (n_g - 1)`.
    cell_sums : dict
        ``{(label, environment): row sum}``, ``environment`` None without
        ``environments``; empty without ``y``.
    cell_counts : dict
        ``{(label, environment): number of rows}``.
    exponent : int
        The statistics are those of ``X / 2**exponent``.

    Examples
    --------
    >>> import numpy as np
    >>> from clip_invariance.invariance import InterventionStatistics
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> view_groups = np.array([0, 0, 1, 1, 2, 2])
    >>> whole = InterventionStatistics.from_block(X, view_groups=view_groups)
    >>> parts = (InterventionStatistics.from_block(X[:4], view_groups=view_groups[:4])
    ...          + InterventionStatistics.from_block(X[4:], view_groups=view_groups[4:]))
    >>> np.allclose(whole.gram, parts.gram), parts.n_samples, parts.group_dof
    (True, 6, 3)
    >>> whole.group_nuisance()  # pairs: the mean of (x - x')(x - x')^T
    array([[4., 4.],
           [4., 4.]])
    """

    n_samples: int
    gram: np.ndarray
    group_scatter: np.ndarray | None = None
    group_dof: int = 0
    cell_sums: dict = field(default_factory=dict)
    cell_counts: dict = field(default_factory=dict)
    exponent: int = 0

    @classmethod
    def from_block(cls, X, view_groups=None, y=None, environments=None):
        """Statistics of one block of rows.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Finite embeddings, float32 or float64 (others are converted to
            float64); the products are formed and accumulated in this
            precision, as by one BLAS product, over a tile of at most 16384
            rows at a time, and the tiles' sums are added in float64. Large
            blocks are shared out to as many threads as BLAS would use.
        view_groups : array-like of shape (n_samples,), default=None
            Rows sharing an id are views of one content; gives ``group_scatter``.
        y : array-like of shape (n_samples,), default=None
            Class labels; gives the cells.
        environments : array-like of shape (n_samples,), default=None
            Environment of each row; splits the cells by environment (needs ``y``).

        Returns
        -------
        statistics : InterventionStatistics
        """
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be two-dimensional, got shape {X.shape}.")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        n = X.shape[0]
        view_groups = check_labels(view_groups, n, "view_groups")
        y = check_labels(y, n, "y")
        environments = check_labels(environments, n, "environments")
        if environments is not None and y is None:
            raise ValueError("environments were given without y: cells are classes first.")
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # checked below
            statistics = _block_statistics(X, view_groups, y, environments, 0)
        if statistics._in_range(X.dtype):
            return statistics
        # Rare path: products overflowed or underflowed in X's precision. Divide
        # by a power of two near max|x| (exact) and form them again.
        magnitude = max(np.max(X), -np.min(X)) if n else 0.0
        if not np.isfinite(magnitude):
            raise ValueError("X contains NaN or infinity.")
        if magnitude == 0:
            return statistics  # all zeros: nothing to rescale
        exponent = int(np.frexp(magnitude)[1])
        statistics = _block_statistics(np.ldexp(X, -exponent), view_groups, y, environments, exponent)
        if not statistics._in_range(X.dtype):
            raise ValueError(
                "The second moments of X overflow even after rescaling: "
                f"X has too many rows for {X.dtype.name} sums."
            )
        return statistics

    # ------------------------------------------------------------ storage
    def __getstate__(self):
        """The fields, with the cells as a list of keys and two arrays (what skops can store).

        In memory the cells are dicts keyed by ``(label, environment)`` tuples;
        skops stores dict keys as JSON strings, so the saved state lists the
        keys and stacks the sums and counts in their order instead.
        """
        state = dict(vars(self))
        keys = list(self.cell_sums)
        state["cell_sums"] = np.array([self.cell_sums[key] for key in keys], dtype=np.float64).reshape(
            len(keys), self.gram.shape[0])
        state["cell_counts"] = np.array([self.cell_counts[key] for key in keys], dtype=np.int64)
        state["cell_keys"] = keys
        return state

    def __setstate__(self, state):
        state = dict(state)
        keys = state.pop("cell_keys", None)
        if keys is not None:  # else the dicts themselves: a pickle from before the cells were stacked
            keys = [tuple(key) for key in keys]
            state["cell_sums"] = dict(zip(keys, state["cell_sums"]))
            state["cell_counts"] = {key: int(count) for key, count in zip(keys, state["cell_counts"])}
        vars(self).update(state)

    # ------------------------------------------------------------ summing
    def __add__(self, other):
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, InterventionStatistics):
            return NotImplemented
        if other.gram.shape != self.gram.shape:
            raise ValueError(
                f"Cannot add statistics of {other.gram.shape[0]} features to statistics "
                f"of {self.gram.shape[0]}."
            )
        # A common exponent, the larger one; an all-zero block has no scale of its own.
        scaled = [s.exponent for s in (self, other) if np.any(s.gram)]
        exponent = max(scaled) if scaled else max(self.exponent, other.exponent)
        a, b = self._to_exponent(exponent), other._to_exponent(exponent)
        cell_sums = dict(a.cell_sums)
        cell_counts = dict(a.cell_counts)
        for key, total in b.cell_sums.items():
            cell_sums[key] = cell_sums[key] + total if key in cell_sums else total
            cell_counts[key] = cell_counts.get(key, 0) + b.cell_counts[key]
        return InterventionStatistics(
            n_samples=a.n_samples + b.n_samples,
            gram=a.gram + b.gram,
            group_scatter=_add_optional(a.group_scatter, b.group_scatter),
            group_dof=a.group_dof + b.group_dof,
            cell_sums=cell_sums,
            cell_counts=cell_counts,
            exponent=exponent,
        )

    __radd__ = __add__  # sum() starts from 0

    def _to_exponent(self, exponent):
        if exponent == self.exponent:
            return self
        shift = self.exponent - exponent
        return InterventionStatistics(
            n_samples=self.n_samples,
            gram=np.ldexp(self.gram, 2 * shift),
            group_scatter=None if self.group_scatter is None else np.ldexp(self.group_scatter, 2 * shift),
            group_dof=self.group_dof,
            cell_sums={key: np.ldexp(total, shift) for key, total in self.cell_sums.items()},
            cell_counts=dict(self.cell_counts),
            exponent=exponent,
        )

    def _in_range(self, dtype):
        """No overflow, and the largest squares well above the underflow threshold."""
        diagonal = np.diagonal(self.gram)
        finite = np.isfinite(diagonal.sum())
        if self.group_scatter is not None:
            finite &= np.isfinite(np.trace(self.group_scatter))
        finite &= all(np.isfinite(total.sum()) for total in self.cell_sums.values())
        # max diag <= n max|x|^2: below this, products of the largest entries
        # lose digits to the subnormal range.
        info = np.finfo(dtype)
        return bool(finite) and bool(diagonal.max(initial=0.0) >= self.n_samples * info.tiny / info.eps)

    # --------------------------------------------------- derived matrices
    def unscaled(self, matrix):
        """A matrix derived from these statistics, in the units of ``X`` (may overflow to inf)."""
        return np.ldexp(matrix, 2 * self.exponent)

    def second_moment(self):
        """:math:`S_Z = \\sum_i x_i x_i^\\top / n` (in units of ``4**exponent``)."""
        return self.gram / self.n_samples

    def group_nuisance(self, name="view_groups"):
        """Nuisance scatter of the view groups: :math:`2 W / \\mathrm{dof}`.

        For pairs it is the mean of :math:`(x - x')(x - x')^\\top` over the pairs,
        the paper's :math:`\\Delta^\\top \\Delta / N`; for larger groups each
        group weighs by its degrees of freedom. ``name`` names the group ids in
        the error raised when every group is a singleton.
        """
        if self.group_scatter is None:
            raise ValueError("These statistics were computed without view_groups.")
        if self.group_dof == 0:
            raise ValueError(
                f"Every group in `{name}` is a singleton: no row has an "
                "interventional partner. Rows that are views of the same "
                "content must share a group id (see stack_views)."
            )
        return 2.0 * self.group_scatter / self.group_dof

    def environment_nuisance(self):
        """Scatter of the class-conditional environment means around their class mean."""
        by_class = {}
        for (label, _environment), total in self.cell_sums.items():
            by_class.setdefault(label, []).append(total / self.cell_counts[label, _environment])
        d = self.gram.shape[0]
        scatter = np.zeros((d, d))
        dof = 0
        for means in by_class.values():
            if len(means) < 2:
                continue
            deviations = np.asarray(means) - np.mean(means, axis=0)
            scatter += deviations.T @ deviations
            dof += len(means) - 1
        if dof == 0:
            raise ValueError(
                "Every class is observed in a single environment: class-conditional "
                "environment means need at least two environments per class."
            )
        return 2.0 * scatter / dof

    def label_nuisance(self):
        """Within-cell scatter, :math:`2 (\\sum x x^\\top - \\sum_c s_c s_c^\\top / n_c) / (n - C)`.

        The cells are the classes when the statistics were computed without
        ``environments``.
        """
        if not self.cell_counts:
            raise ValueError("These statistics were computed without y.")
        counts = np.array(list(self.cell_counts.values()), dtype=float)
        sums = np.array(list(self.cell_sums.values())).reshape(len(counts), -1)
        dof = self.n_samples - len(counts)
        if dof == 0:
            raise ValueError(
                f"Every class has a single sample (n_samples={self.n_samples}, {len(counts)} "
                "classes): within-class variation needs at least two samples of some class."
            )
        between = (sums / counts[:, None]).T @ sums
        return 2.0 * (self.gram - between) / dof


# ------------------------------------------------------------ computation
def _block_statistics(X, view_groups, y, environments, exponent):
    if view_groups is not None:
        gram, scatter, dof = _within_group_moments(X, view_groups)
    else:
        gram, scatter, dof = _as64(X.T @ X), None, 0
    cell_sums, cell_counts = {}, {}
    if y is not None:
        for key, total, count in _cell_sums(X, y, environments):
            cell_sums[key] = total
            cell_counts[key] = count
    return InterventionStatistics(
        n_samples=X.shape[0],
        gram=gram,
        group_scatter=scatter,
        group_dof=dof,
        cell_sums=cell_sums,
        cell_counts=cell_counts,
        exponent=exponent,
    )


def _within_group_moments(X, view_groups):
    """Return ``(sum x x^T, within-group scatter W, dof)`` without forming pairs.

    Each group's rows are rotated by a Helmert matrix: one row is the scaled
    group sum ``s / sqrt(n_g)``, the other ``n_g - 1`` are orthonormal
    contrasts whose scatter is exactly the within-group scatter
    ``W_g = sum (x - mean)(x - mean)^T``. The rotation is orthogonal, so the
    same rows also give ``sum x x^T``: one pass of ``N`` rows through a
    symmetric rank-k update, as many as PCA's ``X^T X``, and no cancellation
    between large numbers (``X^T X - sum_g s_g s_g^T / n_g`` would lose the
    digits of ``W`` that ``X^T X`` and the group means share). ``W_g`` is
    ``(n_g - 1) / 2`` times the average pair scatter of the group.

    The rows are taken a tile at a time (``_tiles``), and the tiles are shared
    out to threads of our own, each with BLAS on one thread and sums of its
    own (``_run_tiles``), which are added at the end in a fixed order.
    """
    n, d = X.shape
    order = np.argsort(view_groups, kind="stable")
    sorted_groups = view_groups[order]
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.append(starts, n))
    dof = n - starts.size

    workers = _row_workers(X)
    tiles = _tiles(X, order, starts, sizes, _tile_rows(workers))
    parts = _run_tiles(X, tiles, workers)
    # Contrasts -> 2 W; group sums of size m -> sum s s^T, divided by m here (m = 1: rows
    # already divided by sqrt(n_g), or singletons, whose sum is the row).
    within = sum(part.twice_within.result() for part in parts)  # a new array, in worker order
    within *= 0.5  # exact
    gram = within.copy()
    for part in parts:
        for size, total in part.sums_by_size.items():
            gram += total.result() / size
    return gram, within, dof


def _row_workers(X):
    """Threads to share the tiles of ``X`` among: as many as BLAS would use, for a large enough ``X``."""
    return blas_threads() if X.size >= _PARALLEL_SIZE else 1


def _tile_rows(workers):
    """Rows per tile: ``_BLOCK_ROWS`` shared out to the workers, down to ``_MIN_TILE_ROWS``."""
    return max(_BLOCK_ROWS // workers, min(_BLOCK_ROWS, _MIN_TILE_ROWS))


def _tiles(X, order, starts, sizes, tile):
    """The tiles of the rows, in order: ``(function, arguments)``, ``function(X, moments, *arguments)``.

    Singletons are groups whose sum is the row; the stack_views layout is rotated
    by one product a tile (:func:`_stacked_tile`), any other by the Helmert
    recursion (:func:`_groups_tile`). Which sum a tile's group sums go to is
    decided here, in order, so that it does not depend on the workers.
    """
    tiles, keys = [], set()
    singles = order[starts[sizes == 1]]
    for lo in range(0, singles.size, tile):
        tiles.append((_singles_tile, (singles[lo : lo + tile],)))
        keys.add(1)
    n_views = _stacked_views(X, order, sizes)
    if n_views:
        m = X.shape[0] // n_views
        helmert = _helmert_matrix(n_views, X.dtype)
        groups = max(1, tile // n_views)
        tiles.extend((_stacked_tile, (helmert, g0, min(groups, m - g0))) for g0 in range(0, m, groups))
        return tiles
    multi = sizes > 1
    starts, sizes = starts[multi], sizes[multi]
    rows_before = np.concatenate([[0], np.cumsum(sizes)])
    max_groups = max(tile // 2, 1)
    g0 = 0
    while g0 < starts.size:
        g1 = int(np.searchsorted(rows_before, rows_before[g0] + tile, side="right")) - 1
        g1 = min(max(g1, g0 + 1), starts.size, g0 + max_groups)
        sz = sizes[g0:g1]
        size = int(sz[0])
        key = size if sz.min() == sz.max() and (size in keys or len(keys) < _MAX_SIZE_SUMS) else 1
        keys.add(key)
        tiles.append((_groups_tile, (order, starts[g0:g1], sz, key)))
        g0 = g1
    return tiles


def _run_tiles(X, tiles, workers):
    """Each worker's :class:`_Moments`, in worker order: tile ``i`` goes to worker ``i % workers``.

    With several workers, BLAS runs on one thread in each of our threads
    (``_threads.py``): no BLAS call waits for another thread, and the work
    between the products (the rotations, numpy's copy of a product's triangle,
    the float64 sums) runs in parallel too. The shares are fixed, so the sums,
    added in worker order, are the same from one run to the next.
    """
    d, dtype = X.shape[1], X.dtype
    if workers > 1 and len(tiles) > 1:
        workers = min(workers, len(tiles))
        with single_threaded_blas() as alone:
            if alone:
                errors = np.geterr()  # numpy's error state is per thread
                parts = [_Moments(d, dtype) for _ in range(workers)]

                def work(worker):
                    with np.errstate(**errors):
                        for function, arguments in tiles[worker::workers]:
                            function(X, parts[worker], *arguments)

                with ThreadPoolExecutor(workers) as pool:
                    for done in [pool.submit(work, worker) for worker in range(workers)]:
                        done.result()  # raises what a worker raised
                return parts
    moments = _Moments(d, dtype)
    for function, arguments in tiles:
        function(X, moments, *arguments)
    return [moments]


class _Moments:
    """One worker's sums (``2 W`` and the group sums' products by size) and its buffers."""

    def __init__(self, d, dtype):
        self.d = d
        self.dtype = dtype
        self.product = np.empty((d, d), dtype=dtype)  # every product of this worker lands here
        self.twice_within = _SymmetricSum(self.product)
        self.sums_by_size = {}
        self._buffers = {}

    def sums(self, size):
        """The sum of the products of the sums of groups of ``size`` rows."""
        if size not in self.sums_by_size:
            self.sums_by_size[size] = _SymmetricSum(self.product)
        return self.sums_by_size[size]

    def buffer(self, name, rows):
        """A ``(rows, d)`` buffer, reused from tile to tile: fresh arrays cost page faults."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._buffers[name] = np.empty((rows, self.d), dtype=self.dtype)
        return buffer[:rows]


def _singles_tile(X, moments, index):
    moments.sums(1).add(_rows(X, index, moments.buffer("singles", index.size)))


def _helmert_matrix(v, dtype):
    """Row 0 ones (the group sum), row ``k`` ``sqrt(2)`` times the ``k``-th orthonormal Helmert contrast."""
    helmert = np.zeros((v, v))
    helmert[0] = 1.0
    for k in range(1, v):
        helmert[k, :k] = 1.0
        helmert[k, k] = -k
        helmert[k] *= np.sqrt(2.0 / (k * (k + 1.0)))
    return helmert.astype(dtype)


def _stacked_tile(X, moments, helmert, g0, g):
    """``2 W`` and the group sums' products of groups ``g0 .. g0 + g`` of the stack_views layout.

    The Helmert rotation of the tile is one BLAS product: the ``(v, v)``
    matrix times the tile's ``v`` blocks of rows, each block read where it lies
    in ``X``. The sums (row 0: unscaled, divided by ``v`` in float64) and the
    contrasts (``sqrt(2)`` times orthonormal, ``x0 - x1`` for pairs: ``2 W``)
    land in one buffer, each contiguous.
    """
    v, d = helmert.shape[0], X.shape[1]
    blocks = X.reshape(v, X.shape[0] // v, d)
    rotated = moments.buffer("rotated", v * g).reshape(v, g * d)
    np.matmul(helmert, blocks[:, g0 : g0 + g].reshape(v, g * d), out=rotated)
    moments.sums(v).add(rotated[0].reshape(g, d))
    moments.twice_within.add(rotated[1:].reshape((v - 1) * g, d))


def _groups_tile(X, moments, order, st, sz, key):
    """``2 W`` and the group sums' products of the groups starting at rows ``order[st]``, sizes ``sz >= 2``.

    The Helmert recursion, member by member: the contrasts are scaled by
    ``sqrt(2)`` (those of pairs, ``x0 - x1``, are then not scaled at all: one
    pass fewer over the rows), hence ``2 W``. With ``key`` the groups' size
    (equal sizes) their sums stay unscaled and are divided once, in float64;
    with ``key = 1`` they are scaled by ``1 / sqrt(n_g)``.
    """
    dtype = X.dtype
    g = st.size
    running_sum, member = moments.buffer("running sum", g), moments.buffer("member", g)
    contrasts = moments.buffer("contrasts", int(sz.sum()) - g)
    # Members 0 and 1 (every group here has both): first contrast and running sum.
    x0 = _rows(X, order[st], running_sum)  # into running_sum when gathered: overwritten below
    x1 = _rows(X, order[st + 1], member)
    total = running_sum
    np.subtract(x0, x1, out=contrasts[:g])
    np.add(x0, x1, out=total)
    filled = g
    for k in range(2, int(sz.max())):
        scale = dtype.type(np.sqrt(2.0 / (k * (k + 1.0))))
        alive = np.flatnonzero(sz > k)
        out = contrasts[filled : filled + alive.size]
        if alive.size == g:  # every group has a k-th member: work in place
            xk = _rows(X, order[st + k], member)
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
    moments.twice_within.add(contrasts[:filled])
    if key == 1:
        total *= (1.0 / np.sqrt(sz)).astype(dtype)[:, None]  # s_g / sqrt(n_g)
    moments.sums(key).add(total)


def _stacked_views(X, order, sizes):
    """``V`` when ``X`` is ``V`` blocks of rows holding the same groups in the same order, else 0.

    That is the layout of :func:`~clip_invariance.views.stack_views` (row ``i``
    of every block is a view of content ``i``): the ``k``-th members of a run
    of groups are then consecutive rows, and one product rotates them all.
    """
    n = X.shape[0]
    v = int(sizes[0]) if sizes.size else 0
    if v < 2 or not X.flags.c_contiguous or not np.all(sizes == v):
        return 0
    members = order.reshape(n // v, v)  # row g: the rows of group g, in order
    offsets = members - members[:, :1]
    return v if np.array_equal(offsets, np.broadcast_to(np.arange(0, n, n // v), offsets.shape)) else 0


class _SymmetricSum:
    """``sum_b B^T B`` over blocks of rows ``B``: products in the blocks' precision, a float64 sum.

    numpy forms ``B^T B`` with one BLAS ``syrk`` (half the flops of a general
    product), accumulated over the block's rows in its precision, as PCA's
    ``X^T X`` is (float32 rows need no float64 copy). The blocks' products
    are added in float64, so the float32 round-off grows with the rows of one
    tile, not with ``N``. The product lands in ``product``, a buffer shared by
    the sums of one worker.
    """

    def __init__(self, product):
        self._total = np.zeros(product.shape)
        self._product = product

    def add(self, block):
        if block.shape[0]:
            block = np.ascontiguousarray(block)  # numpy hands contiguous operands to BLAS
            np.matmul(block.T, block, out=self._product)
            self._total += self._product

    def result(self):
        """The float64 sum."""
        return self._total


def _rows(X, index, out):
    """``X[index]``: a view when the rows are evenly spaced (stack_views and repeated layouts), else gathered.

    A view costs no copy: the arithmetic reads ``X`` where it lies. Without
    ``out``, a gather makes a new array.
    """
    first = index[0]
    if len(index) == 1:
        return X[first : first + 1]
    step = index[1] - first
    if step > 0 and index[-1] - first == step * (len(index) - 1) and np.all(np.diff(index) == step):
        return X[first : index[-1] + 1 : step]
    return np.take(X, index, axis=0, out=out)


def _cell_sums(X, y, environments):
    """Yield ``((label, environment), row sum, count)`` per class (and environment)."""
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
        environment = _python_scalar(e_values[cell % len(e_values)])
        yield (label, environment), total, int(count)


def _python_scalar(value):
    # Dictionary keys must compare equal across blocks: numpy scalars -> Python.
    return value.item() if isinstance(value, np.generic) else value


def _as64(a):
    return np.asarray(a, dtype=np.float64)


def _add_optional(a, b):
    if a is None or b is None:
        return b if a is None else a
    return a + b
