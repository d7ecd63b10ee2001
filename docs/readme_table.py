"""Print the README's result table, as ``clip-invariance evaluate`` writes it.

The table is not typed by hand: this script saves the package's synthetic causal benchmark
(:func:`clip_invariance.datasets.make_invariant_embeddings`, with the PACS environment names; the last
environment has a new style and a permuted spurious correlation) as an embedding store, runs the
command line on it and prints the leave-one-domain-out table of its ``results.md``.
``tests/test_readme.py`` runs it and checks that the README shows exactly this output::

    python docs/readme_table.py            # the table, as pasted into README.md
    python docs/readme_table.py --command  # the command it runs
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, whatever else is installed

from clip_invariance.datasets import make_invariant_embeddings, save_embeddings  # noqa: E402

ENVIRONMENTS = ["photo", "art_painting", "cartoon", "sketch"]  # the last one is shifted
STYLES = ["photo", "painting", "cartoon", "sketch", "art", "drawing", "render", "origami", "toy",
          "embroidery", "graffiti", "tattoo"]
SEEDS = "0,1,2"
METHODS = ("zero-shot,zero-shot-icm,prototype,probe,probe-views,probe-icm,probe-icm-views,"
           "wise,wise-icm,tip-adapter,tip-adapter-icm")
# Small grids keep the run to about a minute (the test reruns it); the default grids take minutes.
GRIDS = ["--n-components", "8,16", "--lam", "10,100", "--C", "0.316,3.16", "--wise-alpha", "0,0.5,1",
         "--tip-alpha", "1,100", "--tip-beta", "3.5,14"]


def write_synthetic_store(path, *, n_samples=800, random_state=0):
    """Save the synthetic benchmark as a store: views, one prompt per class, styled text interventions."""
    data = make_invariant_embeddings(n_samples=n_samples, n_text_styles=len(STYLES), normalize=True,
                                     random_state=random_state)
    n_classes = len(data.prompt_embeddings)
    save_embeddings(
        path, X=data.X, y=data.y, environments=np.array(ENVIRONMENTS)[data.environments],
        environment_names=ENVIRONMENTS, class_names=[f"class {c}" for c in range(n_classes)],
        views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings,
        text_interventions=data.text_interventions, text_view_groups=data.text_view_groups,
        text_intervention_styles=np.tile(STYLES, n_classes),
    )
    return str(path)


def command(store, output):
    """The ``clip-invariance evaluate`` command line, run as ``python -m clip_invariance.cli``."""
    return [sys.executable, "-m", "clip_invariance.cli", "evaluate", str(store), "--protocol", "dg",
            "--methods", METHODS, "--seeds", SEEDS, *GRIDS, "--output", str(output), "--quiet"]


def first_table(markdown):
    """The first Markdown table (its consecutive ``|`` lines) of ``results.md``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def readme_table():
    """Run the evaluation in a temporary folder; return the table of its ``results.md``."""
    with tempfile.TemporaryDirectory() as folder:
        store = write_synthetic_store(Path(folder) / "synthetic-store")
        output = Path(folder) / "results"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(command(store, output), check=True, stdout=subprocess.DEVNULL, env=env)
        return first_table((output / "results.md").read_text())


if __name__ == "__main__":
    if "--command" in sys.argv[1:]:
        print(" ".join(["clip-invariance"] + command("synthetic-store", "results")[3:]))
    else:
        print(readme_table())
