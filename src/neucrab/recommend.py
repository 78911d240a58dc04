"""neucrab's answer: one recommended ranking, combined from the measures the benchmark found reliable and cheap.

The recipe (`RECIPE`) is fixed here and was chosen by leave-one-task-out on Mini-NeuCRaB v2
(`python -m neucrab.bench.loto results/mini/results.json`, tables in `results/mini/loto.md`): nothing is
tuned on the user's task. The combined score of a checkpoint is the mean, over the recipe's measures, of its
score standardised over the pool (z-score: minus the pool mean, over the pool standard deviation; "rank" recipes
use the rank within the pool over the pool size instead), so measures on different scales count equally.

Degenerate measures are detected, not averaged in: a recipe measure whose scores are equal across the pool, or
that saturated on any checkpoint (a SATURATED note: H-score = C - 1, SFDA near 1, GBC underflow), or that fewer
than two checkpoints have, is left out of this pool's combination, and `left_out` says which and why. A checkpoint
without a score for a kept measure gets no combined score (its note says which measure it lacks).

How sure: each checkpoint's recipe measures are also computed on DRAWS stratified subsamples of the training split
(FRACTION of each class, without replacement: a bootstrap's duplicates would let kNN find a sample's own copy),
the same subsamples for every checkpoint (seeded by draw number), and cached like any score. Its rank interval is
the 2.5 and 97.5 percentiles of its rank over the draws, and `p_best_subsamples` the fraction of draws in which
its combined score is the highest: checkpoints whose fraction is at least INDISTINGUISHABLE cannot be told apart
from the pick at this sample size.

That fraction measures only the sampling noise of the task's data, not how far the measure itself is from
fine-tuning, so it is over-confident (on Mini-NeuCRaB v2 its expected calibration error was 0.134). P(best) is
therefore calibrated: the mean over draws of softmax(z / TEMPERATURE), z being each checkpoint's combined score
standardised over the pool in that draw. TEMPERATURE was fitted on Mini-NeuCRaB v2 (maximum likelihood of the true
best), and its calibration judged by leave-one-task-out: `python -m neucrab.bench.calibration`, results in
`results/mini/calibration.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .cells import NoteKind, Row, not_applicable

RECOMMENDED = "recommended"  # the combined score's column, first in `rank`'s default output


@dataclass(frozen=True)
class Recipe:
    measures: tuple[str, ...]
    how: str = "rank"  # "rank": mean of pool-normalised ranks; "z": mean of pool z-scores


def _column(values, how: str) -> np.ndarray:
    """One measure's scores over a pool, put on the common scale of `how` (higher = better)."""
    values = np.asarray(values, dtype=np.float64)
    if how == "z":  # a constant column gives NaN, which callers leave out (no warning: it is expected)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (values - values.mean()) / values.std()
    return stats.rankdata(values) / len(values)


# Leave-one-task-out on Mini-NeuCRaB v2 (results/mini/loto.md): kNN alone had the highest mean weighted tau on the
# left-out tasks (49.8, 95% interval [32.0, 66.4]); no combination chosen on the other tasks beat it (z-mean 40.4,
# rank-mean 39.2), so the recommended score is kNN's, until a benchmark shows a combination that does better.
RECIPE = Recipe(measures=("knn",))
DRAWS, FRACTION = 50, 0.8
INDISTINGUISHABLE = 0.05
# Fitted on Mini-NeuCRaB v2's 18 pools by `python -m neucrab.bench.calibration` (results/mini/calibration.md):
# leave-one-task-out it brought the expected calibration error from 0.116 (the subsample fraction) to 0.037.
TEMPERATURE = 0.504


def draw_indices(labels: np.ndarray, draw: int, fraction: float = FRACTION) -> np.ndarray:
    """Sorted indices of a stratified subsample: round(fraction * n_c) (at least 1) of each class c, seeded by
    `draw`. Multi-hot labels are stratified by label combination."""
    return _draw(_strata(labels), draw, fraction)


def draw_subsets(labels: np.ndarray, draws: int, fraction: float = FRACTION) -> list[np.ndarray]:
    """`draw_indices(labels, d, fraction)` for d = 0 .. draws - 1, the classes grouped once."""
    strata = _strata(labels)
    return [_draw(strata, draw, fraction) for draw in range(draws)]


def _strata(labels) -> list[list[int]]:
    """The sample indices of each class (of each label combination when multi-hot), classes in the order of
    their names as text."""
    labels = np.asarray(labels)
    keys = [row.tobytes() for row in labels] if labels.ndim > 1 else labels.tolist()
    groups: dict = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [members for _, members in sorted(groups.items(), key=lambda item: str(item[0]))]


