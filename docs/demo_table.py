"""Write the table of ``clip-invariance demo`` that the user guide shows, by running it.

Writes ``docs/tables/demo.csv``, which is committed (so that the guide renders on a code host too) and
which the docs build reads as it is; ``docs/landing_figure.py`` draws it. Rerun both after a change to the
generator or the estimators; ``tests/test_docs.py`` reruns this script and fails while the committed table
differs from what it writes::

    python docs/demo_table.py && python docs/landing_figure.py
"""

import csv
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's package

from clip_invariance.evaluation import evaluate_synthetic  # noqa: E402

COLUMNS = {  # demo row key -> table heading
    "env": "held-out environment",
    "zero-shot": "zero-shot CLIP",
    "probe": "linear probe",
    "ZS ICM": "zero-shot, invariant subspace",
    "probe ICM": "probe, invariant subspace",
    "oracle": "oracle (true invariant latents)",
}


def main(out=DOCS / "tables" / "demo.csv"):
    rows = evaluate_synthetic(n_samples=2000, normalize=False, random_state=0)  # the demo's defaults
    with open(out, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(COLUMNS.values())
        for row in rows:
            env = f"{row['env']} (shifted)" if row["shifted"] else str(row["env"])
            writer.writerow([env] + [f"{row[key]:.3f}" for key in list(COLUMNS)[1:]])


if __name__ == "__main__":
    main(*sys.argv[1:])
