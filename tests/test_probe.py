"""Linear probe: separable and chance cases, agreement with scikit-learn, and a re-derived SGD run."""

import importlib

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from neucrab.errors import InputError
from neucrab.measures import REGISTRY, linear_probe

probe_module = importlib.import_module("neucrab.measures.probe")


def _clusters(rng, n, dim, n_classes, spread):
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)
    centres = rng.standard_normal((n_classes, dim)) * spread
    return centres, centres[y] + rng.standard_normal((n, dim)), y


def _split(rng, n_train, n_test, dim, n_classes, spread):
    centres, x, y = _clusters(rng, n_train + n_test, dim, n_classes, spread)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_separable_data_is_learnt_perfectly():
    rng = np.random.default_rng(0)
    x, y, tx, ty = _split(rng, 200, 100, 5, 3, spread=20.0)
    assert linear_probe(x, y, tx, ty) == 1.0
    assert linear_probe(x, y, tx, ty, epochs=5) == 1.0


def test_labels_independent_of_features_give_chance():
    # The predictions depend only on the training split and the test features; test labels drawn uniformly
    # and independently of both make each prediction right with probability exactly 1/4, independently, so
    # by Hoeffding P(|accuracy - 1/4| >= 0.05) <= 2 exp(-2 * 2000 * 0.05^2) < 1e-4.
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((400, 10)), rng.integers(0, 4, 400)
    tx, ty = rng.standard_normal((2000, 10)), rng.integers(0, 4, 2000)
    for epochs in (None, 1):
        assert abs(linear_probe(x, y, tx, ty, epochs=epochs) - 0.25) < 0.05


def test_converged_probe_matches_scikit_learn():
    # Same objective: mean cross-entropy + (L2 / 2)|W|^2 with an unpenalised bias is scikit-learn's
    # C = 1 / (L2 * N) on the same standardised features.
    rng = np.random.default_rng(2)
    x, y, tx, ty = _split(rng, 150, 300, 6, 4, spread=1.0)
    mean, std = x.mean(axis=0), x.std(axis=0)
    reference = LogisticRegression(C=1.0 / (probe_module.L2 * len(x)), tol=1e-8, max_iter=10_000)
    reference.fit((x - mean) / std, y)
    expected = reference.predict((tx - mean) / std)
    predicted = probe_module._train_and_predict(x, y, 4, tx, None, 0)
    assert np.array_equal(predicted, expected)
    assert linear_probe(x, y, tx, ty) == pytest.approx(np.mean(expected == ty))
    # Weights agree loosely: with curvature as low as L2 = 1e-4, a gradient of 1e-5 (the stopping rule)
    # leaves the weights up to ~1e-5 / 1e-4 = 0.1 from the optimum in the flattest direction.
    weights, _ = probe_module._fit_lbfgs((x - mean) / std, y, 4)
    assert np.allclose(weights.T, reference.coef_, rtol=0.02, atol=0.02)


