"""`neucrab evaluate`: judge saved rankings against a ground truth, per task and averaged over tasks.

Scores FILE (one or several):
- JSON from `neucrab rank --format json`: {"task": str, "measures": [str], "rows": [{"checkpoint": str,
  "scores": {measure: float}}]} (other keys ignored), or a list of such objects (several tasks);
- CSV with the columns task,checkpoint,measure,score (one score per line; an empty score is a missing one);
- CSV from `neucrab rank --format csv`: task, checkpoint, one column per measure (empty: no score), then
  forward_seconds, cached, error.
Ground truth: `paper:group1` .. `paper:group4` (the paper's Tables 7-10), or a file:
- CSV with the columns task,checkpoint,accuracy (what `neucrab groundtruth --out FILE.csv` writes);
- JSON: {"task": str, "accuracies": {checkpoint: accuracy}} (`neucrab groundtruth --out FILE.json`), a list of
  those, a list of {"task", "checkpoint", "accuracy"} records, or {task: {checkpoint: accuracy}}.
Task names match exactly or, failing that, ignoring case and punctuation ("caltech101" finds "Caltech101").

Every (task, measure) pair is judged by `neucrab.evaluate` on the checkpoints it scores; the averages over
tasks are plain means (Recall@k then is the fraction of tasks where the best checkpoint made the top k, as in
the paper). The checkpoints of a task must match the ground truth's, unless `intersect` (then the common ones).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..evaluation import evaluate

METRICS = ("recall@1", "rel@1", "recall@3", "rel@3", "pearson", "kendall", "weighted_tau")
HEADERS = ("Recall@1", "Rel@1", "Recall@3", "Rel@3", "Pearson", "Kendall", "w. Kendall")


@dataclass
class Scores:
    """task -> measure -> checkpoint -> score, with the measures in the order the files name them."""

    by_task: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # task -> file it came from


@dataclass
class Report:
    """Metrics (fractions) per task and measure, their means over tasks, and what was left out."""

    groundtruth: str
    tasks: dict[str, dict[str, dict[str, float]]]  # task -> measure -> metric -> value
    checkpoints: dict[str, int]  # task -> number of checkpoints judged (the most over its measures)
    mean: dict[str, dict[str, float]]  # measure -> metric -> mean over the tasks it was judged on
    measures: list[str]
    left_out: dict[str, list[str]] = field(default_factory=dict)  # task -> checkpoints dropped by intersect


# ------------------------------------------------------------------------------------- reading
def _number(value, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{where}: expected {what} as a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: expected {what} as a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{where}: expected a finite {what}, got {value!r}")
    return number


def _read(path) -> tuple[Path, str]:
    path = Path(path)
    try:
        return path, path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); expected a UTF-8 JSON "
                         "or CSV file") from None


def _json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None


def _csv_rows(path: Path, text: str, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in columns if name not in header]
    if missing:
        raise InputError(f"{path}: CSV header {header} lacks column(s) {missing}; expected {','.join(columns)}")
    reader.fieldnames = header
    return [(line, {k: (v or "").strip() for k, v in row.items() if k}) for line, row in enumerate(reader, 2)]


def _is_csv(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".csv" or not text.lstrip().startswith(("{", "["))


def load_scores(paths) -> Scores:
    """Read one or several scores files (module docstring) into one `Scores`; a task may appear only once."""
    scores = Scores()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path, text = _read(path)
        parts = _scores_csv(path, text) if _is_csv(path, text) else _scores_json(path, _json(path, text))
        for task, measures, table in parts:
            if task in scores.by_task:
                raise InputError(f"{path}: task {task!r} already read from {scores.sources[task]}; expected each "
                                 "task once")
            scores.by_task[task], scores.sources[task] = table, str(path)
            scores.measures += [m for m in measures if m not in scores.measures]
    if not scores.by_task:
        raise InputError("--scores: the file(s) hold no task; expected at least one ranking")
    return scores


def _scores_json(path: Path, document) -> list:
    rankings = document if isinstance(document, list) else [document]
    parts = []
    for i, ranking in enumerate(rankings):
        where = f"{path}: [{i}]" if isinstance(document, list) else f"{path}:"
        if not isinstance(ranking, dict):
            raise InputError(f"{where} expected a ranking object with task, measures and rows, got "
                             f"{type(ranking).__name__}")
        for key in ("task", "rows"):
            if key not in ranking:
                raise InputError(f"{where} field {key!r} missing; expected a `neucrab rank --format json` object")
        task, rows = ranking["task"], ranking["rows"]
        if not isinstance(task, str) or not task:
            raise InputError(f"{where} field 'task': expected a non-empty string, got {task!r}")
        if not isinstance(rows, list):
            raise InputError(f"{where} field 'rows': expected a list of rows, got {type(rows).__name__}")
        measures = ranking.get("measures", [])
        if not isinstance(measures, list) or not all(isinstance(m, str) for m in measures):
            raise InputError(f"{where} field 'measures': expected a list of measure names, got {measures!r}")
        table: dict[str, dict[str, float]] = {m: {} for m in measures}
        for r, row in enumerate(rows):
            at = f"{where} rows[{r}]"
            if not isinstance(row, dict) or not isinstance(row.get("checkpoint"), str):
                raise InputError(f"{at}: expected an object with a 'checkpoint' string and a 'scores' object")
            values = row.get("scores") or {}
            if not isinstance(values, dict):
                raise InputError(f"{at}.scores: expected an object mapping measure -> score, got {values!r}")
            for measure, value in values.items():
                if value is None:  # a measure that did not apply
                    continue
                column = table.setdefault(measure, {})
                if row["checkpoint"] in column:
                    raise InputError(f"{at}: checkpoint {row['checkpoint']!r} appears twice; expected one row each")
                column[row["checkpoint"]] = _number(value, f"{at}.scores[{measure!r}]", "a score")
        parts.append((task, list(table), table))
    return parts


def _scores_csv(path: Path, text: str) -> list:
    from ..cells import CSV_FIELDS

    header = [name.strip().lower() for name in next(csv.reader(io.StringIO(text)), [])]
    if {"task", "checkpoint", *CSV_FIELDS} <= set(header):  # `rank --format csv`: one column per measure
        return _ranking_csv(path, text)
    tables: dict[str, dict[str, dict[str, float]]] = {}
    measures: list[str] = []
    for line, row in _csv_rows(path, text, ("task", "checkpoint", "measure", "score")):
        if not row["task"] or not row["checkpoint"] or not row["measure"]:
            raise InputError(f"{path}: line {line}: expected task, checkpoint and measure, got {row}")
        if row["measure"] not in measures:
            measures.append(row["measure"])
        if row["score"] == "":  # a measure that did not apply
            continue
        column = tables.setdefault(row["task"], {}).setdefault(row["measure"], {})
        if row["checkpoint"] in column:
            raise InputError(f"{path}: line {line}: second score of {row['checkpoint']!r} for {row['measure']!r} "
                             f"on task {row['task']!r}; expected one")
        column[row["checkpoint"]] = _number(row["score"], f"{path}: line {line}, column score", "a score")
    return [(task, measures, table) for task, table in tables.items()]


def _ranking_csv(path: Path, text: str) -> list:
    """`neucrab rank --format csv` output: task, checkpoint, one column per measure, then CSV_FIELDS (then a pool
    manifest's columns, which are not scores)."""
    from ..cells import measure_columns

    reader = csv.DictReader(io.StringIO(text))
    measures = measure_columns(reader.fieldnames)
    tables: dict[str, dict[str, dict[str, float]]] = {}
    for line, row in enumerate(reader, 2):
        if not row["task"] or not row["checkpoint"]:
            raise InputError(f"{path}: line {line}: expected a task and a checkpoint, got {row}")
        table = tables.setdefault(row["task"], {m: {} for m in measures})
        for measure in measures:
            value = (row[measure] or "").strip()
            if value == "":  # not applicable, failed, or the checkpoint failed
                continue
            if row["checkpoint"] in table[measure]:
                raise InputError(f"{path}: line {line}: checkpoint {row['checkpoint']!r} appears twice on task "
                                 f"{row['task']!r}; expected one row each")
            table[measure][row["checkpoint"]] = _number(value, f"{path}: line {line}, column {measure}", "a score")
    return [(task, measures, table) for task, table in tables.items()]


def load_groundtruth(spec) -> dict[str, dict[str, float]]:
    """task -> checkpoint -> accuracy from `paper:groupN` or a file (module docstring)."""
    if str(spec).lower().startswith("paper:"):
        from .paper_groundtruth import paper_groundtruth

        return paper_groundtruth(str(spec))
    path, text = _read(spec)
    truth: dict[str, dict[str, float]] = {}

    def put(task, checkpoint, accuracy, where):
        if not isinstance(task, str) or not task or not isinstance(checkpoint, str) or not checkpoint:
            raise InputError(f"{where}: expected non-empty task and checkpoint names, got {task!r}, {checkpoint!r}")
        if checkpoint in truth.setdefault(task, {}):
            raise InputError(f"{where}: second accuracy for {checkpoint!r} on task {task!r}; expected one")
        truth[task][checkpoint] = _number(accuracy, where, "the accuracy")

    if _is_csv(path, text):
        for line, row in _csv_rows(path, text, ("task", "checkpoint", "accuracy")):
            put(row["task"], row["checkpoint"], row["accuracy"], f"{path}: line {line}, column accuracy")
    else:
        document = _json(path, text)
        items = document if isinstance(document, list) else [document]
        for i, item in enumerate(items):
            where = f"{path}: [{i}]" if isinstance(document, list) else f"{path}:"
            if isinstance(item, dict) and {"task", "accuracies"} <= set(item):
                if not isinstance(item["accuracies"], dict):
                    raise InputError(f"{where} field 'accuracies': expected an object checkpoint -> accuracy")
                for name, value in item["accuracies"].items():
                    put(item["task"], name, value, f"{where} accuracies[{name!r}]")
            elif isinstance(item, dict) and {"task", "checkpoint", "accuracy"} <= set(item):
                put(item["task"], item["checkpoint"], item["accuracy"], f"{where} field 'accuracy'")
            elif isinstance(item, dict) and not isinstance(document, list) and all(
                    isinstance(v, dict) for v in item.values()):
                for task, table in item.items():
                    for name, value in table.items():
                        put(task, name, value, f"{where} [{task!r}][{name!r}]")
            else:
                raise InputError(f"{where} expected {{task, accuracies}}, {{task, checkpoint, accuracy}} or "
                                 f"{{task: {{checkpoint: accuracy}}}}, got {str(item)[:80]}")
    if not truth:
        raise InputError(f"{path}: no accuracies; expected task,checkpoint,accuracy entries")
    return truth


# ------------------------------------------------------------------------------------ judging
def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _match_task(task: str, truth: dict, groundtruth: str, source: str) -> str:
    if task in truth:
        return task
    matches = [name for name in truth if _key(name) == _key(task)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"{source}: task {task!r} is not in the ground truth {groundtruth} (its tasks: "
                     f"{', '.join(truth)})")


def evaluate_scores(scores: Scores, truth: dict, *, groundtruth: str = "ground truth",
                    intersect: bool = False) -> Report:
    """Judge every (task, measure) of `scores` against `truth` (task -> checkpoint -> accuracy)."""
    tasks, counts, left_out = {}, {}, {}
    for task, table in scores.by_task.items():
        accuracies = truth[_match_task(task, truth, groundtruth, scores.sources[task])]
        results = {}
        for measure in scores.measures:
            if not table.get(measure):
                continue
            scored = table[measure]
            missing = sorted(set(accuracies) - set(scored))
            extra = sorted(set(scored) - set(accuracies))
            if (missing or extra) and not intersect:
                problems = ([f"no {measure} score for {missing}"] if missing else []) + (
                    [f"no ground truth for {extra}"] if extra else [])
                raise InputError(f"{scores.sources[task]}: task {task!r}: {'; '.join(problems)} "
                                 f"(ground truth {groundtruth}); pass --intersect to judge the common checkpoints")
            common = [name for name in accuracies if name in scored]
            if len(common) < 2:
                raise InputError(f"{scores.sources[task]}: task {task!r}, measure {measure!r}: only {len(common)} "
                                 f"checkpoint(s) in common with the ground truth {groundtruth}; expected at least 2")
            if missing or extra:
                left_out.setdefault(task, [])
                left_out[task] += [name for name in missing + extra if name not in left_out[task]]
            results[measure] = evaluate({n: scored[n] for n in common}, {n: accuracies[n] for n in common})
            counts[task] = max(counts.get(task, 0), len(common))
        if results:
            tasks[task] = results
    if not tasks:
        raise InputError("--scores: no measure has any score to judge")
    mean = {}
    for measure in scores.measures:
        judged = [tasks[task][measure] for task in tasks if measure in tasks[task]]
        if judged:
            mean[measure] = {metric: float(sum(r[metric] for r in judged) / len(judged)) for metric in METRICS}
            mean[measure]["tasks"] = len(judged)
    measures = [m for m in scores.measures if m in mean]
    return Report(groundtruth, tasks, counts, mean, measures, left_out)


def evaluate_files(scores_paths, groundtruth: str, *, intersect: bool = False) -> Report:
    """Read the scores file(s) and the ground truth and judge them: the logic of `neucrab evaluate`."""
    return evaluate_scores(load_scores(scores_paths), load_groundtruth(groundtruth), groundtruth=str(groundtruth),
                           intersect=intersect)


# ------------------------------------------------------------------------------------ output
def _sections(report: Report) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """(title, measure -> metrics): one per task, then the mean when there are several tasks."""
    sections = [(f"task {task} ({report.checkpoints[task]} checkpoints)", results)
                for task, results in report.tasks.items()]
    if len(report.tasks) > 1:
        sections.append((f"mean over {len(report.tasks)} tasks", report.mean))
    return sections


def to_table(report: Report):
    """rich renderables: one table per task (and the mean), methods as rows, metrics in percent."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    tables = []
    for title, results in _sections(report):
        table = Table(title=escape(f"{title}, vs {report.groundtruth} (percent)"))
        table.add_column("method")
        for header in HEADERS:
            table.add_column(header, justify="right")
        for measure in report.measures:
            if measure in results:
                table.add_row(escape(measure), *(f"{100 * results[measure][m]:.2f}" for m in METRICS))
        tables.append(table)
    return Group(*tables)


def to_markdown(report: Report) -> str:
    lines = []
    for title, results in _sections(report):
        lines += [f"### {title}, vs {report.groundtruth} (percent)", "",
                  "| method | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
        lines += [f"| {m} | " + " | ".join(f"{100 * results[m][k]:.2f}" for k in METRICS) + " |"
                  for m in report.measures if m in results]
        lines.append("")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    """Fractions, not percent (as `neucrab.evaluate` returns them)."""
    return json.dumps({
        "groundtruth": report.groundtruth,
        "tasks": {task: {"checkpoints": report.checkpoints[task], "measures": results}
                  for task, results in report.tasks.items()},
        "mean": report.mean,
        "left_out": report.left_out,
    }, indent=2)


def to_csv(report: Report) -> str:
    """scope,task,measure,checkpoints,tasks,<metrics> in fractions: scope "task" for each task's rows, "mean"
    for the averages over tasks (task and checkpoints empty, tasks = how many tasks were averaged)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scope", "task", "measure", "checkpoints", "tasks", *METRICS])
    for task, results in report.tasks.items():
        for measure in report.measures:
            if measure in results:
                writer.writerow(["task", task, measure, report.checkpoints[task], 1,
                                 *(repr(results[measure][m]) for m in METRICS)])
    for measure in report.measures:
        writer.writerow(["mean", "", measure, "", report.mean[measure]["tasks"],
                         *(repr(report.mean[measure][m]) for m in METRICS)])
    return buffer.getvalue()
