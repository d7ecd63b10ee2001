"""The leave-one-domain-out protocol."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from clip_invariance import InvariantProjector
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.evaluation import holdout_split, leave_one_domain_out
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
