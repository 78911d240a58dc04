"""`neucrab.rank`: a pool of checkpoints and a task in, a ranking out.

The work for one checkpoint, `score_checkpoint`, is a pure function of (checkpoint spec, task spec,
measures, options): it loads, extracts through the content-keyed feature cache, and scores. That keeps it
resumable (an interrupted run redoes only what the cache lacks) and lets it be handed to other workers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .measures import REGISTRY
from .measures.registry import FEATURES, MODEL, SOURCE_PROBS, TRAIN_TEST

# N-LEEP first (the paper's measure), then the fast feature measures, then the head-based ones.
DEFAULT_MEASURES = ("nleep", "logme", "shrinkage_hscore", "transrate", "gbc", "sfda", "knn", "leep", "nce")


def resolve_measures(names=None) -> list[str]:
    """Expand None (the default set) and "all" (every registered array measure); check the names."""
    if not names:
        return list(DEFAULT_MEASURES)
    resolved: list[str] = []
    for name in names:
        expanded = [info.name for info in REGISTRY.values() if info.needs != MODEL] if name == "all" else [name]
        for measure in expanded:
            if measure not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise InputError(f"--measure: unknown measure {measure!r}; expected 'all' or one of: {known}")
            if measure not in resolved:
                resolved.append(measure)
    return resolved


@dataclass
class Row:
    """One checkpoint's result. `scores` holds only the measures that apply; `notes` says why the others
    do not (no head, multi-label task) or how they failed; `error` is set when the checkpoint itself failed."""

    checkpoint: str
    scores: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # "forward" and one entry per measure
    cached: bool = False  # features came from the cache: no forward pass was run
    has_head: bool | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "scores": dict(self.scores),
            "notes": dict(self.notes),
            "seconds": dict(self.seconds),
            "cached": self.cached,
            "has_head": self.has_head,
            "error": self.error,
        }


@dataclass
class Ranking:
    """Rows sorted best first by the first measure (rows without that score last, in input order)."""

    task: str
    measures: list[str]
    rows: list[Row]

    def ranks(self) -> dict[str, dict[str, int]]:
        """measure -> checkpoint -> rank (1 = best) among the checkpoints that have that score."""
        result = {}
        for measure in self.measures:
            scored = [row for row in self.rows if measure in row.scores]
            scored.sort(key=lambda row: -row.scores[measure])
            result[measure] = {row.checkpoint: position + 1 for position, row in enumerate(scored)}
        return result

    def agreement(self) -> dict[str, float | None]:
        """Kendall tau between each measure's scores and the first measure's, on the checkpoints both score."""
        from scipy.stats import kendalltau

        first = self.measures[0]
        result: dict[str, float | None] = {}
        for measure in self.measures[1:]:
            pairs = [(row.scores[first], row.scores[measure]) for row in self.rows
                     if first in row.scores and measure in row.scores]
            if len(pairs) < 2:
                result[measure] = None
                continue
            tau = kendalltau(*zip(*pairs)).statistic
            result[measure] = None if math.isnan(tau) else float(tau)
        return result

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "measures": list(self.measures),
            "rows": [row.to_dict() for row in self.rows],
            "ranks": self.ranks(),
            "agreement_with_first_measure": self.agreement(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One line per checkpoint: its scores (full precision, empty where not applicable), forward seconds,
        whether features were cached, and the error if any."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["checkpoint", *self.measures, "forward_seconds", "cached", "error"])
        for row in self.rows:
            scores = [repr(row.scores[m]) if m in row.scores else "" for m in self.measures]
            writer.writerow([row.checkpoint, *scores, row.seconds.get("forward", ""), row.cached, row.error or ""])
        return buffer.getvalue()

    def to_dataframe(self):
        """A pandas DataFrame, one row per checkpoint, one column per measure (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise InputError("to_dataframe: pandas is not installed; pip install pandas") from None
        records = [{"checkpoint": row.checkpoint, **{m: row.scores.get(m, np.nan) for m in self.measures},
                    "error": row.error} for row in self.rows]
        return pd.DataFrame.from_records(records).set_index("checkpoint")


def read_csv(text: str) -> dict[str, dict[str, float]]:
    """Parse `Ranking.to_csv` output back to checkpoint -> {measure: score}."""
    reader = csv.DictReader(io.StringIO(text))
    fixed = {"checkpoint", "forward_seconds", "cached", "error"}
    return {
        record["checkpoint"]: {k: float(v) for k, v in record.items() if k not in fixed and v != ""}
        for record in reader
    }


def sort_rows(rows: list[Row], first_measure: str) -> list[Row]:
    scored = [row for row in rows if first_measure in row.scores]
    unscored = [row for row in rows if first_measure not in row.scores]
    return sorted(scored, key=lambda row: -row.scores[first_measure]) + unscored


def _labels_for(task, split_name: str):
    return getattr(task, split_name).labels


def apply_measures(row: Row, measures, task, train, test, checkpoint=None, cache_dir=None, feature_keys=None) -> None:
    """Score one checkpoint's embeddings with each measure, recording n/a reasons and failures per measure.
    Measures that need the model itself (early-stopped fine-tuning) get the loaded checkpoint and task, and
    keep their training runs in `cache_dir`'s run cache (the same root as the features). feature_keys: the
    feature-cache keys of (train, test); given, each outcome is kept in and read from the score cache
    (`neucrab.score_cache`) under `cache_dir`."""
    from .score_cache import score_key, score_store

    store = score_store(cache_dir) if feature_keys else None
    multilabel = bool(getattr(task, "multilabel", False))
    y_train, y_test = _labels_for(task, "train"), _labels_for(task, "test")
    for name in measures:
        info = REGISTRY[name]
        kwargs = {}
        if info.needs == SOURCE_PROBS and train.probs is None:
            row.notes[name] = "n/a: checkpoint has no classification head"
            continue
        if info.needs == MODEL and checkpoint is None:
            row.notes[name] = "n/a: needs the model, and only precomputed features were given"
            continue
        if multilabel and not info.multilabel:
            if not info.regression:
                row.notes[name] = "n/a: single-label measure on a multi-label task"
                continue
            kwargs["regression"] = True  # multi-hot targets as real-valued columns (LogME)
        key = score_key(name, feature_keys, kwargs) if store else None
        record = store.read(key) if store else None
        if record is not None:
            row.seconds[name] = record["seconds"]  # the measure's cost when it was computed
            if record["score"] is None:
                row.notes[name] = record["note"]
            else:
                row.scores[name] = record["score"]
            continue
        started = time.perf_counter()
        try:
            if info.needs == FEATURES:
                score = info.function(train.features, y_train, **kwargs)
            elif info.needs == SOURCE_PROBS:
                score = info.function(train.probs, y_train, **kwargs)
            elif info.needs == TRAIN_TEST:
                score = info.function(train.features, y_train, test.features, y_test, **kwargs)
            elif info.needs == MODEL:
                score = info.function(checkpoint, task, cache_dir=cache_dir, **kwargs)
            else:
                raise InputError(f"measure {name}: unsupported need {info.needs!r}")
        except InputError as error:
            row.notes[name] = f"error: {error}"
        else:
            row.scores[name] = float(score)
        row.seconds[name] = time.perf_counter() - started
        if store:
            store.write(key, {"measure": name, "score": row.scores.get(name), "note": row.notes.get(name),
                              "seconds": row.seconds[name]})


def checkpoint_label(spec, index: int) -> str:
    if isinstance(spec, str):
        return spec
    return getattr(spec, "name", None) or f"{type(spec).__name__}#{index}"


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def score_checkpoint(spec, task, measures, *, name=None, cache_dir=None, trust_pickle=False, layer=None,
                     batch_size=64, progress=False, image_size=None, device=None) -> Row:
    """Load one checkpoint, extract its features on both splits (cached), and score it. image_size: feed
    images of that size instead of the checkpoint's own (see `checkpoints.base.at_image_size`). device: where
    torch checkpoints run (default: CUDA when available, else the CPU).

    A checkpoint that cannot be loaded or run gives a Row with `error` set instead of raising, so one bad
    checkpoint never stops a pool.
    """
    from . import checkpoints, tasks
    from .checkpoints.base import at_image_size
    from .extract import cache_key, extract

    row = Row(checkpoint=name or checkpoint_label(spec, 0))
    try:
        task = tasks.load(task) if isinstance(task, str) else task
        checkpoint = at_image_size(checkpoints.load(spec, layer=layer, trust_pickle=trust_pickle), image_size)
        if callable(getattr(checkpoint, "to", None)):  # torch checkpoints: the GPU when there is one
            checkpoint.to(device or ("cuda" if torch_cuda_available() else "cpu"))
        row.has_head = bool(checkpoint.has_head)
        started = time.perf_counter()
        embeddings = {}
        for split in ("train", "test"):
            embeddings[split] = extract(checkpoint, task, split, cache_dir=cache_dir, batch_size=batch_size,
                                        progress=progress)
        row.seconds["forward"] = time.perf_counter() - started
        row.cached = all(getattr(e, "cached", False) for e in embeddings.values())
    except InputError as error:
        row.error = str(error)
        return row
    except Exception as error:  # a stranger's checkpoint can fail in any library; report, keep the pool going
        row.error = f"{type(error).__name__}: {error}"
        return row
    model = None if checkpoint.modality == "features" else checkpoint
    keys = tuple(cache_key(checkpoint, task, split) for split in ("train", "test"))
    apply_measures(row, measures, task, embeddings["train"], embeddings["test"], model, cache_dir=cache_dir,
                   feature_keys=keys)
    return row


def rank(checkpoints, task, measures=None, *, cache_dir=None, trust_pickle=False, layer=None, batch_size=64,
         progress=True, names=None, image_size=None, executor=None) -> Ranking:
    """Rank `checkpoints` (specs or modules) for `task` (a spec or a loaded Task) by `measures`.

    Returns a `Ranking`: rows best first by the first measure, per-measure ranks, timings, and agreement
    between measures. Failing checkpoints appear as rows with `error` set. executor: where each checkpoint is
    scored (None or "local": here, one after another; "ray" or a `neucrab.executors.RayExecutor`: Ray tasks).
    """
    from . import executors, tasks

    measures = resolve_measures(measures)
    task_spec = task
    task = tasks.load(task) if isinstance(task, str) else task
    if not checkpoints:
        raise InputError("checkpoints: expected at least one checkpoint")
    names = list(names) if names else [checkpoint_label(spec, i) for i, spec in enumerate(checkpoints)]
    executor = executors.resolve(executor)
    shared = {"task": task_spec if executor.remote and isinstance(task_spec, str) else task, "measures": measures,
              "cache_dir": executor.cache_dir(cache_dir), "trust_pickle": trust_pickle, "layer": layer,
              "batch_size": batch_size, "progress": progress and not executor.remote, "image_size": image_size,
              "device": None}  # None: CUDA when there is one; a Ray unit given no GPU runs on the CPU
    units = [executors.Unit(name, {"spec": spec, "name": name}, executors.spec_size(spec))
             for spec, name in zip(checkpoints, names)]
    rows: list[Row] = [None] * len(units)
    for index, row, error in executor.map(score_checkpoint, units, shared=shared, description="checkpoints",
                                          progress=progress, failed=lambda row: bool(row.error)):
        rows[index] = row if error is None else Row(checkpoint=units[index].label, error=executors.describe(error))
    return Ranking(task=getattr(task, "name", str(task)), measures=measures, rows=sort_rows(rows, measures[0]))
