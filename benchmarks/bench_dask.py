"""Fit InvariantProjector on a dask array larger than a worker's memory: rows/s and memory.

The data is generated lazily, chunk by chunk, with a seeded generator per chunk
(pairs of views in adjacent rows, so every chunk holds complete view groups):
nothing of size N exists anywhere at once. For 1 and 2 worker processes of a
``LocalCluster`` (one thread each), it times ``InvariantProjector().fit`` and a
pass that only generates the chunks, and reads every worker's peak resident
memory (``ru_maxrss``) and the client's growth. In the same run, the
in-memory reference: ``partial_fit`` of one chunk already in memory, and
generating that chunk, with one BLAS thread like a worker; their combined rate
is what one worker can reach.

    python benchmarks/bench_dask.py                       # 2e6 x 512 float32 = 4.1 GB
    python benchmarks/bench_dask.py --rows 200000         # a quick look
    python benchmarks/bench_dask.py --write-table         # docs/tables/scale_dask.csv

The memory factor is (worker peak - idle worker) / bytes of one chunk: what a
worker needs per chunk it works on, beyond the Python process itself.
"""

import argparse
import csv
import resource
import time
from pathlib import Path

import numpy as np

TABLE = Path(__file__).resolve().parents[1] / "docs" / "tables" / "scale_dask.csv"


def make_chunk(block_id=None, *, rows, features, precision):
    """One chunk: ``rows // 2`` contents seen twice, in adjacent rows (a pair shares a group).

    Uniform numbers, made in place: generating normals cost more than the fit
    itself, and temporaries would be counted in the worker's peak memory.
    """
    X = np.random.default_rng([0, block_id[0]]).random((rows, features), dtype=precision)
    X[1::2] *= 0.3  # the second view: the content plus a small change
    X[1::2] += X[::2]
    return X


def lazy_data(n_rows, features, chunk_rows, dtype):
    import dask.array as da

    chunks = (chunk_rows,) * (n_rows // chunk_rows)
    X = da.map_blocks(make_chunk, rows=chunk_rows, features=features, precision=dtype, dtype=dtype,
                      chunks=(chunks, (features,)), meta=np.empty((0, 0), dtype))
    return X, da.arange(X.shape[0], chunks=chunk_rows) // 2


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib():
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def in_memory(features, chunk_rows, dtype, repeats):
    """rows/s of partial_fit on one in-memory chunk, and of generating it; one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from clip_invariance import InvariantProjector

    groups = np.arange(chunk_rows) // 2
    with threadpool_limits(1):
        generate, fit = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            block = make_chunk((0, 0), rows=chunk_rows, features=features, precision=dtype)
            generate.append(time.perf_counter() - start)
            start = time.perf_counter()
            InvariantProjector(16).partial_fit(block, view_groups=groups)
            fit.append(time.perf_counter() - start)
    return chunk_rows / min(fit), chunk_rows / min(generate)


def on_cluster(n_workers, X, view_groups, memory_limit):
    """(fit seconds, generate-only seconds, worker idle MiB, worker peak MiB, client growth MiB)."""
    from dask.distributed import Client, LocalCluster

    from clip_invariance import InvariantProjector

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("clip_invariance._utils"))  # imports are not fit time
        idle = max(client.run(rss_mib).values())
        client_before = rss_mib()
        start = time.perf_counter()
        projector = InvariantProjector(16).fit(X, view_groups=view_groups)
        fit = time.perf_counter() - start
        client_growth = rss_mib() - client_before
        peak = max(client.run(peak_mib).values())
        start = time.perf_counter()
        X.sum().compute()
        generate = time.perf_counter() - start
    assert projector.n_samples_seen_ == X.shape[0]
    return fit, generate, idle, peak, client_growth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=2e6)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--memory-limit", default="1.5GB", help="per worker")
    parser.add_argument("--repeats", type=int, default=3, help="of the in-memory reference (best kept)")
    parser.add_argument("--write-table", action="store_true", help=f"write {TABLE.name}")
    args = parser.parse_args()

    dtype = np.dtype(args.dtype)
    X, view_groups = lazy_data(int(args.rows), args.features, args.chunk_rows, dtype)
    n, chunk_mib = X.shape[0], args.chunk_rows * args.features * dtype.itemsize / 2**20
    print(f"data: {n} x {args.features} {dtype.name} = {X.nbytes / 1e9:.2f} GB in {X.numblocks[0]} chunks "
          f"of {chunk_mib:.0f} MiB; workers limited to {args.memory_limit} each")
    fit_rate, generate_rate = in_memory(args.features, args.chunk_rows, dtype, args.repeats)
    header = ["run", "workers", "rows", "GB", "fit s", "fit rows/s", "generate rows/s",
              "worker idle MiB", "worker peak MiB", "peak / chunk", "client growth MiB"]
    rows = [["in memory, one chunk, 1 BLAS thread", 1, args.chunk_rows,
             f"{chunk_mib * 2**20 / 1e9:.2f}", f"{args.chunk_rows / fit_rate:.2f}", f"{fit_rate:.0f}",
             f"{generate_rate:.0f}", "", "", "", ""]]
    both = 1 / (1 / fit_rate + 1 / generate_rate)  # what a worker does per chunk: generate, then fit
    rows.append(["in memory, one chunk, generate + partial_fit", 1, args.chunk_rows, rows[0][3],
                 f"{args.chunk_rows / both:.2f}", f"{both:.0f}", "", "", "", "", ""])
    for n_workers in (int(w) for w in args.workers.split(",")):
        fit, generate, idle, peak, growth = on_cluster(n_workers, X, view_groups, args.memory_limit)
        rows.append([f"dask LocalCluster, {n_workers} process(es)", n_workers, n, f"{X.nbytes / 1e9:.2f}",
                     f"{fit:.1f}", f"{n / fit:.0f}", f"{n / generate:.0f}", f"{idle:.0f}", f"{peak:.0f}",
                     f"{(peak - idle) / chunk_mib:.1f}", f"{growth:.0f}"])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(value).rjust(width) for value, width in zip(row, widths)))
    if args.write_table:
        TABLE.parent.mkdir(exist_ok=True)
        with open(TABLE, "w", newline="") as file:
            csv.writer(file).writerows([header, *rows])
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
