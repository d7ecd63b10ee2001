"""The ``clip-invariance`` command line."""

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _probe_accuracy(train_X, train_y, test_X, test_y):
    from sklearn.linear_model import LogisticRegression

    # The reference implementation's probe: C = 0.316.
    probe = LogisticRegression(C=0.316, max_iter=2000).fit(train_X, train_y)
    return float(probe.score(test_X, test_y))


def run_demo(n_samples=2000, normalize=False, n_components=None, lam=10.0, random_state=0):
    """Leave-one-environment-out evaluation on the synthetic causal benchmark.

    Returns the table rows as dictionaries (one per held-out environment).
    """
    from . import InvariantProjector, ZeroShotInvariantClassifier
    from .datasets import make_invariant_embeddings
    from .views import stack_views
    from .metrics import principal_angles

    data = make_invariant_embeddings(
        n_samples=n_samples, normalize=normalize, random_state=random_state
    )
    k = n_components or data.invariant_basis.shape[1]
    text = dict(
        interventions=data.text_interventions,
        intervention_view_groups=data.text_view_groups,
    )
    rows = []
    for env in np.unique(data.environments):
        test = data.environments == env
        train = ~test
        X_pairs, view_groups = stack_views(data.X[train], *data.X_views[:, train])

        def zero_shot(projector, X_fit, **fit_params):
            clf = ZeroShotInvariantClassifier(data.prompt_embeddings, projector=projector)
            clf.fit(X_fit, **fit_params)
            return clf, float(clf.score(data.X[test], data.y[test]))

        _, plain = zero_shot(None, data.X[train])
        _, image_only = zero_shot(InvariantProjector(k, lam=lam), X_pairs, view_groups=view_groups)
        _, text_only = zero_shot(InvariantProjector(k, lam=lam, **text), data.X[train])
        both, both_score = zero_shot(InvariantProjector(k, lam=lam, **text), X_pairs, view_groups=view_groups)
        projector = both.projector_
        Z = projector.transform(data.X)
        angles = np.degrees(principal_angles(projector.components_.T, data.invariant_basis))
        rows.append(
            {
                "env": int(env),
                "shifted": bool(env == data.test_environment),
                "zero-shot": plain,
                "ZS ICM img": image_only,
                "ZS ICM txt": text_only,
                "ZS ICM": both_score,
                "probe": _probe_accuracy(data.X[train], data.y[train], data.X[test], data.y[test]),
                "probe ICM": _probe_accuracy(Z[train], data.y[train], Z[test], data.y[test]),
                "oracle": _probe_accuracy(
                    data.invariant_latents[train], data.y[train],
                    data.invariant_latents[test], data.y[test],
                ),
                "max angle": float(angles.max()),
            }
        )
    return rows


