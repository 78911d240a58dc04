"""How well a measure's scores predict fine-tuning accuracy (paper section 2.3)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .errors import InputError


def _paired(scores: dict, accuracies: dict) -> tuple[list, np.ndarray, np.ndarray]:
    if not isinstance(scores, dict) or not isinstance(accuracies, dict):
        raise InputError("evaluate: expected scores and accuracies as dicts mapping checkpoint name -> float")
    missing = sorted(set(accuracies) - set(scores), key=str)
    if missing:
        raise InputError(f"scores: no score for checkpoint(s) {missing}; expected one per ground-truth checkpoint")
    extra = sorted(set(scores) - set(accuracies), key=str)
    if extra:
        raise InputError(f"accuracies: no ground truth for checkpoint(s) {extra}")
    names = list(accuracies)
    if len(names) < 2:
        raise InputError(f"evaluate: expected at least 2 checkpoints, got {len(names)}")
    score = np.array([scores[name] for name in names], dtype=np.float64)
    accuracy = np.array([accuracies[name] for name in names], dtype=np.float64)
    for label, values in (("scores", score), ("accuracies", accuracy)):
        if not np.isfinite(values).all():
            bad = [name for name, value in zip(names, values) if not np.isfinite(value)]
            raise InputError(f"{label}: non-finite value for checkpoint(s) {bad}")
    return names, score, accuracy


def _correlation(function, score: np.ndarray, accuracy: np.ndarray) -> float:
    # A constant score (or accuracy) has no correlation to speak of; report 0, not NaN.
    if np.ptp(score) == 0 or np.ptp(accuracy) == 0:
        return 0.0
    value = float(function(score, accuracy)[0])
    return 0.0 if math.isnan(value) else value


def evaluate(scores: dict, accuracies: dict, *, ks=(1, 3)) -> dict:
    """Judge one task's scores against its fine-tuning accuracies.

    Returns fractions (not percent): `recall@k` is 1.0 when the best checkpoint is among the top k by
    score; `rel@k` is the best accuracy among the top k over the best accuracy overall; `pearson`,
    `kendall` (tau-b) and `weighted_tau` (scipy.stats.weightedtau defaults) compare scores with
    accuracies. Ties in score keep the order of `accuracies`, so the result is deterministic; a checkpoint tied
    with the best accuracy counts as the best.
    """
    names, score, accuracy = _paired(scores, accuracies)
    # Stable sort on -score keeps the caller's order among ties.
    order = np.argsort(-score, kind="stable")
    best = accuracy.max()
    result = {}
    for k in ks:
        top = order[: int(k)]
        result[f"recall@{k}"] = float(np.isclose(accuracy[top].max(), best, rtol=0, atol=1e-12))
        result[f"rel@{k}"] = float(accuracy[top].max() / best) if best != 0 else 1.0
    result["pearson"] = _correlation(stats.pearsonr, score, accuracy)
    result["kendall"] = _correlation(stats.kendalltau, score, accuracy)
    result["weighted_tau"] = _correlation(stats.weightedtau, score, accuracy)
    return result
