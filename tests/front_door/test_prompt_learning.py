"""Learned prompt contexts through the frozen text tower (CDC as published) and CoOp, on a tiny model.

Ground truths: before training, the contexts are the template's own words, so the class embeddings are
the frozen encoder's embeddings of the hand-written prompts; the loss is recomputed by hand in numpy;
the backbone is compared bit for bit before and after training.
"""

import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.special import digamma, log_softmax, softmax
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from clip_invariance.embedding import build_prompts, clear_backbone_cache, get_backbone
from clip_invariance.front_door import CDC_TEMPLATES, CoOpClassifier, PromptLearningFrontDoorClassifier
from clip_invariance.front_door._prompt_learning import _Objective, _PromptEncoder, _text_tower

torch = pytest.importorskip("torch")

NAMES = ["dog", "hot_dog", "guitar"]
CUSTOM_TEXT_MODEL = "clipinv-tiny-custom-text"


def frozen_text_embeddings(model_name, texts):
    """What CLIPEmbedder would give: open_clip's own encode_text on the full 77 tokens, normalised."""
    backbone = get_backbone(model_name, None, "cpu", "fp32")
    with torch.no_grad():
        out = backbone.model.encode_text(backbone.tokenizer(texts)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def image_embeddings(model_name, n_per_class, n_views, seed=0):
    """Columns-layout X: each image near its class's hand-written prompt embedding, plus noise."""
    rng = np.random.default_rng(seed)
    anchors = frozen_text_embeddings(model_name, build_prompts(NAMES, ["a photo of a {}."])[0])
    y = np.repeat(np.arange(len(NAMES)), n_per_class)
    views = [anchors[y] + 0.3 * rng.normal(size=(len(y), anchors.shape[1])) for _ in range(n_views)]
    return np.hstack(views).astype(np.float32), y


@pytest.fixture(scope="module")
def custom_text_model(tiny_model):
    """The tiny config as a CustomTextCLIP (the text tower in ``model.text``)."""
    import open_clip
    from conftest import TINY_CONFIG

    if CUSTOM_TEXT_MODEL not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="clipinv-config-"))
        (folder / f"{CUSTOM_TEXT_MODEL}.json").write_text(json.dumps({**TINY_CONFIG, "custom_text": True}))
        open_clip.add_model_config(folder)
    return CUSTOM_TEXT_MODEL


def make(model, **params):
    defaults = {"pretrained": None, "class_names": NAMES, "random_state": 0, "batch_size": 8}
    return PromptLearningFrontDoorClassifier(model, **{**defaults, **params})


# ------------------------------------------------------------------ the text side is the frozen encoder
@pytest.mark.parametrize("which", ["clip", "custom_text"])
def test_untrained_contexts_give_the_frozen_encoders_prompt_embeddings(which, tiny_model, custom_text_model):
    model = tiny_model if which == "clip" else custom_text_model
    assert type(get_backbone(model, None, "cpu", "fp32").model).__name__ == (
        "CLIP" if which == "clip" else "CustomTextCLIP")
    X, y = image_embeddings(tiny_model, 2, 4)
    clf = make(model, n_views=4, max_iter=0).fit(X, y)
    for m, template in enumerate(CDC_TEMPLATES):
        expected = frozen_text_embeddings(model, build_prompts(NAMES, [template])[0])
        np.testing.assert_allclose(clf.class_embeddings_[m], expected, atol=2e-6)
    assert [c.shape for c in clf.contexts_] == [(4, 64)] * 4  # "a photo of a": 4 tokens, width 64
    assert clf.class_names_ == ["dog", "hot dog", "guitar"]


def test_extra_contexts_come_first_and_random_then_the_words(tiny_model):
    X, y = image_embeddings(tiny_model, 2, 1)
    clf = make(tiny_model, templates=["a photo of a {}."], n_ctx=6, max_iter=0).fit(X, y)
    again = make(tiny_model, templates=["a photo of a {}."], n_ctx=6, max_iter=0).fit(X, y)
    backbone = get_backbone(tiny_model, None, "cpu", "fp32")
    with torch.no_grad():
        words = backbone.model.token_embedding(backbone.tokenizer(["a photo of a"])[0, 1:5]).numpy()
    context = clf.contexts_[0]
    assert context.shape == (6, 64)
    np.testing.assert_array_equal(context[2:], words)
    assert 0.005 < context[:2].std() < 0.05  # N(0, 0.02^2)
    np.testing.assert_array_equal(again.contexts_[0], context)  # seeded


