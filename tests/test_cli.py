"""The clip-invariance command line: results, and one-line errors for every user mistake."""

import json
import os
import re
import subprocess
import sys

import pytest
from _cases import run_cli as run

from clip_invariance import __version__
from clip_invariance.datasets import load_embeddings
from clip_invariance.embedding import CLIPEmbedder
from clip_invariance.evaluation import evaluate_synthetic


def test_demo_rows_show_the_invariant_gain():
    rows = evaluate_synthetic(n_samples=1200, normalize=False, random_state=0)
    assert [r["env"] for r in rows] == [0, 1, 2, 3]
    shifted = rows[-1]
    assert shifted["shifted"] and not any(r["shifted"] for r in rows[:-1])
    # Out of distribution the invariant subspace beats raw CLIP, zero-shot and probe.
    assert shifted["ZS ICM"] > shifted["zero-shot"] + 0.3
    assert shifted["probe ICM"] > shifted["probe"] + 0.15
    assert shifted["probe ICM"] > shifted["oracle"] - 0.05
    assert shifted["max angle"] < 15


def test_demo_prints_a_table(capsys):
    status, out, _ = run(["demo", "--n-samples", "800", "--normalize", "yes"], capsys)
    assert status == 0
    assert "embeddings: L2-normalised" in out and "embeddings: raw" not in out
    assert "ZS ICM" in out and "probe ICM" in out and "oracle" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("3 ")]) == 1


def test_zero_components_is_an_error_not_the_default():
    with pytest.raises(ValueError, match="n_components"):
        evaluate_synthetic(n_samples=400, n_components=0)


def test_version(capsys):
    status, out, _ = run(["--version"], capsys)
    assert status == 0 and out.strip() == f"clip-invariance {__version__}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nonsense"], "invalid choice"),
        (["demo", "--normalize", "maybe"], "invalid choice"),
        (["demo", "--n-components", "0"], "must be a positive integer, got 0"),
        (["demo", "--n-samples", "-5"], "must be a positive integer, got -5"),
        (["demo", "--n-samples", "many"], "must be an integer, got 'many'"),
        (["demo", "--lam", "-1"], r"must be a finite number >= 0, got -1"),
        (["demo", "--lam", "nan"], r"must be a finite number >= 0, got nan"),
        (["demo", "--lam", "inf"], r"must be a finite number >= 0, got inf"),
        (["demo", "--seed", "-1"], "must be a non-negative integer"),
        (["evaluate", ".", "--batch-size", "0"], "must be a positive integer"),
        (["evaluate", ".", "--n-augmented", "-1"], "must be a non-negative integer"),
        (["evaluate", ".", "--methods", "probe,magic"], r"unknown \['magic'\]"),
        (["evaluate", ".", "--seeds", "0,,1"], "comma list without empty items"),
        (["evaluate", ".", "--n-components", "8,0"], "must be a positive integer, got 0"),
        (["evaluate", ".", "--selection", "best"], "invalid choice"),
        (["evaluate", ".", "--templates", "fancy"], "invalid choice"),
        (["evaluate"], "the following arguments are required: STORE_OR_ROOT"),
        (["embed", "."], "the following arguments are required: -o/--output"),
        (["embed", ".", "-o", "store", "--n-augmented", "-1"], "must be a non-negative integer"),
        (["embed", ".", "-o", "store", "--shard", "4/4"], r"--shard: must be i/N with 0 <= i < N, got 4/4"),
        (["embed", ".", "-o", "store", "--shard", "1/0"], r"--shard: must be i/N with 0 <= i < N, got 1/0"),
        (["embed", ".", "-o", "store", "--shard", "a/b"], r"--shard: expected i/N, integers .* got 'a/b'"),
        (["embed", ".", "-o", "store", "--shard", "2"], r"--shard: expected i/N, integers .* got '2'"),
    ],
)
def test_malformed_command_lines_exit_2(argv, message, capsys):
    status, _, err = run(argv, capsys)
    assert status == 2
    assert "Traceback" not in err
    assert any("error:" in line and re.search(message, line) for line in err.splitlines())


