"""The learned-prompt methods of the workbench (cdc-prompts, coop) from a store made by embed_image_folder.

The tiny open_clip model (random weights, no network) embeds a folder of generated images; the methods
then learn their contexts through its text tower and reach the new classes by encoding their names.
Plumbing only: random weights give chance-level accuracies.
"""

import os
import re
import warnings

import numpy as np
import pytest

from clip_invariance.datasets import load_embeddings, make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import default_grids, evaluate_store, make_method
from clip_invariance.evaluation._methods import DEFAULT_METHODS, METHODS, PROMPT_LEARNING_METHODS
from clip_invariance.front_door import CDC_TEMPLATES, CoOpClassifier, PromptLearningFrontDoorClassifier

pytest.importorskip("torch")
pytest.importorskip("pandas")

CLASSES = ("cat", "dog", "hot_dog", "guitar")
GRIDS = {"prompt_epochs": [1], "temperature": [10.0]}
LEARNED = ["cdc-prompts", "coop"]


def image_folder(root, n_images=3):
    """2 environments x 4 classes x ``n_images`` small random PNGs."""
    from PIL import Image

    for e, environment in enumerate(("photo", "sketch")):
        for c, name in enumerate(CLASSES):
            (root / environment / name).mkdir(parents=True)
            for i in range(n_images):
                pixels = np.random.default_rng([e, c, i]).integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / environment / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory):
    from clip_invariance.embedding import embed_image_folder

    folder = tmp_path_factory.mktemp("prompt-methods")
    embed_image_folder(image_folder(folder / "images"), folder / "store", model_name=tiny_model,
                       pretrained=None, device="cpu", n_augmented=3, progress=False)
    return folder / "store"


