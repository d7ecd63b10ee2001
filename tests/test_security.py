"""Sharing fitted estimators without pickle: every fitted state round-trips through skops, and
loading trusts an exact list of types, never a prefix."""

import importlib
import io
import json
import pickle
import zipfile

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
from clip_invariance.baselines import TipAdapterClassifier, WiSEClassifier
from clip_invariance.datasets import make_invariant_embeddings, make_multi_template_embeddings
from clip_invariance.persistence import trusted_types
from clip_invariance.views import stack_views

sio = pytest.importorskip("skops.io", reason="skops is in the tests extra")


def _data():
    data = make_invariant_embeddings(n_samples=200, random_state=0)
    X, view_groups = stack_views(data.X, *data.X_views)
    return data, X, view_groups


def _text(data):
    return {"intervention_embeddings": data.text_interventions,
            "intervention_view_groups": data.text_view_groups}


def _projector(how):
    data, X, view_groups = _data()
    y, environments = np.tile(data.y, 2), np.tile(data.environments, 2)
    if how == "view_groups":
        return InvariantProjector(8).fit(X, view_groups=view_groups)
    if how == "y":
        return InvariantProjector(8).fit(X, y)
    if how == "string y":
        return InvariantProjector(8).fit(X, np.array(["cat", "dog", "cow"])[y % 3])
    if how == "y + environments":
        return InvariantProjector(8).fit(X, y, environments=environments)
    if how == "fixed interventions":
        return InvariantProjector(8, **_text(data)).fit(data.X)
    if how == "view_groups + fixed interventions":
        return InvariantProjector(8, **_text(data)).fit(X, view_groups=view_groups)
    if how == "partial_fit":
        first = view_groups < 100  # views of one content in one batch
        return (InvariantProjector(8, **_text(data))
                .partial_fit(X[first], view_groups=view_groups[first])
                .partial_fit(X[~first], view_groups=view_groups[~first]))
    if how == "partial_fit, y + environments":
        return (InvariantProjector(8).partial_fit(X[:100], y[:100], environments=environments[:100])
                .partial_fit(X[100:], y[100:], environments=environments[100:]))
    if how == "compact":
        return InvariantProjector(8).fit(X, y, environments=environments).compact()
    raise ValueError(how)


PROJECTORS = ["view_groups", "y", "string y", "y + environments", "fixed interventions",
              "view_groups + fixed interventions", "partial_fit", "partial_fit, y + environments", "compact"]


def _fitted(name):
    """A fitted model and the input its predictions are compared on."""
    if name.startswith("projector, "):
        return _projector(name[len("projector, "):]), _data()[0].X
    data, X, view_groups = _data()
    if name == "projector pipeline":
        model = Pipeline([("proj", InvariantProjector(8)), ("clf", LogisticRegression(max_iter=500))])
        return model.fit(X, np.tile(data.y, 2), proj__view_groups=view_groups), data.X
    if name == "zero-shot, projected":
        projector = InvariantProjector(8, **_text(data))
        model = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=projector)
        return model.fit(X, view_groups=view_groups), data.X
    if name == "zero-shot, named classes, no projector":
        names = [f"class {c}" for c in range(len(data.prompt_embeddings))]
        return ZeroShotInvariantClassifier(data.prompt_embeddings, classes=names).fit(X), data.X
    if name.startswith(("WiSE", "Tip-Adapter")):
        estimator = WiSEClassifier if name.startswith("WiSE") else TipAdapterClassifier
        projector = InvariantProjector(8) if name.endswith("projected") else None
        model = estimator(data.prompt_embeddings, projector=projector)
        return model.fit(X, np.tile(data.y, 2), view_groups=view_groups), data.X
    mt = make_multi_template_embeddings(n_samples=120, n_views=2, random_state=0)
    if name == "front door (trained, projected)":
        model = FrontDoorEnsembleClassifier(n_views=2, max_iter=2, projector=InvariantProjector(8),
                                            random_state=0)
        return model.fit(mt.X, mt.y), mt.X
    if name == "front door (trained, rank 2)":
        model = FrontDoorEnsembleClassifier(n_views=2, max_iter=2, rank=2, random_state=0)
        return model.fit(mt.X, mt.y), mt.X
    if name == "front door (untrained)":
        return FrontDoorEnsembleClassifier(n_views=2, max_iter=0).fit(mt.X, mt.y), mt.X
    raise ValueError(name)


MODELS = [f"projector, {how}" for how in PROJECTORS] + [
    "projector pipeline", "zero-shot, projected", "zero-shot, named classes, no projector",
    "front door (trained, projected)", "front door (trained, rank 2)", "front door (untrained)",
    "WiSE", "WiSE, projected", "Tip-Adapter", "Tip-Adapter, projected",
]