def _one_environment(tmp_path):
    (tmp_path / "photo" / "dog").mkdir(parents=True)
    (tmp_path / "photo" / "dog" / "1.png").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--n-samples", "3"], "n_samples. parameter of evaluate_synthetic must be an int"),
        (["demo", "--n-samples", "400", "--n-components", "1000"], "n_components=1000 must be at most"),
        (["evaluate", "{tmp}/missing"], "no embedding store or image folder at"),
        (["evaluate", "{one_environment}"], "at least two environment folders"),
        (["evaluate", "{pacs}", "--pretrained", "{tmp}/no-such.safetensors"], "Checkpoint file not found"),
        (["evaluate", "{pacs}", "--n-components", "1000"], "n_components"),
        (["evaluate", "{pacs}", "--plot"], "--plot writes its figures into --output"),
        (["evaluate", "{pacs}", "--selection", "views-val", "--n-augmented", "0"], "views"),
        (["evaluate", "{pacs}", "--model-name", "no-such-model"], "no-such-model"),
        (["embed", "{tmp}/missing", "-o", "{tmp}/store"], "Image folder not found"),
        (["embed", "{pacs}", "-o", "{pacs}/store"], "inside"),
        (["embed", "{pacs}", "-o", "{tmp}/store", "--device", "cuda:99"], "cuda:99"),
        (["embed", "{pacs}", "-o", "{tmp}/sharded", "--shard", "0/4"], "into 2; this run splits into 4"),
        (["embed", "{pacs}", "-o", "{tmp}/sharded", "--shard", "0/421"], "420 images cannot be split"),
        (["evaluate", "{tmp}/sharded"], r"1 of 2 shards are not complete: shard 0 \(missing\)"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_1(argv, message, tmp_path, capsys, monkeypatch, request):
    """Checked before any image is embedded, reported on one line of stderr."""
    fields = {"tmp": tmp_path}
    (tmp_path / "sharded" / "shards" / "00001-of-00002").mkdir(parents=True)  # as another machine's shard
    (tmp_path / "sharded" / "shards" / "00001-of-00002" / "store.json").write_text("{}")
    if any("{one_environment}" in a for a in argv):
        fields["one_environment"] = _one_environment(tmp_path / "one")
    if any("{pacs}" in a for a in argv):
        fields["pacs"] = request.getfixturevalue("pacs_mini")
        tiny = request.getfixturevalue("tiny_model")
        if "--model-name" not in argv:
            argv = [*argv, "--model-name", tiny]
        if "--pretrained" not in argv:
            argv = [*argv, "--pretrained", "none"]
        if "--device" not in argv:
            argv = [*argv, "--device", "cpu"]

    def no_embedding(self, X):
        raise AssertionError("an image was embedded before the arguments were checked")

    monkeypatch.setattr(CLIPEmbedder, "transform", no_embedding)
    status, _, err = run([a.format(**fields) for a in argv], capsys)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"clip-invariance {argv[0]}: error: ")
    assert re.search(message, lines[0])


def test_console_script_reports_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "clip_invariance.cli", "evaluate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "clip-invariance evaluate: error: no embedding store or image folder at "
        f"{str(tmp_path / 'missing')!r}."
    ]


def test_embed_then_evaluate_the_store(tiny_model, pacs_mini, tmp_path, capsys):
    """End to end on real images with a tiny random-weight model (accuracy is meaningless)."""
    store, output = tmp_path / "store", tmp_path / "results"
    model = ["--model-name", tiny_model, "--pretrained", "none", "--device", "cpu"]
    assert run(["embed", str(pacs_mini), "-o", str(store), *model, "--quiet"], capsys)[0] == 0
    status, out, _ = run(
        [
            "evaluate", str(store), "--methods", "zero-shot,probe,probe-icm", "--n-components", "8",
            "--lam", "10", "--C", "0.316", "--output", str(output), "--plot", "--quiet",
        ],
        capsys,
    )
    assert status == 0
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert header.split("|")[2:-1] == [" art_painting ", " cartoon ", " photo ", " sketch ", " avg "]
    assert "selection lodo-cv" in out
    written = sorted(p.name for p in output.iterdir())
    assert {"results.csv", "results.md", "config.json"} <= set(written)
    assert any(name.startswith("accuracy_") and name.endswith(".png") for name in written)
    assert any(name.startswith("ablation_") and name.endswith(".png") for name in written)
    results = (output / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 3 * 4  # 3 methods x 4 targets, one seed


def test_embed_then_embed_again_on_pacs_mini(tiny_model, pacs_mini, tmp_path, capsys):
    argv = [
        "embed", str(pacs_mini), "-o", str(tmp_path / "store"), "--model-name", tiny_model,
        "--pretrained", "none", "--device", "cpu", "--quiet",
    ]
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert "420 images in 4 environments, 7 classes, 1 view(s) each, D=32" in out
    store = load_embeddings(tmp_path / "store")
    assert store.X.shape == (420, 32) and store.views.shape == (420, 1, 32)

    def no_embedding(self, X):
        raise AssertionError("the second run re-embedded something")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CLIPEmbedder, "transform", no_embedding)
        status, out, _ = run(argv, capsys)
    assert status == 0 and "420 images" in out


