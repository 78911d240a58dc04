"""What a benchmark's numbers can support: intervals over tasks, paired comparisons, the noise ceiling.

- `bootstrap_interval`: a percentile bootstrap interval for the mean of per-task values (tasks resampled with
  replacement, seeded), the uncertainty that matters when a measure's average over a handful of tasks is
  compared with another's.
- `sign_test`: for two measures, on how many tasks A's value beats B's, and the two-sided sign-test p-value
  (ties left out), which assumes nothing about how the per-task differences are distributed.
- `noise_ceiling`: how well one half of the fine-tuning seeds' ground truth ranks the checkpoints as the other
  half does (Kendall tau and weighted tau between the two halves' mean accuracies, averaged over every way to
  split the seeds into halves): no measure can be expected to agree with the ground truth better than the
  ground truth agrees with itself.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

BOOTSTRAP_REPS = 10_000
LEVEL = 0.95


def bootstrap_interval(values, *, reps: int = BOOTSTRAP_REPS, level: float = LEVEL, seed: int = 0):
    """(low, high) of the mean of `values` (one per task); None for fewer than two values."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def sign_test(a: dict, b: dict) -> dict:
    """Compare two measures task by task (`a`, `b`: task -> value of one metric, higher better) on the tasks
    both have: wins of a, losses, ties, and the two-sided sign-test p-value over the untied tasks."""
    common = [task for task in a if task in b]
    wins = sum(a[t] > b[t] for t in common)
    losses = sum(a[t] < b[t] for t in common)
    untied = wins + losses
    p = float(stats.binomtest(wins, untied, 0.5).pvalue) if untied else 1.0
    return {"wins": wins, "losses": losses, "ties": len(common) - untied, "tasks": len(common), "p": p}


def _halves(count: int):
    """Every split of `count` seeds into two halves (sizes floor and ceil of count / 2), each split once."""
    seeds = range(count)
    size = count // 2
    seen = set()
    for first in itertools.combinations(seeds, size):
        second = tuple(s for s in seeds if s not in first)
        key = frozenset((first, second))
        if key not in seen:
            seen.add(key)
            yield first, second


def noise_ceiling(seed_accuracies: dict[str, list]) -> dict | None:
    """{"kendall", "weighted_tau", "splits"}: agreement between the ground truths of two disjoint halves of the
    seeds (checkpoint -> per-seed accuracies, equally many seeds each), averaged over the splits; None with
    fewer than two checkpoints or two seeds, or where a seed's run is missing."""
    names = [name for name, values in seed_accuracies.items() if values and None not in values]
    counts = {len(seed_accuracies[name]) for name in names}
    if len(names) < 2 or len(counts) != 1 or counts == {1}:
        return None
    table = np.array([seed_accuracies[name] for name in names], dtype=np.float64)
    taus, weighted = [], []
    for first, second in _halves(table.shape[1]):
        x, y = table[:, list(first)].mean(axis=1), table[:, list(second)].mean(axis=1)
        if np.ptp(x) == 0 or np.ptp(y) == 0:  # one half ties every checkpoint: no ranking to agree with
            taus.append(0.0)
            weighted.append(0.0)
            continue
        tau = stats.kendalltau(x, y).statistic
        taus.append(0.0 if math.isnan(tau) else float(tau))
        weighted.append(float(stats.weightedtau(x, y).statistic))
    return {"kendall": float(np.mean(taus)), "weighted_tau": float(np.mean(weighted)), "splits": len(taus)}
