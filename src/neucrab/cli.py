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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neucrab", description="Rank pre-trained checkpoints for transfer learning.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("measures", help="list the measures and what each needs")
    listing.add_argument("--width", type=int, default=None, help="table width in characters")
    listing.set_defaults(run=_measures)
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
