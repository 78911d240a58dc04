"""Every measure must order a family of feature sets whose true order is known by construction.

Features: x = s * mean[y] + noise with the same class means and the same noise draw for every member of the
family, only the separation s grows. A larger s makes the classes strictly easier to tell apart, so every
transferability measure must give a strictly larger score. Source probabilities: the source head points at
a source class tied to the target class for a growing fraction of the samples (the rest point at a random
source class), so LEEP and NCE must grow with that fraction.
"""

import numpy as np
import pytest
from measure_inputs import array_measures, call, softmax

from neucrab.measures.registry import FEATURES, SOURCE_PROBS, TRAIN_TEST

N, D, C = 400, 24, 4
SEPARATIONS = (0.4, 0.8, 1.2, 1.6)
FIDELITIES = (0.25, 0.5, 0.75, 1.0)


def _feature_family(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(2 * N) % C
    means = rng.normal(size=(C, D))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    noise = rng.normal(size=(2 * N, D)) * 0.5
    family = [(s * means[labels] + noise).astype(np.float32) for s in SEPARATIONS]
    # First half trains, second half tests (for the measures that need a test split).
    return [(x[:N], labels[:N], x[N:], labels[N:]) for x in family]


def _probability_family(seed=0, sources=10):
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    tied_source = labels * 2  # target class c is tied to source class 2c
    random_source = rng.integers(0, sources, size=N)
    draw = rng.random(N)
    noise = rng.normal(size=(N, sources)) * 0.3
    family = []
    for fidelity in FIDELITIES:
        source = np.where(draw < fidelity, tied_source, random_source)
        family.append(softmax(3.0 * np.eye(sources)[source] + noise))
    return family, labels


@pytest.mark.parametrize("info", array_measures(FEATURES, TRAIN_TEST), ids=lambda info: info.name)
def test_feature_measures_order_the_family(info):
    scores = [
        call(info, x_train, y_train, test_features=x_test, test_labels=y_test)
        for x_train, y_train, x_test, y_test in _feature_family()
    ]
    assert all(np.isfinite(scores)), scores
    assert np.all(np.diff(scores) > 0), f"{info.name} should grow with class separation: {scores}"


@pytest.mark.parametrize("info", array_measures(SOURCE_PROBS), ids=lambda info: info.name)
def test_probability_measures_order_the_family(info):
    family, labels = _probability_family()
    scores = [call(info, None, labels, probs=probs) for probs in family]
    assert np.all(np.diff(scores) > 0), f"{info.name} should grow with the head's fidelity: {scores}"
