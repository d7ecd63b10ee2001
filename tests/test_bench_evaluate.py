"""benchmarks/bench_evaluate.py --preset issue on a tiny store: the script writes both tables itself, every
variant's row, the naive reference stopped by its budget, the rows compared (no timing is checked)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_evaluate.py"
METHODS = ["probe", "probe-icm", "wise"]


def _run(tmp_path, budget):
    out = tmp_path / f"budget-{budget}"
    subprocess.run([sys.executable, str(SCRIPT), "--preset", "issue", "--methods", ",".join(METHODS),
                    "--n-samples", "200", "--n-features", "16", "--n-jobs", "1",
                    "--naive-budget", str(budget),
                    "--write", "--output-dir", str(out), "--rounds-dir", str(out / "rounds")],
                   check=True, capture_output=True, text=True, timeout=300)
    with open(out / "evaluate_default.csv") as file:
        table = list(csv.DictReader(file))
    with open(out / "evaluate_default_methods.csv") as file:
        methods = list(csv.DictReader(file))
    return out, table, methods


def _seconds(checkpoint):
    """The seconds of a checkpoint's rounds, summed."""
    with open(checkpoint) as file:
        return sum(json.loads(line).get("seconds", 0) for line in file)


@pytest.mark.slow
def test_issue_preset_writes_both_tables(tmp_path):
    out, table, methods = _run(tmp_path, 1000)
    assert [(r["variant"].split(" (")[0], r["grids"], r["n_jobs"]) for r in table] == [
        ("naive", "as filed", "1"), ("shared", "as filed", "1"), ("shared", "default", "1"),
        ("shared", "default", "1")]
    naive, as_filed, default, whole = table
    assert naive["rounds"] == "target 0: 3 of 3" and naive["same_rows"] == "reference"
    assert as_filed["same_rows"] == "yes (the 3 rounds naive finished)"
    assert whole["rounds"] == "all 12 (4 targets)" and whole["same_rows"].endswith(": yes")
    seconds = {name: _seconds(out / "rounds" / f"rounds-{name}.jsonl")
               for name in ("naive", "shared-as-filed", "shared-default")}
    for row, name in ((as_filed, "shared-as-filed"), (default, "shared-default")):  # on the same rounds
        assert float(row["ratio_same_rounds"]) == pytest.approx(seconds["naive"] / seconds[name], abs=0.006)
    assert [m["method"] for m in methods] == METHODS
    assert all(m["naive_round"] == "finished" and m["whole_run_summed_s"] for m in methods)
    assert sorted(p.name for p in (out / "rounds").iterdir()) == [
        "rounds-naive.jsonl", "rounds-shared-as-filed.jsonl", "rounds-shared-default.jsonl",
        "rounds-whole.jsonl"]


@pytest.mark.slow
def test_issue_preset_budget_spent_before_any_round(tmp_path):
    _, table, methods = _run(tmp_path, 0)
    naive, as_filed = table[:2]
    assert naive["rounds"].startswith("target 0: 0 of 3 (stopped by --naive-budget 0 s")
    assert naive["rounds"].endswith("not started: probe, probe-icm, wise)")  # the cheap first
    assert as_filed["same_rows"].startswith("not compared") and as_filed["ratio_same_rounds"] == ""
    assert {m["naive_round"] for m in methods} == {"not started (budget spent)"}
