"""Draw the causal graphs of the two methods, offline, with matplotlib alone.

Writes ``docs/_static/figures/causal_graph_icm.png`` and ``causal_graph_front_door.png``, which are
committed (so that the guide's pages render on a code host too) and which the docs build reads as they
are. Rerun after changing this script; each figure records this script's SHA-256 and
``tests/test_readme.py`` fails while a figure is older than its script (``docs/committed_figure.py``)::

    python docs/causal_graphs.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from committed_figure import save  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

RADIUS = 0.42
COLOURS = {"observed": "#dbe9f6", "latent": "#ffffff", "intervention": "#fde2c8", "confounder": "#eeeeee"}


def node(ax, xy, label, kind="observed", caption=None):
    """A circle with a mathtext label; latent nodes dashed; an optional caption underneath."""
    style = "--" if kind in ("latent", "confounder") else "-"
    ax.add_patch(plt.Circle(xy, RADIUS, facecolor=COLOURS[kind], edgecolor="black", linestyle=style,
                            linewidth=1.4, zorder=2))
    ax.text(*xy, label, ha="center", va="center", fontsize=15, zorder=3)
    if caption:
        ax.text(xy[0], xy[1] - RADIUS - 0.12, caption, ha="center", va="top", fontsize=9, zorder=3)


def edge(ax, start, end, *, style="-", colour="black", label=None, curve=0.0, label_offset=(0, 0.15)):
    """An arrow between two node centres, stopping at the circles."""
    arrow = FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, linestyle=style,
                            color=colour, linewidth=1.4, shrinkA=RADIUS * 72, shrinkB=RADIUS * 72,
                            connectionstyle=f"arc3,rad={curve}", zorder=1)
    ax.add_patch(arrow)
    if label:
        middle = ((start[0] + end[0]) / 2 + label_offset[0], (start[1] + end[1]) / 2 + label_offset[1])
        ax.text(*middle, label, ha="center", va="center", fontsize=9, color=colour,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1}, zorder=3)


def canvas(width, height, title):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=12)
    return fig, ax


def draw_icm():
    """CLIP-ICM: Y -> z_inv -> X <- z_var <- E, with Y -> z_var spurious; an intervention sets z_var."""
    fig, ax = canvas(8.0, 5.6, "CLIP-ICM: invariant and variant latents, interventions on the variant part")
    Y, E = (1.2, 4.4), (6.8, 4.4)
    z_inv, z_var = (2.8, 3.0), (5.2, 3.0)
    X, do = (4.0, 1.6), (6.8, 1.6)
    node(ax, Y, "$Y$", caption="class")
    node(ax, E, "$E$", caption="environment")
    node(ax, z_inv, r"$z_{inv}$", "latent", caption="invariant")
    node(ax, z_var, r"$z_{var}$", "latent", caption="variant")
    node(ax, X, "$X$", caption="image embedding")
    node(ax, do, r"$do$", "intervention", caption="augmentation,\ntext style")
    edge(ax, Y, z_inv)
    edge(ax, E, z_var)
    edge(ax, Y, z_var, style="--", colour="#b03030", label="spurious in the\ntraining environments",
         curve=-0.12, label_offset=(0.0, 0.75))
    edge(ax, z_inv, X)
    edge(ax, z_var, X)
    edge(ax, do, z_var, colour="#c06000", label=r"changes $z_{var}$ only", label_offset=(0.55, 0.0))
    ax.text(4.0, 0.3, r"projection $A^\top X$ keeps $z_{inv}$: learned from pairs that differ by $do$",
            ha="center", va="center", fontsize=9)
    return fig


def draw_front_door():
    """CDC: X -> S (decoupled semantics, one per template/view pair) -> Y, confounder G -> X, G -> Y."""
    fig, ax = canvas(8.0, 4.4, "CDC: front-door adjustment through decoupled semantics")
    X, S, Y, G = (1.3, 1.4), (4.0, 1.4), (6.7, 1.4), (4.0, 3.4)
    node(ax, X, "$X$", caption="image")
    node(ax, S, "$S$", caption="decoupled semantics:\nM templates x views")
    node(ax, Y, "$Y$", caption="class")
    node(ax, G, "$G$", "confounder", caption=None)
    ax.text(G[0] + RADIUS + 0.15, G[1], "task-irrelevant\ngenerative factors\n(unobserved)", ha="left",
            va="center", fontsize=9)
    edge(ax, X, S, label="$P(s | x)$")
    edge(ax, S, Y, label="$P(y | x', s)$")
    edge(ax, G, X, style="--", colour="#b03030")
    edge(ax, G, Y, style="--", colour="#b03030", label="back door", label_offset=(0.25, 0.2))
    ax.text(4.0, 0.1, r"$P(y | do(x)) = \sum_s P(s | x) \sum_{x'} P(y | x', s) P(x')$",
            ha="center", va="center", fontsize=11)
    return fig


def main():
    for name, draw in [("causal_graph_icm", draw_icm), ("causal_graph_front_door", draw_front_door)]:
        fig = draw()
        print(f"wrote {save(fig, f'{name}.png', [Path(__file__)], dpi=110, bbox_inches='tight')}")
        plt.close(fig)


if __name__ == "__main__":
    main()
