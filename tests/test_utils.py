"""Cosine scoring helpers shared by the classifiers."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics.pairwise import cosine_similarity

from clip_invariance._utils import (
    average_prompt_ensemble,
    check_classes,
    check_prompt_embeddings,
    class_prototypes,
    encode_labels,
    l2_normalize,
    normalize_embeddings,
)


def test_l2_normalize_keeps_dtype_and_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(X)
    assert out.dtype == np.float32
    assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_cosine_is_scale_free():
    rng = np.random.RandomState(0)
    X, P = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    S = cosine_similarity(X, P)
    assert_allclose(S, cosine_similarity(7 * X, 0.1 * P))
    assert_allclose(S[1, 2], X[1] @ P[2] / np.linalg.norm(X[1]) / np.linalg.norm(P[2]))


def test_prompt_ensemble_weighs_templates_equally():
    short = np.array([[[1.0, 0.0]], [[0.0, 100.0]]])  # the long template must not dominate
    assert_allclose(average_prompt_ensemble(short), [[np.sqrt(0.5), np.sqrt(0.5)]])
    with pytest.raises(ValueError, match="n_templates, n_classes, n_features"):
        average_prompt_ensemble(np.zeros((2, 2, 2, 2)))


def test_class_prototypes_are_normalised_means():
    X = np.array([[1.0, 1.0], [3.0, -1.0], [0.0, 5.0]])
    protos = class_prototypes(X, np.array([1, 1, 0]), 2)
    assert_allclose(protos, [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    "dtype, scale",
    [
        (np.float64, 1e160), (np.float64, 1e-160), (np.float64, 1e300), (np.float64, 1e-300),
        (np.float32, 1e37), (np.float32, 1e-30), (np.float32, 1e-25),
    ],
)
def test_l2_normalize_neither_overflows_nor_underflows(dtype, scale):
    X = np.random.RandomState(1).standard_normal((6, 512)).astype(dtype)
    X[0] = 0.0
    out = l2_normalize(X * dtype(scale))
    assert out.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert_allclose(out, l2_normalize(X), rtol=rtol, atol=rtol * 1e-3)
    assert_allclose(np.linalg.norm(out[1:].astype(np.float64), axis=1), 1.0, rtol=rtol)


def test_l2_normalize_along_another_axis():
    X = np.array([[3.0, 0.0], [4.0, 0.0]])
    assert_allclose(l2_normalize(X, axis=0), [[0.6, 0.0], [0.8, 0.0]])


def test_normalize_embeddings_flags_rows_without_direction():
    X = np.ones((8, 3))
    X[[2, 5]] = 0.0
    with pytest.raises(ValueError, match=r"views has 2 all-zero row\(s\) \(row 2, 5\)"):
        normalize_embeddings(X, input_name="views", zero_rows="raise")
    with pytest.warns(UserWarning, match=r"X has 2 all-zero row\(s\) \(row 2, 5\)"):
        unit = normalize_embeddings(X)
    assert_allclose(unit[[2, 5]], 0.0)
    assert_allclose(unit[0], 3**-0.5)
    X[2, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        normalize_embeddings(X)
    assert_allclose(normalize_embeddings(np.full((1, 4), 1e-200)), 0.5)


def test_check_prompt_embeddings_gives_a_3d_float64_stack():
    P = check_prompt_embeddings(np.eye(3, dtype=np.float32)[:2], 3)
    assert P.shape == (1, 2, 3) and P.dtype == np.float64
    assert check_prompt_embeddings(np.ones((4, 2, 3)), 3).shape == (4, 2, 3)
    with pytest.raises(ValueError, match=r"anchor_embeddings is empty: shape \(2, 0, 3\)"):
        check_prompt_embeddings(np.ones((2, 0, 3)), 3, input_name="anchor_embeddings")


def test_check_classes():
    assert_array_equal(check_classes(None, 3), [0, 1, 2])
    assert_array_equal(check_classes(("b", "a"), 2), ["b", "a"])
    with pytest.raises(ValueError, match=r"classes has shape \(2, 1\) but the prompt embeddings describe 2"):
        check_classes([[0], [1]], 2)
    with pytest.raises(ValueError, match=r"duplicate labels: \[1, 2\]"):
        check_classes([1, 2, 1, 2, 3], 5)


def test_encode_labels_round_trip_and_unknown_labels():
    classes = np.array(["dog", "ant", "cat"])  # not sorted
    y = np.array(["cat", "dog", "cat", "ant"])
    codes = encode_labels(y, classes)
    assert_array_equal(classes[codes], y)
    with pytest.raises(ValueError, match=r"y contains label\(s\) \['cow', 'emu'\] that are not in"):
        encode_labels(["emu", "cat", "cow"], classes)
    with pytest.raises(ValueError, match=r"y contains label\(s\) \[3\] that are not in"):
        encode_labels([3], classes)
