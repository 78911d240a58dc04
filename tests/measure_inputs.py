"""Shared helpers for tests that run every registered measure on the same inputs."""

from __future__ import annotations

import numpy as np

from neucrab.measures import REGISTRY
from neucrab.measures.registry import FEATURES, SOURCE_PROBS, TRAIN_TEST


def call(info, features, labels, *, probs=None, test_features=None, test_labels=None):
    """Call a registered measure with what it needs. Features measures get `features`; source-probability
    measures get `probs`; train+test measures get both splits (the test split defaults to the training one)."""
    if info.needs == FEATURES:
        return info.function(features, labels)
    if info.needs == SOURCE_PROBS:
        return info.function(probs, labels)
    if info.needs == TRAIN_TEST:
        test_features = features if test_features is None else test_features
        test_labels = labels if test_labels is None else test_labels
        return info.function(features, labels, test_features, test_labels)
    raise AssertionError(f"test helper does not know how to call a measure needing {info.needs!r}")


def array_measures(*needs):
    """Registered measures computed from arrays alone (not the model), optionally filtered by need."""
    wanted = needs or (FEATURES, SOURCE_PROBS, TRAIN_TEST)
    return [info for info in REGISTRY.values() if info.needs in wanted]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
