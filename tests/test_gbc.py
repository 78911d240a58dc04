"""GBC: Bhattacharyya distances by closed form, known overlaps, the variance floor and invariances."""

import math
import warnings

import numpy as np
import pytest

from neucrab import InputError
from neucrab.measures import SaturationWarning, gbc
from neucrab.measures.gbc import VARIANCE_FLOOR, _bhattacharyya_distance


def closed_form_1d(m1, v1, m2, v2):
    """Bhattacharyya distance of N(m1, v1) and N(m2, v2) in one dimension (textbook form)."""
    return (m1 - m2) ** 2 / (4 * (v1 + v2)) + 0.5 * math.log((v1 + v2) / (2 * math.sqrt(v1 * v2)))


@pytest.mark.parametrize("m1, v1, m2, v2", [(0.0, 1.0, 0.0, 1.0), (0.0, 1.0, 3.0, 1.0), (1.5, 0.2, -2.0, 4.0)])
def test_bhattacharyya_distance_of_1d_gaussians(m1, v1, m2, v2):
    value = _bhattacharyya_distance(np.array([m1]), np.array([v1]), np.array([m2]), np.array([v2]))
    assert value == pytest.approx(closed_form_1d(m1, v1, m2, v2), rel=1e-12, abs=1e-15)


def test_diagonal_distance_matches_the_multivariate_formula():
    # D_B = 1/8 d^T S^-1 d + 1/2 log(det S / sqrt(det S1 det S2)), S = (S1 + S2) / 2, with explicit matrices.
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([2.0, 0.5, 0.0])
    v1, v2 = np.array([1.0, 0.5, 2.0]), np.array([0.3, 1.5, 2.0])
    s1, s2 = np.diag(v1), np.diag(v2)
    s = (s1 + s2) / 2
    diff = m1 - m2
    expected = diff @ np.linalg.solve(s, diff) / 8 + 0.5 * np.log(
        np.linalg.det(s) / np.sqrt(np.linalg.det(s1) * np.linalg.det(s2))
    )
    assert _bhattacharyya_distance(m1, v1, m2, v2) == pytest.approx(expected, rel=1e-12)


def test_one_dimensional_two_class_score_by_hand():
    # Class a: {0, 1, 2} (mean 1, population variance 2/3); class b: {3, 5} (mean 4, variance 1).
    # In 1-d the PCA is a sign flip at most, which leaves the distance unchanged. GBC = -2 BC (both orders).
    features = np.array([[0.0], [1.0], [2.0], [3.0], [5.0]])
    labels = ["a", "a", "a", "b", "b"]
    coefficient = math.exp(-closed_form_1d(1.0, 2 / 3, 4.0, 1.0))
    assert gbc(features, labels) == pytest.approx(-2 * coefficient, rel=1e-12)


def test_class_with_one_sample_uses_the_variance_floor():
    # Class b has one sample: its variance 0 is floored at VARIANCE_FLOOR (1e-4, the authors' value).
    features = np.array([[0.0], [2.0], [1.0]])
    labels = [0, 0, 1]
    coefficient = math.exp(-closed_form_1d(1.0, 1.0, 1.0, VARIANCE_FLOOR))
    assert VARIANCE_FLOOR == 1e-4
    assert gbc(features, labels) == pytest.approx(-2 * coefficient, rel=1e-12)


def test_identical_classes_overlap_completely():
    # Every class holds the same set of points: identical Gaussians, BC = 1 for each of the C (C - 1) pairs.
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20, 100))
    classes = 4
    features = np.vstack([points] * classes)
    labels = np.repeat(np.arange(classes), 20)
    assert gbc(features, labels) == pytest.approx(-classes * (classes - 1), rel=1e-10)


def test_well_separated_classes_score_near_zero():
    rng = np.random.default_rng(1)
    labels = np.arange(90) % 3
    features = rng.normal(size=(90, 10)) + 100.0 * np.eye(3, 10)[labels]
    assert -1e-12 < gbc(features, labels) <= 0.0


