"""InvariantProjector speed and memory against same-run references.

fit       vs sklearn PCA(svd_solver="covariance_eigh") on the same float32 data
transform vs a bare matrix product X @ W
memory    peak bytes allocated during fit beyond X, vs the D x D statistics

Targets: fit within 1.5x of that PCA, transform within 1.2x of the matrix
product, fit memory O(D^2) (independent of N).

Usage: python benchmarks/bench_projector.py [--sizes 1e4 1e5 1e6] [--dims 512 768]
"""

import argparse
import gc
import time
import tracemalloc

import numpy as np
from sklearn.decomposition import PCA

from clip_invariance import InvariantProjector


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_memory(fn):
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    parser.add_argument("--k", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'N':>9} {'D':>4} | {'fit s':>7} {'PCA s':>7} {'ratio':>6} | "
          f"{'trans s':>7} {'X@W s':>7} {'ratio':>6} | {'fit MiB':>8} {'X MiB':>7} {'D^2 MiB':>7}")
    for n in (int(s) for s in args.sizes):
        for d in args.dims:
            # Pairs: row i and row i + n/2 are views of one content (the usual layout).
            X = rng.standard_normal((n, d), dtype=np.float32)
            view_groups = np.tile(np.arange(n // 2), 2)
            repeat = 3 if n <= 100_000 else 2  # fit and PCA at 1e6 take seconds each
            proj = InvariantProjector(args.k)
            fit_s = best_of(lambda: proj.fit(X, view_groups=view_groups), repeat)
            pca_s = best_of(
                lambda: PCA(args.k, svd_solver="covariance_eigh", copy=True).fit(X), repeat
            )
            W = np.ascontiguousarray(proj.components_.T)
            transform_s = best_of(lambda: proj.transform(X), 3)
            matmul_s = best_of(lambda: X @ W, 3)
            fit_mem = peak_memory(lambda: InvariantProjector(args.k).fit(X, view_groups=view_groups))
            mib = 2.0**20
            print(
                f"{n:>9} {d:>4} | {fit_s:7.3f} {pca_s:7.3f} {fit_s / pca_s:6.2f} | "
                f"{transform_s:7.4f} {matmul_s:7.4f} {transform_s / matmul_s:6.2f} | "
                f"{fit_mem / mib:8.1f} {X.nbytes / mib:7.1f} {d * d * 8 / mib:7.1f}",
                flush=True,
            )
            X = view_groups = None  # free before the next size is drawn


if __name__ == "__main__":
    main()
