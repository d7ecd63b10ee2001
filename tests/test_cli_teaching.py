"""The command line teaches itself, refuses mistakes before any work, and writes paper-ready results.

Issue 22 (help, one-line errors, --methods all, python -m, the offline-weights
flag, Ctrl-C, --latex, config.json, --plot ablations) and issue 20, items 10-12
(--output checked before any work, planted links, the store of an image folder).
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from _cases import run_cli as run

import clip_invariance.embedding as embedding
import clip_invariance.evaluation as evaluation
from clip_invariance import __version__
from clip_invariance.cli import _parser
from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
from clip_invariance.embedding import CLIPEmbedder, _backbone

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A synthetic store: 4 environments x 50 images, 16 dimensions, one view, class prompts."""
    data = make_invariant_embeddings(n_samples=200, n_features=16, normalize=True, random_state=0)
    path = tmp_path_factory.mktemp("stores") / "synthetic"
    save_embeddings(path, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    return path


def image_folder(root, n_images=1):
    """2 environments x 2 classes x ``n_images`` small random PNGs."""
    from PIL import Image

    for e, environment in enumerate(("photo", "sketch")):
        for c, name in enumerate(("cat", "dog")):
            (root / environment / name).mkdir(parents=True)
            for i in range(n_images):
                pixels = np.random.default_rng([e, c, i]).integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / environment / name / f"{i}.png")
    return root


def refuse(what):
    def refused(*args, **kwargs):
        raise AssertionError(f"{what} ran before the arguments were checked")

    return refused


