"""Write the table of ``clip-invariance demo`` that the user guide shows, by running it.

Run by ``docs/conf.py`` at every build; writes ``docs/_generated/demo.csv`` (not in git)::

    python docs/demo_table.py
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


def main():
    rows = evaluate_synthetic(n_samples=2000, normalize=False, random_state=0)  # the demo's defaults
    (DOCS / "_generated").mkdir(exist_ok=True)
    with open(DOCS / "_generated" / "demo.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS.values())
        for row in rows:
            env = f"{row['env']} (shifted)" if row["shifted"] else str(row["env"])
            writer.writerow([env] + [f"{row[key]:.3f}" for key in list(COLUMNS)[1:]])


if __name__ == "__main__":
    main()
