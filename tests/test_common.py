"""scikit-learn's estimator checks for every public estimator, in one place.

Add an estimator to ESTIMATORS; list any check it is expected to fail in
EXPECTED_FAILED_CHECKS with the reason.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from clip_invariance import FrontDoorEnsembleClassifier, InvariantProjector

ESTIMATORS = [
    InvariantProjector(n_components=1),
    InvariantProjector(),
    InvariantProjector(n_components=1, solver="difference"),
    FrontDoorEnsembleClassifier(max_iter=0),
    FrontDoorEnsembleClassifier(max_iter=3, random_state=0),
]

# {estimator class name: {check name: reason}}
EXPECTED_FAILED_CHECKS = {
    "FrontDoorEnsembleClassifier": {
        "check_non_transformer_estimators_n_iter": (
            "max_iter=0 is the documented training-free ensemble: no epoch runs, "
            "so n_iter_ is 0 (the trained instance passes this check)."
        ),
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
