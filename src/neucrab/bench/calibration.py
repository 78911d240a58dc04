"""Is P(best) calibrated? Among checkpoints given P(best) near p, about a fraction p should be the true best.

    python -m neucrab.bench.calibration mini --results results/mini/results.json --cache-dir CACHE \\
        --out results/mini/calibration.md

ranks every pool (group x task) of a suite with the recommended score (`neucrab.recommend`; the features and
scores come from the cache the bench run filled, so only the subsample draws are computed), pairs each
checkpoint's P(best) with whether it is a best checkpoint by the bench's ground truth (ties at the top all count
as best), and writes a reliability table (P(best) bins of width 0.1: mean P(best), fraction truly best, count),
the expected calibration error (ECE: the count-weighted mean gap) and a reliability plot beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BINS = np.linspace(0.0, 1.0, 11)


def pairs(suite, results: dict, *, cache_dir=None, progress: bool = False) -> list[tuple[float, bool, str]]:
    """(P(best), truly best, pool label) for every checkpoint of every pool with a ground truth."""
    from ..ranking import rank
    from ..recommend import RECOMMENDED

    found = []
    for group, entries in suite.groups.items():
        for task_spec in suite.tasks:
            truth = results["groups"][group].get(task_spec, {}).get("accuracies", {})
            if len(truth) < 2:
                continue
            ranking = rank([e.spec for e in entries], task_spec, [RECOMMENDED], names=[e.name for e in entries],
                           cache_dir=cache_dir, progress=progress, image_size=suite.image_size)
            p_best = ranking.recommendation()["p_best"]
            top = max(truth.values())
            for name, accuracy in truth.items():
                if name in p_best:
                    found.append((p_best[name], bool(np.isclose(accuracy, top, rtol=0, atol=1e-12)),
                                  f"{group}/{task_spec}"))
    return found


def reliability(found) -> dict:
    p = np.array([f[0] for f in found])
    best = np.array([f[1] for f in found], dtype=float)
    rows, gap = [], 0.0
    for low, high in zip(BINS[:-1], BINS[1:]):
        inside = (p >= low) & ((p < high) if high < 1 else (p <= high))
        if inside.any():
            rows.append({"bin": [float(low), float(high)], "mean_p": float(p[inside].mean()),
                         "fraction_best": float(best[inside].mean()), "count": int(inside.sum())})
            gap += inside.sum() * abs(p[inside].mean() - best[inside].mean())
    return {"bins": rows, "ece": float(gap / len(p)) if len(p) else None, "checkpoints": int(len(p)),
            "pools": len({f[2] for f in found})}


def to_markdown(report: dict) -> str:
    lines = [f"# Calibration of P(best) over {report['pools']} pools ({report['checkpoints']} checkpoints)", "",
             f"Expected calibration error: {report['ece']:.3f}", "",
             "| P(best) bin | mean P(best) | fraction truly best | checkpoints |", "|---|---:|---:|---:|"]
    for row in report["bins"]:
        lines.append(f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['mean_p']:.3f} | {row['fraction_best']:.3f} "
                     f"| {row['count']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from ..report.plot import save_figure

    figure = Figure(figsize=(4.5, 4.2))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="calibrated")
    xs = [row["mean_p"] for row in report["bins"]]
    ys = [row["fraction_best"] for row in report["bins"]]
    sizes = [12 + 4 * row["count"] for row in report["bins"]]
    axis.scatter(xs, ys, s=sizes, label="bins (area: checkpoints)")
    axis.set_xlabel("P(best) given by neucrab")
    axis.set_ylabel("fraction that is the true best")
    axis.set_title(f"reliability, ECE {report['ece']:.3f}")
    axis.legend(fontsize="small", loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path)


def main(argv=None) -> int:
    from .loto import write_report
    from .suite import load_suite

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", help="a shipped suite name or a suite file (the one the results came from)")
    parser.add_argument("--results", required=True, help="the bench's results.json")
    parser.add_argument("--cache-dir", help="the cache the bench run filled")
    parser.add_argument("--out", required=True, help="markdown file; the plot and JSON go beside it")
    args = parser.parse_args(argv)
    report = reliability(pairs(load_suite(args.suite), json.loads(Path(args.results).read_text()),
                               cache_dir=args.cache_dir))
    out = Path(args.out)
    write_report(out, to_markdown(report), report)
    plot(report, out.with_suffix(".png"))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
