"""Seeded stratified train/test split."""

from __future__ import annotations

import numpy as np


def strata_of(labels: np.ndarray) -> np.ndarray:
    """One stratum id per sample: the class code, or for multi-hot rows (N, C) the label combination."""
    if labels.ndim == 1:
        return labels
    return np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)


def stratified_split(strata: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), each sorted, so items keep their original order within a split.

    The test set holds about round(N * test_fraction) samples; each stratum of n samples gives floor or ceil
    of n * test_fraction of them (largest remainders first, so the total comes out right) but always keeps
    at least one sample in train. The same (strata, test_fraction, seed) always gives the same split.
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == value) for value in np.unique(strata)]
    sizes = np.array([len(group) for group in groups])
    quotas = sizes * test_fraction
    counts = np.floor(quotas).astype(int)
    missing = int(np.floor(len(strata) * test_fraction + 0.5)) - counts.sum()
    # Hand the remaining test slots to the strata with the largest fractional parts (stable on ties).
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: max(missing, 0)]] += 1
    counts = np.minimum(counts, sizes - 1)
    test = [rng.permutation(group)[:count] for group, count in zip(groups, counts)]
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(strata)), test)
    return train.astype(np.int64), test.astype(np.int64)