def run_evaluation(
    root,
    *,
    model_name="ViT-B-32",
    pretrained="openai",
    device="auto",
    batch_size=64,
    n_views=1,
    n_components=None,
    lam=10.0,
    templates="simple",
    memory=None,
    random_state=0,
):
    """Leave-one-domain-out evaluation of CLIP and CLIP-ICM on a DomainBed image folder.

    Embeds every image (and ``n_views`` augmented views of it), the class
    prompts and the text interventions with one open_clip backbone, then runs
    :func:`~clip_invariance.evaluation.leave_one_domain_out` for zero-shot and
    linear-probe classifiers, on raw embeddings and in the invariant subspace
    (image and text interventions pooled). Returns one row per target domain.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from . import CLIPEmbedder, InvariantProjector, ZeroShotInvariantClassifier
    from .augmentation import make_image_interventions
    from .datasets import load_image_folder
    from .evaluation import leave_one_domain_out
    from .prompts import build_prompts, encode_prompts, make_text_interventions

    data = load_image_folder(root)
    backbone = dict(
        model_name=model_name, pretrained=pretrained, device=device, batch_size=batch_size,
        memory=memory,
    )
    images = CLIPEmbedder(**backbone, progress="auto")
    texts = CLIPEmbedder(**backbone, modality="text", progress=False)
    views, view_groups = make_image_interventions(
        list(data.paths), n_views=n_views, random_state=random_state
    )
    X = images.fit_transform(views)
    n = len(data.paths)
    y = np.tile(data.y, n_views + 1)
    domains = np.tile(data.environments, n_views + 1)
    is_original = np.arange(len(X)) < n  # views are stacked after the originals

    prompts = encode_prompts(texts.transform, build_prompts(data.target_names, templates))
    text_strings, text_groups = make_text_interventions(data.target_names)
    text_interventions = encode_prompts(texts.transform, text_strings)
    k = n_components or min(64, X.shape[1])
    projector = InvariantProjector(
        k, lam=lam, interventions=text_interventions, intervention_view_groups=text_groups
    )
    probe = LogisticRegression(C=0.316, max_iter=1000)
    candidates = {
        "zero-shot": (ZeroShotInvariantClassifier(prompts), {}),
        "ZS ICM": (
            ZeroShotInvariantClassifier(prompts, projector=projector), {"view_groups": view_groups}
        ),
        "probe": (probe, {}),
        "probe ICM": (
            Pipeline([("proj", projector), ("clf", probe)]), {"proj__view_groups": view_groups}
        ),
    }
    table = {}
    for name, (estimator, fit_params) in candidates.items():
        for row in leave_one_domain_out(
            estimator, X, y, domains, fit_params=fit_params, content_ids=view_groups,
            scored=is_original, random_state=random_state,
        ):
            table.setdefault(row["domain"], {"domain": row["domain"]})
            table[row["domain"]][name] = row["test_accuracy"]
    rows = list(table.values())
    rows.append({"domain": "average", **{
        name: float(np.mean([r[name] for r in rows])) for name in candidates
    }})
    return rows


def _print_table(rows, file):
    columns = list(rows[0])
    widths = [max([len(c), 6] + [len(str(r[c])) for r in rows if isinstance(r[c], str)])
              for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)), file=file)
    for row in rows:
        cells = []
        for c, w in zip(columns, widths):
            v = row[c]
            if isinstance(v, bool):
                text = "yes" if v else "no"
            elif isinstance(v, float):
                text = f"{v:.1f}" if c == "max angle" else f"{100 * v:.1f}"
            elif isinstance(v, str):
                text = v
            else:
                text = str(v)
            cells.append(text.rjust(w))
        print("  ".join(cells), file=file)


def _demo(args):
    start = time.perf_counter()
    print(
        "Synthetic CLIP-ICM benchmark: leave-one-environment-out accuracy (%).\n"
        "The last environment is shifted: its style is new and the spurious\n"
        "class-to-style association of the training environments is permuted.\n"
        "ZS = zero-shot; ICM = in the invariant subspace learned from image pairs (img),\n"
        "text interventions (txt) or both; probe = logistic regression; oracle = probe\n"
        "on the true invariant latents;\n"
        "max angle = largest principal angle (degrees) to the true invariant subspace.\n"
    )
    for normalize in ([False, True] if args.normalize == "both" else [args.normalize == "yes"]):
        print(f"embeddings: {'L2-normalised' if normalize else 'raw'}")
        rows = run_demo(
            n_samples=args.n_samples,
            normalize=normalize,
            n_components=args.n_components,
            lam=args.lam,
            random_state=args.seed,
        )
        _print_table(rows, sys.stdout)
        print()
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _evaluate(args):
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    print(
        f"{args.root}: leave-one-domain-out accuracy (%), {args.model_name} / {pretrained}\n"
        "ZS = zero-shot; ICM = in the invariant subspace (image + text interventions)\n"
    )
    rows = run_evaluation(
        args.root,
        model_name=args.model_name,
        pretrained=pretrained,
        device=args.device,
        batch_size=args.batch_size,
        n_views=args.n_views,
        n_components=args.n_components,
        lam=args.lam,
        templates=args.templates,
        memory=args.cache,
        random_state=args.seed,
    )
    _print_table(rows, sys.stdout)
    return 0


def main(argv=None):
    """Entry point of the ``clip-invariance`` console script."""
    parser = argparse.ArgumentParser(
        prog="clip-invariance",
        description="Make CLIP robust to distribution shift (CLIP-ICM, CDC).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the synthetic causal benchmark (no weights, no network)")
    demo.add_argument("--n-samples", type=int, default=2000)
    demo.add_argument("--n-components", type=int, default=None,
                      help="subspace dimension K (default: the true invariant dimension)")
    demo.add_argument("--lam", type=float, default=10.0)
    demo.add_argument("--normalize", choices=["no", "yes", "both"], default="both")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)

    evaluate = sub.add_parser(
        "evaluate",
        help="leave-one-domain-out evaluation on a DomainBed-style image folder "
        "(<root>/<domain>/<class>/<image>)",
    )
    evaluate.add_argument("root", help="the image folder")
    evaluate.add_argument("--model-name", default="ViT-B-32")
    evaluate.add_argument("--pretrained", default="openai",
                          help="open_clip tag, hf-hub:/local-dir: name, checkpoint file, "
                          "or 'none' for random weights")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--n-views", type=int, default=1,
                          help="augmented views per image (image interventions)")
    evaluate.add_argument("--n-components", type=int, default=None,
                          help="subspace dimension K (default: min(64, D))")
    evaluate.add_argument("--lam", type=float, default=10.0)
    evaluate.add_argument("--templates", choices=["simple", "openai"], default="simple")
    evaluate.add_argument("--cache", default=None, help="folder to cache embeddings in")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(handler=_evaluate)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