def _draw(strata: list[list[int]], draw: int, fraction: float) -> np.ndarray:
    rng = np.random.default_rng([draw, 7919])
    chosen = [rng.choice(members, max(1, round(fraction * len(members))), replace=False) for members in strata]
    return np.sort(np.concatenate(chosen))


def _reason(rows: list[Row], measure: str) -> str | None:
    """Why `measure` cannot take part in this pool's combination, or None when it can."""
    if any(measure in row.notes and row.notes[measure].kind is NoteKind.SATURATED for row in rows):
        return "saturated on this pool (its value carries no ranking here)"
    values = [row.scores[measure] for row in rows if measure in row.scores]
    if len(values) < 2:
        return "fewer than two checkpoints have a score"
    if np.ptp(values) == 0:
        return "the same score for every checkpoint"
    return None


def combine(rows: list[Row], recipe: Recipe = RECIPE) -> dict[str, str]:
    """Put the combined score into each row's scores under RECOMMENDED (notes where it has none); return the
    left-out measures with their reasons."""
    live = [row for row in rows if not row.error]
    left_out = {m: reason for m in recipe.measures if (reason := _reason(live, m)) is not None}
    kept = [m for m in recipe.measures if m not in left_out]
    if not kept:
        for row in live:
            row.notes[RECOMMENDED] = not_applicable("no measure of the recipe ranks this pool")
        return left_out
    scored = [row for row in live if all(m in row.scores for m in kept)]
    for row in live:
        if row not in scored:
            missing = ", ".join(m for m in kept if m not in row.scores)
            row.notes[RECOMMENDED] = not_applicable(f"no {missing} score")
    if scored:
        columns = [_column([row.scores[m] for row in scored], recipe.how) for m in kept]
        for row, value in zip(scored, np.mean(columns, axis=0)):
            row.scores[RECOMMENDED] = float(value)
    return left_out


def draw_z(rows: list[Row], left_out: dict[str, str], recipe: Recipe = RECIPE) -> tuple[list[Row], np.ndarray]:
    """The rows with draws of every kept measure, and a (draws, rows) array of their combined score in each draw
    (mean of the kept measures' pool z-scores), standardised over the pool: 0 where a draw tells none apart."""
    kept = [m for m in recipe.measures if m not in left_out]
    drawn = [row for row in rows if not row.error and kept and all(len(row.draws.get(m, ())) for m in kept)]
    if len(drawn) < 2:
        return drawn, np.zeros((0, len(drawn)))
    count = min(len(row.draws[m]) for row in drawn for m in kept)
    z = np.zeros((count, len(drawn)))
    for draw in range(count):
        columns = [_column([row.draws[m][draw] for row in drawn], "z") for m in kept]
        columns = [column for column in columns if np.isfinite(column).all()]  # constant within this draw
        if columns:
            combined = np.mean(columns, axis=0)
            spread = combined.std()
            z[draw] = (combined - combined.mean()) / spread if spread > 0 else 0.0
    return drawn, z


def calibrated_p_best(z: np.ndarray, temperature: float = None) -> np.ndarray:
    """P(best) per checkpoint from (draws, checkpoints) pool z-scores: mean over draws of softmax(z / T)."""
    temperature = TEMPERATURE if temperature is None else temperature
    logits = z / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).mean(axis=0)


def certainty(rows: list[Row], left_out: dict[str, str], recipe: Recipe = RECIPE) -> dict:
    """Calibrated P(best), P(best) over the subsamples, rank interval and the checkpoints indistinguishable from
    the pick, from the rows' draws (see the module docstring); empty when fewer than two rows have draws."""
    drawn, z = draw_z(rows, left_out, recipe)
    if len(drawn) < 2 or not len(z):
        return {}
    ranks = np.vstack([stats.rankdata(-row, method="min") for row in z])  # 1 = best; ties share the best rank
    wins = {row.checkpoint: float(np.mean(ranks[:, i] == 1)) for i, row in enumerate(drawn)}
    p_best = dict(zip((row.checkpoint for row in drawn), map(float, calibrated_p_best(z))))
    intervals = {row.checkpoint: [float(v) for v in np.percentile(ranks[:, i], [2.5, 97.5])]
                 for i, row in enumerate(drawn)}
    pick = max(p_best, key=p_best.get)
    close = [name for name, p in sorted(wins.items(), key=lambda item: -item[1])
             if name != pick and p >= INDISTINGUISHABLE]
    return {"p_best": p_best, "p_best_subsamples": wins, "rank_interval": intervals, "indistinguishable": close,
            "draws": len(z), "temperature": TEMPERATURE}
