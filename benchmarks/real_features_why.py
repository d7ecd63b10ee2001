"""Why the invariant probe does not beat ``probe-views`` on real features (issue 18): diagnostics.

Reads the store cached by ``benchmarks/bench_real_features.py embed`` (Office-Caltech-10 through an
ImageNet EfficientNet-Lite0, two augmented views per image; nothing is embedded again) and writes
``docs/tables/real_features_why.csv``: one row per question, feature kind, method, setting and quantity,
with a column per held-out target (leave-one-domain-out) and their average; a "gain" is in points
over ``probe-views`` with the same ``C``. Four questions:

1. ``K x lam``: the invariant probes (``probe-icm``: projector from the views, probe on the originals;
   ``probe-icm-views``: probe on the originals and the views) over a wider grid than the benchmark's,
   ``K`` in {16, 64, 256, 512, 1024} and ``lam`` in {0, 1, 10, 100, 1000} (``lam = 0`` is uncentred
   PCA, no invariance), at a fixed ``C`` (``PROBE_C``): the gain over ``probe-views`` (same ``C``) on
   each target.
   This is the oracle surface (it reads the target): if no point of it beats the control, no honest
   rule can. ``K = D`` (1280) keeps the whole space, where every invariant probe *is* its control.
2. ``shift``: where the real domain shift lies. For each target, the class-conditional shift
   :math:`B_t = \\sum_c n_{c,t} (m_{c,t} - m_{c,S})(m_{c,t} - m_{c,S})^\\top / n_t` (target class
   means against the sources' class means) and the sources' class scatter; the share of the trace of
   each that lies in the top ``m`` directions of several sets: the views' nuisance scatter (what the
   projector removes first), random directions (``m / D`` in expectation), the sources' principal
   directions, the directions separating the sources' environments (class-conditional environment
   means), the class directions, and the shift's own top directions (the most any ``m`` directions
   can hold). Then the share of each kept by the benchmark's usual projector (``K = 256``, ``lam =
   10``) and by PCA with the same ``K``.
3. ``transforms``: which augmentation. ``make_image_interventions`` draws each view's transform from
   a generator seeded by ``(random_state, view, image)``, so the transform of every stored view is
   recovered from the store's paths and the embedding seed without embedding anything (checked once
   against the stored views by re-embedding 16 of them: equal to 4e-6). For each transform alone:
   its share of the target shift and of the class scatter in its top 64 nuisance directions, and the
   invariant probe fitted on the views of that transform against ``probe-views`` on the same views.
4. ``variants``: what, within the method, could make it hold, each chosen honestly (``lodo-cv`` on
   the sources over ``K x lam``, ``C`` fixed) and scored on the target, with the oracle's best as a
   labelled upper bound: the projector from the views (as in the benchmark), the same with the
   projected features L2-normalised again, the projector from the sources' environments
   (class-conditional environment means as the interventions, no views), and both pooled (the
   environment means as fixed interventions beside the views); and ``lodo-cv`` over the union of
   everything and the control itself.

    python benchmarks/real_features_why.py                     # normalised features, seed 0
    python benchmarks/real_features_why.py --features normalized,raw --seeds 0,1,2

Every round's scores are kept in ``benchmarks/.cache/why`` (a rerun only tabulates); the files are
named by feature kind, seed and target, not by grid: delete them after changing ``KS``, ``LAMS``,
``PROBE_C`` or ``VARIANTS``. Without the cached store it says so and exits 0 (it is optional for CI).
"""

import argparse
import csv
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / ".cache" / "office-caltech10-effnet-lite0-v2-seed0"
RUNS = ROOT / "benchmarks" / ".cache" / "why"  # every round's scores, so that a rerun only tabulates
TABLE = ROOT / "docs" / "tables" / "real_features_why.csv"
COLUMNS = ["question", "features", "method", "setting", "quantity", "seeds"]

