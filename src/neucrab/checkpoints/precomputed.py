"""Precomputed features in a `.npz`: for people who extract features elsewhere and only want the ranking.

Arrays: `features_train` (N, D), `features_test` (M, D) and optionally `probs_train` (N, S), `probs_test`
(M, S) (source-class probabilities, rows summing to 1 within 1e-3; renormalised on load). The rows must be
in the task's sample order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._npz import read_npz
from ..errors import InputError
from ._common import fingerprint, require_file, sha256_file
from .base import Checkpoint

SPLITS = ("train", "test")
# Softmax outputs saved as float16 sum to 1 only within ~1e-3: accept that much (logits are far off) and
# renormalise the rows, so measures downstream see rows summing to 1 at float32 precision.
PROB_SUM_TOLERANCE = 1e-3


class PrecomputedCheckpoint(Checkpoint):
    """Features (and optionally source probabilities) computed elsewhere (modality "features").

    Use `arrays(split)` -> (features float32 (N, D), probs float32 (N, S) or None) for split "train" or
    "test"; there is no network, so `forward` refuses.
    """

    def __init__(self, *, arrays: dict[str, np.ndarray], **fields):
        super().__init__(modality="features", has_head="probs_train" in arrays, **fields)
        self._arrays = arrays

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        if split not in SPLITS:
            raise InputError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self._arrays[f"features_{split}"], self._arrays.get(f"probs_{split}")

    def forward(self, batch):
        raise InputError(f"{self.name}: precomputed features have no network to run; use .arrays(split)")


def load_npz(path: Path, spec: str, *, name=None) -> PrecomputedCheckpoint:
    path = require_file(path, spec, "a .npz of precomputed features")
    raw = read_npz(path, spec)
    arrays = {}
    for split in SPLITS:
        key = f"features_{split}"
        if key not in raw:
            raise InputError(f"{spec}: missing array {key!r}; expected features_train and features_test "
                             f"(found: {', '.join(raw) or 'none'})")
        arrays[key] = _checked(raw[key], key, spec)
        if f"probs_{split}" in raw:
            arrays[f"probs_{split}"] = _checked_probs(raw[f"probs_{split}"], f"probs_{split}", spec,
                                                      len(arrays[key]))
    if arrays["features_train"].shape[1] != arrays["features_test"].shape[1]:
        raise InputError(f"{spec}: features_train has {arrays['features_train'].shape[1]} dimensions but "
                         f"features_test {arrays['features_test'].shape[1]}; expected the same")
    if ("probs_train" in arrays) != ("probs_test" in arrays):
        raise InputError(f"{spec}: give both probs_train and probs_test, or neither")
    return PrecomputedCheckpoint(
        arrays=arrays,
        name=name or path.stem,
        fingerprint=fingerprint("npz", sha256_file(path)),
        details={"source": str(path), "architecture": "precomputed"},
    )


def _checked(array: np.ndarray, key: str, spec: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{spec}: {key} has shape {array.shape}; expected a non-empty 2-d (N, D) array")
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{spec}: {key} has dtype {array.dtype}; expected numbers")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{spec}: {key} contains NaN or inf")
    return array


def _checked_probs(array: np.ndarray, key: str, spec: str, rows: int) -> np.ndarray:
    array = _checked(array, key, spec)
    if len(array) != rows:
        raise InputError(f"{spec}: {key} has {len(array)} rows but the features {rows}; expected the same")
    sums = array.sum(axis=1)
    if (array < 0).any() or np.abs(sums - 1).max() > PROB_SUM_TOLERANCE:
        raise InputError(f"{spec}: {key} rows are not probabilities (negative, or sums from {sums.min():.4g} "
                         f"to {sums.max():.4g}); expected softmax outputs summing to 1")
    return (array / sums[:, None]).astype(np.float32)
