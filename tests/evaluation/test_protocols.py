"""The protocols: leave-one-domain-out, the exact holdout split, the selection rules."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from clip_invariance import InvariantProjector
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.evaluation import (
    SELECTION_RULES,
    holdout_split,
    leave_one_domain_out,
    select_and_fit,
    selection_splits,
)
from clip_invariance.views import stack_views


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Remembers what it was fitted on; predicts the majority class."""

    def fit(self, X, y, groups=None):
        self.seen_rows_ = np.asarray(X)[:, 0].copy()
        self.seen_groups_ = groups
        self.classes_, counts = np.unique(y, return_counts=True)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_splits_follow_the_protocol():
    n = 200
    X = np.arange(n, dtype=float)[:, None]
    y = np.zeros(n, dtype=int)
    environments = np.repeat(["a", "b", "c", "d"], 50)
    content = np.arange(n) // 2  # pairs stay together
    seen = []

    class Spy(RecordingClassifier):
        def fit(self, X, y, groups=None):
            seen.append((np.asarray(X)[:, 0].astype(int), groups))
            return super().fit(X, y, groups)

    scored = np.arange(n) % 2 == 0  # odd rows play augmented views: train only
    rows = leave_one_domain_out(
        Spy(), X, y, environments, fit_params={"groups": content}, view_groups=content, scored=scored
    )
    assert [r["target"] for r in rows] == ["a", "b", "c", "d"]
    for row, (train_rows, groups) in zip(rows, seen):
        target = set(np.flatnonzero(environments == row["target"]))
        assert not target & set(train_rows)
        assert row["n_train"] == len(train_rows) and row["n_test"] == 25
        assert len(train_rows) == 120  # exactly 80% of each source's 25 contents (2 rows each)
        assert np.array_equal(groups, content[train_rows])  # row-aligned params follow
        assert np.all(np.isin(train_rows ^ 1, train_rows))  # both rows of a pair
    # The same fixed split for every target.
    train_sets = [set(t) for t, _ in seen]
    assert train_sets[0] & set(range(100, 200)) == train_sets[1] & set(range(100, 200))


def test_invariant_pipeline_beats_raw_on_the_shifted_domain():
    data = make_invariant_embeddings(n_samples=1200, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    y, environments = np.tile(data.y, 2), np.tile(data.environments, 2)
    pipe = Pipeline([("proj", InvariantProjector(8)), ("clf", LogisticRegression(max_iter=1000))])
    icm = leave_one_domain_out(
        pipe, X, y, environments, fit_params={"proj__view_groups": view_groups}, view_groups=view_groups
    )
    raw = leave_one_domain_out(
        LogisticRegression(max_iter=1000), X, y, environments, view_groups=view_groups
    )
    assert icm[-1]["test_accuracy"] > raw[-1]["test_accuracy"] + 0.15
    assert icm[-1]["validation_accuracy"] > 0.8


def test_errors():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least two environments"):
        leave_one_domain_out(RecordingClassifier(), X, [0, 1, 0, 1], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        leave_one_domain_out(RecordingClassifier(), X, [0, 1, 0], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="holdout"):
        leave_one_domain_out(RecordingClassifier(), X, [0, 1, 0, 1], [0, 0, 1, 1], holdout=1.5)


def test_holdout_split_is_exact_per_environment_and_keeps_views_together():
    environments = np.repeat(["a", "b", "c"], [20, 50, 7])
    view_groups = np.arange(77)
    X_groups = np.concatenate([view_groups, view_groups])  # each content twice (image + view)
    held = holdout_split(np.tile(environments, 2), X_groups, holdout=0.2, random_state=3)
    assert held[:20].sum() == 4 and held[20:70].sum() == 10 and held[70:77].sum() == 1
    np.testing.assert_array_equal(held[:77], held[77:])
    again = holdout_split(np.tile(environments, 2), X_groups, holdout=0.2, random_state=3)
    np.testing.assert_array_equal(held, again)
    with pytest.raises(ValueError, match="span several environments"):
        holdout_split(["a", "b"], [0, 0])


def _round():
    """Rows of one round: 3 sources and a target, 10 contents each, an original and a view per content."""
    environments = np.repeat(["a", "b", "c", "t"], 10)
    view_groups = np.arange(40)
    return (
        np.tile(environments, 2),
        np.concatenate([view_groups, view_groups]),
        np.r_[np.ones(40, bool), np.zeros(40, bool)],
    )


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_selection_rules_never_train_on_the_target(rule):
    environments, view_groups, is_original = _round()
    splits, train = selection_splits(
        rule, environments, "t", view_groups=view_groups, is_original=is_original
    )
    assert not np.isin(environments[train], ["t"]).any()
    assert len(train) == 2 * 3 * 8  # 80% of every source's contents, with their views
    for fit_rows, validation in splits:
        assert not np.isin(environments[fit_rows], ["t"]).any()
        assert not set(view_groups[fit_rows]) & set(view_groups[validation])
        validated = set(environments[validation])
        if rule == "oracle":
            assert validated == {"t"} and is_original[validation].all()
        else:
            assert "t" not in validated
        if rule == "views-val":
            assert not is_original[validation].any()
        elif rule in ("source-val", "lodo-cv"):
            assert is_original[validation].all()
    if rule == "lodo-cv":
        assert [sorted(set(environments[v])) for _, v in splits] == [["a"], ["b"], ["c"]]
        for (fit_rows, validation), source in zip(splits, "abc"):
            assert source not in set(environments[fit_rows])
            assert len(validation) == 10  # every original of the held-out source
    else:
        assert len(splits) == 1


@pytest.mark.parametrize(
    "rule, kwargs, message",
    [
        ("best", {}, "Unknown selection rule 'best'"),
        ("views-val", {}, "validates on augmented views"),
        ("lodo-cv", {"environments": np.repeat(["a", "t"], 5)}, "at least two source environments"),
        ("source-val", {"target": "x"}, "target 'x' has no row"),
        ("source-val", {"environments": np.repeat(["t"], 5)}, "no source environment"),
    ],
)
def test_selection_rule_errors(rule, kwargs, message):
    arguments = {"environments": np.repeat(["a", "b", "t"], 5), "target": "t", **kwargs}
    with pytest.raises(ValueError, match=message):
        selection_splits(rule, arguments.pop("environments"), arguments.pop("target"))


def test_select_and_fit_chooses_on_validation_and_fits_on_train_rows():
    data = make_invariant_embeddings(n_samples=600, random_state=0)
    splits, train = selection_splits("source-val", data.environments, data.test_environment)
    model, best, score = select_and_fit(
        RecordingLogistic(), {"C": [1e-8, 1.0]}, data.X, data.y, splits, train
    )
    assert best == {"C": 1.0} and score > 0.5
    np.testing.assert_array_equal(model.seen_rows_, data.X[train, 0])
    # Without a grid there is no search, and the rows are the same.
    model, best, score = select_and_fit(RecordingLogistic(), {}, data.X, data.y, splits, train)
    assert best == {} and np.isnan(score) and len(model.seen_rows_) == len(train)


class RecordingLogistic(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        self.seen_rows_ = np.asarray(X)[:, 0].copy()
        return super().fit(X, y, sample_weight=sample_weight)
