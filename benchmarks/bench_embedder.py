"""Images per second of CLIPEmbedder against a plain one-image-at-a-time loop,
and a warm embedding cache against the joblib.Memory cache it replaced.

Both sides use the same model, the same pacs-mini image files (decoding
included) and open_clip's own preprocessing; the backbone is loaded before
the clock starts. The reference decodes one image at a time in the main
process and runs one forward per image, as a first script would.

With a CUDA device it also reports ViT-B-32 and ViT-B-16 in fp16 and the
fraction of time the GPU waits on decoding (1 - pure-compute time /
end-to-end time, pure compute being the same batches already decoded).

The cache benchmark re-embeds a few hundred tiny images whose embeddings are
all cached, as in-memory arrays (identified by their pixels) and as files
(identified by path, size and modification time), with the per-input ``.npy``
cache of ``memory=`` and with the old per-batch joblib.Memory cache
(re-created here as it was), in the same run.

The grid-search benchmark (issue 21, item 3) runs the README's pipeline,
``GridSearchCV(Pipeline([CLIPEmbedder, InvariantProjector,
LogisticRegression]), 2 x 2 grid, cv=LeaveOneGroupOut())`` over the pacs-mini
files (4 environments), three ways in the same run: nothing reused
(``memo_size=0``), the default in-memory memo, and ``memory=`` (a fresh
folder, memo off). It counts the rows through the forward pass and writes
``docs/tables/embed_grid_search.csv``.

The limits benchmark (issue 21, item 4) times, interleaved in the same run,
(a) decoding and preprocessing alone, through the embedder's own DataLoader,
(b) the model alone on the same batches already decoded, and (c) the
embedder end to end (memo off), and reports ``max(t_a, t_b) / t_c``: the
end-to-end rate over the slower stage's rate (1 is a perfect overlap, 0.5
the two stages one after the other when they cost the same). It writes
``docs/tables/embed_limits.csv``.

The memo-cost benchmark times one call that reuses nothing (the tiny model,
where the memo's keys weigh most) with a cold memo against none, for files
(a stat each) and in-memory arrays (a BLAKE2b of the pixels each), and
writes ``docs/tables/embed_memo_cost.csv``.

    python benchmarks/bench_embedder.py                      # every part: tiny model + ViT-B-32, CPU
    python benchmarks/bench_embedder.py --parts speed --models ViT-B-32 --n-images 420
    python benchmarks/bench_embedder.py --parts cache --n-cached 300
    python benchmarks/bench_embedder.py --parts grid limits memo-cost  # the tables of docs/embedding.rst
"""

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from clip_invariance import CLIPEmbedder
from clip_invariance.datasets import load_image_folder

PACS_MINI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pacs-mini"
TABLES = Path(__file__).resolve().parents[1] / "docs" / "tables"
TINY = "clipinv-tiny-test"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny():
    import open_clip

    folder = Path(tempfile.mkdtemp())
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)


def reference_loop(model, preprocess, paths, device):
    """Open, convert, preprocess and embed one image at a time."""
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            out.append(model.encode_image(preprocess(image)[None].to(device)).float().cpu().numpy())
    return np.concatenate(out)


def best_of(repeats, *fns):
    """Best wall time of each function, runs interleaved so both see the same machine load."""
    times = [[] for _ in fns]
    results = [None] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - start)
    return [min(t) for t in times], results


def bench_cpu(model_name, paths, repeats, batch_size, num_workers):
    from clip_invariance.embedding._backbone import get_backbone

    embedder = CLIPEmbedder(
        model_name, pretrained=None, device="cpu", batch_size=batch_size, num_workers=num_workers,
        memo_size=0, progress=False,  # every repeat embeds: no memo
    ).fit()
    backbone = get_backbone(model_name, None, "cpu", "fp32")
    (t_emb, t_ref), (X, X_ref) = best_of(
        repeats,
        lambda: embedder.transform(paths),
        lambda: reference_loop(backbone.model, backbone.preprocess, paths, "cpu"),
    )
    n = len(paths)
    diff = np.abs(X - X_ref).max() / np.abs(X_ref).max()
    print(
        f"{model_name:>18} cpu fp32 | n={n:4d} | reference {n / t_ref:8.1f} img/s | "
        f"embedder {n / t_emb:8.1f} img/s (batch {batch_size}, workers {embedder._n_workers('cpu')}) | "
        f"ratio {t_ref / t_emb:5.2f}x | max rel. diff {diff:.1e}"
    )


