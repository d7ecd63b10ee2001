"""evaluate_store: protocols, methods and selection rules on stores whose answer is known."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.utils import Bunch

import clip_invariance.evaluation as evaluation
import clip_invariance.evaluation._methods as methods
from clip_invariance import InvariantProjector, ZeroShotInvariantClassifier
from clip_invariance.datasets import load_embeddings, make_invariant_embeddings, save_embeddings
from clip_invariance.evaluation import (
    COLUMNS,
    DEFAULT_SELECTION,
    default_grids,
    evaluate_ablation,
    evaluate_store,
    holdout_split,
    make_method,
)
from clip_invariance.evaluation._methods import FirstViewsProjector, mentions_environment

pd = pytest.importorskip("pandas")

ENVIRONMENTS = ["photo", "art_painting", "cartoon", "sketch"]  # the last one is shifted
STYLES = ["photo", "painting", "cartoon", "sketch", "art", "drawing", "render", "origami"]
GRIDS = {"n_components": [4, 8], "lam": [10.0, 100.0], "C": [0.316, 3.16], "temperature": [10.0]}
# One candidate per baseline parameter, for the tests that run every method: they test the plumbing.
ONE_BASELINE = {"wise_alpha": [0.5], "tip_alpha": [1.0], "tip_beta": [5.5]}
FAST_FRONT_DOOR = {"max_iter": 3}


def write_store(path, *, n_samples=800, seed=0, views=True, prompts=True, texts=True, scramble=None):
    """The causal generator's embeddings saved as a store; text styles invented per text row."""
    data = make_invariant_embeddings(n_samples=n_samples, n_features=32, n_text_styles=len(STYLES),
                                     normalize=True, random_state=seed)
    y = data.y.copy()
    environments = np.array(ENVIRONMENTS)[data.environments]
    if scramble is not None:  # the target's labels shuffled: what a rule that peeks would see
        rows = np.flatnonzero(environments == scramble)
        y[rows] = np.random.default_rng(1).permutation(y[rows])
    fields = {"views": data.X_views.transpose(1, 0, 2) if views else None,
              "prompt_embeddings": data.prompt_embeddings if prompts else None}
    if texts:
        fields.update(text_interventions=data.text_interventions, text_view_groups=data.text_view_groups,
                      text_intervention_styles=np.tile(STYLES, len(data.prompt_embeddings)))
    save_embeddings(path, X=data.X, y=y, environments=environments, environment_names=ENVIRONMENTS,
                    class_names=[f"c{c}" for c in range(10)], **fields)
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "synthetic")


def accuracy(results, method, target=None):
    rows = results[results["method"] == method]
    if target is not None:
        rows = rows[rows["target"] == target]
    return rows["accuracy"].mean()


def test_invariant_methods_win_on_the_shifted_environment_with_the_default_rule(store):
    results = evaluate_store(store, methods=["zero-shot", "zero-shot-icm", "probe", "probe-icm"],
                             grids=GRIDS)
    assert results["selection"].eq(DEFAULT_SELECTION).all()
    assert list(results.columns) == COLUMNS
    assert len(results) == 4 * 4  # methods x targets, one seed, one split
    # The last environment has a new style and a permuted spurious correlation.
    assert accuracy(results, "probe-icm", "sketch") > accuracy(results, "probe", "sketch") + 0.10
    assert accuracy(results, "zero-shot-icm") > accuracy(results, "zero-shot") + 0.30
    icm = results[results["method"] == "probe-icm"]
    assert icm["n_components"].isin([4, 8]).all() and icm["C"].isin([0.316, 3.16]).all()
    assert results.loc[results["method"] == "zero-shot", ["n_components", "lam", "C"]].isna().all().all()
    assert results["validation_accuracy"].between(0, 1).all()
    assert (results["n_train"] == 480).all() and (results["n_test"] == 200).all()  # 80% of 3 x 200


@pytest.mark.parametrize("rule", ["source-val", "lodo-cv", "views-val"])
def test_rules_that_do_not_peek_choose_the_same_with_scrambled_target_labels(rule, store, tmp_path):
    scrambled = write_store(tmp_path / "scrambled", scramble="sketch")
    kwargs = {"methods": ["zero-shot-icm", "probe-icm"], "interventions": "image", "selection": rule,
              "grids": GRIDS}
    chosen = ["n_components", "lam", "C", "validation_accuracy"]
    clean = evaluate_store(store, **kwargs).query("target == 'sketch'")
    shuffled = evaluate_store(scrambled, **kwargs).query("target == 'sketch'")
    pd.testing.assert_frame_equal(clean[chosen].reset_index(drop=True),
                                  shuffled[chosen].reset_index(drop=True))
    assert (shuffled["accuracy"].to_numpy() < clean["accuracy"].to_numpy() - 0.3).all()


