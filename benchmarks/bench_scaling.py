"""How each CPU step of the data path grows with N, D, views and classes, one axis at a time.

The steps, on synthetic CLIP-like embeddings (``make_invariant_embeddings``, L2-normalised, float32):

projector fit        ``InvariantProjector(K=D/8).fit`` on the N x views rows, view groups given
projector transform  ``transform`` of the N images
probe fit            ``make_probe()`` (the papers' ``LogisticRegression(C=0.316)``) on the N x views rows
zero-shot predict    ``ZeroShotInvariantClassifier(prompts)``, 2,000 test images
prototype predict    ``ZeroShotInvariantClassifier()`` (the class means of the N images), 2,000 test images
Tip-Adapter predict  ``TipAdapterClassifier(prompts)``, its cache the N images, 2,000 test images

Each axis is varied alone, the others held at N=8,000 images, D=512, 2 views (the image and one
augmented copy: the projector needs pairs, so there is no one-view setting), 10 classes. Every step runs
its BLAS on one thread (threadpoolctl) and is timed three times, the settings of an axis in turn (so that
a change of load on the machine hits them alike; a step under 0.1 s is looped until it has run 0.1 s);
the table gives the median CPU time of one call (on a shared machine the robust figure; one thread, so
it is close to the wall clock on a quiet one), its ratio to the axis's smallest setting at every setting,
and the log-log slope between the two largest settings (1: linear, 2: quadratic; the smaller settings
carry fixed overheads), the probe's ``lbfgs`` iterations at each setting (its cost is iterations times
a pass over the rows), and the machine's CPU count and its load average at the end of each axis. Data
generation and the fits that predictions need are not timed.

    python benchmarks/bench_scaling.py            # prints the table (about four minutes)
    python benchmarks/bench_scaling.py --write    # and writes docs/tables/scaling.csv and the figure
    python benchmarks/bench_scaling.py --plot     # redraws the figure from docs/tables/scaling.csv

The figure, ``docs/_static/figures/scaling.png``, plots each step's ratio against the axis's ratio on
log-log axes, with the slopes 1 (dotted) and 2 (dashed) for reference.
"""

import argparse
import csv
import gc
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package
sys.path.insert(0, str(ROOT / "docs"))  # committed_figure

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier  # noqa: E402
from clip_invariance.baselines import TipAdapterClassifier  # noqa: E402
from clip_invariance.datasets import make_invariant_embeddings  # noqa: E402
from clip_invariance.evaluation import make_probe  # noqa: E402
from clip_invariance.views import stack_views  # noqa: E402

TABLE = ROOT / "docs" / "tables" / "scaling.csv"
FIGURE = "scaling.png"
DEFAULTS = {"N": 8000, "D": 512, "views": 2, "classes": 10}
AXES = {"N": [2000, 4000, 8000, 16000, 32000], "D": [128, 256, 512, 1024], "views": [2, 4, 8],
        "classes": [2, 10, 30, 100]}
N_TEST = 2000
REPEAT = 3
STEPS = ["projector fit", "projector transform", "probe fit", "zero-shot predict", "prototype predict",
         "Tip-Adapter predict"]
COLUMNS = ["step", "grows with", "settings", "held fixed", "CPU s at smallest", "CPU s at largest",
           "ratio to smallest", "log-log slope (two largest)", "lbfgs iterations", "cpus", "load (1 min)"]


def data(N, D, views, classes, seed=0):
    """Training rows (N images x views, stack_views layout), their labels, the N images, test images,
    prompts."""
    bunch = make_invariant_embeddings(n_samples=N + N_TEST, n_features=D, n_classes=classes,
                                      n_augmented=views - 1, normalize=True, random_state=seed)
    X = bunch.X.astype(np.float32)
    train = slice(0, N)
    rows, view_groups = stack_views(X[train], *(V[train].astype(np.float32) for V in bunch.X_views))
    return {"rows": rows, "view_groups": view_groups, "y_rows": np.tile(bunch.y[train], views),
            "X": X[train], "y": bunch.y[train], "X_test": X[N:],
            "prompts": bunch.prompt_embeddings.astype(np.float32)}


def cpu_seconds(fn, at_least=0.1):
    """CPU seconds of one call, the call looped until it has taken ``at_least`` seconds (a millisecond
    step is timed over many calls, as ``timeit`` does)."""
    gc.collect()
    loops, start = 0, time.process_time()
    while True:
        fn()
        loops += 1
        spent = time.process_time() - start
        if spent >= at_least:
            return spent / loops


