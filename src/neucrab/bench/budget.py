"""What a budget of fine-tuning buys: `neucrab select`'s successive halving replayed on a bench's own runs.

    python -m neucrab.bench.budget results/mini [--out results/mini/budget.md]

Every pool (group x task) of a finished bench has, per checkpoint, the sweep's seed-0 runs at each learning rate
and step count (groundtruth/<group>/<task>.json) and the ground truth (results.json). Replayed at one learning
rate (LR) and the sweep's two largest step counts, successive halving keeps the K checkpoints the recommended
score ranks highest (`neucrab.recommend.RECIPE`, combined from the scores in results.json), trains them the
shorter count, keeps the better half and trains those the longer count: cost K x short + ceil(K / 2) x long
steps. The full sweep's cost is checkpoints x learning rates x the longest count. For each budget (a fraction of
the full sweep) the largest K that fits is used (K < 2: the recommendation alone), and the pick is judged by
Recall@1 and Rel@1 against the ground truth. Beside it: the recommendation alone (no fine-tuning), and the same
short runs spent evenly (every checkpoint the shorter count, the best of them picked).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .loto import combined, write_report
from .run import _slug

LR = 0.01
BUDGETS = (0.05, 0.10, 0.20)


def _accuracy_at(runs: list[dict], lr: float, steps: int) -> float:
    for run in runs:
        if math.isclose(run["lr"], lr) and run["steps"] == steps:
            return run["accuracy"] if run["accuracy"] is not None else -1.0
    raise KeyError((lr, steps))


def _judge(pick: str, truth: dict) -> tuple[float, float]:
    best = max(truth.values())
    return float(math.isclose(truth[pick], best, abs_tol=1e-12)), float(truth[pick] / best)


def replay(folder: Path, lr: float = LR) -> dict:
    from ..recommend import RECIPE

    document = json.loads((folder / "results.json").read_text())
    steps = document["sweep"]["steps"]
    short, long = steps[-2], steps[-1]
    lrs = document["sweep"]["lrs"]
    rows = {"recommendation alone": [], "even: every checkpoint the short run": []}
    rows.update({f"successive halving at {int(100 * b)}%": [] for b in BUDGETS})
    for group, tasks in document["groups"].items():
        for task, result in tasks.items():
            truth = result["accuracies"]
            if len(truth) < 2:
                continue
            runs = json.loads((folder / "groundtruth" / _slug(group) / f"{_slug(task)}.json").read_text())["runs"]
            recommended = combined({"scores": result["scores"], "accuracies": truth}, RECIPE.measures, "rank")
            order = sorted(truth, key=lambda n: -recommended.get(n, -np.inf))
            full = len(truth) * len(lrs) * long
            rows["recommendation alone"].append((*_judge(order[0], truth), 0.0))
            even = max(truth, key=lambda n: (_accuracy_at(runs[n], lr, short), -order.index(n)))
            rows["even: every checkpoint the short run"].append((*_judge(even, truth), len(truth) * short / full))
            for budget in BUDGETS:
                fits = [k for k in range(2, len(truth) + 1) if k * short + math.ceil(k / 2) * long <= budget * full]
                if not fits:
                    rows[f"successive halving at {int(100 * budget)}%"].append((*_judge(order[0], truth), 0.0))
                    continue
                k = max(fits)
                first = sorted(order[:k], key=lambda n: (-_accuracy_at(runs[n], lr, short), order.index(n)))
                kept = first[: math.ceil(k / 2)]
                pick = sorted(kept, key=lambda n: (-_accuracy_at(runs[n], lr, long), kept.index(n)))[0]
                cost = (k * short + math.ceil(k / 2) * long) / full
                rows[f"successive halving at {int(100 * budget)}%"].append((*_judge(pick, truth), cost))
    return {"lr": lr, "steps": [short, long], "pools": len(rows["recommendation alone"]),
            "strategies": {name: {"recall@1": float(np.mean([v[0] for v in values])),
                                  "rel@1": float(np.mean([v[1] for v in values])),
                                  "cost": float(np.mean([v[2] for v in values]))} for name, values in rows.items()}}


def to_markdown(report: dict) -> str:
    lines = [f"# Budgeted confirmation replayed on {report['pools']} pools (lr {report['lr']:g}, "
             f"{report['steps'][0]} then {report['steps'][1]} steps)", "",
             "| strategy | mean cost (fraction of the full sweep) | Recall@1 | Rel@1 |", "|---|---:|---:|---:|"]
    for name, row in report["strategies"].items():
        lines.append(f"| {name} | {100 * row['cost']:.1f}% | {100 * row['recall@1']:.1f} | {100 * row['rel@1']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a bench output folder (results.json and groundtruth/)")
    parser.add_argument("--out", help="write the markdown table here (and the JSON beside it)")
    args = parser.parse_args(argv)
    report = replay(Path(args.folder))
    if args.out:
        write_report(args.out, to_markdown(report), report)
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
