"""The embedding store: round trips, plain-numpy reading, damaged stores, atomic saves."""

import json
import os

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from clip_invariance.datasets import _store, _store_format, load_embeddings, save_embeddings
from clip_invariance.datasets._store_format import group_chunks, shard_name


def full_fields(dtype=np.float32, n=6, V=2, D=5, C=3, M=4, T=7, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "X": rng.normal(size=(n, D)).astype(dtype),
        "y": np.arange(n) % C,
        "environments": np.array(["photo", "sketch"])[np.arange(n) % 2],
        "views": rng.normal(size=(n, V, D)).astype(dtype),
        "class_names": ["dog", "elephant", "guitar"],
        "environment_names": ["sketch", "photo", "cartoon"],  # an order of the user's, and an empty one
        "prompt_embeddings": rng.normal(size=(C, D)).astype(dtype),
        "prompt_ensemble_embeddings": rng.normal(size=(M, C, D)).astype(dtype),
        "text_interventions": rng.normal(size=(T, D)).astype(dtype),
        "text_view_groups": np.arange(T) % C,
        "text_intervention_texts": [f"a text number {i}" for i in range(T)],
        "text_intervention_styles": ["photo", "sketch", "cartoon", "pencil drawing", "photo", "x", "y"],
        "paths": [f"/data/img_{i}.png" for i in range(n)],
        "settings": {"model": {"model_name": "RN50", "pretrained": None}, "n_augmented": V},
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_of_every_field(tmp_path, dtype, mmap):
    fields = full_fields(dtype)
    save_embeddings(tmp_path / "store", **fields)
    data = load_embeddings(tmp_path / "store", mmap=mmap)
    for name in _store_format.FIELDS:
        expected = np.asarray(fields[name])
        assert_array_equal(data[name], expected, err_msg=name)
        assert isinstance(data[name], np.memmap) == mmap, name
    assert data.X.dtype == dtype and data.views.dtype == dtype and data.prompt_embeddings.dtype == dtype
    assert data.y.dtype == np.int64 and data.environments.dtype.kind == "U"
    assert data.class_names == fields["class_names"]
    assert data.environment_names == fields["environment_names"]
    assert data.settings == fields["settings"]
    assert data.item_keys == {}
    if mmap:
        with pytest.raises(ValueError, match="read-only"):
            data.X[0, 0] = 1.0


def test_without_optional_fields(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    save_embeddings(tmp_path, X=X, y=[0, 1, 2, 1], environments=["a", "a", "b", "b"])
    data = load_embeddings(tmp_path)
    assert_array_equal(data.X, X)
    assert data.class_names is None and data.environment_names == ["a", "b"]
    for name in set(_store_format.FIELDS) - set(_store_format.REQUIRED):
        assert data[name] is None, name
    assert data.settings == {}


def test_prompt_embeddings_may_be_an_ensemble(tmp_path):
    fields = full_fields()
    fields["prompt_embeddings"] = fields.pop("prompt_ensemble_embeddings")
    save_embeddings(tmp_path, **fields)
    assert load_embeddings(tmp_path).prompt_embeddings.shape == (4, 3, 5)


def test_readable_with_numpy_alone(tmp_path):
    fields = full_fields()
    save_embeddings(tmp_path, **fields, item_keys={"X": [f"k{i}" for i in range(6)]})
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["version"] == _store_format.STORE_VERSION and meta["class_names"] == fields["class_names"]
    records = list(meta["fields"].items()) + list(meta["item_keys"].items())
    assert len(records) == len(_store_format.FIELDS) + 1
    for name, record in records:
        array = np.load(tmp_path / record["file"], allow_pickle=False, mmap_mode="r")
        assert array.dtype != object and list(array.shape) == record["shape"], name
        assert array.dtype.str == record["dtype"], name
    texts = np.load(tmp_path / "text_intervention_texts.npy", allow_pickle=False, mmap_mode="r")
    assert texts.dtype.kind == "U" and texts[3] == "a text number 3"
    assert_array_equal(np.load(tmp_path / "item_keys_X.npy", allow_pickle=False), [f"k{i}" for i in range(6)])


def test_labels_and_environments_are_encoded(tmp_path):
    X = np.ones((4, 2))
    save_embeddings(tmp_path / "a", X=X, y=["dog", "cat", "dog", "emu"], environments=[3, 1, 1, 3])
    data = load_embeddings(tmp_path / "a")
    assert data.y.tolist() == [1, 0, 1, 2] and data.class_names == ["cat", "dog", "emu"]
    assert data.environments.tolist() == ["3", "1", "1", "3"] and data.environment_names == ["1", "3"]
    save_embeddings(tmp_path / "b", X=X, y=["dog", "cat", "dog", "dog"], environments=["e"] * 4,
                    class_names=["dog", "cat", "owl"])
    assert load_embeddings(tmp_path / "b").y.tolist() == [0, 1, 0, 0]


def test_item_keys_round_trip_and_shape(tmp_path):
    fields = full_fields()
    keys = {
        "X": [f"x{i}" for i in range(6)],
        "views": np.array([[f"v{i}{v}" for v in range(2)] for i in range(6)]),
        "prompt_ensemble_embeddings": np.full((4, 3), "p"),
    }
    save_embeddings(tmp_path, **fields, item_keys=keys)
    loaded = load_embeddings(tmp_path).item_keys
    assert sorted(loaded) == sorted(keys)
    for name, value in keys.items():
        assert_array_equal(loaded[name], value)
    with pytest.raises(ValueError, match=r"item_keys\[views\]: <U2 of shape \(6,\), expected str of shape "
                       r"\(6, 2\)"):
        save_embeddings(tmp_path / "b", **fields, item_keys={"views": keys["X"]})
    with pytest.raises(ValueError, match=r"item_keys\['y'\]: no such embedding field"):
        save_embeddings(tmp_path / "b", **fields, item_keys={"y": keys["X"]})


def _mutated(**changes):
    fields = full_fields()
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"y": np.arange(5) % 3}, "y: has 5 rows, X has 6."),
        ({"environments": ["photo"] * 7}, "environments: has 7 rows, X has 6."),
        ({"views": np.zeros((6, 2, 4))}, "views: last axis 4 differs from X's 5 features."),
        ({"views": np.zeros((5, 2, 5))}, "views: has 5 rows, X has 6."),
        ({"views": np.zeros((6, 0, 5))}, "views: has 0 views per row; pass views=None instead."),
        ({"views": np.zeros((6, 5))}, r"views: expected 3 axes, got shape \(6, 5\)."),
        ({"prompt_embeddings": np.zeros((4, 5))}, "prompt_embeddings: covers 4 classes, the store names 3"),
        ({"prompt_ensemble_embeddings": np.zeros((3, 5))}, "prompt_ensemble_embeddings: expected 3 axes"),
        ({"class_names": None, "prompt_embeddings": np.zeros((2, 5))},
         "prompt_ensemble_embeddings: covers 3 classes, the store names 2"),
        ({"y": np.arange(6)}, r"y: labels must lie in \[0, 3\) \(the classes\), got 0..5."),
        ({"y": -np.ones(6, dtype=int)}, r"y: labels must lie in \[0, 3\)"),
        ({"y": np.zeros(6)}, "y: expected integer labels, got float64."),
        ({"y": ["dog"] * 5 + ["cow"]}, r"y: labels \['cow'\] are not in class_names"),
        ({"environment_names": ["photo"]}, r"environments: \['sketch'\] are not in environment_names"),
        ({"environment_names": ["photo", "photo", "sketch"]}, "environment_names: duplicate names"),
        ({"text_view_groups": None}, "text_view_groups: text_interventions and text_view_groups go together"),
        ({"text_view_groups": np.arange(6)}, "text_view_groups: has 6 entries, text_interventions has 7."),
        ({"text_intervention_styles": ["photo"]}, "text_intervention_styles: has 1 entries"),
        ({"text_interventions": None, "text_view_groups": None}, "text_intervention_texts: given without"),
        ({"X": np.full((6, 5), np.nan)}, "X: contains NaN or infinite values."),
        ({"views": np.full((6, 2, 5), np.inf)}, "views: contains NaN or infinite values."),
        ({"X": np.zeros((0, 5)), "y": [], "environments": [], "views": None, "paths": None},
         "X: must hold at least one row"),
        ({"X": np.array([["a", "b"]])}, "X: expected numbers, got an array of <U1."),
    ],
)
def test_save_refuses_inconsistent_fields(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        save_embeddings(tmp_path / "store", **_mutated(**changes))
    assert not (tmp_path / "store").exists()  # checked before anything is written


def test_save_refuses_settings_that_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="settings must be JSON-serialisable"):
        save_embeddings(tmp_path, **_mutated(settings={"a": object()}))
    with pytest.raises(TypeError, match="settings must be a dict, got list"):
        save_embeddings(tmp_path, **_mutated(settings=[1]))
    with pytest.raises(TypeError, match="class_names must be a list of strings"):
        save_embeddings(tmp_path, **_mutated(class_names="dog"))


