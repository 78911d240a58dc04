"""Is P(best) calibrated? Among checkpoints given P(best) near p, about a fraction p should be the true best.

    python -m neucrab.bench.calibration mini --results results/mini/results.json --cache-dir CACHE \\
        --out results/mini/calibration.md

ranks every pool (group x task) of a suite with the recommended score (`neucrab.recommend`; the features and
scores come from the cache the bench run filled, so only the subsample draws are computed) and pairs each
checkpoint's P(best) with whether it is a best checkpoint by the bench's ground truth (ties at the top all count
as best). Three P(best)s are judged:

- over subsamples: the fraction of draws a checkpoint wins (sampling noise only);
- calibrated, leave-one-task-out: softmax(z / T) averaged over draws (`recommend.calibrated_p_best`), T fitted
  by maximum likelihood of the true best on the pools of the other tasks only, so no pool is scored by a T that
  saw it: the honest estimate of how calibrated the shipped P(best) is on a new task;
- calibrated with the T fitted on all pools (the one shipped as `recommend.TEMPERATURE`; in-sample).

For each: a reliability table (P(best) bins of width 0.1: mean P(best), fraction truly best, count), the expected
calibration error (ECE: the count-weighted mean gap), the mean log-likelihood of the true best and a reliability
plot of the leave-one-task-out one beside the table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINS = np.linspace(0.0, 1.0, 11)
TEMPERATURES = np.geomspace(0.02, 50.0, 241)  # the grid T is fitted on (ratio ~1.03 between neighbours)


@dataclass
class Pool:
    group: str
    task: str
    names: list[str]
    z: np.ndarray  # (draws, checkpoints): the combined score standardised over the pool, per draw
    wins: np.ndarray  # fraction of draws each checkpoint wins
    best: np.ndarray  # bool: a best checkpoint by the ground truth


def pools(suite, results: dict, *, cache_dir=None, progress: bool = False) -> list[Pool]:
    """Every pool of the suite with a ground truth of at least two of its checkpoints."""
    from ..ranking import rank
    from ..recommend import RECOMMENDED, draw_z

    found = []
    for group, entries in suite.groups.items():
        for task_spec in suite.tasks:
            truth = results["groups"][group].get(task_spec, {}).get("accuracies", {})
            if len(truth) < 2:
                continue
            ranking = rank([e.spec for e in entries], task_spec, [RECOMMENDED], names=[e.name for e in entries],
                           cache_dir=cache_dir, progress=progress, image_size=suite.image_size)
            # Only checkpoints with a ground truth compete (one whose fine-tuning failed can never be the best).
            drawn, z = draw_z([row for row in ranking.rows if row.checkpoint in truth], ranking.left_out)
            if len(drawn) < 2 or not len(z):
                continue
            names = [row.checkpoint for row in drawn]
            top = max(truth[name] for name in names)
            wins = np.array([np.mean(z[:, i] == z.max(axis=1)) for i in range(len(names))])
            found.append(Pool(group, task_spec, names, z, wins,
                              np.array([np.isclose(truth[name], top, rtol=0, atol=1e-12) for name in names])))
    return found


def log_likelihood(pool_list: list[Pool], temperature: float) -> float:
    """Mean over pools of log P(the true best), P(best) calibrated at `temperature` (ties at the top summed)."""
    from ..recommend import calibrated_p_best

    values = [np.log(max(calibrated_p_best(pool.z, temperature)[pool.best].sum(), 1e-12)) for pool in pool_list]
    return float(np.mean(values))


def fit_temperature(pool_list: list[Pool]) -> float:
    return float(max(TEMPERATURES, key=lambda t: log_likelihood(pool_list, t)))


def leave_one_task_out(pool_list: list[Pool]) -> tuple[list[tuple[float, bool, str]], dict[str, float]]:
    """(P(best), truly best, pool label) with P(best) calibrated by a T fitted on the other tasks' pools, and the
    T each task got."""
    from ..recommend import calibrated_p_best

    found, fitted = [], {}
    for task in sorted({pool.task for pool in pool_list}):
        fitted[task] = fit_temperature([pool for pool in pool_list if pool.task != task])
        for pool in (pool for pool in pool_list if pool.task == task):
            found += _pairs(pool, calibrated_p_best(pool.z, fitted[task]))
    return found, fitted


def _pairs(pool: Pool, p: np.ndarray) -> list[tuple[float, bool, str]]:
    return [(float(value), bool(best), f"{pool.group}/{pool.task}") for value, best in zip(p, pool.best)]


def pairs(pool_list: list[Pool], kind: str, temperature: float | None = None) -> list[tuple[float, bool, str]]:
    """(P(best), truly best, pool label) of every checkpoint: `kind` "subsamples" or "calibrated" (at T)."""
    from ..recommend import calibrated_p_best

    found = []
    for pool in pool_list:
        found += _pairs(pool, pool.wins if kind == "subsamples" else calibrated_p_best(pool.z, temperature))
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


BOOTSTRAP = 2000  # resamples of the pools for the ECE intervals


def calibration_report(pool_list: list[Pool]) -> dict:
    """The P(best)s' reliability (see the module docstring), T fitted on all pools and per left-out task, with
    95% bootstrap intervals over pools for each ECE and for the paired ECE difference to the subsample one."""
    loto, fitted = leave_one_task_out(pool_list)
    temperature = fit_temperature(pool_list)
    uniform = [pair for pool in pool_list for pair in _pairs(pool, np.full(len(pool.names), 1 / len(pool.names)))]
    found = {"subsamples": pairs(pool_list, "subsamples"), "leave_one_task_out": loto,
             "in_sample": pairs(pool_list, "calibrated", temperature), "uniform": uniform}
    report = {"pools": len(pool_list), "checkpoints": sum(len(pool.names) for pool in pool_list),
              "temperature": temperature, "temperature_by_left_out_task": fitted}
    labels = sorted({label for _, _, label in loto})
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, len(labels), size=(BOOTSTRAP, len(labels)))
    stats = {key: _resampled(values, labels, resamples) for key, values in found.items()}
    for key, values in found.items():
        report[key] = reliability(values)
        report[key]["log_likelihood"] = _mean_log_p_of_best(values)
        for name, (draws, reference) in (("ece", (stats[key][0], stats["subsamples"][0])),
                                         ("log_likelihood", (stats[key][1], stats["uniform"][1]))):
            report[key][f"{name}_interval"] = [float(v) for v in np.percentile(draws, [2.5, 97.5])]
            report[key][f"{name}_paired_difference_interval"] = [
                float(v) for v in np.percentile(draws - reference, [2.5, 97.5])]
    return report


def _resampled(found, labels: list[str], resamples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ECE and mean log P(true best) of each bootstrap resample of the pools (rows of `resamples`)."""
    bins = len(BINS) - 1
    # per pool: sum of P and count of true best in each bin, the checkpoint count, and log P(true best)
    p_sums, best_sums, counts, log_p = (np.zeros((len(labels), bins)), np.zeros((len(labels), bins)),
                                        np.zeros(len(labels)), np.zeros(len(labels)))
    for p, best, label in found:
        i, b = labels.index(label), min(int(p * bins), bins - 1)
        p_sums[i, b] += p
        best_sums[i, b] += best
        counts[i] += 1
        log_p[i] += p if best else 0.0
    log_p = np.log(np.maximum(log_p, 1e-12))
    gaps = np.abs(p_sums[resamples].sum(axis=1) - best_sums[resamples].sum(axis=1)).sum(axis=1)
    return gaps / counts[resamples].sum(axis=1), log_p[resamples].mean(axis=1)


