"""`neucrab.rank`: a pool of checkpoints and a task in, a `Ranking` out.

    rank -> pool.run_pool (one unit per checkpoint, on an executor) -> scoring.score_checkpoint
         -> extract (features, cached) -> measures (each cell on its own) -> Row -> Ranking

This module holds the result type and its formats (JSON, CSV, DataFrame) and `rank` itself, a thin caller of
the pool driver; the per-checkpoint work is `neucrab.scoring`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .cells import CSV_FIELDS, Note, NoteKind, Row, manifest_columns, measure_columns
from .errors import InputError
from .scoring import apply_measures, checkpoint_label, resolve_measures, score_checkpoint

DEFAULT_MEASURES = tuple(resolve_measures())  # the recommended score first (neucrab.recommend), then the measures

@dataclass
class Ranking:
    """Rows sorted best first by the first measure (rows without that score last, in input order)."""

    task: str
    measures: list[str]
    rows: list[Row]
    left_out: dict[str, str] = field(default_factory=dict)  # recipe measures not combined here, with why
    certainty: dict = field(default_factory=dict)  # P(best), rank intervals (neucrab.recommend.certainty)

    def recommendation(self) -> dict | None:
        """The recommended checkpoint (best by the combined score), the recipe and what it left out; None when
        the ranking has no combined score."""
        from .recommend import RECIPE, RECOMMENDED

        if RECOMMENDED not in self.measures:
            return None
        scored = [row for row in self.rows if RECOMMENDED in row.scores]
        return {"checkpoint": scored[0].checkpoint if scored else None, "recipe": {
            "measures": list(RECIPE.measures), "how": RECIPE.how}, "left_out": dict(self.left_out),
            "p_best": self.certainty.get("p_best", {}),
            "p_best_subsamples": self.certainty.get("p_best_subsamples", {}),
            "rank_interval": self.certainty.get("rank_interval", {}),
            "indistinguishable": self.certainty.get("indistinguishable", [])}

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
            "recommendation": self.recommendation(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One line per checkpoint: the task, its scores (full precision, empty where there is none), forward
        seconds, whether features were cached, the error if any, then the pool manifest's columns (group and
        free columns, `neucrab.pool_manifest`) when there are any. `neucrab evaluate --scores` reads it."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        carried = manifest_columns(self.rows)
        header = ["task", "checkpoint", *self.measures, *CSV_FIELDS]
        writer.writerow(header + [f"manifest.{key}" if key in header else key for key in carried])
        for row in self.rows:
            scores = [repr(row.scores[m]) if m in row.scores else "" for m in self.measures]
            extra = ["" if row.manifest.get(key) is None else row.manifest[key] for key in carried]
            writer.writerow([self.task, row.checkpoint, *scores, row.seconds.get("forward", ""), row.cached,
                             row.error or "", *extra])
        return buffer.getvalue()

    def to_dataframe(self):
        """A pandas DataFrame, one row per checkpoint, one column per measure (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise InputError("to_dataframe: pandas is not installed; pip install pandas") from None
        taken, carried = {"checkpoint", "error", *self.measures}, manifest_columns(self.rows)
        records = [{"checkpoint": row.checkpoint, **{m: row.scores.get(m, np.nan) for m in self.measures},
                    "error": row.error, **{f"manifest.{k}" if k in taken else k: row.manifest.get(k) for k in carried}}
                   for row in self.rows]
        return pd.DataFrame.from_records(records).set_index("checkpoint")


def read_csv(text: str) -> dict[str, dict[str, float]]:
    """Parse `Ranking.to_csv` output back to checkpoint -> {measure: score}."""
    reader = csv.DictReader(io.StringIO(text))
    measures = measure_columns(reader.fieldnames or [])
    return {record["checkpoint"]: {m: float(record[m]) for m in measures if record[m] != ""} for record in reader}


def sort_rows(rows: list[Row], first_measure: str) -> list[Row]:
    scored = [row for row in rows if first_measure in row.scores]
    unscored = [row for row in rows if first_measure not in row.scores]
    return sorted(scored, key=lambda row: -row.scores[first_measure]) + unscored


def rank(checkpoints, task, measures=None, *, cache_dir=None, trust_pickle=False, layer=None, batch_size=64,
         progress=True, names=None, image_size=None, executor=None, trust_remote_code=False,
         pooling=None) -> Ranking:
    """Rank `checkpoints` (specs, modules, or `neucrab.pool_manifest.PoolEntry` rows, whose names and manifest
    columns the rows carry) for `task` (a spec or a loaded Task) by `measures`.

    layer: a module name, or for text encoders a hidden state K, "mean", "all" or a list ("0,3,mean"): "all"
    and lists rank each hidden state as its own row, `NAME@layer=K`. pooling: a text encoder's token pooling,
    "mean" or "first" (see `neucrab.checkpoints.text_options`).

    Returns a `Ranking`: rows best first by the first measure, per-measure ranks, timings, and agreement
    between measures. Failing checkpoints appear as rows with `error` set. executor: where each checkpoint is
    scored (None or "local": here, one after another; "ray" or a `neucrab.executors.RayExecutor`: Ray tasks).
    """
    from . import tasks
    from .pool import PoolUnit, run_pool
    from .pool_manifest import split_entries
    from .recommend import DRAWS, RECIPE, RECOMMENDED, certainty, combine
    from .text_layers import expand_layer_choices

    measures = resolve_measures(measures)
    computed = [m for m in measures if m != RECOMMENDED]  # the combined score is made from the others below
    loaded = tasks.load(task)
    if not checkpoints:
        raise InputError("checkpoints: expected at least one checkpoint")
    checkpoints, names, carried = split_entries(checkpoints, names, checkpoint_label)  # manifest rows too
    checkpoints, names, carried, layer = expand_layer_choices(checkpoints, names, carried, layer, pooling,
                                                              trust_remote_code=trust_remote_code)
    units = [PoolUnit(name, {"spec": spec, "name": name}, spec) for spec, name in zip(checkpoints, names)]
    outcomes = run_pool(score_checkpoint, units, task=loaded, task_spec=task,
                        executor=executor, cache_dir=cache_dir, progress=progress, description="checkpoints",
                        measures=computed, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code,
                        layer=layer, batch_size=batch_size,
                        image_size=image_size, draws=list(RECIPE.measures) if RECOMMENDED in measures else [],
                        draw_count=DRAWS)
    rows = [outcome.result if outcome.ok else Row(checkpoint=outcome.label, error=outcome.error)
            for outcome in outcomes]
    for row, columns in zip(rows, carried):
        row.manifest = dict(columns)
    left_out = combine(rows) if RECOMMENDED in measures else {}
    sure = certainty(rows, left_out) if RECOMMENDED in measures else {}
    return Ranking(task=loaded.name, measures=measures, rows=sort_rows(rows, measures[0]), left_out=left_out,
                   certainty=sure)


__all__ = ["DEFAULT_MEASURES", "Note", "NoteKind", "Ranking", "Row", "apply_measures", "rank", "read_csv",
           "resolve_measures", "score_checkpoint", "sort_rows"]