def bench_gpu(model_name, paths, repeats, batch_size):
    import torch

    from clip_invariance.embedding import read_image
    from clip_invariance.embedding._backbone import get_backbone

    embedder = CLIPEmbedder(
        model_name, pretrained=None, device="cuda", precision="fp16", batch_size=batch_size, memo_size=0,
        progress=False,
    ).fit()
    backbone = get_backbone(model_name, None, "cuda", "fp16")

    def end_to_end():
        X = embedder.transform(paths)
        torch.cuda.synchronize()
        return X

    decoded = torch.stack([backbone.preprocess(read_image(p)) for p in paths]).pin_memory()

    def compute_only():
        for start in range(0, len(paths), batch_size):
            backbone.encode(decoded[start : start + batch_size])
        torch.cuda.synchronize()

    (t_total, t_compute), _ = best_of(repeats, end_to_end, compute_only)
    n = len(paths)
    print(
        f"{model_name:>18} cuda fp16 | n={n:4d} | embedder {n / t_total:8.1f} img/s | "
        f"compute only {n / t_compute:8.1f} img/s | "
        f"GPU waits on decoding {max(0.0, 1 - t_compute / t_total):.0%} "
        f"(workers {embedder._n_workers('cuda')})"
    )


# ------------------------------------------------------------ warm cache
def _joblib_forward(model_id, keys, inputs, backbone):
    """The old cached function: one pickle per batch, keyed on (model_id, item keys)."""
    return backbone.encode(inputs)


def _joblib_item_key(item):
    """The old item key: file identity, or joblib.hash of the pixels."""
    import os

    from joblib import hash as joblib_hash

    if isinstance(item, str):
        stat = os.stat(item)
        return ("file", os.path.abspath(item), stat.st_size, stat.st_mtime_ns)
    arr = np.asarray(item)
    return ("pixels", None, arr.shape, joblib_hash(arr))


def joblib_transform(items, memory, backbone, batch_size):
    """CLIPEmbedder.transform with the joblib.Memory cache it had before (decoding in-process)."""
    import torch

    from clip_invariance.embedding import read_image

    cached = memory.cache(_joblib_forward, ignore=["inputs", "backbone"])
    keys = [_joblib_item_key(item) for item in items]
    out = np.empty((len(items), backbone.embedding_dim), dtype=np.float32)
    for start in range(0, len(items), batch_size):
        idx = slice(start, start + batch_size)
        if cached.check_call_in_cache(backbone.identity, keys[idx], inputs=None, backbone=None):
            out[idx] = cached(backbone.identity, keys[idx], inputs=None, backbone=None)
        else:
            inputs = torch.stack([backbone.preprocess(read_image(item)) for item in items[idx]])
            out[idx] = cached(backbone.identity, keys[idx], inputs=inputs, backbone=backbone)
    return out


def bench_cache(n, repeats, batch_size=64):
    import joblib
    from PIL import Image

    from clip_invariance.embedding._backbone import get_backbone

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, arr in enumerate(arrays):
            paths.append(f"{tmp}/img{i}.png")
            Image.fromarray(arr).save(paths[-1])
        backbone = get_backbone(TINY, None, "cpu", "fp32")
        embedder = CLIPEmbedder(
            TINY, pretrained=None, device="cpu", batch_size=batch_size, num_workers=0, memory=f"{tmp}/npy",
            memo_size=0, progress=False,  # the disk cache alone, as the old one
        )
        memory = joblib.Memory(f"{tmp}/joblib", verbose=0)
        for name, items in [("arrays", arrays), ("files", paths)]:
            X_new, X_old = embedder.transform(items), joblib_transform(items, memory, backbone, batch_size)
            (t_new, t_old), (Y_new, Y_old) = best_of(
                repeats,
                lambda items=items: embedder.transform(items),
                lambda items=items: joblib_transform(items, memory, backbone, batch_size),
            )
            assert np.array_equal(Y_new, X_new) and np.array_equal(Y_old, X_old)
            print(
                f"warm cache, {n} tiny {name:6s} | per-input .npy {1e3 * t_new:7.1f} ms | "
                f"joblib.Memory per batch {1e3 * t_old:7.1f} ms | new/old time {t_new / t_old:5.2f}"
            )


# ------------------------------------------------------------ grid search
def _forget_memo(backbone):
    backbone.__dict__.pop("_embedding_memo", None)


def _count_rows():
    """Wrap Backbone.encode to count the rows of every forward pass; returns the counter."""
    from clip_invariance.embedding._backbone import Backbone

    rows = [0]
    real = Backbone.encode

    def encode(self, inputs):
        rows[0] += len(inputs)
        return real(self, inputs)

    Backbone.encode = encode
    return rows


