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
import warnings
from pathlib import Path

from .evaluation import METHODS, SELECTION_RULES

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


def _shard(text):
    """``i/N`` -> ``(i, N)``, ``0 <= i < N``: shard ``i`` of a split into ``N``."""
    index, slash, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, integers (shard i of N, from 0), got {text!r}") \
            from None
    if not slash or count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"must be i/N with 0 <= i < N, got {text}")
    return index, count


def _int_list(text):
    return [_non_negative_int(part) for part in _parts(text)]


def _positive_int_list(text):
    return [_positive_int(part) for part in _parts(text)]


def _float_list(text):
    return [_non_negative_float(part) for part in _parts(text)]


def _choices_list(choices):
    def parse(text):
        values = _parts(text)
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
        return values

    return parse


def _parts(text):
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected a comma list without empty items, got {text!r}")
    return parts


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
    from .embedding import embed_image_folder

    start = time.perf_counter()
    store = embed_image_folder(
        args.root,
        args.output,
        model_name=args.model_name,
        pretrained=_pretrained(args.pretrained),
        device=args.device,
        batch_size=args.batch_size,
        n_augmented=args.n_augmented,
        random_state=args.seed,
        progress=not args.quiet,
        shard=args.shard,
    )
    n, dim = store.X.shape
    part = "" if args.shard is None else f" shard {args.shard[0]}/{args.shard[1]}:"
    print(
        f"{args.output}:{part} {n} images in {len(store.environment_names)} environments, "
        f"{len(store.class_names)} classes, {args.n_augmented} view(s) each, D={dim} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _pretrained(text):
    return None if text.lower() == "none" else text


def _evaluate(args):
    from .datasets import check_store_path, is_store
    from .evaluation import (
        evaluate_ablation,
        evaluate_image_folder,
        evaluate_store,
        markdown_tables,
        plot_ablation,
        plot_results,
        write_results,
    )

    if args.plot and args.output is None:
        raise ValueError("--plot writes its figures into --output DIR: give an output folder.")
    if args.output is not None:
        _check_output(args.output)
    options = {
        "protocol": args.protocol,
        "methods": args.methods,
        "interventions": args.interventions,
        "seeds": args.seeds,
        "selection": args.selection,
        "templates": args.templates,
        "include_target_name": args.include_target_name,
        "grids": {k: v for k, v in (("n_components", args.n_components), ("lam", args.lam),
                                    ("C", args.C), ("temperature", args.temperature)) if v is not None},
        "progress": not args.quiet,
    }
    source = Path(args.source)
    if is_store(source):  # a store, or a sharded one
        store = source
        results = evaluate_store(store, **options)
    else:
        store = Path(args.store) if args.store is not None else _default_store(source)
        check_store_path(store)
        results = evaluate_image_folder(
            source, store, model_name=args.model_name, pretrained=_pretrained(args.pretrained),
            device=args.device, batch_size=args.batch_size, n_augmented=args.n_augmented,
            random_state=args.embed_seed, **options,
        )
    print(f"{source}: store {store}")
    print(markdown_tables(results))
    if args.output is not None:
        written = write_results(results, args.output)
        figures = []
        if args.plot:
            figures += plot_results(results, args.output)
            ablation = evaluate_ablation(store, seeds=args.seeds[:1], interventions=args.interventions,
                                         templates=args.templates, progress=not args.quiet)
            figures.append(plot_ablation(ablation, args.output))
        print("wrote " + ", ".join(str(p) for p in [*written.values(), *figures]))


def _default_store(root):
    """Embeddings of an image folder kept in the user's cache, one store per folder."""
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-invariance" / "stores"
    digest = hashlib.sha256(os.fsencode(os.path.abspath(root))).hexdigest()[:12]
    return base / f"{Path(os.path.abspath(root)).name}-{digest}"


def _check_output(folder):
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output {folder!r} is a file, not a folder.")


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
    embed.add_argument("--n-augmented", type=_non_negative_int, default=1, help="augmented views per image")
    embed.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the augmentations")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.add_argument(
        "--shard", type=_shard, default=None, metavar="i/N",
        help="embed only part i of N (from 0) of the sorted images, into OUTPUT/shards/; N runs, at once on "
        "machines sharing the filesystem, make one store",
    )
    embed.set_defaults(handler=_embed)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate every method on an embedding store (or an image folder, embedded first), "
        "hyper-parameters chosen without the target",
    )
    evaluate.add_argument("source", metavar="STORE_OR_ROOT",
                          help="a store made by 'clip-invariance embed' (sharded or not), or an image folder")
    evaluate.add_argument("--protocol", choices=["dg", "open-class", "base-to-new", "all"], default="dg")
    evaluate.add_argument("--methods", type=_choices_list(METHODS), default=None,
                          help="comma list of " + ", ".join(METHODS) + " (default: all the store supports)")
    evaluate.add_argument(
        "--interventions", choices=["image", "text", "both"], default=None,
        help="where the invariant methods learn from (default: both, or what the store has)",
    )
    evaluate.add_argument("--seeds", type=_int_list, default=[0], help="comma list, e.g. 0,1,2")
    evaluate.add_argument("--selection", choices=[*SELECTION_RULES, "all"], default=None,
                          help="how hyper-parameters are chosen (default: views-val; oracle peeks at the "
                          "target and is labelled so; all: every honest rule side by side)")
    evaluate.add_argument("--templates", choices=["single", "ensemble"], default="single")
    evaluate.add_argument("--include-target-name", action="store_true",
                          help="keep text interventions that name the target (a leak, labelled)")
    evaluate.add_argument("--n-components", type=_positive_int_list, default=None, help="grid of K, comma")
    evaluate.add_argument("--lam", type=_float_list, default=None, help="grid of lam, comma list")
    evaluate.add_argument("--C", type=_float_list, default=None, help="grid of the probes' C, comma list")
    evaluate.add_argument("--temperature", type=_float_list, default=None,
                          help="grid of the front door's temperature, comma list")
    evaluate.add_argument("--output", default=None, help="folder for results.csv, results.md, config.json")
    evaluate.add_argument("--plot", action="store_true", help="also write PNG figures into --output")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    folder = evaluate.add_argument_group("when STORE_OR_ROOT is an image folder")
    folder.add_argument(
        "--store", default=None,
        help="where to keep its embeddings (default: a folder under ~/.cache/clip-invariance)",
    )
    _add_model_arguments(folder)
    folder.add_argument("--n-augmented", type=_non_negative_int, default=1, help="augmented views per image")
    folder.add_argument("--embed-seed", type=_non_negative_int, default=0, help="seed of the augmentations")
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
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"clip-invariance {args.command}: warning: {text}", file=sys.stderr if file is None else file)

    warnings.showwarning = one_line  # a user reads messages, not source locations
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
    finally:
        warnings.showwarning = show
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
