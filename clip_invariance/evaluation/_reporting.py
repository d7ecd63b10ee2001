"""Results of :func:`~clip_invariance.evaluation.evaluate_store` as files: tables, configuration, plots.

- :func:`write_results`: ``results.csv`` (the tidy rows), ``results.md``
  (mean +- std over seeds per target and on average, methods as rows, one
  table per protocol x split x selection rule, shaped like the papers'
  tables, with the images scored per target and the hyper-parameters
  chosen), ``config.json`` (everything needed to rerun, with the package
  versions, the hardware and the date) and, on request, ``results.tex``
  (:func:`latex_tables`: booktabs, the best of every column in bold);
- :func:`plot_results`: per-target accuracy by method, with error bars over
  seeds (where there are several) and the chance level;
- :func:`plot_ablation`: accuracy against ``K`` and against ``lam``
  (:func:`~clip_invariance.evaluation.evaluate_ablation`), labelled as
  descriptive: target accuracy across a grid is never used for selection.

pandas and matplotlib are imported when called (extras ``evaluate`` and ``plots``). Every file is
written to a new name and renamed over the old one, so that a link planted in the output folder
is replaced, never followed.
"""

import io
import json
import os
import platform
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ._methods import HYPER_PARAMETERS, METHODS

__all__ = ["SELECTION_LINES", "method_label", "markdown_tables", "latex_tables", "run_environment",
           "write_results", "chance_level", "plot_results", "plot_ablation"]

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
# How results.md names the hyper-parameters (the papers' K).
_SHORT_NAMES = {"n_components": "K"}
# A CSV cell starting with one of these is a formula to a spreadsheet: it is prefixed with "'".
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                   "|": r"\textbar{}"}


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
    """(protocol, split, selection) -> (mean, std, seeds, rows) of that table.

    ``mean`` and ``std`` (in %) are label x target frames with ``avg``, the
    papers' average over targets (per seed, then over seeds); ``seeds``
    counts the seeds of every label; ``rows`` are the table's rows of ``df``,
    with their ``label``.
    """
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
        order = sorted(mean.index, key=lambda label: (METHODS.index(label.split(" ")[0])
                                                      if label.split(" ")[0] in METHODS else len(METHODS),
                                                      label))
        out[key] = (mean.loc[order], std.loc[order], grouped.size().loc[order], part)
    return out


def _seed_counts(count):
    return "/".join(map(str, sorted(set(count.tolist()))))


def markdown_tables(df):
    """The tables of ``results.md``, as one markdown string.

    One section per protocol x split x selection rule: the accuracy table
    (mean ± std over seeds, in %), the images scored per target (from
    ``n_test``) and the hyper-parameters chosen for every method and target
    (the distinct values over seeds, ``/``-separated), when ``df`` has those
    columns. Names are escaped: a ``|`` in an environment's name stays in its cell.

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
    ...                    "accuracy": [0.5, 0.7, 0.9, 0.9], "C": [0.316, 3.16, 0.316, 0.316],
    ...                    "n_test": [10, 10, 20, 20]})
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
    Images scored per target: a 10, b 20.
    <BLANKLINE>
    Hyper-parameters chosen (the values over seeds):
    <BLANKLINE>
    | method | a | b |
    |---|---|---|
    | probe | C=0.316/3.16 | C=0.316 |
    <BLANKLINE>
    """
    blocks = []
    for (protocol, split, selection), (mean, std, count, rows) in _summary(df).items():
        columns = list(mean.columns)
        lines = [f"## {protocol}, split {split}, selection {selection}", "",
                 SELECTION_LINES.get(selection, f"Selection: {selection}."), "",
                 _markdown_row(["method", *columns]), "|" + "---|" * (len(columns) + 1)]
        for label in mean.index:
            cells = [_cell(mean.loc[label, c], std.loc[label, c]) for c in columns]
            lines.append(_markdown_row([label, *cells]))
        lines += ["", f"Accuracy (%) on each target environment, mean ± std over {_seed_counts(count)} "
                      "seed(s).", ""]
        targets = columns[:-1]
        if "n_test" in rows.columns:
            sizes = rows.groupby("target", sort=False)["n_test"].unique()
            counts = [f"{_markdown_text(t)} {'/'.join(str(int(n)) for n in sorted(sizes[t]))}"
                      for t in targets]
            lines += ["Images scored per target: " + ", ".join(counts) + ".", ""]
        chosen = _chosen_parameters(rows, list(mean.index), targets)
        if chosen:
            lines += ["Hyper-parameters chosen (the values over seeds):", "",
                      _markdown_row(["method", *targets]), "|" + "---|" * (len(targets) + 1)]
            lines += [_markdown_row([label, *cells]) for label, cells in chosen.items()]
            lines.append("")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _chosen_parameters(rows, labels, targets):
    """label -> one cell per target, e.g. ``K=8, lam=10/100``; labels without hyper-parameters left out."""
    names = [name for name in HYPER_PARAMETERS if name in rows.columns]
    out = {}
    for label in labels:
        mine = rows[rows["label"] == label]
        cells = []
        for target in targets:
            here = mine[mine["target"] == target].sort_values("seed", kind="stable")
            parts = []
            for name in names:
                values = list(dict.fromkeys(v for v in here[name].tolist() if v == v))  # NaN: none
                if values:
                    parts.append(f"{_SHORT_NAMES.get(name, name)}={'/'.join(f'{v:g}' for v in values)}")
            cells.append(", ".join(parts))
        if any(cells):
            out[label] = cells
    return out


