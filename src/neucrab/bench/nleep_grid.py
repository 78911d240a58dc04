"""N-LEEP's free parameters, the paper's Figure 2: mean Kendall over a suite's tasks for each PCA energy x number of
mixture components, one heat map per group.

    python -m neucrab.bench.nleep_grid results/mini [--suite SUITE] [--out DIR] [--cache-dir DIR] [--seed S]
    neucrab bench SUITE --nleep-grid --out DIR          # the same, after the bench itself

reads a finished bench folder (results.json: the ground truth per group, task and checkpoint) and its suite (the
shipped suite named in results.json, or --suite), scores every checkpoint that has a ground truth with
`neucrab.measures.nleep` at each PCA energy in ENERGIES and components_per_class in PER_CLASS (the paper's grid:
PCA50..PCA90 x 1x..10x the task's classes), on the training features the bench used (the feature cache, at the
suite's image size; extracted when missing), and judges each cell per task by Kendall's tau-b against the ground
truth (`neucrab.evaluate`, as the bench tables). No fine-tuning is run. Each cell's score is kept in the score
cache, so an interrupted grid resumes.

A cell asks for components_per_class x C mixture components. Where that reaches a task's training samples (10-shot
tasks at 10x) the cell is n/a for that task: with more components than samples the mixture cannot be fitted, and
with as many (which scikit-learn allows) k-means gives every sample its own component, so N-LEEP is 0 for every
checkpoint and only rounding (values of 1e-16) would order them. A group's mean is n/a when any of its tasks is, so
every number of a heat map averages the same tasks; where some are n/a, the report adds a section over the tasks
on which the whole grid is defined. Beside each mean: a 95% bootstrap interval over tasks, and the paired difference
to the paper's default (80%, 5x) with its interval and a sign test over tasks.

Writes into DIR: nleep_grid.json, nleep_grid.md and nleep_grid_<group>.png (and for all groups together).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..cache import atomic_write
from ..errors import InputError
from ..report.plot import save_figure
from .run import ALL, _slug
from .statistics import bootstrap_interval, sign_test

ENERGIES = (0.5, 0.6, 0.7, 0.8, 0.9)
PER_CLASS = (1, 2, 5, 10)
DEFAULT = (0.8, 5)  # the paper's choice (and neucrab's nleep defaults)
GRID_FEATURES = "nleep-grid: training split only"  # stands in for the test split's key in the score cache


def _n_classes(labels) -> int:
    """Classes N-LEEP counts: distinct labels, or the columns of a multi-hot array that are ever set."""
    labels = np.asarray(labels)
    return int((labels == 1).any(axis=0).sum()) if labels.ndim == 2 else len(np.unique(labels))


def defined(n_samples: int, n_classes: int, per_class: int) -> bool:
    """Whether N-LEEP's per_class x C components leave it something to measure on n_samples: fewer components
    than samples (one class needs no mixture at all). See the module docstring."""
    return n_classes < 2 or per_class * n_classes < n_samples


def cell_key(energy: float, per_class: int) -> str:
    return f"{round(100 * energy)}%/{per_class}x"


def grid_scores(features, labels, *, energies=ENERGIES, per_class=PER_CLASS, seed: int = 0, cached=None) -> dict:
    """cell_key -> N-LEEP score, or None where the cell asks for as many components as samples or more (see
    `defined`). cached(options, compute): optional memo (the score cache) around each computation."""
    from ..measures import nleep

    n, classes = len(labels), _n_classes(labels)
    scores = {}
    for energy in energies:
        for k in per_class:
            if not defined(n, classes, k):
                scores[cell_key(energy, k)] = None
                continue
            options = {"pca_energy": energy, "components_per_class": k, "seed": seed}

            def compute(options=options):
                return nleep(features, labels, **options)

            scores[cell_key(energy, k)] = cached(options, compute) if cached else compute()
    return scores


def checkpoint_grid(spec, task, *, image_size=None, cache_dir=None, trust_pickle=False, trust_remote_code=False,
                    energies=ENERGIES, per_class=PER_CLASS, seed: int = 0) -> dict:
    """One checkpoint's grid on one task's training features (cached features; each cell in the score cache)."""
    from ..checkpoints import load as load_checkpoint
    from ..checkpoints.base import at_image_size
    from ..extract import extract
    from ..feature_store import cache_key
    from ..score_cache import score_key, score_store

    checkpoint = at_image_size(load_checkpoint(spec, trust_pickle=trust_pickle,
                                               trust_remote_code=trust_remote_code), image_size)
    train = extract(checkpoint, task, "train", cache_dir=cache_dir, progress=False)
    keys = (cache_key(checkpoint, task, "train"), GRID_FEATURES)
    store = score_store(cache_dir)

    def cached(options, compute):
        key = score_key("nleep", keys, options)
        record = store.read(key)
        if record is None:
            started = time.perf_counter()
            record = {"measure": "nleep", "score": float(compute()), "note": None, "note_kind": None,
                      "seconds": time.perf_counter() - started}
            store.write(key, record)
        return record["score"]

    return grid_scores(train.features, task.train.labels, energies=energies, per_class=per_class, seed=seed,
                       cached=cached)


def task_kendalls(scores: dict[str, dict], accuracies: dict[str, float], cells) -> dict:
    """cell -> Kendall tau-b of the checkpoints' scores against their accuracies (None: n/a), over the
    checkpoints that have both."""
    from ..evaluation import evaluate

    kendalls = {}
    for cell in cells:
        pairs = {name: scores[name][cell] for name in accuracies if name in scores and scores[name].get(cell)
                 is not None}
        if len(pairs) < 2:
            kendalls[cell] = None
            continue
        kendalls[cell] = evaluate(pairs, {name: accuracies[name] for name in pairs})["kendall"]
    return kendalls


def summarise(per_task: dict[str, dict], cells) -> dict:
    """Per cell over tasks: the mean Kendall (None if any task is n/a), its bootstrap interval, and the paired
    difference to the default cell (mean, interval, sign test)."""
    default = cell_key(*DEFAULT)
    summary = {}
    for cell in cells:
        values = {task: kendalls[cell] for task, kendalls in per_task.items()}
        missing = sorted(task for task, value in values.items() if value is None)
        row = {"mean": None, "interval": None, "n_tasks": len(values), "n_a_tasks": missing}
        if not missing and values:
            row["mean"] = float(np.mean(list(values.values())))
            row["interval"] = bootstrap_interval(list(values.values()))
            base = {task: kendalls.get(default) for task, kendalls in per_task.items()}
            if cell != default and None not in base.values():
                differences = [values[task] - base[task] for task in values]
                row["minus_default"] = {"mean": float(np.mean(differences)),
                                        "interval": bootstrap_interval(differences),
                                        "sign_test": sign_test(values, base)}
        summary[cell] = row
    return summary


def compute_grid(suite, document: dict, *, cache_dir=None, trust_pickle=False, trust_remote_code=False,
                 progress=True, energies=ENERGIES, per_class=PER_CLASS, seed: int = 0) -> dict:
    """The grid report of a bench `document` (results.json) whose suite is `suite`: per group and task, each
    checkpoint's cell scores and each cell's Kendall; per group and over all groups, the summaries."""
    from ..progress import progress_bar
    from ..tasks import load as load_task
    from .run import _task_labels

    tasks = [load_task(spec) for spec in suite.tasks]
    by_label = dict(zip(_task_labels(tasks), tasks))
    cells = [cell_key(e, k) for e in energies for k in per_class]
    started = time.perf_counter()
    groups, errors = {}, {}
    work = [(g, t) for g, results in document["groups"].items() for t in results]
    with progress_bar(len(work), "N-LEEP grid", enabled=progress) as advance:
        for group, label in work:
            if group not in suite.groups or label not in by_label:
                raise InputError(f"results.json: group {group!r} / task {label!r} is not in suite {suite.path}; "
                                 "expected the suite the bench ran (--suite)")
            accuracies = document["groups"][group][label]["accuracies"]
            scores = {}
            for entry in suite.groups[group]:
                if entry.name not in accuracies:
                    continue
                try:
                    scores[entry.name] = checkpoint_grid(
                        entry.spec, by_label[label], image_size=suite.image_size, cache_dir=cache_dir,
                        trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, energies=energies,
                        per_class=per_class, seed=seed)
                except Exception as error:  # one checkpoint's failure is reported, the grid goes on without it
                    errors.setdefault(group, {}).setdefault(label, {})[entry.name] = f"{type(error).__name__}: {error}"
            groups.setdefault(group, {})[label] = {"scores": scores,
                                                  "kendall": task_kendalls(scores, accuracies, cells)}
            advance(label=f"{group} / {label}")
    sections = {group: summarise({t: r["kendall"] for t, r in tasks_.items()}, cells)
                for group, tasks_ in groups.items()}
    pools = {f"{g}/{t}": r["kendall"] for g, tasks_ in groups.items() for t, r in tasks_.items()}
    if len(groups) > 1:
        sections[ALL] = summarise(pools, cells)
    complete = {pool: kendalls for pool, kendalls in pools.items() if None not in kendalls.values()}
    if complete and len(complete) < len(pools):  # the whole grid, on the tasks where every cell is defined
        sections[f"{ALL if len(groups) > 1 else next(iter(groups))}, tasks with every cell defined"] = \
            summarise(complete, cells)
    return {"suite": suite.name, "energies": list(energies), "per_class": list(per_class),
            "default": cell_key(*DEFAULT), "seed": seed, "image_size": suite.image_size,
            "seconds": time.perf_counter() - started, "groups": groups, "sections": sections, "errors": errors}


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _with_interval(mean, interval) -> str:
    if mean is None:
        return "n/a"
    return _percent(mean) + ("" if interval is None else f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]")


def _grid_table(energies, per_class, summary: dict, cell_text) -> list[str]:
    """A markdown table, rows PCA energies, columns components per class; cell_text(summary row, cell key)."""
    lines = ["| PCA energy | " + " | ".join(f"{k}x C" for k in per_class) + " |", "|---|" + "---:|" * len(per_class)]
    for energy in energies:
        cells = [cell_text(summary[cell_key(energy, k)], cell_key(energy, k)) for k in per_class]
        lines.append(f"| {round(100 * energy)}% | " + " | ".join(cells) + " |")
    return lines


def _mean_cell(row: dict, bold: bool) -> str:
    text = _with_interval(row["mean"], row["interval"])
    return f"**{text}**" if bold else text


def _difference_cell(row: dict) -> str:
    diff = row.get("minus_default")
    if diff is None:
        return "-" if row["mean"] is not None else "n/a"
    test = diff["sign_test"]
    return f"{_with_interval(diff['mean'], diff['interval'])}; {test['wins']}/{test['losses']}, p {test['p']:.2f}"


def to_markdown(report: dict) -> str:
    energies, per_class, default = report["energies"], report["per_class"], report["default"]
    lines = [f"# N-LEEP's PCA energy x mixture components on {report['suite']} (the paper's Figure 2)", "",
             "Kendall tau-b (percent) between N-LEEP and the fine-tuning ground truth, mean over tasks [95% bootstrap "
             f"interval over tasks]; rows: PCA energy kept, columns: components per class. Default: {default}. "
             "n/a: as many components as training samples or more on some task (N-LEEP is then 0 for every "
             "checkpoint, or undefined). Over several groups each group's task is one pool, and the pools of one "
             "task are not independent.", ""]
    for title, summary in report["sections"].items():
        n_tasks = next(iter(summary.values()))["n_tasks"]
        lines += [f"## {title} ({n_tasks} pool(s) of checkpoints on a task)", ""]
        lines += _grid_table(energies, per_class, summary, lambda row, key: _mean_cell(row, key == default))
        lines += ["", f"Difference to the default {default} (points of Kendall, mean over tasks [95% interval]; "
                      "wins/losses over tasks, sign-test p):", ""]
        lines += _grid_table(energies, per_class, summary, lambda row, key: _difference_cell(row))
        missing = sorted({t for row in summary.values() for t in row["n_a_tasks"]})
        if missing:
            lines += ["", "n/a cells: too few training samples on " + ", ".join(missing) + "."]
        lines.append("")
    lines += ["## Per task (Kendall, percent; rows: energy/components)", ""]
    for group, tasks in report["groups"].items():
        labels = list(tasks)
        lines += [f"### {group}", "", "| cell | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for energy in energies:
            for k in per_class:
                cell = cell_key(energy, k)
                lines.append(f"| {cell} | " + " | ".join(_percent(tasks[t]["kendall"][cell]) for t in labels) + " |")
        lines.append("")
    if any(report["errors"].values()):
        lines += ["Checkpoints left out (failed to load or score): " + json.dumps(report["errors"]), ""]
    lines.append(f"Computed in {report['seconds']:.0f} s (features and cells already in the caches cost nothing).")
    return "\n".join(lines) + "\n"


def plot_heatmap(path: Path, title: str, summary: dict, energies, per_class, default: str) -> Path:
    """The paper's layout: PCA energy down, components per class across, colour = mean Kendall (grey: n/a)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    values = np.array([[np.nan if summary[cell_key(e, k)]["mean"] is None else summary[cell_key(e, k)]["mean"]
                        for k in per_class] for e in energies])
    figure = Figure(figsize=(1.3 * len(per_class) + 2.2, 0.8 * len(energies) + 1.4))
    axes = figure.subplots()
    axes.set_facecolor("0.85")  # n/a cells show the background
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=high if high > low else low + 1e-9,
                        aspect="auto")
    for i, energy in enumerate(energies):
        for j, k in enumerate(per_class):
            value = values[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.3f}"
            dark = not np.isnan(value) and value < low + 0.6 * (high - low)
            axes.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
            if cell_key(energy, k) == default:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    axes.set_xticks(range(len(per_class)), [f"{k}x" for k in per_class])
    axes.set_yticks(range(len(energies)), [f"PCA{round(100 * e)}" for e in energies])
    axes.set_xlabel("Gaussian components (x classes)")
    axes.set_title(f"{title}: N-LEEP Kendall's tau (red: default {default})", fontsize=10)
    figure.colorbar(image, ax=axes, label="mean Kendall over tasks")
    figure.tight_layout()
    return save_figure(figure, path)


