"""The evidence behind the cut default grids: every candidate's score in every search, under every rule.

:func:`clip_invariance.evaluation.default_grids` was cut from wider grids (``K`` also ``D/16``, ``lam`` also
1, ``C`` also 0.316, the front door's ``temperature`` also 30). This script measures what each value cut
was worth, on the synthetic conditions of ``docs/selection_table.py`` (its ``AUGMENTATIONS`` x
``FEATURES``, 2,000 images, D = 64), with the wider grids (``OLD_GRIDS``, pinned):

- ``run`` evaluates every condition and seed with each rule (``lodo-cv``, ``source-val``, ``views-val``
  and the oracle) and records every candidate's validation score in every search (one search per
  method, target and seed), not only the chosen one. The oracle validates on the target's originals,
  so its scores are every candidate's target accuracy, which is how the other rules' choices are
  scored. One file per (condition, seed, methods, rule) under ``benchmarks/.cache/grid_evidence/``, written
  when that evaluation ends, so an interrupted run continues where it stopped; ``--n-jobs`` runs that
  many evaluations in parallel processes.
- ``table`` reads the cache and writes ``docs/tables/grid_evidence.csv``: per value cut and per rule,
  how often the rule chose it, what the best candidate with it scored above the best without it (in
  the rule's own validation score; the oracle's is the target accuracy), and how the accuracy of the
  rule's choice and of the oracle's moved when the grid is cut to the current defaults; an ``all cuts``
  row does the same for every cut at once. The counts of ``docs/selection_table.py``'s own cached rows
  (the four probes, 8 conditions x 3 seeds) are added beside them.
- ``import`` copies pickles of the same records written by an earlier ad-hoc script into the cache
  (the condition is read from the file name, the methods and rules from the records).

::

    python benchmarks/grid_evidence.py run --n-jobs 2                  # every method, rule, condition
    python benchmarks/grid_evidence.py run --methods probes --conditions both-l2,exact-raw
    python benchmarks/grid_evidence.py run --n-samples 200 --conditions both-l2 --methods probes \\
        --cache /tmp/ge                                                # a smoke test, seconds
    python benchmarks/grid_evidence.py table                           # docs/tables/grid_evidence.csv

The whole ``run`` takes hours (``lodo-cv`` on every default method, over ten minutes per condition on
2 cores); ``table`` uses what is cached with the full sample size, and the CSV says how many searches
each row holds. Seeds, methods and rules may be cached for some conditions only: a rule's choice is
scored wherever the oracle's record of the same search is cached.
"""

import argparse
import csv
import math
import os
import pickle
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))  # docs/selection_table.py: the conditions and its cached rows

import selection_table  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache" / "grid_evidence"
TABLE = DOCS / "tables" / "grid_evidence.csv"

N_SAMPLES = selection_table.N_SAMPLES
N_FEATURES = 64  # make_invariant_embeddings' embedding size
RULES = ["lodo-cv", "source-val", "views-val", "oracle"]
METHOD_SETS = {"all": None, "probes": list(selection_table.METHODS)}  # None: evaluate's default methods
CUT = ("n_components", "lam", "C", "temperature")  # the hyper-parameters whose default grids were cut

# The grids before the cut (the package's defaults at D = 64 until then), pinned so that the cached
# records stay valid whatever the defaults become.
OLD_GRIDS = {"n_components": [4, 8, 16, 32], "lam": [1.0, 10.0, 100.0], "C": [0.1, 0.316, 1.0, 3.16],
             "temperature": [10.0, 30.0], "wise_alpha": [0.0, 0.25, 0.5, 0.75, 1.0],
             "tip_alpha": [0.1, 1.0, 10.0, 100.0, 1000.0], "tip_beta": [1.0, 3.5, 7.0, 14.0, 28.0]}


def new_grids(n_features=N_FEATURES):
    """The package's current default grids of the hyper-parameters that were cut."""
    from clip_invariance.evaluation import default_grids

    grids = default_grids(n_features)
    return {name: [float(v) for v in grids[name]] for name in CUT}


