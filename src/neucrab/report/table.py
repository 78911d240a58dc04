"""The terminal table: checkpoints best first, each measure's score and rank, timings, agreement."""

from __future__ import annotations

from rich.table import Table

from ..cells import Note, NoteKind


def _format(value: float) -> str:
    return f"{value:.4g}"


def ranking_table(ranking) -> Table:
    ranks = ranking.ranks()
    table = Table(title=f"neucrab ranking on task {ranking.task} (best first by {ranking.measures[0]})")
    table.add_column("#", justify="right")
    table.add_column("checkpoint", no_wrap=True)
    grouped = any("group" in row.manifest for row in ranking.rows)  # a pool manifest's group column
    if grouped:
        table.add_column("group")
    for measure in ranking.measures:
        table.add_column(f"{measure}\n(rank)", justify="right")
    table.add_column("forward s", justify="right")
    for position, row in enumerate(ranking.rows, start=1):
        lead = [str(position), row.checkpoint] + ([str(row.manifest.get("group") or "")] if grouped else [])
        if row.error:
            table.add_row(*lead, f"[red]failed: {row.error}[/red]",
                          *[""] * (len(ranking.measures) - 1), "")
            continue
        cells = []
        for measure in ranking.measures:
            note = Note.parse(row.notes[measure]) if measure in row.notes else None
            if measure in row.scores:
                flag = " [yellow]saturated[/yellow]" if note is not None else ""
                cells.append(f"{_format(row.scores[measure])} ({ranks[measure][row.checkpoint]}){flag}")
            else:
                cells.append("[dim]n/a[/dim]" if note.kind is NoteKind.NOT_APPLICABLE else "[red]error[/red]")
        forward = row.seconds.get("forward")
        forward_text = "cached" if row.cached else (f"{forward:.1f}" if forward is not None else "")
        table.add_row(*lead, *cells, forward_text)
    agreement = ranking.agreement()
    if agreement:
        table.caption = "Kendall tau with " + ranking.measures[0] + ": " + ", ".join(
            f"{m} {'-' if tau is None else f'{tau:+.2f}'}" for m, tau in agreement.items()
        )
    times = _measure_seconds(ranking)
    if times:
        table.caption = (table.caption or "") + "\nmeasure seconds (all checkpoints): " + ", ".join(
            f"{m} {s:.2f}" for m, s in times.items()
        )
    return table


def _measure_seconds(ranking) -> dict[str, float]:
    return {m: sum(row.seconds.get(m, 0.0) for row in ranking.rows) for m in ranking.measures}