def test_the_oracle_peeks_and_says_so(store, tmp_path):
    scrambled = write_store(tmp_path / "scrambled", scramble="sketch")
    kwargs = {"methods": ["probe-icm"], "interventions": "image", "selection": "oracle", "grids": GRIDS}
    clean = evaluate_store(store, **kwargs).query("target == 'sketch'")
    shuffled = evaluate_store(scrambled, **kwargs).query("target == 'sketch'")
    assert clean["selection"].eq("oracle").all()
    # It validates on the target: the scrambled labels show in its validation accuracy.
    assert shuffled["validation_accuracy"].iloc[0] < clean["validation_accuracy"].iloc[0] - 0.3


class SpyProjector(InvariantProjector):
    """Records what every fit saw."""

    fits = []

    def fit(self, X, y=None, *, view_groups=None, environments=None):
        SpyProjector.fits.append({"X": np.array(X), "view_groups": view_groups,
                                  "intervention_embeddings": self.intervention_embeddings,
                                  "intervention_view_groups": self.intervention_view_groups})
        return super().fit(X, y, view_groups=view_groups, environments=environments)


class SpyProbe(LogisticRegression):
    fits = []

    def fit(self, X, y, sample_weight=None):
        SpyProbe.fits.append({"X": np.array(X), "sample_weight": sample_weight})
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.fixture
def spies(monkeypatch):
    SpyProjector.fits, SpyProbe.fits = [], []
    monkeypatch.setattr(methods, "InvariantProjector", SpyProjector)
    monkeypatch.setattr(methods, "make_probe", lambda C=0.316: SpyProbe(C=C, max_iter=2000))
    return SpyProjector.fits, SpyProbe.fits


def row_set(X):
    return {row.tobytes() for row in np.asarray(X, dtype=np.float32)}


def test_text_interventions_naming_the_target_are_dropped(store, spies):
    projector_fits, _ = spies
    data = load_embeddings(store)
    grids = {"n_components": [8], "lam": [10.0]}
    results = evaluate_store(store, methods=["zero-shot-icm"], interventions="text", grids=grids,
                             selection="source-val")
    assert results["interventions"].eq("text").all()
    assert len(projector_fits) == 2 * len(ENVIRONMENTS)  # per target: the search's one split, the refit
    for target, fit in zip(np.repeat(ENVIRONMENTS, 2), projector_fits):
        # Look-alike styles go too: a "drawing" is a sketch (evaluation._methods.STYLE_SYNONYMS).
        named = {"art_painting": {"painting", "art"}, "sketch": {"sketch", "drawing"}}.get(target, {target})
        keep = ~np.isin(data.text_intervention_styles, list(named))
        assert row_set(fit["intervention_embeddings"]) == row_set(data.text_interventions[keep])
        assert len(fit["intervention_embeddings"]) == keep.sum() == 10 * (len(STYLES) - len(named))
        assert fit["view_groups"] is None and len(fit["X"]) == 480  # text: fitted on the originals

    projector_fits.clear()
    leaky = evaluate_store(store, methods=["zero-shot-icm"], interventions="text", grids=grids,
                           selection="source-val", include_target_name=True)
    assert leaky["interventions"].eq("text+target-name").all()
    assert all(len(fit["intervention_embeddings"]) == len(data.text_interventions) for fit in projector_fits)


def test_text_interventions_without_styles_are_labelled_unfiltered(store):
    data = load_embeddings(store)
    data.update(text_intervention_styles=None, text_intervention_texts=None)
    with pytest.warns(UserWarning, match=r"neither texts nor styles.*labelled \+unfiltered"):
        results = evaluate_store(data, methods=["zero-shot-icm"], interventions=["text", "image"],
                                 grids={"n_components": [8], "lam": [10.0]}, selection="source-val")
    assert set(results["interventions"]) == {"text+unfiltered", "image"}


