"""FrontDoorEnsembleClassifier speed against same-run references.

fit      seconds per training epoch (Adam, full-rank adapters, batch 256), as a
         multiple of one training-free predict over the same data
predict  throughput (samples/s) of predict_proba, against
         - bare: numpy cosine + argmax with one averaged prompt per class
           (the plain zero-shot classifier), and
         - same-matmuls: the very cosines of every (template, view) opinion,
           summed, + argmax -- what remains is the cost of evidence and fusion.

Timings are best of 3 (predict) and the mean of ``--epochs`` epochs (fit), on
whatever CPU threads torch and BLAS get.

Usage: python benchmarks/bench_front_door.py [--n 10000] [--dim 512] [--templates 4]
       [--classes 100] [--views 1 4] [--epochs 2]
"""

import argparse
import time

import numpy as np

from clip_invariance import FrontDoorEnsembleClassifier
from clip_invariance.similarity import average_prompt_ensemble, l2_normalize


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    import torch  # noqa: F401  (imported now so that its import time is not counted as training)

    rng = np.random.default_rng(0)
    n, d, m, c = args.n, args.dim, args.templates, args.classes
    templates = rng.standard_normal((m, c, d), dtype=np.float32)
    y = rng.integers(c, size=n)

    print(f"n={n} D={d} M={m} C={c}, float32 inputs, CPU")
    print(f"{'V':>2} {'opinions':>8} | {'epoch s':>8} {'x predict':>9} | "
          f"{'predict/s':>10} {'bare/s':>10} {'ratio':>6} {'same-mm/s':>10} {'ratio':>6}")
    for v in args.views:
        X = rng.standard_normal((n, v * d), dtype=np.float32)
        free = FrontDoorEnsembleClassifier(templates, n_views=v, max_iter=0).fit(X, y)
        predict_s = best_of(lambda free=free, X=X: free.predict_proba(X))

        start = time.perf_counter()
        FrontDoorEnsembleClassifier(templates, n_views=v, max_iter=0).fit(X, y)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        FrontDoorEnsembleClassifier(
            templates, n_views=v, max_iter=args.epochs, tol=None, random_state=0
        ).fit(X, y)
        epoch_s = (time.perf_counter() - start - setup_s) / args.epochs

        prompts = average_prompt_ensemble(templates)
        bare_s = best_of(
            lambda X=X, prompts=prompts: np.argmax(l2_normalize(X[:, :d]) @ prompts.T, axis=1)
        )

        views = [l2_normalize(X[:, i * d : (i + 1) * d]) for i in range(v)]
        emb = free.class_embeddings_.astype(np.float32)

        def same_matmuls(views=views, emb=emb, pairs=free.pairs_):
            total = sum(views[j] @ emb[i].T for i, j in pairs)
            return np.argmax(total, axis=1)

        same_s = best_of(same_matmuls)
        print(f"{v:>2} {len(free.pairs_):>8} | {epoch_s:>8.2f} {epoch_s / predict_s:>9.1f} | "
              f"{n / predict_s:>10.0f} {n / bare_s:>10.0f} {bare_s / predict_s:>6.3f} "
              f"{n / same_s:>10.0f} {same_s / predict_s:>6.3f}")
    print("ratio = predict throughput / reference throughput (1.0 = as fast)")


if __name__ == "__main__":
    main()