def test_save_refuses_to_replace_what_is_not_a_store(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match="is a non-empty folder that is not an embedding store"):
        save_embeddings(tmp_path / "photos", **full_fields())
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        save_embeddings(tmp_path / "file", **full_fields())
    (tmp_path / "empty").mkdir()
    save_embeddings(tmp_path / "empty", **full_fields())  # an empty folder is fine
    assert load_embeddings(tmp_path / "empty").X.shape == (6, 5)


def test_save_replaces_a_store(tmp_path):
    save_embeddings(tmp_path / "s", **full_fields(seed=0))
    second = full_fields(seed=1, n=4)
    del second["views"], second["paths"]
    save_embeddings(tmp_path / "s", **second)
    data = load_embeddings(tmp_path / "s")
    assert_array_equal(data.X, second["X"])
    assert data.views is None and not (tmp_path / "s" / "views.npy").exists()  # no stale file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folder left


# ----------------------------------------------------------- damaged stores
@pytest.fixture
def store(tmp_path):
    save_embeddings(tmp_path / "store", **full_fields(), item_keys={"X": [f"k{i}" for i in range(6)]})
    return tmp_path / "store"


def _edit_json(store, edit):
    meta = json.loads((store / "store.json").read_text())
    edit(meta)
    (store / "store.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_file_names_its_field(store, mmap):
    data = (store / "views.npy").read_bytes()
    (store / "views.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="field 'views': views.npy cannot be read"):
        load_embeddings(store, mmap=mmap)


def test_missing_file_names_its_field(store):
    os.remove(store / "text_view_groups.npy")
    with pytest.raises(ValueError, match="field 'text_view_groups': file text_view_groups.npy is missing"):
        load_embeddings(store)


def test_file_unlike_its_record_is_refused(store):
    np.save(store / "y.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"field 'y': y.npy holds int64 of shape \(5,\), the store records "
                       r"int64 of shape \(6,\)"):
        load_embeddings(store)
    np.save(store / "y.npy", np.zeros(6, dtype=np.int32))
    with pytest.raises(ValueError, match="field 'y': y.npy holds int32"):
        load_embeddings(store)


def test_pickled_file_is_refused(store):
    np.save(store / "paths.npy", np.array(["a"] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="field 'paths': paths.npy cannot be read"):
        load_embeddings(store, mmap=False)


def test_inconsistent_fields_are_refused_on_load(store):
    np.save(store / "y.npy", np.zeros(4, dtype=np.int64))  # file and record agree with each other...
    _edit_json(store, lambda m: m["fields"]["y"].update(shape=[4]))
    with pytest.raises(ValueError, match=f"{store}: y: has 4 rows, X has 6."):  # ...not with X
        load_embeddings(store)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(version=2), "store version 2; this package reads version 1"),
        (lambda m: m.pop("version"), "store version None"),
        (lambda m: m.update(format="other"), "not a 'clip-invariance embedding store' file"),
        (lambda m: m["fields"].pop("X"), "X: missing; a store needs X, y and environments."),
        (lambda m: m["fields"].update(extra=m["fields"]["y"]), r"unknown fields \['extra'\]"),
        (lambda m: m["fields"]["y"].update(file="../y.npy"), "must be a .npy file inside the store"),
        (lambda m: m["fields"]["y"].pop("dtype"), "field 'y': bad record"),
        (lambda m: m.update(class_names="dog"), "'class_names' must be a list of strings or null"),
        (lambda m: m.update(environment_names=None), "'environment_names' must be a list of strings"),
        (lambda m: m.update(environment_names=["photo"]), r"environments: \['sketch'\] are not in"),
        (lambda m: m.update(item_keys=[]), "'item_keys' is missing or not a mapping"),
        (lambda m: m["item_keys"].update(views=m["item_keys"]["X"]), r"item_keys\[views\]: <U2 of shape"),
    ],
)
def test_damaged_metadata_is_refused(store, edit, message):
    _edit_json(store, edit)
    with pytest.raises(ValueError, match=message):
        load_embeddings(store)


