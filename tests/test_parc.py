"""PARC: Spearman against scipy, the maximum for perfectly clustered features, invariances, probe sets."""

import importlib

import numpy as np
import pytest
import scipy.stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from neucrab.errors import InputError
from neucrab.measures import REGISTRY, parc

parc_module = importlib.import_module("neucrab.measures.parc")


def reference_parc(x, y, n_dims=32):
    """The authors' pipeline with scikit-learn and scipy: PCA, StandardScaler, 1 - corrcoef of the samples,
    Spearman over the upper triangle, x100. The label dissimilarity is built exactly (0 same class, 1
    otherwise): 1 - corrcoef of one-hot rows gives 0 or 2.2e-16 for same-class pairs, rounding noise that
    scipy would rank as if it were a real difference."""
    k = min(n_dims, *x.shape)
    scores = StandardScaler().fit_transform(PCA(n_components=k, svd_solver="full").fit_transform(x))
    upper = np.triu_indices(len(y), 1)
    features = (1.0 - np.corrcoef(scores))[upper]
    labels = (np.asarray(y)[:, None] != np.asarray(y)[None, :])[upper].astype(float)
    return 100.0 * scipy.stats.spearmanr(features, labels)[0]


def _clusters(rng, n, dim, n_classes, spread):
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)
    return rng.standard_normal((n_classes, dim))[y] * spread + rng.standard_normal((n, dim)), y


@pytest.mark.parametrize(("n", "dim", "n_classes"), [(50, 10, 3), (120, 40, 5), (80, 100, 4), (90, 64, 7)])
def test_matches_sklearn_scipy_pipeline(n, dim, n_classes):
    rng = np.random.default_rng(n)
    x, y = _clusters(rng, n, dim, n_classes, spread=1.0)
    assert parc(x, y) == pytest.approx(reference_parc(x, y), rel=1e-9)


def test_spearman_with_binary_matches_scipy_including_ties():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(3, 200))
        values = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.random(n)
        flag = rng.random(n) < 0.4
        flag[:2] = [True, False]
        expected = scipy.stats.spearmanr(values, flag.astype(float))[0]
        got = parc_module._spearman_with_binary(values, flag)
        assert got == pytest.approx(expected, abs=1e-12)


def test_perfectly_clustered_features_reach_the_maximum():
    # Tight clusters at 8 generic centres in 6 dimensions (so every PCA component carries the centres, not
    # the noise): every same-class dissimilarity (about 1e-12) is below every different-class one. With M
    # pairs of which M0 are same-class and M1 different, and no ties, the ranks of the different-class pairs
    # are M0+1..M, so Spearman = sqrt(3 M0 M1 / (M^2 - 1)), the largest value it can take.
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((8, 6))
    y = np.repeat(np.arange(8), 5)
    x = centres[y] + 1e-6 * rng.standard_normal((40, 6))
    pairs = 40 * 39 // 2
    same = 8 * (5 * 4 // 2)
    maximum = 100.0 * np.sqrt(3.0 * same * (pairs - same) / (pairs**2 - 1))
    assert parc(x, y) == pytest.approx(maximum, rel=1e-9)
    noisy = x + 0.5 * rng.standard_normal(x.shape)
    assert parc(noisy, y) < maximum


def test_unrelated_labels_score_near_zero_and_order_below_related():
    rng = np.random.default_rng(2)
    x, y = _clusters(rng, 200, 16, 4, spread=2.0)
    assert parc(x, y) > 20.0
    assert abs(parc(x, rng.permutation(y))) < 5.0


def test_relabelling_and_permutation_invariance():
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 100, 12, 4, spread=1.0)
    base = parc(x, y)
    assert parc(x, np.array(["d", "c", "b", "a"])[y]) == pytest.approx(base, rel=1e-12)
    perm = rng.permutation(100)
    assert parc(x[perm], y[perm]) == pytest.approx(base, rel=1e-9)
    # With a probe set the draw depends on which samples share a class, never on the class names.
    sub = parc(x, y, max_samples=40)
    assert parc(x, (y + 1) % 4, max_samples=40) == pytest.approx(sub, rel=1e-12)
    assert parc(x, y, max_samples=40, seed=0) == sub  # deterministic


