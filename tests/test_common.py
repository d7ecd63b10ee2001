"""scikit-learn's estimator checks for every public estimator, in one place.

Add an estimator to ESTIMATORS; list any check it is expected to fail in
EXPECTED_FAILED_CHECKS with the reason.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier

ESTIMATORS = [
    InvariantProjector(n_components=1),
    InvariantProjector(),
    InvariantProjector(n_components=1, solver="difference"),
    ZeroShotInvariantClassifier(),
    ZeroShotInvariantClassifier(projector=InvariantProjector(n_components=2)),
]

# {estimator class name: {check name: reason}}
EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
