"""`neucrab bench SUITE_FILE`: run a benchmark suite (see `neucrab.bench.suite`) end to end.

For each group and task: the measures' scores (`neucrab.rank`, features through the feature cache) and the
ground truth (`neucrab.groundtruth`, every run cached), then the paper's tables per group and over all groups
together: methods as rows; Recall@1, Rel@1, Recall@3, Rel@3, Pearson, Kendall, weighted Kendall (judged by
`neucrab.evaluate` per task, then averaged over tasks), GFLOPs and seconds as columns.

GFLOPs: `neucrab.cost.measure_cost` per checkpoint, summed over the group's checkpoints, averaged over tasks;
it excludes the shared forward pass, whose FLOPs (`neucrab.cost.forward_flops` per sample times the train and
test images, summed likewise) are reported in a caption line. Seconds: the measure's own time per checkpoint
(row.seconds), summed and averaged the same way (a cache hit costs no forward seconds).

Checkpoints that fail, lack a score or whose every fine-tuning run diverged are left out of that task's
judgement (recorded under "left_out"). Everything underneath is cached, so an interrupted bench resumes.

Writes into the output folder: results.json (fractions), table.csv (fractions), table.md (percent),
rankings/<group>/<task>.json, groundtruth/<group>/<task>.json, figure1_<group>.png and scatter_<group>.png.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np

from ..cache import atomic_write
from ..checkpoints.base import Trainable
from ..errors import InputError
from ..report.plot import save_figure
from .evaluate_files import HEADERS, METRICS, Scores, evaluate_scores
from .statistics import bootstrap_interval, noise_ceiling, sign_test
from .suite import Suite

ALL = "all groups"


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "x"


def _task_labels(tasks) -> list[str]:
    labels, seen = [], {}
    for task in tasks:
        seen[task.name] = seen.get(task.name, 0) + 1
        labels.append(task.name if seen[task.name] == 1 else f"{task.name}#{seen[task.name]}")
    return labels


def _costs(spec, task, measures, *, cache_dir, trust_pickle, trust_remote_code=False,
           image_size=None) -> tuple[dict, float | None]:
    """measure -> FLOPs (None where no formula applies) and the forward FLOPs over both splits (None if unknown),
    for one checkpoint. The features come from the cache that `rank` just filled."""
    from .. import checkpoints
    from ..checkpoints.base import at_image_size
    from ..cost import forward_flops, measure_cost
    from ..extract import extract

    checkpoint = at_image_size(checkpoints.load(spec, trust_pickle=trust_pickle,
                                                trust_remote_code=trust_remote_code), image_size)
    train = extract(checkpoint, task, "train", cache_dir=cache_dir, progress=False)
    n, d = int(train.features.shape[0]), int(train.features.shape[1])
    sources = int(train.probs.shape[1]) if train.probs is not None else None
    costs = {}
    for measure in measures:
        try:
            costs[measure] = measure_cost(measure, n, d, task.n_classes, sources=sources, test_n=len(task.test))
        except InputError:
            costs[measure] = None
    forward = None
    preprocess = checkpoint.preprocess
    if isinstance(checkpoint, Trainable) and preprocess is not None and checkpoint.modality == "image":
        module = checkpoint.module
        import torch

        try:
            per_sample = forward_flops(module, torch.zeros(1, 3, preprocess.size, preprocess.size))
            forward = float(per_sample) * (len(task.train) + len(task.test))
        except Exception:  # a module FlopCounterMode cannot run (ONNX, exotic layers): unknown, not fatal
            forward = None
    return costs, forward


def _sum(values):
    values = list(values)
    return None if not values or any(v is None for v in values) else float(sum(values))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def run_task(suite: Suite, group: str, task, *, cache_dir=None, device=None, progress=True,
             trust_pickle=False, executor=None, trust_remote_code=False) -> dict:
    """Scores, ground truth, costs and per-task evaluation for one group and task. executor: where the scoring
    and fine-tuning units run (see `neucrab.executors`); costs are measured here from the cached features."""
    from .. import groundtruth as gt
    from ..ranking import rank

    entries = suite.groups[group]
    specs, names = [e.spec for e in entries], [e.name for e in entries]
    ranking = rank(specs, task, suite.measures, names=names, cache_dir=cache_dir, trust_pickle=trust_pickle,
                   trust_remote_code=trust_remote_code, progress=progress, image_size=suite.image_size,
                   executor=executor)
    truths, errors = gt.groundtruth_pool(specs, task, names=names, executor=executor, progress=progress,
                                         cache_dir=cache_dir, lrs=suite.lrs, steps=suite.steps,
                                         batch_size=suite.batch_size, image_size=suite.image_size, seed=suite.seed,
                                         seeds=suite.seeds, device=device, trust_pickle=trust_pickle,
                                         trust_remote_code=trust_remote_code)
    scores = {m: {row.checkpoint: row.scores[m] for row in ranking.rows if m in row.scores} for m in suite.measures}
    accuracies = {name: r.accuracy for name, r in truths.items() if r.accuracy is not None}
    flops, forward, seconds, forward_seconds = {m: [] for m in suite.measures}, [], {}, []
    for row, entry in zip(sorted(ranking.rows, key=lambda r: names.index(r.checkpoint)), entries):
        if row.error:
            continue
        try:
            costs, fwd = _costs(entry.spec, task, suite.measures, cache_dir=cache_dir, trust_pickle=trust_pickle,
                                trust_remote_code=trust_remote_code, image_size=suite.image_size)
        except InputError:
            costs, fwd = dict.fromkeys(suite.measures), None
        for measure in suite.measures:
            flops[measure].append(costs[measure])
        forward.append(fwd)
        forward_seconds.append(row.seconds.get("forward", 0.0))
    for measure in suite.measures:
        timed = [row.seconds[measure] for row in ranking.rows if measure in row.seconds]
        seconds[measure] = float(sum(timed)) if timed else None
    return {
        "ranking": ranking, "groundtruth": truths, "groundtruth_errors": errors,
        "scores": scores, "accuracies": accuracies,
        "seed_accuracies": {name: r.seed_accuracies for name, r in truths.items() if r.seed_accuracies},
        "accuracy_std": {name: r.accuracy_std for name, r in truths.items()},
        "convergence": {name: r.convergence for name, r in truths.items()},
        "gflops": {m: (None if _sum(v) is None else _sum(v) / 1e9) for m, v in flops.items()},
        "forward_gflops": None if _sum(forward) is None else _sum(forward) / 1e9,
        "seconds": seconds, "forward_seconds": float(sum(forward_seconds)),
    }


def _judge(measures, results: dict[str, dict]) -> dict:
    """results: label -> run_task output. Per-task metrics and means over tasks (with GFLOPs and seconds)."""
    scores = Scores(by_task={label: r["scores"] for label, r in results.items()}, measures=list(measures),
                    sources={label: label for label in results})
    truth = {label: r["accuracies"] for label, r in results.items()}
    report = evaluate_scores(scores, truth, groundtruth="the suite's fine-tuning sweep", intersect=True)
    mean = {}
    for measure in measures:
        row = dict(report.mean.get(measure, {}))
        row["gflops"] = _mean(r["gflops"][measure] for r in results.values())
        row["seconds"] = _mean(r["seconds"][measure] for r in results.values())
        per_task = [report.tasks[t][measure] for t in report.tasks if measure in report.tasks[t]]
        row["interval"] = {metric: bootstrap_interval([values[metric] for values in per_task]) for metric in METRICS}
        mean[measure] = row
    ceilings = {label: noise_ceiling(r.get("seed_accuracies", {})) for label, r in results.items()}
    judged = [c for c in ceilings.values() if c is not None]
    ceiling = {metric: _mean(c[metric] for c in judged) for metric in ("kendall", "weighted_tau")} if judged else None
    return {"tasks": report.tasks, "mean": mean, "left_out": report.left_out, "ceilings": ceilings,
            "ceiling": ceiling, "pairwise": _pairwise(measures, report.tasks),
            "forward_gflops": _mean(r["forward_gflops"] for r in results.values()),
            "forward_seconds": _mean(r["forward_seconds"] for r in results.values()), "n_tasks": len(results)}


PAIRWISE_METRIC = "weighted_tau"


def _pairwise(measures, tasks: dict) -> dict:
    """measure A -> measure B -> sign test of A against B on the per-task weighted tau."""
    values = {m: {t: tasks[t][m][PAIRWISE_METRIC] for t in tasks if m in tasks[t]} for m in measures}
    return {a: {b: sign_test(values[a], values[b]) for b in measures if b != a} for a in measures}


def _number(value, scale=1.0, digits=2) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def _caption(section: dict) -> str:
    text = (f"Averaged over {section['n_tasks']} task(s). GFLOPs and seconds exclude the shared forward pass, which "
            f"costs {_number(section['forward_gflops'], digits=3)} GFLOPs and "
            f"{_number(section['forward_seconds'], digits=2)} s per task (0 s when the features came from the cache).")
    ceiling = section.get("ceiling")
    if ceiling:
        text += (f" Noise ceiling (the ground truth of half the seeds against the other half's): Kendall "
                 f"{_number(ceiling['kendall'], 100, 1)}, weighted Kendall {_number(ceiling['weighted_tau'], 100, 1)}.")
    return text


def _interval(row: dict, metric: str) -> str:
    interval = row.get("interval", {}).get(metric)
    value = _number(row.get(metric), 100, 1)
    return value if interval is None else f"{value} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


LEADERS = 6  # measures in the pairwise table


def _uncertainty_lines(document: dict, section: dict) -> list[str]:
    """Intervals for the correlation metrics, and the pairwise sign tests among the leading measures."""
    measures = [m for m in document["measures"] if section["mean"][m].get("tasks")]
    if not measures or not section.get("pairwise"):
        return []
    lines = ["95% bootstrap intervals over tasks (percent):", "",
             "| method | Kendall | w. Kendall | Rel@1 | Recall@1 |", "|---|---:|---:|---:|---:|"]
    for measure in measures:
        row = section["mean"][measure]
        cells = [_interval(row, metric) for metric in ("kendall", "weighted_tau", "rel@1", "recall@1")]
        lines.append(f"| {measure} [95%] | " + " | ".join(cells) + " |")
    leaders = sorted(measures, key=lambda m: -(section["mean"][m].get(PAIRWISE_METRIC) or -1))[:LEADERS]
    lines += ["", "Pairwise, weighted Kendall per task: row beats column on k of n tasks (two-sided sign-test p):", "",
              "| | " + " | ".join(leaders) + " |", "|---|" + "---:|" * len(leaders)]
    for a in leaders:
        cells = []
        for b in leaders:
            if a == b:
                cells.append("")
                continue
            test = section["pairwise"][a][b]
            cells.append(f"{test['wins']}/{test['tasks']} (p {test['p']:.2f})")
        lines.append(f"| {a} vs | " + " | ".join(cells) + " |")
    return lines + [""]


def _convergence_lines(document: dict) -> list[str]:
    """How many checkpoint-task pairs were still improving at the longest run, by more than the seed noise: per
    task, with the pairs named when there are few (all of them are in results.json under `convergence`)."""
    rising, judged = {}, {}
    for tasks in document["groups"].values():  # a checkpoint in several groups counts once per group
        for task, result in tasks.items():
            for name, check in (result.get("convergence") or {}).items():
                if check is None:
                    continue
                judged[task] = judged.get(task, 0) + 1
                if not check["converged"]:
                    rising.setdefault(task, []).append(f"{name} (+{100 * check['rise']:.1f} points, noise "
                                                       f"{100 * check['noise']:.1f})")
    steps = document["sweep"]["steps"]
    if not judged or len(steps) < 2:
        return []
    total = sum(len(names) for names in rising.values())
    parts = []
    for task, count in judged.items():
        names = rising.get(task, [])
        listed = ": " + "; ".join(sorted(set(names))) if 0 < len(names) <= 5 else ""
        parts.append(f"{task} {len(names)} of {count}{listed}")
    return [f"Convergence: {total} of {sum(judged.values())} checkpoint-task pairs were still rising from "
            f"{steps[-2]} to {steps[-1]} steps by more than the seed noise (the ground truth there is partly "
            f"convergence speed); per task: " + ", ".join(parts) + ".", ""]


def _task_lines(document: dict) -> list[str]:
    """Per task, over every group's checkpoints: the ground truth's best, median and spread (room to rank), the
    largest seed standard deviation, and the noise ceiling of each group."""
    tasks: dict[str, dict] = {}
    for group, results in document["groups"].items():
        for task, result in results.items():
            entry = tasks.setdefault(task, {"accuracies": [], "stds": [], "ceilings": []})
            entry["accuracies"] += list(result["accuracies"].values())
            entry["stds"] += [v for v in (result.get("accuracy_std") or {}).values() if v is not None]
            ceiling = document["sections"][group]["ceilings"].get(task) if "ceilings" in document["sections"][group] \
                else None
            if ceiling:
                entry["ceilings"].append(f"{group} {100 * ceiling['weighted_tau']:.0f}")
    lines = ["## Tasks: room to rank and noise (accuracies in percent, over every group's checkpoints)", "",
             "| task | checkpoints | best | median | best - median | largest seed std | noise ceiling, w. Kendall |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for task, entry in tasks.items():
        values = sorted(entry["accuracies"])
        if not values:
            continue
        best, median = values[-1], float(np.median(values))
        std = _number(max(entry["stds"]), 100, 1) if entry["stds"] else "-"
        spread = 100 * (best - median)
        lines.append(f"| {task} | {len(values)} | {100 * best:.1f} | {100 * median:.1f} | {spread:.1f} | {std} | "
                     f"{', '.join(entry['ceilings']) or '-'} |")
    return lines + [""]


def to_markdown(document: dict) -> str:
    lines = [f"# neucrab bench: {document['suite']}", ""]
    lines += _task_lines(document)
    lines += _convergence_lines(document)
    headers = (*HEADERS, "GFLOPs", "seconds")
    for title, section in document["sections"].items():
        lines += [f"## {title} (metrics in percent)", "", _caption(section), "",
                  "| method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
        for measure in document["measures"]:
            row = section["mean"][measure]
            cells = [_number(row.get(m), 100) for m in METRICS]
            cells += [_number(row["gflops"], digits=4), _number(row["seconds"], digits=3)]
            lines.append(f"| {measure} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _uncertainty_lines(document, section)
    return "\n".join(lines)


def to_csv(document: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scope", "measure", "tasks", *METRICS, "gflops", "seconds", "forward_gflops",
                     "forward_seconds"])
    for title, section in document["sections"].items():
        for measure in document["measures"]:
            row = section["mean"][measure]
            writer.writerow([title, measure, row.get("tasks", 0), *(row.get(m, "") for m in METRICS),
                             "" if row["gflops"] is None else row["gflops"],
                             "" if row["seconds"] is None else row["seconds"],
                             "" if section["forward_gflops"] is None else section["forward_gflops"],
                             section["forward_seconds"]])
    return buffer.getvalue()


def plot_figure1(path: Path, group: str, results: dict[str, dict]) -> Path:
    """Figure-1 style: each checkpoint's best fine-tuning accuracy minus the task's mean, bars grouped by task."""
    import numpy as np
    from matplotlib.figure import Figure

    labels = list(results)
    names = sorted({name for r in results.values() for name in r["accuracies"]},
                   key=lambda n: next(i for r in results.values() for i, k in enumerate(r["accuracies"]) if k == n))
    width = 0.8 / max(len(names), 1)
    figure = Figure(figsize=(max(6, 1.5 * len(labels) * max(1, len(names) / 4)), 4))
    axes = figure.subplots()
    for index, name in enumerate(names):
        offsets = []
        for label in labels:
            acc = results[label]["accuracies"]
            mean = np.mean(list(acc.values())) if acc else 0.0
            offsets.append(100 * (acc[name] - mean) if name in acc else 0.0)
        axes.bar(np.arange(len(labels)) + (index - (len(names) - 1) / 2) * width, offsets, width, label=name)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(labels)), labels)
    axes.set_ylabel("best fine-tuning accuracy - task mean (points)")
    axes.set_title(f"{group}: fine-tuning accuracy offset by the task mean")
    axes.legend(fontsize="small", ncol=max(1, len(names) // 8), bbox_to_anchor=(1.01, 1), loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_scatter(path: Path, group: str, measures, results: dict[str, dict]) -> Path:
    """Score vs ground-truth accuracy, one panel per measure, one colour per task."""
    from matplotlib.figure import Figure

    columns = min(len(measures), 3)
    rows = (len(measures) + columns - 1) // columns
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, measure in enumerate(measures):
        axis = axes[index // columns][index % columns]
        for label, r in results.items():
            common = [n for n in r["accuracies"] if n in r["scores"][measure]]
            axis.scatter([r["scores"][measure][n] for n in common], [100 * r["accuracies"][n] for n in common],
                         label=label, s=18)
        axis.set_title(measure)
        axis.set_xlabel("score")
        axis.set_ylabel("accuracy (%)")
    for index in range(len(measures), rows * columns):
        axes[index // columns][index % columns].axis("off")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{group}: score vs best fine-tuning accuracy")
    figure.tight_layout()
    return save_figure(figure, path)


def run_bench(suite: Suite, out, *, cache_dir=None, device=None, progress=True, trust_pickle=False,
              executor=None, trust_remote_code=False) -> dict:
    """Run `suite` and write its outputs into `out` (see the module docstring). Returns the JSON document.
    executor: where the units of work run (None or "local": here; "ray" or a `neucrab.executors.RayExecutor`)."""
    from .. import groundtruth as gt
    from ..progress import progress_bar
    from ..tasks import load as load_task

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; expected a folder (created if missing)")
    tasks = [load_task(spec) for spec in suite.tasks]
    labels = _task_labels(tasks)
    per_group: dict[str, dict[str, dict]] = {}
    with progress_bar(len(suite.groups) * len(tasks), f"bench {suite.name}", enabled=progress) as advance:
        for group in suite.groups:
            per_group[group] = {}
            for label, task in zip(labels, tasks):
                per_group[group][label] = run_task(suite, group, task, cache_dir=cache_dir, device=device,
                                                   progress=progress, trust_pickle=trust_pickle, executor=executor,
                                                   trust_remote_code=trust_remote_code)
                advance(label=f"{group} / {label}")
    out.mkdir(parents=True, exist_ok=True)
    sections = {group: _judge(suite.measures, results) for group, results in per_group.items()}
    combined = {f"{group}/{label}": r for group, results in per_group.items() for label, r in results.items()}
    if len(per_group) > 1:
        sections[ALL] = _judge(suite.measures, combined)
    document = {
        "suite": suite.name, "suite_file": suite.path.name, "measures": list(suite.measures),
        "sweep": {"lrs": list(suite.lrs), "steps": list(suite.steps), "batch_size": suite.batch_size,
                  "image_size": suite.image_size, "seed": suite.seed, "seeds": suite.seeds},
        "sections": sections,
        "groups": {group: {label: {"scores": r["scores"], "accuracies": r["accuracies"],
                                   "seed_accuracies": r["seed_accuracies"], "accuracy_std": r["accuracy_std"],
                                   "convergence": r["convergence"],
                                   "groundtruth_errors": r["groundtruth_errors"], "gflops": r["gflops"],
                                   "seconds": r["seconds"], "forward_gflops": r["forward_gflops"],
                                   "forward_seconds": r["forward_seconds"],
                                   "errors": {row.checkpoint: row.error for row in r["ranking"].rows if row.error}}
                           for label, r in results.items()}
                   for group, results in per_group.items()},
        "files": {},
    }
    files = document["files"]
    for group, results in per_group.items():
        for label, r in results.items():
            for kind, text in (("rankings", r["ranking"].to_json()),
                               ("groundtruth", gt.to_json(label, r["groundtruth"], r["groundtruth_errors"]))):
                atomic_write(out / kind / _slug(group) / f"{_slug(label)}.json", text)
        figure, scatter = f"figure1_{_slug(group)}.png", f"scatter_{_slug(group)}.png"
        plot_figure1(out / figure, group, results)
        plot_scatter(out / scatter, group, suite.measures, results)
        files.update({f"figure1_{group}": figure, f"scatter_{group}": scatter})  # relative to the output folder
    atomic_write(out / "table.md", to_markdown(document))
    atomic_write(out / "table.csv", to_csv(document))
    files.update(table_md="table.md", table_csv="table.csv", results_json="results.json")
    atomic_write(out / "results.json", json.dumps(document, indent=2))
    return document


def failures(document: dict) -> int:
    """Checkpoints that failed to score or to fine-tune, over every group and task of a bench document."""
    return sum(len(task["errors"]) + len(task["groundtruth_errors"])
               for tasks in document["groups"].values() for task in tasks.values())
