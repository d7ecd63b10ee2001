"""
=================================================================
Zero-shot and open-class prediction in the invariant subspace
=================================================================

Plain zero-shot CLIP compares an image embedding with the embeddings of class
prompts ("a photo of a dog."). When the test environment has a new style,
the style part of the image embedding moves the prediction. CLIP-ICM
projects both sides onto the invariant subspace that
:class:`~clip_invariance.InvariantProjector` learns from interventional data
-- augmented image pairs, text prompts describing each class in several
styles, or both -- and compares them there:
:class:`~clip_invariance.ZeroShotInvariantClassifier` does both steps, and
learns no class from labels.

Because nothing in the projector is tied to a class, a projector fitted on
some classes serves classes it never saw:
:meth:`~clip_invariance.ZeroShotInvariantClassifier.with_prompts` gives a
fitted copy that predicts over new prompts (open-class prediction, the
base-to-new protocol of the papers).

This example uses the synthetic benchmark
(:func:`~clip_invariance.datasets.make_invariant_embeddings`: embeddings
drawn from the CLIP-ICM causal model, with a known invariant subspace of
dimension 8); accuracy is measured on the held-out, shifted test
environment.
"""

import matplotlib.pyplot as plt
import numpy as np

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.views import stack_views

N_COMPONENTS = 8  # the benchmark's invariant dimension (see the invariance-spectrum example)
# Text interventions help only as far as their styles span the variant
# directions: 12 styles for the benchmark's 8 variant dimensions.
N_TEXT_STYLES = 12

# %%
# Same classes, new environment: where the interventions come from
# -----------------------------------------------------------------
# Image-only: the projector sees image/augmentation pairs (``view_groups``).
# Text-only: it sees text interventions (its ``intervention_embeddings``).
# Both: it pools the two. Zero-shot CLIP has no projector. No classifier here
# uses a label.


def same_classes(normalize, seed=0):
    data = make_invariant_embeddings(
        n_samples=2000, n_text_styles=N_TEXT_STYLES, normalize=normalize, random_state=seed
    )
    train = data.environments != data.test_environment
    X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])
    text = {"intervention_embeddings": data.text_interventions,
            "intervention_view_groups": data.text_view_groups}
    P = data.prompt_embeddings
    variants = {
        "zero-shot CLIP": (ZeroShotInvariantClassifier(P), data.X[train], {}),
        "image": (
            ZeroShotInvariantClassifier(P, projector=InvariantProjector(N_COMPONENTS)),
            X_pairs,
            {"view_groups": view_groups},
        ),
        "text": (
            ZeroShotInvariantClassifier(P, projector=InvariantProjector(N_COMPONENTS, **text)),
            data.X[train],
            {},
        ),
        "image+text": (
            ZeroShotInvariantClassifier(P, projector=InvariantProjector(N_COMPONENTS, **text)),
            X_pairs,
            {"view_groups": view_groups},
        ),
    }
    return {
        name: clf.fit(X_fit, **fit_params).score(data.X[~train], data.y[~train])
        for name, (clf, X_fit, fit_params) in variants.items()
    }


results = {"raw": same_classes(normalize=False), "L2-normalised": same_classes(normalize=True)}
print("Same classes: accuracy in the shifted test environment")
print(f"{'':16s}{'raw':>8s}{'L2-normalised':>15s}")
for name in results["raw"]:
    print(f"{name:16s}{results['raw'][name]:8.3f}{results['L2-normalised'][name]:15.3f}")

# %%
# Open-class: new classes, same projector
# ---------------------------------------
# The projector is fitted on the *base* classes 0-4 only: their images (with
# their augmented copies) and their text interventions. ``with_prompts`` then
# scores the prompts of all ten classes with that projector, unchanged.
# Accuracy is reported on the test environment's images of the base classes
# and of the *new* classes 5-9, every prediction made over all ten classes.

data = make_invariant_embeddings(n_samples=2000, n_text_styles=N_TEXT_STYLES, random_state=0)
train = data.environments != data.test_environment
base = data.y < 5
X_pairs, view_groups = stack_views(data.X[train & base], *data.X_views[:, train & base])
base_text = data.text_view_groups < 5
projector = InvariantProjector(
    N_COMPONENTS,
    intervention_embeddings=data.text_interventions[base_text],
    intervention_view_groups=data.text_view_groups[base_text],
)
base_clf = ZeroShotInvariantClassifier(data.prompt_embeddings[:5], projector=projector)
invariant = base_clf.fit(X_pairs, view_groups=view_groups).with_prompts(data.prompt_embeddings)
plain = ZeroShotInvariantClassifier(data.prompt_embeddings).fit(data.X[train])
print(f"\nthe projector learned from classes {np.unique(data.y[train & base]).tolist()}; "
      f"with_prompts predicts over classes {invariant.classes_.tolist()}")

open_class = {}
for split, rows in (("base classes 0-4", ~train & base), ("new classes 5-9", ~train & ~base)):
    open_class[split] = {
        "zero-shot CLIP": plain.score(data.X[rows], data.y[rows]),
        "invariant subspace": invariant.score(data.X[rows], data.y[rows]),
    }
print("\nOpen-class: accuracy in the shifted test environment, over all 10 classes")
print(f"{'':22s}{'zero-shot CLIP':>16s}{'invariant subspace':>20s}")
for split, scores in open_class.items():
    print(f"{split:22s}{scores['zero-shot CLIP']:16.3f}{scores['invariant subspace']:20.3f}")

# %%
# The two tables as bars
# ----------------------

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [4, 2]})
names = list(results["raw"])
x = np.arange(len(names))
for offset, kind in [(-0.2, "raw"), (0.2, "L2-normalised")]:
    left.bar(x + offset, [results[kind][n] for n in names], width=0.4, label=kind)
left.set_xticks(x, ["zero-shot CLIP", "ICM: image", "ICM: text", "ICM: image+text"])
left.set_ylabel("test-environment accuracy")
left.set_title("same classes: interventions from", fontsize=10)
left.legend(fontsize=8, ncol=2, loc="upper left")

splits = list(open_class)
x = np.arange(len(splits))
for offset, kind in [(-0.2, "zero-shot CLIP"), (0.2, "invariant subspace")]:
    right.bar(x + offset, [open_class[s][kind] for s in splits], width=0.4, label=kind,
              color="0.6" if kind == "zero-shot CLIP" else "tab:green")
right.set_xticks(x, splits)
right.set_title("open-class: projector fitted on 0-4", fontsize=10)
right.legend(fontsize=8, ncol=2, loc="upper left")
for ax in (left, right):
    ax.set_ylim(0, 1.12)
    ax.axhline(0.1, color="black", ls=":", lw=0.8)  # chance: 10 classes
    ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig("plot_zero_shot.png", dpi=120)
