"""`--out DIR`: ranking.json, ranking.csv, scores.png and a self-contained report.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..cache import atomic_write
from .plot import plot_scores


def _html(ranking, png: bytes) -> str:
    ranks = ranking.ranks()
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ranking.measures)
    body = []
    for position, row in enumerate(ranking.rows, start=1):
        if row.error:
            cells = f'<td colspan="{len(ranking.measures) + 1}" class="error">failed: {html.escape(row.error)}</td>'
        else:
            cells = "".join(
                f"<td>{row.scores[m]:.4g} ({ranks[m][row.checkpoint]})</td>" if m in row.scores
                else f'<td class="na" title="{html.escape(row.notes.get(m, ""))}">n/a</td>'
                for m in ranking.measures
            )
            forward = "cached" if row.cached else f"{row.seconds.get('forward', 0.0):.1f}"
            cells += f"<td>{forward}</td>"
        body.append(f"<tr><td>{position}</td><td>{html.escape(row.checkpoint)}</td>{cells}</tr>")
    agreement = ", ".join(
        f"{html.escape(m)} {'-' if tau is None else f'{tau:+.2f}'}" for m, tau in ranking.agreement().items()
    )
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>neucrab ranking: {html.escape(ranking.task)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(2){{text-align:left}}
.na{{color:#999}}.error{{color:#b00;text-align:left}}</style></head><body>
<h1>neucrab ranking on {html.escape(ranking.task)}</h1>
<p>Checkpoints best first by <b>{html.escape(ranking.measures[0])}</b>; each cell is score (rank).
Kendall tau with the first measure: {agreement or "-"}.</p>
<table><tr><th>#</th><th>checkpoint</th>{head}<th>forward s</th></tr>
{"".join(body)}
</table>
<h2>Scores per checkpoint</h2><img alt="scores per checkpoint" src="data:image/png;base64,{image}">
</body></html>
"""


def write_outputs(ranking, out_dir) -> dict[str, Path]:
    """Write the four report files into `out_dir` (created if needed); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("ranking.json", "ranking.csv", "scores.png", "report.html")}
    atomic_write(paths["ranking.json"], ranking.to_json())
    atomic_write(paths["ranking.csv"], ranking.to_csv())
    plot_scores(ranking, paths["scores.png"])
    atomic_write(paths["report.html"], _html(ranking, paths["scores.png"].read_bytes()))
    return paths
