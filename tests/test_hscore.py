"""H-score and shrinkage H-score: hand-computed cases, known identities and invariances."""

import warnings

import numpy as np
import pytest

from neucrab import InputError
from neucrab.measures import SaturationWarning, hscore, shrinkage_hscore


def _task(n=60, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=(classes, d))[labels]
    return features, labels


def test_one_dimensional_hscore_is_between_over_total_variance():
    # Classes {1, 3} and {5, 7}: mean 4, total sum of squares 9 + 1 + 1 + 9 = 20, between-class sum of
    # squares 2 (2 - 4)^2 + 2 (6 - 4)^2 = 16, so H = 16 / 20.
    assert hscore([[1.0], [3.0], [5.0], [7.0]], ["a", "a", "b", "b"]) == pytest.approx(0.8, rel=1e-12)


def test_matrix_product_not_elementwise():
    features, labels = _task(n=40, d=3)
    centred = features - features.mean(axis=0)
    means = np.array([features[labels == c].mean(axis=0) for c in range(3)])
    g = means[labels] - features.mean(axis=0)
    cov_f = centred.T @ centred / 39
    cov_g = g.T @ g / 39
    expected = np.trace(np.linalg.inv(cov_f) @ cov_g)
    assert hscore(features, labels) == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(np.trace(np.linalg.inv(cov_f) * cov_g), rel=1e-3)


@pytest.mark.parametrize("n, d", [(11, 10), (8, 40)], ids=["N-1=D", "D>N"])
def test_hscore_is_c_minus_one_when_covariance_is_rank_deficient(n, d):
    rng = np.random.default_rng(3)
    labels = np.arange(n) % 3
    for features in (rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 5.0 * labels[:, None]):
        with pytest.warns(RuntimeWarning, match="C - 1"):
            assert hscore(features, labels) == pytest.approx(2.0, rel=1e-9)


def test_hscore_is_invariant_to_invertible_linear_maps():
    features, labels = _task(n=50, d=6, seed=1)
    a = np.random.default_rng(7).normal(size=(6, 6))
    assert abs(np.linalg.det(a)) > 1e-3
    shifted = features @ a + np.arange(6.0)
    assert hscore(shifted, labels) == pytest.approx(hscore(features, labels), rel=1e-9)


def test_hscore_ignores_duplicate_and_constant_columns():
    features, labels = _task(n=50, d=4, seed=2)
    base = hscore(features, labels)
    widened = np.hstack([features, features[:, :2], np.full((50, 1), 3.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rank 4 < N - 1: no warning expected
        assert hscore(widened, labels) == pytest.approx(base, rel=1e-8)


def test_invariant_to_relabelling_and_sample_order():
    features, labels = _task(n=45, d=4)
    order = np.random.default_rng(1).permutation(45)
    names = np.array(["dog", "cat", "emu"])[labels]
    for measure in (hscore, shrinkage_hscore):
        base = measure(features, labels)
        assert measure(features, names) == pytest.approx(base, rel=1e-10)
        assert measure(features, labels * 7 + 100) == pytest.approx(base, rel=1e-10)
        assert measure(features[order], labels[order]) == pytest.approx(base, rel=1e-10)


def test_one_dimensional_shrinkage_hscore():
    # In 1-d the Ledoit-Wolf target mu I equals the covariance itself, so the shrinkage is 0:
    # cov_alpha = 20 / 4 (biased), cov(E[f|y]) = 16 / 3 (unbiased, as np.cov), H_alpha = (16/3) / 5.
    value = shrinkage_hscore([[1.0], [3.0], [5.0], [7.0]], [0, 0, 1, 1])
    assert value == pytest.approx(16 / 15, rel=1e-12)


@pytest.mark.parametrize("n, d", [(60, 8), (20, 50)], ids=["N>D", "D>N"])
def test_shrinkage_hscore_matches_ledoit_wolf_formula(n, d):
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(4)
    labels = np.arange(n) % 4
    features = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(4, d))[labels]
    estimator = LedoitWolf().fit(features)  # scikit-learn's own estimator, independent of neucrab's
    alpha = estimator.shrinkage_
    assert 0 < alpha < 1
    means = np.array([features[labels == c].mean(axis=0) for c in range(4)])
    g = means[labels] - features.mean(axis=0)
    cov_g = g.T @ g / (n - 1)
    expected = np.trace(np.linalg.inv(estimator.covariance_) @ ((1 - alpha) * cov_g))
    assert shrinkage_hscore(features, labels) == pytest.approx(expected, rel=1e-9)


def test_shrinkage_hscore_stays_informative_when_d_exceeds_n():
    rng = np.random.default_rng(5)
    labels = np.arange(30) % 3
    noise = rng.normal(size=(30, 100))
    centres = rng.normal(size=(3, 100))
    weak, strong = noise + 0.2 * centres[labels], noise + 2.0 * centres[labels]
    with pytest.warns(RuntimeWarning):
        assert hscore(weak, labels) == pytest.approx(hscore(strong, labels), rel=1e-9)  # both C - 1
    assert shrinkage_hscore(strong, labels) > shrinkage_hscore(weak, labels)


@pytest.mark.parametrize("measure", [hscore, shrinkage_hscore])
def test_degenerate_input(measure):
    features, labels = _task(n=30, d=4)
    constant = np.full((30, 4), 2.5)
    assert measure(constant, labels) == 0.0  # no variance at all: nothing between classes either
    one_sample = labels.copy()
    one_sample[0] = 99
    assert np.isfinite(measure(features, one_sample))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isfinite(measure(np.random.default_rng(0).normal(size=(30, 80)).astype(np.float32), labels))


@pytest.mark.parametrize("measure", [hscore, shrinkage_hscore])
def test_bad_input_is_refused(measure):
    features, labels = _task(n=20, d=3)
    with pytest.raises(InputError, match="features"):
        measure(np.empty((0, 3)), [])
    with pytest.raises(InputError, match="labels"):
        measure(features, labels[:5])
    bad = features.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        measure(bad, labels)
    with pytest.raises(InputError, match="at least 2 classes"):
        measure(features, ["only"] * 20)


# ------------------------------------------------------------------------------------- saturation
def test_rank_n_minus_one_is_a_saturation_warning():
    # D = 40 > N - 1 = 19: pinv whitens the whole sample space and the H-score is C - 1 for any features.
    rng = np.random.default_rng(8)
    labels = np.arange(20) % 4
    with pytest.warns(SaturationWarning, match="C - 1 = 3") as caught:
        assert hscore(rng.normal(size=(20, 40)), labels) == pytest.approx(3.0, rel=1e-9)
    assert issubclass(caught[0].category, RuntimeWarning)  # also what it was before SaturationWarning


def test_healthy_hscore_does_not_warn():
    features, labels = _task(n=80, d=10, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0.0 < hscore(features, labels) < 2.0
        assert shrinkage_hscore(features, labels) > 0.0