def cut_values(old=None, new=None):
    """(hyper-parameter, value) pairs in the old grids and not in the new ones."""
    old = OLD_GRIDS if old is None else old
    new = new_grids() if new is None else new
    return [(name, float(v)) for name in CUT for v in old[name] if float(v) not in new[name]]


def cut_label(name, value, n_features=N_FEATURES):
    if name == "n_components":
        return f"K = D/{round(n_features / value)}"
    return f"{name} = {value:g}"


# -- run ---------------------------------------------------------------------------------------------

def _cache_folder(n_samples, cache=None):
    return Path(CACHE if cache is None else cache) / f"n{n_samples}"


def cache_path(folder, condition, seed, methods, rule):
    return Path(folder) / f"{condition}-seed{seed}-{methods}-{rule}.pkl"


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        pickle.dump(payload, f)
    os.replace(partial, path)  # a file in the cache is always complete


class Recorder:
    """Records every search's candidates and scores while evaluate_store runs (in this process).

    ``_evaluate._evaluate_round`` runs one search (and its fit) per method, target and seed, and calls
    ``_protocols.grid_scores`` through ``select_and_fit``: both are wrapped for the duration.
    """

    def __enter__(self):
        from clip_invariance.evaluation import _evaluate, _protocols

        self.records, self._modules = [], (_evaluate, _protocols)
        self._round, self._scores = _evaluate._evaluate_round, _protocols.grid_scores
        current = {}

        def grid_scores(estimator, grid, X, y, splits, **kwargs):
            candidates, scores = self._scores(estimator, grid, X, y, splits, **kwargs)
            current["search"] = {"estimator": type(estimator).__name__, "candidates": list(candidates),
                                 "scores": np.asarray(scores, dtype=float)}
            return candidates, scores

        def evaluate_round(plan, rule, protocol, target, seed, method, source):
            current.clear()
            rows = self._round(plan, rule, protocol, target, seed, method, source)
            if "search" in current:
                self.records.append({"rule": rule, "target": target, "seed": seed, "method": method,
                                     "source": source, **current["search"], "rows": rows})
            return rows

        _evaluate._evaluate_round, _protocols.grid_scores = evaluate_round, grid_scores
        return self

    def __exit__(self, *exc):
        _evaluate, _protocols = self._modules
        _evaluate._evaluate_round, _protocols.grid_scores = self._round, self._scores
        return False


def _make_store(condition, seed, n_samples, folder):
    from clip_invariance.datasets import make_invariant_embeddings, save_embeddings

    augmentations, features = condition.split("-")
    _, fraction, content = selection_table.AUGMENTATIONS[augmentations]
    data = make_invariant_embeddings(n_samples=n_samples, normalize=selection_table.FEATURES[features][1],
                                     view_style_fraction=fraction, view_content_shift=content,
                                     random_state=seed)
    environments = selection_table.ENVIRONMENTS
    store = str(Path(folder) / f"store-{condition}-{seed}")
    save_embeddings(store, X=data.X, y=data.y, environments=np.array(environments)[data.environments],
                    environment_names=environments, views=data.X_views.transpose(1, 0, 2),
                    prompt_embeddings=data.prompt_embeddings, text_interventions=data.text_interventions,
                    text_view_groups=data.text_view_groups,
                    text_intervention_styles=[f"synthetic style {i}"
                                              for i in range(len(data.text_view_groups))])
    return store


def run_one(condition, seed, methods, rule, n_samples, folder):
    """Evaluate one condition and seed with one rule and the old grids; cache every search's scores."""
    from clip_invariance.evaluation import evaluate_store

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = _make_store(condition, seed, n_samples, tmp)
        with Recorder() as recorder, warnings.catch_warnings():
            # Convergence and disagreement warnings by the hundred: the scores are what is recorded.
            warnings.simplefilter("ignore")
            evaluate_store(store, methods=METHOD_SETS[methods], selection=rule, seeds=[seed],
                           grids=OLD_GRIDS)
    payload = {"condition": condition, "seed": seed, "methods": methods, "rule": rule,
               "n_samples": n_samples, "grids": OLD_GRIDS, "records": recorder.records}
    _write(cache_path(folder, condition, seed, methods, rule), payload)
    return condition, seed, methods, rule, time.perf_counter() - start


