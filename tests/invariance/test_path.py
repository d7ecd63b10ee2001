"""projector_path: a grid of projectors from one statistics pass, bit-identical to fitting each."""

import numpy as np
import pytest

from clip_invariance import InvariantProjector
from clip_invariance.datasets import make_invariant_embeddings
from clip_invariance.invariance import projector_path
from clip_invariance.views import stack_views

FITTED = ["components_", "eigenvalues_", "invariance_ratio_", "explained_variance_ratio_", "n_components_",
          "lam_scale_", "intervention_source_", "n_samples_seen_", "n_features_in_"]


@pytest.fixture(scope="module")
def data():
    data = make_invariant_embeddings(n_samples=300, n_augmented=2, random_state=0)
    X, groups = stack_views(data.X, *data.X_views)
    y = np.tile(data.y, 3)
    environments = np.tile(data.environments, 3)
    return X, y, groups, environments, data


SETTINGS = [{"n_components": 4, "lam": 1.0}, {"n_components": 8, "lam": 1.0},
            {"n_components": 4, "lam": 100.0}, {"n_components": 12, "lam": 0.0, "solver": "difference"}]


@pytest.mark.parametrize("source", ["view_groups", "y+environments", "y", "fixed"])
def test_path_equals_one_fit_per_setting(data, source):
    X, y, groups, environments, generated = data
    kwargs, template = {}, InvariantProjector()
    if source == "view_groups":
        kwargs = {"view_groups": groups}
    elif source == "y+environments":
        kwargs = {"y": y, "environments": environments}
    elif source == "y":
        kwargs = {"y": y}
    else:
        template = InvariantProjector(intervention_embeddings=generated.text_interventions,
                                      intervention_view_groups=generated.text_view_groups)
    path = projector_path(template, X, params=SETTINGS, **kwargs)
    for setting, fitted in zip(SETTINGS, path):
        alone = InvariantProjector(**{**template.get_params(), **setting}).fit(X, **kwargs)
        for name in FITTED:
            assert np.array_equal(getattr(fitted, name), getattr(alone, name)), (setting, name)
        assert {k: fitted.get_params()[k] for k in ("n_components", "lam", "solver")} == \
            {k: alone.get_params()[k] for k in ("n_components", "lam", "solver")}
        assert np.array_equal(fitted.transform(X[:5]), alone.transform(X[:5]))


def test_path_keeps_the_template_unfitted(data):
    X, _, groups, _, _ = data
    template = InvariantProjector(3)
    path = projector_path(template, X, params=[{"lam": 5.0}], view_groups=groups)
    assert not hasattr(template, "components_")
    assert path[0].n_components_ == 3 and path[0].lam == 5.0


def test_path_refuses_settings_that_change_the_statistics(data):
    X, _, groups, _, _ = data
    with pytest.raises(ValueError, match=r"a setting changes \['intervention_embeddings'\]"):
        projector_path(InvariantProjector(), X, params=[{"intervention_embeddings": X[:3]}],
                       view_groups=groups)


def test_path_validates_each_setting_as_fit_does(data):
    X, _, groups, _, _ = data
    with pytest.raises(ValueError, match="n_components=999 must be at most the number of features"):
        projector_path(InvariantProjector(), X, params=[{"n_components": 4}, {"n_components": 999}],
                       view_groups=groups)
    with pytest.raises(ValueError, match="'lam' parameter of InvariantProjector must be"):
        projector_path(InvariantProjector(), X, params=[{"lam": -1.0}], view_groups=groups)
    with pytest.raises(TypeError, match="projector_path needs an InvariantProjector, got PCA"):
        from sklearn.decomposition import PCA

        projector_path(PCA(), X, params=[{}])


def test_path_reduces_a_dask_array_once(data):
    da = pytest.importorskip("dask.array")
    X, _, groups, _, _ = data
    # Complete view groups per chunk: the rows of each content in one chunk.
    order = np.argsort(groups, kind="stable")
    X, groups = X[order], groups[order]
    X, groups = da.from_array(X, chunks=(150, -1)), da.from_array(groups, chunks=150)
    path = projector_path(InvariantProjector(), X, params=SETTINGS[:2], view_groups=groups)
    alone = InvariantProjector(**SETTINGS[1]).fit(X, view_groups=groups)
    assert np.array_equal(path[1].components_, alone.components_)
