"""Write the table of ``docs/projection.rst``: how well each source of interventions recovers the subspace.

Writes ``docs/tables/projection_sources.csv``, which is committed (so that the page renders on a code
host too) and which the docs build reads as it is. Rerun after a change to the generator or the
projector; ``tests/test_docs.py`` reruns this script and fails while the committed table differs from
what it writes::

    python docs/projection_table.py

The synthetic generator knows the true invariant subspace, so the overlap of the learned one with it
(:func:`clip_invariance.invariance.subspace_overlap`, 1 = identical) is measured, not estimated.
"""

import csv
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's package

from clip_invariance import InvariantProjector  # noqa: E402
from clip_invariance.datasets import make_invariant_embeddings  # noqa: E402
from clip_invariance.invariance import subspace_overlap  # noqa: E402
from clip_invariance.views import stack_views  # noqa: E402

K = 8  # the generator's invariant dimension


def overlaps(normalize):
    """Overlap with the true subspace for each source of interventions, default ``lam``."""
    data = make_invariant_embeddings(n_samples=3000, normalize=normalize, random_state=1)
    X, view_groups = stack_views(data.X, *data.X_views)
    text = {"intervention_embeddings": data.text_interventions,
            "intervention_view_groups": data.text_view_groups}
    many = make_invariant_embeddings(n_samples=3000, n_environments=9, normalize=normalize, random_state=1)
    separated = make_invariant_embeddings(n_samples=3000, class_separation=3.0, normalize=normalize,
                                          random_state=1)
    fits = {
        "image pairs (view groups)": (InvariantProjector(K), data, (X,), {"view_groups": view_groups}),
        "text interventions": (InvariantProjector(K, **text), data, (data.X,), {}),
        "both": (InvariantProjector(K, **text), data, (X,), {"view_groups": view_groups}),
        "environments (9 environments)": (InvariantProjector(K), many, (many.X, many.y),
                                          {"environments": many.environments}),
        "labels alone (class separation 3)": (InvariantProjector(K), separated,
                                              (separated.X, separated.y), {}),
    }
    return {source: subspace_overlap(projector.fit(*args, **kwargs).components_.T, bunch.invariant_basis)
            for source, (projector, bunch, args, kwargs) in fits.items()}


def main(out=DOCS / "tables" / "projection_sources.csv"):
    raw, normalised = overlaps(False), overlaps(True)
    with open(out, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["source of interventions", "raw embeddings", "L2-normalised embeddings"])
        for source in raw:
            writer.writerow([source, f"{raw[source]:.3f}", f"{normalised[source]:.3f}"])


if __name__ == "__main__":
    main(*sys.argv[1:])
