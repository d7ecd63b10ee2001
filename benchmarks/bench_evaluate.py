"""How long ``evaluate_store`` takes, against the same grid searched naively in the same run.

The reference is the evaluation as it was: every candidate of every grid fitted from scratch through
``GridSearchCV`` (``_search._SHARE_WORK = False``: a projector per candidate, probes carrying the
views at zero weight), one round at a time, with the BLAS threads as they are. Against it, in the same
process and on the same store:

- ``naive, one BLAS thread a round``: the same search, each round's BLAS on one thread (the default
  now: numpy's and scipy's BLAS pools spinning on the same cores slow these small fits down);
- ``shared``: the grid search sharing its work (one statistics pass per split for every (K, lam),
  probes on the rows they weigh), one round at a time, one BLAS thread;
- ``shared, n_jobs=N``: the same with rounds in parallel.

Every variant must give the same rows as the reference (checked; a difference is an error). The
store is the synthetic benchmark (:func:`~clip_invariance.datasets.make_invariant_embeddings`, four
environments, one augmented view per image) at the size asked for. Usage::

    python benchmarks/bench_evaluate.py                        # 2,000 images, D=512, probes, lodo-cv
    python benchmarks/bench_evaluate.py --n-samples 10000 --methods default --selection views-val
    python benchmarks/bench_evaluate.py --write                # also docs/tables/evaluate_speed.csv

Wall-clock times depend on the machine and its load: read the ratios, measured in one run.
"""

import argparse
import csv
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clip_invariance.evaluation._evaluate as evaluate_module  # noqa: E402
import clip_invariance.evaluation._search as search  # noqa: E402
from clip_invariance.datasets import make_invariant_embeddings, save_embeddings  # noqa: E402
from clip_invariance.evaluation import evaluate_store  # noqa: E402

PROBES = ["probe", "probe-views", "probe-icm", "probe-icm-views"]


def make_store(folder, n_samples, n_features, seed=0):
    data = make_invariant_embeddings(n_samples=n_samples, n_features=n_features, normalize=True,
                                     random_state=seed)
    store = os.path.join(folder, "store")
    save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings,
                    text_interventions=data.text_interventions, text_view_groups=data.text_view_groups,
                    text_intervention_styles=[f"style {i}" for i in range(len(data.text_view_groups))])
    return store


def timed(store, *, share, n_jobs, blas_threads=1, **kwargs):
    search._SHARE_WORK = share
    evaluate_module._ROUND_BLAS_THREADS = blas_threads
    try:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = evaluate_store(store, n_jobs=n_jobs, **kwargs)
        return rows, time.perf_counter() - start_wall, time.process_time() - start_cpu
    finally:
        search._SHARE_WORK = True
        evaluate_module._ROUND_BLAS_THREADS = 1


def main(args):
    methods = None if args.methods == "default" else (PROBES if args.methods == "probes"
                                                      else args.methods.split(","))
    kwargs = {"methods": methods, "selection": args.selection, "seeds": [0]}
    table = []
    with tempfile.TemporaryDirectory() as folder:
        store = make_store(folder, args.n_samples, args.n_features)
        print(f"store: {args.n_samples} images x D={args.n_features}, one view each; methods "
              f"{args.methods}; selection {args.selection}; {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        reference, wall, cpu = timed(store, share=False, n_jobs=None, blas_threads=None, **kwargs)
        print(f"  naive (GridSearchCV per candidate, BLAS threads as they are): {wall:7.1f} s wall, "
              f"{cpu:7.1f} s CPU", flush=True)
        table.append({"variant": "naive, BLAS threads as they are", "wall_s": wall, "ratio": 1.0})
        variants = [("naive, one BLAS thread a round", False, None), ("shared", True, None),
                    (f"shared, n_jobs={args.n_jobs}", True, args.n_jobs)]
        for name, share, n_jobs in variants:
            rows, seconds, cpu = timed(store, share=share, n_jobs=n_jobs, **kwargs)
            if not rows.equals(reference):
                raise SystemExit(f"{name}: the rows differ from the naive search's")
            ratio = wall / seconds
            print(f"  {name:34s} {seconds:7.1f} s wall, {cpu:7.1f} s CPU (parent): {ratio:.2f}x faster, "
                  "same rows", flush=True)
            table.append({"variant": name, "wall_s": seconds, "ratio": ratio})
    if args.write:
        path = ROOT / "docs" / "tables" / "evaluate_speed.csv"
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["n_samples", "n_features", "methods", "selection",
                                                      "variant", "wall_s", "speedup"])
            writer.writeheader()
            for row in table:
                writer.writerow({"n_samples": args.n_samples, "n_features": args.n_features,
                                 "methods": args.methods, "selection": args.selection,
                                 "variant": row["variant"], "wall_s": f"{row['wall_s']:.1f}",
                                 "speedup": f"{row['ratio']:.2f}"})
        print(f"wrote {path}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--methods", default="probes",
                        help="'probes' (the four probes), 'default' (every method), or a comma list")
    parser.add_argument("--selection", default="lodo-cv")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write docs/tables/evaluate_speed.csv")
    main(parser.parse_args())
