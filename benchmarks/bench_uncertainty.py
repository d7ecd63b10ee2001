"""When does the front door's fused uncertainty U help? The tables of docs/uncertainty.rst.

On make_multi_template_embeddings (5 seeds), training-free and trained, it prints the AUROC and
AURC of -U against the max probability as confidences, for

- all classes prompted: in domain (30% of the training environments' rows held out) and on the
  test environment;
- half the classes unprompted: prompts and training for the base classes only, the test
  environment with all classes (an image of a new class is always an error).

    python benchmarks/bench_uncertainty.py                 # the current training defaults
    python benchmarks/bench_uncertainty.py --old-training  # before issue 10 (docs' trained rows)
"""

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from clip_invariance import FrontDoorEnsembleClassifier
from clip_invariance.datasets import make_multi_template_embeddings
from clip_invariance.selective import confidence_roc_auc, selective_risk_auc

# The training defaults before issue 10: full-rank updates, no proximal penalty, no fused term.
OLD_TRAINING = {"alpha": 0.0, "prompt_span": False, "fused_loss": False}


def scores(clf, X, y):
    proba, uncertainty = clf.predict_proba(X), clf.predict_uncertainty(X)
    y_pred = clf.classes_[proba.argmax(axis=1)]
    return y_pred, {"-U": -uncertainty, "max p": proba.max(axis=1)}


def fit(data, rows, classes, max_iter, seed, training):
    return FrontDoorEnsembleClassifier(
        prompt_embeddings=data.prompt_embeddings[:, classes],
        anchor_embeddings=data.anchor_embeddings[classes],
        classes=classes, n_views=4, max_iter=max_iter, random_state=seed, **training,
    ).fit(data.X[rows], data.y[rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20, help="max_iter of the trained model")
    parser.add_argument("--old-training", action="store_true", help="the training defaults before issue 10")
    args = parser.parse_args()
    training = OLD_TRAINING if args.old_training else {}
    models = [("training-free", 0), (f"trained, {args.epochs} epochs", args.epochs)]

    prompted, unprompted = {}, {}
    for seed in range(args.seeds):
        data = make_multi_template_embeddings(random_state=seed)
        every = np.unique(data.y)
        test = np.flatnonzero(data.environments == data.test_environment)
        sources = np.flatnonzero(data.environments != data.test_environment)
        fit_rows, held = train_test_split(sources, test_size=0.3, stratify=data.y[sources], random_state=seed)
        base = data.base_classes
        base_rows = sources[np.isin(data.y[sources], base)]
        for name, max_iter in models:
            clf = fit(data, fit_rows, every, max_iter, seed, training)
            for where, rows in (("in domain", held), ("test", test)):
                y = data.y[rows]
                y_pred, confidences = scores(clf, data.X[rows], y)
                record = prompted.setdefault((name, where), [])
                record.append([np.mean(y_pred == y)]
                              + [confidence_roc_auc(y, y_pred, c) for c in confidences.values()]
                              + [selective_risk_auc(y, y_pred, c) for c in confidences.values()])
            clf = fit(data, base_rows, base, max_iter, seed, training)
            y = data.y[test]
            y_pred, confidences = scores(clf, data.X[test], y)
            known = np.isin(y, base)
            unprompted.setdefault(name, []).append(
                [roc_auc_score(known, c) for c in confidences.values()]
                + [confidence_roc_auc(y, y_pred, c) for c in confidences.values()]
                + [selective_risk_auc(y, y_pred, c) for c in confidences.values()]
            )

    def cells(rows):
        rows = np.asarray(rows)
        return "  ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(rows.mean(axis=0), rows.std(axis=0)))

    print(f"training: {'before issue 10' if args.old_training else 'current defaults'}; {args.seeds} seeds")
    print("\nall classes prompted: accuracy, AUROC -U, AUROC max p, AURC -U, AURC max p")
    for (name, where), rows in prompted.items():
        print(f"{name:<20} {where:<10} {cells(rows)}")
    print("\nhalf the classes unprompted (test environment): prompted-vs-unprompted AUROC -U, max p;"
          " error AUROC -U, max p; AURC -U, max p")
    for name, rows in unprompted.items():
        print(f"{name:<20} {cells(rows)}")


if __name__ == "__main__":
    main()
