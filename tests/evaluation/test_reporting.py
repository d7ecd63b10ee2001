"""Result files and plots: parseable, shaped like the papers' tables, enough to rerun."""

import json
import os
import sys

import numpy as np
import pytest
import sklearn

from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import (
    chance_level,
    evaluate_ablation,
    evaluate_store,
    latex_tables,
    markdown_tables,
    method_label,
    plot_ablation,
    plot_results,
    run_environment,
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
    # views-val: the rule whose wording the reports below check (not the default, lodo-cv).
    return evaluate_store(store, protocol="all", methods=["zero-shot", "zero-shot-icm", "probe", "probe-icm"],
                          interventions="image", seeds=[0, 1], grids=GRIDS, selection="views-val")


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
              ("base-to-new", "base"), ("base-to-new", "new"), ("base-to-new", "total"),
              ("base-to-new", "harmonic")]
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
        "accuracy_base-to-new_total_views-val.png", "accuracy_base-to-new_harmonic_views-val.png"]
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


def test_markdown_gives_target_sizes_and_chosen_hyper_parameters(results):
    text = markdown_tables(results.query("protocol == 'dg'"))
    dg = results.query("protocol == 'dg'")
    sizes = dg.groupby("target")["n_test"].first()
    assert f"Images scored per target: {', '.join(f'{t} {sizes[t]}' for t in ENVIRONMENTS)}." in text
    rows = table(text, "## dg", after="Hyper-parameters chosen (the values over seeds):")
    assert rows[0] == ["method", *ENVIRONMENTS]
    # zero-shot has nothing to choose: no row; the others name their grids' single values.
    assert [row[0] for row in rows[2:]] == ["zero-shot-icm [image]", "probe", "probe-icm [image]"]
    assert rows[3] == ["probe", *["C=0.316"] * 4]
    assert rows[4] == ["probe-icm [image]", *["K=8, lam=10, C=0.316"] * 4]


def test_hyper_parameters_differing_over_seeds_are_all_shown():
    df = pd.DataFrame({"protocol": "dg", "split": "all", "selection": "lodo-cv", "method": "probe-icm",
                       "interventions": "image", "target": ["a", "a", "b", "b"], "seed": [1, 0, 0, 1],
                       "accuracy": 0.5, "n_components": [16, 8, 8, 8], "lam": [10.0, 10.0, 1.0, 100.0],
                       "C": np.nan, "n_test": [5, 5, 7, 7]})
    rows = table(markdown_tables(df), "## dg", after="Hyper-parameters chosen (the values over seeds):")
    assert rows[2] == ["probe-icm [image]", "K=8/16, lam=10", "K=8, lam=1/100"]  # in seed order
    assert "Images scored per target: a 5, b 7." in markdown_tables(df)


def tiny_frame(targets, seeds=(0,)):
    accuracy = {"probe": [0.5, 0.75, 0.25], "zero-shot": [0.75, 0.5, 0.25]}
    return pd.DataFrame([{"protocol": "dg", "split": "all", "selection": "lodo-cv", "method": method,
                          "interventions": "none", "target": target, "seed": seed, "accuracy": value}
                         for method, values in accuracy.items() for target, value in zip(targets, values)
                         for seed in seeds])


def test_names_cannot_break_the_markdown_table():
    text = markdown_tables(tiny_frame(["a|b", "back\\slash", "new\nline"]))
    assert "| method | a\\|b | back\\\\slash | new line | avg |" in text.splitlines()
    assert "| zero-shot | 75.0 | 50.0 | 25.0 | 50.0 |" in text.splitlines()


