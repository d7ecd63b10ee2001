"""docs/selection_table.py: the regrets, gains and worst cases it tabulates, on hand-made accuracies."""

import importlib.util
import math
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "selection_table.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("selection_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(accuracy):
    """Tidy rows from {(seed, rule, method, target): accuracy}."""
    return pd.DataFrame([{"seed": s, "rule": r, "method": m, "target": t, "accuracy": a}
                         for (s, r, m, t), a in accuracy.items()])


def test_condition_rows_regrets_and_gains_by_hand(table):
    accuracy = {}
    for seed in (0, 1):
        for rule in table.RULES:
            for method in table.METHODS:
                for target in ("a", "shifted"):
                    accuracy[seed, rule, method, target] = 50.0
    # The oracle's probe-icm is 10 points better on the shifted target in seed 0, 6 in seed 1.
    accuracy[0, "oracle", "probe-icm", "shifted"] = 60.0
    accuracy[1, "oracle", "probe-icm", "shifted"] = 56.0
    # lodo-cv's probe-icm beats probe by 4 points on target a in seed 0 only.
    accuracy[0, "lodo-cv", "probe-icm", "a"] = 54.0
    rows = {row["rule"]: row for row in table.condition_rows(_rows(accuracy), "shifted")}
    # views-val: regret (10 + 0) / 2 in seed 0, (6 + 0) / 2 in seed 1, mean 4; shifted (10 + 6) / 2.
    assert rows["views-val"]["probe-icm regret"] == pytest.approx(4.0)
    assert rows["views-val"]["probe-icm regret, shifted"] == pytest.approx(8.0)
    assert rows["views-val"]["probe-icm-views regret"] == pytest.approx(0.0)
    # lodo-cv: seed 0 (10 - 4) / 2 = 3, seed 1 3, so 3; its gain over probe 2 then 0: 1 +- 1.
    assert rows["lodo-cv"]["probe-icm regret"] == pytest.approx(3.0)
    assert rows["lodo-cv"]["probe-icm - probe"] == "+1.0 ± 1.0"
    assert rows["lodo-cv"]["probe-icm - probe-views"] == "+1.0 ± 1.0"
    assert rows["oracle"]["probe-icm regret"] == 0.0
    assert rows["oracle"]["probe-icm - probe"] == "+4.0 ± 1.0"
    # Without a shifted target the column is empty.
    assert math.isnan(table.condition_rows(_rows(accuracy))[0]["probe-icm regret, shifted"])


def test_summary_takes_the_worst_condition_and_probe(table):
    frame = pd.DataFrame([
        {"condition": condition, "rule": rule, "probe-icm regret": icm, "probe-icm regret, shifted": shift,
         "probe-icm-views regret": views, "probe-icm-views regret, shifted": shift}
        for condition, rule, icm, views, shift in [
            ("c1", "source-val", 5.0, 1.0, 9.0), ("c2", "source-val", 2.0, 2.0, math.nan),
            ("c1", "lodo-cv", 3.0, 4.0, 6.0), ("c2", "lodo-cv", 1.0, 1.0, math.nan),
            ("c1", "views-val", 1.0, 1.0, 2.0), ("c2", "views-val", 4.0, 3.5, math.nan),
            ("c1", "oracle", 0.0, 0.0, 0.0), ("c2", "oracle", 0.0, 0.0, math.nan),
        ]
    ])
    summary = table.summary_rows(frame).set_index("rule")
    assert summary.loc["source-val", "worst regret"] == 5.0
    assert summary.loc["source-val", "worst at"] == "c1; probe-icm"
    assert summary.loc["lodo-cv", "worst at"] == "c1; probe-icm-views"
    assert summary.loc["lodo-cv", "mean regret"] == pytest.approx(9.0 / 4)
    assert summary.loc["views-val", "worst regret, shifted"] == 2.0
    # lodo-cv and views-val tie at 4 points; lodo-cv's mean regret (2.25 against 2.375) is smaller.
    assert table.best_honest_rule(summary.reset_index()) == "lodo-cv"


def test_real_feature_table_is_read_as_seed_means(table, tmp_path):
    path = tmp_path / "real.csv"
    path.write_text(
        "features,rule,method,seeds,amazon,dslr,avg\n"
        "normalized,oracle,probe-icm,3,94.5 ± 0.2,98.1 ± 0.5,96.3 ± 0.1\n"
        "normalized,oracle,probe-icm gain,3,-0.8,-1.1,-1.0\n"
        "normalized,lodo-cv,probe-icm,3,94.0 ± 0.2,97.1 ± 0.5,95.5 ± 0.1\n"
        "normalized,lodo-cv,prototype,3,90.0 ± 0.2,90.1 ± 0.5,90.0 ± 0.1\n"
    )
    real = table.real_feature_accuracies(path)
    rows, seeds = real["L2-normalised"]
    assert seeds == 3
    got = {(r.rule, r.method, r.target): r.accuracy for r in rows.itertuples()}
    assert got == {("oracle", "probe-icm", "amazon"): 94.5, ("oracle", "probe-icm", "dslr"): 98.1,
                   ("lodo-cv", "probe-icm", "amazon"): 94.0, ("lodo-cv", "probe-icm", "dslr"): 97.1}
    assert table.real_feature_accuracies(tmp_path / "absent.csv") == {}
