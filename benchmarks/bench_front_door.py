"""FrontDoorEnsembleClassifier speed against same-run references.

fit      seconds per training epoch (Adam, full-rank adapters, batch 256), as a
         multiple of one training-free predict over the same data
predict  throughput (samples/s) of predict_proba, against
         - bare: numpy cosine + argmax with one averaged prompt per class
           (the plain zero-shot classifier), and
         - same-matmuls: the very cosines of every (template, view) opinion,
           summed, + argmax -- what remains is the cost of evidence and fusion.

pickle   bytes of a pickled classifier with ``--pickle-templates`` templates at ``--dim``,
         training-free, trained full-rank (no span) and trained at rank 8 (one epoch on 200
         rows): the adapters are stored at their rank, in X's precision.

Timings are best of ``--repeat`` (predict, and the references, interleaved) and the mean of
``--epochs`` epochs (fit), on whatever CPU threads torch and BLAS get.

Usage: python benchmarks/bench_front_door.py [--n 10000] [--dim 512] [--templates 4]
       [--classes 100] [--views 1 4] [--epochs 2] [--repeat 5] [--pickle-templates 80]
       [--write-table]   # docs/tables/front_door_speed.csv
"""

import argparse
import csv
import pickle
import time
from pathlib import Path

import numpy as np

from clip_invariance import FrontDoorEnsembleClassifier
from clip_invariance._utils import average_prompt_ensemble, l2_normalize

TABLE = Path(__file__).resolve().parents[1] / "docs" / "tables" / "front_door_speed.csv"


def best_of(fns, repeat):
    """Best time of each function, the functions interleaved (the same load for all)."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [min(record) for record in times]


def pickled_sizes(n_templates, dim, n_classes=10):
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((n_templates, n_classes, dim), dtype=np.float32)
    X = rng.standard_normal((200, dim), dtype=np.float32)
    y = rng.integers(n_classes, size=200)
    settings = {"training-free": {"max_iter": 0},
                "trained, full rank": {"max_iter": 1, "prompt_span": False},
                "trained, rank=8": {"max_iter": 1, "rank": 8}}
    print(f"\npickled classifier, {n_templates} templates, D={dim}, C={n_classes}, float32 X "
          f"(before: adapters_ always {n_templates * dim * dim * 8 / 2**20:.0f} MiB of float64)")
    for name, params in settings.items():
        clf = FrontDoorEnsembleClassifier(templates, pairing="all", random_state=0, **params).fit(X, y)
        print(f"  {name:<20} {len(pickle.dumps(clf)) / 2**20:8.2f} MiB  ({clf.adapters_})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pickle-templates", type=int, default=80, help="0 skips the pickle sizes")
    parser.add_argument("--write-table", action="store_true", help=f"write {TABLE.name}")
    args = parser.parse_args()
    import torch  # noqa: F401  (imported now so that its import time is not counted as training)

    rng = np.random.default_rng(0)
    n, d, m, c = args.n, args.dim, args.templates, args.classes
    templates = rng.standard_normal((m, c, d), dtype=np.float32)
    y = rng.integers(c, size=n)

    print(f"n={n} D={d} M={m} C={c}, float32 inputs, CPU")
    header = ["views", "opinions", "epoch (s)", "epoch / predict", "predict (samples/s)",
              "bare (samples/s)", "ratio to bare", "same matmuls (samples/s)", "ratio to same matmuls"]
    table = [header]
    for v in args.views:
        X = rng.standard_normal((n, v * d), dtype=np.float32)
        start = time.perf_counter()
        free = FrontDoorEnsembleClassifier(templates, n_views=v, max_iter=0).fit(X, y)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        FrontDoorEnsembleClassifier(
            templates, n_views=v, max_iter=args.epochs, tol=None, random_state=0
        ).fit(X, y)
        epoch_s = (time.perf_counter() - start - setup_s) / args.epochs

        prompts = average_prompt_ensemble(templates)
        views = [l2_normalize(X[:, i * d : (i + 1) * d]) for i in range(v)]
        emb = free.class_embeddings_.astype(np.float32)

        def bare(X=X, prompts=prompts):
            return np.argmax(l2_normalize(X[:, :d]) @ prompts.T, axis=1)

        def same_matmuls(views=views, emb=emb, pairs=free.pairs_):
            total = sum(views[j] @ emb[i].T for i, j in pairs)
            return np.argmax(total, axis=1)

        predict_s, bare_s, same_s = best_of(
            [lambda free=free, X=X: free.predict_proba(X), bare, same_matmuls], args.repeat
        )
        table.append([str(v), str(len(free.pairs_)), f"{epoch_s:.2f}", f"{epoch_s / predict_s:.1f}",
                      f"{n / predict_s:.0f}", f"{n / bare_s:.0f}", f"{bare_s / predict_s:.3f}",
                      f"{n / same_s:.0f}", f"{same_s / predict_s:.3f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    print("ratio = predict_proba throughput / reference throughput (1.0 = as fast)")
    if args.write_table:
        TABLE.parent.mkdir(exist_ok=True)
        with TABLE.open("w", newline="") as f:
            csv.writer(f).writerows(table)
        print(f"written: {TABLE}")
    if args.pickle_templates:
        pickled_sizes(args.pickle_templates, d)


if __name__ == "__main__":
    main()
