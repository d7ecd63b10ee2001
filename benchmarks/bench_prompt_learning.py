"""One epoch of prompt learning through the frozen ViT-B-32 text tower: the table of docs/front_door.rst.

:class:`~clip_invariance.front_door.PromptLearningFrontDoorClassifier` with CDC's setting, ``M = 4``
templates each paired with its own view, 16 shots per class, ``batch_size=32``, at ``C = 7`` and
``C = 100`` classes. The image side is random cached embeddings (the text tower's cost does not depend
on them); the model is ``ViT-B-32`` with random weights (``pretrained=None``, same architecture and cost
as the pretrained one, no download).

A step's time is ``fit(max_iter=1)`` minus ``fit(max_iter=0)`` (the set-up both share: tokens, anchors,
the final encoding) on ``k x 32`` images, divided by the ``k`` steps that epoch runs, the best of
``--repeats``; ``k`` is the whole epoch (``16 C / 32`` steps) up to ``--max-steps``, and beyond it the
epoch's time is ``steps x`` the step's (the column ``steps timed`` says which): every step costs the same,
the text tower on all ``M x C`` prompts, whatever its images. Times are wall-clock and, less sensitive to a
busy machine, process CPU time (all threads). The reference, measured in the same run, is one forward
of the frozen text tower on the same ``M x C`` prompts (open_clip's ``encode_text``, no gradient, full
77 tokens): what embedding the hand-written prompts once costs. A training step runs the tower forward
and backward on those prompts, cut after the end-of-text token.

    python benchmarks/bench_prompt_learning.py --write-table   # docs/tables/prompt_learning_speed.csv
    python benchmarks/bench_prompt_learning.py --quick         # smoke test: C = 7, one repeat, 1 step
"""

import argparse
import csv
import os
import time
import warnings
from pathlib import Path

import numpy as np

from clip_invariance.embedding import build_prompts, get_backbone
from clip_invariance.front_door import CDC_TEMPLATES, PromptLearningFrontDoorClassifier

TABLE = Path(__file__).resolve().parents[1] / "docs" / "tables" / "prompt_learning_speed.csv"
MODEL = "ViT-B-32"
SHOTS = 16
BATCH_SIZE = 32
COLUMNS = ["device", "torch threads", "classes C", "templates M", "images", "steps per epoch", "steps timed",
           "epoch (s)", "step (s)", "text forward (s)", "step / forward", "epoch CPU (s)", "step CPU (s)",
           "text forward CPU (s)", "step / forward (CPU)", "load average"]


def class_names(n_classes):
    """Distinct one-word names, as a dataset's would be (their token count is what matters)."""
    words = ["dog", "cat", "car", "tree", "house", "boat", "guitar", "horse", "bird", "chair"]
    return [f"{words[c % len(words)]} {c // len(words)}" if c >= len(words) else words[c]
            for c in range(n_classes)]


def best_time(function, repeats):
    """The best (wall, process CPU) seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(t[0] for t in times), min(t[1] for t in times)


def text_forward(backbone, names):
    """One no-gradient forward of the frozen tower on the M x C hand-written prompts."""
    import torch

    tokens = backbone.tokenizer([p for row in build_prompts(names, CDC_TEMPLATES) for p in row])
    with torch.no_grad():
        backbone.model.encode_text(tokens.to(backbone.device))
    if backbone.device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(n_classes, device, repeats, max_steps):
    import torch

    backbone = get_backbone(MODEL, None, device, "fp32")
    names = class_names(n_classes)
    n_views = len(CDC_TEMPLATES)
    rng = np.random.default_rng(0)
    n_images = SHOTS * n_classes
    steps = -(-n_images // BATCH_SIZE)
    timed = min(steps, max_steps)
    y = rng.permutation(np.repeat(np.arange(n_classes), SHOTS))[: min(n_images, timed * BATCH_SIZE)]
    X = rng.normal(size=(len(y), n_views * backbone.embedding_dim)).astype(np.float32)

    def fit(max_iter):
        # a few steps of C = 100 see fewer images than classes: scikit-learn's "regression?" warning
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        PromptLearningFrontDoorClassifier(MODEL, None, names, n_views=n_views, batch_size=BATCH_SIZE,
                                          max_iter=max_iter, device=device, random_state=0).fit(X, y)

    text_forward(backbone, names)  # warm-up: first calls allocate
    forward = best_time(lambda: text_forward(backbone, names), repeats)
    setup = best_time(lambda: fit(0), repeats)
    trained = best_time(lambda: fit(1), repeats)
    step = [(t - s) / timed for t, s in zip(trained, setup)]
    return {
        "device": device, "torch threads": torch.get_num_threads(), "classes C": n_classes,
        "templates M": n_views, "images": n_images, "steps per epoch": steps,
        "steps timed": timed if timed == steps else f"{timed} (epoch = {steps} x step)",
        "epoch (s)": f"{step[0] * steps:.1f}", "step (s)": f"{step[0]:.2f}",
        "text forward (s)": f"{forward[0]:.3f}",
        "step / forward": f"{step[0] / forward[0]:.1f}", "epoch CPU (s)": f"{step[1] * steps:.1f}",
        "step CPU (s)": f"{step[1]:.2f}", "text forward CPU (s)": f"{forward[1]:.3f}",
        "step / forward (CPU)": f"{step[1] / forward[1]:.1f}", "load average": f"{os.getloadavg()[0]:.1f}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="C = 7 only, one repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=5, help="steps timed per size (default 5)")
    parser.add_argument("--write-table", action="store_true", help=f"write {TABLE.name}")
    args = parser.parse_args()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [7] if args.quick else [7, 100]
    repeats = 1 if args.quick else args.repeats
    max_steps = 1 if args.quick else args.max_steps
    rows = []
    print(f"torch threads: {torch.get_num_threads()}, load average at start: {os.getloadavg()[0]:.1f}")
    for device in devices:
        for n_classes in sizes:
            row = measure(n_classes, device, repeats, max_steps)
            print(", ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
            rows.append(row)
    if args.write_table:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        with TABLE.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
