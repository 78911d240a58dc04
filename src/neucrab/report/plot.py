"""A PNG of each measure's scores per checkpoint (one panel per measure, checkpoints in ranking order)."""

from __future__ import annotations

from pathlib import Path


def plot_scores(ranking, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    measures = ranking.measures
    names = [row.checkpoint for row in ranking.rows]
    short = [name if len(name) <= 28 else "..." + name[-25:] for name in names]
    columns = min(3, len(measures))
    rows = -(-len(measures) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 0.45 * len(names) * rows + 1.6),
                                squeeze=False)
    for axis, measure in zip(axes.flat, measures):
        values = [row.scores.get(measure) for row in ranking.rows]
        positions = [i for i, v in enumerate(values) if v is not None]
        axis.barh(positions, [values[i] for i in positions], color="tab:blue")
        axis.set_yticks(range(len(names)), short, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(measure, fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(measures):]:
        axis.set_visible(False)
    figure.suptitle(f"scores on {ranking.task} (missing bar: not applicable or failed)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
