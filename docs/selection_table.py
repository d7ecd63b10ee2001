"""Write ``docs/tables/selection_rules.csv``: which selection rule picks ``K``, ``lam`` and ``C`` well.

Too slow for every docs build (24 evaluations with the default grids), so it is run by hand and its
table is committed; ``docs/evaluation.rst`` shows it::

    python docs/selection_table.py              # all seeds, about 10-30 minutes on 2 cores
    python docs/selection_table.py --seeds 0    # a quick look

On stores of the synthetic benchmark (:func:`~clip_invariance.datasets.make_invariant_embeddings`,
2,000 images, 4 environments, the last one with a new style and a permuted spurious correlation), for
each rule: the gain of ``probe-icm`` over ``probe`` (both tuned by the rule) on the shifted environment
and on average over targets, and the regret of the chosen ``probe-icm`` against the oracle rule's.
"""

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's package

from clip_invariance.datasets import make_invariant_embeddings, save_embeddings  # noqa: E402
from clip_invariance.evaluation import evaluate_store  # noqa: E402

ENVIRONMENTS = ["photo", "art_painting", "cartoon", "sketch"]  # the last one is shifted
RULES = ["source-val", "lodo-cv", "views-val", "oracle"]


def accuracies(folder, normalize, seed):
    """Per rule, per method, per target: accuracy (%) on one store."""
    data = make_invariant_embeddings(n_samples=2000, normalize=normalize, random_state=seed)
    store = str(Path(folder) / f"store-{normalize}-{seed}")
    save_embeddings(store, X=data.X, y=data.y, environments=np.array(ENVIRONMENTS)[data.environments],
                    environment_names=ENVIRONMENTS, views=data.X_views.transpose(1, 0, 2),
                    prompt_embeddings=data.prompt_embeddings, text_interventions=data.text_interventions,
                    text_view_groups=data.text_view_groups)
    out = {}
    for rule in RULES:
        rows = evaluate_store(store, methods=["probe", "probe-icm"], selection=rule, interventions="both",
                              seeds=[0])
        cells = rows[["method", "target", "accuracy"]].itertuples(index=False)
        out[rule] = {(method, target): 100 * accuracy for method, target, accuracy in cells}
    return out


def main(seeds):
    table = []
    with tempfile.TemporaryDirectory() as folder:
        for normalize in (True, False):
            runs = [accuracies(folder, normalize, seed) for seed in seeds]
            for rule in RULES:
                gain_shift = [r[rule]["probe-icm", "sketch"] - r[rule]["probe", "sketch"] for r in runs]
                gain_avg = [np.mean([r[rule]["probe-icm", t] - r[rule]["probe", t] for t in ENVIRONMENTS])
                            for r in runs]
                regret_avg = np.mean([np.mean([r["oracle"]["probe-icm", t] - r[rule]["probe-icm", t]
                                               for t in ENVIRONMENTS]) for r in runs])
                regret_shift = np.mean([r["oracle"]["probe-icm", "sketch"] - r[rule]["probe-icm", "sketch"]
                                        for r in runs])
                table.append(["L2-normalised" if normalize else "raw", rule,
                              f"{np.mean(gain_shift):+.1f} ± {np.std(gain_shift):.1f}",
                              f"{np.mean(gain_avg):+.1f} ± {np.std(gain_avg):.1f}",
                              f"{regret_avg:.1f}", f"{regret_shift:.1f}"])
    (DOCS / "tables").mkdir(exist_ok=True)
    with open(DOCS / "tables" / "selection_rules.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["embeddings", "rule", "gain, shifted environment", "gain, average",
                         "regret, average", "regret, shifted environment"])
        writer.writerows(table)
    for row in table:
        print(" | ".join(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="generator seeds, comma list")
    main([int(seed) for seed in parser.parse_args().seeds.split(",")])
