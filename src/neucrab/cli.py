"""The `neucrab` command line. Each subcommand is a small function; heavy imports happen inside it."""

from __future__ import annotations

import argparse
import sys

from .errors import InputError


def _measures(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .measures import REGISTRY

    table = Table(title="neucrab measures (higher score = predicted to transfer better)")
    for column in ("name", "needs", "what it does", "citation", "care taken"):
        table.add_column(column, overflow="fold")
    for info in REGISTRY.values():
        table.add_row(info.name, info.needs, info.description, info.citation, info.care)
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
                   layer=args.layer, batch_size=args.batch_size, progress=not args.no_progress, names=names)
    if args.format == "json":
        print(ranking.to_json())
    elif args.format == "csv":
        print(ranking.to_csv(), end="")
    else:
        Console().print(ranking_table(ranking))
    if args.out:
        paths = write_outputs(ranking, args.out)
        print(f"report: {paths['report.html']} (also ranking.json, ranking.csv, scores.png)", file=sys.stderr)
    failed = [row for row in ranking.rows if row.error]
    return 1 if failed and len(failed) == len(ranking.rows) else 0


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
    ranking.add_argument("--trust-pickle", action="store_true",
                         help="allow unpickling checkpoint files (runs code from the file: only for files you trust)")
    ranking.add_argument("--no-progress", action="store_true", help="no progress bars")
    ranking.set_defaults(run=_rank)
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