def test_unreadable_or_absent_metadata(store, tmp_path):
    (store / "store.json").write_text('{"format": ')
    with pytest.raises(ValueError, match="damaged store.json"):
        load_embeddings(store)
    os.remove(store / "store.json")
    with pytest.raises(ValueError, match="no store.json; not an embedding store"):
        load_embeddings(store)
    (store / "pending").mkdir()
    with pytest.raises(ValueError, match="unfinished embedding run: run it again to resume"):
        load_embeddings(store)
    with pytest.raises(FileNotFoundError, match="Embedding store not found"):
        load_embeddings(tmp_path / "nowhere")


# ------------------------------------------------------------ atomic saves
def test_interrupted_save_leaves_the_previous_store(store, monkeypatch):
    before = np.array(load_embeddings(store).X)
    real_save, calls = np.save, []

    def failing_save(file, array, **kwargs):
        calls.append(file)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(file, array, **kwargs)

    monkeypatch.setattr(_store.np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_embeddings(store, **full_fields(seed=5))
    monkeypatch.undo()
    assert_array_equal(load_embeddings(store).X, before)
    assert sorted(p.name for p in store.parent.iterdir()) == ["store"]


def test_crash_between_the_renames_is_repaired(store, monkeypatch):
    real_replace, calls = os.replace, []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old store moved aside, the new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(_store.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_embeddings(store, **full_fields(seed=5))
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r"an interrupted save moved it to .*\.store\.old-"):
        load_embeddings(store)
    _store.check_store_path(store)  # what every save does first: puts the old store back
    assert_array_equal(load_embeddings(store).X, full_fields(seed=0)["X"])


# ------------------------------------------------------------ dask and shards
def test_group_chunks_never_split_a_group():
    rng = np.random.default_rng(0)
    for _ in range(50):
        groups = rng.permutation(np.repeat(np.arange(8), rng.integers(1, 5, 8)))
        if rng.random() < 0.5:
            groups = np.sort(groups)
        rows = int(rng.integers(1, 10))
        sizes = group_chunks(groups, rows)
        assert sum(sizes) == len(groups) and min(sizes) >= 1
        bounds = np.cumsum((0,) + sizes)
        chunk_of = np.repeat(np.arange(len(sizes)), sizes)
        for g in np.unique(groups):
            assert len(set(chunk_of[groups == g])) == 1  # every group in one chunk
        # Each chunk but the last holds at least `rows` entries, or ends where a group forced it.
        assert all(b - a >= rows for a, b in zip(bounds[:-2], bounds[1:-1]))
    assert group_chunks([0, 0, 1, 1, 1, 2, 3, 3], 2) == (2, 3, 3)  # 2 rows, then moved to whole groups


def test_chunks_give_lazy_dask_arrays_equal_to_the_numpy_load(tmp_path, monkeypatch):
    da = pytest.importorskip("dask.array")
    fields = full_fields(n=11, T=9)
    fields["text_view_groups"] = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    fields["text_intervention_styles"] = ["photo"] * 9
    save_embeddings(tmp_path / "store", **fields, item_keys={"X": [f"key {i}" for i in range(11)]})
    reads = []
    real_getitem = _store_format.NpyBlocks.__getitem__

    def counted(self, index):
        reads.append(os.path.basename(self.file))
        return real_getitem(self, index)

    monkeypatch.setattr(_store_format.NpyBlocks, "__getitem__", counted)
    lazy = load_embeddings(tmp_path / "store", chunks=4)
    assert reads == ["text_view_groups.npy"]  # the text ids, to place the chunks; no other block is read
    X = lazy.X.compute()
    assert reads.count("X.npy") == 3  # one read per chunk, when computed
    eager = load_embeddings(tmp_path / "store", mmap=False)
    assert_array_equal(X, eager.X)
    for name in _store_format.FIELDS:
        assert isinstance(lazy[name], da.Array), name
        assert_array_equal(lazy[name].compute(), eager[name], err_msg=name)
    assert lazy.X.chunks == ((4, 4, 3), (5,)) and lazy.views.chunks[0] == (4, 4, 3)
    assert lazy.text_interventions.chunks[0] == (5, 4)  # moved to the end of group 1, then the rest
    assert lazy.prompt_ensemble_embeddings.chunks == ((4,), (3,), (5,))
    assert_array_equal(lazy.item_keys["X"].compute(), eager.item_keys["X"])


def test_chunks_check_values_when_read(tmp_path):
    pytest.importorskip("dask.array")
    fields = full_fields(n=8)
    save_embeddings(tmp_path / "store", **fields)
    X = np.load(tmp_path / "store" / "X.npy", mmap_mode="r+")
    X[6, 1] = np.nan
    X.flush()
    lazy = load_embeddings(tmp_path / "store", chunks=3)  # nothing read: no error yet
    assert np.isfinite(lazy.X[:6].compute()).all()
    with pytest.raises(ValueError, match="X: contains NaN or infinite values"):
        lazy.X.compute()
    with pytest.raises(ValueError, match="X: contains NaN"):
        load_embeddings(tmp_path / "store")


@pytest.mark.parametrize("chunks, error, message", [
    (0, ValueError, "chunks must be at least 1 row, got 0"),
    (2.5, TypeError, "chunks must be a number of rows"),
    (True, TypeError, "chunks must be a number of rows"),
])
def test_bad_chunks(store, chunks, error, message):
    with pytest.raises(error, match=message):
        load_embeddings(store, chunks=chunks)


def test_chunks_without_dask_name_the_extra(store, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("dask"):
            raise ImportError("No module named 'dask'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(ImportError, match=r"needs dask: pip install 'clip-invariance\[dask\]'"):
        load_embeddings(store, chunks=2)


def write_shards(path, fields, bounds):
    """Save rows [a, b) of `fields` as shard i of len(bounds) - 1, as embed_image_folder(shard=...) does."""
    count = len(bounds) - 1
    for index, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = {k: (np.asarray(v)[a:b] if k in _store_format.ROW_FIELDS else v) for k, v in fields.items()}
        part["settings"] = {**fields["settings"], "shard": {"index": index, "count": count}}
        save_embeddings(path / "shards" / shard_name(index, count), **part)


def test_sharded_store_reads_as_one(tmp_path):
    fields = full_fields(n=10)
    save_embeddings(tmp_path / "whole", **fields)
    write_shards(tmp_path / "sharded", fields, [0, 3, 7, 10])
    whole, sharded = load_embeddings(tmp_path / "whole"), load_embeddings(tmp_path / "sharded")
    for name in _store_format.FIELDS:
        assert_array_equal(sharded[name], whole[name], err_msg=name)
    assert sharded.settings == {**fields["settings"], "shards": 3}
    assert sharded.class_names == whole.class_names and sharded.environment_names == whole.environment_names


def test_sharded_store_as_dask_spans_the_shards(tmp_path):
    pytest.importorskip("dask.array")
    fields = full_fields(n=10)
    write_shards(tmp_path / "sharded", fields, [0, 3, 7, 10])
    lazy = load_embeddings(tmp_path / "sharded", chunks=2)
    assert lazy.X.chunks[0] == (2, 1, 2, 2, 2, 1)  # chunks end at each shard's end
    assert_array_equal(lazy.X.compute(), fields["X"])
    assert_array_equal(lazy.environments.compute(), fields["environments"])


def test_missing_unfinished_and_mixed_shards_are_listed(tmp_path):
    fields = full_fields(n=10)
    write_shards(tmp_path / "s", fields, [0, 2, 4, 6, 10])
    shards = tmp_path / "s" / "shards"
    (shards / shard_name(1, 4) / "store.json").unlink()  # unfinished, as a run stopped before its save
    os.rename(shards / shard_name(3, 4), tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"2 of 4 shards are not complete: shard 1 \(unfinished: run it "
                       r"again to resume\), 3 \(missing\)\. Embed them with --shard i/4"):
        load_embeddings(tmp_path / "s")
    (shards / shard_name(0, 2)).mkdir()
    with pytest.raises(ValueError, match=r"mixes shards of \[2, 4\] parts"):
        load_embeddings(tmp_path / "s")


def test_shards_of_another_model_are_refused(tmp_path):
    fields = full_fields(n=6)
    write_shards(tmp_path / "s", fields, [0, 3, 6])
    other = {**fields, "settings": {"model": {"model_name": "ViT-B-32"}, "shard": {"index": 1, "count": 2}}}
    rows = {k: (np.asarray(v)[3:] if k in _store_format.ROW_FIELDS else v) for k, v in other.items()}
    save_embeddings(tmp_path / "s" / "shards" / shard_name(1, 2), **rows)
    with pytest.raises(ValueError, match="shard 00001-of-00002 was embedded by another model"):
        load_embeddings(tmp_path / "s")


def test_shard_paths_are_checked(tmp_path):
    fields = full_fields(n=6)
    write_shards(tmp_path / "s", fields, [0, 3, 6])
    assert _store.check_shard_path(tmp_path / "s", 1, 2) == tmp_path / "s" / "shards" / "00001-of-00002"
    with pytest.raises(ValueError, match="holds shards of a split into 2; this run splits into 4"):
        _store.check_shard_path(tmp_path / "s", 0, 4)
    save_embeddings(tmp_path / "plain", **fields)
    with pytest.raises(ValueError, match="is an unsharded store"):
        _store.check_shard_path(tmp_path / "plain", 0, 2)
    with pytest.raises(ValueError, match="is a sharded store"):
        save_embeddings(tmp_path / "s", **fields)


def test_dask_graph_holds_file_names_not_data(tmp_path):
    # What a cluster's scheduler ships to its workers: the file names; each worker reads its chunks.
    pytest.importorskip("dask.array")
    import pickle

    fields = full_fields(n=2000, D=64)
    save_embeddings(tmp_path / "store", **fields)
    lazy = load_embeddings(tmp_path / "store", chunks=500)
    assert_array_equal(lazy.X[:10].compute(), fields["X"][:10])  # the reader has opened its memory map
    shipped = pickle.dumps(lazy.X)
    assert len(shipped) < fields["X"].nbytes / 20
    assert_array_equal(pickle.loads(shipped).compute(), fields["X"])


def test_a_projector_fits_a_stores_views_read_as_dask_as_in_memory(tmp_path):
    # The recipe of docs/store.rst and docs/scale.rst: interleave_views on the lazy fields.
    pytest.importorskip("dask.array")
    from clip_invariance import InvariantProjector
    from clip_invariance.views import interleave_views

    fields = full_fields(n=400, D=16)
    save_embeddings(tmp_path / "store", **fields)
    lazy = load_embeddings(tmp_path / "store", chunks=90)
    rows, view_groups = interleave_views(lazy.X, lazy.views)
    eager_rows, eager_groups = interleave_views(fields["X"], fields["views"])
    eager = InvariantProjector(4).fit(eager_rows, view_groups=eager_groups)
    fitted = InvariantProjector(4).fit(rows, view_groups=view_groups)
    np.testing.assert_allclose(fitted.eigenvalues_, eager.eigenvalues_, rtol=1e-5)


# ------------------------------------------------- issue 20: stores that cannot mix data
def test_deeply_nested_metadata_is_a_damaged_store(store):
    (store / "store.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match=r"damaged store.json \(nested too deeply\)"):
        load_embeddings(store)


def test_a_fifo_or_a_link_in_place_of_a_file_is_refused(store, tmp_path):
    os.remove(store / "X.npy")
    os.mkfifo(store / "X.npy")  # np.load would wait forever for a writer
    with pytest.raises(ValueError, match="field 'X': X.npy is not a regular file"):
        load_embeddings(store)
    os.remove(store / "X.npy")
    np.save(tmp_path / "outside.npy", full_fields()["X"])
    os.symlink(tmp_path / "outside.npy", store / "X.npy")
    with pytest.raises(ValueError, match="field 'X': X.npy is a symbolic link"):
        load_embeddings(store)


def test_duplicate_names_are_refused_on_read_as_on_save(store):
    _edit_json(store, lambda m: m.update(class_names=["dog", "dog", "guitar"]))
    with pytest.raises(ValueError, match=r"'class_names': duplicate names \['dog'\]"):
        load_embeddings(store)
    _edit_json(store, lambda m: m.update(class_names=["dog", "elephant", "guitar"],
                                         environment_names=["photo", "sketch", "photo"]))
    with pytest.raises(ValueError, match=r"'environment_names': duplicate names \['photo'\]"):
        load_embeddings(store)


def test_a_store_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_embeddings(tmp_path / "store", **full_fields())
        _store.save_pending(tmp_path / "store", ["k"], np.zeros((1, 5), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "store" / "X.npy").stat().st_mode & 0o777 == 0o644
    (pending,) = (tmp_path / "store" / "pending").iterdir()
    assert pending.stat().st_mode & 0o777 == 0o644


def write_listed_shards(path, fields, bounds, listings=None, settings=None):
    """write_shards, each shard recording the listing it was cut from, as embed_image_folder does."""
    count, n = len(bounds) - 1, len(fields["X"])
    for index, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = {k: (np.asarray(v)[a:b] if k in _store_format.ROW_FIELDS else v) for k, v in fields.items()}
        listing = (listings or {}).get(index, "same")
        part["settings"] = {**fields["settings"], **(settings or {}).get(index, {}), "shard": {
            "index": index, "count": count, "listing": listing, "images": n, "start": a, "stop": b}}
        save_embeddings(path / "shards" / shard_name(index, count), **part)


def test_shards_of_other_listings_are_refused_naming_them(tmp_path):
    fields = full_fields(n=9)
    write_listed_shards(tmp_path / "ok", fields, [0, 3, 6, 9])
    assert_array_equal(load_embeddings(tmp_path / "ok").X, fields["X"])
    write_listed_shards(tmp_path / "s", fields, [0, 3, 6, 9], listings={1: "other", 2: "other"})
    with pytest.raises(ValueError, match=r"the shards were cut from 2 different listings of the image folder "
                       r"\(images added, removed or changed between the runs\): shard 00000-of-00003; shards "
                       r"00001-of-00003, 00002-of-00003\. Embed again the shards of the old listings"):
        load_embeddings(tmp_path / "s")


def test_shards_that_do_not_tile_the_listing_are_refused(tmp_path):
    fields = full_fields(n=9)
    write_listed_shards(tmp_path / "s", fields, [0, 3, 6, 9])
    meta_file = tmp_path / "s" / "shards" / shard_name(1, 3) / "store.json"
    meta = json.loads(meta_file.read_text())
    meta["settings"]["shard"]["start"] = 4  # cut as if from another split of the listing
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shard 00001-of-00003 holds images 4..6 of 9, expected 3..6 \(3 "
                       r"rows\); embed it again with --shard 1/3"):
        load_embeddings(tmp_path / "s")
    del meta["settings"]["shard"]["listing"]  # a shard that cannot prove its listing
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shard\(s\) 00001-of-00003 record no listing of the image folder"):
        load_embeddings(tmp_path / "s")


def test_shards_of_other_settings_are_refused_naming_the_setting(tmp_path):
    fields = full_fields(n=6)
    write_listed_shards(tmp_path / "s", fields, [0, 3, 6], settings={1: {"n_augmented": 5}})
    with pytest.raises(ValueError, match=r"shard 00001-of-00002 was embedded with other settings than shard "
                       r"00000-of-00002: n_augmented \(5, not 2\)"):
        load_embeddings(tmp_path / "s")


def test_shards_listing_an_image_twice_are_refused(tmp_path):
    fields = full_fields(n=6)
    fields["paths"] = ["a", "b", "c", "c", "d", "e"]
    write_shards(tmp_path / "s", fields, [0, 3, 6])  # shards without a listing: the paths must differ
    with pytest.raises(ValueError, match=r"shards list 1 image\(s\) more than once: 'c'"):
        load_embeddings(tmp_path / "s")


def test_an_unfinished_run_is_a_store_and_an_environment_named_pending_is_not(tmp_path):
    (tmp_path / "run" / "pending").mkdir(parents=True)
    _store.save_pending(tmp_path / "run", ["k"], np.zeros((1, 3), np.float32))
    assert _store.is_store(tmp_path / "run")
    with pytest.raises(ValueError, match="no store.json; this is an unfinished embedding run"):
        load_embeddings(tmp_path / "run")
    (tmp_path / "images" / "pending" / "dog").mkdir(parents=True)  # an image folder's environment
    assert not _store.is_store(tmp_path / "images")


def test_a_fifo_or_a_link_in_place_of_store_json_is_named(store, tmp_path):
    os.rename(store / "store.json", tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", store / "store.json")
    with pytest.raises(ValueError, match="store.json: is a symbolic link"):
        load_embeddings(store)
    os.remove(store / "store.json")
    os.mkfifo(store / "store.json")
    with pytest.raises(ValueError, match="store.json: is not a regular file"):
        load_embeddings(store)


def test_a_fifo_or_a_link_among_pending_files_is_skipped_with_a_warning(tmp_path):
    run = tmp_path / "run"
    _store.save_pending(run, ["a", "b"], np.ones((2, 3), np.float32))
    os.mkfifo(run / "pending" / "fifo.npz")  # np.load would wait forever
    _store.save_pending(tmp_path / "outside", ["c"], np.ones((1, 3), np.float32))
    (outside,) = (tmp_path / "outside" / "pending").glob("*.npz")
    os.symlink(outside, run / "pending" / "link.npz")
    with pytest.warns(UserWarning, match=r"Skipping 2 unreadable pending file\(s\): .*is not a regular file.*"
                      r"is a symbolic link") as record:
        known = _store.known_rows(run, dim=3)
    assert len(record) == 1 and sorted(known) == ["a", "b"]