KS = [16, 64, 256, 512, 1024]
LAMS = [0.0, 1.0, 10.0, 100.0, 1000.0]
# The probe's C per feature kind: what the benchmark's rules chose for the invariant probes in most
# rounds (3.16 on L2-normalised features; 0.316 on raw ones, whose norms are about 15).
PROBE_C = {"normalized": 3.16, "raw": 0.316}
M = 64  # directions per set in the shift question (5% of D = 1280)
USUAL = (256, 10.0)  # the benchmark's usual selection (K, lam)


# ---------------------------------------------------------------- scatters
def class_means(X, y):
    """``(classes, means, counts)`` of the rows of ``X`` by label."""
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), X.shape[1]))
    np.add.at(sums, index, X)
    return classes, sums / counts[:, None], counts


def shift_scatter(X, y, is_target):
    """Class-conditional shift of the target: :math:`\\sum_c n_{c,t} d_c d_c^\\top / n_t`,
    :math:`d_c = m_{c,t} - m_{c,S}` (the target's class mean minus the sources'), classes both have."""
    X, y, is_target = np.asarray(X, dtype=float), np.asarray(y), np.asarray(is_target, dtype=bool)
    source_classes, source_means, _ = class_means(X[~is_target], y[~is_target])
    target_classes, target_means, counts = class_means(X[is_target], y[is_target])
    common = np.isin(target_classes, source_classes)
    deviations = target_means[common] - source_means[np.searchsorted(source_classes, target_classes[common])]
    weights = counts[common] / counts[common].sum()
    return (deviations * weights[:, None]).T @ deviations


def environment_scatter(X, y, environments):
    """Scatter of the class-conditional environment means around each class's mean over environments,
    weighted by the cells' sizes: what separates the environments at fixed class."""
    X, y, environments = np.asarray(X, dtype=float), np.asarray(y), np.asarray(environments)
    scatter = np.zeros((X.shape[1], X.shape[1]))
    for label in np.unique(y):
        rows = y == label
        names, means, counts = class_means(X[rows], environments[rows])
        if len(names) < 2:
            continue
        deviations = means - means.mean(axis=0)
        scatter += (deviations * counts[:, None]).T @ deviations
    return scatter / len(y)


def class_scatter(X, y):
    """Between-class scatter: :math:`\\sum_c n_c (m_c - m)(m_c - m)^\\top / n`."""
    X = np.asarray(X, dtype=float)
    _, means, counts = class_means(X, np.asarray(y))
    deviations = means - X.mean(axis=0)
    return (deviations * counts[:, None]).T @ deviations / counts.sum()


def view_scatter(originals, views):
    """Nuisance scatter of the views: each row's deviation from its image's mean (original and views).

    ``originals`` ``(n, D)``, ``views`` ``(n, V, D)``; a view may be NaN (left out, e.g. another
    transform's), and an image without any view adds nothing."""
    rows = np.concatenate([np.asarray(originals, dtype=float)[:, None], np.asarray(views, dtype=float)], 1)
    present = ~np.isnan(rows).any(axis=2)
    present[present.sum(axis=1) < 2] = False
    rows = np.where(present[..., None], rows, 0.0)
    means = rows.sum(axis=1) / np.maximum(present.sum(axis=1), 1)[:, None]
    deviations = (rows - means[:, None]) * present[..., None]
    flat = deviations.reshape(-1, rows.shape[2])
    return flat.T @ flat / max(int(present.any(axis=1).sum()), 1)


def covariance(X):
    X = np.asarray(X, dtype=float)
    centred = X - X.mean(axis=0)
    return centred.T @ centred / len(X)


def top_directions(scatter, m):
    """The ``m`` leading eigenvectors of a symmetric scatter, as orthonormal columns ``(D, m)``."""
    values, vectors = np.linalg.eigh((scatter + scatter.T) / 2)
    return vectors[:, np.argsort(values)[::-1][:m]]


def captured(scatter, basis):
    """Share of ``trace(scatter)`` in the span of the orthonormal columns of ``basis``."""
    basis = np.asarray(basis, dtype=float)
    return float(np.sum((scatter @ basis) * basis) / np.trace(scatter))


def random_captured(m, d):
    """The expected share of any scatter in ``m`` random orthonormal directions of ``R^d``: ``m / d``."""
    return m / d


