"""What a budget of fine-tuning buys: `neucrab select`'s schedules replayed on a bench's own runs.

    python -m neucrab.bench.budget results/mini [--out results/mini/budget.md]   (also budget.json, budget.png)

Every pool (group x task) of a finished bench has, per checkpoint, the sweep's seed-0 runs at each learning rate
and step count (groundtruth/<group>/<task>.json) and the ground truth (results.json). A schedule confirms the
recommendation with some of those runs, at one learning rate, on the checkpoints the recommended score ranks
highest (`neucrab.recommend.RECIPE`, combined from the scores in results.json):

- "halving": successive halving, `neucrab select`'s default: the top K the shorter count, the better half the
  longer count (K x short + ceil(K / 2) x long steps);
- "long": the top K the longer count, the best of them picked (K x long);
- "short": the top K the shorter count, the best of them picked (K x short);
- "sweep": the top K at every learning rate of the sweep, the longer count, the best run picked (K x LRs x long):
  the ground truth's own protocol on a shortlist, so it needs no learning rate of its own.

For a budget (a fraction of the full sweep, whose cost is counted as checkpoints x learning rates x the longest
count: an undercount, so the fractions are if anything too high), K is the largest that fits (K < 2: the
recommendation alone). The pick is judged by Recall@1 (it is a best checkpoint) and Rel@1 (its accuracy over the
best's). Beside every schedule: the recommendation alone (no fine-tuning), the best zero-fine-tuning measure in
hindsight (the one with the highest Recall@1 over all pools: an optimistic baseline), and the same short runs
spent evenly on every checkpoint.

Which schedule and learning rate `select` should use is chosen by leave-one-task-out: for each task, the
(schedule, learning rate) with the highest mean Recall@1 (then Rel@1) on the other tasks' pools at the budget,
scored on that task's pools. The result is the mean over tasks with a 95% bootstrap interval over tasks and a
sign test against the recommendation alone.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .loto import combined, write_report
from .run import _slug
from .statistics import bootstrap_interval, sign_test

BUDGETS = (0.05, 0.10, 0.20)
SCHEDULES = ("halving", "long", "short")  # at one learning rate; "sweep" runs them all
ZERO_FINETUNING = ("finetune",)  # measure name prefixes that fine-tune: not zero-fine-tuning baselines


def _accuracy_at(runs: list[dict], lr: float, steps: int) -> float:
    for run in runs:
        if math.isclose(run["lr"], lr) and run["steps"] == steps:
            return run["accuracy"] if run["accuracy"] is not None else -1.0
    raise KeyError((lr, steps))


def _judge(pick: str, truth: dict) -> tuple[float, float]:
    best = max(truth.values())
    return float(math.isclose(truth[pick], best, abs_tol=1e-12)), float(truth[pick] / best)


def _cost(schedule: str, k: int, short: int, long: int, lr_count: int) -> int:
    return {"halving": k * short + math.ceil(k / 2) * long, "long": k * long, "short": k * short,
            "sweep": k * lr_count * long}[schedule]


def run_schedule(schedule: str, order: list[str], runs: dict, lrs: list[float], short: int, long: int,
                 budget_steps: float) -> tuple[str, int]:
    """(pick, steps spent) of one schedule on one pool within `budget_steps`; `order`: best recommended first;
    `lrs`: the one learning rate of a one-rate schedule, or every rate for "sweep"."""
    fits = [k for k in range(2, len(order) + 1) if _cost(schedule, k, short, long, len(lrs)) <= budget_steps]
    if not fits:
        return order[0], 0
    k = max(fits)

    def best_of(names, steps):  # the best run over `lrs`; ties keep the recommendation's order
        return sorted(names, key=lambda n: (-max(_accuracy_at(runs[n], lr, steps) for lr in lrs), order.index(n)))

    if schedule == "halving":
        pick = best_of(best_of(order[:k], short)[: math.ceil(k / 2)], long)[0]
    else:
        pick = best_of(order[:k], short if schedule == "short" else long)[0]
    return pick, _cost(schedule, k, short, long, len(lrs))


def _pools(folder: Path) -> tuple[dict, list[dict]]:
    from ..recommend import RECIPE

    document = json.loads((folder / "results.json").read_text())
    found = []
    for group, tasks in document["groups"].items():
        for task, result in tasks.items():
            truth = result["accuracies"]
            if len(truth) < 2:
                continue
            runs = json.loads((folder / "groundtruth" / _slug(group) / f"{_slug(task)}.json").read_text())["runs"]
            recommended = combined({"scores": result["scores"], "accuracies": truth}, RECIPE.measures, "rank")
            order = sorted(truth, key=lambda n: -recommended.get(n, -np.inf))
            found.append({"group": group, "task": task, "truth": truth, "runs": runs, "order": order,
                          "scores": result["scores"]})
    return document, found


def _zero_finetuning_pick(pool: dict, measure: str) -> str | None:
    scores = {n: s for n, s in pool["scores"].get(measure, {}).items() if n in pool["truth"] and s is not None}
    return max(pool["order"], key=lambda n: scores.get(n, -np.inf)) if scores else None


def replay(folder: Path) -> dict:
    """Every strategy on every pool: {"strategies": {name: per-pool [(recall, rel, cost)]}, ...} summarised."""
    document, pool_list = _pools(folder)
    steps, lrs = document["sweep"]["steps"], document["sweep"]["lrs"]
    short, long = steps[-2], steps[-1]
    per_pool: dict[str, list] = {"recommendation alone": []}
    measures = sorted({m for pool in pool_list for m in pool["scores"]
                       if not m.startswith(ZERO_FINETUNING)})
    hindsight = {m: [] for m in measures}
    for pool in pool_list:
        truth, order, runs = pool["truth"], pool["order"], pool["runs"]
        full = len(truth) * len(lrs) * long
        per_pool["recommendation alone"].append((*_judge(order[0], truth), 0.0))
        for measure in measures:
            pick = _zero_finetuning_pick(pool, measure)
            hindsight[measure].append((*_judge(pick, truth), 0.0) if pick else (0.0, 0.0, 0.0))
        for lr in lrs:
            even = sorted(truth, key=lambda n: (-_accuracy_at(runs[n], lr, short), order.index(n)))[0]
            per_pool.setdefault(f"even: every checkpoint {short} steps at lr {lr:g}", []).append(
                (*_judge(even, truth), len(truth) * short / full))
            for budget in BUDGETS:
                for schedule in SCHEDULES:
                    pick, spent = run_schedule(schedule, order, runs, [lr], short, long, budget * full)
                    per_pool.setdefault(_name(schedule, lr, budget), []).append((*_judge(pick, truth), spent / full))
        for budget in BUDGETS:
            pick, spent = run_schedule("sweep", order, runs, lrs, short, long, budget * full)
            per_pool.setdefault(_name("sweep", None, budget), []).append((*_judge(pick, truth), spent / full))
    best_measure = max(measures, key=lambda m: (np.mean([v[0] for v in hindsight[m]]),
                                                np.mean([v[1] for v in hindsight[m]])))
    per_pool[f"best zero-fine-tuning measure in hindsight ({best_measure})"] = hindsight[best_measure]
    labels = [f"{pool['group']}/{pool['task']}" for pool in pool_list]
    tasks = [pool["task"] for pool in pool_list]
    report = {"steps": [short, long], "lrs": lrs, "pools": len(pool_list), "best_zero_finetuning": best_measure,
              "strategies": {name: _summary(values) for name, values in per_pool.items()},
              "leave_one_task_out": {f"{int(100 * b)}%": _loto(per_pool, tasks, lrs, b) for b in BUDGETS},
              "pool_labels": labels}
    return report


def _name(schedule: str, lr: float | None, budget: float) -> str:
    return f"{schedule} at {int(100 * budget)}%, " + ("every lr" if lr is None else f"lr {lr:g}")


def _summary(values: list) -> dict:
    return {"recall@1": float(np.mean([v[0] for v in values])), "rel@1": float(np.mean([v[1] for v in values])),
            "cost": float(np.mean([v[2] for v in values]))}


def _loto(per_pool: dict, tasks: list[str], lrs: list[float], budget: float) -> dict:
    """The (schedule, lr) chosen on the other tasks, scored on each left-out task; against the recommendation."""
    candidates = [_name(s, lr, budget) for s in SCHEDULES for lr in lrs] + [_name("sweep", None, budget)]
    chosen, recall, rel, cost, alone = {}, {}, {}, {}, {}
    for task in sorted(set(tasks)):
        inside = [i for i, t in enumerate(tasks) if t != task]
        outside = [i for i, t in enumerate(tasks) if t == task]

        def fit(name, inside=inside):  # mean Recall@1, then Rel@1, on the other tasks' pools
            values = [per_pool[name][i] for i in inside]
            return np.mean([v[0] for v in values]), np.mean([v[1] for v in values])

        chosen[task] = max(candidates, key=fit)
        recall[task] = float(np.mean([per_pool[chosen[task]][i][0] for i in outside]))
        rel[task] = float(np.mean([per_pool[chosen[task]][i][1] for i in outside]))
        cost[task] = float(np.mean([per_pool[chosen[task]][i][2] for i in outside]))
        alone[task] = float(np.mean([per_pool["recommendation alone"][i][0] for i in outside]))
    difference = [recall[t] - alone[t] for t in recall]
    return {"chosen": chosen, "recall@1": float(np.mean(list(recall.values()))),
            "recall@1_interval": bootstrap_interval(list(recall.values())),
            "rel@1": float(np.mean(list(rel.values()))), "cost": float(np.mean(list(cost.values()))),
            "recommendation_recall@1": float(np.mean(list(alone.values()))),
            "difference_interval": bootstrap_interval(difference), "sign_test": sign_test(recall, alone)}


def to_markdown(report: dict) -> str:
    lines = [f"# Budgeted confirmation replayed on {report['pools']} pools ({report['steps'][0]} and "
             f"{report['steps'][1]} steps; learning rates {', '.join(f'{lr:g}' for lr in report['lrs'])})", "",
             "Costs are fractions of the full sweep (checkpoints x learning rates x the longest count). Recall@1 "
             "and Rel@1 in percent, mean over pools.", "",
             "## The schedule chosen by leave-one-task-out", "",
             "| budget | mean cost | Recall@1 [95% over tasks] | Rel@1 | recommendation alone | difference [95%] "
             "| sign test (wins-losses-ties, p) | chosen per left-out task |", "|---|---:|---|---:|---:|---|---|---|"]
    for budget, row in report["leave_one_task_out"].items():
        low, high = row["recall@1_interval"] or (math.nan, math.nan)
        d_low, d_high = row["difference_interval"] or (math.nan, math.nan)
        test = row["sign_test"]
        picks = "; ".join(f"{task}: {name.split(' at ')[0]}, {name.split(', ')[-1]}"
                          for task, name in row["chosen"].items())
        lines.append(f"| {budget} | {100 * row['cost']:.1f}% | {100 * row['recall@1']:.1f} [{100 * low:.1f}, "
                     f"{100 * high:.1f}] | {100 * row['rel@1']:.1f} | {100 * row['recommendation_recall@1']:.1f} | "
                     f"[{100 * d_low:+.1f}, {100 * d_high:+.1f}] | {test['wins']}-{test['losses']}-{test['ties']}, "
                     f"p {test['p']:.2f} | {picks} |")
    lines += ["", "## Every strategy (in-sample: a table to read, not to choose from)", "",
              "| strategy | mean cost | Recall@1 | Rel@1 |", "|---|---:|---:|---:|"]
    for name, row in report["strategies"].items():
        lines.append(f"| {name} | {100 * row['cost']:.1f}% | {100 * row['recall@1']:.1f} | {100 * row['rel@1']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """The budget curve: Recall@1 against mean cost for every schedule and learning rate (in-sample, thin), the
    leave-one-task-out choice with its 95% interval over tasks, and the zero-fine-tuning references."""
    from matplotlib.figure import Figure

    from ..report.plot import save_figure

    figure = Figure(figsize=(6.4, 4.6))
    axis = figure.subplots()
    strategies = report["strategies"]
    colours = {"halving": "tab:blue", "long": "tab:green", "short": "tab:orange", "sweep": "tab:purple"}
    for schedule, lr in [(s, lr) for s in SCHEDULES for lr in report["lrs"]] + [("sweep", None)]:
        points = [strategies[_name(schedule, lr, b)] for b in BUDGETS]
        style = "-" if lr is None else ("-", "--", ":")[report["lrs"].index(lr) % 3]
        axis.plot([100 * p["cost"] for p in points], [100 * p["recall@1"] for p in points], marker=".",
                  linewidth=0.9, alpha=0.7, color=colours[schedule], linestyle=style,
                  label=_name(schedule, lr, 0).replace(" at 0%", ""))
    for budget, row in report["leave_one_task_out"].items():
        low, high = row["recall@1_interval"] or (row["recall@1"], row["recall@1"])
        axis.errorbar([100 * row["cost"]], [100 * row["recall@1"]], color="black", marker="D", capsize=3,
                      yerr=[[100 * (row["recall@1"] - low)], [100 * (high - row["recall@1"])]],
                      label="chosen leave-one-task-out (95% over tasks)" if budget == "5%" else None)
    alone = strategies["recommendation alone"]["recall@1"]
    axis.axhline(100 * alone, color="black", linestyle="--", linewidth=1, label="recommendation alone")
    hindsight = f"best zero-fine-tuning measure in hindsight ({report['best_zero_finetuning']})"
    if strategies[hindsight]["recall@1"] != alone:
        axis.axhline(100 * strategies[hindsight]["recall@1"], color="grey", linestyle=":", label=hindsight)
    axis.set_xlabel("mean cost, % of the full sweep")
    axis.set_ylabel("Recall@1 (%)")
    axis.set_title(f"Budgeted confirmation on {report['pools']} pools")
    axis.legend(fontsize=6, ncol=2)
    return save_figure(figure, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a bench output folder (results.json and groundtruth/)")
    parser.add_argument("--out", help="write the markdown table here (and the JSON and the PNG plot beside it)")
    args = parser.parse_args(argv)
    report = replay(Path(args.folder))
    if args.out:
        write_report(args.out, to_markdown(report), report)
        plot(report, Path(args.out).with_suffix(".png"))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
