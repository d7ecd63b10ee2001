"""
======================================================
Embed an image folder and evaluate it from the shell
======================================================

Two commands take a folder of images to a table of results, with no Python
written::

    clip-invariance embed  <root> -o <store>
    clip-invariance evaluate <store> --output <results>

``<root>`` is laid out as DomainBed lays out its datasets,
``<root>/<environment>/<class>/<image>``. ``embed`` embeds every image, its
augmented views, the class prompts and the text interventions into a
*store* (resumable: a second run embeds nothing new). ``evaluate`` runs every
method with leave-one-domain-out, hyper-parameters chosen without the
held-out environment, and writes ``results.csv``, ``results.md`` and
``config.json``.

This example makes a tiny folder of generated images, runs both commands
through :mod:`subprocess` (``python -m clip_invariance`` is the same
program as the ``clip-invariance`` script) and plots ``results.csv`` with
:func:`clip_invariance.evaluation.plot_results`.

.. note::

   To run offline in seconds, it embeds with a tiny open_clip model with
   **random weights**, given as ``--model-name local-dir:<folder>`` (a folder
   with an ``open_clip_config.json`` and a weights file). Random weights
   carry no semantics: the accuracies are about the plumbing. With real data,
   leave the model options out: the default is
   ``--model-name ViT-B-32 --pretrained openai`` (downloaded once, then read
   from the local cache).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

import clip_invariance
from clip_invariance.evaluation import plot_results

tmp = tempfile.TemporaryDirectory()  # removed when the script ends
workdir = Path(tmp.name)

# %%
# A tiny image folder
# -------------------
# Three environments (a background each), two classes (the shape), eight
# images of each class in each environment.

rng = np.random.default_rng(0)
BACKGROUNDS = {"bright": (250, 250, 250), "sand": (200, 190, 150), "night": (40, 40, 60)}
root = workdir / "shapes"
for environment, background in BACKGROUNDS.items():
    for shape in ("circle", "square"):
        folder = root / environment / shape
        folder.mkdir(parents=True)
        for i in range(8):
            image = Image.new("RGB", (64, 64), background)
            r = rng.uniform(12, 24)
            cx, cy = rng.uniform(r, 64 - r, size=2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            box = [cx - r, cy - r, cx + r, cy + r]
            (ImageDraw.Draw(image).ellipse if shape == "circle" else ImageDraw.Draw(image).rectangle)(
                box, fill=colour
            )
            image.save(folder / f"{i}.png")
print(f"{root}: {sum(1 for _ in root.rglob('*.png'))} images")
for environment in BACKGROUNDS:
    print(f"  {environment}/: " + ", ".join(
        f"{c.name}/ ({len(list(c.glob('*.png')))})" for c in sorted((root / environment).iterdir())))

# %%
# A tiny model with random weights
# --------------------------------

import open_clip  # noqa: E402  (the model is built with open_clip; see the note above)
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
model_dir = workdir / "tiny-clip"
model_dir.mkdir()
(model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
torch.manual_seed(0)
state = {k: v.contiguous() for k, v in open_clip.CLIP(**TINY).state_dict().items()}
save_file(state, str(model_dir / "open_clip_model.safetensors"))

# %%
# The two commands
# ----------------
# ``run`` prints each command line and its output. The child process gets the
# folder of the ``clip_invariance`` imported here on its ``PYTHONPATH``, so it
# runs the same package (from an installed copy, this changes nothing).

env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(clip_invariance.__file__).resolve().parents[1]), env.get("PYTHONPATH")])
)


def run(*arguments, echo=True):
    command = [sys.executable, "-m", "clip_invariance", *map(str, arguments)]
    print("$ clip-invariance " + " ".join(map(str, arguments)))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if echo:
        print(done.stdout.rstrip())
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode}: {done.stderr.strip()}")
    return done


model = ["--model-name", f"local-dir:{model_dir}", "--device", "cpu"]
store = workdir / "store"
results = workdir / "results"
run("--version")
run("embed", root, "-o", store, *model, "--n-augmented", 1, "--quiet")

# %%
# ``evaluate`` with small grids and the fast methods: ``--methods`` leaves out
# the front door (``front-door``, ``front-door-icm``), whose adapters train
# for minutes on a CPU even on this folder; without ``--methods`` every method
# the store supports runs. ``--n-components``, ``--lam`` and ``--C`` are the
# grids the selection rule chooses from (defaults: ``D/16`` to ``D/2``,
# {1, 10, 100} and four values of ``C``).

run("evaluate", store, "--output", results, "--quiet", "--latex",
    "--methods", "zero-shot,zero-shot-icm,probe,probe-icm",
    "--n-components", "4,8,16", "--lam", "1,10", "--C", "0.316", echo=False)

# %%
# What ``evaluate`` wrote
# -----------------------
# ``results.md``, the tables it printed (one per protocol and selection
# rule, with the images scored per target and the hyper-parameters chosen);
# ``results.csv``, one row per method, held-out environment and seed, with
# the hyper-parameters chosen; ``config.json``, what is needed to rerun, with
# the package versions, the hardware, the date and the run's duration;
# ``results.tex`` (``--latex``), the tables for a paper.

print(sorted(p.name for p in results.iterdir()))
print((results / "results.md").read_text())
df = pd.read_csv(results / "results.csv")
columns = ["method", "interventions", "target", "accuracy", "n_components", "lam", "C"]
print(df[columns].to_string(index=False))

# %%
# The per-environment accuracy
# ----------------------------
# :func:`~clip_invariance.evaluation.plot_results` draws one bar chart per
# table of ``results.md`` (what ``evaluate --plot`` writes); here into the
# current folder.

for path in plot_results(df, "."):
    print(f"wrote {path}")
    image = plt.imread(path)
    fig, ax = plt.subplots(figsize=(image.shape[1] / 120, image.shape[0] / 120))
    ax.imshow(image)
    ax.set_axis_off()
