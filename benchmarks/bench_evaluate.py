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
    python benchmarks/bench_evaluate.py --preset issue --write # issue 21's benchmark, see below

``--preset issue`` is issue 21's benchmark: 10,000 images x D=512 with one view each, the default
methods (:data:`~clip_invariance.evaluation.DEFAULT_METHODS`) and the default rule (``lodo-cv``),
seed 0. "Today" is the evaluation as it was when the issue was filed: the naive search, BLAS threads
as they are, and the grids as they were then (:data:`GRIDS_AS_FILED`, passed explicitly). It takes
hours, so it is measured on the rounds of one held-out target (``--subset-target``, the first by
default: a quarter of the rounds; more than an hour on 2 shared cores: its wise round alone took 300 s,
and wise-icm and tip-adapter-icm search 240 and 300 candidates a split naively, each fitted from
scratch; ``--skip-naive`` leaves it out); on those same rounds the run times the shared search with the
same grids (the ratio from the code alone, the same rows checked) and with the default grids of now
(the ratio of code and grids together), and it times the whole evaluation with the default grids.
The whole naive time is reported only as an extrapolation (the measured target's rounds, method by
method, times the number of targets), and labelled so. Where the time goes: the seconds of every
round, summed per method, from the checkpoint's ``rounds.jsonl``. ``--write`` writes
``docs/tables/evaluate_default.csv`` (with the 1-minute load average at the start of each variant).

Wall-clock times depend on the machine and its load: read the ratios, measured in one run.
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clip_invariance.evaluation._evaluate as evaluate_module  # noqa: E402
import clip_invariance.evaluation._search as search  # noqa: E402
from clip_invariance.datasets import load_embeddings, make_invariant_embeddings, save_embeddings  # noqa: E402
from clip_invariance.evaluation import evaluate_store  # noqa: E402
from clip_invariance.evaluation._evaluate import COLUMNS  # noqa: E402
from clip_invariance.evaluation._plan import plan_evaluation  # noqa: E402

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


