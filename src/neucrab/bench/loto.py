"""Leave-one-task-out: which way of combining measures predicts fine-tuning best on tasks it was not chosen on.

    python -m neucrab.bench.loto results/mini/results.json [--out results/mini/loto.md]

reads a bench document (`neucrab bench ... --out DIR` writes DIR/results.json: every measure's score and the
ground truth per group, task and checkpoint), and scores candidate recipes by leave-one-task-out: for each task,
a recipe's free choices (which measures to combine) are made on the other tasks only, then it is judged on the
left-out task's pools (one per group). Recipes:

- every single measure (no choice to make);
- `best single`: the measure with the highest mean weighted tau on the other tasks;
- `rank mean` / `z mean`: the mean of per-pool ranks, or of per-pool z-scores, of a set of cheap measures
  chosen on the other tasks by greedy forward selection (up to MAX_COMBINED measures, each added only while it
  raises the mean weighted tau). A measure constant over a pool is left out of that pool's combination.

Reported per recipe: mean weighted tau and Kendall over the left-out tasks with a 95% bootstrap interval over
tasks, overall and per group, and the measures each fold chose.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from ..cache import atomic_write
from .statistics import bootstrap_interval

# Measures computed from the features alone (or the head's outputs) in about a second: what a combined
# default may use. Fine-tuning measures and the converged probe cost training and are judged only alone.
CHEAP = ("nleep", "leep", "nce", "logme", "hscore", "shrinkage_hscore", "gbc", "transrate", "knn", "sfda", "parc",
         "linear_probe_1ep", "linear_probe_5ep", "mi", "mi_alpha0.5", "mi_pca", "mi_pca_alpha0.5")
MAX_COMBINED = 4


def pools(document: dict) -> list[dict]:
    """One pool per group and task: its scores (measure -> checkpoint -> score) and ground truth."""
    found = []
    for group, tasks in document["groups"].items():
        for task, result in tasks.items():
            found.append({"group": group, "task": task, "scores": result["scores"],
                          "accuracies": result["accuracies"]})
    return found


def _agreement(scores: dict, accuracies: dict) -> tuple[float, float] | None:
    names = [name for name in accuracies if name in scores]
    if len(names) < 3:
        return None
    x = np.array([scores[n] for n in names], dtype=np.float64)
    y = np.array([accuracies[n] for n in names], dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 0.0
    tau = stats.kendalltau(x, y).statistic
    return float(stats.weightedtau(x, y).statistic), 0.0 if math.isnan(tau) else float(tau)


def combined(pool: dict, measures, how: str) -> dict:
    """checkpoint -> combined score over `measures` (those with a non-constant score on every checkpoint of the
    pool that has all of them); higher = better."""
    usable = [m for m in measures if pool["scores"].get(m)]
    names = [n for n in pool["accuracies"] if all(n in pool["scores"][m] for m in usable)]
    columns = []
    for measure in usable:
        values = np.array([pool["scores"][measure][n] for n in names], dtype=np.float64)
        if len(values) < 2 or np.ptp(values) == 0:  # degenerate on this pool: carries no ranking
            continue
        columns.append(stats.rankdata(values) / len(values) if how == "rank" else
                       (values - values.mean()) / values.std())
    if not columns:
        return {}
    return dict(zip(names, np.mean(columns, axis=0).tolist()))


def judge(pool: dict, recipe) -> tuple[float, float] | None:
    """(weighted tau, Kendall) of a recipe ("single", measure) or (how, measures) on one pool."""
    kind, what = recipe
    scores = pool["scores"].get(what, {}) if kind == "single" else combined(pool, what, kind)
    return _agreement(scores, pool["accuracies"])


def _mean_weighted(pools_: list[dict], recipe) -> float:
    values = [v[0] for v in (judge(p, recipe) for p in pools_) if v is not None]
    return float(np.mean(values)) if values else -math.inf


def greedy(pools_: list[dict], how: str, candidates) -> tuple[str, tuple[str, ...]]:
    chosen: tuple[str, ...] = ()
    best = -math.inf
    while len(chosen) < MAX_COMBINED:
        trials = {m: _mean_weighted(pools_, (how, chosen + (m,))) for m in candidates if m not in chosen}
        if not trials:
            break
        measure, value = max(trials.items(), key=lambda item: item[1])
        if value <= best:
            break
        chosen, best = chosen + (measure,), value
    return how, chosen


def leave_one_task_out(document: dict) -> dict:
    all_pools = pools(document)
    tasks = sorted({p["task"] for p in all_pools})
    measures = [m for m in document["measures"]]
    cheap = [m for m in measures if m in CHEAP]
    procedures = {f"single: {m}": (lambda train, m=m: ("single", m)) for m in measures}
    procedures["best single (chosen on the other tasks)"] = lambda train: max(
        (("single", m) for m in measures), key=lambda r: _mean_weighted(train, r))
    procedures["rank mean (measures chosen on the other tasks)"] = lambda train: greedy(train, "rank", cheap)
    procedures["z mean (measures chosen on the other tasks)"] = lambda train: greedy(train, "z", cheap)
    results = {}
    for name, choose in procedures.items():
        per_task, per_group, chosen = {}, {}, {}
        for task in tasks:
            train = [p for p in all_pools if p["task"] != task]
            recipe = choose(train)
            chosen[task] = recipe[1] if isinstance(recipe[1], str) else list(recipe[1])
            judged = [(p["group"], judge(p, recipe)) for p in all_pools if p["task"] == task]
            judged = [(g, v) for g, v in judged if v is not None]
            if judged:
                per_task[task] = (float(np.mean([v[0] for _, v in judged])), float(np.mean([v[1] for _, v in judged])))
            for group, value in judged:
                per_group.setdefault(group, {})[task] = value
        results[name] = {"per_task": per_task, "chosen": chosen,
                         "weighted_tau": _summary([v[0] for v in per_task.values()]),
                         "kendall": _summary([v[1] for v in per_task.values()]),
                         "groups": {g: {"weighted_tau": _summary([v[0] for v in values.values()]),
                                        "kendall": _summary([v[1] for v in values.values()])}
                                    for g, values in sorted(per_group.items())}}
    return {"tasks": tasks, "recipes": results}


def _summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)) if values else None, "interval": bootstrap_interval(values),
            "tasks": len(values)}


def _cell(summary: dict) -> str:
    if summary["mean"] is None:
        return "-"
    interval = summary["interval"]
    text = f"{100 * summary['mean']:.1f}"
    return text if interval is None else f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def to_markdown(report: dict) -> str:
    recipes = report["recipes"]
    groups = sorted({g for r in recipes.values() for g in r["groups"]})
    order = sorted(recipes, key=lambda name: -(recipes[name]["weighted_tau"]["mean"] or -9))
    lines = [f"# Leave-one-task-out over {len(report['tasks'])} tasks ({', '.join(report['tasks'])})", "",
             "Weighted Kendall and Kendall (percent) on the left-out task, mean over tasks [95% bootstrap "
             "interval over tasks]; per group: weighted Kendall.", "",
             "| recipe | w. Kendall | Kendall | " + " | ".join(groups) + " |",
             "|---|---:|---:|" + "---:|" * len(groups)]
    for name in order:
        r = recipes[name]
        cells = [_cell(r["weighted_tau"]), _cell(r["kendall"])] + [_cell(r["groups"][g]["weighted_tau"])
                                                                    if g in r["groups"] else "-" for g in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Measures each fold chose (left-out task: choice):", ""]
    for name in order:
        if not name.startswith("single:"):
            folds = "; ".join(f"{task}: {', '.join(c) if isinstance(c, list) else c}"
                              for task, c in recipes[name]["chosen"].items())
            lines.append(f"- {name}: {folds}")
    return "\n".join(lines) + "\n"


def write_report(out, markdown: str, report: dict) -> None:
    """The markdown table at `out` and the report as JSON beside it (same name, .json)."""
    atomic_write(Path(out), markdown)
    atomic_write(Path(out).with_suffix(".json"), json.dumps(report, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a bench results.json")
    parser.add_argument("--out", help="write the markdown table here (and the JSON beside it)")
    args = parser.parse_args(argv)
    report = leave_one_task_out(json.loads(Path(args.results).read_text()))
    text = to_markdown(report)
    if args.out:
        write_report(args.out, text, report)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
