"""TransRate: a hand-computed case, the formula with explicit (D, D) determinants, and its behaviour."""

import math

import numpy as np
import pytest

from neucrab import InputError
from neucrab.measures import transrate


def rate(z, eps=1e-4):
    """R(Z, eps) = 1/2 logdet(I_d + Z^T Z / (n eps)) with the explicit (d, d) matrix."""
    n, d = z.shape
    sign, log_det = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
    assert sign > 0
    return 0.5 * log_det


def test_one_dimensional_case_by_hand():
    # Features 0, 1, 2 (class 0) and 9 (class 1); mean 3, centred -3, -2, -1, 6.
    # R(Z) = 1/2 log(1 + 50 / (4 eps)); class 0: sum of squares 14 over 3 rows, class 1: 36 over 1 row,
    # weighted by n_c / N = 3/4 and 1/4.
    eps = 1e-4
    expected = 0.5 * math.log(1 + 50 / (4 * eps)) - (
        0.75 * 0.5 * math.log(1 + 14 / (3 * eps)) + 0.25 * 0.5 * math.log(1 + 36 / (1 * eps))
    )
    assert transrate([[0.0], [1.0], [2.0], [9.0]], [0, 0, 0, 1]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, d", [(40, 3), (12, 30)], ids=["N>D", "D>N"])
def test_matches_the_formula_with_explicit_determinants(n, d):
    # Imbalanced classes (sizes differ), so the n_c / N weights matter; classes smaller than d exercise the
    # Gram-matrix (Sylvester) path, which the (d, d) determinants here do not use.
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 1, 2, 2, 2] * (n // 6) + [2] * (n % 6))
    features = rng.normal(size=(n, d)) + rng.normal(size=(3, d))[labels]
    z = features - features.mean(axis=0)
    expected = rate(z) - sum(np.mean(labels == c) * rate(z[labels == c]) for c in range(3))
    assert transrate(features, labels) == pytest.approx(expected, rel=1e-10)
    eps = 0.5
    expected = rate(z, eps) - sum(np.mean(labels == c) * rate(z[labels == c], eps) for c in range(3))
    assert transrate(features, labels, eps=eps) == pytest.approx(expected, rel=1e-10)


def test_balanced_classes_match_the_authors_equal_weights():
    # The authors' code averages the class rates with weight 1 / C; for balanced classes that is n_c / N.
    rng = np.random.default_rng(1)
    labels = np.arange(30) % 3
    features = rng.normal(size=(30, 4)) + labels[:, None]
    z = features - features.mean(axis=0)
    authors = rate(z) - sum(rate(z[labels == c]) for c in range(3)) / 3
    assert transrate(features, labels) == pytest.approx(authors, rel=1e-10)


def test_label_information_raises_the_score():
    # The class rates use the globally centred rows (the authors' definition), so each class term also grows
    # with its mean's offset and the score grows only like the log of the separation: a modest margin.
    rng = np.random.default_rng(2)
    labels = np.arange(300) % 3
    noise = rng.normal(size=(300, 8))
    informative = noise + 2.0 * rng.normal(size=(3, 8))[labels]
    uninformative = rng.normal(size=(300, 8)) * informative.std(axis=0)  # same scale, no class structure
    assert transrate(informative, labels) > transrate(uninformative, labels) + 0.3


def test_invariant_to_relabelling_sample_order_and_rotation():
    rng = np.random.default_rng(3)
    labels = np.arange(50) % 5
    features = rng.normal(size=(50, 6)) + rng.normal(size=(5, 6))[labels]
    base = transrate(features, labels)
    assert transrate(features, np.array(list("vwxyz"))[labels]) == pytest.approx(base, rel=1e-10)
    order = rng.permutation(50)
    assert transrate(features[order], labels[order]) == pytest.approx(base, rel=1e-10)
    # logdet(I + Q^T Z^T Z Q / c) = logdet(I + Z^T Z / c) for orthogonal Q; a shift is removed by the centring.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert transrate(features @ q - 3.0, labels) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("case", ["constant_column", "duplicate_columns", "one_sample_class", "d_greater_than_n"])
def test_degenerate_features_give_finite_values(case):
    rng = np.random.default_rng(4)
    labels = np.arange(30) % 3
    features = rng.normal(size=(30, 5)) + labels[:, None]
    if case == "constant_column":
        features[:, 1] = -2.0
    elif case == "duplicate_columns":
        features = np.hstack([features, features[:, :2]])
    elif case == "one_sample_class":
        labels = labels.copy()
        labels[0] = 5
    else:
        features = rng.normal(size=(30, 400)).astype(np.float32)
    value = transrate(features, labels)
    assert np.isfinite(value)
    if case != "d_greater_than_n":
        z = features - features.mean(axis=0)
        classes = np.unique(labels)
        expected = rate(z) - sum(np.mean(labels == c) * rate(z[labels == c]) for c in classes)
        assert value == pytest.approx(expected, rel=1e-9)


def test_duplicate_columns_of_huge_features_by_hand():
    # Three copies of one column: Z^T Z has the single non-zero eigenvalue 3 ||z||^2, so
    # R = 1/2 log(1 + 3 ||z||^2 / (n eps)). At |f| ~ 1e9 the identity in I + Z^T Z / (n eps) is below
    # round-off and Cholesky fails; the eigenvalue fallback must still give the exact value.
    v = np.array([0.0, 1.0, 2.0, 9.0])
    labels = [0, 0, 0, 1]
    for scale in (1.0, 1e8):
        z = (v - v.mean()) * scale

        def r(rows):
            return 0.5 * math.log1p(3 * np.sum(rows**2) / (len(rows) * 1e-4))

        expected = r(z) - (0.75 * r(z[:3]) + 0.25 * r(z[3:]))
        features = np.repeat((v * scale)[:, None], 3, axis=1)
        assert transrate(features, labels) == pytest.approx(expected, rel=1e-9)


def test_constant_features_score_zero():
    assert transrate(np.full((12, 3), 4.0), np.arange(12) % 2) == 0.0


def test_bad_input_is_refused():
    features = np.random.default_rng(5).normal(size=(10, 3))
    labels = np.arange(10) % 2
    with pytest.raises(InputError, match="features"):
        transrate(np.empty((0, 3)), [])
    with pytest.raises(InputError, match="labels"):
        transrate(features, labels[:3])
    bad = features.copy()
    bad[4, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        transrate(bad, labels)
    with pytest.raises(InputError, match="at least 2 classes"):
        transrate(features, ["same"] * 10)
    for eps in (0.0, -1.0, np.nan, "small"):
        with pytest.raises(InputError, match="eps"):
            transrate(features, labels, eps=eps)


def test_eps_uses_the_shared_rule():
    with pytest.raises(InputError) as caught:
        transrate(np.eye(4), [0, 1, 0, 1], eps=-1.0)
    assert str(caught.value) == "eps: expected a positive finite number, got -1.0"