# ------------------------------------------------------------ transforms
def view_transforms(paths, environments, environment_names, n_augmented, random_state):
    """The transform of every stored view, ``(n, n_augmented)`` strings, without embedding anything.

    ``bench_real_features.embed`` drew the views of environment ``e`` (in ``environment_names``
    order, its images in store order) with ``make_image_interventions(paths, n_augmented,
    include_original=False, random_state=random_state * 1000 + e)``; the draws depend on the seed
    and the image's index only."""
    from clip_invariance.embedding import make_image_interventions

    paths, environments = np.asarray(paths), np.asarray(environments)
    out = np.empty((len(paths), n_augmented), dtype=object)
    for e, name in enumerate(environment_names):
        index = np.flatnonzero(environments == name)
        if not len(index):
            continue
        views, _ = make_image_interventions(list(paths[index]), n_augmented=n_augmented,
                                            include_original=False, random_state=random_state * 1000 + e)
        out[index] = np.array([view.transform for view in views], dtype=object).reshape(n_augmented, -1).T
    return out


# ------------------------------------------------------------- accuracies
def _probe_accuracy(Z_train, y_train, Z_test, y_test, C):
    from clip_invariance.evaluation import make_probe

    return float(make_probe(C).fit(Z_train, y_train).score(Z_test, y_test))