def test_probes_learn_from_the_originals_and_the_projector_from_the_views(store, spies):
    projector_fits, probe_fits = spies
    data = load_embeddings(store)
    originals, views = row_set(data.X), row_set(data.views[:, 0])
    grids = {"n_components": [8], "lam": [10.0], "C": [0.316]}
    results = evaluate_store(store, methods=["probe", "probe-icm"], interventions="image", grids=grids,
                             selection="source-val")
    assert not results["train_views"].any()
    final_fits = probe_fits[1::2]  # each search (one split) fits once, then the chosen model is refitted
    plain, piped = final_fits[0::2], final_fits[1::2]
    for fit in plain:
        assert row_set(fit["X"]) <= originals and len(fit["X"]) == 480
    for fit, projector in zip(piped, projector_fits[1::2]):
        weights = fit["sample_weight"]
        assert len(weights) == 960 and set(np.unique(weights)) == {0.0, 1.0}
        assert row_set(projector["X"][weights > 0]) <= originals
        assert row_set(projector["X"][weights == 0]) <= views
        assert projector["view_groups"] is not None

    # The fair controls: the same probes trained on the originals and the views alike.
    probe_fits.clear()
    projector_fits.clear()
    with_views = evaluate_store(store, methods=["probe-views", "probe-icm-views"], interventions="image",
                                grids=grids, selection="source-val")
    assert with_views["train_views"].all()
    assert len(probe_fits) == 4 * len(ENVIRONMENTS)  # per method and target: the search, the refit
    for fit in probe_fits:
        assert len(fit["X"]) == 960 and fit["sample_weight"] is None
    assert all(projector["view_groups"] is not None and len(projector["X"]) == 960
               for projector in projector_fits)