def bench_grid_search(model_name, paths, y, environments, batch_size, num_workers):
    """The README's grid search, without reuse, with the memo and with memory=, in the same run."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import Pipeline

    from clip_invariance import InvariantProjector
    from clip_invariance.embedding._backbone import get_backbone

    grid = {"proj__n_components": [8, 16], "proj__lam": [10, 100]}
    n_folds = len(set(environments))
    backbone = get_backbone(model_name, None, "cpu", "fp32")
    rows = _count_rows()
    table, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"no reuse (memo_size=0)": {"memo_size": 0},
                    "in-memory memo (default)": {},
                    "memory= folder, memo off": {"memory": f"{tmp}/cache", "memo_size": 0}}
        for name, params in variants.items():
            _forget_memo(backbone)
            embedder = CLIPEmbedder(model_name, pretrained=None, device="cpu", batch_size=batch_size,
                                    num_workers=num_workers, progress=False, **params)
            pipe = Pipeline([("embed", embedder), ("proj", InvariantProjector()),
                             ("clf", LogisticRegression(max_iter=1000))])
            search = GridSearchCV(pipe, grid, cv=LeaveOneGroupOut())
            rows[0] = 0
            start = time.perf_counter()
            search.fit(paths, y, groups=environments, proj__environments=environments)
            seconds = time.perf_counter() - start
            results[name] = search.cv_results_["mean_test_score"]
            table.append({"variant": name, "model": model_name, "images": len(paths),
                          "candidates": len(search.cv_results_["params"]), "folds": n_folds,
                          "rows_embedded": rows[0], "rows_per_image": round(rows[0] / len(paths), 2),
                          "seconds": round(seconds, 2)})
    reference = table[0]["seconds"]
    for row, scores in zip(table, results.values()):
        row["speedup_vs_no_reuse"] = round(reference / row["seconds"], 1)
        row["same_scores"] = bool(np.array_equal(scores, results["no reuse (memo_size=0)"]))
        print(f"grid search {row['candidates']} candidates x {n_folds} folds, {len(paths)} images | "
              f"{row['variant']:26s} | {row['rows_embedded']:5d} rows | {row['seconds']:7.2f} s | "
              f"{row['speedup_vs_no_reuse']:5.1f}x | same scores {row['same_scores']}")
    return table


def bench_memo_cost(model_name, paths, repeats, batch_size, num_workers):
    """What the default memo costs a call that reuses nothing: a cold memo against none, files and arrays."""
    from PIL import Image

    from clip_invariance.embedding._backbone import get_backbone

    backbone = get_backbone(model_name, None, "cpu", "fp32")
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    table = []
    for kind, items in [("files", list(paths)), ("arrays", arrays)]:
        on, off = (CLIPEmbedder(model_name, pretrained=None, device="cpu", batch_size=batch_size,
                                num_workers=num_workers, memo_size=size, progress=False) for size in (512, 0))

        def cold(items=items, on=on):
            _forget_memo(backbone)
            return on.transform(items)

        def none(items=items, off=off):
            return off.transform(items)

        (t_on, t_off), (X_on, X_off) = best_of(repeats, cold, none)
        table.append({"model": model_name, "inputs": kind, "n": len(items), "memo_off_s": round(t_off, 3),
                      "cold_memo_s": round(t_on, 3), "cold_over_off": round(t_on / t_off, 3),
                      "same_embeddings": bool(np.array_equal(X_on, X_off))})
        print(f"memo cost {model_name} {kind:6s} | off {t_off:6.3f} s | cold memo {t_on:6.3f} s | "
              f"ratio {t_on / t_off:5.3f}")
    return table


# ----------------------------------------------------- the pipeline's limits
def bench_limits(model_name, paths, repeats, batch_size, num_workers):
    """(a) decode + preprocess alone, (b) the model alone, (c) end to end: interleaved, best of repeats."""
    from clip_invariance.embedding._backbone import get_backbone

    embedder = CLIPEmbedder(model_name, pretrained=None, device="cpu", batch_size=batch_size,
                            num_workers=num_workers, memo_size=0, progress=False).fit()
    backbone = get_backbone(model_name, None, "cpu", "fp32")
    items = list(paths)
    index = np.arange(len(items))
    batches = [index[start : start + batch_size] for start in range(0, len(items), batch_size)]

    def decode_only():  # the very DataLoader transform() iterates, its output dropped
        for _ in embedder._image_loader(items, batches, backbone):
            pass

    decoded = [inputs for inputs, _, _ in embedder._image_loader(items, batches, backbone)]

    def model_only():
        for inputs in decoded:
            backbone.encode(inputs)

    (t_a, t_b, t_c), _ = best_of(repeats, decode_only, model_only, lambda: embedder.transform(items))
    n = len(items)
    row = {"model": model_name, "device": "cpu", "images": n, "batch_size": batch_size,
           "num_workers": embedder._n_workers("cpu"), "torch_threads": _torch_threads(),
           "decode_img_per_s": round(n / t_a, 1), "model_img_per_s": round(n / t_b, 1),
           "end_to_end_img_per_s": round(n / t_c, 1),
           "ratio_end_to_end_over_slower": round(max(t_a, t_b) / t_c, 2)}
    print(f"limits {model_name} cpu | (a) decode {row['decode_img_per_s']:8.1f} img/s | (b) model "
          f"{row['model_img_per_s']:8.1f} img/s | (c) end to end {row['end_to_end_img_per_s']:8.1f} img/s | "
          f"(c) / min(a, b) = {row['ratio_end_to_end_over_slower']:.2f} (workers {row['num_workers']})")
    return row


def _torch_threads():
    import torch

    return torch.get_num_threads()


def _write_table(name, rows):
    """Write rows to docs/tables/NAME with the machine's load, so a reader can weigh the timings."""
    load = os.getloadavg()[0]
    for row in rows:
        row["cpus"] = os.cpu_count()
        row["load_1min"] = round(load, 1)
    path = TABLES / name
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def _pacs_mini():
    if not PACS_MINI.is_dir():
        raise SystemExit(f"pacs-mini not found at {PACS_MINI}")
    data = load_image_folder(PACS_MINI)
    # Interleave domains so a subset has every domain.
    order = np.argsort(np.arange(len(data.paths)) % 7, kind="stable")
    return data.paths[order], data.y[order], data.environments[order]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[TINY, "ViT-B-32"])
    parser.add_argument("--n-images", type=int, nargs="+", default=[420, 64],
                        help="images per model (one value, or one per model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", default="auto")
    parser.add_argument("--n-cached", type=int, default=300, help="tiny images of the warm-cache benchmark")
    parser.add_argument("--cache-only", action="store_true", help="run only the warm-cache benchmark")
    parser.add_argument("--parts", nargs="+", default=["cache", "speed", "grid", "limits", "memo-cost"],
                        choices=["cache", "speed", "grid", "limits", "memo-cost"],
                        help="what to run (default: all)")
    parser.add_argument("--grid-models", nargs="+", default=[TINY, "ViT-B-32"],
                        help="models of the grid-search part (random weights)")
    parser.add_argument("--grid-n-images", type=int, nargs="+", default=[420, 84],
                        help="images per grid-search model, every environment interleaved")
    parser.add_argument("--limits-models", nargs="+", default=[TINY, "ViT-B-32"],
                        help="models of the limits part (random weights)")
    parser.add_argument("--limits-n-images", type=int, nargs="+", default=[420, 128],
                        help="images per limits model")
    parser.add_argument("--limits-workers", nargs="+", default=["auto", "1", "2"],
                        help="num_workers of the limits part, one row each")
    args = parser.parse_args()
    import torch

    parts = ["cache"] if args.cache_only else args.parts
    register_tiny()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    if "cache" in parts:
        bench_cache(args.n_cached, args.repeats)
    if not set(parts) - {"cache"}:
        return
    paths, y, environments = _pacs_mini()
    workers = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
    print(f"pacs-mini: {len(paths)} files")
    if "limits" in parts:
        table = [bench_limits(model_name, paths[:n], args.repeats, args.batch_size,
                              w if w == "auto" else int(w))
                 for model_name, n in zip(args.limits_models, args.limits_n_images)
                 for w in args.limits_workers]
        _write_table("embed_limits.csv", table)
    if "memo-cost" in parts:
        table = bench_memo_cost(TINY, list(paths), args.repeats, args.batch_size, workers)
        _write_table("embed_memo_cost.csv", table)
    if "grid" in parts:
        table = [row for model_name, n in zip(args.grid_models, args.grid_n_images)
                 for row in bench_grid_search(model_name, list(paths[:n]), y[:n], environments[:n],
                                              args.batch_size, workers)]
        _write_table("embed_grid_search.csv", table)
    if "speed" not in parts:
        return
    sizes = args.n_images * len(args.models) if len(args.n_images) == 1 else args.n_images
    for model_name, n in zip(args.models, sizes):
        bench_cpu(model_name, list(paths[:n]), args.repeats, args.batch_size, workers)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        for model_name in ["ViT-B-32", "ViT-B-16"]:
            bench_gpu(model_name, list(paths), args.repeats, 256)
    else:
        print("no CUDA device: GPU figures (ViT-B-32 / ViT-B-16 fp16, decoding wait) skipped")


if __name__ == "__main__":
    main()