def _unit(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def ratio_bases(second_moment, nuisance, lams):
    """The projector's full basis per ``lam`` (ratio solver), rows ordered: ``basis[:K]`` spans what
    ``InvariantProjector(K, lam=lam)`` keeps. Both statistics are scaled to unit average eigenvalue as
    the projector scales them; then the generalized eigenvectors of ``z a = mu (I + lam d) a`` through a
    Cholesky factor and one symmetric ``eigh`` (the projector's ``subset_by_index`` route takes about
    four times longer for the whole spectrum), orthonormalised in order by QR."""
    d = len(second_moment)
    z = second_moment / (np.trace(second_moment) / d)
    n = nuisance / (np.trace(nuisance) / d)
    out = {}
    for lam in lams:
        inv_lower = np.linalg.inv(np.linalg.cholesky(np.eye(d) + lam * n))
        reduced = inv_lower @ z @ inv_lower.T
        values, vectors = np.linalg.eigh((reduced + reduced.T) / 2)
        basis, _ = np.linalg.qr(inv_lower.T @ vectors[:, ::-1])
        out[lam] = basis.T
    return out


def _projectors(family, lams, rows, groups, original, y, environments, train):
    """Full-rank bases per ``lam`` (:func:`ratio_bases`) of the projector of one family, from the
    statistics of an :class:`~clip_invariance.InvariantProjector` fitted on the split's training rows."""
    from clip_invariance import InvariantProjector

    orig = train[original[train]]
    if family == "views":
        proj = InvariantProjector(1).fit(rows[train], view_groups=groups[train])
    elif family == "environments":
        proj = InvariantProjector(1).fit(rows[orig], y[orig], environments=environments[orig])
    else:  # views+environments: the class-conditional environment means as fixed interventions
        cells = [(c, e) for c in np.unique(y[orig]) for e in np.unique(environments[orig])
                 if np.any((y[orig] == c) & (environments[orig] == e))]
        means = np.array([rows[orig][(y[orig] == c) & (environments[orig] == e)].mean(0) for c, e in cells])
        proj = InvariantProjector(1, intervention_embeddings=means.astype(rows.dtype),
                                  intervention_view_groups=np.array([c for c, _ in cells]))
        proj.fit(rows[train], view_groups=groups[train])
    bases = ratio_bases(proj.second_moment_, proj.nuisance_scatter_, lams)
    return {lam: basis.astype(rows.dtype) for lam, basis in bases.items()}


# (family, lams, L2 after projection): the projectors question 4 compares; question 1 is the first.
VARIANTS = {
    "views": ("views", LAMS, False),
    "views, L2 after projection": ("views", LAMS[1:], True),
    "environments": ("environments", LAMS[1:], False),
    "views+environments": ("views+environments", LAMS[1:], False),
}


def split_scores(rows, groups, original, y, environments, train, test, variants=VARIANTS, ks=KS, C=3.16):
    """Accuracy on ``test`` of the controls and every (variant, method, K, lam) fitted on ``train``."""
    orig = train[original[train]]
    scores = {("probe", None, None, None): _probe_accuracy(rows[orig], y[orig], rows[test], y[test], C),
              ("probe-views", None, None, None): _probe_accuracy(rows[train], y[train], rows[test], y[test],
                                                                 C)}
    families = {}  # one set of projectors per family, shared by its variants
    for family, lams, _ in variants.values():
        families[family] = sorted(set(families.get(family, [])) | set(lams))
    bases = {family: _projectors(family, lams, rows, groups, original, y, environments, train)
             for family, lams in families.items()}
    for name, (family, lams, l2) in variants.items():
        for lam in lams:
            basis = bases[family][lam]
            for k in ks:
                A = basis[:k].T
                post = _unit if l2 else (lambda Z: Z)
                Z_train, Z_test = post(rows[train] @ A), post(rows[test] @ A)
                Z_orig = post(rows[orig] @ A)
                scores[(name, "probe-icm", k, lam)] = _probe_accuracy(Z_orig, y[orig], Z_test, y[test], C)
                scores[(name, "probe-icm-views", k, lam)] = _probe_accuracy(Z_train, y[train], Z_test,
                                                                             y[test], C)
    return scores


def lodo_scores(rows, groups, original, y, environments, target, seed, variants=VARIANTS, ks=KS, C=3.16):
    """``(validation, test)``: the mean lodo-cv validation accuracy of every candidate on the sources,
    and its accuracy on the target when fitted on the sources' training part (as the evaluation does)."""
    from clip_invariance.evaluation import selection_splits

    splits, train = selection_splits("lodo-cv", environments, target, view_groups=groups,
                                     is_original=original, random_state=seed)
    folds = [split_scores(rows, groups, original, y, environments, a, b, variants, ks, C) for a, b in splits]
    validation = {key: float(np.mean([fold[key] for fold in folds])) for key in folds[0]}
    test = original & (environments == target)
    return validation, split_scores(rows, groups, original, y, environments, train, np.flatnonzero(test),
                                    variants, ks, C)


def select(validation, candidates):
    """The candidate of best validation accuracy, the first in ``candidates`` order on ties."""
    best = max(validation[c] for c in candidates)
    return next(c for c in candidates if validation[c] == best)


def cached(name, compute):
    """``compute()``, kept in ``RUNS/<name>.pkl``: a rerun (or an interrupted run) reads it back."""
    import pickle

    path = RUNS / f"{name}.pkl"
    if path.is_file():
        with open(path, "rb") as file:
            return pickle.load(file)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        pickle.dump(value, file)
    return value


# -------------------------------------------------------------- the table
def _row(question, features, method, setting, quantity, seeds, values, targets, fmt):
    cells = [values[t] for t in targets]
    return [question, features, method, setting, quantity, seeds, *[fmt(v) for v in cells],
            fmt(float(np.mean(cells)))]


def _pct(v):
    return f"{100 * v:.1f}"


def _points(v):
    return f"{100 * v:+.1f}"


def shift_rows(store, features, targets, transforms):
    """Questions 2 and 3's subspace shares (no fit of a probe)."""
    X, V, y, env = store.X, store.views, store.y, store.environments
    d = X.shape[1]
    per = {}
    for t in targets:
        src = env != t
        shift = shift_scatter(X, y, env == t)
        classes = class_scatter(X[src], y[src])
        views = view_scatter(X[src], V[src])
        sets = {
            f"top {M} view-nuisance directions": top_directions(views, M),
            f"top {M} principal directions (sources)": top_directions(covariance(X[src]), M),
            f"top {M} source-environment directions": top_directions(environment_scatter(X[src], y[src],
                                                                                          env[src]), M),
            f"top {M} class directions (sources)": top_directions(classes, M),
            f"top {M} directions of the target shift (the most {M} can hold)": top_directions(shift, M),
        }
        out = {("size", "target shift / class scatter (trace ratio)"): np.trace(shift) / np.trace(classes)}
        for name, basis in sets.items():
            out[(name, "% of the target shift")] = captured(shift, basis)
            out[(name, "% of the class scatter")] = captured(classes, basis)
        out[(f"{M} random directions (expected)", "% of the target shift")] = random_captured(M, d)
        out[(f"{M} random directions (expected)", "% of the class scatter")] = random_captured(M, d)
        rows = np.concatenate([X[src]] + [V[src, v] for v in range(V.shape[1])])
        groups = np.tile(np.arange(int(src.sum())), V.shape[1] + 1)
        from clip_invariance import InvariantProjector

        k, lam = USUAL
        kept = ((f"kept by the projector (K={k}, lam={lam:g})", lam), (f"kept by PCA (K={k})", 0.0))
        for label, value in kept:
            basis = InvariantProjector(k, lam=value).fit(rows, view_groups=groups).components_.T
            out[(label, "% of the target shift")] = captured(shift, basis)
            out[(label, "% of the class scatter")] = captured(classes, basis)
        out[(f"{k} random directions kept (expected)", "% of the target shift")] = random_captured(k, d)
        for name in sorted(set(transforms.ravel())):
            only = np.where((transforms[src] == name)[..., None], V[src], np.nan)
            basis = top_directions(view_scatter(X[src], only), M)
            out[(f"transform: {name}", f"% of the target shift in its top {M} nuisance directions")] = \
                captured(shift, basis)
            out[(f"transform: {name}", f"% of the class scatter in its top {M} nuisance directions")] = \
                captured(classes, basis)
        per[t] = out
    table = []
    for key in per[targets[0]]:
        question = "transforms" if key[0].startswith("transform:") else "shift"
        values = {t: per[t][key] for t in targets}
        fmt = (lambda v: f"{v:.3f}") if key[0] == "size" else _pct
        table.append(_row(question, features, "", key[0], key[1], "", values, targets, fmt))
    return table


def transform_rows(store, features, targets, transforms, seed):
    """Question 3's accuracies: the invariant probe from one transform's views against probe-views on them."""
    from clip_invariance.evaluation import selection_splits

    X, V, y, env = store.X, store.views, store.y, store.environments
    n, n_views = V.shape[:2]
    gains = {}
    for name in [*sorted(set(transforms.ravel())), "all"]:
        keep_view = np.ones((n, n_views), bool) if name == "all" else transforms == name
        keep = np.concatenate([np.ones(n, bool), keep_view.T.ravel()])
        rows = np.concatenate([X] + [V[:, v] for v in range(n_views)])[keep]
        groups = np.tile(np.arange(n), n_views + 1)[keep]
        original = np.arange(len(keep))[keep] < n
        labels, environments = np.tile(y, n_views + 1)[keep], np.tile(env, n_views + 1)[keep]
        for t in targets:
            _, train = selection_splits("source-val", environments, t, view_groups=groups,
                                        is_original=original, random_state=seed)
            test = np.flatnonzero(original & (environments == t))
            scores = cached(f"{features}-seed{seed}-{t}-transform-{name}", partial(
                split_scores, rows, groups, original, labels, environments, train, test,
                {"views": ("views", [10.0, 100.0], False)}, [256, 1024], PROBE_C[features]))
            control = scores[("probe-views", None, None, None)]
            usual = scores[("views", "probe-icm-views", *USUAL)] - control
            best = max(v for k, v in scores.items() if k[0] == "views") - control
            gains.setdefault(name, {})[t] = (usual, best, int((keep_view & (env != t)[:, None]).sum()))
    table = []
    for name, per in gains.items():
        setting = f"transform: {name}"
        table.append(_row("transforms", features, "probe-icm-views", setting,
                          f"gain over probe-views on the same views, K={USUAL[0]}, lam={USUAL[1]:g}",
                          "1", {t: per[t][0] for t in targets}, targets, _points))
        table.append(_row("transforms", features, "probe-icm(-views)", setting,
                          "best gain over probe-views, K in {256, 1024} x lam in {10, 100} (oracle)",
                          "1", {t: per[t][1] for t in targets}, targets, _points))
        table.append(_row("transforms", features, "", setting, "source views", "",
                          {t: per[t][2] for t in targets}, targets, lambda v: f"{v:.0f}"))
    return table


def accuracy_rows(store, features, targets, seeds, log=print):
    """Questions 1 and 4: every candidate's lodo-cv validation and target accuracy, per target and seed."""
    X, V, y, env = store.X, store.views, store.y, store.environments
    n, n_views = V.shape[:2]
    rows = np.concatenate([X] + [V[:, v] for v in range(n_views)])
    groups = np.tile(np.arange(n), n_views + 1)
    original = np.arange(len(rows)) < n
    labels, environments = np.tile(y, n_views + 1), np.tile(env, n_views + 1)
    runs = {}
    for seed in seeds:
        for t in targets:
            start = time.perf_counter()
            runs[seed, t] = cached(f"{features}-seed{seed}-{t}", lambda t=t, seed=seed: lodo_scores(
                rows, groups, original, labels, environments, t, seed, C=PROBE_C[features]))
            log(f"{features}, seed {seed}, {t}: {time.perf_counter() - start:.0f} s")
    d = X.shape[1]
    control = ("probe-views", None, None, None)
    seeds_label = str(len(seeds))

    def mean_over_seeds(fn):
        return {t: float(np.mean([fn(seed, t) for seed in seeds])) for t in targets}

    def seed_row(question, method, setting, quantity, fn, fmt):
        """Mean over seeds, ± their standard deviation (the average over targets taken per seed)."""
        values = np.array([[fn(seed, t) for t in targets] for seed in seeds])
        values = np.column_stack([values, values.mean(axis=1)])
        cells = [fmt(m) + (f" ± {100 * sd:.1f}" if len(seeds) > 1 else "")
                 for m, sd in zip(values.mean(axis=0), values.std(axis=0))]
        return [question, features, method, setting, quantity, seeds_label, *cells]

    table = [
        seed_row("K x lam", method, f"control, C={PROBE_C[features]:g}", "target accuracy (%)",
                 lambda s, t, m=method: runs[s, t][1][(m, None, None, None)], _pct)
        for method in ("probe", "probe-views")
    ]
    for method in ("probe-icm", "probe-icm-views"):
        for lam in LAMS:
            for k in KS:
                key = ("views", method, k, lam)
                label = f"K={k}, lam={lam:g}" + (" (PCA)" if lam == 0 else "")
                table.append(_row("K x lam", features, method, label,
                                  "gain, oracle surface", seeds_label, mean_over_seeds(
                                      lambda s, t, key=key: runs[s, t][1][key] - runs[s, t][1][control]),
                                  targets, _points))
        def best(s, t, m=method):
            return max(v for key, v in runs[s, t][1].items()
                       if key[:2] == ("views", m) and key[3] > 0) - runs[s, t][1][control]

        table.append(seed_row("K x lam", method, "best K, lam >= 1 per target and seed (oracle)",
                              "gain over probe-views", best, _points))
    table.append(_row("K x lam", features, "probe-icm(-views)", f"K={d}, any lam: the whole space",
                      "gain over probe-views (the control itself)", "", dict.fromkeys(targets, 0.0), targets,
                      lambda v: "0"))

    # Question 4: each variant chosen by lodo-cv on the sources, C fixed; the oracle's best beside it.
    for name in VARIANTS:
        for method in ("probe-icm", "probe-icm-views"):
            def candidates(s, t, name=name, method=method):
                return [key for key in runs[s, t][0] if key[:2] == (name, method) and key[3] > 0]

            def chosen(s, t, candidates=candidates):
                return select(runs[s, t][0], sorted(candidates(s, t), key=lambda c: (c[3], c[2])))

            def selected(s, t, chosen=chosen):
                return runs[s, t][1][chosen(s, t)] - runs[s, t][1][control]

            def oracle(s, t, candidates=candidates):
                return max(runs[s, t][1][c] for c in candidates(s, t)) - runs[s, t][1][control]

            for quantity, fn in (("lodo-cv", selected), ("oracle", oracle)):
                table.append(seed_row("variants", method, name,
                                      f"gain, {quantity} over K x lam", fn, _points))
            picks = {t: "/".join(f"{chosen(s, t)[2]}:{chosen(s, t)[3]:g}" for s in seeds) for t in targets}
            table.append(["variants", features, method, name, "lodo-cv's choice (K:lam, per seed)",
                          seeds_label, *[picks[t] for t in targets], ""])

    def everything(s, t):
        keys = [key for key in runs[s, t][0] if key[0] != "probe" and (key[0] == "probe-views" or key[3] > 0)]
        return select(runs[s, t][0], [control, *sorted((k for k in keys if k != control),
                                                        key=lambda c: (c[0], c[1], c[3], c[2]))])

    table.append(seed_row("variants", "any", "lodo-cv over every variant and probe-views itself",
                          "gain over probe-views",
                          lambda s, t: runs[s, t][1][everything(s, t)] - runs[s, t][1][control], _points))
    def named(choice):
        return "probe-views" if choice == control else f"{choice[0]} {choice[1]} {choice[2]}:{choice[3]:g}"

    picks = {t: " / ".join(named(everything(s, t)) for s in seeds) for t in targets}
    table.append(["variants", features, "any", "lodo-cv over every variant and probe-views itself",
                  "its choice (per seed)", seeds_label, *[picks[t] for t in targets], ""])
    return table


def load(features):
    from clip_invariance.datasets import load_embeddings

    store = load_embeddings(STORE, mmap=False)
    if features == "normalized":
        store["X"] = store.X / np.linalg.norm(store.X, axis=-1, keepdims=True)
        store["views"] = store.views / np.linalg.norm(store.views, axis=-1, keepdims=True)
    return store


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="normalized", help="normalized, raw or both (comma list)")
    parser.add_argument("--seeds", default="0", help="evaluation seeds (the sources' 80/20 splits)")
    parser.add_argument("--raw-seeds", default=None, help="seeds for raw features (default: --seeds)")
    parser.add_argument("--accuracy-features", default=None,
                        help="feature kinds for questions 1 and 4 (the probes; default: --features)")
    parser.add_argument("--output", default=str(TABLE))
    args = parser.parse_args(argv)
    if not (STORE / "store.json").is_file():
        print(f"real_features_why: skipped, needs the store of `bench_real_features.py embed` at {STORE}.")
        return 0
    from threadpoolctl import threadpool_limits

    seeds = [int(s) for s in args.seeds.split(",")]
    raw_seeds = seeds if args.raw_seeds is None else [int(s) for s in args.raw_seeds.split(",")]
    kinds = args.features.split(",")
    accuracy_kinds = kinds if args.accuracy_features is None else args.accuracy_features.split(",")
    table = []
    with threadpool_limits(limits=1, user_api="blas"):
        for features in kinds:
            store = load(features)
            targets = list(store.environment_names)
            settings = store.settings["images"]
            transforms = view_transforms(store.paths, store.environments, store.environment_names,
                                         settings["n_augmented"], settings["random_state"])
            start = time.perf_counter()
            table += shift_rows(store, features, targets, transforms)
            print(f"{features}, shift: {time.perf_counter() - start:.0f} s", flush=True)
            if features in accuracy_kinds:
                kind_seeds = raw_seeds if features == "raw" else seeds
                table += accuracy_rows(store, features, targets, kind_seeds,
                                       log=lambda m: print(m, flush=True))
                start = time.perf_counter()
                table += transform_rows(store, features, targets, transforms, kind_seeds[0])
                print(f"{features}, transforms: {time.perf_counter() - start:.0f} s", flush=True)
    order = {"K x lam": 0, "shift": 1, "transforms": 2, "variants": 3}
    table.sort(key=lambda r: order[r[0]])  # stable: each question's rows keep their order
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*COLUMNS, *targets, "avg"])
        writer.writerows(table)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
