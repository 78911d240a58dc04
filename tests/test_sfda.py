"""SFDA: ordering, invariances, and agreement with a line-by-line re-derivation of the authors' code."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from neucrab.errors import InputError
from neucrab.measures import REGISTRY, SaturationWarning, sfda


def _biased_cov(x):
    return np.atleast_2d(np.cov(x.T, bias=True))


def _shrunk(cov, shrinkage):
    dim = cov.shape[0]
    out = (1.0 - shrinkage) * cov
    out.flat[:: dim + 1] += shrinkage * np.trace(cov) / dim
    return out


def _softmax(z):
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _reference_fit(x, y, shrinkage):
    """One regularised-FDA fit as in TencentARC/SFDA `SFDA._solve_eigen` + `predict_proba`, done literally:
    generalised eigenvectors of (S_b, shrunk S_w), coef = means V V^T (exact largest eigenvalue for the
    adaptive shrinkage, the documented deviation from three power-iteration steps)."""
    classes = np.unique(y)
    priors = np.array([np.mean(y == c) for c in classes])
    means = np.array([x[y == c].mean(axis=0) for c in classes])
    within = sum(p * _biased_cov(x[y == c]) for p, c in zip(priors, classes))
    if shrinkage is None:
        shrinkage = max(np.exp(-5.0 * np.linalg.eigvalsh(within)[-1]), 1e-10)
    shrunk_within = _shrunk(within, shrinkage)
    between = _shrunk(_biased_cov(x), shrinkage) - shrunk_within
    values, vectors = scipy.linalg.eigh(between, shrunk_within)
    vectors = vectors[:, np.argsort(values)[::-1]]
    coef = means @ vectors @ vectors.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return _softmax(x @ coef.T + intercept), shrinkage, means


def reference_sfda(x, y):
    """`SFDA_Score` re-derived: fit, soften with a second softmax, ConfMix towards the other classes' mean
    class mean, refit with the same shrinkage, mean true-class probability."""
    x = np.array(x, dtype=float)
    y = np.unique(y, return_inverse=True)[1]
    n_classes = y.max() + 1
    prob, shrinkage, means = _reference_fit(x, y, None)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        other_mean = (means.sum(axis=0) - means[c]) / (n_classes - 1)
        q = prob[idx, c][:, None]
        x[idx] = q * x[idx] + (1 - q) * other_mean
    prob, _, _ = _reference_fit(x, y, shrinkage)
    return prob[np.arange(len(y)), y].mean()


def _clusters(rng, n, dim, n_classes, spread, scale=1.0, offset=0.0):
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)
    centres = rng.standard_normal((n_classes, dim)) * spread
    return (centres[y] + rng.standard_normal((n, dim))) * scale + offset, y


@pytest.mark.parametrize(
    ("n", "dim", "n_classes", "scale"),
    [
        (60, 5, 3, 0.3),  # lambda_max < 4.6: adaptive shrinkage above the floor
        (60, 5, 3, 3.0),  # shrinkage at the 1e-10 floor
        (45, 8, 4, 0.2),
        (30, 40, 3, 0.1),  # D > N: solved in the row space, must agree with the full-D reference
    ],
)
def test_matches_reference_re_derivation(n, dim, n_classes, scale):
    rng = np.random.default_rng(n + dim)
    x, y = _clusters(rng, n, dim, n_classes, spread=0.7, scale=scale, offset=5.0)
    assert sfda(x, y) == pytest.approx(reference_sfda(x, y), rel=1e-9, abs=1e-12)


def test_separable_scores_above_inseparable():
    rng = np.random.default_rng(0)
    x, y = _clusters(rng, 300, 6, 3, spread=8.0)
    separable = sfda(x, y)
    shuffled = sfda(x, rng.permutation(y))  # same features, labels unrelated to them
    assert separable > 0.95
    assert shuffled < separable - 0.3
    # With labels independent of the features the classifier cannot beat the priors by much: about 1/3.
    assert abs(shuffled - 1 / 3) < 0.1


def test_invariant_to_relabelling_permutation_and_shift():
    rng = np.random.default_rng(1)
    x, y = _clusters(rng, 90, 4, 3, spread=1.0)
    base = sfda(x, y)
    names = np.array(["zebra", "ant", "moth"])[y]
    assert sfda(x, names) == pytest.approx(base, rel=1e-12)
    assert sfda(x, y * 7 + 3) == pytest.approx(base, rel=1e-12)  # gaps in the labels
    perm = rng.permutation(90)
    assert sfda(x[perm], y[perm]) == pytest.approx(base, rel=1e-10)
    assert sfda(x + 1e3, y) == pytest.approx(base, rel=1e-8)  # LDA scores shift by a class-independent amount


def test_float32_input_matches_float64_of_same_values():
    rng = np.random.default_rng(2)
    x, y = _clusters(rng, 80, 5, 4, spread=1.0)
    x32 = x.astype(np.float32)
    assert sfda(x32, y) == sfda(x32.astype(np.float64), y)


def test_edge_cases_are_well_defined():
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 50, 4, 3, spread=1.0)
    # A class with one sample, a constant column, a duplicated column, D > N: finite, and as the reference.
    y_single = y.copy()
    y_single[0] = 9
    cases = [
        (x, y_single),
        (np.column_stack([x, np.full(50, 3.0)]), y),
        (np.column_stack([x, x[:, 1]]), y),
        (rng.standard_normal((12, 30)), np.arange(12) % 3),
    ]
    for features, labels in cases:
        value = sfda(features, labels)
        assert 0.0 < value <= 1.0
        assert value == pytest.approx(reference_sfda(features, labels), rel=1e-7)


def test_saturates_when_d_exceeds_n():
    # Documented limitation (as in the reference): with D >> N the training-set classifier separates
    # every sample, even for labels unrelated to the features.
    rng = np.random.default_rng(4)
    assert sfda(rng.standard_normal((20, 200)), np.arange(20) % 2) > 0.99


@pytest.mark.parametrize(
    ("features", "labels"),
    [
        (np.zeros((0, 3)), []),  # empty
        (np.ones((4, 2)), [0, 1, 0]),  # N mismatch
        ([[0.0, 1.0], [np.nan, 1.0], [1.0, 2.0]], [0, 1, 0]),  # NaN
        ([[0.0, 1.0], [np.inf, 1.0], [1.0, 2.0]], [0, 1, 0]),  # inf
        ([[0.0], [1.0], [2.0]], ["a", "a", "a"]),  # one class
        (np.ones((5, 3)), [0, 1, 0, 1, 0]),  # all rows identical: no within-class scatter
        ([[0.0], [0.0], [1.0], [1.0]], [0, 0, 1, 1]),  # every class a single repeated point
        ([[0.0], [1.0], [2.0]], [0, 1, 2]),  # every class a single sample
    ],
)
def test_bad_input_raises(features, labels):
    with pytest.raises(InputError):
        sfda(features, labels)


def test_registered():
    info = REGISTRY["sfda"]
    assert info.function is sfda and info.needs == "features" and "saturates" in info.care


# ------------------------------------------------------------------------------------- saturation
def test_saturation_with_as_many_dimensions_as_samples_warns():
    # Labels unrelated to the features, D = 200 >= N - C = 38: every training sample is separated anyway.
    rng = np.random.default_rng(5)
    with pytest.warns(SaturationWarning, match="N - C = 38"):
        assert sfda(rng.standard_normal((40, 200)), np.arange(40) % 2) > 0.99


def test_healthy_sfda_does_not_warn():
    # Well separated classes (score near 1) with D far below N: a real property of the features, no warning;
    # and D > N at a small feature scale (large shrinkage), where the score is not saturated.
    rng = np.random.default_rng(6)
    x, y = _clusters(rng, 300, 6, 3, spread=8.0)
    small = np.random.default_rng(7).standard_normal((60, 200)) * 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sfda(x, y) > 0.95
        assert sfda(small, np.arange(60) % 3) < 0.99