def test_prototype_is_the_cosine_nearest_class_mean_of_the_training_originals(store):
    data = load_embeddings(store)
    results = evaluate_store(store, methods=["prototype"], seeds=[0], selection="source-val")
    target = "sketch"
    row = results.query("target == @target").iloc[0]
    assert not row["train_views"] and np.isnan(row["n_components"])
    # By hand: the same 80% of every source (holdout_split with the seed), class means, cosine argmax.
    sources = data.environments != target
    held = holdout_split(data.environments, np.arange(len(data.y)), random_state=0)
    train = sources & ~held
    unit = data.X / np.linalg.norm(data.X, axis=1, keepdims=True)
    means = np.stack([unit[train & (data.y == c)].mean(0) for c in range(10)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    test = data.environments == target
    expected = np.mean((unit[test] @ means.T).argmax(1) == data.y[test])
    assert row["accuracy"] == pytest.approx(expected)
    assert row["n_train"] == train.sum()


def test_view_methods_need_views(store):
    bare = load_embeddings(store)
    bare.update(views=None)
    with pytest.raises(ValueError, match=r"\['probe-views'\] train on augmented views; the store has none"):
        evaluate_store(bare, methods=["probe-views"], selection="lodo-cv")
    skipped = r"no augmented views: skipping \['probe-views', 'probe-icm-views'\]"
    with pytest.warns(UserWarning, match=skipped):
        # Every method by default; the front door untrained and one split keep it quick.
        results = evaluate_store(bare, grids={"n_components": [8], "lam": [10.0], "C": [0.316],
                                              "temperature": [10.0], **ONE_BASELINE},
                                 selection="source-val", interventions="text",
                                 front_door_params={"max_iter": 0})
    assert not set(results["method"]) & {"probe-views", "probe-icm-views"}


def test_open_class_learns_from_base_classes_and_predicts_new_ones(store, spies):
    projector_fits, _ = spies
    data = load_embeddings(store)
    new = data.y >= 5  # 10 classes: base = 0..4
    new_rows = row_set(data.X[new]) | row_set(data.views[new, 0])
    results = evaluate_store(store, protocol="open-class", methods=["zero-shot", "zero-shot-icm", "probe"],
                             interventions="both", grids={"n_components": [8], "lam": [10.0], "C": [0.316]})
    splits = results.groupby("method")["split"].agg(lambda s: sorted(set(s))).to_dict()
    assert splits == {"probe": ["base"], "zero-shot": ["base", "harmonic", "new"],
                      "zero-shot-icm": ["base", "harmonic", "new"]}
    icm = results.query("method == 'zero-shot-icm'").set_index(["target", "split"])["accuracy"]
    zero_shot = results.query("method == 'zero-shot'").set_index(["target", "split"])["accuracy"]
    # Classes the projector never saw, predicted from their prompts alone among all ten, still gain.
    assert icm.xs("new", level="split").mean() > zero_shot.xs("new", level="split").mean() + 0.15
    for scores in (icm, zero_shot):  # the harmonic mean of base and new, per target
        base, new_ = scores.xs("base", level="split"), scores.xs("new", level="split")
        np.testing.assert_allclose(scores.xs("harmonic", level="split"), 2 * base * new_ / (base + new_))
    assert set(results.query("split == 'new'")["n_test"]) == {int((new & (data.environments == e)).sum())
                                                              for e in ENVIRONMENTS}
    assert projector_fits
    for fit in projector_fits:
        assert not row_set(fit["X"]) & new_rows
        assert set(np.unique(fit["intervention_view_groups"])) <= set(range(5))


def test_front_door_rows_on_both_protocols(store):
    results = evaluate_store(store, protocol="all", methods=["front-door", "front-door-icm"],
                             interventions=["image", "text"], selection="views-val", grids=GRIDS,
                             front_door_params=FAST_FRONT_DOOR, seeds=[0, 1])
    assert set(results["interventions"]) == {"none", "image", "text"}
    assert set(results["split"]) == {"all", "base", "new", "harmonic", "total"}
    assert results["temperature"].eq(10.0).all() and results["accuracy"].between(0, 1).all()
    icm = results.query("method == 'front-door-icm' and protocol == 'dg'")
    assert icm["n_components"].isin([4, 8]).all()
    # seeds x targets x variants x (dg + open-class + base-to-new splits)
    assert len(results) == 2 * 4 * 3 * (1 + 3 + 4)


def test_a_store_without_prompts_skips_the_prompt_methods(tmp_path):
    store = write_store(tmp_path / "no-prompts", n_samples=400, prompts=False, texts=False)
    with pytest.warns(UserWarning) as caught:
        results = evaluate_store(store, grids=GRIDS)
    assert [str(w.message) for w in caught] == [
        "The store has no prompt embeddings: skipping ['zero-shot', 'zero-shot-icm', 'front-door', "
        "'front-door-icm', 'wise', 'wise-icm', 'tip-adapter', 'tip-adapter-icm'].",
        "The store has no text interventions: the invariant methods use image interventions only.",
    ]
    assert set(results["method"]) == {"prototype", "probe", "probe-views", "probe-icm", "probe-icm-views"}
    assert set(results["interventions"]) == {"none", "image"}  # no text interventions either
    assert "no prompt embeddings" in results.attrs["config"]["skipped"][0]
    with pytest.raises(ValueError, match="need class prompts"):
        evaluate_store(store, methods=["zero-shot"])


@pytest.fixture
def no_fitting(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was fitted before the arguments were checked")

    monkeypatch.setattr(evaluation, "select_and_fit", refuse)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": ["probe", "nope"]}, "Unknown method 'nope'"),
        ({"methods": []}, "methods is empty"),
        ({"protocol": "domainbed"}, "Unknown protocol 'domainbed'"),
        ({"selection": "test-set"}, "Unknown selection 'test-set'"),
        ({"seeds": []}, "seeds is empty"),
        ({"seeds": [0, -1]}, "non-negative integers"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"interventions": "images"}, "Unknown interventions 'images'"),
        ({"templates": "ensemble"}, "needs prompt_ensemble_embeddings"),
        ({"grids": {"K": [4]}}, r"Unknown hyper-parameter\(s\) \['K'\]"),
        ({"grids": {"n_components": [64]}}, "between 1 and the embedding size, 32"),
        ({"grids": {"C": []}}, r"grids\['C'\] is empty"),
        ({"grids": {"lam": [-1]}}, "lam must be finite and >= 0"),
        ({"grids": {"wise_alpha": [0.5, 1.5]}},
         r"grids\['wise_alpha'\] holds 1.5: the mixing weight must be in \[0, 1\]."),
        ({"grids": {"tip_beta": [np.inf]}},
         r"grids\['tip_beta'\] holds inf: tip_beta must be finite and >= 0."),
        ({"holdout": 1.0}, r"holdout must be a number in \(0, 1\)"),
        ({"include_target_name": "yes"}, "include_target_name must be True or False"),
        ({"front_door_params": {"n_views": 3}}, r"cannot set \['n_views'\]"),
        ({"front_door_params": {"speed": 3}}, r"cannot set \['speed'\]"),
    ],
)
def test_bad_arguments_are_refused_before_any_fit(kwargs, message, store, no_fitting):
    with pytest.raises(ValueError, match=message):
        evaluate_store(store, **kwargs)


