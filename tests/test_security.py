"""Sharing fitted estimators without pickle: every estimator round-trips through skops."""

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from clip_invariance import (
    CLIPEmbedder,
    FrontDoorEnsembleClassifier,
    InvariantProjector,
    ZeroShotInvariantClassifier,
)
from clip_invariance.datasets import make_invariant_embeddings, make_multi_template_embeddings
from clip_invariance.views import stack_views

sio = pytest.importorskip("skops.io", reason="skops is in the tests extra")

# What a user is asked to trust when loading this package's estimators: its own classes,
# scikit-learn's, and numpy dtypes. Anything else would be a reason to stop.
EXPECTED_PREFIXES = ("clip_invariance.", "sklearn.", "numpy.")


def _fitted(name):
    data = make_invariant_embeddings(n_samples=400, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    y = np.tile(data.y, 2)
    if name == "projector pipeline":
        model = Pipeline([("proj", InvariantProjector(8)), ("clf", LogisticRegression(max_iter=500))])
        return model.fit(X, y, proj__view_groups=view_groups), data.X
    if name == "zero-shot":
        text = {
            "intervention_embeddings": data.text_interventions,
            "intervention_view_groups": data.text_view_groups,
        }
        model = ZeroShotInvariantClassifier(
            data.prompt_embeddings, projector=InvariantProjector(8, **text)
        )
        return model.fit(X, view_groups=view_groups), data.X
    if name == "front door (trained, projected)":
        mt = make_multi_template_embeddings(n_samples=300, n_views=2, random_state=0)
        model = FrontDoorEnsembleClassifier(
            n_views=2, max_iter=2, projector=InvariantProjector(8), random_state=0
        )
        return model.fit(mt.X, mt.y), mt.X
    raise ValueError(name)


@pytest.mark.parametrize("name", ["projector pipeline", "zero-shot", "front door (trained, projected)"])
def test_skops_round_trip(name):
    model, X = _fitted(name)
    blob = sio.dumps(model)
    untrusted = sio.get_untrusted_types(data=blob)
    assert all(t.startswith(EXPECTED_PREFIXES) for t in untrusted), untrusted
    loaded = sio.loads(blob, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_skops_refuses_untrusted_types_by_default():
    model, _ = _fitted("projector pipeline")
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.loads(sio.dumps(model))


def test_an_embedder_pickle_holds_no_model(tiny_model):
    # The backbone lives in a process-wide cache, never on the estimator.
    embedder = CLIPEmbedder(tiny_model, pretrained=None, device="cpu").fit()
    blob = pickle.dumps(embedder)
    assert b"torch" not in blob and len(blob) < 2000
    blob = sio.dumps(embedder)
    loaded = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    image = np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.transform(image), embedder.transform(image))