# ------------------------------------------------------------------ only the contexts learn
def test_fit_leaves_every_backbone_parameter_bit_identical(tiny_model):
    backbone = get_backbone(tiny_model, None, "cpu", "fp32")
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    X, y = image_embeddings(tiny_model, 4, 4)
    untrained = make(tiny_model, n_views=4, max_iter=0).fit(X, y)
    clf = make(tiny_model, n_views=4, max_iter=2, learning_rate=1e-2).fit(X, y)
    after = backbone.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in backbone.model.parameters())
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    for learned, start in zip(clf.contexts_, untrained.contexts_):
        assert np.abs(learned - start).max() > 1e-3  # the contexts moved


def test_gradients_reach_the_contexts_and_nothing_else(tiny_model):
    backbone = get_backbone(tiny_model, None, "cpu", "fp32")
    encoder = _PromptEncoder(backbone, CDC_TEMPLATES[:2], None)
    X, y = image_embeddings(tiny_model, 2, 2)
    views = X.reshape(len(X), 2, -1).transpose(1, 0, 2)
    params = make(tiny_model, templates=CDC_TEMPLATES[:2], n_views=2)
    objective = _Objective(encoder, NAMES, views, y, np.array([[0, 0], [1, 1]]), params)
    contexts = [c.requires_grad_(True) for c in encoder.initial_contexts(torch.Generator().manual_seed(0))]
    objective(contexts, torch.arange(len(y))).backward()
    for context in contexts:
        assert torch.isfinite(context.grad).all() and context.grad.abs().max() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


# ------------------------------------------------------------------ the loss, by hand
def hand_loss(emb, views, y, pairs, anchors, t, beta, gamma, loss):
    """L_tce (or CE) + beta L_de (summed over m) + gamma L_con, with loops, in numpy."""
    M, C, _ = emb.shape
    total = 0.0
    for m, v in pairs:
        scores = t * views[v] @ emb[m].T
        if loss == "trusted":
            alpha = np.exp(scores) + 1.0
            total += np.mean([digamma(a.sum()) - digamma(a[label]) for a, label in zip(alpha, y)])
        else:
            total += -np.mean(log_softmax(scores, axis=1)[np.arange(len(y)), y])
    de = 0.0
    for m in range(M):
        for m2 in range(M):
            if m2 != m:
                for c in range(C):
                    p = softmax(t * emb[m2] @ emb[m, c])
                    de += (p * np.log(p)).sum() / ((M - 1) * C)
    con = -sum(log_softmax(t * anchors @ emb[m, c])[c] for m in range(M) for c in range(C)) / C
    return total + beta * de + gamma * con


@pytest.mark.parametrize("loss", ["trusted", "cross_entropy"])
def test_the_objective_is_the_published_loss_by_hand(loss, tiny_model):
    backbone = get_backbone(tiny_model, None, "cpu", "fp32")
    templates = CDC_TEMPLATES[:3]
    encoder = _PromptEncoder(backbone, templates, None)
    X, y = image_embeddings(tiny_model, 2, 3)
    views = X.reshape(len(X), 3, -1).transpose(1, 0, 2).astype(np.float64)
    pairs = np.array([[0, 0], [1, 1], [2, 2]])
    params = make(tiny_model, templates=templates, n_views=3, loss=loss, beta=0.3, gamma=0.7, temperature=5.0)
    objective = _Objective(encoder, NAMES, views, y, pairs, params)
    contexts = encoder.initial_contexts(torch.Generator().manual_seed(0))
    rows = torch.tensor([0, 3, 5])
    with torch.no_grad():
        got = objective(contexts, rows).item()
        emb = objective.class_embeddings(contexts).double().numpy()
    # the anchors w^0 are the normalised prompt ensemble of the frozen encoder's hand-written prompts
    hand = np.stack([frozen_text_embeddings(tiny_model, build_prompts(NAMES, [t])[0]) for t in templates])
    anchors = hand.mean(axis=0)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    unit = views / np.linalg.norm(views, axis=2, keepdims=True)
    expected = hand_loss(emb, unit[:, rows.numpy()], y[rows.numpy()], pairs, anchors, 5.0, 0.3, 0.7, loss)
    assert got == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ base-to-new