def test_pca_keeps_high_dimensional_scores_informative():
    # Two classes drawn from the same distribution in 2,000 dimensions overlap almost completely. On the raw
    # features the summed per-dimension sampling noise makes BC vanish (about exp(-17) here); after the PCA to
    # 64 dimensions the score still says "heavy overlap" and orders the noise below real separation.
    rng = np.random.default_rng(2)
    labels = np.arange(120) % 2
    noise = rng.normal(size=(120, 2000))
    same = gbc(noise, labels)
    separated = gbc(noise + 3.0 * np.eye(2, 2000)[labels] * np.sqrt(2000) / 10, labels)
    assert -2.0 <= same < -0.05
    assert separated > same


def test_invariant_to_relabelling_sample_order_and_rotation():
    rng = np.random.default_rng(3)
    labels = np.arange(60) % 3
    features = rng.normal(size=(60, 5)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5]) + 2.0 * rng.normal(size=(3, 5))[labels]
    base = gbc(features, labels)
    assert gbc(features, np.array(["x", "b", "q"])[labels]) == pytest.approx(base, rel=1e-10)
    order = rng.permutation(60)
    assert gbc(features[order], labels[order]) == pytest.approx(base, rel=1e-10)
    # The PCA axes turn with the data, so an orthogonal map (and a shift) leaves the score unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert gbc(features @ q + 7.0, labels) == pytest.approx(base, rel=1e-8)


@pytest.mark.parametrize("case", ["constant_column", "duplicate_columns", "d_greater_than_n", "all_constant"])
def test_degenerate_features_give_finite_values(case):
    rng = np.random.default_rng(4)
    labels = np.arange(30) % 3
    features = rng.normal(size=(30, 6)) + labels[:, None]
    if case == "constant_column":
        features[:, 0] = 1.0
    elif case == "duplicate_columns":
        features = np.hstack([features, features])
    elif case == "d_greater_than_n":
        features = rng.normal(size=(30, 300)).astype(np.float32)
    else:
        features = np.full((30, 6), 2.0)
    value = gbc(features, labels)
    assert np.isfinite(value) and -6.0 <= value <= 0.0
    if case == "all_constant":
        assert value == pytest.approx(-6.0)  # every class is the same point: BC = 1 for all 6 ordered pairs


def test_bad_input_is_refused():
    features = np.random.default_rng(5).normal(size=(10, 3))
    labels = np.arange(10) % 2
    with pytest.raises(InputError, match="features"):
        gbc(np.empty((0, 3)), [])
    with pytest.raises(InputError, match="labels"):
        gbc(features, labels[:9])
    bad = features.copy()
    bad[1, 1] = -np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        gbc(bad, labels)
    with pytest.raises(InputError, match="at least 2 classes"):
        gbc(features, np.ones(10))


# ------------------------------------------------------------------------------------- saturation
def test_underflow_of_every_coefficient_warns():
    # Class means 1000 noise standard deviations apart: D_B ~ 1000^2 / 8 per pair, exp(-D_B) underflows to 0
    # for every pair, so the score is 0 for this checkpoint and for any other that separates the classes.
    rng = np.random.default_rng(6)
    labels = np.arange(60) % 3
    features = rng.normal(size=(60, 4)) + 1000.0 * np.eye(3, 4)[labels]
    with pytest.warns(SaturationWarning, match="underflows"):
        assert gbc(features, labels) == 0.0


def test_healthy_gbc_does_not_warn():
    # Overlapping classes (and one well separated pair, whose coefficient alone underflows): no warning.
    rng = np.random.default_rng(7)
    labels = np.arange(90) % 3
    features = rng.normal(size=(90, 5)) + np.array([[0.0] * 5, [0.5] + [0.0] * 4, [1000.0] + [0.0] * 4])[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert -6.0 < gbc(features, labels) < -0.1