@pytest.fixture(scope="module")
def results(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the store has its model and class names: nothing is skipped
        # Two environments: a rule that needs one source per target (lodo-cv needs two).
        return evaluate_store(store, methods=LEARNED, protocol="all", grids=GRIDS, selection="views-val")


def bare_store(path):
    """Features from elsewhere, with class names: no model recorded."""
    data = make_invariant_embeddings(n_samples=120, n_features=16, random_state=0)
    names = [f"class {c}" for c in range(len(data.prompt_embeddings))]
    save_embeddings(path, X=data.X, y=data.y, environments=data.environments, class_names=names,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    return path


# ------------------------------------------------------------------ the catalogue
def test_the_learned_prompt_methods_are_named_not_run_by_default():
    assert set(PROMPT_LEARNING_METHODS) == set(LEARNED) <= set(METHODS)
    assert not set(PROMPT_LEARNING_METHODS) & set(DEFAULT_METHODS)
    assert DEFAULT_METHODS + PROMPT_LEARNING_METHODS == METHODS
    assert default_grids(32)["prompt_epochs"] == [2, 10]


def test_make_method_builds_them_on_the_stores_model(tiny_model):
    model = {"model_name": tiny_model, "pretrained": None}
    cdc, grid, paths = make_method("cdc-prompts", grids=default_grids(32), classes=[0, 1],
                                   class_names=["cat", "dog"], model=model, n_views=4, random_state=3)
    assert isinstance(cdc, PromptLearningFrontDoorClassifier)
    assert (cdc.model_name, cdc.pretrained, cdc.n_views, cdc.random_state) == (tiny_model, None, 4, 3)
    assert tuple(cdc.templates) == CDC_TEMPLATES and cdc.class_names == ["cat", "dog"]
    assert grid == {"max_iter": [2, 10], "temperature": [10.0]}
    assert paths == {"prompt_epochs": "max_iter", "temperature": "temperature"}
    coop, grid, paths = make_method("coop", grids=default_grids(32), classes=[0, 1],
                                    class_names=["cat", "dog"], model=model)
    assert isinstance(coop, CoOpClassifier) and coop.temperature == 100.0  # CoOp's, not tuned
    assert (grid, paths) == ({"max_iter": [2, 10]}, {"prompt_epochs": "max_iter"})
    with pytest.raises(ValueError, match="^The method 'coop' learns prompts through the text tower of the "
                                         "model that made the embeddings: give model and class_names.$"):
        make_method("coop", grids=default_grids(32), classes=[0, 1])


@pytest.mark.parametrize("value, message", [
    (-1, "grids['prompt_epochs'] holds -1: the epochs of prompt learning must be an integer >= 0."),
    (2.5, "grids['prompt_epochs'] holds 2.5: the epochs of prompt learning must be an integer >= 0."),
])
def test_a_bad_epochs_grid_is_refused_before_anything_runs(tmp_path, value, message):
    store = bare_store(tmp_path / "bare")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_store(store, methods=["probe"], grids={"prompt_epochs": [value]})


# ------------------------------------------------------------------ end to end from an embedding store
def test_every_protocol_reports_both_methods(results, store):
    assert set(results["method"]) == set(LEARNED)
    assert results["accuracy"].between(0, 1).all()
    assert results["validation_accuracy"].between(0, 1).all()
    splits = results.groupby(["method", "protocol"])["split"].agg(lambda s: sorted(set(s))).to_dict()
    for method in LEARNED:
        assert splits[(method, "dg")] == ["all"]
        assert splits[(method, "open-class")] == ["base", "harmonic", "new"]
        assert splits[(method, "base-to-new")] == ["base", "harmonic", "new", "total"]
    data = load_embeddings(store)
    n_test = results.set_index(["method", "protocol", "target", "split"])["n_test"]
    for target in ("photo", "sketch"):
        target_classes = data.y[data.environments == target]
        for method in LEARNED:  # base-to-new: 2 base classes of 4; open-class: 2 of 4 as well
            assert n_test[(method, "base-to-new", target, "base")] == np.isin(target_classes, [0, 1]).sum()
            assert n_test[(method, "base-to-new", target, "new")] == np.isin(target_classes, [2, 3]).sum()
            assert n_test[(method, "open-class", target, "harmonic")] == len(target_classes)
    accuracy = results.set_index(["method", "protocol", "target", "split"])["accuracy"]
    for method in LEARNED:  # H: the harmonic mean of base and new, in both open-class protocols
        for protocol in ("open-class", "base-to-new"):
            for target in ("photo", "sketch"):
                base, new = (accuracy[(method, protocol, target, split)] for split in ("base", "new"))
                expected = 2 * base * new / (base + new) if base + new > 0 else 0.0
                assert accuracy[(method, protocol, target, "harmonic")] == pytest.approx(expected)


def test_the_chosen_parameters_and_labels_are_recorded(results):
    assert (results["prompt_epochs"] == 1).all()
    assert (results.query("method == 'cdc-prompts'")["temperature"] == 10.0).all()
    assert results.query("method == 'coop'")["temperature"].isna().all()  # CoOp's 100, not tuned
    assert set(results["templates"]) == {"learned"}
    assert set(results["interventions"]) == {"none"} and not results["train_views"].any()
    assert results.attrs["config"]["arguments"]["grids"]["prompt_epochs"] == [1]


def test_untrained_coop_scores_every_split_as_the_frozen_encoders_prompts(store, tiny_model):
    """Ground truth: with 0 epochs the contexts are "a photo of a", so each split is the zero-shot
    argmax of open_clip's own embeddings of "a photo of a <name>." among that split's classes."""
    import torch

    from clip_invariance.embedding import build_prompts, get_backbone

    results = evaluate_store(store, methods=["coop"], protocol="all", grids={"prompt_epochs": [0]})
    backbone = get_backbone(tiny_model, None, "cpu", "fp32")
    with torch.no_grad():
        prompts = build_prompts(list(CLASSES), ["a photo of a {}."])[0]  # "a photo of a hot dog."
        text = backbone.model.encode_text(backbone.tokenizer(prompts))
    text = torch.nn.functional.normalize(text, dim=-1).numpy()
    data = load_embeddings(store)

    def accuracy(target, images, among):
        mask = (data.environments == target) & np.isin(data.y, images)
        X = data.X[mask] / np.linalg.norm(data.X[mask], axis=1, keepdims=True)
        return np.mean(np.asarray(among)[np.argmax(X @ text[among].T, axis=1)] == data.y[mask])

    expected = {("dg", "all"): ([0, 1, 2, 3], [0, 1, 2, 3]),
                ("open-class", "base"): ([0, 1], [0, 1, 2, 3]), ("open-class", "new"): ([2, 3], [0, 1, 2, 3]),
                ("base-to-new", "base"): ([0, 1], [0, 1]), ("base-to-new", "new"): ([2, 3], [2, 3]),
                ("base-to-new", "total"): ([0, 1, 2, 3], [0, 1, 2, 3])}
    for row in results.query("split != 'harmonic'").itertuples():  # H: the test above
        images, among = expected[(row.protocol, row.split)]
        assert row.accuracy == pytest.approx(accuracy(row.target, images, among), abs=1e-12), row
    assert (results["prompt_epochs"] == 0).all()


# ------------------------------------------------------------------ stores that cannot run them
def test_a_store_without_a_model_refuses_them_when_named(tmp_path):
    store = bare_store(tmp_path / "bare")
    message = ("The methods ['cdc-prompts', 'coop'] learn prompts through the text tower of the model that "
               "made the embeddings, but the store records no model (its features were made elsewhere; "
               "embed_image_folder records the model).")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_store(store, methods=["probe", *LEARNED])


def test_all_skips_them_with_the_reason_on_a_store_without_a_model(tmp_path):
    store = bare_store(tmp_path / "bare")
    with pytest.warns(UserWarning, match=r"^The store records no model \(its features were made elsewhere; "
                                         r"embed_image_folder records the model\): skipping "
                                         r"\['cdc-prompts', 'coop'\].$"):
        results = evaluate_store(store, methods="all", grids={"n_components": [4], "lam": [10.0],
                                                             "C": [0.316], "temperature": [10.0],
                                                             "wise_alpha": [0.5], "tip_alpha": [1.0],
                                                             "tip_beta": [1.0]},
                                 interventions="image", front_door_params={"max_iter": 1})
    assert set(results["method"]) == set(DEFAULT_METHODS)
    assert any("skipping ['cdc-prompts', 'coop']" in reason for reason in results.attrs["config"]["skipped"])


def test_a_store_without_class_names_or_with_a_moved_checkpoint_is_refused(store, tmp_path, tiny_checkpoint,
                                                                          tiny_model):
    data = load_embeddings(store)
    data.class_names = None
    with pytest.raises(ValueError, match=r"^The methods \['coop'\] learn prompts .* but the store has no "
                                         r"class names to encode.$"):
        evaluate_store(data, methods=["coop"], grids=GRIDS)
    data = load_embeddings(store)
    checkpoint = tiny_checkpoint["safetensors"]
    stat = os.stat(checkpoint)
    data.settings["model"]["pretrained"] = {"file": str(checkpoint), "size": stat.st_size + 1,
                                            "mtime_ns": stat.st_mtime_ns}
    with pytest.raises(ValueError, match=rf"but the checkpoint '{checkpoint}' changed since the store was "
                                         r"embedded.$"):
        evaluate_store(data, methods=["cdc-prompts"], grids=GRIDS)
    data.settings["model"]["pretrained"] = {"file": str(tmp_path / "gone.pt"), "size": 1, "mtime_ns": 1}
    with pytest.raises(ValueError, match=r"but the checkpoint the store was embedded with, '.*gone.pt', is "
                                         r"not there any more.$"):
        evaluate_store(data, methods=["cdc-prompts"], grids=GRIDS)
    data.settings["model"] = {"model_name": "no-such-model", "pretrained": None, "embedding_dim": 32}
    with pytest.raises(ValueError, match=r"but its model 'no-such-model' \(None\) does not load: "):
        evaluate_store(data, methods=["cdc-prompts"], grids=GRIDS)


def test_an_image_folder_is_checked_against_the_model_it_will_be_embedded_with(tiny_model, tmp_path):
    """evaluate_image_folder plans on a placeholder store before embedding: it records the model too."""
    from clip_invariance.evaluation import evaluate_image_folder

    root = image_folder(tmp_path / "images", n_images=1)
    results = evaluate_image_folder(root, tmp_path / "store", model_name=tiny_model, pretrained=None,
                                    device="cpu", n_augmented=1, methods=["coop"],
                                    grids={"prompt_epochs": [0]})
    assert set(results["method"]) == {"coop"} and len(results) == 2  # two targets, split "all"
    assert results.attrs["config"]["store_settings"]["model"]["model_name"] == tiny_model
