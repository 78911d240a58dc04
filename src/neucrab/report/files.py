"""`--out DIR`: ranking.json, ranking.csv, scores.png and a self-contained report.html.

The report leads with the answer (the recommended checkpoint and every checkpoint's P(best) as bars), then the
table, a heat map of how the measures agree with each other (Kendall tau over the checkpoints both score), and
the per-measure plot.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..cache import atomic_write
from ..cells import manifest_columns
from .plot import plot_scores


def _answer(ranking) -> str:
    """The recommendation and P(best) bars, or nothing when the ranking has no recommended score."""
    recommendation = ranking.recommendation()
    if not recommendation or not recommendation["checkpoint"]:
        return ""
    bars = []
    for name, p in sorted(recommendation["p_best"].items(), key=lambda item: -item[1]):
        bars.append(f'<div class="bar"><span class="name">{html.escape(name)}</span><span class="fill" '
                    f'style="width:{300 * p:.0f}px"></span> {p:.2f}</div>')
    close = recommendation["indistinguishable"]
    unsure = (f"<p>Cannot be told apart from it at this sample size: {html.escape(', '.join(close))}. Next step: "
              "fine-tune these briefly and compare (<code>neucrab select</code>).</p>") if close else ""
    left = "".join(f"<li>{html.escape(m)}: {html.escape(r)}</li>" for m, r in recommendation["left_out"].items())
    recipe = html.escape(", ".join(recommendation["recipe"]["measures"]))
    return (f'<h2>Recommended: {html.escape(recommendation["checkpoint"])}</h2>{unsure}'
            f"<p>P(best), calibrated on Mini-NeuCRaB v2 (recipe: {recipe}):</p>{''.join(bars)}"
            + (f"<p>Left out of the combination:</p><ul>{left}</ul>" if left else ""))


def _heat_map(ranking) -> str:
    """Kendall tau between every two measures, as a coloured table (blue agrees, red disagrees)."""
    from scipy.stats import kendalltau

    measures = ranking.measures
    cells = []
    for a in measures:
        row = [f"<th>{html.escape(a)}</th>"]
        for b in measures:
            pairs = [(r.scores[a], r.scores[b]) for r in ranking.rows if a in r.scores and b in r.scores]
            tau = kendalltau(*zip(*pairs)).statistic if len(pairs) >= 2 else float("nan")
            if tau != tau:  # NaN: too few checkpoints or a constant score
                row.append('<td class="na">-</td>')
                continue
            shade = int(255 - 175 * abs(tau))  # at most this dark, so the black figure stays readable
            colour = f"rgb({shade},{shade},255)" if tau >= 0 else f"rgb(255,{shade},{shade})"
            row.append(f'<td style="background:{colour}">{tau:+.2f}</td>')
        cells.append(f"<tr>{''.join(row)}</tr>")
    head = "".join(f"<th>{html.escape(m)}</th>" for m in measures)
    return f"<table><tr><th></th>{head}</tr>{''.join(cells)}</table>"


def _html(ranking, png: bytes) -> str:
    ranks = ranking.ranks()
    carried = manifest_columns(ranking.rows)  # a pool manifest's group and free columns
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ranking.measures)
    body = []
    for position, row in enumerate(ranking.rows, start=1):
        if row.error:
            cells = f'<td colspan="{len(ranking.measures) + 1}" class="error">failed: {html.escape(row.error)}</td>'
        else:
            cells = "".join(
                (f'<td class="saturated" title="{html.escape(row.notes[m])}">{row.scores[m]:.4g} '
                 f"({ranks[m][row.checkpoint]}) saturated</td>" if m in row.notes else
                 f"<td>{row.scores[m]:.4g} ({ranks[m][row.checkpoint]})</td>") if m in row.scores
                else f'<td class="na" title="{html.escape(row.notes.get(m, ""))}">n/a</td>'
                for m in ranking.measures
            )
            forward = "cached" if row.cached else f"{row.seconds.get('forward', 0.0):.1f}"
            cells += f"<td>{forward}</td>"
        cells += "".join(f"<td>{html.escape('' if row.manifest.get(k) is None else str(row.manifest[k]))}</td>"
                         for k in carried)
        body.append(f"<tr><td>{position}</td><td>{html.escape(row.checkpoint)}</td>{cells}</tr>")
    agreement = ", ".join(
        f"{html.escape(m)} {'-' if tau is None else f'{tau:+.2f}'}" for m, tau in ranking.agreement().items()
    )
    image = base64.b64encode(png).decode("ascii")
    carried_head = "".join(f"<th>{html.escape(key)}</th>" for key in carried)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>neucrab ranking: {html.escape(ranking.task)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(2){{text-align:left}}
img{{max-width:100%;height:auto}}
.na{{color:#999}}.saturated{{color:#a60}}.error{{color:#b00;text-align:left}}.bar{{margin:2px 0}}
.bar .name{{display:inline-block;width:22em}}.bar .fill{{display:inline-block;height:0.9em;background:#36c}}
</style></head><body>
<h1>neucrab ranking on {html.escape(ranking.task)}</h1>
{_answer(ranking)}
<p>Checkpoints best first by <b>{html.escape(ranking.measures[0])}</b>; each cell is score (rank).
Kendall tau with the first measure: {agreement or "-"}.</p>
<table><tr><th>#</th><th>checkpoint</th>{head}<th>forward s</th>{carried_head}</tr>
{"".join(body)}
</table>
<h2>How the measures agree (Kendall tau over the checkpoints both score)</h2>
{_heat_map(ranking)}
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