def test_latex_table_is_exact():
    text = latex_tables(tiny_frame(["a&b", "50%_x", "c"]))
    assert text == "\n".join([
        "% dg, split all, selection lodo-cv",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Accuracy (\%) on each target environment (dg, split all), mean $\pm$ std over 1 seed(s).",
        r"Selection: lodo-cv -- hyper-parameters chosen by leave-one-source-domain-out cross-validation; "
        r"the target is never seen.}",
        r"\label{tab:dg-all-lodo-cv}",
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        r"Method & a\&b & 50\%\_x & c & avg \\",
        r"\midrule",
        r"zero-shot & \textbf{75.0} & 50.0 & \textbf{25.0} & \textbf{50.0} \\",  # ties: both bold
        r"probe & 50.0 & \textbf{75.0} & \textbf{25.0} & \textbf{50.0} \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])
    two_seeds = latex_tables(tiny_frame(["a", "b", "c"], seeds=(0, 1)))
    assert r"zero-shot & \textbf{75.0 $\pm$ 0.0} & 50.0 $\pm$ 0.0" in two_seeds


def test_latex_is_written_on_request(results, tmp_path):
    assert "latex" not in write_results(results, tmp_path / "plain")
    assert not (tmp_path / "plain" / "results.tex").exists()
    path = write_results(results, tmp_path / "tex", latex=True)["latex"]
    assert path.name == "results.tex" and path.read_text() == latex_tables(results)


def test_config_records_versions_hardware_and_date(results, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # torch is described only when loaded
    config = json.loads(write_results(results, tmp_path)["config"].read_text())
    assert config["versions"]["numpy"] == np.__version__
    assert config["versions"]["scikit-learn"] == sklearn.__version__
    assert config["hardware"]["cpu_count"] == os.cpu_count()
    assert config["hardware"]["torch_device"] == "not loaded"
    assert "torch" not in sys.modules
    written = pd.Timestamp(config["date"])
    assert written.tzname() == "UTC" and abs(pd.Timestamp.now(tz="UTC") - written) < pd.Timedelta("1h")
    fake = type(sys)("torch")
    fake.cuda = type("cuda", (), {"is_available": staticmethod(lambda: False)})
    fake.backends = type("backends", (), {"mps": None})
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert run_environment()["hardware"]["torch_device"] == "cpu"
    # What the caller recorded is kept.
    config = json.loads(write_results(results, tmp_path, config={"date": "then"})["config"].read_text())
    assert config["date"] == "then" and "versions" in config


def test_spreadsheet_formulas_are_defused_in_the_csv(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+1", "-a", "@b", "plain"]
    frame = tiny_frame(names[:3]).assign(interventions="@SUM(A1)")
    frame = pd.concat([frame, tiny_frame(names[3:] + ["c"])], ignore_index=True)
    back = pd.read_csv(write_results(frame, tmp_path)["csv"])
    assert list(dict.fromkeys(back["target"])) == ["'=HYPERLINK(\"http://x\")", "'+1", "'-a", "'@b", "plain",
                                                   "c"]
    assert set(back["interventions"]) == {"'@SUM(A1)", "none"}
    assert back["accuracy"].tolist() == frame["accuracy"].tolist()  # numbers untouched


def test_planted_links_are_replaced_not_followed(results, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.csv", "results.md", "config.json", "results.tex", "accuracy_dg_all_views-val.png"):
        (out / name).symlink_to(victim)
    write_results(results, out, latex=True)
    plot_results(results.query("protocol == 'dg'"), out)
    assert victim.read_text() == "precious"
    assert not any(p.is_symlink() for p in out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_dg_all_views-val.png", "config.json",
                                                     "results.csv", "results.md", "results.tex"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions draw, kept for inspection."""
    from clip_invariance.evaluation import _reporting

    drawn = []
    make = _reporting._figure

    def keep(**kwargs):
        drawn.append(make(**kwargs))
        return drawn[-1]

    monkeypatch.setattr(_reporting, "_figure", keep)
    return drawn


def test_error_bars_only_with_seeds_and_a_chance_line(results, tmp_path, figures):
    dg = results.query("protocol == 'dg'")
    plot_results(dg, tmp_path, n_classes=4)
    plot_results(dg.query("seed == 0"), tmp_path)
    from matplotlib.container import BarContainer

    several, one = (figure.axes[0] for figure in figures)

    def error_bars(ax):
        return [bars.errorbar is not None for bars in ax.containers if isinstance(bars, BarContainer)]

    assert error_bars(several) == [True] * 4 and error_bars(one) == [False] * 4
    chance = [line for line in several.get_lines() if line.get_label().startswith("chance")]
    assert [(line.get_label(), line.get_ydata()[0]) for line in chance] == [("chance (25.0%)", 25.0)]
    assert not [line for line in one.get_lines() if line.get_label().startswith("chance")]


def test_chance_levels():
    assert [chance_level(p, s, 7) for p, s in [("dg", "all"), ("open-class", "base"), ("open-class", "new"),
                                                ("base-to-new", "base"), ("base-to-new", "new"),
                                                ("base-to-new", "total")]] == [1 / 7, 1 / 7, 1 / 7, 1 / 4,
                                                                               1 / 3, 1 / 7]
    # The harmonic means of the base and new chances: 1/7 and 1/7; 1/4 and 1/3.
    assert chance_level("open-class", "harmonic", 7) == 1 / 7
    assert chance_level("base-to-new", "harmonic", 7) == pytest.approx(2 / (4 + 3))


def test_ablation_error_bars_only_with_seeds_and_a_chance_line(tmp_path, figures):
    from matplotlib.container import ErrorbarContainer

    def rows(seeds):
        swept = [{"parameter": name, "value": value, "n_components": value if name == "n_components" else 8,
                  "lam": value if name == "lam" else 10.0} for name, values in
                 (("n_components", [4, 8]), ("lam", [1.0, 10.0])) for value in values]
        return pd.DataFrame([{**point, "method": "probe-icm", "selection": "lodo-cv", "target": target,
                              "seed": seed, "accuracy": 0.5 + 0.1 * seed}
                             for point in swept for target in ("a", "b") for seed in seeds])

    plot_ablation(rows([0, 1]), tmp_path, n_classes=5)
    plot_ablation(rows([0]), tmp_path)
    for figure, expected in zip(figures, (True, False)):
        for ax in figure.axes:
            bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
            assert [c.has_yerr for c in bars] == [expected] * 3  # a, b and their average
    chance = [(line.get_label(), line.get_ydata()[0]) for ax in figures[0].axes for line in ax.get_lines()
              if line.get_label().startswith("chance")]
    assert chance == [("chance (20.0%)", 20.0)] * 2
    assert not [line for ax in figures[1].axes for line in ax.get_lines()
                if line.get_label().startswith("chance")]
