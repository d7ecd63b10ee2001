"""When does the front door's fused uncertainty U help? The tables of docs/uncertainty.rst.

On make_multi_template_embeddings (2000 images, ``--seeds`` seeds), training-free and trained
(``max_iter=--epochs``, the current training defaults), fitted on 70% of the training
environments' rows, with the AUROC and AURC of ``-U`` against the max probability as confidences:

- ``uncertainty_prompted.csv``: all classes prompted, in domain (the other 30%, stratified)
  and on the test environment; the oracle AURC ranks every error last;
- ``uncertainty_unprompted.csv``: prompts and training for the base classes only, the test
  environment with all classes (an image of a new class is always an error);
- ``uncertainty_temperature.csv``: training-free, by temperature, with ``1 - U`` too;
- ``uncertainty_threshold.csv``: an abstention threshold chosen in domain
  (``target_risk=0.1``) and applied to the test environment.

    python benchmarks/bench_uncertainty.py --write-table   # docs/tables/uncertainty_*.csv
    python benchmarks/bench_uncertainty.py --old-training  # the training before issue 10
    python benchmarks/bench_uncertainty.py --quick         # smoke test: 2 seeds, 600 images
"""

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from clip_invariance import FrontDoorEnsembleClassifier
from clip_invariance.datasets import make_multi_template_embeddings
from clip_invariance.evaluation import abstention_threshold, confidence_roc_auc, selective_risk_auc

TABLES = Path(__file__).resolve().parents[1] / "docs" / "tables"
# The training defaults before issue 10: full-rank updates, no proximal penalty, no fused term.
OLD_TRAINING = {"alpha": 0.0, "prompt_span": False, "fused_loss": False, "style_guard": False}
TEMPERATURES = (1.0, 3.0, 10.0, 30.0, 100.0)


def predictions(clf, X):
    proba, uncertainty = clf.predict_proba(X), clf.predict_uncertainty(X)
    return clf.classes_[proba.argmax(axis=1)], uncertainty, proba.max(axis=1)


def fit(data, rows, classes, seed, **params):
    return FrontDoorEnsembleClassifier(
        prompt_embeddings=data.prompt_embeddings[:, classes],
        anchor_embeddings=data.anchor_embeddings[classes],
        classes=classes, n_views=4, random_state=seed, **params,
    ).fit(data.X[rows], data.y[rows])