def _markdown_text(value):
    """A name as one markdown table cell: ``|`` and ``\\`` escaped, line breaks made spaces."""
    return " ".join(str(value).split()).replace("\\", "\\\\").replace("|", "\\|")


def _markdown_row(cells):
    return "| " + " | ".join(_markdown_text(c) for c in cells) + " |"


def _cell(mean, std):
    if not np.isfinite(mean):
        return "--"
    return f"{mean:.1f}" if not np.isfinite(std) else f"{mean:.1f} ± {std:.1f}"


def latex_tables(df):
    r"""The tables of ``results.md`` as LaTeX (``results.tex``): booktabs, the best of every column in bold.

    One ``table`` per protocol x split x selection rule, methods as rows,
    targets and their average as columns, cells ``mean $\pm$ std`` over
    seeds (the mean alone for one seed), the highest mean of every column
    (as printed, ties included) in bold. Names are escaped. Needs
    ``\usepackage{booktabs}``.

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
    >>> from clip_invariance.evaluation import latex_tables
    >>> df = pd.DataFrame({"protocol": "dg", "split": "all", "selection": "oracle",
    ...                    "method": ["probe"] * 4 + ["zero-shot"] * 4, "interventions": "none",
    ...                    "target": ["a_1", "a_1", "b", "b"] * 2, "seed": [0, 1, 0, 1] * 2,
    ...                    "accuracy": [0.5, 0.7, 0.9, 0.9, 0.8, 0.8, 0.3, 0.5]})
    >>> print(latex_tables(df))
    % dg, split all, selection oracle
    \begin{table}[t]
    \centering
    \caption{Accuracy (\%) on each target environment (dg, split all), mean $\pm$ std over 2 seed(s).
    ORACLE: hyper-parameters chosen on the target. Not a domain-generalisation result.}
    \label{tab:dg-all-oracle}
    \begin{tabular}{lrrr}
    \toprule
    Method & a\_1 & b & avg \\
    \midrule
    zero-shot & \textbf{80.0 $\pm$ 0.0} & 40.0 $\pm$ 14.1 & 60.0 $\pm$ 7.1 \\
    probe & 60.0 $\pm$ 14.1 & \textbf{90.0 $\pm$ 0.0} & \textbf{75.0 $\pm$ 7.1} \\
    \bottomrule
    \end{tabular}
    \end{table}
    <BLANKLINE>
    """
    blocks = []
    for (protocol, split, selection), (mean, std, count, _) in _summary(df).items():
        columns = list(mean.columns)
        shown = mean.round(1)
        best = shown.max(axis=0)  # skips NaN
        selection_line = SELECTION_LINES.get(selection, f"Selection: {selection}.")
        lines = [f"% {protocol}, split {split}, selection {selection}", r"\begin{table}[t]", r"\centering",
                 rf"\caption{{Accuracy (\%) on each target environment ({_latex(protocol)}, split "
                 rf"{_latex(split)}), mean $\pm$ std over {_seed_counts(count)} seed(s).",
                 _latex(selection_line) + "}",
                 rf"\label{{tab:{protocol}-{split}-{selection}}}",
                 r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
                 " & ".join(_latex(c) for c in ["Method", *columns]) + r" \\", r"\midrule"]
        for label in mean.index:
            cells = []
            for c in columns:
                cell = _cell(mean.loc[label, c], std.loc[label, c]).replace("±", r"$\pm$")
                if np.isfinite(mean.loc[label, c]) and shown.loc[label, c] == best[c]:
                    cell = rf"\textbf{{{cell}}}"
                cells.append(cell)
            lines.append(" & ".join([_latex(label), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _latex(value):
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in " ".join(str(value).split()))


def run_environment():
    """What ran the evaluation: package versions, hardware, and the date (UTC), for ``config.json``.

    The torch device is recorded only when torch is already imported
    (``"not loaded"`` otherwise): importing torch to describe it would cost
    seconds an evaluation on a store never spends.

    Returns
    -------
    environment : dict
        ``"versions"`` (distribution -> version, None when not installed),
        ``"hardware"`` (platform, machine, processor, Python, CPU count, torch
        device) and ``"date"`` (ISO 8601, UTC).

    Examples
    --------
    >>> import os
    >>> from clip_invariance.evaluation import run_environment
    >>> environment = run_environment()
    >>> sorted(environment["versions"])
    ['clip-invariance', 'numpy', 'open_clip_torch', 'scikit-learn', 'torch']
    >>> environment["hardware"]["cpu_count"] == os.cpu_count()
    True
    """
    from importlib import metadata

    versions = {"clip-invariance": __version__}
    for name in ("torch", "open_clip_torch", "scikit-learn", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware = {"platform": platform.platform(), "machine": platform.machine(),
                "processor": platform.processor() or None, "python": platform.python_version(),
                "cpu_count": os.cpu_count(), "torch_device": _torch_device()}
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"versions": versions, "hardware": hardware, "date": date}


def _torch_device():
    torch = sys.modules.get("torch")
    if torch is None:
        return "not loaded"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return "cuda: " + ", ".join(names)
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def write_results(df, output_dir, config=None, *, latex=False):
    """Write ``results.csv``, ``results.md``, ``config.json`` (and ``results.tex``) into ``output_dir``.

    Each file is written to a new name in ``output_dir`` and renamed over
    the old one: a link planted where a result goes is replaced, not
    followed. In ``results.csv``, a text cell that a spreadsheet would run
    as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return) is prefixed with ``'``.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~clip_invariance.evaluation.evaluate_store`.
    output_dir : str or path
        Created if missing; files there of the same names are replaced.
    config : dict, default=None
        What to record in ``config.json``; ``None``: ``df.attrs["config"]``
        (set by ``evaluate_store``: rerun with
        ``evaluate_store(config["store"], **config["arguments"])``). The
        ``"versions"``, ``"hardware"`` and ``"date"`` of
        :func:`run_environment` are added where ``config`` lacks them.
    latex : bool, default=False
        Also write ``results.tex`` (:func:`latex_tables`).

    Returns
    -------
    paths : dict
        ``"csv"``, ``"markdown"``, ``"config"`` (and ``"latex"``) -> the written files.

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
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}.")
    config = {**config, **{k: v for k, v in run_environment().items() if k not in config}}
    try:
        text = json.dumps(config, indent=2, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be JSON-serialisable: {exc}") from None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": output_dir / "results.csv", "markdown": output_dir / "results.md",
             "config": output_dir / "config.json"}
    _write(paths["csv"], _spreadsheet_safe(df).to_csv(index=False).encode("utf-8"))
    _write(paths["config"], (text + "\n").encode("utf-8"))
    _write(paths["markdown"], markdown_tables(df).encode("utf-8"))
    if latex:
        paths["latex"] = output_dir / "results.tex"
        _write(paths["latex"], latex_tables(df).encode("utf-8"))
    return paths


def _write(path, data):
    """Write ``data`` to a new file beside ``path``, then rename it over ``path`` (a link is replaced)."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # O_EXCL: never through a link
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _spreadsheet_safe(df):
    """``df`` with every text cell a spreadsheet would run as a formula prefixed with ``'``."""
    from pandas.api.types import is_numeric_dtype

    out = df.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):  # object or string columns (pandas 3 infers str)
            out[column] = out[column].map(
                lambda v: f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v)
    return out


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


def chance_level(protocol, split, n_classes):
    """Accuracy (0-1) of a uniform guess among the classes a split is scored among.

    ``dg`` and ``open-class`` score among all ``C`` classes (the image-only
    heads of ``open-class`` among the base ones); ``base-to-new`` scores its
    base images among the first ``ceil(C / 2)`` classes and its new images among
    the other ``floor(C / 2)``; the harmonic mean of those two chances is ``2 / C``.

    Parameters
    ----------
    protocol : {"dg", "open-class", "base-to-new"}
    split : str
        The ``split`` of a result row (``"all"``, ``"base"``, ``"new"``, ...).
    n_classes : int
        The store's number of classes ``C``.

    Returns
    -------
    chance : float

    Examples
    --------
    >>> from clip_invariance.evaluation import chance_level
    >>> chance_level("dg", "all", 7), chance_level("base-to-new", "new", 7)
    (0.14285714285714285, 0.3333333333333333)
    """
    if protocol == "base-to-new" and split in ("base", "new"):
        n_classes = (n_classes + 1) // 2 if split == "base" else n_classes // 2
    if protocol == "base-to-new" and split == "harmonic":  # H(1 / b, 1 / n) = 2 / (b + n), b + n = C
        return 2 / n_classes
    return 1 / n_classes


def plot_results(df, output_dir, *, n_classes=None):
    """Per-target accuracy by method, one PNG per table of ``results.md``.

    Error bars (one standard deviation over seeds) only for the methods run
    with more than one seed; a dashed line at the chance level
    (:func:`chance_level`) when ``n_classes`` is given.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~clip_invariance.evaluation.evaluate_store`.
    output_dir : str or path
        Created if missing.
    n_classes : int, default=None
        The store's number of classes, for the chance line; ``None``: no line.

    Returns
    -------
    paths : list of pathlib.Path
        ``accuracy_<protocol>_<split>_<selection>.png``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (protocol, split, selection), (mean, std, count, _) in _summary(df).items():
        labels, groups = list(mean.index), list(mean.columns)
        fig_width = min(16.0, max(8.0, 2.5 + len(groups) * (0.9 + 0.25 * len(labels))))
        fig = _figure(figsize=(fig_width, 4.5), layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / len(labels)
        x = np.arange(len(groups))
        for i, label in enumerate(labels):
            # One seed has no spread: no bar rather than a zero-width one that reads as "no variance".
            errors = std.loc[label].fillna(0).to_numpy() if count.loc[label] > 1 else None
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, mean.loc[label].to_numpy(), width,
                   yerr=errors, capsize=2, label=label, color=_colour(i))
        if n_classes is not None:
            level = 100 * chance_level(protocol, split, n_classes)
            ax.axhline(level, color="0.3", ls="--", lw=1, label=f"chance ({level:.1f}%)")
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
        _save(fig, path)
        paths.append(path)
    return paths


def _save(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    _write(path, buffer.getvalue())


def _colour(i):
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd"]
    return palette[i % len(palette)]


def plot_ablation(df, output_dir, *, n_classes=None):
    """Target accuracy against ``K`` and against ``lam``: the papers' ablations, as one PNG.

    One line per target environment and their average (bold), error bars over
    seeds (with more than one), the method without projection as a dashed
    reference, the chance level dotted when ``n_classes`` is given. Titled
    "ablation: target accuracy, not used for selection".

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of ``evaluate_ablation`` (columns ``parameter`` and ``value``).
    output_dir : str or path
        Created if missing.
    n_classes : int, default=None
        The store's number of classes, for the chance line; ``None``: no line.

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
        several = part["seed"].nunique() > 1
        for i, column in enumerate(mean.columns):
            bold = column == "avg"
            ax.errorbar(mean.index, mean[column], yerr=std[column] if several else None, marker="o",
                        ms=4 if bold else 3,
                        capsize=2, lw=2.5 if bold else 1.2, color="black" if bold else _colour(i),
                        label=f"{column}")
        if len(reference):
            level = 100 * reference.groupby("seed")["accuracy"].mean().mean()
            ax.axhline(level, color="black", ls="--", lw=1, label=f"{reference['method'].iloc[0]} (avg)")
        if n_classes is not None:
            ax.axhline(100 / n_classes, color="0.3", ls=":", lw=1, label=f"chance ({100 / n_classes:.1f}%)")
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
    _save(fig, path)
    return path
