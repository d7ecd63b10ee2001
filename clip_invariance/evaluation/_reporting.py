"""Results of :func:`~clip_invariance.evaluation.evaluate_store` as files: tables, configuration, plots.

- :func:`write_results`: ``results.csv`` (the tidy rows), ``results.md``
  (mean +- std over seeds per target and on average, methods as rows, one
  table per protocol x split x selection rule, shaped like the papers'
  tables) and ``config.json`` (everything needed to rerun);
- :func:`plot_results`: per-target accuracy by method, with error bars over seeds;
- :func:`plot_ablation`: accuracy against ``K`` and against ``lam``
  (:func:`~clip_invariance.evaluation.evaluate_ablation`), labelled as
  descriptive: target accuracy across a grid is never used for selection.

pandas and matplotlib are imported when called (extras ``evaluate`` and ``plots``).
"""

import json
from pathlib import Path

import numpy as np

__all__ = ["SELECTION_LINES", "method_label", "markdown_tables", "write_results", "plot_results",
           "plot_ablation"]

# The line under every table: how its hyper-parameters were chosen.
SELECTION_LINES = {
    "source-val": "Selection: source-val -- hyper-parameters chosen on the held-out 20% of the source "
                  "environments (in-domain validation); the target is never seen.",
    "lodo-cv": "Selection: lodo-cv -- hyper-parameters chosen by leave-one-source-domain-out "
               "cross-validation; the target is never seen.",
    "views-val": "Selection: views-val -- hyper-parameters chosen on the augmented views of the held-out "
                 "20% of the sources; the target is never seen.",
    "oracle": "ORACLE: hyper-parameters chosen on the target. Not a domain-generalisation result.",
}
_METHOD_ORDER = ("zero-shot", "zero-shot-icm", "prototype", "probe", "probe-views", "probe-icm",
                 "probe-icm-views", "front-door", "front-door-icm")


def method_label(row):
    """The table row name of a result row: its method and what sets it apart.

    The interventions of an invariant method in brackets, ``(ensemble)`` for
    the prompt ensemble of a zero-shot method.

    Examples
    --------
    >>> from clip_invariance.evaluation import method_label
    >>> method_label({"method": "probe-icm-views", "interventions": "text+target-name"})
    'probe-icm-views [text+target-name]'
    """
    label = row["method"]
    if row.get("interventions", "none") not in ("none", None):
        label += f" [{row['interventions']}]"
    if row.get("templates") == "ensemble" and row["method"].startswith("zero-shot"):
        label += " (ensemble)"
    return label


def _summary(df):
    """(protocol, split, selection) -> table of mean and std (in %) per label x target, with ``avg``."""
    df = df.assign(label=[method_label(r) for r in df.to_dict("records")], percent=100 * df["accuracy"])
    out = {}
    for key, part in df.groupby(["protocol", "split", "selection"], sort=False):
        per_seed = part.pivot_table(index=["label", "seed"], columns="target", values="percent",
                                    sort=False)
        targets = [t for t in dict.fromkeys(part["target"]) if t in per_seed.columns]
        per_seed = per_seed[targets]
        per_seed["avg"] = per_seed.mean(axis=1, skipna=False)  # the papers' average over targets
        grouped = per_seed.groupby(level="label", sort=False)
        mean, std = grouped.mean(), grouped.std(ddof=1)
        order = sorted(mean.index, key=lambda label: (_METHOD_ORDER.index(label.split(" ")[0])
                                                      if label.split(" ")[0] in _METHOD_ORDER else 99, label))
        out[key] = (mean.loc[order], std.loc[order], grouped.size().loc[order])
    return out


