"""
==========================================================
Front-door fusion of prompt templates and augmented views
==========================================================

CDC treats every (prompt template, image augmentation) pair as one decoupled
semantic of the image, turns its cosine scores into a subjective-logic
opinion and fuses the opinions with the reduced Dempster rule.
:class:`~clip_invariance.FrontDoorEnsembleClassifier` does this on
precomputed embeddings.

This example uses the synthetic multi-template set-up: every template carries
its own nuisance directions in the variant (style) subspace, and each image
comes with three augmented views. It compares, on the held-out test
environment,

1. each template alone (seeing all four views),
2. the training-free fused ensemble (``max_iter=0``),
3. the fused ensemble with trained class-agnostic adapters,
4. the same two inside an invariant subspace (``projector``): the adapters
   are trained on the training environments, where the style carries a
   spurious class signal, so without the projection they can learn it too,

and then the base-to-new protocol of the CDC tables: train on half of the
classes, predict the other half from their prompts alone with
:meth:`~clip_invariance.FrontDoorEnsembleClassifier.with_prompts`. It prints
the tables and plots them when matplotlib is installed.
"""

import numpy as np

from clip_invariance import FrontDoorEnsembleClassifier, InvariantProjector
from clip_invariance.datasets import make_multi_template_embeddings

SEEDS = (0, 1, 2)
EPOCHS = 20


def accuracy(clf, X, y):
    return float(np.mean(clf.predict(X) == y))


def harmonic_mean(a, b):
    return 2 * a * b / (a + b)


# %%
# Same classes, new environment
# -----------------------------


def same_classes(data):
    train = data.environments != data.test_environment
    X, y = data.X[train], data.y[train]
    X_test, y_test = data.X[~train], data.y[~train]
    T = data.prompt_embeddings
    k = data.invariant_basis.shape[1]

    singles = [
        accuracy(FrontDoorEnsembleClassifier(t, n_views=4, max_iter=0).fit(X, y), X_test, y_test)
        for t in T
    ]
    free = FrontDoorEnsembleClassifier(T, data.anchor_embeddings, n_views=4, max_iter=0)
    trained = FrontDoorEnsembleClassifier(
        T, data.anchor_embeddings, n_views=4, max_iter=EPOCHS, random_state=0
    )
    projected = FrontDoorEnsembleClassifier(
        T, n_views=4, max_iter=0, projector=InvariantProjector(n_components=k)
    )
    both = FrontDoorEnsembleClassifier(
        T, n_views=4, max_iter=EPOCHS, projector=InvariantProjector(n_components=k),
        random_state=0,
    )
    return {
        "best single template": max(singles),
        "mean single template": float(np.mean(singles)),
        "fused, training-free": accuracy(free.fit(X, y), X_test, y_test),
        "fused, trained adapters": accuracy(trained.fit(X, y), X_test, y_test),
        "fused, invariant subspace": accuracy(projected.fit(X, y), X_test, y_test),
        "  ... and trained adapters": accuracy(both.fit(X, y), X_test, y_test),
    }


# %%
# Base-to-new
# -----------
# The adapters are class-agnostic maps on each template's class embeddings, so
# ``with_prompts`` applies them to the prompts of classes never trained on.


def base_to_new(data, max_iter):
    train = data.environments != data.test_environment
    base = np.isin(data.y, data.base_classes)
    T = data.prompt_embeddings
    clf = FrontDoorEnsembleClassifier(
        T[:, data.base_classes],
        data.anchor_embeddings[data.base_classes],
        classes=data.base_classes,
        n_views=4,
        max_iter=max_iter,
        random_state=0,
    ).fit(data.X[train & base], data.y[train & base])
    new_clf = clf.with_prompts(T[:, data.new_classes], classes=data.new_classes)
    base_rows, new_rows = ~train & base, ~train & ~base
    acc_base = accuracy(clf, data.X[base_rows], data.y[base_rows])
    acc_new = accuracy(new_clf, data.X[new_rows], data.y[new_rows])
    return {"base": acc_base, "new": acc_new, "HM": harmonic_mean(acc_base, acc_new)}


def main():
    rows, b2n = {}, {"training-free": {}, "trained": {}}
    for seed in SEEDS:
        data = make_multi_template_embeddings(n_samples=2000, random_state=seed)
        for name, value in same_classes(data).items():
            rows.setdefault(name, []).append(value)
        for name, max_iter in (("training-free", 0), ("trained", EPOCHS)):
            for column, value in base_to_new(data, max_iter).items():
                b2n[name].setdefault(column, []).append(value)

    print(f"Test-environment accuracy, mean over seeds {SEEDS}")
    for name, values in rows.items():
        print(f"  {name:<28} {np.mean(values):.3f}  (per seed {np.round(values, 3).tolist()})")
    print("\nBase-to-new (train on classes 0-4, predict 5-9 from their prompts)")
    print(f"  {'':<16} {'base':>6} {'new':>6} {'HM':>6}")
    for name, columns in b2n.items():
        cells = " ".join(f"{np.mean(v):>6.3f}" for v in columns.values())
        print(f"  {name:<16} {cells}")

    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(rows)
    ax.barh(names, [np.mean(rows[n]) for n in names])
    ax.set_xlabel("test-environment accuracy")
    ax.invert_yaxis()
    fig.tight_layout()
    plt.show()


if __name__ == "__main__":
    main()