def test_with_classes_encodes_new_names_with_the_learned_contexts(tiny_model):
    X, y = image_embeddings(tiny_model, 3, 4)
    untrained = make(tiny_model, n_views=4, max_iter=0).fit(X, y)
    new = untrained.with_classes(["cat", "piano"], classes=["c", "p"])
    expected = frozen_text_embeddings(tiny_model, build_prompts(["cat", "piano"], [CDC_TEMPLATES[2]])[0])
    np.testing.assert_allclose(new.class_embeddings_[2], expected, atol=2e-6)
    assert new.classes_.tolist() == ["c", "p"] and new.get_params()["class_names"] == ["cat", "piano"]
    assert set(new.predict(X)) <= {"c", "p"} and new.predict_proba(X).shape == (len(X), 2)
    assert untrained.classes_.tolist() == [0, 1, 2]  # the original is untouched

    clf = make(tiny_model, n_views=4, max_iter=2, learning_rate=1e-2).fit(X, y)
    same = clf.with_classes(NAMES)  # the base names again: the fitted embeddings, exactly
    np.testing.assert_allclose(same.class_embeddings_, clf.class_embeddings_, atol=1e-6)
    np.testing.assert_array_equal(same.predict(X), clf.predict(X))
    learned = clf.with_classes(["cat", "piano"]).class_embeddings_
    assert np.abs(learned - new.class_embeddings_).max() > 1e-3  # the learned contexts, not the words


def test_pickle_holds_the_contexts_not_the_model_and_round_trips(tiny_model):
    X, y = image_embeddings(tiny_model, 3, 4)
    clf = make(tiny_model, n_views=4, max_iter=1).fit(X, y)
    blob = pickle.dumps(clf)
    model_bytes = sum(p.numel() * 4 for p in get_backbone(tiny_model, None, "cpu", "fp32").model.parameters())
    assert len(blob) < 30_000 < model_bytes  # the tiny model alone is ~3.5 MB
    assert b"torch" not in blob
    clear_backbone_cache()
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.with_classes(["cat"]).class_embeddings_,
                                  clf.with_classes(["cat"]).class_embeddings_)
    assert back.backbone_identity_ == (tiny_model, None, None)