def markdown_tables(df):
    """The tables of ``results.md``, as one markdown string.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~clip_invariance.evaluation.evaluate_store`.

    Returns
    -------
    text : str

    Examples
    --------
    >>> import pandas as pd
    >>> from clip_invariance.evaluation import markdown_tables
    >>> df = pd.DataFrame({"protocol": "dg", "split": "all", "selection": "lodo-cv", "method": "probe",
    ...                    "interventions": "none", "target": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
    ...                    "accuracy": [0.5, 0.7, 0.9, 0.9]})
    >>> print(markdown_tables(df))
    ## dg, split all, selection lodo-cv
    <BLANKLINE>
    Selection: lodo-cv -- hyper-parameters chosen by ... cross-validation; the target is never seen.
    <BLANKLINE>
    | method | a | b | avg |
    |---|---|---|---|
    | probe | 60.0 ± 14.1 | 90.0 ± 0.0 | 75.0 ± 7.1 |
    <BLANKLINE>
    Accuracy (%) on each target environment, mean ± std over 2 seed(s).
    <BLANKLINE>
    """
    blocks = []
    for (protocol, split, selection), (mean, std, count) in _summary(df).items():
        columns = list(mean.columns)
        lines = [f"## {protocol}, split {split}, selection {selection}", "",
                 SELECTION_LINES.get(selection, f"Selection: {selection}."), "",
                 "| method | " + " | ".join(map(str, columns)) + " |",
                 "|" + "---|" * (len(columns) + 1)]
        for label in mean.index:
            cells = [_cell(mean.loc[label, c], std.loc[label, c]) for c in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        seeds = sorted(set(count.tolist()))
        lines += ["", f"Accuracy (%) on each target environment, mean ± std over "
                      f"{'/'.join(map(str, seeds))} seed(s).", ""]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _cell(mean, std):
    if not np.isfinite(mean):
        return "--"
    return f"{mean:.1f}" if not np.isfinite(std) else f"{mean:.1f} ± {std:.1f}"


def write_results(df, output_dir, config=None):
    """Write ``results.csv``, ``results.md`` and ``config.json`` into ``output_dir``.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~clip_invariance.evaluation.evaluate_store`.
    output_dir : str or path
        Created if missing; files there of the same names are replaced.
    config : dict, default=None
        What to record in ``config.json``; ``None``: ``df.attrs["config"]``
        (set by ``evaluate_store``: rerun with
        ``evaluate_store(config["store"], **config["arguments"])``).

    Returns
    -------
    paths : dict
        ``"csv"``, ``"markdown"``, ``"config"`` -> the written files.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> from clip_invariance.evaluation import write_results
    >>> df = pd.DataFrame({"protocol": ["dg"], "split": ["all"], "selection": ["oracle"],
    ...                    "method": ["probe"], "target": ["a"], "seed": [0], "accuracy": [0.5]})
    >>> paths = write_results(df, tempfile.mkdtemp(), config={"seeds": [0]})
    >>> paths["markdown"].read_text().splitlines()[2]
    'ORACLE: hyper-parameters chosen on the target. Not a domain-generalisation result.'
    """
    config = df.attrs.get("config", {}) if config is None else config
    try:
        text = json.dumps(config, indent=2, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be JSON-serialisable: {exc}") from None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": output_dir / "results.csv", "markdown": output_dir / "results.md",
             "config": output_dir / "config.json"}
    df.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(markdown_tables(df), encoding="utf-8")
    paths["config"].write_text(text + "\n", encoding="utf-8")
    return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure  # no pyplot: no backend, no global state
    except ImportError as exc:
        raise ImportError("Plots need matplotlib: pip install 'clip-invariance[plots]'") from exc
    return Figure(**kwargs)


def plot_results(df, output_dir):
    """Per-target accuracy by method with error bars over seeds, one PNG per table of ``results.md``.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~clip_invariance.evaluation.evaluate_store`.
    output_dir : str or path
        Created if missing.

    Returns
    -------
    paths : list of pathlib.Path
        ``accuracy_<protocol>_<split>_<selection>.png``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (protocol, split, selection), (mean, std, _) in _summary(df).items():
        labels, groups = list(mean.index), list(mean.columns)
        fig_width = min(16.0, max(8.0, 2.5 + len(groups) * (0.9 + 0.25 * len(labels))))
        fig = _figure(figsize=(fig_width, 4.5), layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / len(labels)
        x = np.arange(len(groups))
        for i, label in enumerate(labels):
            errors = std.loc[label].fillna(0).to_numpy()
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, mean.loc[label].to_numpy(), width,
                   yerr=errors, capsize=2, label=label, color=_colour(i))
        # About 0.09 inch a character at this size; tilt the names when they would touch.
        long_names = 0.09 * max(len(str(g)) for g in groups) > 0.85 * (fig_width - 2.5) / len(groups)
        ax.set_xticks(x, groups, rotation=20 if long_names else 0, ha="right" if long_names else "center")
        ax.set_ylabel("target accuracy (%)")
        ax.set_ylim(0, 100)
        ax.axvline(len(groups) - 1.5, color="0.6", lw=0.8, ls=":")  # the average stands apart
        ax.grid(axis="y", alpha=0.3)
        title = f"{protocol}, split {split}: accuracy on the held-out environment\nselection {selection}"
        if selection == "oracle":
            title += " -- ORACLE: hyper-parameters chosen on the target"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        path = output_dir / f"accuracy_{protocol}_{split}_{selection}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def _colour(i):
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd"]
    return palette[i % len(palette)]


def plot_ablation(df, output_dir):
    """Target accuracy against ``K`` and against ``lam``: the papers' ablations, as one PNG.

    One line per target environment and their average (bold), error bars over
    seeds, the method without projection as a dashed reference. Titled
    "ablation: target accuracy, not used for selection".

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of ``evaluate_ablation`` (columns ``parameter`` and ``value``).
    output_dir : str or path
        Created if missing.

    Returns
    -------
    path : pathlib.Path
        ``ablation_<method>.png``.
    """
    if "parameter" not in df.columns:
        raise ValueError("plot_ablation needs the rows of evaluate_ablation (a 'parameter' column).")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    swept = df[df["parameter"] != "reference"]
    method = swept["method"].iloc[0]
    targets = list(dict.fromkeys(df["target"]))
    fig = _figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    reference = df[df["parameter"] == "reference"]
    for ax, name, xlabel in zip(axes, ("n_components", "lam"), ("K (n_components)", "lam")):
        part = swept[swept["parameter"] == name]
        fixed = "lam" if name == "n_components" else "n_components"
        per_seed = part.pivot_table(index=["value", "seed"], columns="target", values="accuracy") * 100
        per_seed = per_seed[[t for t in targets if t in per_seed.columns]]
        per_seed["avg"] = per_seed.mean(axis=1, skipna=False)
        grouped = per_seed.groupby(level="value")
        mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0)
        for i, column in enumerate(mean.columns):
            bold = column == "avg"
            ax.errorbar(mean.index, mean[column], yerr=std[column], marker="o", ms=4 if bold else 3,
                        capsize=2, lw=2.5 if bold else 1.2, color="black" if bold else _colour(i),
                        label=f"{column}")
        if len(reference):
            level = 100 * reference.groupby("seed")["accuracy"].mean().mean()
            ax.axhline(level, color="black", ls="--", lw=1, label=f"{reference['method'].iloc[0]} (avg)")
        values = np.asarray(mean.index, dtype=float)
        if len(values) > 1 and values.min() > 0 and values.max() / values.min() >= 8:
            ax.set_xscale("log", base=2 if name == "n_components" else 10)
        elif len(values) > 1 and values.min() == 0 and values.max() > 10:
            # The linear part ends at the smallest positive value, so 0 and it get their own ticks.
            ax.set_xscale("symlog", linthresh=values[values > 0].min())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        kept = part[fixed].dropna().unique()
        ax.set_xlabel(f"{xlabel}  ({fixed} = {', '.join(f'{v:g}' for v in kept)})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("target accuracy (%)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    selection = ", ".join(dict.fromkeys(swept["selection"]))
    fig.suptitle(f"ablation: target accuracy, not used for selection ({method}, other parameters "
                 f"by {selection})", fontsize=11)
    path = output_dir / f"ablation_{method}.png"
    fig.savefig(path, dpi=120)
    return path