# ---------------------------------------------------------------- help and argument errors
@pytest.mark.parametrize("command", [[], ["demo"], ["embed"], ["evaluate"]])
def test_every_help_shows_its_defaults_and_two_examples_that_parse(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per argument
    status, out, _ = run([*command, "--help"], capsys)
    assert status == 0
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert len(examples) == 2
    for line in examples:
        for example in line.split("&&"):  # each command of a chain parses as typed
            words = shlex.split(example)
            assert words[0] == "clip-invariance" and words[1:len(command) + 1] == command
            _parser().parse_args(words[1:])
    defaults = {
        (): [],
        ("demo",): ["images per environment (default: 2000)", "or show both (default: both)"],
        ("embed",): ["open_clip model name (default: ViT-B-32)", "random weights (default: openai)",
                     "augmented views per image (default: 1)", "--pretrained PATH"],
        ("evaluate",): ["open_clip model name (default: ViT-B-32)", "random weights (default: openai)",
                        "or all three (default: dg)", "e.g. 0,1,2 (default: 0)", "--pretrained PATH",
                        "or all (default: all: every method the store supports"],
    }[tuple(command)]
    assert [text for text in defaults if text not in out] == []


@pytest.mark.parametrize(
    "argv, prog, message",
    [
        (["demo", "--nope"], "clip-invariance", "unrecognized arguments: --nope"),
        (["demo", "--lam", "-1"], "clip-invariance demo",
         "argument --lam: must be a finite number >= 0, got -1"),
        (["embed", "."], "clip-invariance embed", "the following arguments are required: -o/--output"),
        (["evaluate", ".", "--seeds", "0,,1"], "clip-invariance evaluate",
         "argument --seeds: expected a comma list without empty items, got '0,,1'"),
        (["evaluate", ".", "--methods", "all,probe"], "clip-invariance evaluate",
         "argument --methods: 'all' stands alone, got 'all,probe'"),
    ],
)
def test_a_malformed_command_line_is_one_line_not_the_usage_block(argv, prog, message, capsys):
    status, _, err = run(argv, capsys)
    assert status == 2
    assert err == f"{prog}: error: {message} (see {prog} --help)\n"


def test_python_dash_m_is_the_command():
    out = subprocess.run([sys.executable, "-m", "clip_invariance", "--version"], capture_output=True,
                         text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"clip-invariance {__version__}\n", "")


def test_methods_all_is_every_method_the_store_supports(tmp_path, capsys):
    assert _parser().parse_args(["evaluate", "s", "--methods", "all"]).methods is None  # as when omitted
    data = make_invariant_embeddings(n_samples=120, n_features=16, random_state=0)
    bare = tmp_path / "bare"  # no prompts, views or texts: only the image heads without views can run
    save_embeddings(bare, X=data.X, y=data.y, environments=data.environments)
    argv = ["evaluate", str(bare), "--C", "0.316", "--selection", "lodo-cv", "--quiet"]
    status, out, err = run([*argv, "--methods", "all"], capsys)
    assert status == 0
    assert (status, out, err) == run(argv, capsys)
    methods = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")][1:]
    supported = [m for m in evaluation.METHODS if m in ("prototype", "probe")]
    assert methods[:len(supported)] == supported


# ---------------------------------------------------------------- messages that say the way out
def test_offline_weights_name_the_pretrained_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_backbone, "cached_tag_file", lambda cfg: None)
    monkeypatch.setattr(CLIPEmbedder, "transform", refuse("embedding"))
    root = image_folder(tmp_path / "images")
    status, _, err = run(["embed", str(root), "-o", str(tmp_path / "store"), "--device", "cpu"], capsys)
    assert status == 1
    assert err.splitlines() == [
        "clip-invariance embed: error: Cannot load the weights 'ViT-B-32' / 'openai': they are not in the "
        "local cache and huggingface.co cannot be reached. Download them once on a connected machine, or "
        "point at a local checkpoint: --pretrained /path/to/checkpoint.safetensors on the command line, "
        "CLIPEmbedder('ViT-B-32', pretrained='/path/to/checkpoint.safetensors') in Python (OpenAI weights: "
        "use a '-quickgelu' model name with a file)."
    ]


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_says_how_to_resume(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(embedding, "embed_image_folder", interrupt)
    monkeypatch.setattr(evaluation, "evaluate_image_folder", interrupt)
    monkeypatch.setattr(evaluation, "evaluate_store", interrupt)
    root = image_folder(tmp_path / "images")
    assert run(["embed", str(root), "-o", str(tmp_path / "s")], capsys) == (
        130, "", "clip-invariance embed: interrupted; run the same command again to resume: the images "
                 "embedded so far are kept\n")
    assert run(["evaluate", str(root), "--store", str(tmp_path / "s")], capsys) == (
        130, "", "clip-invariance evaluate: interrupted; run the same command again: the embedding resumes "
                 "where it stopped\n")
    # Nothing resumes on a store: no promise.
    assert run(["evaluate", str(store)], capsys) == (130, "", "clip-invariance evaluate: interrupted\n")


# ---------------------------------------------------------------- --output, checked before any work
def _unwritable(tmp_path):
    """A folder nobody may write into, or None where this user may write anywhere."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        return folder
    try:  # root writes through permissions: a kernel file system that refuses it, where there is one
        tempfile.mkstemp(dir="/sys")
    except OSError:
        return "/sys"
    return None


@pytest.mark.parametrize("case", ["file", "under a file", "link to nothing", "unwritable"])
def test_output_that_cannot_be_written_is_refused_before_any_work(case, store, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate_store", refuse("the evaluation"))
    (tmp_path / "file").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    unwritable = _unwritable(tmp_path) if case == "unwritable" else None
    if case == "unwritable" and unwritable is None:
        pytest.skip("this user may write everywhere here")
    output, message = {
        "file": (tmp_path / "file", "is a file, not a folder."),
        "under a file": (tmp_path / "file" / "results", f"is under the file {str(tmp_path / 'file')!r}, "
                                                         "not a folder."),
        "link to nothing": (tmp_path / "link" / "results", f": {str(tmp_path / 'link')!r} is a link to "
                                                            "nothing."),
        "unwritable": (os.path.join(unwritable or "", "results"),
                       f"cannot be written ({str(unwritable)!r}: Permission denied); nothing was run."),
    }[case]
    status, out, err = run(["evaluate", str(store), "--output", str(output)], capsys)
    assert (status, out) == (1, "")
    separator = "" if message.startswith(":") else " "
    assert err == f"clip-invariance evaluate: error: --output {str(output)!r}{separator}{message}\n"
    assert (tmp_path / "file").read_text() == "mine"


# ---------------------------------------------------------------- results: --latex, config.json, --plot
def test_latex_config_and_ablations_on_the_grids_given(store, tmp_path, capsys, monkeypatch):
    ablations = {}
    real = evaluation.evaluate_ablation

    def spy(data, *, method, **kwargs):
        ablations[method] = (kwargs, real(data, method=method, **kwargs))
        return ablations[method][1]

    monkeypatch.setattr(evaluation, "evaluate_ablation", spy)
    output = tmp_path / "results"
    status, out, _ = run(["evaluate", str(store), "--methods", "probe,zero-shot-icm,probe-icm",
                          "--interventions", "image", "--n-components", "2,4", "--lam", "1,10",
                          "--C", "0.316", "--output", str(output), "--latex", "--plot", "--quiet"], capsys)
    assert status == 0
    names = ["results.csv", "results.md", "config.json", "results.tex", "accuracy_dg_all_lodo-cv.png",
             "ablation_zero-shot-icm.png", "ablation_probe-icm.png"]
    assert out.splitlines()[-1] == "wrote " + ", ".join(str(output / name) for name in names)
    # Every invariant method asked for, on the grids given, the other parameter at its grid's middle.
    assert list(ablations) == ["zero-shot-icm", "probe-icm"]
    for kwargs, rows in ablations.values():
        assert kwargs["grids"] == {"n_components": [2, 4], "lam": [1.0, 10.0], "C": [0.316]}
        swept = {name: (sorted(part["value"].unique()), sorted(part["lam" if name == "n_components"
                                                                       else "n_components"].unique()))
                 for name, part in rows.groupby("parameter") if name != "reference"}
        assert swept == {"n_components": ([2.0, 4.0], [10.0]), "lam": ([1.0, 10.0], [4.0])}
    results = pd.read_csv(output / "results.csv")
    assert (output / "results.tex").read_text() == evaluation.latex_tables(results)
    config = json.loads((output / "config.json").read_text())
    assert config["store"] == str(store)
    assert isinstance(config["duration_s"], float) and config["duration_s"] >= 0
    assert pd.Timestamp(config["date"]).tzname() == "UTC"
    assert config["versions"]["clip-invariance"] == __version__
    assert config["hardware"]["cpu_count"] == os.cpu_count()


def test_config_of_an_image_folder_names_its_store_and_reruns(tiny_model, tmp_path, capsys):
    root, store, output = image_folder(tmp_path / "images", n_images=5), tmp_path / "store", tmp_path / "out"
    status, _, err = run(["evaluate", str(root), "--store", str(store), "--methods", "probe", "--C", "0.316",
                          "--model-name", tiny_model, "--pretrained", "none", "--device", "cpu",
                          "--output", str(output), "--quiet"], capsys)
    assert status == 0, err
    config = json.loads((output / "config.json").read_text())
    assert config["store"] == str(store)  # was null: the documented rerun failed
    again = evaluation.evaluate_store(config["store"], **config["arguments"])
    first = pd.read_csv(output / "results.csv")
    assert again["accuracy"].tolist() == first["accuracy"].tolist()


def test_a_store_given_as_a_link_is_written_at_its_target(tiny_model, tmp_path, capsys):
    root = image_folder(tmp_path / "images")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    argv = ["embed", str(root), "-o", str(tmp_path / "link"), "--model-name", tiny_model,
            "--pretrained", "none", "--device", "cpu", "--quiet", "--n-augmented", "0"]
    status, out, _ = run(argv, capsys)
    assert status == 0 and out.startswith(f"{tmp_path / 'link'}: 4 images in 2 environments")
    # The link is kept, pointing at the store; no real folder in its place, no '.link.old-*' left.
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "store.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["images", "link", "real"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    argv[3] = str(tmp_path / "dangling")
    status, _, err = run(argv, capsys)
    assert status == 1 and err == (f"clip-invariance embed: error: -o {str(tmp_path / 'dangling')!r} is a "
                                   f"link to nothing ({str(tmp_path / 'nowhere')!r}).\n")
    assert not (tmp_path / "nowhere").exists()
