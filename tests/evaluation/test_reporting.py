"""Result files and plots: parseable, shaped like the papers' tables, enough to rerun."""

import json
import sys

import numpy as np
import pytest

from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import (
    evaluate_ablation,
    evaluate_store,
    markdown_tables,
    method_label,
    plot_ablation,
    plot_results,
    write_results,
)

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

ENVIRONMENTS = ["photo", "art_painting", "cartoon", "sketch"]
GRIDS = {"n_components": [8], "lam": [10.0], "C": [0.316]}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = make_invariant_embeddings(n_samples=400, n_features=32, normalize=True, random_state=0)
    path = tmp_path_factory.mktemp("stores") / "synthetic"
    save_embeddings(path, X=data.X, y=data.y, environments=np.array(ENVIRONMENTS)[data.environments],
                    environment_names=ENVIRONMENTS, views=data.X_views.transpose(1, 0, 2),
                    prompt_embeddings=data.prompt_embeddings)
    return str(path)


@pytest.fixture(scope="module")
def results(store):
    return evaluate_store(store, protocol="all", methods=["zero-shot", "zero-shot-icm", "probe", "probe-icm"],
                          interventions="image", seeds=[0, 1], grids=GRIDS)


def table(text, heading, after=None):
    """The rows of the first markdown table under ``heading`` (and the line ``after``), as lists of cells."""
    block = text.split(heading, 1)[1].split("\n## ", 1)[0]
    if after is not None:
        block = block.split("\n" + after + "\n", 1)[1]
    lines = block.split("\n|", 1)[1].split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in ["|" + lines[0], *lines[1:]]]


def test_results_files_are_written_and_parse_back(results, tmp_path):
    paths = write_results(results, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["config.json", "results.csv", "results.md"]
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(results.columns)
    pd.testing.assert_frame_equal(back[["protocol", "method", "target", "seed", "split", "accuracy"]],
                                  results[["protocol", "method", "target", "seed", "split", "accuracy"]])
    config = json.loads(paths["config"].read_text())
    assert config["arguments"]["seeds"] == [0, 1] and config["arguments"]["grids"]["C"] == [0.316]


def test_markdown_is_shaped_like_the_papers_tables(results, tmp_path):
    text = write_results(results, tmp_path)["markdown"].read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    tables = [("dg", "all"), ("open-class", "base"), ("open-class", "new"), ("open-class", "harmonic"),
              ("base-to-new", "base"), ("base-to-new", "new"), ("base-to-new", "total")]
    assert headings == [f"## {p}, split {s}, selection views-val" for p, s in tables]
    rows = table(text, headings[0])
    assert rows[0] == ["method", *ENVIRONMENTS, "avg"]
    labels = ["zero-shot", "zero-shot-icm [image]", "probe", "probe-icm [image]"]
    assert [row[0] for row in rows[2:]] == labels
    # Cell = mean ± std over the two seeds, in %; avg = the mean over targets, per seed.
    probe = results.query("protocol == 'dg' and method == 'probe'")
    per_target = probe.groupby("target")["accuracy"].agg(["mean", "std"]) * 100
    per_seed = probe.groupby("seed")["accuracy"].mean() * 100
    cells = dict(zip(rows[0], rows[4]))
    mean, std = per_target.loc["sketch"]
    assert cells["sketch"] == f"{mean:.1f} ± {std:.1f}"
    assert cells["avg"] == f"{per_seed.mean():.1f} ± {per_seed.std():.1f}"
    assert "Selection: views-val -- hyper-parameters chosen on the augmented views" in text
    assert "the target is never seen" in text and "ORACLE" not in text
    assert [row[0] for row in table(text, headings[2])[2:]] == ["zero-shot", "zero-shot-icm [image]"]


def test_oracle_results_say_so_everywhere(store, tmp_path):
    oracle = evaluate_store(store, methods=["probe"], selection="oracle", grids=GRIDS)
    text = write_results(oracle, tmp_path)["markdown"].read_text()
    assert text.splitlines()[0] == "## dg, split all, selection oracle"
    assert text.splitlines()[2] == (
        "ORACLE: hyper-parameters chosen on the target. Not a domain-generalisation result.")
    assert pd.read_csv(tmp_path / "results.csv")["selection"].eq("oracle").all()
    assert json.loads((tmp_path / "config.json").read_text())["arguments"]["selection"] == "oracle"


def test_one_seed_has_no_spread():
    df = pd.DataFrame({"protocol": "dg", "split": "all", "selection": "lodo-cv", "method": "probe",
                       "interventions": "none", "target": ["a", "b"], "seed": 0, "accuracy": [0.5, 0.75]})
    assert table(markdown_tables(df), "## dg")[2] == ["probe", "50.0", "75.0", "62.5"]


def test_config_reruns_the_same_results(store, tmp_path):
    first = evaluate_store(store, methods=["probe", "probe-icm"], interventions="image", seeds=[3],
                           grids={**GRIDS, "lam": [1.0, 10.0]}, selection="views-val")
    write_results(first, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["store"] == store and config["arguments"]["methods"] == ["probe", "probe-icm"]
    again = evaluate_store(config["store"], **config["arguments"])
    pd.testing.assert_frame_equal(first, again)


def test_method_labels():
    assert method_label({"method": "zero-shot", "interventions": "none", "templates": "ensemble"}) == (
        "zero-shot (ensemble)")
    views = {"method": "probe-views", "interventions": "none", "train_views": True}
    assert method_label(views) == "probe-views"
    assert method_label({"method": "front-door-icm", "interventions": "both", "templates": "ensemble"}) == (
        "front-door-icm [both]")


def png_ok(path):
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 5000


def test_plots_are_written(results, store, tmp_path):
    paths = plot_results(results, tmp_path)
    assert [p.name for p in paths] == [
        "accuracy_dg_all_views-val.png", "accuracy_open-class_base_views-val.png",
        "accuracy_open-class_new_views-val.png", "accuracy_open-class_harmonic_views-val.png",
        "accuracy_base-to-new_base_views-val.png", "accuracy_base-to-new_new_views-val.png",
        "accuracy_base-to-new_total_views-val.png"]
    assert all(png_ok(p) for p in paths)
    ablation = evaluate_ablation(store, method="probe-icm", n_components=[4, 8], lam=[1.0, 10.0],
                                 interventions="image", grids={"C": [0.316]}, seeds=[0, 1],
                                 selection="source-val")
    path = plot_ablation(ablation, tmp_path)
    assert path.name == "ablation_probe-icm.png" and png_ok(path)
    with pytest.raises(ValueError, match="needs the rows of evaluate_ablation"):
        plot_ablation(results, tmp_path)


def test_missing_extras_are_named(results, store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"clip-invariance\[plots\]"):
        plot_results(results, tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"clip-invariance\[evaluate\]"):
        evaluate_store(store)