def run(conditions, seeds, methods, rules, *, n_samples=N_SAMPLES, n_jobs=1, cache=None):
    folder = _cache_folder(n_samples, cache)
    todo = [(c, s, methods, r) for c in conditions for s in seeds for r in rules
            if not cache_path(folder, c, s, methods, r).exists()]
    print(f"{len(todo)} evaluations to run into {folder}", flush=True)
    if n_jobs == 1:
        done = (run_one(*unit, n_samples, folder) for unit in todo)
        for i, (c, s, m, r, seconds) in enumerate(done, 1):
            print(f"[{i}/{len(todo)}] {c}, seed {s}, {m}, {r}: {seconds:.0f} s", flush=True)
        return folder
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: the workers inherit sys.path and import nothing; each one wraps its own modules
    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(run_one, *unit, n_samples, folder) for unit in todo]
        for i, future in enumerate(as_completed(futures), 1):
            c, s, m, r, seconds = future.result()
            print(f"[{i}/{len(todo)}] {c}, seed {s}, {m}, {r}: {seconds:.0f} s", flush=True)
    return folder


def import_pickles(paths, *, n_samples=N_SAMPLES, cache=None):
    """Copy record lists pickled by an earlier script into the cache, one file per rule."""
    folder = _cache_folder(n_samples, cache)
    for path in paths:
        name = Path(path).name
        condition = next((c for c in selection_table.SYNTHETIC if c in name), None)
        if condition is None:
            raise SystemExit(f"{path}: no condition among {selection_table.SYNTHETIC} in the name")
        with open(path, "rb") as f:
            records = pickle.load(f)
        methods = "probes" if {r["method"] for r in records} <= set(METHOD_SETS["probes"]) else "all"
        for seed in sorted({r["seed"] for r in records}):
            for rule in sorted({r["rule"] for r in records}):
                mine = [r for r in records if r["rule"] == rule and r["seed"] == seed]
                target = cache_path(folder, condition, seed, methods, rule)
                if target.exists():
                    print(f"{path}: {target.name} exists, kept")
                    continue
                _write(target, {"condition": condition, "seed": seed, "methods": methods, "rule": rule,
                                "n_samples": n_samples, "grids": OLD_GRIDS, "records": mine})
                print(f"{path}: {len(mine)} searches -> {target}")


# -- table -------------------------------------------------------------------------------------------

def canonical(method, candidate):
    """A candidate's parameters under the names of default_grids (``proj__lam`` -> ``lam``, ...)."""
    out = {}
    for path, value in candidate.items():
        name = path.split("__")[-1]
        if name == "alpha":
            name = "wise_alpha" if method.startswith("wise") else "tip_alpha"
        elif name == "beta":
            name = "tip_beta"
        out[name] = float(value)
    return out


def load_searches(folder):
    """Every cached search: condition, seed, rule, method, target, source, candidates, scores (points).

    A search cached with every method and with the probes only is read once (from every method's).
    """
    searches = {}
    for path in sorted(Path(folder).glob("*.pkl"), key=lambda p: "-probes-" in p.name):
        with open(path, "rb") as f:
            payload = pickle.load(f)
        for r in payload["records"]:
            key = (payload["condition"], r["seed"], r["rule"], r["method"], r["target"], r["source"])
            searches.setdefault(key, {
                "condition": payload["condition"], "seed": r["seed"], "rule": r["rule"],
                "method": r["method"], "target": r["target"], "source": r["source"],
                "candidates": [canonical(r["method"], c) for c in r["candidates"]],
                "scores": 100 * np.asarray(r["scores"], dtype=float)})
    return list(searches.values())


