"""Cosine scoring helpers shared by the classifiers."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from clip_invariance.similarity import (
    average_prompt_ensemble,
    class_prototypes,
    cosine_similarity_matrix,
    l2_normalize,
)


def test_l2_normalize_keeps_dtype_and_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(X)
    assert out.dtype == np.float32
    assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_cosine_is_scale_free():
    rng = np.random.RandomState(0)
    X, P = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    S = cosine_similarity_matrix(X, P)
    assert_allclose(S, cosine_similarity_matrix(7 * X, 0.1 * P))
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
