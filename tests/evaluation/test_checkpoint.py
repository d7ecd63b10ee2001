"""Resumable evaluation: finished rounds are kept as they end and read back; n_jobs changes nothing."""

import json

import numpy as np
import pytest

import clip_invariance.evaluation._evaluate as evaluate_module
from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import evaluate_store
from clip_invariance.evaluation._checkpoint import append_round, open_checkpoint

pd = pytest.importorskip("pandas")

KWARGS = {"methods": ["probe", "probe-icm"], "interventions": "image", "selection": "source-val",
          "grids": {"n_components": [4], "lam": [10.0], "C": [0.1, 1.0]}, "seeds": [0, 1]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = make_invariant_embeddings(n_samples=240, n_features=16, n_invariant=4, n_variant=4,
                                     random_state=0)
    path = tmp_path_factory.mktemp("stores") / "store"
    save_embeddings(path, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2))
    return path


@pytest.fixture(scope="module")
def reference(store):
    return evaluate_store(store, **KWARGS)


def count_rounds(monkeypatch):
    calls = []
    real = evaluate_module._evaluate_round

    def counted(*args):
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(evaluate_module, "_evaluate_round", counted)
    return calls


def test_a_rerun_reads_every_round_back(store, reference, tmp_path, monkeypatch):
    checkpoint = tmp_path / "out" / "rounds.jsonl"
    first = evaluate_store(store, checkpoint=checkpoint, **KWARGS)
    pd.testing.assert_frame_equal(first, reference)
    lines = checkpoint.read_text().splitlines()
    assert len(lines) == 1 + 4 * 2 * 2  # the header, then targets x seeds x methods
    entries = [json.loads(line) for line in lines[1:]]
    assert all(entry["seconds"] > 0 for entry in entries)  # where the time goes, per round
    assert sorted(json.loads(e["round"])[4] for e in entries) == ["probe"] * 8 + ["probe-icm"] * 8
    calls = count_rounds(monkeypatch)
    again = evaluate_store(store, checkpoint=checkpoint, **KWARGS)
    assert calls == []
    pd.testing.assert_frame_equal(again, reference)


def test_an_interrupted_run_resumes_with_the_rounds_left(store, reference, tmp_path, monkeypatch):
    checkpoint = tmp_path / "rounds.jsonl"
    evaluate_store(store, checkpoint=checkpoint, **KWARGS)
    lines = checkpoint.read_text().splitlines(keepends=True)
    # Killed while writing the sixth round: five whole rounds and half a line remain.
    checkpoint.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    calls = count_rounds(monkeypatch)
    resumed = evaluate_store(store, checkpoint=checkpoint, **KWARGS)
    assert len(calls) == 16 - 5
    pd.testing.assert_frame_equal(resumed, reference)
    assert all(json.loads(line) for line in checkpoint.read_text().splitlines())  # the torn line is gone


def test_a_checkpoint_of_other_arguments_or_another_store_is_refused(store, tmp_path, monkeypatch):
    checkpoint = tmp_path / "rounds.jsonl"
    evaluate_store(store, checkpoint=checkpoint, **{**KWARGS, "seeds": [0]})
    before = checkpoint.read_bytes()
    calls = count_rounds(monkeypatch)
    with pytest.raises(ValueError, match="was written for another store or other arguments: delete it"):
        evaluate_store(store, checkpoint=checkpoint, **{**KWARGS, "seeds": [0], "holdout": 0.3})
    data = make_invariant_embeddings(n_samples=240, n_features=16, n_invariant=4, n_variant=4,
                                     random_state=1)
    other = tmp_path / "other"
    save_embeddings(other, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="was written for another store"):
        evaluate_store(other, checkpoint=checkpoint, **{**KWARGS, "seeds": [0]})
    assert calls == [] and checkpoint.read_bytes() == before
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("my notes\n")
    with pytest.raises(ValueError, match="is not an evaluation checkpoint; choose another file"):
        evaluate_store(store, checkpoint=not_ours, **KWARGS)
    assert not_ours.read_text() == "my notes\n"


def test_checkpoint_files_round_trip_numbers_and_nan(tmp_path):
    path = tmp_path / "rounds.jsonl"
    assert open_checkpoint(path, "f") == {}
    rows = [{"accuracy": np.float64(0.25), "n_components": np.nan, "seed": np.int64(3), "templates": None}]
    append_round(path, "k", rows)
    back = open_checkpoint(path, "f")["k"][0]
    assert back["accuracy"] == 0.25 and np.isnan(back["n_components"]) and back["seed"] == 3
    assert back["templates"] is None


def test_parallel_rounds_give_the_same_rows(store, reference):
    parallel = evaluate_store(store, n_jobs=2, **KWARGS)
    pd.testing.assert_frame_equal(parallel, reference)


@pytest.mark.parametrize("n_jobs", [0, 1.5, True, "2"])
def test_bad_n_jobs_is_refused_before_any_work(store, n_jobs, monkeypatch):
    calls = count_rounds(monkeypatch)
    with pytest.raises(ValueError, match=r"n_jobs must be a non-zero integer \(-1: every core\) or None"):
        evaluate_store(store, n_jobs=n_jobs, **KWARGS)
    assert calls == []