def _assert_same_state(a, b, where="model"):
    """Nothing lost: the same types, attributes, arrays (dtype, shape, values) and dict order."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, z) in enumerate(zip(a, b)):
            _assert_same_state(x, z, f"{where}[{i}]")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _assert_same_state(vars(a), vars(b), where)
    else:
        assert a == b, where


def _outputs(model, X):
    names = ["transform", "predict", "predict_proba", "predict_uncertainty"]
    return {name: getattr(model, name)(X) for name in names if hasattr(model, name)}


@pytest.mark.parametrize("name", MODELS)
def test_every_fitted_state_round_trips_with_the_trusted_types(name):
    model, X = _fitted(name)
    loaded = sio.loads(sio.dumps(model), trusted=trusted_types())
    _assert_same_state(loaded, model)
    expected, got = _outputs(model, X), _outputs(loaded, X)
    assert expected.keys() == got.keys() and expected
    for method in expected:
        np.testing.assert_array_equal(got[method], expected[method], err_msg=method)


@pytest.mark.parametrize("how", ["partial_fit", "partial_fit, y + environments"])
def test_a_loaded_projector_continues_partial_fit_as_the_original(how):
    model = _projector(how)
    loaded = sio.loads(sio.dumps(model), trusted=trusted_types())
    data, X, view_groups = _data()
    rows = np.flatnonzero(view_groups < 20)
    labels = ({"view_groups": view_groups[rows]} if how == "partial_fit"
              else {"y": np.tile(data.y, 2)[rows], "environments": np.tile(data.environments, 2)[rows]})
    for projector in (model, loaded):
        projector.partial_fit(X[rows], **labels)
    _assert_same_state(loaded, model)


def test_an_embedder_round_trips_and_its_pickle_holds_no_model(tiny_model):
    # The backbone lives in a process-wide cache, never on the estimator.
    embedder = CLIPEmbedder(tiny_model, pretrained=None, device="cpu").fit()
    blob = pickle.dumps(embedder)
    assert b"torch" not in blob and len(blob) < 2000
    loaded = sio.loads(sio.dumps(embedder), trusted=trusted_types())
    _assert_same_state(loaded, embedder)
    image = np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.transform(image), embedder.transform(image))


def _untrusted(model):
    return set(sio.get_untrusted_types(data=sio.dumps(model)))


def test_the_trusted_types_are_exactly_those_our_fitted_estimators_hold(tiny_model):
    # Fails when an estimator gains a type (add it to trusted_types, after a look at what it is)
    # and when the list keeps a type that no estimator holds any more.
    found = set().union(*(_untrusted(_fitted(name)[0]) for name in MODELS))
    found |= _untrusted(CLIPEmbedder(tiny_model, pretrained=None, device="cpu").fit())
    assert found == set(trusted_types())


def test_the_trusted_types_are_classes_where_they_are_defined():
    # A re-exported name (Path in one of our modules) or a function must never be on the list.
    names = trusted_types()
    assert names == sorted(set(names)) and isinstance(names, list)
    for name in names:
        module, _, attribute = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attribute)
        assert isinstance(obj, type) and obj.__module__ == module, name
    trusted_types().append("numpy.testing._private.utils.runstring")  # a copy: the list stays exact
    assert "numpy.testing._private.utils.runstring" not in trusted_types()


# ------------------------------------------------------------- planted look-alikes
def _planted(node):
    """A real projector's file with its ``solver`` replaced by ``node`` (as an attacker would edit it)."""
    blob = sio.dumps(_projector("y"))
    with zipfile.ZipFile(io.BytesIO(blob)) as source:
        files = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(files["schema.json"])
    schema["content"]["content"]["solver"] = dict(node, __id__=1)
    files["schema.json"] = json.dumps(schema).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name, content in files.items():
            target.writestr(name, content)
    return out.getvalue()


def _string(text):
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(text), "is_json": True, "__id__": 2}


LOOK_ALIKES = {
    # runs a string of Python when called: a function of numpy's, under a trusted-looking prefix
    "numpy.testing._private.utils.runstring": {
        "__class__": "runstring", "__module__": "numpy.testing._private.utils", "__loader__": "FunctionNode"},
    # a private function of ours that deletes a folder
    "clip_invariance.datasets._store._swap_in": {
        "__class__": "_swap_in", "__module__": "clip_invariance.datasets._store",
        "__loader__": "FunctionNode"},
    # pathlib.Path, re-exported by one of our modules
    "clip_invariance.datasets._store.Path": {
        "__class__": "Path", "__module__": "clip_invariance.datasets._store",
        "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                    "content": [_string("/tmp")], "__id__": 3}},
}


@pytest.mark.parametrize("planted", sorted(LOOK_ALIKES))
def test_planted_look_alikes_are_refused(planted):
    blob = _planted(LOOK_ALIKES[planted])
    # The file does ask for the planted type, and the old prefix rule would have trusted it.
    assert planted in sio.get_untrusted_types(data=blob)
    assert planted.startswith(("clip_invariance.", "sklearn.", "numpy."))
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match=planted.replace(".", r"\.")):
        sio.loads(blob, trusted=trusted_types())


def test_skops_refuses_our_types_unless_trusted():
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="InvariantProjector"):
        sio.loads(sio.dumps(_projector("view_groups")))
