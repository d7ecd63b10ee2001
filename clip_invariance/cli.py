"""The ``clip-invariance`` command line: argument parsing and printing only.

The experiments live in :mod:`clip_invariance.evaluation`. Every argument is
checked by its parser type before anything runs, the experiments check what
depends on the data (folder layout, weights, embedding size) before any
embedding starts, and a user's mistake ends in one line on stderr and exit
status 1 (2 for a malformed command line, as argparse does), never in a
traceback (set ``CLIP_INVARIANCE_DEBUG=1`` to see it, for a bug report).
A malformed command line, too, is reported on one line (and ``see --help``)
rather than under the usage block. Every ``--help`` shows the defaults and two
examples; ``python -m clip_invariance`` is the same command.
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


class _Parser(argparse.ArgumentParser):
    """argparse, with a malformed command line reported on one line: the usage block hid the reason."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every default in the help, where there is one to show; the examples printed as typed."""

    def _get_help_string(self, action):
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or nothing or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):  # command lines, one a line: not re-wrapped
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _examples(*lines):
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


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


def _n_jobs(text):
    value = _parse(int, text, "an integer")
    if value == 0:
        raise argparse.ArgumentTypeError("must be a non-zero integer (-1: every core)")
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


def _choices_list(choices, every=None):
    """A comma list of ``choices``; ``every`` (e.g. "all") alone stands for the default, ``None``."""

    def parse(text):
        if every is not None and text.strip() == every:
            return None
        values = _parts(text)
        if every in values:
            raise argparse.ArgumentTypeError(f"{every!r} stands alone, got {text!r}")
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

    args.resume_hint = "run the same command again to resume: the images embedded so far are kept"
    start = time.perf_counter()
    store = embed_image_folder(
        args.root,
        _store_folder(args.output, "-o"),
        model_name=args.model_name,
        pretrained=_pretrained(args.pretrained),
        device=args.device,
        batch_size=args.batch_size,
        n_augmented=args.n_augmented,
        random_state=args.seed,
        progress=not args.quiet,
        shard=args.shard,
        verify_content=args.verify_content,
        overwrite=args.overwrite,
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
    from .evaluation import evaluate_image_folder, evaluate_store, markdown_tables

    for flag, what in (("plot", "its figures"), ("latex", "results.tex")):
        if getattr(args, flag) and args.output is None:
            raise ValueError(f"--{flag} writes {what} into --output DIR: give an output folder.")
    if args.output is not None:
        _check_output(args.output)  # before any work: a run's results must not be lost at the end
    started, start = _now(), time.perf_counter()
    options = {
        "protocol": args.protocol,
        "methods": args.methods,
        "interventions": args.interventions,
        "seeds": args.seeds,
        "selection": args.selection,
        "templates": args.templates,
        "include_target_name": args.include_target_name,
        "grids": {k: v for k, v in (("n_components", args.n_components), ("lam", args.lam),
                                    ("C", args.C), ("temperature", args.temperature),
                                    ("wise_alpha", args.wise_alpha), ("tip_alpha", args.tip_alpha),
                                    ("tip_beta", args.tip_beta), ("prompt_epochs", args.prompt_epochs))
                  if v is not None},
        "progress": not args.quiet,
        "n_jobs": args.n_jobs,
    }
    if args.output is not None:  # each round kept as it ends: an interrupted run resumes
        options["checkpoint"] = os.path.join(args.output, "rounds.jsonl")
        args.resume_hint = (f"run the same command again: the rounds finished so far are read back from "
                            f"{options['checkpoint']}")
    source = Path(args.source)
    if not source.exists():  # a mistyped store name is not only a missing image folder
        raise FileNotFoundError(f"no embedding store or image folder at {str(source)!r}.")
    if is_store(source):  # a store, or a sharded one
        store = source
        results = evaluate_store(store, **options)
    else:
        store = _default_store(source, args) if args.store is None else _store_folder(args.store, "--store")
        check_store_path(store)
        args.resume_hint = "run the same command again: the embedding resumes where it stopped"
        results = evaluate_image_folder(
            source, store, model_name=args.model_name, pretrained=_pretrained(args.pretrained),
            device=args.device, batch_size=args.batch_size, n_augmented=args.n_augmented,
            random_state=args.embed_seed, **options,
        )
        args.resume_hint = None
    print(f"{source}: store {store}")
    print(markdown_tables(results))
    if args.output is not None:
        _write_outputs(args, results, store, options, started, time.perf_counter() - start)


def _write_outputs(args, results, store, options, started, duration):
    """results.csv, .md, config.json (and .tex), then the figures and the ablations asked for."""
    from .datasets import load_embeddings
    from .evaluation import ICM_METHODS, evaluate_ablation, plot_ablation, plot_results, write_results

    config = dict(results.attrs.get("config", {}))
    if config.get("store") is None:  # embedded from a folder: the rerun reads the store it made
        config["store"] = os.path.abspath(store)
    config.update(date=started, duration_s=round(duration, 1))
    written = list(write_results(results, args.output, config=config, latex=args.latex).values())
    if args.plot:
        data = load_embeddings(store)
        n_classes = len(data.class_names) if data.class_names else len(set(data.y.tolist()))
        written += plot_results(results, args.output, n_classes=n_classes)
        grids = options["grids"]
        kept = {k: v for k, v in options.items()
                if k not in ("protocol", "methods", "grids", "n_jobs", "checkpoint")}
        kept.update(seeds=args.seeds[:1], selection=None if args.selection == "all" else args.selection)
        # The sweeps run on the grids given; the other parameter is held at its grid's middle value.
        fixed = {f"fixed_{k}": sorted(grids[k])[len(grids[k]) // 2] for k in ("n_components", "lam")
                 if k in grids}
        for method in [m for m in dict.fromkeys(results["method"]) if m in ICM_METHODS]:
            with warnings.catch_warnings():  # the evaluation above gave the store's warnings once
                warnings.simplefilter("ignore", UserWarning)
                ablation = evaluate_ablation(data, method=method, grids=grids, **fixed, **kept)
            written.append(plot_ablation(ablation, args.output, n_classes=n_classes))
    print("wrote " + ", ".join(str(p) for p in written))


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _store_folder(text, flag):
    """Where a store is written: a link's target, so that the link stays and no copy of it is left behind."""
    if not os.path.islink(text):
        return Path(text)
    target = Path(os.path.realpath(text))
    if not target.exists():
        raise ValueError(f"{flag} {text!r} is a link to nothing ({str(target)!r}).")
    return target


def _default_store(root, args):
    """Embeddings of an image folder kept in the user's cache, one store per folder and model.

    Per model too: a store is never replaced by another model's (embed_image_folder refuses that).
    """
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-invariance" / "stores"
    pretrained = _pretrained(args.pretrained)
    if pretrained is not None and os.path.isfile(pretrained):
        pretrained = os.path.abspath(pretrained)
    key = repr((os.path.abspath(root), args.model_name, pretrained))
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return base / f"{Path(os.path.abspath(root)).name}-{digest}"


def _check_output(folder):
    """Fail before any work unless result files can be written into ``folder`` (made if missing)."""
    import tempfile

    path = Path(folder)
    existing = path
    while not os.path.lexists(existing):  # the deepest part that exists: where mkdir will write
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        raise ValueError(f"--output {folder!r}: {str(existing)!r} is a link to nothing.")
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under the file {str(existing)!r}"
        raise ValueError(f"--output {folder!r} {where}, not a folder.")
    try:
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".clip-invariance-probe-")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OSError(f"--output {folder!r} cannot be written ({str(existing)!r}: {reason}); nothing "
                      "was run.") from None
    os.close(descriptor)
    os.unlink(probe)


def _parser():
    from . import __version__

    parser = _Parser(
        prog="clip-invariance",
        description="Make CLIP robust to distribution shift (CLIP-ICM, CDC). The same command: python -m "
        "clip_invariance.",
        formatter_class=_HelpFormatter,
        epilog=_examples("clip-invariance demo",
                         "clip-invariance embed PACS -o pacs-store && clip-invariance evaluate pacs-store "
                         "--output results"),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run the synthetic causal benchmark (no weights, no network)",
        description="Run the synthetic causal benchmark: no weights, no network.",
        formatter_class=_HelpFormatter,
        epilog=_examples("clip-invariance demo",
                         "clip-invariance demo --normalize yes --n-samples 5000 --seed 1"),
    )
    demo.add_argument("--n-samples", type=_positive_int, default=2000, help="images per environment")
    demo.add_argument(
        "--n-components",
        type=_positive_int,
        default=None,
        help="subspace dimension K (default: the true invariant dimension)",
    )
    demo.add_argument("--lam", type=_non_negative_float, default=10.0, help="the projector's lam")
    demo.add_argument("--normalize", choices=["no", "yes", "both"], default="both",
                      help="L2-normalise the embeddings, or show both")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the synthetic data")
    demo.set_defaults(handler=_demo)

    embed = sub.add_parser(
        "embed",
        help="embed a DomainBed-style image folder (<root>/<environment>/<class>/<image>), its augmented "
        "views, class prompts and text interventions into a store, resumably",
        description="Embed a DomainBed-style image folder (<root>/<environment>/<class>/<image>), its "
        "augmented views, class prompts and text interventions into a store. Resumable: after an "
        "interruption, the same command goes on where it stopped. " + _WEIGHTS_NOTE,
        formatter_class=_HelpFormatter,
        epilog=_examples("clip-invariance embed /data/PACS -o pacs-vitb32",
                         "clip-invariance embed /data/PACS -o pacs-vitb32 --model-name ViT-B-32-quickgelu "
                         "--pretrained ViT-B-32-openai.safetensors --device cuda"),
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
    embed.add_argument("--verify-content", action="store_true",
                       help="key each image by a digest of its bytes, not its modification time: catches "
                       "files rewritten with the old time kept (cp -p, rsync -t); reads every image once")
    embed.add_argument("--overwrite", action="store_true",
                       help="replace a store of another model (refused without it, naming both models)")
    embed.set_defaults(handler=_embed)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate every method on an embedding store (or an image folder, embedded first), "
        "hyper-parameters chosen without the target",
        description="Evaluate every method on an embedding store (or an image folder, embedded first), "
        "hyper-parameters chosen without the target; the tables are printed, and written with --output. "
        + _WEIGHTS_NOTE,
        formatter_class=_HelpFormatter,
        epilog=_examples("clip-invariance evaluate pacs-vitb32 --protocol all --seeds 0,1,2 --output results "
                         "--latex --plot",
                         "clip-invariance evaluate /data/PACS --methods zero-shot,zero-shot-icm "
                         "--pretrained ViT-B-32.safetensors --output results"),
    )
    evaluate.add_argument("source", metavar="STORE_OR_ROOT",
                          help="a store made by 'clip-invariance embed' (sharded or not), or an image folder")
    evaluate.add_argument("--protocol", choices=["dg", "open-class", "base-to-new", "all"], default="dg",
                          help="leave-one-domain-out, its base/new class splits, or all three")
    evaluate.add_argument("--methods", type=_choices_list(METHODS, every="all"), default=None,
                          help="comma list of " + ", ".join(METHODS) + ", or all (default: all: every "
                          "method the store supports, the others skipped with a warning; cdc-prompts and "
                          "coop learn prompts through the store's own model, much slower, and run only when "
                          "named)")
    evaluate.add_argument(
        "--interventions", choices=["image", "text", "both"], default=None,
        help="where the invariant methods learn from (default: both, or what the store has)",
    )
    evaluate.add_argument("--seeds", type=_int_list, default=[0], help="comma list, e.g. 0,1,2 (default: 0)")
    evaluate.add_argument("--selection", choices=[*SELECTION_RULES, "all"], default=None,
                          help="how hyper-parameters are chosen (default: lodo-cv; oracle peeks at the "
                          "target and is labelled so; all: every honest rule side by side)")
    evaluate.add_argument("--templates", choices=["single", "ensemble"], default="single",
                          help="the zero-shot prompts: one template or the ensemble")
    evaluate.add_argument("--include-target-name", action="store_true",
                          help="keep text interventions that name the target (a leak, labelled)")
    grid = " (default: the grid of default_grids, by the embedding size)"
    evaluate.add_argument("--n-components", type=_positive_int_list, default=None,
                          help="grid of K, comma list" + grid)
    evaluate.add_argument("--lam", type=_float_list, default=None, help="grid of lam, comma list" + grid)
    evaluate.add_argument("--C", type=_float_list, default=None,
                          help="grid of the probes' C, comma list" + grid)
    evaluate.add_argument("--temperature", type=_float_list, default=None,
                          help="grid of the front door's temperature, comma list" + grid)
    evaluate.add_argument("--wise-alpha", type=_float_list, default=None,
                          help="grid of WiSE's mixing weight in [0, 1], comma list" + grid)
    evaluate.add_argument("--tip-alpha", type=_float_list, default=None,
                          help="grid of Tip-Adapter's residual ratio, comma list" + grid)
    evaluate.add_argument("--tip-beta", type=_float_list, default=None,
                          help="grid of Tip-Adapter's sharpness, comma list" + grid)
    evaluate.add_argument("--prompt-epochs", type=_int_list, default=None,
                          help="grid of the training epochs of cdc-prompts and coop, comma list" + grid)
    evaluate.add_argument("--output", default=None,
                          help="folder for results.csv, results.md, config.json (checked writable first); "
                          "every finished round is kept in its rounds.jsonl, and the same command run again "
                          "resumes from it")
    evaluate.add_argument("--n-jobs", type=_n_jobs, default=1,
                          help="rounds in parallel (-1: every core; default: 1); the results are identical")
    evaluate.add_argument("--latex", action="store_true",
                          help="also write results.tex into --output (booktabs, mean +- std, best in bold)")
    evaluate.add_argument("--plot", action="store_true",
                          help="also write PNG figures into --output, and the ablation of K and lam on the "
                          "grids given for every invariant method evaluated")
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


_WEIGHTS_NOTE = ("The default weights, ViT-B-32 / openai, are downloaded on first use; offline, give a "
                 "checkpoint file with --pretrained PATH.")


def _add_model_arguments(parser):
    parser.add_argument("--model-name", default="ViT-B-32", help="open_clip model name")
    parser.add_argument(
        "--pretrained",
        default="openai",
        help="open_clip tag, hf-hub:/local-dir: name, checkpoint file, or 'none' for random weights",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")


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
        hint = getattr(args, "resume_hint", None)
        print(f"clip-invariance {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
