"""Values that would fail mid-evaluation are refused before the first fit (issue 20, item 13)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clip_invariance.datasets import make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import evaluate_store

pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = make_invariant_embeddings(n_samples=200, n_features=16, random_state=0)
    path = tmp_path_factory.mktemp("stores") / "synthetic"
    save_embeddings(path, X=data.X, y=data.y, environments=data.environments,
                    views=data.X_views.transpose(1, 0, 2), prompt_embeddings=data.prompt_embeddings)
    return path


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_iter": -1}, "The 'max_iter' parameter of FrontDoorEnsembleClassifier must be an int in the "
                           "range [0, inf). Got -1 instead."),
        ({"alpha": np.inf}, "The 'alpha' parameter of FrontDoorEnsembleClassifier must be a float in the "
                            "range [0.0, inf). Got inf instead."),
        ({"learning_rate": 0.0}, "The 'learning_rate' parameter of FrontDoorEnsembleClassifier must be a "
                                 "float in the range (0.0, inf). Got 0.0 instead."),
    ],
)
def test_front_door_values_are_checked_before_the_probe_is_fitted(params, message, store, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the probe was fitted before front_door_params was checked")

    monkeypatch.setattr(LogisticRegression, "fit", refuse)
    with pytest.raises(ValueError) as error:
        evaluate_store(store, methods=["probe", "front-door"], grids={"C": [0.316]}, front_door_params=params)
    assert str(error.value) == "front_door_params: " + message
