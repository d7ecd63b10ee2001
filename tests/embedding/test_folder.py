"""embed_image_folder: one embedding per item, resumable, served from the store the second time."""

import os
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from clip_invariance import CLIPEmbedder
from clip_invariance.datasets import load_embeddings
from clip_invariance.embedding import (
    build_prompts,
    embed_image_folder,
    image_folder_views,
    text_interventions_with_styles,
)

N_VIEWS = 2
STYLES, SETTINGS = ["photo", "sketch"], ["", "indoors"]
ENSEMBLE = ["a {}.", "art of the {}."]


def write_png(path, seed):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    """2 environments x 2 classes x 3 small PNGs: 12 images."""
    root = tmp_path / "images"
    for e, environment in enumerate(["photo", "sketch"]):
        for c, cls in enumerate(["cat", "dog"]):
            for i in range(3):
                write_png(root / environment / cls / f"{i}.png", seed=100 * e + 10 * c + i)
    return root


@pytest.fixture
def counts(monkeypatch):
    """Inputs embedded per modality: CLIPEmbedder.transform wrapped to count them."""
    counted = {"image": 0, "text": 0}
    real = CLIPEmbedder.transform

    def transform(self, X):
        counted[self.modality] += len(X)
        return real(self, X)

    monkeypatch.setattr(CLIPEmbedder, "transform", transform)
    return counted


def embed(root, store, tiny_model, **kwargs):
    params = {
        "model_name": tiny_model,
        "pretrained": None,
        "device": "cpu",
        "batch_size": 8,
        "num_workers": 0,
        "n_augmented": N_VIEWS,
        "ensemble_templates": ENSEMBLE,
        "text_styles": STYLES,
        "text_settings": SETTINGS,
        "save_every": 16,
        "progress": False,
        **kwargs,
    }
    return embed_image_folder(root, store, **params)


def taken(counts):
    """The counts so far, then reset."""
    out = dict(counts)
    counts.update(image=0, text=0)
    return out


# 12 images x (1 + 2 views); 2 prompts + 2 x 2 ensemble + 2 classes x 4 interventions,
# of which "a photo of a cat." and "... dog." are both a prompt and an intervention.
N_IMAGE_ITEMS, N_TEXT_ITEMS = 12 * (1 + N_VIEWS), 2 + 4 + 8 - 2


def test_embeddings_equal_a_direct_transform(folder, tmp_path, tiny_model, counts):
    store = embed(folder, tmp_path / "store", tiny_model)
    assert taken(counts) == {"image": N_IMAGE_ITEMS, "text": N_TEXT_ITEMS}
    assert store.X.shape == (12, 32) and store.views.shape == (12, N_VIEWS, 32)
    assert store.class_names == ["cat", "dog"] and store.environment_names == ["photo", "sketch"]
    assert store.y.tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert store.environments.tolist() == ["photo"] * 6 + ["sketch"] * 6
    assert store.paths[4] == os.path.join(folder, "photo", "dog", "1.png")

    images = CLIPEmbedder(tiny_model, pretrained=None, device="cpu", num_workers=0)
    views = image_folder_views(store.paths, folder, n_augmented=N_VIEWS, random_state=0)
    direct = images.transform([view for _, image_views in views for _, view in image_views])
    direct = direct.reshape(12, 1 + N_VIEWS, 32)
    assert_allclose(store.X, direct[:, 0], rtol=1e-5, atol=1e-6)
    assert_allclose(store.views, direct[:, 1:], rtol=1e-5, atol=1e-6)
    assert np.abs(store.views[:, 0] - store.X).max() > 1e-3  # views are not the originals

    texts = images.set_params(modality="text")
    assert_allclose(store.prompt_embeddings, texts.transform(["a photo of a cat.", "a photo of a dog."]),
                    rtol=1e-5, atol=1e-6)
    ensemble = np.asarray(build_prompts(["cat", "dog"], ENSEMBLE))
    assert_allclose(store.prompt_ensemble_embeddings, texts.transform(ensemble.ravel()).reshape(2, 2, 32),
                    rtol=1e-5, atol=1e-6)
    strings, view_groups, styles = text_interventions_with_styles(["cat", "dog"], STYLES, SETTINGS)
    assert store.text_intervention_texts.tolist() == strings == [
        "a photo of a cat.", "a photo of a cat indoors.", "a sketch of a cat.", "a sketch of a cat indoors.",
        "a photo of a dog.", "a photo of a dog indoors.", "a sketch of a dog.", "a sketch of a dog indoors.",
    ]
    assert store.text_intervention_styles.tolist() == styles == ["photo", "photo", "sketch", "sketch"] * 2
    assert_array_equal(store.text_view_groups, [0, 0, 0, 0, 1, 1, 1, 1])
    assert_allclose(store.text_interventions, texts.transform(strings), rtol=1e-5, atol=1e-6)

    settings = load_embeddings(tmp_path / "store").settings
    assert settings["model"] == {"model_name": tiny_model, "pretrained": None, "precision": "fp32",
                                 "embedding_dim": 32}
    assert settings["images"]["n_augmented"] == N_VIEWS and settings["root"] == str(folder)
    assert settings["prompts"] == {"template": "a photo of a {}.", "ensemble_templates": ENSEMBLE}
    assert not (tmp_path / "store" / "pending").exists()  # folded into the store