def write_grid(report: dict, out) -> list[str]:
    """nleep_grid.json, nleep_grid.md and one heat map per section into `out`; returns the file names."""
    out = Path(out)
    files = ["nleep_grid.json", "nleep_grid.md"]
    atomic_write(out / files[0], json.dumps(report, indent=1))
    atomic_write(out / files[1], to_markdown(report))
    for title, summary in report["sections"].items():
        name = f"nleep_grid_{_slug(title)}.png"
        plot_heatmap(out / name, title, summary, report["energies"], report["per_class"], report["default"])
        files.append(name)
    return files


def main(argv=None) -> int:
    from .suite import load_suite, shipped_names

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a bench output folder (its results.json)")
    parser.add_argument("--suite", help="the suite the bench ran (default: the shipped suite results.json names)")
    parser.add_argument("--out", help="write the grid's files here (default: the bench folder)")
    parser.add_argument("--cache-dir", help="feature and score cache (default: $NEUCRAB_CACHE or ~/.cache/neucrab)")
    parser.add_argument("--seed", type=int, default=0, help="the mixture's k-means seed (default 0, as nleep's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        document = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{folder / 'results.json'}: cannot read a bench results.json ({error})") from None
    suite_name = args.suite or Path(document.get("suite_file", "")).stem
    if not args.suite and suite_name not in shipped_names():
        raise SystemExit(f"{folder / 'results.json'}: suite {suite_name!r} is not shipped; name its file with --suite")
    try:
        report = compute_grid(load_suite(suite_name), document, cache_dir=args.cache_dir, seed=args.seed,
                              progress=not args.no_progress)
    except InputError as error:
        raise SystemExit(str(error)) from None
    files = write_grid(report, args.out or folder)
    print(to_markdown(report))
    print(f"wrote {', '.join(files)} into {args.out or folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