def mean_sd(values, digits=3):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def wins(a, b):
    """'k/n': seeds where a > b."""
    return f"{int(np.sum(np.asarray(a) > np.asarray(b)))}/{len(a)}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20, help="max_iter of the trained model")
    parser.add_argument("--old-training", action="store_true", help="the training defaults before issue 10")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 600 images, 3 epochs")
    parser.add_argument("--write-table", action="store_true", help="write docs/tables/uncertainty_*.csv")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n_samples, args.epochs = 2, 600, 3
    if args.write_table and (args.quick or args.old_training):
        parser.error("--write-table records the full run with today's training.")
    training = OLD_TRAINING if args.old_training else {}
    models = [("training-free", {"max_iter": 0}),
              (f"trained, {args.epochs} epochs", {"max_iter": args.epochs, **training})]

    start = time.perf_counter()
    prompted, unprompted, threshold, temperature = {}, {}, {}, {}
    for seed in range(args.seeds):
        data = make_multi_template_embeddings(n_samples=args.n_samples, random_state=seed)
        every = np.unique(data.y)
        test = np.flatnonzero(data.environments == data.test_environment)
        sources = np.flatnonzero(data.environments != data.test_environment)
        fit_rows, held = train_test_split(sources, test_size=0.3, stratify=data.y[sources],
                                          random_state=seed)
        base = data.base_classes
        base_rows = sources[np.isin(data.y[sources], base)]
        for name, params in models:
            clf = fit(data, fit_rows, every, seed, **params)
            kept = {}
            for where, rows in (("in domain", held), ("test", test)):
                y = data.y[rows]
                y_pred, u, p = predictions(clf, data.X[rows])
                correct = (y_pred == y).astype(float)
                prompted.setdefault((name, where), []).append([
                    correct.mean(), np.median(u),
                    confidence_roc_auc(y, y_pred, -u), confidence_roc_auc(y, y_pred, p),
                    selective_risk_auc(y, y_pred, -u), selective_risk_auc(y, y_pred, p),
                    selective_risk_auc(y, y_pred, correct),  # the oracle: errors last
                ])
                kept[where] = (y, y_pred, {"-U": -u, "max p": p})
            for confidence in ("-U", "max p"):  # chosen in domain, applied to the test environment
                y, y_pred, c = kept["in domain"]
                cell = threshold.setdefault((name, confidence), [])
                try:
                    t, _ = abstention_threshold(y, y_pred, c[confidence], target_risk=0.1)
                except ValueError:  # no threshold reaches the target in domain
                    cell.append((np.nan, np.nan))
                    continue
                y, y_pred, c = kept["test"]
                keep = c[confidence] >= t
                cell.append((np.mean(y_pred[keep] != y[keep]) if keep.any() else 0.0, keep.mean()))

            clf = fit(data, base_rows, base, seed, **params)
            y = data.y[test]
            y_pred, u, p = predictions(clf, data.X[test])
            known = np.isin(y, base)
            unprompted.setdefault(name, []).append([
                roc_auc_score(known, -u), roc_auc_score(known, p),
                confidence_roc_auc(y, y_pred, -u), confidence_roc_auc(y, y_pred, p),
                selective_risk_auc(y, y_pred, -u), selective_risk_auc(y, y_pred, p),
                np.median(u[known]), np.median(u[~known]),
            ])
        for tau in TEMPERATURES:
            clf = fit(data, fit_rows, every, seed, max_iter=0, temperature=tau)
            row = []
            for rows in (held, test):
                y = data.y[rows]
                y_pred, u, p = predictions(clf, data.X[rows])
                row += [confidence_roc_auc(y, y_pred, c) for c in (-u, 1.0 - u, p)]
            temperature.setdefault(tau, []).append(row + [np.median(u)])

    tables = {"prompted": [["model", "data", "accuracy", "median U", "AUROC -U", "AUROC max p",
                            "-U wins (seeds)", "AURC -U", "AURC max p", "oracle AURC"]],
              "unprompted": [["model", "prompted vs unprompted: AUROC -U", "prompted vs unprompted: max p",
                              "-U wins (seeds)", "errors: AUROC -U", "errors: AUROC max p",
                              "AURC -U", "AURC max p", "median U: prompted", "median U: unprompted"]],
              "temperature": [["temperature", "median U (test)", "AUROC -U in domain / test",
                               "AUROC 1 - U in domain / test", "AUROC max p in domain / test"]],
              "threshold": [["model", "confidence", "test risk (target 0.1)", "test risk per seed",
                             "test coverage"]]}
    for (name, where), rows in prompted.items():
        r = np.asarray(rows)
        tables["prompted"].append([name, where, f"{r[:, 0].mean():.3f}", f"{np.median(r[:, 1]):.2g}",
                                   mean_sd(r[:, 2]), mean_sd(r[:, 3]), wins(r[:, 2], r[:, 3]),
                                   mean_sd(r[:, 4]), mean_sd(r[:, 5]), f"{r[:, 6].mean():.4f}"])
    for name, rows in unprompted.items():
        r = np.asarray(rows)
        tables["unprompted"].append([name, mean_sd(r[:, 0]), mean_sd(r[:, 1]), wins(r[:, 0], r[:, 1]),
                                     mean_sd(r[:, 2]), mean_sd(r[:, 3]), mean_sd(r[:, 4]),
                                     mean_sd(r[:, 5]), f"{np.median(r[:, 6]):.2g}",
                                     f"{np.median(r[:, 7]):.2g}"])
    for tau, rows in temperature.items():
        r = np.asarray(rows)
        m = r.mean(axis=0)
        label = f"{tau:g}" + (" (default)" if tau == 10.0 else "")
        tables["temperature"].append([label, f"{np.median(r[:, 6]):.2g}", f"{m[0]:.3f} / {m[3]:.3f}",
                                      f"{m[1]:.3f} / {m[4]:.3f}", f"{m[2]:.3f} / {m[5]:.3f}"])
    for (name, confidence), rows in threshold.items():
        r = np.asarray(rows)
        tables["threshold"].append([name, confidence, mean_sd(r[:, 0], 2),
                                    " ".join(f"{v:.2f}" for v in r[:, 0]),
                                    f"{np.nanmin(r[:, 1]):.2f} to {np.nanmax(r[:, 1]):.2f}"])

    print(f"training: {'before issue 10' if args.old_training else 'current defaults'}; "
          f"{args.seeds} seeds, {args.n_samples} images: {time.perf_counter() - start:.0f} s")
    for name, table in tables.items():
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        print(f"\n{name}")
        for row in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if args.write_table:
            TABLES.mkdir(exist_ok=True)
            with (TABLES / f"uncertainty_{name}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(table)
    if args.write_table:
        print(f"\nwritten: {TABLES}/uncertainty_*.csv")


if __name__ == "__main__":
    main()