def _key(candidate):
    return tuple(sorted(candidate.items()))


def _first_best(scores, among):
    """The index among ``among`` with the highest score, the first of equals (as the search picks)."""
    among = np.flatnonzero(among)
    return among[int(np.argmax(scores[among]))]


def cut_rows(searches, cuts, *, label=cut_label, rules=RULES):
    """Per cut and rule: chosen counts, best-with minus best-without, the cut's change in accuracy.

    ``cuts`` is a list of (label, {name: values removed}); a candidate is removed by a cut when any of
    its parameters takes a removed value. A search counts for a cut when the cut removes some of its
    candidates and keeps some. Gains and changes are in points; the changes need the oracle's record of
    the same search (every candidate's target accuracy) and are over the searches that have it.
    """
    oracle = {(s["condition"], s["seed"], s["method"], s["target"], s["source"]): s
              for s in searches if s["rule"] == "oracle"}
    rows = []
    for name, removed_values in cuts:
        for rule in rules:
            chosen, gains, where, rule_change, oracle_change, conditions = 0, [], [], [], [], set()
            for s in searches:
                if s["rule"] != rule:
                    continue
                removed = np.array([any(c.get(p) in vs for p, vs in removed_values.items())
                                    for c in s["candidates"]])
                if not removed.any() or removed.all():
                    continue
                scores = s["scores"]
                conditions.add((s["condition"], s["seed"]))
                full, cut = _first_best(scores, np.ones_like(removed)), _first_best(scores, ~removed)
                chosen += bool(removed[full])
                gains.append(scores[removed].max() - scores[~removed].max())
                where.append(f"{s['condition']} seed {s['seed']}, {s['method']}, {s['target']}")
                o = oracle.get((s["condition"], s["seed"], s["method"], s["target"], s["source"]))
                if o is None:
                    continue
                accuracy = dict(zip(map(_key, o["candidates"]), o["scores"]))
                chosen_now, chosen_before = _key(s["candidates"][cut]), _key(s["candidates"][full])
                rule_change.append(accuracy[chosen_now] - accuracy[chosen_before])
                o_removed = np.array([any(c.get(p) in vs for p, vs in removed_values.items())
                                      for c in o["candidates"]])
                oracle_change.append(o["scores"][~o_removed].max() - o["scores"].max())
            gains = np.asarray(gains)
            row = {"cut": name, "rule": rule, "condition-seeds": len(conditions), "searches": len(gains),
                   "chosen": chosen}
            if len(gains):
                row.update({"gain > 0": int((gains > 0).sum()), "gain mean": gains.mean(),
                            "gain max": gains.max(), "gain max at": where[int(np.argmax(gains))]})
            row["compared"] = len(rule_change)
            for what, values in (("rule", rule_change), ("oracle", oracle_change)):
                if values:
                    row.update({f"{what} change mean": np.mean(values), f"{what} change min": np.min(values),
                                f"{what} change max": np.max(values)})
            rows.append(row)
    return rows


def selection_table_counts(frame, cuts, *, rules=RULES):
    """Per cut and rule: how often docs/selection_table.py's cached rows chose a removed value.

    ``frame`` has the columns rule, n_components, lam, C (NaN where a method has no such parameter).
    Choices: the rows with one of the cut's parameters; chosen: those with a removed value.
    """
    out = {}
    for name, removed_values in cuts:
        names = [p for p in removed_values if p in frame.columns]
        for rule in rules:
            mine = frame[frame["rule"] == rule]
            if not names or not len(mine):
                continue
            has = mine[names].notna().any(axis=1)
            hit = np.zeros(len(mine), dtype=bool)
            for p in names:
                hit |= mine[p].isin(removed_values[p]).to_numpy()
            out[name, rule] = (int(hit.sum()), int(has.sum()))
    return out


def selection_table_rows():
    """docs/selection_table.py's cached rows (the full grids, every condition and seed cached)."""
    import pandas as pd

    folder = selection_table._cache_folder(False, "both")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        return None
    return pd.concat([pd.read_csv(p) for p in paths]), len(paths)


