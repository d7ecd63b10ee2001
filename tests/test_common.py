"""scikit-learn's estimator checks for every public estimator, in one place.

Add an estimator to ESTIMATORS; list any check an instance is expected to
fail in _expected_failed_checks, with the reason.
"""

from conftest import TINY_MODEL
from sklearn.utils.estimator_checks import parametrize_with_checks

from clip_invariance import (
    CLIPEmbedder,
    FrontDoorEnsembleClassifier,
    InvariantProjector,
    ZeroShotInvariantClassifier,
)
from clip_invariance.baselines import TipAdapterClassifier, WiSEClassifier
from clip_invariance.evaluation._methods import FirstViewsProjector

ESTIMATORS = [
    InvariantProjector(n_components=1),
    InvariantProjector(),
    InvariantProjector(n_components=1, solver="difference"),
    ZeroShotInvariantClassifier(),
    ZeroShotInvariantClassifier(projector=InvariantProjector(n_components=2)),
    WiSEClassifier(),
    WiSEClassifier(projector=InvariantProjector(n_components=2), alpha=1.0),
    TipAdapterClassifier(),
    TipAdapterClassifier(projector=InvariantProjector(n_components=2)),
    FrontDoorEnsembleClassifier(max_iter=0),
    FrontDoorEnsembleClassifier(max_iter=3, random_state=0),
    # The evaluation's wrapper that fits a projector on the originals only.
    FirstViewsProjector(InvariantProjector(n_components=1)),
    # Random weights of a tiny architecture registered by conftest: no network.
    CLIPEmbedder(TINY_MODEL, pretrained=None, device="cpu", batch_size=8, num_workers=0),
]

# CLIPEmbedder embeds images and texts; the checks feed float feature matrices,
# which it rejects as ambiguous (a 2-D array is neither a batch of images nor
# of texts), and its fit learns nothing, so it does not inspect X.
# tests/embedding/test_embedder.py covers the same properties (pickling, idempotence,
# unchanged state, dtypes, bad input) with real images.
_NOT_IMAGES = "float feature matrices are not images: transform rejects 2-D arrays as ambiguous"
_FIT_IGNORES_X = "fit only loads the backbone and ignores X; bad inputs are rejected by transform"

_EMBEDDER_FAILURES = {
    "check_fit_score_takes_y": _NOT_IMAGES,
    "check_estimators_dtypes": _NOT_IMAGES,
    "check_estimators_pickle": _NOT_IMAGES,
    "check_estimators_pickle(readonly_memmap=True)": _NOT_IMAGES,
    "check_f_contiguous_array_estimator": _NOT_IMAGES,
    "check_transformer_data_not_an_array": _NOT_IMAGES,
    "check_transformer_general": _NOT_IMAGES,
    "check_transformer_general(readonly_memmap=True)": _NOT_IMAGES,
    "check_transformer_preserve_dtypes": _NOT_IMAGES,
    "check_transformers_unfitted_stateless": _NOT_IMAGES,
    "check_dict_unchanged": _NOT_IMAGES,
    "check_fit_idempotent": _NOT_IMAGES,
    "check_fit2d_predict1d": _NOT_IMAGES,
    "check_complex_data": _FIT_IGNORES_X,
    "check_dtype_object": _FIT_IGNORES_X,
    "check_estimators_empty_data_messages": _FIT_IGNORES_X,
    "check_estimators_nan_inf": _FIT_IGNORES_X,
    "check_fit1d": _FIT_IGNORES_X,
    "check_n_features_in": "images have no feature columns, so there is no n_features_in_",
    "check_n_features_in_after_fitting": "images have no feature columns, so there is no n_features_in_",
}


def _expected_failed_checks(estimator):
    """{check name: reason} for this very instance (not its whole class)."""
    if isinstance(estimator, CLIPEmbedder):
        return _EMBEDDER_FAILURES
    if isinstance(estimator, FrontDoorEnsembleClassifier) and estimator.max_iter == 0:
        return {
            "check_non_transformer_estimators_n_iter": (
                "max_iter=0 is the documented training-free ensemble: no epoch runs, "
                "so n_iter_ is 0 (the trained instance passes this check)."
            ),
        }
    if isinstance(estimator, (WiSEClassifier, TipAdapterClassifier)) and estimator.projector is not None:
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "sample_weight weighs the head (probe or cache), not the projector, which learns from "
                "every row: the evaluation gives the augmented views weight 0 so that the projector "
                "learns from them and the head does not. Without a projector the check passes."
            ),
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
