"""benchmarks/grid_evidence.py's table: its arithmetic on two hand-made searches with known answers
(neither its cache nor docs/selection_table.py's is needed)."""

import importlib.util
import math
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "grid_evidence.py"


@pytest.fixture(scope="module")
def evidence():
    if not (SCRIPT.exists() and (SCRIPT.parents[1] / "docs" / "selection_table.py").exists()):
        pytest.skip("benchmarks/grid_evidence.py or docs/selection_table.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("grid_evidence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


C = [0.1, 0.316, 1.0, 3.16]


def _search(evidence, rule, scores):
    """A probe's search over C on one target, as the cache holds it (scores are accuracies in [0, 1])."""
    record = {"rule": rule, "target": "sketch", "seed": 0, "method": "probe", "source": None,
              "candidates": [{"C": c} for c in C], "scores": np.array(scores)}
    return {"condition": "exact-l2", "seed": 0, "rule": rule, "method": "probe", "target": "sketch",
            "source": None, "candidates": [evidence.canonical("probe", c) for c in record["candidates"]],
            "scores": 100 * record["scores"]}


def test_cut_rows_on_known_answers(evidence):
    # lodo-cv picks C = 0.316 (0.80), 0.05 above the best kept (3.16: 0.75); the oracle (every candidate's
    # target accuracy) scores 0.316 at 0.70 and 3.16 at 0.65, and picks 1.0 (0.75), which the cut keeps.
    searches = [_search(evidence, "lodo-cv", [0.50, 0.80, 0.60, 0.75]),
                _search(evidence, "oracle", [0.60, 0.70, 0.75, 0.65])]
    rows = evidence.cut_rows(searches, [("C = 0.316", {"C": [0.316]})], rules=["lodo-cv", "oracle"])
    lodo, oracle = rows
    assert (lodo["searches"], lodo["chosen"], lodo["gain > 0"], lodo["compared"]) == (1, 1, 1, 1)
    assert lodo["gain mean"] == pytest.approx(5.0) and lodo["gain max"] == pytest.approx(5.0)
    # cut: lodo-cv falls back to 3.16, whose target accuracy is 65 against 70 for 0.316
    assert lodo["rule change mean"] == pytest.approx(-5.0)
    assert lodo["rule change min"] == lodo["rule change max"] == pytest.approx(-5.0)
    assert lodo["oracle change mean"] == pytest.approx(0.0)  # the oracle's best (1.0) is kept
    assert lodo["gain max at"] == "exact-l2 seed 0, probe, sketch"
    assert (oracle["chosen"], oracle["gain > 0"]) == (0, 0)
    assert oracle["gain mean"] == pytest.approx(70.0 - 75.0)
    assert oracle["rule change mean"] == oracle["oracle change mean"] == pytest.approx(0.0)


def test_a_cut_of_the_best_and_the_first_of_equals(evidence):
    # Two values cut at once; lodo-cv's equal scores: the first (0.1) is its choice, as the search ranks.
    searches = [_search(evidence, "lodo-cv", [0.70, 0.70, 0.60, 0.50]),
                _search(evidence, "oracle", [0.60, 0.70, 0.75, 0.65])]
    rows = evidence.cut_rows(searches, [("all cuts", {"C": [0.1, 1.0]})], rules=["lodo-cv", "oracle"])
    lodo, oracle = rows
    assert (lodo["chosen"], lodo["gain > 0"]) == (1, 0) and lodo["gain max"] == pytest.approx(0.0)
    assert lodo["rule change mean"] == pytest.approx(70.0 - 60.0)  # 0.316 instead of 0.1
    assert lodo["oracle change mean"] == pytest.approx(70.0 - 75.0)  # the oracle's 1.0 is cut
    assert oracle["chosen"] == 1 and oracle["gain max"] == pytest.approx(75.0 - 70.0)


def test_searches_a_cut_does_not_touch_are_left_out(evidence):
    searches = [_search(evidence, "lodo-cv", [0.5, 0.8, 0.6, 0.75]), _search(evidence, "oracle", [0.6] * 4)]
    (row,) = evidence.cut_rows(searches, [("lam = 1", {"lam": [1.0]})], rules=["lodo-cv"])
    assert row["searches"] == 0 and "gain mean" not in row and "rule change mean" not in row


def test_canonical_names(evidence):
    assert evidence.canonical("wise-icm", {"projector__lam": 1, "alpha": 0.5, "C": 0.1}) == {
        "lam": 1.0, "wise_alpha": 0.5, "C": 0.1}
    assert evidence.canonical("tip-adapter", {"alpha": 10, "beta": 3.5}) == {"tip_alpha": 10.0,
                                                                             "tip_beta": 3.5}


def test_cut_values_and_selection_table_counts(evidence):
    new = {"n_components": [8.0, 16.0, 32.0], "lam": [10.0, 100.0], "C": [0.1, 1.0, 3.16],
           "temperature": [10.0]}
    cuts = evidence.cut_values(evidence.OLD_GRIDS, new)
    assert cuts == [("n_components", 4.0), ("lam", 1.0), ("C", 0.316), ("temperature", 30.0)]
    assert [evidence.cut_label(*c) for c in cuts] == ["K = D/16", "lam = 1", "C = 0.316", "temperature = 30"]
    frame = pd.DataFrame({"rule": ["lodo-cv"] * 3, "n_components": [8.0, 16.0, math.nan],
                          "lam": [1.0, 10.0, math.nan], "C": [0.316, 0.1, 0.316]})
    counts = evidence.selection_table_counts(
        frame, [("lam = 1", {"lam": [1.0]}), ("C = 0.316", {"C": [0.316]}), ("temperature = 30",
                                                                            {"temperature": [30.0]})],
        rules=["lodo-cv"])
    assert counts == {("lam = 1", "lodo-cv"): (1, 2), ("C = 0.316", "lodo-cv"): (2, 3)}
