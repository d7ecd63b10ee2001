"""InvariantProjector speed and memory against same-run references.

fit       vs sklearn PCA(svd_solver="covariance_eigh") on the same float32 data
transform vs a bare matrix product X @ W
memory    peak bytes allocated during fit beyond X, vs the D x D statistics
pickle    size of the pickled fitted projector (the statistics partial_fit needs)

Targets: fit within 1.5x of that PCA, transform within 1.2x of the matrix
product, fit memory O(D^2) (independent of N).

--solvers times the eigen-solvers on real statistics, each right after the
statistics of a batch (as in fit): the whole spectrum (LAPACK syevd / sygvd,
what n_components=None needs) against the top K alone (syevr / sygvx).

Usage: python benchmarks/bench_projector.py [--sizes 1e4 1e5 1e6] [--dims 512 768] [--solvers]
"""

import argparse
import gc
import pickle
import time
import tracemalloc

import numpy as np
from scipy import linalg
from sklearn.decomposition import PCA

from clip_invariance import InvariantProjector
from clip_invariance.statistics import InterventionStatistics


def best_of(repeat, fn, *args, **kwargs):
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def peak_memory(fn, *args, **kwargs):
    gc.collect()
    tracemalloc.start()
    fn(*args, **kwargs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def solvers(dims, k, repeat=11):
    """Whole spectrum vs top k, in both precisions, each solve right after a batch's statistics."""
    rng = np.random.default_rng(0)
    print(f"{'D':>4} {'dtype':>8} | {'ratio: all':>10} {'top k':>7} | "
          f"{'difference: all':>15} {'top k':>7}  (ms)")
    for d in dims:
        X = rng.standard_normal((20000, d), dtype=np.float32)
        view_groups = np.tile(np.arange(10000), 2)
        stats = InterventionStatistics.from_block(X, view_groups=view_groups)
        for dtype in (np.float32, np.float64):
            z = (stats.gram / (np.trace(stats.gram) / d)).astype(dtype)
            s = stats.group_nuisance()
            s = (s / (np.trace(s) / d)).astype(dtype)
            b, m, top = np.eye(d, dtype=dtype) + 10 * s, z - 10 * s, [d - k, d - 1]
            calls = {
                "ratio all": ((z, b), {"driver": "gvd"}),
                "ratio top": ((z, b), {"subset_by_index": top}),
                "difference all": ((m,), {"driver": "evd"}),
                "difference top": ((m,), {"subset_by_index": top}),
            }
            times = {name: [] for name in calls}
            for _ in range(repeat):  # interleaved, so that load on the machine hits all alike
                for name, (args, kwargs) in calls.items():
                    InterventionStatistics.from_block(X[:8000], view_groups=view_groups[:8000] % 4000)
                    times[name].append(best_of(1, linalg.eigh, *args, **kwargs))
            ms = {name: 1e3 * min(t) for name, t in times.items()}
            print(f"{d:>4} {np.dtype(dtype).name:>8} | {ms['ratio all']:10.1f} {ms['ratio top']:7.1f} | "
                  f"{ms['difference all']:15.1f} {ms['difference top']:7.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--solvers", action="store_true", help="time the eigen-solvers instead")
    args = parser.parse_args()
    if args.solvers:
        return solvers(args.dims, args.k)
    rng = np.random.default_rng(0)
    print(f"{'N':>9} {'D':>4} | {'fit s':>7} {'PCA s':>7} {'ratio':>6} | "
          f"{'trans s':>7} {'X@W s':>7} {'ratio':>6} | {'fit MiB':>8} {'X MiB':>7} {'D^2 MiB':>7} "
          f"{'pickle MiB':>10}")
    for n in (int(s) for s in args.sizes):
        for d in args.dims:
            # Pairs: row i and row i + n/2 are views of one content (the usual layout).
            X = rng.standard_normal((n, d), dtype=np.float32)
            view_groups = np.tile(np.arange(n // 2), 2)
            repeat = 3 if n <= 100_000 else 2  # fit and PCA at 1e6 take seconds each
            proj = InvariantProjector(args.k)
            fit_s = best_of(repeat, proj.fit, X, view_groups=view_groups)
            pca_s = best_of(repeat, PCA(args.k, svd_solver="covariance_eigh", copy=True).fit, X)
            W = np.ascontiguousarray(proj.components_.T)
            transform_s = best_of(3, proj.transform, X)
            matmul_s = best_of(3, np.matmul, X, W)
            fit_mem = peak_memory(InvariantProjector(args.k).fit, X, view_groups=view_groups)
            mib = 2.0**20
            print(
                f"{n:>9} {d:>4} | {fit_s:7.3f} {pca_s:7.3f} {fit_s / pca_s:6.2f} | "
                f"{transform_s:7.4f} {matmul_s:7.4f} {transform_s / matmul_s:6.2f} | "
                f"{fit_mem / mib:8.1f} {X.nbytes / mib:7.1f} {d * d * 8 / mib:7.1f} "
                f"{len(pickle.dumps(proj)) / mib:10.2f}",
                flush=True,
            )
            X = view_groups = None  # free before the next size is drawn


if __name__ == "__main__":
    main()
