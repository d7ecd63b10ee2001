"""The ``clip-invariance`` command line: argument parsing and printing only.

The experiments live in :mod:`clip_invariance.evaluation`. Every argument is
checked by its parser type before anything runs, the experiments check what
depends on the data (folder layout, weights, embedding size) before any
embedding starts, and a user's mistake ends in one line on stderr and exit
status 1 (2 for a malformed command line, as argparse does), never in a
traceback (set ``CLIP_INVARIANCE_DEBUG=1`` to see it, for a bug report).
"""

import argparse
import os
import sys
import time

__all__ = ["main"]

# Exceptions that mean "the user asked for something that cannot be done"
# (a missing folder, offline weights, a bad argument value): one line, exit 1.
# Anything else is a bug and keeps its traceback.
_USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


def _positive_int(text):
    value = _parse(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = _parse(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _non_negative_float(text):
    value = _parse(float, text, "a number")
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _parse(kind, text, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def _format_cell(column, value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}" if column == "max angle" else f"{100 * value:.1f}"
    return str(value)


def _print_table(rows, file):
    columns = list(rows[0])
    cells = [[_format_cell(c, row[c]) for c in columns] for row in rows]
    widths = [max([len(c), 6] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)), file=file)
    for line in cells:
        print("  ".join(text.rjust(w) for text, w in zip(line, widths)), file=file)


HEADER = (
    "Synthetic CLIP-ICM benchmark: leave-one-environment-out accuracy (%).\n"
    "The last environment is shifted: its style is new and the spurious\n"
    "class-to-style association of the training environments is permuted.\n"
    "ZS = zero-shot; ICM = in the invariant subspace learned from image pairs (img),\n"
    "text interventions (txt) or both; probe = logistic regression; oracle = probe\n"
    "on the true invariant latents;\n"
    "max angle = largest principal angle (degrees) to the true invariant subspace.\n"
)


def _demo(args):
    from .evaluation import evaluate_synthetic

    start = time.perf_counter()
    settings = [False, True] if args.normalize == "both" else [args.normalize == "yes"]
    tables = [
        evaluate_synthetic(
            n_samples=args.n_samples,
            normalize=normalize,
            n_components=args.n_components,
            lam=args.lam,
            random_state=args.seed,
        )
        for normalize in settings
    ]
    print(HEADER)
    for normalize, rows in zip(settings, tables):
        print(f"embeddings: {'L2-normalised' if normalize else 'raw'}")
        _print_table(rows, sys.stdout)
        print()
    print(f"done in {time.perf_counter() - start:.1f} s")


def _embed(args):
    from .datasets import embed_image_folder

    start = time.perf_counter()
    store = embed_image_folder(
        args.root,
        args.output,
        model_name=args.model_name,
        pretrained=_pretrained(args.pretrained),
        device=args.device,
        batch_size=args.batch_size,
        n_views=args.n_views,
        random_state=args.seed,
        progress=not args.quiet,
    )
    n, dim = store.X.shape
    print(
        f"{args.output}: {n} images in {len(store.environment_names)} environments, "
        f"{len(store.class_names)} classes, {args.n_views} view(s) each, D={dim} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _pretrained(text):
    return None if text.lower() == "none" else text


def _evaluate(args):
    from .evaluation import evaluate_image_folder

    pretrained = _pretrained(args.pretrained)
    rows = evaluate_image_folder(
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
    print(
        f"{args.root}: leave-one-domain-out accuracy (%), {args.model_name} / {pretrained}\n"
        "ZS = zero-shot; ICM = in the invariant subspace (image + text interventions)\n"
    )
    _print_table(rows, sys.stdout)


def _parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="clip-invariance",
        description="Make CLIP robust to distribution shift (CLIP-ICM, CDC).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the synthetic causal benchmark (no weights, no network)")
    demo.add_argument("--n-samples", type=_positive_int, default=2000)
    demo.add_argument(
        "--n-components",
        type=_positive_int,
        default=None,
        help="subspace dimension K (default: the true invariant dimension)",
    )
    demo.add_argument("--lam", type=_non_negative_float, default=10.0)
    demo.add_argument("--normalize", choices=["no", "yes", "both"], default="both")
    demo.add_argument("--seed", type=_non_negative_int, default=0)
    demo.set_defaults(handler=_demo)

    embed = sub.add_parser(
        "embed",
        help="embed a DomainBed-style image folder (<root>/<environment>/<class>/<image>), its augmented "
        "views, class prompts and text interventions into a store, resumably",
    )
    embed.add_argument("root", help="the image folder")
    embed.add_argument("-o", "--output", required=True, help="the store folder (created or resumed)")
    _add_model_arguments(embed)
    embed.add_argument("--n-views", type=_non_negative_int, default=1, help="augmented views per image")
    embed.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the augmentations")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(handler=_embed)

    evaluate = sub.add_parser(
        "evaluate",
        help="leave-one-domain-out evaluation on a DomainBed-style image folder "
        "(<root>/<environment>/<class>/<image>)",
    )
    evaluate.add_argument("root", help="the image folder")
    _add_model_arguments(evaluate)
    evaluate.add_argument(
        "--n-views", type=_positive_int, default=1, help="augmented views per image (image interventions)"
    )
    evaluate.add_argument(
        "--n-components", type=_positive_int, default=None, help="subspace dimension K (default: min(64, D))"
    )
    evaluate.add_argument("--lam", type=_non_negative_float, default=10.0)
    evaluate.add_argument("--templates", choices=["simple", "openai"], default="simple")
    evaluate.add_argument("--cache", default=None, help="folder to cache embeddings in")
    evaluate.add_argument("--seed", type=_non_negative_int, default=0)
    evaluate.set_defaults(handler=_evaluate)
    return parser


def _add_model_arguments(parser):
    parser.add_argument("--model-name", default="ViT-B-32", help="open_clip model name")
    parser.add_argument(
        "--pretrained",
        default="openai",
        help="open_clip tag, hf-hub:/local-dir: name, checkpoint file, or 'none' for random weights",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=_positive_int, default=64)


def main(argv=None):
    """Entry point of the ``clip-invariance`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 1 when the command could not be carried out (the reason
        is printed on one line of stderr), 130 when interrupted. A malformed
        command line exits with status 2, as argparse does.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except _USER_ERRORS as exc:
        if os.environ.get("CLIP_INVARIANCE_DEBUG"):
            raise  # the full traceback, for a bug report
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"clip-invariance {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"clip-invariance {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
