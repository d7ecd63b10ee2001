"""Draw the ablation of the user guide (``docs/guide/choosing.rst``) from ``docs/tables/ablation.csv``.

``examples/plot_ablation.py`` writes the table; this script plots it as two line plots, target accuracy
against ``K`` and against ``lam``, into ``docs/_static/figures/ablation.png``, committed and read by the
docs build as it is. The figure records the SHA-256 of the table and of this script, and
``tests/test_readme.py`` fails while either changed since it was drawn (``docs/committed_figure.py``)::

    python docs/ablation_figure.py
"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from committed_figure import save  # noqa: E402

DOCS = Path(__file__).resolve().parent
MEAN = "mean target accuracy (%)"
SHIFTED = "environment 3, shifted (%)"


def main():
    table = DOCS / "tables" / "ablation.csv"
    with open(table, newline="") as file:
        rows = list(csv.DictReader(file))
    baseline = next(row for row in rows if not row["value"])
    chosen_by = next(column for column in rows[0] if column.startswith("chosen by "))  # the rule's name
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=150, sharey=True)
    for ax, swept in zip(axes, ("K", "lam")):
        part = [row for row in rows if row["swept"] == swept]
        positions = range(len(part))  # evenly spaced: the grids are (roughly) geometric and lam starts at 0
        for column, style, label in ((MEAN, "o-", "mean over held-out environments"),
                                     (SHIFTED, "s--", "the shifted environment")):
            ax.plot(positions, [float(row[column]) for row in part], style, label=label, markersize=4)
        chosen = [(i, row) for i, row in enumerate(part) if int(row[chosen_by].split()[0])]  # "3 of 4"
        for i, row in chosen:
            ax.annotate(f"chosen\n{row[chosen_by]}", (i, float(row[MEAN])), xytext=(0, -34),
                        textcoords="offset points", ha="center", fontsize=7,
                        arrowprops={"arrowstyle": "-", "lw": 0.6})
        ax.axhline(float(baseline[MEAN]), color="grey", lw=1, ls=":", label="zero-shot CLIP (mean)")
        ax.set_xticks(list(positions), [row["value"] for row in part])
        ax.set_xlabel(f"{swept}  ({part[0]['held fixed']})")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("target accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Zero-shot in the invariant subspace, synthetic benchmark: target accuracy, never used to "
                 "choose (examples/plot_ablation.py)", fontsize=8)
    fig.tight_layout()
    print(f"wrote {save(fig, 'ablation.png', [table, Path(__file__)])}")
    plt.close(fig)


if __name__ == "__main__":
    main()
