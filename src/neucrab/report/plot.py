"""A PNG of each measure's scores per checkpoint (one panel per measure, checkpoints in ranking order).

Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot, so no backend is switched and
no global figure state is touched: a notebook user's matplotlib stays as it was.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..cache import atomic_write


def save_figure(figure, path: Path, dpi: int = 110) -> Path:
    """Write `figure` as a PNG atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())


def plot_scores(ranking, path: Path) -> Path:
    from matplotlib.figure import Figure

    measures = ranking.measures
    names = [row.checkpoint for row in ranking.rows]
    columns = min(3, len(measures))
    rows = -(-len(measures) // columns)
    longest = max((len(name) for name in names), default=10)
    # Room on the left for full checkpoint names: a shortened name can be ambiguous (two "...best.pt").
    panel = 2.6 + 0.055 * longest
    figure = Figure(figsize=(panel * columns, 0.45 * len(names) * rows + 1.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, measure in zip(axes.flat, measures):
        values = [row.scores.get(measure) for row in ranking.rows]
        positions = [i for i, v in enumerate(values) if v is not None]
        axis.barh(positions, [values[i] for i in positions], color="tab:blue")
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(measure, fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(measures):]:
        axis.set_visible(False)
    figure.suptitle(f"scores on {ranking.task} (missing bar: not applicable or failed)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)