def _mean_log_p_of_best(found) -> float:
    """Mean over pools of log (summed P(best) of its true best checkpoints), floored at 1e-12 (log -27.6)."""
    totals: dict[str, float] = {}
    for p, best, label in found:
        totals[label] = totals.get(label, 0.0) + (p if best else 0.0)
    return float(np.mean([np.log(max(total, 1e-12)) for total in totals.values()]))


TITLES = {"subsamples": "P(best) over training subsamples (sampling noise only)",
          "leave_one_task_out": "Calibrated P(best), T fitted on the other tasks (leave-one-task-out)",
          "in_sample": "Calibrated P(best), T fitted on all pools (shipped; in-sample)",
          "uniform": "Reference: 1 / pool size for every checkpoint (knows nothing)"}


def to_markdown(report: dict) -> str:
    fitted = ", ".join(f"{task} {t:.2f}" for task, t in report["temperature_by_left_out_task"].items())
    lines = [f"# Calibration of P(best) over {report['pools']} pools ({report['checkpoints']} checkpoints)", "",
             f"Shipped temperature T = {report['temperature']:.3f} (fitted on all pools). T fitted without each "
             f"task: {fitted}.", "",
             "Intervals: 95% bootstrap over pools (2,000 resamples). Paired differences use the same resampled "
             "pools: ECE against the subsample P(best), mean log P(true best) against the uniform reference (higher "
             "is better; only this one rewards telling the best apart: a P(best) that knows nothing can have a "
             "small ECE).", "",
             "| P(best) | ECE [95%] | ECE minus subsamples' | mean log P(true best) [95%] | minus uniform's |",
             "|---|---|---|---|---|"]

    def interval(values, signed=False):
        return ("[{:+.3f}, {:+.3f}]" if signed else "[{:.3f}, {:.3f}]").format(*values)

    for key, title in TITLES.items():
        row = report[key]
        ece_diff = "" if key == "subsamples" else interval(row["ece_paired_difference_interval"], True)
        log_diff = "" if key == "uniform" else interval(row["log_likelihood_paired_difference_interval"], True)
        lines.append(f"| {title} | {row['ece']:.3f} {interval(row['ece_interval'])} | {ece_diff} | "
                     f"{row['log_likelihood']:.3f} {interval(row['log_likelihood_interval'])} | {log_diff} |")
    for key, title in TITLES.items():
        lines += ["", f"## {title}", "", "| P(best) bin | mean P(best) | fraction truly best | checkpoints |",
                  "|---|---:|---:|---:|"]
        for row in report[key]["bins"]:
            lines.append(f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['mean_p']:.3f} | "
                         f"{row['fraction_best']:.3f} | {row['count']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from ..report.plot import save_figure

    figure = Figure(figsize=(5.0, 4.6))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="calibrated")
    for key, label, marker in (("subsamples", "over subsamples", "s"),
                               ("leave_one_task_out", "calibrated (leave-one-task-out)", "o")):
        bins = report[key]["bins"]
        axis.scatter([b["mean_p"] for b in bins], [b["fraction_best"] for b in bins],
                     s=[12 + 4 * b["count"] for b in bins], marker=marker, alpha=0.7,
                     label=f"{label}: ECE {report[key]['ece']:.3f}")
    axis.set_xlabel("P(best) given by neucrab")
    axis.set_ylabel("fraction that is the true best")
    axis.set_title("reliability over Mini-NeuCRaB v2 pools (area: checkpoints)", fontsize="medium")
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
    report = calibration_report(pools(load_suite(args.suite), json.loads(Path(args.results).read_text()),
                                      cache_dir=args.cache_dir))
    out = Path(args.out)
    write_report(out, to_markdown(report), report)
    plot(report, out.with_suffix(".png"))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