def grids_as_filed(n_features):
    """The default grids when issue 21 was filed (before the evidence of the selection table cut them)."""
    return {"n_components": sorted({max(1, n_features // d) for d in (16, 8, 4, 2)}),
            "lam": [1.0, 10.0, 100.0], "C": [0.1, 0.316, 1.0, 3.16], "temperature": [10.0, 30.0],
            "wise_alpha": [0.0, 0.25, 0.5, 0.75, 1.0], "tip_alpha": [0.1, 1.0, 10.0, 100.0, 1000.0],
            "tip_beta": [1.0, 3.5, 7.0, 14.0, 28.0]}


GRIDS_AS_FILED = grids_as_filed(512)


def run_rounds(store, *, share, n_jobs, blas_threads=1, grids=None, target=None, checkpoint=None):
    """``evaluate_store``'s rows for the default methods and rule, seed 0; with ``target``, its rounds only.

    Returns (rows, wall seconds, seconds per method summed over its rounds). The whole evaluation runs
    through ``evaluate_store`` (the per-round seconds read back from its checkpoint); the rounds of
    one target through the same plan and the same round function, which ``evaluate_store`` has no
    argument to select.
    """
    search._SHARE_WORK = share
    evaluate_module._ROUND_BLAS_THREADS = blas_threads
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            if target is None:
                rows = evaluate_store(store, seeds=[0], grids=grids, n_jobs=n_jobs, checkpoint=checkpoint)
                wall = time.perf_counter() - start
                per_method = {}
                with open(checkpoint) as file:
                    for line in file:
                        entry = json.loads(line)
                        if "round" in entry:
                            method = json.loads(entry["round"])[4]
                            per_method[method] = per_method.get(method, 0.0) + entry["seconds"]
                return rows, wall, per_method
            plan = plan_evaluation(load_embeddings(store), protocol="dg", methods=None, interventions=None,
                                   seeds=[0], selection=None, templates="single", include_target_name=False,
                                   grids=grids, holdout=0.2, front_door_params=None, progress=False)
            rounds = [(r, p, t, s, v) for r in plan.selections for p in plan.protocols for t in plan.targets
                      for s in plan.seeds for v in plan.variants if t == target]
            jobs = (delayed(evaluate_module._indexed_round)(plan, i, *r[:4], *r[4])
                    for i, r in enumerate(rounds))
            done = []
            for result in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
                done.append(result)  # each round as it ends: a long reference shows its progress
                print(f"      {rounds[result[0]][4][0]}: {result[2]:.1f} s", flush=True)
            done.sort(key=lambda result: result[0])
            wall = time.perf_counter() - start
        per_method = {}
        for i, _, seconds in done:
            method = rounds[i][4][0]
            per_method[method] = per_method.get(method, 0.0) + seconds
        rows = pd.DataFrame.from_records([row for _, records, _ in done for row in records], columns=COLUMNS)
        return rows, wall, per_method
    finally:
        search._SHARE_WORK = True
        evaluate_module._ROUND_BLAS_THREADS = 1


def accuracy_by_method(rows):
    return (100 * rows.groupby("method", sort=False)["accuracy"].mean()).round(1).to_dict()


def issue(args):
    """Issue 21's benchmark: the default methods and rule at 10,000 x 512 against the evaluation as filed."""
    n_jobs = args.n_jobs
    table = []
    with tempfile.TemporaryDirectory() as folder:
        store = make_store(folder, args.n_samples, args.n_features)
        targets = list(load_embeddings(store).environment_names or [])
        targets = targets or sorted({str(e) for e in load_embeddings(store).environments})
        target = args.subset_target if args.subset_target is not None else targets[0]
        print(f"store: {args.n_samples} images x D={args.n_features}, one view each; the default methods; "
              f"lodo-cv; seed 0; {os.cpu_count()} cores; subset: the rounds of target {target!r} "
              f"(1 of {len(targets)} targets)", flush=True)
        old = grids_as_filed(args.n_features)
        variants = [  # name, grids label, grids, share, blas threads, n_jobs, subset; the longest last
            ("shared", "default", None, True, 1, n_jobs, False),
            ("shared", "default", None, True, 1, n_jobs, True),
            ("shared", "as filed", old, True, 1, n_jobs, True),
            ("naive (as filed)", "as filed", old, False, None, None, True),
        ]
        if args.skip_naive:
            variants = variants[:-1]
        reference, results = {}, []  # grids -> the rows of the target's rounds; what each variant gave
        for name, grid_label, grids, share, blas, jobs, subset in variants:
            load = os.getloadavg()[0]
            checkpoint = None if subset else os.path.join(folder, f"rounds-{len(results)}.jsonl")
            print(f"  {name}, {grid_label} grids, n_jobs={jobs}, "
                  f"{'target ' + target if subset else 'every target'} (load {load:.1f}) ...", flush=True)
            rows, wall, per_method = run_rounds(store, share=share, n_jobs=jobs, blas_threads=blas,
                                                grids=grids, target=target if subset else None,
                                                checkpoint=checkpoint)
            mine = rows if subset else rows[rows["target"] == target].reset_index(drop=True)
            if grid_label in reference and not mine.equals(reference[grid_label]):
                raise SystemExit(f"{name}, {grid_label} grids: the rows of target {target} differ from those "
                                 "of the same grids' other variant")
            reference.setdefault(grid_label, mine)
            print(f"    {wall:.1f} s; seconds per method: " + ", ".join(
                f"{m} {t:.1f}" for m, t in sorted(per_method.items(), key=lambda kv: -kv[1])))
            print("    accuracy per method: " + str(accuracy_by_method(rows)), flush=True)
            results.append({"name": name, "grids": grid_label, "subset": subset, "rows": rows, "wall": wall,
                            "load": load, "n_jobs": jobs})
        naive = next((r for r in results if r["name"].startswith("naive")), None)
        for r in results:
            if r["name"].startswith("naive"):
                same, ratio = "reference", "1.00"
            elif r["grids"] == "as filed":
                same = "yes" if naive is not None else ""
                ratio = f"{naive['wall'] / r['wall']:.2f}" if naive is not None else ""
            else:
                same = "other grids" + ("" if r["subset"] else f" (target {target}'s rows = the subset's)")
                ratio = f"{naive['wall'] / r['wall']:.2f}" if naive is not None and r["subset"] else ""
            table.append({"variant": r["name"], "grids": r["grids"],
                          "methods": f"default ({r['rows']['method'].nunique()})",
                          "rounds measured": (f"target {target} ({len(r['rows'])} rows)" if r["subset"]
                                              else f"all ({len(r['rows'])} rows)"),
                          "seconds": f"{r['wall']:.1f}", "ratio": ratio, "same_rows": same,
                          "load_1min": f"{r['load']:.1f}", "n_jobs": r["n_jobs"] or 1})
        whole = next((r for r in results if not r["subset"]), None)
        if naive is not None and whole is not None:
            estimate = naive["wall"] * len(targets)
            table[results.index(whole)]["ratio"] = f"{estimate / whole['wall']:.2f} (vs the extrapolation)"
            table.append({"variant": "naive (as filed), EXTRAPOLATED", "grids": "as filed",
                          "methods": table[0]["methods"],
                          "rounds measured": f"none: target {target}'s seconds x {len(targets)} targets",
                          "seconds": f"{estimate:.0f}", "ratio": "", "same_rows": "", "load_1min": "",
                          "n_jobs": 1})
        print()
        for row in table:
            print("  " + ", ".join(f"{k}: {v}" for k, v in row.items()))
    if args.write:
        path = ROOT / "docs" / "tables" / "evaluate_default.csv"
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["variant", "grids", "methods", "rounds measured",
                                                      "seconds", "ratio", "same_rows", "load_1min", "n_jobs"])
            writer.writeheader()
            writer.writerows(table)
        print(f"wrote {path}")
    return table


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
    parser.add_argument("--preset", choices=["probes", "issue"], default="probes",
                        help="'probes': the variants below on the probes (default); 'issue': issue 21's "
                             "benchmark, 10,000 x 512, the default methods, against the evaluation as filed")
    parser.add_argument("--n-samples", type=int, default=None, help="2,000 (probes) or 10,000 (issue)")
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--methods", default="probes",
                        help="'probes' (the four probes), 'default' (every method), or a comma list")
    parser.add_argument("--selection", default="lodo-cv")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--subset-target", default=None,
                        help="issue: the target whose rounds the naive search is timed on (default: first)")
    parser.add_argument("--skip-naive", action="store_true", help="issue: the shared variants only")
    parser.add_argument("--write", action="store_true",
                        help="write docs/tables/evaluate_speed.csv (probes) or evaluate_default.csv (issue)")
    args = parser.parse_args()
    if args.n_samples is None:
        args.n_samples = 10000 if args.preset == "issue" else 2000
    issue(args) if args.preset == "issue" else main(args)