def steps(d, D):
    """The timed calls on one data set, each a function of nothing; the models predicted from are
    fitted here, untimed, and so is one probe, whose iterations the table gives."""
    iterations = int(make_probe().fit(d["rows"], d["y_rows"]).n_iter_[0])
    projector = InvariantProjector(n_components=D // 8).fit(d["rows"], view_groups=d["view_groups"])
    zero_shot = ZeroShotInvariantClassifier(d["prompts"]).fit(d["X"], d["y"])
    prototype = ZeroShotInvariantClassifier().fit(d["X"], d["y"])
    tip = TipAdapterClassifier(d["prompts"]).fit(d["X"], d["y"])
    return {
        "projector fit": lambda: InvariantProjector(n_components=D // 8).fit(d["rows"],
                                                                             view_groups=d["view_groups"]),
        "projector transform": lambda: projector.transform(d["X"]),
        "probe fit": lambda: make_probe().fit(d["rows"], d["y_rows"]),
        "zero-shot predict": lambda: zero_shot.predict(d["X_test"]),
        "prototype predict": lambda: prototype.predict(d["X_test"]),
        "Tip-Adapter predict": lambda: tip.predict(d["X_test"]),
    }, iterations


def run():
    rows = []
    for axis, values in AXES.items():
        start = time.perf_counter()
        calls, iterations = [], []
        for value in values:
            setting = {**DEFAULTS, axis: value}
            call, n_iter = steps(data(**setting), setting["D"])
            calls.append(call)
            iterations.append(str(n_iter))
        # Interleaved: every turn times every setting once, so that a change of load hits them alike.
        times = [{step: [] for step in STEPS} for _ in values]
        for _ in range(REPEAT):
            for timed, call in zip(times, calls):
                for step in STEPS:
                    timed[step].append(cpu_seconds(call[step]))
        medians = [{step: float(np.median(t[step])) for step in STEPS} for t in times]
        calls = None  # free the data before the next axis
        fixed = ", ".join(f"{name}={v}" for name, v in DEFAULTS.items() if name != axis)
        load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""  # at the end of the axis
        print(f"{axis}: {time.perf_counter() - start:.0f} s with the data, load {load}", flush=True)
        for step in STEPS:
            t = [m[step] for m in medians]
            slope = math.log(t[-1] / t[-2]) / math.log(values[-1] / values[-2])
            rows.append({
                "step": step, "grows with": axis, "settings": " / ".join(str(v) for v in values),
                "held fixed": fixed, "CPU s at smallest": f"{t[0]:.4f}", "CPU s at largest": f"{t[-1]:.4f}",
                "ratio to smallest": " / ".join(f"{x / t[0]:.2f}" for x in t), "log-log slope (two largest)":
                f"{slope:.2f}", "lbfgs iterations": " / ".join(iterations) if step == "probe fit" else "",
                "cpus": os.cpu_count(), "load (1 min)": load,
            })
    return rows


def write_table(rows):
    TABLE.parent.mkdir(exist_ok=True)
    with open(TABLE, "w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot():
    """The figure, from the committed table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from committed_figure import save

    with open(TABLE, newline="") as file:
        rows = list(csv.DictReader(file))
    fig, axes = plt.subplots(1, len(AXES), figsize=(12, 3.4), dpi=100, sharey=True)
    markers = dict(zip(STEPS, "os^vDx"))
    top = max(float(r) for row in rows for r in row["ratio to smallest"].split(" / "))
    for ax, axis in zip(axes, AXES):
        part = [row for row in rows if row["grows with"] == axis]
        values = [float(v) for v in part[0]["settings"].split(" / ")]
        x = [v / values[0] for v in values]
        for row in part:
            ratios = [float(r) for r in row["ratio to smallest"].split(" / ")]
            ax.plot(x, ratios, marker=markers[row["step"]], markersize=4, linewidth=1.2, label=row["step"])
        for slope, style in ((1, ":"), (2, "--")):  # the references, clipped to the measured range
            ax.plot(x, [v ** slope for v in x], style, color="black", linewidth=0.8, alpha=0.6,
                    label=f"slope {slope}" if axis == "N" else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_xlabel(f"{axis} ({part[0]['held fixed']})", fontsize=7)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("CPU time / time at smallest setting")
    axes[0].set_ylim(0.4, 2 * top)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=8, fontsize=7, frameon=False)
    fig.suptitle("How each step grows, one axis at a time (benchmarks/bench_scaling.py; one BLAS thread, "
                 "median of 3)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out = save(fig, FIGURE, [TABLE, Path(__file__)])
    plt.close(fig)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/tables/scaling.csv and the figure")
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from the table")
    args = parser.parse_args()
    if args.plot:
        print(f"wrote {plot()}")
        return
    start = time.perf_counter()
    with threadpool_limits(1):
        rows = run()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"total {time.perf_counter() - start:.0f} s, load average (1 min) at the end {load:.2f} "
          f"({os.cpu_count()} cpus)")
    width = max(len(step) for step in STEPS)
    for row in rows:
        print(f"{row['step']:<{width}}  {row['grows with']:<7}  {row['ratio to smallest']:<40}  "
              f"slope {row['log-log slope (two largest)']}")
    if args.write:
        write_table(rows)
        print(f"wrote {TABLE} and {plot()}")


if __name__ == "__main__":
    main()