def test_embed_in_two_shards_then_evaluate(tiny_model, pacs_mini, tmp_path, capsys):
    store = tmp_path / "store"
    model = ["--model-name", tiny_model, "--pretrained", "none", "--device", "cpu", "--quiet"]
    for shard in ("1/2", "0/2"):  # in any order, as on two machines
        status, out, _ = run(["embed", str(pacs_mini), "-o", str(store), "--shard", shard, *model], capsys)
        assert status == 0 and f"shard {shard}: 210 images in 4 environments" in out
    whole = load_embeddings(store)
    assert whole.X.shape == (420, 32) and whole.settings["shards"] == 2

    def no_embedding(self, X):
        raise AssertionError("a finished shard re-embedded something")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CLIPEmbedder, "transform", no_embedding)
        assert run(["embed", str(pacs_mini), "-o", str(store), "--shard", "0/2", *model], capsys)[0] == 0
    status, out, _ = run(["evaluate", str(store), "--methods", "zero-shot,probe", "--C", "0.316", "--quiet"],
                         capsys)
    assert status == 0
    assert f"{store}: store {store}" in out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert header.split("|")[2:-1] == [" art_painting ", " cartoon ", " photo ", " sketch ", " avg "]


# ----------------------------------------- issue 20: stores that cannot silently mix data
def _small_folder(root, n=1):
    """2 environments x 2 classes x ``n`` images: a folder that embeds in a second."""
    import numpy as np
    from PIL import Image

    for e, environment in enumerate(("photo", "sketch")):
        for c, cls in enumerate(("cat", "dog")):
            (root / environment / cls).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(100 * e + 10 * c + i)
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / environment / cls / f"{i}.png")
    return root


def _one_error_line(status, err, command):
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clip-invariance {command}: error: "), err
    return lines[0]


def test_embed_refuses_a_store_of_another_model_unless_overwrite(tiny_model, tiny_checkpoint, tmp_path,
                                                                  capsys):
    root, store, checkpoint = _small_folder(tmp_path / "images"), tmp_path / "store", tiny_checkpoint["bin"]
    base = ["embed", str(root), "-o", str(store), "--model-name", tiny_model, "--device", "cpu", "--quiet",
            "--n-augmented", "0"]
    assert run([*base, "--pretrained", "none"], capsys)[0] == 0
    line = _one_error_line(*run([*base, "--pretrained", str(checkpoint)], capsys)[::2], "embed")
    assert line.endswith(f"{str(store)!r} holds embeddings of {tiny_model} (random weights); this run "
                         f"embeds with {tiny_model} ({checkpoint}). Pass overwrite=True (--overwrite) to "
                         "replace that store, or choose another store folder.")
    assert load_embeddings(store).settings["model"]["pretrained"] is None  # the old store is intact
    assert run([*base, "--pretrained", str(checkpoint), "--overwrite"], capsys)[0] == 0
    assert load_embeddings(store).settings["model"]["pretrained"]["file"] == str(checkpoint)


def test_embed_verify_content_keys_images_by_their_bytes(tiny_model, tmp_path, capsys):
    root, store = _small_folder(tmp_path / "images"), tmp_path / "store"
    argv = ["embed", str(root), "-o", str(store), "--model-name", tiny_model, "--pretrained", "none",
            "--device", "cpu", "--quiet", "--n-augmented", "0"]
    assert run([*argv, "--verify-content"], capsys)[0] == 0
    assert load_embeddings(store).settings["images"]["key"] == "content"
    assert run(argv, capsys)[0] == 0
    assert load_embeddings(store).settings["images"]["key"] == "mtime"


def _nested(store):
    (store / "store.json").write_text("[" * 200_000 + "]" * 200_000)


def _fifo(store):
    os.remove(store / "X.npy")
    os.mkfifo(store / "X.npy")


def _link(store):
    os.rename(store / "X.npy", store.parent / "X-elsewhere.npy")
    os.symlink(store.parent / "X-elsewhere.npy", store / "X.npy")


def _duplicate_classes(store):
    meta = json.loads((store / "store.json").read_text())
    meta["class_names"] = ["cat", "cat"]
    (store / "store.json").write_text(json.dumps(meta))


def _unfinished(store):
    os.remove(store / "store.json")
    (store / "pending").mkdir()


