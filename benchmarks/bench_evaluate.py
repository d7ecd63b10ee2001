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
as they are, and the grids as they were then (:func:`grids_as_filed`, passed explicitly). It takes
hours (wise-icm and tip-adapter-icm search 240 and 300 candidates a split naively, each fitted from
scratch), so it runs on the rounds of one held-out target (``--subset-target``, the first by
default), one at a time (n_jobs=1), the cheap rounds first (:data:`NAIVE_ORDER`), for
``--naive-budget`` seconds: no round starts after the budget, and a round still running
``--naive-grace`` seconds after it is stopped and not counted (the rounds finished, the one stopped
and those not started are recorded). Then, on the same target, one round at a time: the shared
search with the grids as filed (the rows of the rounds naive finished must be the same: a difference
is an error) and with the default grids. The ratios compare like with like: naive seconds over
shared seconds on exactly the rounds naive finished, one round at a time each ("code alone": the
grids as filed; "code and grids": the default grids). Each of these runs in a fresh process, every
round through ``evaluate_store``'s round function and appended as it ends, with its rows and
seconds, to a checkpoint (``rounds-<variant>.jsonl``, kept in ``--rounds-dir`` if given). Last, the
whole evaluation (every target) with the default grids through ``evaluate_store``, ``--n-jobs``
rounds at a time: its wall-clock seconds (what a user waits for), its seconds per method summed from
its checkpoint, and target 0's rows checked against the n_jobs=1 run's. Nothing is extrapolated.
``--write`` writes ``evaluate_default.csv`` (one row per variant, the table rewritten as each variant
ends, so an interrupted run leaves the rows it measured; the 1-minute load average at the start and
end of each) and ``evaluate_default_methods.csv`` (per method: the target's seconds in each variant,
the ratios, the whole run's summed seconds) into ``--output-dir`` (``docs/tables`` by default). A
quick check on a tiny store::

    python benchmarks/bench_evaluate.py --preset issue --n-samples 400 --n-features 32 \
        --naive-budget 20 --write --output-dir /tmp/bench

Wall-clock times depend on the machine and its load: read the ratios, measured in one run.
"""

import argparse
import csv
import datetime
import json
import multiprocessing
import os
import queue as queue_module
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clip_invariance.evaluation._evaluate as evaluate_module  # noqa: E402
import clip_invariance.evaluation._search as search  # noqa: E402
from clip_invariance.datasets import load_embeddings, make_invariant_embeddings, save_embeddings  # noqa: E402
from clip_invariance.evaluation import evaluate_store  # noqa: E402
from clip_invariance.evaluation._checkpoint import append_round, open_checkpoint  # noqa: E402
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


# The naive reference's order on the target's rounds: the cheap rounds first, so that a budget spent stops it
# before the long ones. Candidates a lodo-cv split, grids as filed: zero-shot and prototype none, probe and
# probe-views 4, front-door 2, zero-shot-icm 12, probe-icm and probe-icm-views 48, front-door-icm 24,
# tip-adapter 25, wise 20 (300 s naively at 10,000 x 512), wise-icm 240, tip-adapter-icm 300.
NAIVE_ORDER = ("zero-shot", "prototype", "zero-shot-icm", "probe", "probe-views", "front-door", "probe-icm",
               "probe-icm-views", "front-door-icm", "tip-adapter", "wise", "wise-icm", "tip-adapter-icm")

TABLE_COLUMNS = ["variant", "grids", "methods", "n_jobs", "rounds", "seconds", "seconds_are",
                 "seconds_on_naive_rounds", "ratio_same_rounds", "same_rows", "load_1min_start",
                 "load_1min_end", "date"]
METHOD_COLUMNS = ["method", "target", "naive_s", "naive_round", "shared_as_filed_s", "shared_default_s",
                  "ratio_code_alone", "ratio_code_and_grids", "whole_run_summed_s"]


def target_plan(store, grids, target, methods=None):
    """The plan of the methods (default: the default ones) and the default rule, seed 0, and the rounds of
    one target in the plan's order."""
    bunch = load_embeddings(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_evaluation(bunch, protocol="dg", methods=methods, interventions=None, seeds=[0],
                               selection=None, templates="single", include_target_name=False, grids=grids,
                               holdout=0.2, front_door_params=None, progress=False)
    rounds = [(r, p, t, s, v) for r in plan.selections for p in plan.protocols for t in plan.targets
              for s in plan.seeds for v in plan.variants if str(t) == str(target)]
    return bunch, plan, rounds


def _target_rounds_child(store, grids, target, methods, share, blas_threads, order, budget, checkpoint,
                         queue):
    """In a child process: the target's rounds one at a time in ``order``, none started after ``budget`` s.

    Every round goes through ``evaluate_store``'s round function and is appended to the checkpoint (its
    rows and seconds) as it ends; the parent hears of each start and end through ``queue``.
    """
    try:
        search._SHARE_WORK = share
        evaluate_module._ROUND_BLAS_THREADS = blas_threads
        warnings.simplefilter("ignore")
        bunch, plan, rounds = target_plan(store, grids, target, methods)
        rank = {method: i for i, method in enumerate(order)}
        rounds.sort(key=lambda r: rank.get(r[4][0], len(rank)))  # stable: the plan's order among equals
        open_checkpoint(checkpoint, evaluate_module._fingerprint(bunch, plan))
        queue.put(("rounds", [evaluate_module._round_key(r) for r in rounds]))
        start = time.perf_counter()
        for i, r in enumerate(rounds):
            elapsed = time.perf_counter() - start
            if budget is not None and elapsed >= budget:
                queue.put(("budget", elapsed))
                return
            queue.put(("start", i, elapsed))
            _, records, seconds = evaluate_module._indexed_round(plan, i, *r[:4], *r[4])
            append_round(checkpoint, evaluate_module._round_key(r), records, seconds=seconds)
            queue.put(("end", i, seconds))
        queue.put(("done", time.perf_counter() - start))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def read_rounds(checkpoint):
    """A checkpoint's rounds: key -> (rows, seconds), in the order they ended (a line cut short by a
    stopped child is not a round)."""
    done = {}
    with open(checkpoint) as file:
        for line in file:
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if "round" in entry:
                done[entry["round"]] = (entry["rows"], entry.get("seconds"))
    return done


def round_label(key):
    _, _, _, _, method, source = json.loads(key)
    return method if source in (None, "both") else f"{method} ({source})"


def run_target(store, *, grids, share, blas_threads, target, checkpoint, methods=None, order=NAIVE_ORDER,
               budget=None, grace=0.0):
    """The rounds of ``target`` one at a time (n_jobs=1), each timed and kept in ``checkpoint``.

    They run in a fresh process: with ``budget``, no round starts after ``budget`` seconds and a round still
    running ``grace`` seconds after it is stopped (not counted). Returns a dict: ``keys`` (the rounds in the
    order run), ``done`` (key -> (rows, seconds), the finished rounds), ``in_flight`` ((key, seconds run) of
    the round stopped, or None), ``not_started`` (keys), ``stopped`` (True if the budget stopped the run).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    arguments = (store, grids, target, methods, share, blas_threads, order, budget, checkpoint, queue)
    child = context.Process(target=_target_rounds_child, args=arguments, daemon=True)
    child.start()
    keys, begun, started, deadline, in_flight, stopped = None, -1, {}, None, None, False
    while True:
        try:
            message = queue.get(timeout=0.5)
        except queue_module.Empty:
            now = time.perf_counter()
            if deadline is not None and now > deadline and child.is_alive():
                child.terminate()
                child.join()
                in_flight = (keys[begun], now - started[begun]) if begun in started else None
                stopped = True
                break
            if not child.is_alive():
                try:
                    message = queue.get(timeout=2)
                except queue_module.Empty:
                    raise SystemExit(f"the rounds of target {target} ended without a word "
                                     f"(exit code {child.exitcode})") from None
            else:
                continue
        kind = message[0]
        if kind == "rounds":
            keys = message[1]
            if budget is not None:
                deadline = time.perf_counter() + budget + grace
        elif kind == "start":
            begun = message[1]
            started[begun] = time.perf_counter()
        elif kind == "end":
            print(f"      {round_label(keys[message[1]])}: {message[2]:.1f} s", flush=True)
        elif kind == "error":
            raise SystemExit(f"the rounds of target {target} failed:\n{message[1]}")
        else:  # "done", or "budget": no round starts after it
            stopped = kind == "budget"
            break
    child.join()
    done = read_rounds(checkpoint)
    if in_flight is not None and in_flight[0] in done:  # it ended as it was stopped: finished
        in_flight = None
    not_started = [k for k in keys if k not in done and (in_flight is None or k != in_flight[0])]
    return {"keys": keys, "done": done, "in_flight": in_flight, "not_started": not_started,
            "stopped": stopped}


def rows_of(done, keys):
    """The rows of these rounds, in this order, as one frame (read back from a checkpoint alike)."""
    return pd.DataFrame.from_records([row for key in keys for row in done[key][0]], columns=COLUMNS)


def seconds_of(done, keys):
    return sum(done[key][1] for key in keys)


def _fmt(value):
    return "" if value is None else f"{value:.1f}"


def accuracy_by_method(rows):
    return (100 * rows.groupby("method", sort=False)["accuracy"].mean()).round(1).to_dict()


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


class Tables:
    """``evaluate_default.csv`` and ``evaluate_default_methods.csv``, rewritten whole as each variant ends."""

    def __init__(self, folder, write):
        self.folder, self.write, self.rows, self.methods = Path(folder), write, [], {}

    def add(self, row):
        self.rows.append(row)
        print("  row: " + ", ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
        self.flush()

    def method(self, label, target, **values):
        self.methods.setdefault(label, {"method": label, "target": target}).update(values)

    def flush(self):
        if not self.write:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, columns, rows in (("evaluate_default.csv", TABLE_COLUMNS, self.rows),
                                    ("evaluate_default_methods.csv", METHOD_COLUMNS, self.methods.values())):
            path = self.folder / name
            with open(path.with_suffix(".csv.tmp"), "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(path.with_suffix(".csv.tmp"), path)


def issue(args):
    """Issue 21's benchmark: the default methods and rule at 10,000 x 512 against the evaluation as filed."""
    output = Path(args.output_dir) if args.output_dir else ROOT / "docs" / "tables"
    tables = Tables(output, args.write)
    with tempfile.TemporaryDirectory() as folder:
        rounds_dir = Path(args.rounds_dir or folder)
        rounds_dir.mkdir(parents=True, exist_ok=True)
        for name in ("naive", "shared-as-filed", "shared-default", "whole"):
            (rounds_dir / f"rounds-{name}.jsonl").unlink(missing_ok=True)  # a new run, not a resumed one
        store = make_store(folder, args.n_samples, args.n_features)
        methods = None if args.methods == "default" else args.methods.split(",")
        targets = [str(t) for t in target_plan(store, None, None, methods)[1].targets]
        target = args.subset_target if args.subset_target is not None else targets[0]
        print(f"store: {args.n_samples} images x D={args.n_features}, one view each; methods {args.methods}; "
              f"lodo-cv; seed 0; {os.cpu_count()} cores; target {target}'s rounds one at a time, then every "
              f"target's with n_jobs={args.n_jobs}\nuptime at the start: {uptime()}", flush=True)
        old = grids_as_filed(args.n_features)
        labels = [round_label(evaluate_module._round_key(r))
                  for r in target_plan(store, None, target, methods)[2]]
        methods_label = f"{args.methods} ({len(labels)})"
        results, measured = {}, {}  # variant -> its result; round label -> variant -> seconds

        def measure(name, label, **kwargs):
            load = os.getloadavg()[0]
            print(f"  {label} (load {load:.1f}) ...", flush=True)
            result = run_target(store, target=target, checkpoint=str(rounds_dir / f"rounds-{name}.jsonl"),
                                methods=methods, **kwargs)
            result.update(load_start=load, load_end=os.getloadavg()[0],
                          date=datetime.datetime.now().isoformat(timespec="seconds"))
            for key, (_, seconds) in result["done"].items():
                measured.setdefault(round_label(key), {})[name] = seconds
            results[name] = result
            update_methods()
            return result

        def update_methods():
            """The per-method table from what is measured so far, the rounds in the plan's order."""
            naive, status = results.get("naive"), {}
            if naive is not None:
                status.update({round_label(k): "finished" for k in naive["done"]})
                if naive["in_flight"] is not None:
                    status[round_label(naive["in_flight"][0])] = (f"stopped in flight after "
                                                                  f"{naive['in_flight'][1]:.0f} s")
                status.update({round_label(k): "not started (budget spent)" for k in naive["not_started"]})
            for label in labels:
                seconds = measured.get(label, {})
                n, a, d = seconds.get("naive"), seconds.get("shared-as-filed"), seconds.get("shared-default")
                tables.method(label, target, naive_s=_fmt(n),
                              naive_round=status.get(label, "not run" if args.skip_naive else ""),
                              shared_as_filed_s=_fmt(a), shared_default_s=_fmt(d),
                              ratio_code_alone=f"{n / a:.2f}" if n is not None and a else "",
                              ratio_code_and_grids=f"{n / d:.2f}" if n is not None and d else "",
                              whole_run_summed_s=_fmt(seconds.get("whole")))

        def base_row(result, variant, grids):
            done, keys = result["done"], result["keys"]
            return {"variant": variant, "grids": grids, "methods": methods_label, "n_jobs": 1,
                    "rounds": f"target {target}: {len(done)} of {len(keys)}",
                    "seconds": f"{seconds_of(done, list(done)):.1f}",
                    "seconds_are": "the sum of its rounds' seconds (rounds.jsonl)",
                    "load_1min_start": f"{result['load_start']:.1f}",
                    "load_1min_end": f"{result['load_end']:.1f}", "date": result["date"]}

        naive = None
        if not args.skip_naive:
            naive = measure("naive", f"naive (as filed), target {target}, n_jobs=1, BLAS threads as they "
                            f"are, --naive-budget {args.naive_budget:g} s", grids=old, share=False,
                            blas_threads=None, budget=args.naive_budget, grace=args.naive_grace)
            row = base_row(naive, "naive (GridSearchCV per candidate, BLAS threads as they are)", "as filed")
            if naive["stopped"]:
                notes = []
                if naive["in_flight"] is not None:
                    notes.append(f"{round_label(naive['in_flight'][0])} stopped in flight after "
                                 f"{naive['in_flight'][1]:.0f} s")
                if naive["not_started"]:
                    notes.append("not started: " + ", ".join(map(round_label, naive["not_started"])))
                row["rounds"] += (f" (stopped by --naive-budget {args.naive_budget:g} s, "
                                  f"+{args.naive_grace:g} s for a round in flight: "
                                  + "; ".join(notes) + ")")
            row.update(seconds_on_naive_rounds=row["seconds"], ratio_same_rounds="1.00",
                       same_rows="reference")
            tables.add(row)
        finished = [k for k in (naive["keys"] if naive else []) if naive and k in naive["done"]]
        naive_seconds = seconds_of(naive["done"], finished) if naive else 0.0

        def compare(result, row):
            if not finished:
                row.update(seconds_on_naive_rounds="", ratio_same_rounds="")
                return
            mine = seconds_of(result["done"], finished)
            row.update(seconds_on_naive_rounds=f"{mine:.1f}", ratio_same_rounds=f"{naive_seconds / mine:.2f}")

        for name, grids, label in (("shared-as-filed", old, "as filed"), ("shared-default", None, "default")):
            result = measure(name, f"shared, {label} grids, target {target}, n_jobs=1", grids=grids,
                             share=True, blas_threads=1)
            if len(result["done"]) != len(result["keys"]):
                raise SystemExit(f"{name}: {len(result['done'])} of {len(result['keys'])} rounds")
            row = base_row(result, "shared (one BLAS thread a round)", label)
            compare(result, row)
            if label != "as filed":
                row["same_rows"] = "other grids"
            elif not finished:
                row["same_rows"] = "not compared (no naive round finished)"
            else:
                same = rows_of(result["done"], finished).equals(rows_of(naive["done"], finished))
                row["same_rows"] = f"{'yes' if same else 'NO'} (the {len(finished)} rounds naive finished)"
                if not same:
                    tables.add(row)
                    raise SystemExit(f"shared, grids as filed: the rows of the {len(finished)} rounds naive "
                                     f"finished on target {target} differ from the naive search's")
            tables.add(row)

        # The whole evaluation, as a user runs it: evaluate_store, the default grids, n_jobs rounds at a time.
        load = os.getloadavg()[0]
        print(f"  shared, default grids, every target, n_jobs={args.n_jobs} (load {load:.1f}) ...",
              flush=True)
        checkpoint = str(rounds_dir / "rounds-whole.jsonl")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            rows = evaluate_store(store, methods=methods, seeds=[0], n_jobs=args.n_jobs,
                                  checkpoint=checkpoint)
            wall = time.perf_counter() - start
        whole = read_rounds(checkpoint)
        per_method = {}
        for key, (_, seconds) in whole.items():
            per_method[round_label(key)] = per_method.get(round_label(key), 0.0) + seconds
        print("    accuracy per method: " + str(accuracy_by_method(rows)), flush=True)
        default = results["shared-default"]
        mine = [k for k in whole if json.loads(k)[2] == str(target)]
        same = len(mine) == len(default["keys"]) and rows_of(whole, default["keys"]).equals(
            rows_of(default["done"], default["keys"]))
        row = {"variant": "shared (one BLAS thread a round), evaluate_store", "grids": "default",
               "methods": methods_label, "n_jobs": args.n_jobs,
               "rounds": f"all {len(whole)} ({len(targets)} targets)",
               "seconds": f"{wall:.1f}", "seconds_are": "wall clock (what a user waits for)",
               "seconds_on_naive_rounds": "", "ratio_same_rounds": "",
               "same_rows": f"target {target}'s rows = the n_jobs=1 default run's: {'yes' if same else 'NO'}",
               "load_1min_start": f"{load:.1f}", "load_1min_end": f"{os.getloadavg()[0]:.1f}",
               "date": datetime.datetime.now().isoformat(timespec="seconds")}
        for label, seconds in per_method.items():
            measured.setdefault(label, {})["whole"] = seconds
        update_methods()
        tables.add(row)
        if not same:
            raise SystemExit(f"the whole evaluation's rows of target {target} differ from the n_jobs=1 run's")
        print(f"uptime at the end: {uptime()}")
        print("  per method, seconds:")
        for m in tables.methods.values():
            print(f"    {m['method']}: naive {m['naive_s'] or '-'} ({m['naive_round']}), as filed "
                  f"{m['shared_as_filed_s']}, default {m['shared_default_s']}, "
                  f"whole run {m['whole_run_summed_s']}")
    if args.write:
        print(f"wrote {output / 'evaluate_default.csv'} and {output / 'evaluate_default_methods.csv'}")
    return tables


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
        path = (Path(args.output_dir) if args.output_dir else ROOT / "docs" / "tables") / "evaluate_speed.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
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
    parser.add_argument("--methods", default=None,
                        help="'probes' (the four probes; the probes preset's default), 'default' (the "
                             "default methods; the issue preset's default: others there only for a quick "
                             "check), or a comma list")
    parser.add_argument("--selection", default="lodo-cv")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--subset-target", default=None,
                        help="issue: the target whose rounds the naive search is timed on (default: first)")
    parser.add_argument("--skip-naive", action="store_true", help="issue: the shared variants only")
    parser.add_argument("--naive-budget", type=float, default=900.0,
                        help="issue: seconds after which the naive reference starts no round (default 900)")
    parser.add_argument("--naive-grace", type=float, default=300.0,
                        help="issue: seconds after the budget at which a naive round still running is "
                             "stopped and not counted (default 300)")
    parser.add_argument("--rounds-dir", default=None,
                        help="issue: keep every variant's checkpoint (rounds-<variant>.jsonl) in this folder")
    parser.add_argument("--write", action="store_true",
                        help="write evaluate_speed.csv (probes) or evaluate_default.csv and "
                             "evaluate_default_methods.csv (issue)")
    parser.add_argument("--output-dir", default=None,
                        help="the folder --write writes to (default: docs/tables)")
    args = parser.parse_args()
    if args.n_samples is None:
        args.n_samples = 10000 if args.preset == "issue" else 2000
    if args.methods is None:
        args.methods = "default" if args.preset == "issue" else "probes"
    issue(args) if args.preset == "issue" else main(args)
