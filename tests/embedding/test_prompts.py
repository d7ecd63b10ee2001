import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.embedding import (
    DEFAULT_SETTINGS,
    DEFAULT_STYLES,
    build_prompts,
    encode_prompts,
    get_templates,
    make_text_interventions,
)
from clip_invariance.invariance import subspace_overlap


@pytest.mark.parametrize("name, size", [("simple", 7), ("openai", 80)])
def test_build_prompts_reuses_open_clip_templates(name, size):
    from open_clip import zero_shot_metadata

    source = {
        "simple": zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES,
        "openai": zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES,
    }[name]
    prompts = build_prompts(["dog", "guitar"], name)
    assert len(prompts) == size and all(len(row) == 2 for row in prompts)
    assert prompts[3] == [source[3]("dog"), source[3]("guitar")]
    assert prompts == build_prompts(["dog", "guitar"], get_templates(name))


def test_build_prompts_with_custom_templates():
    prompts = build_prompts(
        ["hot_dog", "  sea   lion "], ["a photo of a {}.", "{classname}!", lambda c: c.upper()]
    )
    assert prompts == [
        ["a photo of a hot dog.", "a photo of a sea lion."],
        ["hot dog!", "sea lion!"],
        ["HOT DOG", "SEA LION"],
    ]


def test_build_prompts_errors():
    with pytest.raises(ValueError, match="no '{}' or '{classname}' placeholder"):
        build_prompts(["dog"], ["a photo."])
    with pytest.raises(ValueError, match="Unknown template set 'imagenet'"):
        build_prompts(["dog"], "imagenet")
    with pytest.raises(TypeError, match="not a single string"):
        build_prompts("dog", ["a {}."])
    with pytest.raises(ValueError, match="templates is empty"):
        build_prompts(["dog"], [])
    with pytest.raises(ValueError, match="empty name"):
        build_prompts(["dog", "_"], ["a {}."])


def test_text_interventions_cover_every_style_and_setting():
    texts, view_groups = make_text_interventions(["dog", "sea_lion"])
    per_class = len(DEFAULT_STYLES) * len(DEFAULT_SETTINGS)
    assert len(texts) == 2 * per_class == len(view_groups)
    assert_array_equal(view_groups, np.repeat([0, 1], per_class))
    assert len(set(texts)) == len(texts)
    assert "a sketch of a dog in the snow." in texts
    assert "a thermal infrared photo of a sea lion." in texts
    assert all("sea lion" in t for t, g in zip(texts, view_groups) if g == 1)
    words = ("photo", "sketch", "painting", "cartoon", "clipart", "infrared", "low-light", "blurry")
    for word in words:
        assert any(word in style for style in DEFAULT_STYLES)


def test_text_interventions_custom_template_drops_duplicates():
    texts, view_groups = make_text_interventions(
        ["cat"],
        styles=["photo", "drawing"],
        settings=["", "at night"],
        template="{style}: {classname}",
    )
    assert texts == ["photo: cat", "drawing: cat"]
    assert_array_equal(view_groups, [0, 0])


def test_text_interventions_errors():
    with pytest.raises(ValueError, match="at least two descriptions"):
        make_text_interventions(["cat"], styles=["photo"], settings=[""])
    with pytest.raises(ValueError, match="must contain '{style}' and '{classname}'"):
        make_text_interventions(["cat"], template="a photo of a {classname}.")


def _hash_encoder(texts):
    # Deterministic per string, independent of the batch it arrives in.
    return np.array(
        [np.random.RandomState(sum(map(ord, t)) % 2**31).standard_normal(5) for t in texts]
    )


def test_encode_prompts_keeps_layout_and_batches():
    prompts = build_prompts(["cat", "dog", "cow"], ["a {}.", "a photo of a {}."])
    emb = encode_prompts(_hash_encoder, prompts)
    assert emb.shape == (2, 3, 5)
    assert_allclose(emb[1, 2], _hash_encoder(["a photo of a cow."])[0])
    assert_allclose(encode_prompts(_hash_encoder, prompts, batch_size=2), emb)
    flat = encode_prompts(_hash_encoder, prompts[0])
    assert_allclose(flat, emb[0])


def test_encode_prompts_accepts_torch_tensors():
    torch = pytest.importorskip("torch")

    def encoder(texts):
        return torch.ones(len(texts), 3, requires_grad=True) * 2

    emb = encode_prompts(encoder, ["a", "b"])
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32
    assert_allclose(emb, 2.0)


def test_encode_prompts_errors():
    with pytest.raises(TypeError, match="encoder must be callable"):
        encode_prompts("clip", ["a"])
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for 3 strings"):
        encode_prompts(lambda t: np.zeros(len(t)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_prompts(lambda t: np.full((len(t), 2), np.nan), ["a"])
    with pytest.raises(ValueError, match="same classes"):
        encode_prompts(_hash_encoder, [["a", "b"], ["c"]])
    with pytest.raises(TypeError, match="not a single string"):
        encode_prompts(_hash_encoder, "a photo")


def test_text_interventions_recover_the_content_subspace():
    """End to end with a toy encoder: class words live in dims 0-3, style and
    setting words in dims 4-11. The projector fitted on image embeddings plus the
    encoded text interventions must find dims 0-3, and zero-shot in it must
    ignore an unseen style."""
    rng = np.random.RandomState(0)
    classes = ["dog", "cat", "horse", "guitar"]
    content = dict(zip(classes, 4 * np.eye(4)))  # every content direction equally strong
    nuisance = {s: 3 * rng.standard_normal(8) for s in DEFAULT_STYLES + DEFAULT_SETTINGS[1:]}

    def encoder(texts):
        out = 0.05 * rng.standard_normal((len(texts), 16))
        for i, text in enumerate(texts):
            out[i, :4] += sum(v for c, v in content.items() if c in text)
            out[i, 4:12] += sum(v for s, v in nuisance.items() if f" {s} " in f" {text[:-1]} ")
        return out

    texts, view_groups = make_text_interventions(classes)
    T = encode_prompts(encoder, texts)
    prompts = encode_prompts(encoder, build_prompts(classes, ["a photo of a {}."]))

    y = rng.randint(4, size=400)
    X = np.zeros((400, 16))
    X[:, :4] = np.array([content[c] for c in classes])[y] + 0.5 * rng.standard_normal((400, 4))
    X[:, 4:12] = 2 * rng.standard_normal((400, 8))
    projector = InvariantProjector(n_components=4, intervention_embeddings=T,
                                   intervention_view_groups=view_groups)
    clf = ZeroShotInvariantClassifier(prompts, classes=classes, projector=projector).fit(X)
    assert subspace_overlap(clf.projector_.components_.T, np.eye(16)[:, :4]) > 0.95

    X_shift = X.copy()
    X_shift[:, 4:12] += 6 * rng.standard_normal(8)  # a strong new style
    labels = np.array(classes)[y]
    assert clf.score(X, labels) > 0.95
    assert_array_equal(clf.predict(X_shift), clf.predict(X))  # the style is projected out