@pytest.mark.parametrize("damage, message", [
    (_nested, r"store.json: damaged store.json \(nested too deeply\)"),
    (_fifo, "field 'X': X.npy is not a regular file"),
    (_link, "field 'X': X.npy is a symbolic link"),
    (_duplicate_classes, r"'class_names': duplicate names \['cat'\]"),
    (_unfinished, "no store.json; this is an unfinished embedding run: run it again to resume"),
])
def test_evaluate_a_damaged_or_unfinished_store_gives_one_line(damage, message, tmp_path, capsys):
    import numpy as np

    from clip_invariance.datasets import save_embeddings

    store = tmp_path / "store"
    save_embeddings(store, X=np.eye(4, 3), y=["cat", "dog"] * 2, environments=["a", "a", "b", "b"])
    damage(store)
    line = _one_error_line(*run(["evaluate", str(store), "--quiet"], capsys)[::2], "evaluate")
    assert re.search(message, line), line


def test_evaluate_a_mistyped_store_name_says_what_is_missing(tmp_path, capsys):
    line = _one_error_line(*run(["evaluate", str(tmp_path / "stroe")], capsys)[::2], "evaluate")
    assert line.endswith(f"no embedding store or image folder at {str(tmp_path / 'stroe')!r}.")


def test_evaluate_a_folder_with_two_models_keeps_a_store_for_each(tiny_model, tiny_checkpoint, tmp_path,
                                                                  capsys, monkeypatch):
    """The default store is per folder and model: another model neither replaces nor is refused by it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = _small_folder(tmp_path / "images", n=4)
    base = ["evaluate", str(root), "--methods", "zero-shot", "--model-name", tiny_model, "--device", "cpu",
            "--quiet"]
    stores = []
    for pretrained in ("none", str(tiny_checkpoint["bin"]), "none"):
        status, out, err = run([*base, "--pretrained", pretrained], capsys)
        assert status == 0, err
        stores.append(out.splitlines()[0].split(": store ")[1])
    assert stores[0] != stores[1] and stores[2] == stores[0]
    assert load_embeddings(stores[1]).settings["model"]["pretrained"]["file"] == str(tiny_checkpoint["bin"])


def test_evaluate_takes_the_baselines_grids(tmp_path, capsys):
    from clip_invariance.datasets import make_invariant_embeddings, save_embeddings

    data = make_invariant_embeddings(n_samples=300, n_features=16, random_state=0)
    store = tmp_path / "store"
    save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    output = tmp_path / "results"
    status, _, err = run(["evaluate", str(store), "--methods", "wise,tip-adapter", "--C", "1", "--wise-alpha",
                          "0.25", "--tip-alpha", "2", "--tip-beta", "3", "--output", str(output), "--quiet"],
                         capsys)
    assert status == 0, err
    grids = json.loads((output / "config.json").read_text())["arguments"]["grids"]
    chosen = [grids[name] for name in ("wise_alpha", "tip_alpha", "tip_beta", "C")]
    assert chosen == [[0.25], [2.0], [3.0], [1.0]]
    status, _, err = run(["evaluate", str(store), "--methods", "wise", "--wise-alpha", "0.5,2", "--quiet"],
                         capsys)
    assert _one_error_line(status, err, "evaluate").endswith(
        "grids['wise_alpha'] holds 2.0: the mixing weight must be in [0, 1].")


def test_evaluate_output_keeps_each_round_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    import clip_invariance.evaluation._evaluate as evaluate_module
    from clip_invariance.datasets import make_invariant_embeddings, save_embeddings

    data = make_invariant_embeddings(n_samples=240, n_features=16, n_invariant=4, n_variant=4, random_state=0)
    store = tmp_path / "store"
    save_embeddings(store, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2))
    output = tmp_path / "results"
    argv = ["evaluate", str(store), "--methods", "probe,probe-icm", "--n-components", "4", "--lam", "10",
            "--C", "1", "--output", str(output), "--quiet"]
    status, first, err = run([*argv, "--n-jobs", "2"], capsys)
    assert status == 0, err
    assert len((output / "rounds.jsonl").read_text().splitlines()) == 1 + 2 * 4  # header, methods x targets
    calls = []
    real = evaluate_module._evaluate_round
    monkeypatch.setattr(evaluate_module, "_evaluate_round", lambda *a: calls.append(a) or real(*a))
    status, again, err = run(argv, capsys)
    assert status == 0, err
    assert calls == []
    assert again == first  # read back, not run: the same table (n_jobs is not part of the results)
    status, _, err = run([*argv, "--n-jobs", "0"], capsys)
    assert status == 2 and "--n-jobs: must be a non-zero integer (-1: every core)" in err
