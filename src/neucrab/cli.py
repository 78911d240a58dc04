"""The `neucrab` command line. Each subcommand is a small function; heavy imports happen inside it."""

from __future__ import annotations

import argparse
import sys

from .errors import InputError


def _measures(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .measures import REGISTRY

    table = Table(title="neucrab measures (higher score = predicted to transfer better)")
    for column in ("name", "needs", "what it does", "citation", "care taken"):
        table.add_column(column, overflow="fold")
    for info in REGISTRY.values():
        # Descriptions may hold brackets (e.g. "[0, 1]"), which rich would take as markup.
        table.add_row(*(escape(text) for text in (info.name, info.needs, info.description, info.citation, info.care)))
    Console(width=args.width).print(table)
    return 0


def _rank(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .ranking import rank
    from .report import ranking_table, write_outputs

    names = None
    checkpoints, task = args.checkpoints, args.task
    if args.example:
        from .example import EXAMPLE_TASK, example_pool

        checkpoints, names = example_pool()
        task = task or EXAMPLE_TASK
    if not checkpoints:
        raise InputError("rank: expected at least one CHECKPOINT (or --example)")
    if not task:
        raise InputError("--task: expected a task (an image folder, a CSV, a .npz, digits or mnist5k)")
    ranking = rank(checkpoints, task, args.measure, cache_dir=args.cache_dir, trust_pickle=args.trust_pickle,
                   layer=args.layer, batch_size=args.batch_size, progress=not args.no_progress, names=names,
                   image_size=args.image_size)
    if args.format == "json":
        print(ranking.to_json())
    elif args.format == "csv":
        print(ranking.to_csv(), end="")
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # a log or a pipe: do not squeeze the table into 80 columns
        console.print(ranking_table(ranking))
    if args.out:
        paths = write_outputs(ranking, args.out)
        print(f"report: {paths['report.html']} (also ranking.json, ranking.csv, scores.png)", file=sys.stderr)
    failed = [row for row in ranking.rows if row.error]
    return 1 if failed and len(failed) == len(ranking.rows) else 0


def _extract(args: argparse.Namespace) -> int:
    from .checkpoints import load as load_checkpoint
    from .extract import default_cache_dir, extract
    from .tasks import load as load_task

    task = load_task(args.task)
    if task.skipped:
        print(f"skipped {len(task.skipped)} unreadable file(s), e.g. {task.skipped[0]}", file=sys.stderr)
    checkpoint = load_checkpoint(args.checkpoint, layer=args.layer, trust_pickle=args.trust_pickle)
    splits = ("train", "test") if args.split == "both" else (args.split,)
    print(f"cache: {args.cache_dir or default_cache_dir()}")
    for split in splits:
        embedding = extract(checkpoint, task, split, cache_dir=args.cache_dir, batch_size=args.batch_size,
                            progress=not args.no_progress)
        shape = " x ".join(map(str, embedding.features.shape))
        how = "cache hit" if embedding.cached else "computed"
        print(f"{checkpoint.name} / {task.name} {split}: {shape} features, {how} in {embedding.seconds:.2f} s"
              + (f" -> {embedding.path}" if embedding.path else ""))
    return 0


def _groundtruth(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import groundtruth as gt
    from .tasks import load as load_task

    lrs, steps = gt.check_grid(args.lr or gt.PAPER_LRS, args.steps or gt.PAPER_STEPS)  # before any training
    out = gt.check_output(args.out) if args.out else None
    task = load_task(args.task)
    results, errors = {}, {}
    for spec in args.checkpoints:
        try:
            results[spec] = gt.groundtruth(spec, task, lrs=lrs, steps=steps, batch_size=args.batch_size,
                                           image_size=args.image_size, seed=args.seed, cache_dir=args.cache_dir,
                                           device=args.device, progress=not args.no_progress,
                                           trust_pickle=args.trust_pickle, layer=args.layer)
        except InputError as error:  # one bad checkpoint is reported in its row; the others go on
            errors[spec] = str(error)
        except Exception as error:  # a stranger's network can fail in any library
            errors[spec] = f"{type(error).__name__}: {error}"
    Console().print(gt.table(task.name, results, errors))
    if out is not None:
        print(f"wrote {gt.write_results(out, task.name, results, errors)}", file=sys.stderr)
    return 1 if not any(r.best_accuracy is not None for r in results.values()) else 0


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .bench import evaluate_files as ef

    report = ef.evaluate_files(args.scores, args.groundtruth, intersect=args.intersect)
    for task, names in report.left_out.items():
        print(f"--intersect: task {task}: left out {', '.join(names)} (not in both files)", file=sys.stderr)
    if args.format == "table":
        Console().print(ef.to_table(report))
    else:
        writer = {"json": ef.to_json, "csv": ef.to_csv, "markdown": ef.to_markdown}[args.format]
        print(writer(report), end="" if args.format == "csv" else "\n")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import run_bench, to_markdown
    from .bench.suite import load_suite

    suite = load_suite(args.suite)  # validated before any work
    document = run_bench(suite, args.out, cache_dir=args.cache_dir, device=args.device,
                         progress=not args.no_progress, trust_pickle=args.trust_pickle)
    print(to_markdown(document))
    print(f"wrote {args.out}: table.md, table.csv, results.json, figure1_*.png, scatter_*.png", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neucrab", description="Rank pre-trained checkpoints for transfer learning.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("measures", help="list the measures and what each needs")
    listing.add_argument("--width", type=int, default=None, help="table width in characters")
    listing.set_defaults(run=_measures)

    ranking = commands.add_parser("rank", help="rank checkpoints for a task")
    ranking.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                         help="FILE (.onnx, TorchScript, .npz), ARCH=WEIGHTS, timm:NAME, hf:NAME or a model DIR")
    ranking.add_argument("--task", help="an image folder, a CSV, a .npz, or a built-in: digits, mnist5k")
    ranking.add_argument("--measure", action="append", metavar="NAME",
                         help="a measure (repeatable) or 'all'; default: nleep and the fast measures")
    ranking.add_argument("--format", choices=("table", "json", "csv"), default="table")
    ranking.add_argument("--out", metavar="DIR", help="also write ranking.json, ranking.csv, scores.png, report.html")
    ranking.add_argument("--example", action="store_true",
                         help="rank the built-in real pool (EfficientNet-Lite0/1/2, from-scratch, RapidOCR) on digits")
    ranking.add_argument("--layer", help="features from this named layer instead of the head's input")
    ranking.add_argument("--cache-dir", help="feature cache (default $NEUCRAB_CACHE or ~/.cache/neucrab)")
    ranking.add_argument("--batch-size", type=int, default=64)
    ranking.add_argument("--image-size", type=int, metavar="N", help="input size instead of the checkpoint's own")
    ranking.add_argument("--trust-pickle", action="store_true",
                         help="allow unpickling checkpoint files (runs code from the file: only for files you trust)")
    ranking.add_argument("--no-progress", action="store_true", help="no progress bars")
    ranking.set_defaults(run=_rank)

    extracting = commands.add_parser("extract", help="fill the feature cache for one checkpoint and task")
    extracting.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint spec, as for rank")
    extracting.add_argument("--task", required=True, help="an image folder, a CSV, a .npz, or digits, mnist5k")
    extracting.add_argument("--layer", help="features from this named layer instead of the head's input")
    extracting.add_argument("--split", choices=("train", "test", "both"), default="both")
    extracting.add_argument("--cache-dir", help="feature cache (default $NEUCRAB_CACHE or ~/.cache/neucrab)")
    extracting.add_argument("--batch-size", type=int, default=64)
    extracting.add_argument("--trust-pickle", action="store_true",
                            help="allow unpickling checkpoint files (runs code from the file: only trusted files)")
    extracting.add_argument("--no-progress", action="store_true", help="no progress bar")
    extracting.set_defaults(run=_extract)

    truth = commands.add_parser("groundtruth", help="fine-tune over a grid and keep the best test accuracy (the "
                                "paper's ground truth)")
    truth.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint specs, as for rank "
                       "(PyTorch ones: ONNX and precomputed features cannot be fine-tuned)")
    truth.add_argument("--task", required=True, help="an image folder, a CSV, a .npz, or digits, mnist5k")
    truth.add_argument("--lr", type=float, action="append", metavar="X",
                       help="a learning rate (repeatable); default the paper's 0.0001 ... 0.5")
    truth.add_argument("--steps", type=int, action="append", metavar="N",
                       help="a step count (repeatable); default the paper's 2500 ... 40000")
    truth.add_argument("--batch-size", type=int, default=512, help="default 512, as the paper")
    truth.add_argument("--image-size", type=int, metavar="N", help="input size instead of the checkpoint's own")
    truth.add_argument("--seed", type=int, default=0, help="data order and dropout seed")
    truth.add_argument("--out", metavar="FILE", help="write task,checkpoint,accuracy rows (.csv) or all runs (.json)")
    truth.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    truth.add_argument("--layer", help="fine-tune up to this named layer instead of the head's input")
    truth.add_argument("--cache-dir", help="cache root (runs under its groundtruth/; default $NEUCRAB_CACHE or "
                       "~/.cache/neucrab)")
    truth.add_argument("--trust-pickle", action="store_true",
                       help="allow unpickling checkpoint files (runs code from the file: only trusted files)")
    truth.add_argument("--no-progress", action="store_true", help="no progress bar")
    truth.set_defaults(run=_groundtruth)

    judging = commands.add_parser("evaluate", help="judge saved rankings against a ground truth (Recall@k, Rel@k, "
                                  "Pearson, Kendall, weighted Kendall), per task and averaged")
    judging.add_argument("--scores", required=True, action="append", metavar="FILE",
                         help="`neucrab rank --format json` output (one task or a list), or a CSV "
                              "task,checkpoint,measure,score; repeatable")
    judging.add_argument("--groundtruth", required=True, metavar="FILE",
                         help="CSV task,checkpoint,accuracy, its JSON forms, or paper:group1 .. paper:group4")
    judging.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                         help="table and markdown in percent; json and csv in fractions")
    judging.add_argument("--intersect", action="store_true",
                         help="judge only the checkpoints both files name (default: a mismatch is an error)")
    judging.set_defaults(run=_evaluate)

    benching = commands.add_parser("bench", help="run a benchmark suite: scores, fine-tuning ground truth, the "
                                   "paper's tables and figures")
    benching.add_argument("suite", metavar="SUITE_FILE", help="a JSON (or TOML) suite; see neucrab.bench.suite "
                          "(the paper's: src/neucrab/bench/suites/paper.json)")
    benching.add_argument("--out", required=True, metavar="DIR", help="folder for table.md/.csv, results.json, PNGs")
    benching.add_argument("--cache-dir", help="cache root (default $NEUCRAB_CACHE or ~/.cache/neucrab)")
    benching.add_argument("--device", help="fine-tuning device: cuda, cpu, ... (default: cuda when available)")
    benching.add_argument("--trust-pickle", action="store_true",
                          help="allow unpickling checkpoint files (runs code from the file: only trusted files)")
    benching.add_argument("--no-progress", action="store_true", help="no progress bars")
    benching.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        # Bad input is the user's to fix: one line, no traceback.
        print(f"neucrab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neucrab: interrupted; cached work is kept and the next run resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