def test_probe_set_is_class_balanced_in_pairs():
    codes = np.repeat([0, 1, 2], [50, 20, 3])
    chosen = parc_module._probe_set(codes, 30, seed=0)
    counts = np.bincount(codes[chosen], minlength=3)
    # As even as possible: the 3-sample class is exhausted, the other two share the remaining 27 (13/14).
    assert counts.sum() == 30 and counts[2] == 3 and sorted(counts[:2]) == [13, 14]
    assert len(np.unique(chosen)) == 30
    # Budget below the number of classes: samples come in same-class pairs, so same-class pairs remain.
    many = np.repeat(np.arange(100), 3)
    chosen = parc_module._probe_set(many, 10, seed=0)
    assert np.bincount(many[chosen]).max() == 2


def test_edge_cases_are_well_defined():
    rng = np.random.default_rng(4)
    x, y = _clusters(rng, 60, 8, 3, spread=1.0)
    base = parc(x, y)
    # A constant column adds nothing: its null PCA direction is dropped (documented deviation: the reference
    # would keep a zero column when D < 32, shifting every row's mean).
    assert parc(np.column_stack([x, np.full(60, 5.0)]), y) == pytest.approx(base, rel=1e-9)
    # Duplicated column (rank 8 of 9), D > N (rank N - 1 after centring), a class with one sample, D below 32:
    # agree with the scikit-learn pipeline keeping as many components as the features' rank.
    y_single = y.copy()
    y_single[0] = 7
    wide = rng.standard_normal((20, 50))
    for features, labels, rank in [
        (np.column_stack([x, x[:, 0]]), y, 8),
        (wide, np.arange(20) % 3, 19),
        (x, y_single, 8),
        (x[:, :3], y, 3),
    ]:
        expected = reference_parc(features, labels, n_dims=rank)
        assert parc(features, labels) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("features", "labels", "kwargs"),
    [
        (np.zeros((0, 3)), [], {}),  # empty
        (np.ones((4, 2)), [0, 1, 0], {}),  # N mismatch
        ([[0.0, 1.0], [np.nan, 1.0], [1.0, 2.0]], [0, 1, 0], {}),  # NaN
        ([[0.0, 1.0], [np.inf, 1.0], [1.0, 2.0]], [0, 1, 0], {}),  # inf
        ([[0.0, 1.0], [1.0, 2.0], [2.0, 0.0]], ["a", "a", "a"], {}),  # one class
        ([[0.0, 1.0], [1.0, 2.0], [2.0, 0.0]], [0, 1, 2], {}),  # no class with two samples
        (np.ones((6, 3)), [0, 1, 0, 1, 0, 1], {}),  # constant features: rank 0
        (np.arange(12.0).reshape(6, 2), [0, 1, 0, 1, 0, 1], {}),  # rank 1 (collinear columns)
        (np.eye(6), [0, 1, 0, 1, 0, 1], {"n_dims": 1}),
        (np.eye(6), [0, 1, 0, 1, 0, 1], {"max_samples": 1}),
        (np.eye(6), [0, 1, 0, 1, 0, 1], {"max_samples": 2.5}),
        (np.eye(6), [0, 1, 0, 1, 0, 1], {"seed": -1}),
    ],
)
def test_bad_input_raises(features, labels, kwargs):
    with pytest.raises(InputError):
        parc(features, labels, **kwargs)


def test_registered():
    info = REGISTRY["parc"]
    assert info.function is parc and info.needs == "features" and "4000" in info.care


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(seed=-1), "seed: expected an integer seed in [0, 2**32), got -1"),
        (dict(n_dims=1), "n_dims: expected an integer >= 2, got 1"),
        (dict(max_samples=2.5), "max_samples: expected an integer >= 2, got 2.5"),
    ],
)
def test_options_use_the_shared_rules(options, message):
    with pytest.raises(InputError) as caught:
        parc(np.eye(6), [0, 1, 0, 1, 0, 1], **options)
    assert str(caught.value) == message
