"""Shared helpers for tests that run every registered measure on the same inputs."""

from __future__ import annotations

import numpy as np

from neucrab.measures import REGISTRY
from neucrab.measures.registry import MeasureInputs, Needs


def call(info, features, labels, *, probs=None, test_features=None, test_labels=None):
    """Call a registered measure with what it needs, as `rank` does: through its `Needs`. Features measures get
    `features`; source-probability measures get `probs`; train+test measures get both splits (the test split
    defaults to the training one)."""
    inputs = MeasureInputs(
        labels=labels,
        features=features,
        source_probs=probs,
        test_features=features if test_features is None else test_features,
        test_labels=labels if test_labels is None else test_labels,
    )
    return info(inputs)


def array_measures(*needs):
    """Registered measures computed from arrays alone (not the model), optionally filtered by need."""
    wanted = needs or (Needs.FEATURES, Needs.SOURCE_PROBS, Needs.TRAIN_TEST)
    return [info for info in REGISTRY.values() if info.needs in wanted]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
