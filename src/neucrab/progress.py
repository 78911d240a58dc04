"""Progress bars on stderr (rich), silent when disabled or when stderr is not a terminal.

All bars share one Console so that a bar opened inside another (a checkpoint's extraction inside the pool's
progress) nests instead of garbling the terminal. A nested bar is always transient: a pool of hundreds of
checkpoints shows one bar for the pool and one for the unit at work, not a finished bar per checkpoint.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

_console = None
_open = [0]  # bars open now: one opened inside another is transient


def _stderr_console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True, completed: int = 0, transient=True):
    """Yield `advance(count=1, label=None)`, to be called as units of work finish."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda count=1, label=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[label]}"))
    with Progress(*columns, console=_stderr_console(), transient=transient or _open[0] > 0) as progress:
        bar = progress.add_task(description, total=total, completed=completed, rate="", label="")

        def advance(count: int = 1, label=None) -> None:
            progress.advance(bar, count)
            speed = progress.tasks[bar].speed
            progress.update(bar, rate=f"{speed:.1f}/s" if speed else "", label=str(label or ""))

        _open[0] += 1
        try:
            yield advance
        finally:
            _open[0] -= 1
