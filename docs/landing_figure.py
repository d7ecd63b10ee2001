"""Draw the landing page's figure from the table of ``clip-invariance demo`` (``docs/demo_table.py``).

Writes ``docs/_static/figures/landing_demo.png``, committed and read by the docs build as it is. The
figure records the SHA-256 of ``docs/tables/demo.csv`` and of this script, and ``tests/test_readme.py``
fails while either changed since it was drawn (``docs/committed_figure.py``)::

    python docs/demo_table.py && python docs/landing_figure.py
"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from committed_figure import save  # noqa: E402

DOCS = Path(__file__).resolve().parent
SHOWN = {  # demo.csv column -> label and colour in the figure
    "zero-shot CLIP": ("zero-shot CLIP", "#bbbbbb"),
    "linear probe": ("linear probe", "#e69f00"),
    "probe, invariant subspace": ("probe, invariant subspace (CLIP-ICM)", "#0072b2"),
    "oracle (true invariant latents)": ("oracle (true invariant latents)", "#222222"),
}


def main():
    table = DOCS / "tables" / "demo.csv"
    with open(table, newline="") as file:
        rows = list(csv.DictReader(file))
    environments = [row["held-out environment"] for row in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.9), dpi=150)
    width = 0.8 / len(SHOWN)
    for i, (column, (label, colour)) in enumerate(SHOWN.items()):
        accuracy = [100 * float(row[column]) for row in rows]
        positions = [e + (i - (len(SHOWN) - 1) / 2) * width for e in range(len(rows))]
        ax.bar(positions, accuracy, width, label=label, color=colour)
    ax.set_xticks(range(len(rows)), environments)
    ax.set_xlabel("held-out environment (the model never saw it)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Synthetic benchmark, leave one environment out (clip-invariance demo)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    print(f"wrote {save(fig, 'landing_demo.png', [table, Path(__file__)])}")
    plt.close(fig)


if __name__ == "__main__":
    main()