# ------------------------------------------------------------------ CoOp
def test_coop_is_one_template_with_cross_entropy(tiny_model):
    X, y = image_embeddings(tiny_model, 3, 1)
    coop = CoOpClassifier(tiny_model, None, NAMES, random_state=0, batch_size=4, max_iter=2).fit(X, y)
    general = make(tiny_model, templates=["a photo of a {}."], loss="cross_entropy", beta=0.0, gamma=0.0,
                   temperature=100.0, batch_size=4, max_iter=2).fit(X, y)
    np.testing.assert_array_equal(coop.contexts_[0], general.contexts_[0])
    assert coop.loss_curve_ == general.loss_curve_
    # one exp-evidence opinion: the fused probability is CoOp's softmax of 100 cos
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = softmax(100.0 * unit @ coop.class_embeddings_[0].T, axis=1)
    np.testing.assert_allclose(coop.predict_proba(X), expected, atol=1e-5)
    assert sorted(coop.get_params()) == ["batch_size", "class_names", "classes", "device", "learning_rate",
                                         "max_iter", "model_name", "n_ctx", "pretrained", "random_state",
                                         "temperature", "template", "verbose"]
    assert clone(coop).get_params() == coop.get_params()
    assert coop.pairs_.tolist() == [[0, 0]] and coop.n_templates_ == 1


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("params, error, message", [
    ({"templates": ["a photo of a"]}, ValueError, "must hold exactly one '{}'"),
    ({"templates": ["a {} of a {}."]}, ValueError, "found 2"),
    ({"templates": "a photo of a {}."}, TypeError, "must be an array-like"),
    ({"templates": []}, ValueError, "templates is empty"),
    ({"templates": ["{} texture."]}, ValueError, "has no words before the class name"),
    ({"templates": ["a bad photo of a {}."], "n_ctx": 3}, ValueError, "n_ctx=3 is fewer than the 5 tokens"),
    ({"class_names": ["dog", "dog", "cat"]}, ValueError, "class_names has duplicates: ['dog']"),
    ({"class_names": "dog"}, TypeError, "must be an array-like"),
    ({"classes": ["a", "b", "c"]}, ValueError, "that are not in classes ['a', 'b', 'c']"),
    ({"n_views": 2}, ValueError, "X has 32 columns; 2 view(s) of 'clipinv-tiny-test' embeddings need 2 x"),
    ({"loss": "hinge"}, InvalidParameterError, "'loss' parameter"),
    ({"n_ctx": 0}, InvalidParameterError, "'n_ctx' parameter"),
])
def test_bad_input_is_refused_and_leaves_the_classifier_unchanged(params, error, message, tiny_model):
    X, y = image_embeddings(tiny_model, 2, 1)
    clf = make(tiny_model, templates=["a photo of a {}."], max_iter=0).fit(X, y)
    state = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    with pytest.raises(error) as info:
        clf.set_params(**params).fit(X, y)
    assert message in str(info.value)
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == state.keys()
    assert all(vars(clf)[k] is v for k, v in state.items())


def test_fitting_requires_labels_among_the_classes_and_a_clip_text_tower(tiny_model):
    X, y = image_embeddings(tiny_model, 2, 1)
    with pytest.raises(ValueError, match=r"label\(s\) \[5, 6, 7\] that are not in classes \[0, 1, 2\]"):
        make(tiny_model, templates=["a photo of a {}."], max_iter=0).fit(X, y + 5)
    with pytest.raises(ValueError, match="has no CLIP text tower"):
        _text_tower(torch.nn.Linear(2, 2))


def test_without_class_names_the_labels_are_the_names(tiny_model):
    X, y = image_embeddings(tiny_model, 2, 1)
    labels = np.array(["dog", "hot_dog", "guitar"])[y]
    clf = make(tiny_model, class_names=None, templates=["a photo of a {}."], max_iter=0).fit(X, labels)
    assert clf.class_names_ == ["dog", "guitar", "hot dog"]
    assert clf.classes_.tolist() == ["dog", "guitar", "hot_dog"]
    np.testing.assert_allclose(clf.class_embeddings_[0], frozen_text_embeddings(
        tiny_model, ["a photo of a dog.", "a photo of a guitar.", "a photo of a hot dog."]), atol=2e-6)


def test_prediction_checks_X_against_the_fit(tiny_model):
    pd = pytest.importorskip("pandas")
    X, y = image_embeddings(tiny_model, 2, 1)
    frame = pd.DataFrame(X, columns=[f"e{i}" for i in range(X.shape[1])])
    clf = make(tiny_model, templates=["a photo of a {}."], max_iter=0).fit(frame, y)
    plain = make(tiny_model, templates=["a photo of a {}."], max_iter=0).fit(X, y)
    assert clf.feature_names_in_.tolist() == frame.columns.tolist()
    np.testing.assert_allclose(clf.predict_proba(frame), plain.predict_proba(X), atol=1e-6)
    with pytest.raises(ValueError, match="X has 10 features, but PromptLearningFrontDoorClassifier is "
                                         "expecting 32"):
        plain.predict(X[:, :10])


def test_training_lowers_the_loss(tiny_model):
    X, y = image_embeddings(tiny_model, 4, 2)
    clf = make(tiny_model, templates=CDC_TEMPLATES[:2], n_views=2, batch_size=len(y), learning_rate=1e-2,
               max_iter=6).fit(X, y)
    assert clf.n_iter_ == 6
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] - 1e-3