def _rederived_sgd_predictions(x, y, tx, steps):
    """Full-batch momentum steps (N <= batch size, so one step per epoch) written out from the docstring."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    xs, ts = (x - mean) / std, (tx - mean) / std
    n, dim = xs.shape
    n_classes = y.max() + 1
    curvature = max(np.linalg.eigvalsh(xs.T @ xs / n)[-1], 1.0)
    rate = 2.0 / curvature
    w, b = np.zeros((dim, n_classes)), np.zeros(n_classes)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(n_classes)[y]
    for _ in range(steps):
        z = xs @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        gw, gb = xs.T @ (p - onehot) / n, (p - onehot).sum(axis=0) / n
        vw, vb = 0.9 * vw + gw, 0.9 * vb + gb
        w, b = w - rate * vw, b - rate * vb
    return np.argmax(ts @ w + b, axis=1)


@pytest.mark.parametrize("epochs", [1, 5])
def test_sgd_matches_rederivation_when_one_batch_per_epoch(epochs):
    rng = np.random.default_rng(3)
    x, y, tx, ty = _split(rng, 120, 200, 5, 3, spread=0.7)
    expected = _rederived_sgd_predictions(x, y, tx, epochs)
    assert np.array_equal(probe_module._train_and_predict(x, y, 3, tx, epochs, 0), expected)
    assert linear_probe(x, y, tx, ty, epochs=epochs) == pytest.approx(np.mean(expected == ty))


def test_one_epoch_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    x, y, tx, ty = _split(rng, 1000, 300, 8, 5, spread=0.5)  # 4 minibatches: the shuffling matters
    first = probe_module._train_and_predict(x, y, 5, tx, 1, 7)
    assert np.array_equal(first, probe_module._train_and_predict(x, y, 5, tx, 1, 7))
    assert linear_probe(x, y, tx, ty, epochs=1, seed=7) == linear_probe(x, y, tx, ty, epochs=1, seed=7)


def test_registry_entries_and_wrappers():
    rng = np.random.default_rng(5)
    x, y, tx, ty = _split(rng, 300, 100, 4, 3, spread=0.8)
    for name, epochs in [("linear_probe", None), ("linear_probe_1ep", 1), ("linear_probe_5ep", 5)]:
        info = REGISTRY[name]
        assert info.needs == "features+test" and info.care
        if epochs is not None:
            assert info.function(x, y, tx, ty, seed=3) == linear_probe(x, y, tx, ty, epochs=epochs, seed=3)
    assert REGISTRY["linear_probe"].function is linear_probe


def test_test_labels_are_mapped_with_training_classes():
    rng = np.random.default_rng(6)
    x, y, tx, ty = _split(rng, 200, 100, 5, 3, spread=20.0)
    names = np.array(["cat", "dog", "emu"])
    assert linear_probe(x, names[y], tx, names[ty]) == 1.0
    # Test labels never seen in training count as wrong: 25 of 100 relabelled -> 0.75.
    test_names = names[ty].astype(object)
    test_names[:25] = "yak"
    assert linear_probe(x, names[y], tx, test_names) == pytest.approx(0.75)
    # Gapped integer labels in training, the same values in the test split.
    assert linear_probe(x, y * 10 + 5, tx, ty * 10 + 5) == 1.0


def test_edge_cases_are_well_defined():
    rng = np.random.default_rng(7)
    x, y, tx, ty = _split(rng, 120, 80, 4, 3, spread=1.0)
    for epochs in (None, 1):
        base = linear_probe(x, y, tx, ty, epochs=epochs)
        # A constant training column becomes 0 and keeps zero weight: predictions unchanged, even if the test
        # split has other values there.
        padded_x = np.column_stack([x, np.full(120, 3.3)])
        padded_tx = np.column_stack([tx, rng.normal(size=80)])
        const = linear_probe(padded_x, y, padded_tx, ty, epochs=epochs)
        assert const == base
        # Duplicated column, a class with one sample, D > N: finite accuracies in [0, 1].
        y_single = y.copy()
        y_single[0] = 9
        wide, wide_test = rng.standard_normal((20, 60)), rng.standard_normal((10, 60))
        for args in [
            (np.column_stack([x, x[:, 0]]), y, np.column_stack([tx, tx[:, 0]]), ty),
            (x, y_single, tx, ty),
            (wide, np.arange(20) % 2, wide_test, np.arange(10) % 2),
        ]:
            assert 0.0 <= linear_probe(*args, epochs=epochs) <= 1.0


GOOD_X = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]
GOOD_Y = [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((np.zeros((0, 2)), [], GOOD_X, GOOD_Y), {}),  # empty training split
        ((GOOD_X, GOOD_Y, np.zeros((0, 2)), []), {}),  # empty test split
        ((GOOD_X, [0, 1, 0], GOOD_X, GOOD_Y), {}),  # N mismatch (train)
        ((GOOD_X, GOOD_Y, GOOD_X, [0, 1]), {}),  # N mismatch (test)
        ((GOOD_X, GOOD_Y, [[0.0, 1.0, 2.0]], [0]), {}),  # train/test dimension mismatch
        (([[0.0, np.nan]] + GOOD_X[1:], GOOD_Y, GOOD_X, GOOD_Y), {}),  # NaN in training features
        ((GOOD_X, GOOD_Y, [[np.inf, 0.0]], [0]), {}),  # inf in test features
        ((GOOD_X, [1, 1, 1, 1], GOOD_X, GOOD_Y), {}),  # one class
        ((GOOD_X, GOOD_Y, GOOD_X, [0.0, np.nan, 1.0, 0.0]), {}),  # NaN test label
        ((GOOD_X, GOOD_Y, GOOD_X, GOOD_Y), {"epochs": 0}),
        ((GOOD_X, GOOD_Y, GOOD_X, GOOD_Y), {"epochs": 1.5}),
        ((GOOD_X, GOOD_Y, GOOD_X, GOOD_Y), {"epochs": True}),
        ((GOOD_X, GOOD_Y, GOOD_X, GOOD_Y), {"seed": -1}),
        ((GOOD_X, GOOD_Y, GOOD_X, GOOD_Y), {"seed": "a"}),
    ],
)
def test_bad_input_raises(args, kwargs):
    with pytest.raises(InputError):
        linear_probe(*args, **kwargs)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(seed="a"), "seed: expected an integer seed in [0, 2**32), got 'a'"),
        (dict(epochs=0), "epochs: expected a positive integer, got 0"),
    ],
)
def test_options_use_the_shared_rules(options, message):
    with pytest.raises(InputError) as caught:
        linear_probe(GOOD_X, GOOD_Y, GOOD_X, GOOD_Y, **options)
    assert str(caught.value) == message