COLUMNS = ["cut", "rule", "condition-seeds", "searches", "chosen", "gain > 0", "gain mean", "gain max",
           "gain max at", "compared", "rule change mean", "rule change min", "rule change max",
           "oracle change mean", "oracle change min", "oracle change max",
           "selection table chosen", "selection table choices"]


def make_table(searches, selection=None, *, old=None, new=None):
    """The table's rows: each cut value alone, then every cut at once."""
    pairs = cut_values(old, new)
    cuts = [(cut_label(p, v), {p: [v]}) for p, v in pairs]
    together = {}
    for p, v in pairs:
        together.setdefault(p, []).append(v)
    cuts.append(("all cuts", together))
    rows = cut_rows(searches, cuts)
    counts = {} if selection is None else selection_table_counts(selection, cuts)
    for row in rows:
        if (row["cut"], row["rule"]) in counts:
            row["selection table chosen"], row["selection table choices"] = counts[row["cut"], row["rule"]]
    return rows


def _format(value, column):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (str, int, np.integer)):
        return str(value)
    return f"{value:+.3f}" if column.endswith("mean") else f"{value:+.1f}"


def write_table(rows, path=TABLE):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_format(row.get(c), c) for c in COLUMNS])


def table(*, n_samples=N_SAMPLES, cache=None, path=TABLE):
    searches = load_searches(_cache_folder(n_samples, cache))
    if not searches:
        raise SystemExit(f"nothing cached in {_cache_folder(n_samples, cache)}: run `run` first")
    selection = selection_table_rows()
    if selection is not None:
        selection, n_files = selection
        print(f"selection table: {n_files} cached (condition, seed) files, {len(selection)} rows")
    rows = make_table(searches, None if selection is None else selection)
    write_table(rows, path)
    print(path.read_text())
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    run_parser = steps.add_parser("run", help="evaluate and cache every search's scores")
    run_parser.add_argument("--conditions", default=",".join(selection_table.SYNTHETIC),
                            help=f"comma list among {','.join(selection_table.SYNTHETIC)}")
    run_parser.add_argument("--seeds", default="0", help="generator seeds, comma list (default: 0)")
    run_parser.add_argument("--methods", default="all", choices=sorted(METHOD_SETS),
                            help="every default method, or the four probes (default: all)")
    run_parser.add_argument("--rules", default=",".join(RULES), help="comma list (default: all four)")
    run_parser.add_argument("--n-jobs", type=int, default=1, help="evaluations in parallel processes")
    import_parser = steps.add_parser("import", help="copy record pickles of an earlier script into the cache")
    import_parser.add_argument("paths", nargs="+")
    table_parser = steps.add_parser("table", help=f"write {TABLE.relative_to(ROOT)} from the cache")
    table_parser.add_argument("--output", type=Path, default=TABLE)
    for sub in (run_parser, import_parser, table_parser):
        sub.add_argument("--n-samples", type=int, default=N_SAMPLES,
                         help=f"images per condition (default {N_SAMPLES}; others: their own cache folder)")
        sub.add_argument("--cache", type=Path, default=CACHE, help="cache folder (default: %(default)s)")
    args = parser.parse_args()
    if args.step == "run":
        conditions = [c for c in args.conditions.split(",") if c]
        rules = [r for r in args.rules.split(",") if r]
        unknown = sorted(set(conditions) - set(selection_table.SYNTHETIC)) + sorted(set(rules) - set(RULES))
        if unknown:
            parser.error(f"unknown conditions or rules: {unknown}")
        run(conditions, [int(s) for s in args.seeds.split(",")], args.methods, rules,
            n_samples=args.n_samples, n_jobs=args.n_jobs, cache=args.cache)
    elif args.step == "import":
        import_pickles(args.paths, n_samples=args.n_samples, cache=args.cache)
    else:
        table(n_samples=args.n_samples, cache=args.cache, path=args.output)