def test_what_the_store_cannot_serve_is_refused_before_any_fit(tmp_path, no_fitting):
    bare = write_store(tmp_path / "bare", n_samples=400, views=False, texts=False)
    with pytest.raises(ValueError, match="interventions='image' needs augmented views"):
        evaluate_store(bare, methods=["probe-icm"], interventions="image", selection="lodo-cv")
    with pytest.raises(ValueError, match="selection='views-val' validates on augmented views"):
        evaluate_store(bare, methods=["probe"], selection="views-val")
    with pytest.raises(ValueError, match="need augmented views or text interventions"):
        evaluate_store(bare, methods=["probe-icm"], selection="lodo-cv")
    two = tmp_path / "two"
    data = load_embeddings(bare)
    keep = np.isin(data.environments, ["photo", "sketch"])
    save_embeddings(two, X=data.X[keep], y=data.y[keep], environments=data.environments[keep])
    with pytest.raises(ValueError, match="lodo-cv' needs at least three environments"):
        evaluate_store(two, selection="lodo-cv")


def test_default_interventions_fall_back_with_a_warning(tmp_path):
    text_only = write_store(tmp_path / "text-only", n_samples=400, views=False)
    with pytest.warns(UserWarning) as caught:
        results = evaluate_store(text_only, methods=["probe-icm"], grids=GRIDS)
    assert [str(w.message) for w in caught] == [
        "The store has no augmented views: the invariant methods use text interventions only.",
    ]
    assert results["interventions"].eq("text").all() and results["selection"].eq("lodo-cv").all()
    assert results.attrs["config"]["arguments"]["selection"] == "lodo-cv"  # a rerun does the same


@pytest.mark.parametrize("views, fallback", [(True, "views-val"), (False, "source-val")])
def test_default_selection_falls_back_with_two_environments(tmp_path, views, fallback):
    data = load_embeddings(write_store(tmp_path / "four", n_samples=400, views=views))
    keep = np.isin(data.environments, ["photo", "sketch"])
    two = tmp_path / "two"
    save_embeddings(two, X=data.X[keep], y=data.y[keep], environments=data.environments[keep],
                    views=None if data.views is None else data.views[keep])
    with pytest.warns(UserWarning, match="The store has two environments, one source per target, and "
                      f"lodo-cv needs two: hyper-parameters chosen by selection='{fallback}' instead"):
        results = evaluate_store(two, methods=["probe"], grids=GRIDS)
    assert results["selection"].eq(fallback).all()


def test_progress_bar_reaches_its_end_and_is_silent_when_off(store, capsys):
    grids = {"C": [0.316]}
    evaluate_store(store, methods=["probe"], seeds=[0, 1], grids=grids, progress=True)
    assert "8/8" in capsys.readouterr().err
    evaluate_store(store, methods=["probe"], grids=grids)
    assert capsys.readouterr().err == ""


def test_ablation_sweeps_one_parameter_at_a_time(store):
    ablation = evaluate_ablation(store, method="probe-icm", n_components=[4, 8], lam=[1.0, 100.0],
                                 fixed_n_components=8, fixed_lam=10.0, interventions="image",
                                 grids={"C": [0.316]})
    k_sweep = ablation.query("parameter == 'n_components'")
    assert sorted(set(k_sweep["n_components"])) == [4, 8] and set(k_sweep["lam"]) == {10.0}
    lam_sweep = ablation.query("parameter == 'lam'")
    assert sorted(set(lam_sweep["lam"])) == [1.0, 100.0] and set(lam_sweep["n_components"]) == {8}
    assert set(ablation.query("parameter == 'reference'")["method"]) == {"probe"}
    with pytest.raises(ValueError, match="between 1 and the embedding size"):
        evaluate_ablation(store, n_components=[1000])


def test_method_catalogue():
    estimator, grid, paths = make_method("front-door-icm", grids=default_grids(32), prompts=np.eye(2, 32),
                                         n_views=2, text_only=True)
    assert isinstance(estimator.projector, FirstViewsProjector)
    assert paths["lam"] == "projector__projector__lam" and grid["temperature"] == [10.0]
    assert grid["projector__projector__n_components"] == [4, 8, 16] and grid["projector__projector__lam"] == [
        10.0, 100.0]
    assert estimator.get_params()["projector__projector__lam"] == 10.0
    # The CPU-sized grids cut by the selection table's evidence (default_grids' docstring).
    assert default_grids(32)["n_components"] == [4, 8, 16] and default_grids(4)["n_components"] == [1, 2]
    assert default_grids(32)["C"] == [0.1, 1.0, 3.16] and default_grids(32)["lam"] == [10.0, 100.0]
    with pytest.raises(ValueError, match="Unknown method 'clip'"):
        make_method("clip", grids={})
    assert mentions_environment(["Art", "a PAINTING of a dog.", "an artist"], "art_painting").tolist() == [
        True, True, False]