def test_second_run_and_other_batch_size_embed_nothing(folder, tmp_path, tiny_model, counts):
    first = embed(folder, tmp_path / "store", tiny_model)
    X, views = np.array(first.X), np.array(first.views)
    taken(counts)
    again = embed(folder, tmp_path / "store", tiny_model)
    assert taken(counts) == {"image": 0, "text": 0}
    assert_array_equal(again.X, X)
    assert_array_equal(again.views, views)
    embed(folder, tmp_path / "store", tiny_model, batch_size=7, save_every=3)
    assert taken(counts) == {"image": 0, "text": 0}


def test_interrupted_run_resumes_where_it_stopped(folder, tmp_path, tiny_model, counts, monkeypatch):
    counted_transform = CLIPEmbedder.transform
    calls = []

    def interrupted(self, X):
        if self.modality == "image":
            calls.append(len(X))
            if len(calls) == 2:
                raise KeyboardInterrupt  # after the first part of images
        return counted_transform(self, X)

    monkeypatch.setattr(CLIPEmbedder, "transform", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed(folder, tmp_path / "store", tiny_model, save_every=5)
    assert taken(counts) == {"image": 5, "text": N_TEXT_ITEMS}
    with pytest.raises(ValueError, match="unfinished embedding run: run it again to resume"):
        load_embeddings(tmp_path / "store")

    monkeypatch.setattr(CLIPEmbedder, "transform", counted_transform)
    resumed = embed(folder, tmp_path / "store", tiny_model, save_every=5)
    assert taken(counts) == {"image": N_IMAGE_ITEMS - 5, "text": 0}
    reference = embed(folder, tmp_path / "reference", tiny_model)
    for name in ("X", "views", "prompt_embeddings", "prompt_ensemble_embeddings", "text_interventions"):
        assert_allclose(resumed[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_added_changed_and_removed_files_embed_only_their_items(folder, tmp_path, tiny_model, counts):
    first = embed(folder, tmp_path / "store", tiny_model)
    X = dict(zip(first.paths.tolist(), np.array(first.X)))
    taken(counts)

    write_png(folder / "photo" / "dog" / "9.png", seed=999)
    added = embed(folder, tmp_path / "store", tiny_model)
    assert taken(counts) == {"image": 1 + N_VIEWS, "text": 0}
    assert len(added.X) == 13
    for path, row in zip(added.paths.tolist(), added.X):
        if path in X:
            assert_array_equal(row, X[path])  # the other views did not move either: see below

    changed = folder / "sketch" / "cat" / "0.png"
    stat = os.stat(changed)
    write_png(changed, seed=12345)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after_change = embed(folder, tmp_path / "store", tiny_model)
    assert taken(counts) == {"image": 1 + N_VIEWS, "text": 0}

    os.remove(folder / "photo" / "dog" / "9.png")
    removed = embed(folder, tmp_path / "store", tiny_model)
    assert taken(counts) == {"image": 0, "text": 0}
    assert len(removed.X) == 12
    assert set(removed.item_keys["X"].tolist()) < set(after_change.item_keys["X"].tolist())


def test_views_do_not_depend_on_the_other_files(folder, tmp_path):
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    alone = image_folder_views(paths[5:6], folder, n_augmented=3, random_state=7)
    among = image_folder_views(paths, folder, n_augmented=3, random_state=7)[5:6]
    assert [key for key, _ in alone[0][1]] == [key for key, _ in among[0][1]]
    other_seed = image_folder_views(paths[5:6], folder, n_augmented=3, random_state=8)
    assert [key for key, _ in alone[0][1]][1:] != [key for key, _ in other_seed[0][1]][1:]


def test_other_seed_or_n_augmented_reembeds_views_only(folder, tmp_path, tiny_model, counts):
    embed(folder, tmp_path / "store", tiny_model, n_augmented=0)
    assert taken(counts)["image"] == 12
    assert load_embeddings(tmp_path / "store").views is None
    embed(folder, tmp_path / "store", tiny_model, n_augmented=1)
    assert taken(counts) == {"image": 12, "text": 0}
    embed(folder, tmp_path / "store", tiny_model, n_augmented=2)
    assert taken(counts) == {"image": 12, "text": 0}  # the first view is the same as before
    embed(folder, tmp_path / "store", tiny_model, n_augmented=2, random_state=1)
    assert taken(counts) == {"image": 24, "text": 0}


def test_damaged_pending_file_or_store_is_embedded_again(folder, tmp_path, tiny_model, counts):
    store = tmp_path / "store"
    embed(folder, store, tiny_model)
    taken(counts)
    (store / "X.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="Embedding again the items of damaged store fields: .*field 'X'"):
        embed(folder, store, tiny_model)
    # the views, prompts and interventions were intact: only the originals are embedded again
    assert taken(counts) == {"image": 12, "text": 0}

    (store / "pending").mkdir()
    (store / "pending" / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.warns(UserWarning, match=r"Skipping 1 unreadable pending file\(s\): cut.npz"):
        embed(folder, store, tiny_model)
    assert taken(counts) == {"image": 0, "text": 0}


def test_progress_bar_reaches_its_end(folder, tmp_path, tiny_model, capsys):
    total = N_IMAGE_ITEMS + N_TEXT_ITEMS
    embed(folder, tmp_path / "store", tiny_model, progress=True)
    assert f"{total}/{total}" in capsys.readouterr().err
    embed(folder, tmp_path / "store", tiny_model, progress=True)  # everything found: still a full bar
    assert f"100%|██████████| {total}/{total}" in capsys.readouterr().err
    embed(folder, tmp_path / "store", tiny_model, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"root": "missing"}, FileNotFoundError, "Image folder not found"),
        ({"n_augmented": -1}, ValueError, "'n_augmented' parameter"),
        ({"save_every": 0}, ValueError, "'save_every' parameter"),
        ({"random_state": None}, ValueError, "'random_state' parameter"),
        ({"template": "a photo"}, ValueError, "has no '{}' or '{classname}' placeholder"),
        ({"ensemble_templates": "nope"}, ValueError, "'ensemble_templates' parameter"),
        ({"text_styles": ["photo"], "text_settings": [""]}, ValueError, "at least two descriptions"),
        ({"store": "a-file"}, ValueError, "exists and is not a folder"),
        ({"store": "images/store"}, ValueError, "must not be inside the image folder"),
        ({"model_name": "no-such-model"}, ValueError, "Unknown model_name 'no-such-model'"),
        ({"pretrained": "missing.safetensors"}, FileNotFoundError, "Checkpoint file not found"),
    ],
)
def test_mistakes_are_reported_before_anything_is_embedded(folder, tmp_path, tiny_model, counts, change,
                                                           error, message):
    (tmp_path / "a-file").write_text("x")
    change = dict(change)
    root = tmp_path / change.pop("root", "images")
    store = tmp_path / change.pop("store", "store")
    with pytest.raises(error, match=message):
        embed(root, store, tiny_model, **change)
    assert taken(counts) == {"image": 0, "text": 0}
    assert not (tmp_path / "store").exists()


def test_pacs_mini(pacs_mini, tmp_path, tiny_model, counts):
    store = embed(pacs_mini, tmp_path / "store", tiny_model, n_augmented=1, save_every=256, batch_size=64,
                  ensemble_templates="simple", text_styles=STYLES)
    assert taken(counts)["image"] == 420 * 2
    assert store.X.shape == (420, 32) and store.views.shape == (420, 1, 32)
    assert store.environment_names == ["art_painting", "cartoon", "photo", "sketch"]
    assert len(store.class_names) == 7 and store.prompt_ensemble_embeddings.shape == (7, 7, 32)
    assert np.bincount(store.y).tolist() == [60] * 7
    embed(pacs_mini, tmp_path / "store", tiny_model, n_augmented=1, ensemble_templates="simple",
          text_styles=STYLES)
    assert taken(counts) == {"image": 0, "text": 0}


# ------------------------------------------------------------------ shards
def test_two_shards_load_equal_to_an_unsharded_embed(folder, tmp_path, tiny_model, counts):
    whole = embed(folder, tmp_path / "whole", tiny_model)
    taken(counts)
    first = embed(folder, tmp_path / "sharded", tiny_model, shard=(0, 2))
    assert taken(counts) == {"image": 6 * (1 + N_VIEWS), "text": N_TEXT_ITEMS}  # its 6 images, every text
    assert first.X.shape == (6, 32)
    listing = first.settings["shard"].pop("listing")  # a digest of the whole listing: see below
    assert first.settings["shard"] == {"index": 0, "count": 2, "images": 12, "start": 0, "stop": 6}
    assert len(listing) == 32
    with pytest.raises(ValueError, match=r"1 of 2 shards are not complete: shard 1 \(missing\)"):
        load_embeddings(tmp_path / "sharded")
    embed(folder, tmp_path / "sharded", tiny_model, shard=(1, 2))
    assert taken(counts) == {"image": 6 * (1 + N_VIEWS), "text": N_TEXT_ITEMS}
    assert sorted(p.name for p in (tmp_path / "sharded" / "shards").iterdir()) == [
        "00000-of-00002", "00001-of-00002"]  # nothing else written, by either shard

    sharded = load_embeddings(tmp_path / "sharded")
    for name in ("X", "views", "prompt_embeddings", "prompt_ensemble_embeddings", "text_interventions"):
        assert_allclose(sharded[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("y", "environments", "paths", "text_view_groups", "text_intervention_texts"):
        assert_array_equal(sharded[name], whole[name], err_msg=name)
    assert_array_equal(sharded.item_keys["X"], whole.item_keys["X"])  # the same items, the same keys
    assert_array_equal(sharded.item_keys["views"], whole.item_keys["views"])
    assert sharded.settings["shards"] == 2 and "shard" not in sharded.settings

    again = embed(folder, tmp_path / "sharded", tiny_model, shard=(1, 2))  # resuming a finished shard
    assert taken(counts) == {"image": 0, "text": 0}
    assert_array_equal(again.X, sharded.X[6:])


def test_interrupted_shard_resumes_its_own_items(folder, tmp_path, tiny_model, counts, monkeypatch):
    real = CLIPEmbedder.transform
    calls = []

    def failing(self, X):
        calls.append(self.modality)
        if calls.count("image") == 2:  # stopped during the second part of images
            raise KeyboardInterrupt
        return real(self, X)

    monkeypatch.setattr(CLIPEmbedder, "transform", failing)
    with pytest.raises(KeyboardInterrupt):
        embed(folder, tmp_path / "store", tiny_model, shard=(1, 3), save_every=4)
    monkeypatch.setattr(CLIPEmbedder, "transform", real)
    assert taken(counts) == {"image": 4, "text": N_TEXT_ITEMS}  # the texts and one part of images
    embed(folder, tmp_path / "store", tiny_model, shard=(1, 3), save_every=4)
    assert taken(counts) == {"image": 4 * (1 + N_VIEWS) - 4, "text": 0}


@pytest.mark.parametrize("shard, message", [
    ((2, 2), r"shard must be \(index, count\) with 0 <= index < count, got \(2, 2\)"),
    ((0, 13), "12 images cannot be split into 13 shards"),
    ((0, 3), "holds shards of a split into 2; this run splits into 3"),
])
def test_shard_mistakes_are_reported_before_anything_is_embedded(folder, tmp_path, tiny_model, counts, shard,
                                                                 message):
    (tmp_path / "store" / "shards" / "00001-of-00002").mkdir(parents=True)
    with pytest.raises(ValueError, match=message):
        embed(folder, tmp_path / "store", tiny_model, shard=shard)
    assert taken(counts) == {"image": 0, "text": 0}
    assert [p.name for p in (tmp_path / "store" / "shards").iterdir()] == ["00001-of-00002"]


# ----------------------------------------- issue 20: stores that cannot silently mix data
def _other_folder(folder, tmp_path):
    """A copy of the folder, one image's pixels changed: the same classes, another listing."""
    import shutil

    other = tmp_path / "other-images"
    shutil.copytree(folder, other)
    write_png(other / "sketch" / "dog" / "2.png", seed=4321)
    return other


@pytest.mark.parametrize("change, message", [
    ("added", "the shards were cut from 2 different listings of the image folder .*: shard 00000-of-00002; "
              "shard 00001-of-00002"),
    ("removed", "the shards were cut from 2 different listings of the image folder"),
    ("other folder", "the shards were cut from 2 different listings of the image folder"),
    ("other seed", r"shard 00001-of-00002 was embedded with other settings than shard 00000-of-00002: "
                   r"images.random_state \(1, not 0\)"),
])
def test_shards_of_a_changed_folder_are_refused(folder, tmp_path, tiny_model, change, message):
    store = tmp_path / "sharded"
    embed(folder, store, tiny_model, shard=(0, 2))
    second, options = folder, {}
    if change == "added":
        write_png(folder / "photo" / "cat" / "1b.png", seed=777)  # lands in shard 0's part: a row twice
    elif change == "removed":
        os.remove(folder / "photo" / "cat" / "0.png")  # shard 1 would start one image later: one missing
    elif change == "other folder":
        second = _other_folder(folder, tmp_path)
    else:
        options = {"random_state": 1}
    embed(second, store, tiny_model, shard=(1, 2), **options)
    with pytest.raises(ValueError, match=message):
        load_embeddings(store)
    if change in ("added", "removed"):  # the way out the message gives: embed shard 0 again
        embed(folder, store, tiny_model, shard=(0, 2))
        paths = load_embeddings(store).paths.tolist()
        assert paths == sorted(str(p) for p in folder.rglob("*.png"))


@pytest.fixture
def local_dir(tmp_path, tiny_checkpoint):
    """An open_clip model folder (config and weights) for 'local-dir:'."""
    import json
    import shutil

    from conftest import TINY_CONFIG

    model = tmp_path / "model"
    model.mkdir()
    (model / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    shutil.copy(tiny_checkpoint["safetensors"], model / "open_clip_model.safetensors")
    return model


def test_new_weights_in_a_local_dir_embed_everything_again(folder, tmp_path, tiny_model, local_dir, counts):
    import open_clip
    import torch
    from safetensors.torch import save_file

    first = embed(folder, tmp_path / "store", f"local-dir:{local_dir}")
    X = np.array(first.X)
    taken(counts)
    weights = local_dir / "open_clip_model.safetensors"
    stat = os.stat(weights)
    torch.manual_seed(5)
    state = {k: v.contiguous() for k, v in open_clip.create_model(tiny_model).state_dict().items()}
    save_file(state, str(weights))  # the same size: only the modification time tells
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="weights .* changed since the store was embedded"):
        second = embed(folder, tmp_path / "store", f"local-dir:{local_dir}")
    assert taken(counts) == {"image": N_IMAGE_ITEMS, "text": N_TEXT_ITEMS}
    assert np.abs(second.X - X).max() > 1e-3  # the new weights' embeddings, not the old ones
    embed(folder, tmp_path / "store", f"local-dir:{local_dir}")
    assert taken(counts) == {"image": 0, "text": 0}


def test_damaged_rows_are_dropped_with_a_warning_and_embedded_again(folder, tmp_path, tiny_model, counts):
    from clip_invariance.datasets._store import save_pending

    store = tmp_path / "store"
    first = embed(folder, store, tiny_model)
    X, keys = np.array(first.X), first.item_keys["X"].tolist()
    taken(counts)
    save_pending(store, keys[:2], np.full((2, 32), np.nan, np.float32))  # real keys, NaN rows
    save_pending(store, keys[2:4], np.ones((2, 7), np.float32))  # real keys, rows of another size
    with pytest.warns(UserWarning, match=r"Dropping damaged rows of pending/") as record:
        again = embed(folder, store, tiny_model)
    assert len(record) == 1
    message = str(record[0].message)
    assert re.search(r"pending/[0-9a-f]{32}\.npz \(2 rows not finite\)", message), message
    assert re.search(r"pending/[0-9a-f]{32}\.npz \(7 features, not 32\)", message), message
    assert taken(counts) == {"image": 0, "text": 0}  # the store's own rows of those keys are good
    assert_array_equal(again.X, X)

    np.lib.format.open_memmap(store / "X.npy", mode="r+")[5, 3] = np.nan
    with pytest.warns(UserWarning, match=r"Dropping damaged rows of .*X.npy \(1 rows not finite\)") as record:
        again = embed(folder, store, tiny_model)
    assert len(record) == 1
    assert taken(counts) == {"image": 1, "text": 0}  # that row's image only
    assert_allclose(again.X, X, rtol=1e-5, atol=1e-6)


def _same_size_png(path, seed):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, compress_level=0)  # stored, not compressed: the size is fixed


def test_verify_content_catches_same_size_new_content_with_the_old_mtime(folder, tmp_path, tiny_model,
                                                                          counts):
    image = folder / "photo" / "dog" / "1.png"
    _same_size_png(image, seed=1)
    embed(folder, tmp_path / "store", tiny_model, verify_content=True)
    taken(counts)
    stat = os.stat(image)
    _same_size_png(image, seed=2)  # new pixels, as `cp -p` or `rsync -t` would leave them
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(image).st_size == stat.st_size
    embed(folder, tmp_path / "store", tiny_model, verify_content=True)
    assert taken(counts) == {"image": 1 + N_VIEWS, "text": 0}
    # without it, the documented key (size and modification time) keeps the stale embedding
    embed(folder, tmp_path / "plain", tiny_model)
    taken(counts)
    _same_size_png(image, seed=3)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    embed(folder, tmp_path / "plain", tiny_model)
    assert taken(counts) == {"image": 0, "text": 0}


def test_a_store_of_another_model_is_not_replaced_without_overwrite(folder, tmp_path, tiny_model,
                                                                    tiny_checkpoint, counts):
    store = tmp_path / "store"
    first = embed(folder, store, tiny_model)
    X = np.array(first.X)
    taken(counts)
    checkpoint = str(tiny_checkpoint["safetensors"])
    with pytest.raises(ValueError, match=rf"holds embeddings of {tiny_model} \(random weights\); this run "
                       rf"embeds with {tiny_model} \({checkpoint}\)\. Pass overwrite=True \(--overwrite\)"):
        embed(folder, store, tiny_model, pretrained=checkpoint)
    assert taken(counts) == {"image": 0, "text": 0}
    assert_array_equal(load_embeddings(store).X, X)
    other = embed(folder, store, tiny_model, pretrained=checkpoint, overwrite=True)
    assert other.settings["model"]["pretrained"]["file"] == checkpoint
    assert np.abs(other.X - X).max() > 1e-3


def test_a_shard_of_another_model_than_its_finished_siblings_is_refused(folder, tmp_path, tiny_model,
                                                                        tiny_checkpoint, counts):
    store = tmp_path / "sharded"
    embed(folder, store, tiny_model, shard=(0, 2))
    taken(counts)
    checkpoint = str(tiny_checkpoint["safetensors"])
    message = (rf"shard 00000-of-00002 of this store holds embeddings of {tiny_model} \(random weights\); "
               rf"this run embeds with {tiny_model} \({checkpoint}\)")
    with pytest.raises(ValueError, match=message):
        embed(folder, store, tiny_model, pretrained=checkpoint, shard=(1, 2))
    assert taken(counts) == {"image": 0, "text": 0}
    assert not (store / "shards" / "00001-of-00002").exists()


# ------------------------------------------- Ctrl-C and the bar, batch by batch
def _interrupt_image_batch(monkeypatch, k):
    """Backbone.encode raises KeyboardInterrupt at the (k + 1)-th batch of images; returns the rows it saw."""
    from clip_invariance.embedding._backbone import Backbone

    real = Backbone.encode
    rows = {"image": 0, "text": 0, "image batches": 0}

    def encode(self, inputs):
        if inputs.is_floating_point():
            if rows["image batches"] == k:
                raise KeyboardInterrupt
            rows["image batches"] += 1
        rows["image" if inputs.is_floating_point() else "text"] += len(inputs)
        return real(self, inputs)

    monkeypatch.setattr(Backbone, "encode", encode)
    return rows


def test_ctrl_c_keeps_every_finished_batch(folder, tmp_path, tiny_model, monkeypatch):
    """Interrupted after 3 batches of 8 images, inside one part of 1000: a rerun embeds only the rest."""
    store = tmp_path / "store"
    rows = _interrupt_image_batch(monkeypatch, k=3)
    with pytest.raises(KeyboardInterrupt):
        embed(folder, store, tiny_model, batch_size=8, save_every=1000)
    assert rows == {"image": 24, "text": N_TEXT_ITEMS, "image batches": 3}
    assert len(list((store / "pending").iterdir())) == 2  # the texts' part, the finished image batches

    monkeypatch.undo()
    rows = _interrupt_image_batch(monkeypatch, k=10**6)  # counts only
    resumed = embed(folder, store, tiny_model, batch_size=8, save_every=1000)
    assert rows["image"] == N_IMAGE_ITEMS - 24 and rows["text"] == 0
    reference = embed(folder, tmp_path / "reference", tiny_model)
    for name in ("X", "views", "prompt_embeddings", "text_interventions"):
        assert_allclose(resumed[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_progress_bar_moves_per_batch_in_images_per_second(folder, tmp_path, tiny_model, monkeypatch, capsys):
    from tqdm import auto

    updates = []
    real = auto.tqdm.update
    monkeypatch.setattr(auto.tqdm, "update", lambda bar, n=1: updates.append((bar.unit, n)) or real(bar, n))
    embed(folder, tmp_path / "store", tiny_model, batch_size=8, save_every=16, progress=True)
    # texts: 12 in one part (8 + 4); images: 36 in parts of 16 (8 + 8, 8 + 8, 4)
    assert updates == [("text", 8), ("text", 4)] + [("image", 8)] * 4 + [("image", 4)]
    err = capsys.readouterr().err
    assert "Embedding images" in err and "image/s" in err and f"{N_IMAGE_ITEMS + N_TEXT_ITEMS}/" in err
