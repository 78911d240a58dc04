"""A small progress bar on stderr (rich), silent when disabled or when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, what: str, *, enabled: bool = True):
    """Yield `advance(label)`, to be called once per finished unit of work."""
    if not enabled or not sys.stderr.isatty():
        yield lambda label=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task_id = progress.add_task("", total=total)

        def advance(label=None):
            progress.update(task_id, advance=1, description=str(label or ""))

        yield advance