def test_pacs_mini_end_to_end(tiny_model, pacs_mini, tmp_path):
    """Plumbing only: random weights give chance-level accuracies."""
    from clip_invariance.embedding import embed_image_folder

    store = tmp_path / "pacs-store"
    embed_image_folder(pacs_mini, store, model_name=tiny_model, pretrained=None, device="cpu", n_augmented=1,
                       progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the store has everything: nothing is skipped
        results = evaluate_store(store, protocol="all", grids={"n_components": [8], "lam": [10.0],
                                                               "C": [0.316], "temperature": [10.0],
                                                               **ONE_BASELINE},
                                 front_door_params=FAST_FRONT_DOOR)
    assert set(results["target"]) == {"art_painting", "cartoon", "photo", "sketch"}
    assert set(results["method"]) == set(methods.DEFAULT_METHODS)  # cdc-prompts, coop: when named
    assert results["accuracy"].between(0, 1).all()
    assert set(results.query("protocol == 'open-class'")["split"]) == {"base", "new", "harmonic"}
    assert set(results.query("protocol == 'base-to-new'")["split"]) == {"base", "new", "total", "harmonic"}
    assert set(results["templates"].dropna()) == {"single", "ensemble"}  # zero-shot / front door


def _image_store(data, rows=slice(None)):
    """An in-memory store of some rows of a generated dataset: images, views and class prompts only."""
    n_classes = len(data.prompt_embeddings)
    return Bunch(X=data.X[rows], y=data.y[rows], environments=np.array(ENVIRONMENTS)[data.environments][rows],
                 environment_names=ENVIRONMENTS, class_names=[f"c{c}" for c in range(n_classes)],
                 views=data.X_views.transpose(1, 0, 2)[rows], prompt_embeddings=data.prompt_embeddings,
                 prompt_ensemble_embeddings=None, text_interventions=None, text_view_groups=None,
                 text_intervention_texts=None, text_intervention_styles=None, paths=None, settings={})


def _odd_store(n_classes=5):
    return _image_store(make_invariant_embeddings(n_samples=500, n_classes=n_classes, random_state=4))


def test_open_class_scores_as_clip_icm_and_base_to_new_as_coop():
    store = _odd_store()  # 5 classes: CLIP-ICM's base is 0-1 (floor), CoOp's 0-2 (ceil)
    results = evaluate_store(store, protocol="all", methods=["zero-shot", "zero-shot-icm"],
                             interventions="image", grids={"n_components": [4], "lam": [10.0]})
    test = (store.environments == "sketch")
    counts = {name: int(np.isin(store.y[test], classes).sum())
              for name, classes in {"01": [0, 1], "234": [2, 3, 4], "012": [0, 1, 2], "34": [3, 4]}.items()}
    sketch = results.query("target == 'sketch' and method == 'zero-shot'").set_index(["protocol", "split"])
    assert sketch.loc[("open-class", "base"), "n_test"] == counts["01"]
    assert sketch.loc[("open-class", "new"), "n_test"] == counts["234"]
    assert sketch.loc[("open-class", "harmonic"), "n_test"] == counts["01"] + counts["234"]
    assert sketch.loc[("base-to-new", "base"), "n_test"] == counts["012"]
    assert sketch.loc[("base-to-new", "new"), "n_test"] == counts["34"]
    # Plain zero-shot learns nothing: open-class scores every image among all five prompts.
    zero_shot = ZeroShotInvariantClassifier(store.prompt_embeddings).fit(store.X[:10])
    new_images = test & np.isin(store.y, [2, 3, 4])
    assert sketch.loc[("open-class", "new"), "accuracy"] == pytest.approx(
        zero_shot.score(store.X[new_images], store.y[new_images]))
    # Base-to-new scores the new images among the new classes only: never harder than among all.
    among_new = zero_shot.with_prompts(store.prompt_embeddings[[3, 4]], classes=[3, 4])
    only_new = test & np.isin(store.y, [3, 4])
    assert sketch.loc[("base-to-new", "new"), "accuracy"] == pytest.approx(
        among_new.score(store.X[only_new], store.y[only_new]))


def test_a_source_split_does_not_depend_on_the_target():
    data = make_invariant_embeddings(n_samples=800, random_state=2)
    environments = np.array(ENVIRONMENTS)[data.environments]
    full = holdout_split(environments, np.arange(len(environments)), random_state=3)
    # A quarter of the target's rows gone: every source keeps exactly the same held-out rows.
    target = np.flatnonzero(environments == "sketch")
    kept = np.setdiff1d(np.arange(len(environments)), target[: len(target) // 4])
    smaller = holdout_split(environments[kept], kept, random_state=3)
    sources = environments[kept] != "sketch"
    np.testing.assert_array_equal(smaller[sources], full[kept][sources])
    assert not np.array_equal(holdout_split(environments, np.arange(len(environments)), random_state=4),
                              full)  # another seed, another split


def test_evaluation_of_the_sources_does_not_depend_on_the_targets_size():
    data = make_invariant_embeddings(n_samples=800, random_state=2)
    environments = np.array(ENVIRONMENTS)[data.environments]
    target = np.flatnonzero(environments == "sketch")
    kept = np.setdiff1d(np.arange(len(environments)), target[: len(target) // 4])
    kwargs = {"methods": ["probe", "probe-icm"], "interventions": "image", "selection": "source-val",
              "grids": {"n_components": [4, 8], "lam": [1.0, 100.0], "C": [0.1, 1.0]}, "seeds": [0, 1]}
    columns = ["method", "seed", "validation_accuracy", "n_components", "lam", "C", "n_train"]
    full = evaluate_store(_image_store(data), **kwargs).query("target == 'sketch'")
    smaller = evaluate_store(_image_store(data, kept), **kwargs).query("target == 'sketch'")
    pd.testing.assert_frame_equal(full[columns].reset_index(drop=True),
                                  smaller[columns].reset_index(drop=True))


def test_selection_all_reports_the_honest_rules_side_by_side(store):
    import clip_invariance.evaluation._evaluate as evaluate_module

    kwargs = {"methods": ["probe", "probe-icm"], "interventions": "image", "seeds": [0],
              "grids": {"n_components": [4, 8], "lam": [10.0], "C": [0.316]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = evaluate_store(store, selection="all", **kwargs)
    assert list(dict.fromkeys(results["selection"])) == ["source-val", "lodo-cv", "views-val"]  # no oracle
    for rule in ("source-val", "views-val"):  # each rule's rows are what that rule alone gives
        alone = evaluate_store(store, selection=rule, **kwargs)
        pd.testing.assert_frame_equal(results.query("selection == @rule").reset_index(drop=True),
                                      alone.reset_index(drop=True))
    means = results.groupby(["method", "selection"])["accuracy"].mean().unstack()
    gap = (means.max(axis=1) - means.min(axis=1)).max()
    disagree = [w for w in caught if "selection rules disagree" in str(w.message)]
    assert bool(disagree) == (gap > evaluate_module.RULES_DISAGREE)
    # With no margin at all, any difference is reported, naming the method and every rule's mean.
    with pytest.warns(UserWarning, match=r"disagree by \d+\.\d points on probe.*source-val \d+\.\d, "
                                         r"lodo-cv \d+\.\d, views-val \d+\.\d"):
        evaluate_module._warn_if_rules_disagree(results.assign(
            accuracy=results["accuracy"] + np.where(results["selection"] == "lodo-cv", 0.2, 0.0)))



BASELINES = ["wise", "wise-icm", "tip-adapter", "tip-adapter-icm"]
BASELINE_GRIDS = {"n_components": [4], "lam": [10.0], "C": [0.316], "wise_alpha": [0.0, 1.0],
                  "tip_alpha": [0.3, 3.0], "tip_beta": [1.0]}


def test_baselines_run_in_every_protocol_with_their_chosen_parameters():
    store = _odd_store()  # 5 classes, views, no texts
    results = evaluate_store(store, protocol="all", methods=BASELINES, interventions="image",
                             grids=BASELINE_GRIDS, selection="views-val")
    splits = results.groupby(["method", "protocol"])["split"].agg(lambda s: sorted(set(s))).to_dict()
    for method in BASELINES:  # prompt heads: the new classes are reached through with_prompts
        assert splits[(method, "dg")] == ["all"]
        assert splits[(method, "open-class")] == ["base", "harmonic", "new"]
        assert splits[(method, "base-to-new")] == ["base", "harmonic", "new", "total"]
    assert results["accuracy"].between(0, 1).all() and results["validation_accuracy"].between(0, 1).all()
    tuned = {"wise": {"wise_alpha", "C"}, "tip-adapter": {"tip_alpha", "tip_beta"}}
    for method, rows in results.groupby("method"):
        own = tuned[method.replace("-icm", "")]
        own = own | {"n_components", "lam"} if method.endswith("-icm") else own
        for name in evaluation.HYPER_PARAMETERS:
            if name in own:  # chosen from its grid, in every row
                assert rows[name].isin(BASELINE_GRIDS[name]).all(), (method, name)
            else:
                assert rows[name].isna().all(), (method, name)
    assert set(results["interventions"]) == {"none", "image"}
    assert set(results["templates"]) == {"single"}


def test_baselines_at_alpha_zero_are_zero_shot_in_every_protocol_and_split():
    store = _odd_store()
    grids = {"wise_alpha": [0.0], "tip_alpha": [0.0], "C": [0.316]}
    results = evaluate_store(store, protocol="all", methods=["zero-shot", "wise", "tip-adapter"], grids=grids,
                             selection="views-val")
    by_method = results.set_index(["protocol", "target", "split", "method"])["accuracy"].unstack("method")
    np.testing.assert_array_equal(by_method["wise"], by_method["zero-shot"])
    np.testing.assert_array_equal(by_method["tip-adapter"], by_method["zero-shot"])


def test_tip_adapter_row_equals_the_cache_fitted_by_hand_and_adds_nothing_to_new_classes():
    from clip_invariance.baselines import TipAdapterClassifier

    store = _odd_store()
    results = evaluate_store(store, protocol="all", methods=["tip-adapter"], selection="source-val",
                             grids={"tip_alpha": [3.0], "tip_beta": [1.0]})
    target = "sketch"
    rows = results.query("target == @target").set_index(["protocol", "split"])
    # dg by hand: the cache holds the sources' 80% originals (holdout_split with the seed).
    held = holdout_split(store.environments, np.arange(len(store.y)), random_state=0)
    train = (store.environments != target) & ~held
    test = store.environments == target
    tip = TipAdapterClassifier(store.prompt_embeddings, classes=np.arange(5), alpha=3.0, beta=1.0)
    tip.fit(store.X[train], store.y[train])
    assert rows.loc[("dg", "all"), "accuracy"] == pytest.approx(tip.score(store.X[test], store.y[test]))
    assert rows.loc[("dg", "all"), "n_train"] == train.sum()
    # base-to-new: the cache holds base images only, so the new classes (3, 4) are scored by zero-shot.
    only_new = test & np.isin(store.y, [3, 4])
    zero_shot = ZeroShotInvariantClassifier(store.prompt_embeddings[[3, 4]], classes=[3, 4]).fit(store.X[:5])
    assert rows.loc[("base-to-new", "new"), "accuracy"] == pytest.approx(
        zero_shot.score(store.X[only_new], store.y[only_new]))


def test_invariant_baselines_project_with_the_views_and_learn_their_heads_from_the_originals(
        store, spies, monkeypatch):
    from clip_invariance.baselines import TipAdapterClassifier

    class SpyTip(TipAdapterClassifier):
        fits = []

        def fit(self, X, y, **params):
            super().fit(X, y, **params)
            SpyTip.fits.append((len(X), len(self.cache_keys_)))
            return self

    monkeypatch.setattr(methods, "TipAdapterClassifier", SpyTip)
    projector_fits, _ = spies
    data = load_embeddings(store)
    views = row_set(data.views[:, 0])
    results = evaluate_store(store, methods=["wise-icm", "tip-adapter-icm"], interventions="image",
                             grids={**BASELINE_GRIDS, "n_components": [8]}, selection="source-val")
    assert projector_fits and all(fit["view_groups"] is not None and row_set(fit["X"]) & views
                                  for fit in projector_fits)
    assert not results["train_views"].any()
    assert (results["n_train"] == 480).all()  # the originals of the sources' 80% parts
    # Every Tip-Adapter fit sees the originals and their views, and caches the originals only.
    assert SpyTip.fits and all(rows == 2 * cached for rows, cached in SpyTip.fits)
    assert (960, 480) in SpyTip.fits  # the final fit on the sources' 80% parts
