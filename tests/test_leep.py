"""LEEP, NCE and N-LEEP against values worked out independently: by hand, closed forms, invariances,
scikit-learn's Gaussian mixture, and every bad-input case."""

import math

import numpy as np
import pytest

from neucrab import InputError
from neucrab.measures import REGISTRY, leep, nce, nleep
from neucrab.measures.leep import nleep_spread

# ------------------------------------------------------------------------------------------ fixtures
THETA = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
Y = np.array([0, 0, 1])


def entropy_of(labels):
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def clusters(per_class=30, classes=3, dims=6, spread=1.0, gap=100.0, seed=0):
    """Well separated Gaussian blobs: class c centred at gap * e_c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = np.zeros((classes, dims))
    centres[np.arange(classes), np.arange(classes)] = gap
    return centres[labels] + spread * rng.standard_normal((labels.size, dims)), labels


def overlapping(n=120, dims=5, classes=3, seed=1):
    """Classes that overlap: N-LEEP strictly between log-prior and 0, and it moves with the seed."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dims)) * 1.5
    return centres[labels] + rng.standard_normal((n, dims)), labels


# ------------------------------------------------------------------------------- LEEP: worked values
def test_leep_hand_computed():
    # P(y,z) = (1/3) sum_{j: y_j = y} theta_jz:
    #   y=0: z0 (0.8+0.4)/3 = 1.2/3, z1 (0.2+0.6)/3 = 0.8/3;   y=1: z0 0.1/3, z1 0.9/3
    # P(z0) = 1.3/3, P(z1) = 1.7/3  =>  P(0|z0) = 12/13, P(1|z0) = 1/13, P(0|z1) = 8/17, P(1|z1) = 9/17
    # sample 1 (y=0): 0.8*12/13 + 0.2*8/17 = 0.832579...
    # sample 2 (y=0): 0.4*12/13 + 0.6*8/17 = 0.651584...
    # sample 3 (y=1): 0.1*1/13 + 0.9*9/17 = 0.484163...
    # LEEP = (ln 0.832579 + ln 0.651584 + ln 0.484163) / 3 = (-0.183227 - 0.428349 - 0.725334) / 3 = -0.445637
    expected = (
        math.log(0.8 * 12 / 13 + 0.2 * 8 / 17)
        + math.log(0.4 * 12 / 13 + 0.6 * 8 / 17)
        + math.log(0.1 * 1 / 13 + 0.9 * 9 / 17)
    ) / 3
    assert expected == pytest.approx(-0.445637, abs=1e-6)  # the arithmetic above, done by hand
    assert leep(THETA, Y) == pytest.approx(expected, rel=1e-12)


def test_leep_is_mean_log_not_mean_probability():
    mean_probability = (
        0.8 * 12 / 13 + 0.2 * 8 / 17 + 0.4 * 12 / 13 + 0.6 * 8 / 17 + 0.1 / 13 + 0.9 * 9 / 17
    ) / 3
    assert leep(THETA, Y) < math.log(mean_probability)  # Jensen: strictly below for unequal terms


def test_leep_perfect_one_to_one_map_is_zero():
    # Target class y always predicted as source class [3, 0, 4][y]; source classes 1 and 2 are never used
    # (zero mass: no 0/0 must leak into the result).
    labels = np.array([0, 1, 2, 2, 1, 0, 0])
    theta = np.zeros((labels.size, 5))
    theta[np.arange(labels.size), np.array([3, 0, 4])[labels]] = 1.0
    assert leep(theta, labels) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("counts", [(5, 3, 2), (4, 4, 4, 4), (1, 9)])
def test_leep_of_uniform_predictions_is_minus_label_entropy(counts):
    # theta uniform: P(y|z) = n_y / N for every z, so each term is log(n_y / N): mean = sum p log p = -H(Y).
    labels = np.repeat(np.arange(len(counts)), counts)
    theta = np.full((labels.size, 7), 1 / 7)
    expected = sum(c / labels.size * math.log(c / labels.size) for c in counts)
    assert leep(theta, labels) == pytest.approx(expected, rel=1e-12)
    if len(set(counts)) == 1:
        assert leep(theta, labels) == pytest.approx(math.log(1 / len(counts)), rel=1e-12)


def test_leep_equals_nce_for_one_hot_predictions():
    # With one-hot theta the dummy classifier's probability is P(y_j | z_j),
    # so LEEP = sum P(y,z) log P(y|z) = NCE.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    sources = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 9, 200))
    theta = np.eye(9)[sources]
    assert leep(theta, labels) == pytest.approx(nce(theta, labels), rel=1e-12)
    assert nce(theta, labels) < 0


def test_leep_and_nce_lie_between_minus_label_entropy_and_zero():
    # NCE = -H(Y|Z) >= -H(Y); LEEP >= -H(Y|Z_theta) >= -H(Y) by Jensen's inequality; both <= 0.
    rng = np.random.default_rng(4)
    for _ in range(5):
        theta = rng.dirichlet(np.full(8, 0.5), size=80)
        labels = rng.integers(0, 5, 80)
        assert -entropy_of(labels) <= leep(theta, labels) <= 0
        assert -entropy_of(labels) <= nce(theta, labels) <= 0


def test_leep_single_class_is_zero():
    assert leep(THETA, ["a", "a", "a"]) == 0.0
    assert nce(THETA, ["a", "a", "a"]) == 0.0


def test_leep_accepts_float32_rows_summing_to_one_within_tolerance():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 10))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, 50)
    assert leep(probs.astype(np.float32), labels) == pytest.approx(leep(probs, labels), abs=1e-6)


# ----------------------------------------------------------------------------------- NCE: worked values
def test_nce_hand_computed():
    # argmax z = [0, 1, 1], y = [0, 0, 1]: pairs (0,0), (0,1), (1,1) each with P = 1/3;
    # P(0|z0) = 1, P(0|z1) = 1/2, P(1|z1) = 1/2  =>  -H(Y|Z) = (1/3)(log 1 + log 1/2 + log 1/2) = -(2/3) log 2
    assert nce(THETA, Y) == pytest.approx(-2 / 3 * math.log(2), rel=1e-12)


def test_nce_closed_forms():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    perfect = np.eye(6)[np.array([5, 1, 3])[labels]]  # one-to-one map, three source classes unused
    assert nce(perfect, labels) == pytest.approx(0.0, abs=1e-15)
    constant = np.tile([0.1, 0.6, 0.3], (labels.size, 1))  # same argmax for every sample: H(Y|Z) = H(Y)
    assert nce(constant, labels) == pytest.approx(-entropy_of(labels), rel=1e-12)
    balanced = np.repeat(np.arange(4), 3)
    assert nce(np.tile([0.2, 0.8], (12, 1)), balanced) == pytest.approx(math.log(1 / 4), rel=1e-12)


def test_nce_ties_go_to_the_first_source_class():
    # Row 0 ties between z0 and z1 -> z0, so z0 holds {y=0, y=1} and z1 holds {y=1}: -(2/3) log 2.
    theta = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    assert nce(theta, [1, 0, 1]) == pytest.approx(-2 / 3 * math.log(2), rel=1e-12)


# ------------------------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("measure", [leep, nce])
def test_source_measures_invariances(measure):
    rng = np.random.default_rng(5)
    theta = rng.dirichlet(np.full(6, 0.3), size=60)
    labels = rng.integers(0, 4, 60)
    reference = measure(theta, labels)
    relabelled = np.array([2, 0, 3, 1])[labels]
    assert measure(theta, relabelled) == pytest.approx(reference, rel=1e-12)
    named = np.array(["cat", "ant", "zebra", "dog"])[labels]
    assert measure(theta, named) == pytest.approx(reference, rel=1e-12)
    gaps = np.array([3, 10, 42, 7])[labels]
    assert measure(theta, gaps) == pytest.approx(reference, rel=1e-12)
    order = rng.permutation(60)
    assert measure(theta[order], labels[order]) == pytest.approx(reference, rel=1e-12)
    columns = rng.permutation(6)
    assert measure(theta[:, columns], labels) == pytest.approx(reference, rel=1e-12)


# ----------------------------------------------------------------------------------------- multi-label
def duplicate_pairs(theta, multi_hot):
    rows, columns = np.nonzero(multi_hot)
    return theta[rows], columns


@pytest.mark.parametrize("measure", [leep, nce])
def test_multi_hot_counts_each_sample_label_pair_once(measure):
    rng = np.random.default_rng(7)
    theta = rng.dirichlet(np.ones(5), size=40)
    multi_hot = rng.random((40, 4)) < 0.4
    multi_hot[np.arange(40), rng.integers(0, 4, 40)] = True  # every row has a label
    # Definition: the same as one single-label sample per (sample, label) pair.
    assert measure(theta, multi_hot.astype(int)) == pytest.approx(measure(*duplicate_pairs(theta, multi_hot)))
    # One label per row is the plain single-label case; an all-zero column is a class that does not occur.
    labels = rng.integers(0, 3, 40)
    one_hot = np.eye(4)[labels]
    assert measure(theta, one_hot) == pytest.approx(measure(theta, labels), rel=1e-12)
    assert measure(theta, multi_hot) == pytest.approx(
        measure(theta, np.c_[multi_hot, np.zeros(40)]), rel=1e-12
    )


@pytest.mark.parametrize("measure", [leep, nce, nleep])
def test_multi_hot_refusals(measure):
    inputs = np.random.default_rng(0).dirichlet(np.ones(4), size=30)
    labels = np.eye(3)[np.arange(30) % 3]
    no_label = labels.copy()
    no_label[4] = 0
    with pytest.raises(InputError, match="no label"):
        measure(inputs, no_label)
    with pytest.raises(InputError, match="0 and 1"):
        measure(inputs, labels * 2)
    with pytest.raises(InputError, match="rows"):
        measure(inputs, labels[:-1])


# --------------------------------------------------------------------------------------------- N-LEEP
def leep_by_definition(theta, labels):
    """LEEP written out from its definition, independently of neucrab."""
    classes = sorted(set(labels.tolist()))
    joint = np.array([theta[labels == c].sum(axis=0) for c in classes]) / len(labels)
    conditional = joint / joint.sum(axis=0)
    index = {c: i for i, c in enumerate(classes)}
    return float(np.mean([math.log(theta[j] @ conditional[index[y]]) for j, y in enumerate(labels.tolist())]))


# D < N; and D > N (PCA from the Gram matrix), there with 1 component per class so that the components
# are not each a handful of points (which would make every posterior one-hot and the score exactly 0).
@pytest.mark.parametrize("n, dims, per_class, shift", [(150, 12, 5, 1.5), (40, 80, 1, 0.5)])
def test_nleep_matches_scikit_learn_formulation(n, dims, per_class, shift):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, n)
    x = rng.standard_normal((n, dims)) * np.linspace(3, 0.1, dims) + labels[:, None] * shift
    reduced = PCA(0.8, svd_solver="full").fit_transform(x)
    mixture = GaussianMixture(2 * per_class, covariance_type="full", random_state=0).fit(reduced)
    expected = leep_by_definition(mixture.predict_proba(reduced), labels)
    assert -entropy_of(labels) - 0.01 < expected < -0.01  # a non-degenerate case
    assert nleep(x, labels, components_per_class=per_class) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_mixture_fit_matches_scikit_learn_iteration_for_iteration():
    # Same EM, same stopping rule (|change of the mean log-likelihood| < 1e-3): same number of iterations,
    # same final lower bound, same posteriors; on overlapping data where EM takes many iterations.
    from sklearn.mixture import GaussianMixture

    from neucrab.measures.mixture import GaussianMixtureEM

    x, _ = overlapping(n=200, dims=3)
    reference = GaussianMixture(6, covariance_type="full", random_state=4).fit(x)
    ours = GaussianMixtureEM(x, 6, 4)
    posteriors = ours.fit_posteriors()
    assert reference.n_iter_ > 5
    assert (ours.n_iter, ours.converged) == (reference.n_iter_, reference.converged_)
    assert ours.lower_bound == pytest.approx(reference.score(x), rel=1e-9)
    np.testing.assert_allclose(posteriors, reference.predict_proba(x), atol=1e-9)


@pytest.mark.parametrize("n, dims, clusters, seed", [(3000, 20, 60, 0), (800, 5, 7, 3), (50, 2, 50, 1)])
def test_kmeans_plusplus_picks_and_labels_are_scikit_learns(n, dims, clusters, seed):
    # neucrab's k-means++ replica picks the rows scikit-learn's KMeans picks (same random draws and distances),
    # so the labels the EM starts from are scikit-learn's; with duplicate rows too, and K = N.
    from sklearn.cluster import KMeans

    from neucrab.measures.mixture_init import kmeans_labels, kmeans_plusplus_indices

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dims)) * np.linspace(3, 0.3, dims) + 1.0
    x[1::7] = x[::7][: len(x[1::7])]  # duplicates: ties in the distances
    expected = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit(x)
    picked = kmeans_plusplus_indices(x, clusters, seed)
    assert np.array_equal(kmeans_labels(x, clusters, seed), expected.labels_)
    try:  # the picks themselves, where scikit-learn's private function is as in 1.3-1.9
        from sklearn.cluster._kmeans import _kmeans_plusplus

        centred = x - x.mean(axis=0)
        own = _kmeans_plusplus(centred, clusters, x_squared_norms=np.einsum("ij,ij->i", centred, centred),
                               sample_weight=np.ones(n), random_state=np.random.RandomState(seed))[1]
    except (ImportError, TypeError):
        return
    assert np.array_equal(picked, own)


@pytest.mark.parametrize("n, dims, energy", [(600, 300, 0.99), (30, 80, 0.8)])
def test_pca_matches_scikit_learn(n, dims, energy):
    # Eigendecomposition of the scatter (or, for D > N, the Gram) matrix instead of an SVD: same dimension,
    # same scores, same signs. 99% of white noise needs more than the first batch of eigenpairs computed.
    from sklearn.decomposition import PCA

    from neucrab.measures.pca import pca

    x = np.random.default_rng(2).standard_normal((n, dims)) + 3.0
    expected = PCA(energy, svd_solver="full").fit_transform(x)
    ours = pca(x.copy(), energy=energy)  # N-LEEP's settings
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-8)
    assert pca(x, energy=1.0).shape[1] == min(n - 1, dims)  # energy 1 keeps every direction of non-zero variance


def test_nleep_does_not_modify_its_input():
    x, labels = overlapping()
    copy = x.copy()
    nleep(x, labels)
    nleep_spread(x, labels, seeds=(1,))
    np.testing.assert_array_equal(x, copy)


def test_nleep_of_separated_classes_is_zero():
    # Each mixture component sits inside one blob, so P(y|v) = 1 wherever P(v|x) is not ~0.
    x, labels = clusters()
    assert nleep(x, labels) == pytest.approx(0.0, abs=1e-9)


def test_nleep_multi_hot_with_a_label_shared_by_all_samples_is_log_half():
    # Every sample carries its blob's class and a shared "background" class: a pure component v has
    # P(class|v) = P(background|v) = 1/2, so every (sample, label) pair scores log(1/2).
    x, labels = clusters()
    multi_hot = np.c_[np.eye(3)[labels], np.ones(len(labels))]
    assert nleep(x, multi_hot) == pytest.approx(math.log(0.5), abs=1e-9)


def test_nleep_single_class_is_zero():
    x, _ = clusters()
    assert nleep(x, np.zeros(len(x))) == 0.0


def test_nleep_is_deterministic_and_bounded():
    # Bounds for any theta: LEEP <= 0, and by Jensen's inequality LEEP >= sum P(y,z) log P(y|z) = -H(Y|Z)
    # >= -H(Y) (conditioning does not increase entropy), strictly here since the features are informative.
    x, labels = overlapping()
    first = nleep(x, labels)
    assert nleep(x, labels) == first
    assert -entropy_of(labels) < first < 0


def test_nleep_spread_is_nleep_per_seed():
    x, labels = overlapping()
    spread = nleep_spread(x, labels, seeds=(0, 3, 9))
    assert spread.shape == (3,)
    assert spread.tolist() == [nleep(x, labels, seed=s) for s in (0, 3, 9)]


def test_nleep_exact_invariances():
    # PCA scores are unchanged (up to each axis' sign, which k-means and the mixture do not see) by
    # permuting or translating columns or appending constant ones; the labels' names play no part;
    # float32 input is the same numbers.
    x, labels = overlapping()
    reference = nleep(x, labels)
    columns = np.random.default_rng(0).permutation(x.shape[1])
    assert nleep(x[:, columns], labels) == pytest.approx(reference, abs=1e-9)
    assert nleep(x + 7.0, labels) == pytest.approx(reference, abs=1e-9)
    assert nleep(np.c_[x, np.full((len(x), 3), 2.0)], labels) == pytest.approx(reference, abs=1e-9)
    assert nleep(x, np.array(["b", "a", "zz"])[labels]) == pytest.approx(reference, abs=1e-12)
    x32 = x.astype(np.float32)
    assert nleep(x32, labels) == nleep(x32.astype(np.float64), labels)


def test_nleep_sample_order_changes_only_the_initialisation():
    # k-means++ draws samples by index, so permuting samples is a different initialisation: not exactly
    # invariant, but within the spread of values over seeds.
    x, labels = overlapping()
    order = np.random.default_rng(2).permutation(len(x))
    spread = nleep_spread(x, labels)
    width = spread.max() - spread.min()
    assert spread.min() - width - 1e-9 <= nleep(x[order], labels[order]) <= spread.max() + width + 1e-9


def test_nleep_degenerate_but_well_defined_inputs():
    x, labels = overlapping()
    checks = {
        "duplicate columns": (np.c_[x, x[:, :2]], labels),
        "one-sample class": (x, np.where(np.arange(len(x)) == 0, 9, labels)),
        "fewer distinct samples than components": (np.repeat(x[:8], 5, axis=0), np.repeat(labels[:8], 5)),
        "D > N": (np.c_[x[:20], np.random.default_rng(0).standard_normal((20, 60))], labels[:20] % 2),
        "huge offset and scale spread": (x * np.array([1e4, 1, 1, 1e-3, 1]) + 1e6, labels),
    }
    for name, (features, target) in checks.items():
        value = nleep(features, target)
        assert np.isfinite(value) and value <= 1e-12, name


def test_nleep_warns_when_em_stops_before_converging(monkeypatch):
    from sklearn.exceptions import ConvergenceWarning

    from neucrab.measures import mixture

    monkeypatch.setattr(mixture, "MAX_ITER", 1)
    x, labels = overlapping()
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        assert np.isfinite(nleep(x, labels))


def test_nleep_eigen_fallback_matches_cholesky(monkeypatch):
    # A component that is not numerically positive definite falls back to floored eigenvalues; on
    # proper components that path must give the same mixture.
    x, labels = overlapping()
    reference = nleep(x, labels)

    def refuse(_):
        raise np.linalg.LinAlgError("forced")

    monkeypatch.setattr(np.linalg, "cholesky", refuse)
    assert nleep(x, labels) == pytest.approx(reference, abs=1e-8)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("measure", [leep, nce])
def test_source_measures_refuse_bad_input(measure):
    with pytest.raises(InputError, match="source_probs"):
        measure(THETA * 2, Y)  # rows sum to 2: not probabilities
    with pytest.raises(InputError, match="source_probs"):
        measure(np.array([[1.5, -0.5], [0.5, 0.5], [0.5, 0.5]]), Y)
    with pytest.raises(InputError, match="source_probs"):
        measure(np.array([[np.nan, 1.0], [0.5, 0.5], [0.5, 0.5]]), Y)
    with pytest.raises(InputError, match="source_probs"):
        measure(np.zeros((0, 3)), [])
    with pytest.raises(InputError, match="source_probs"):
        measure(THETA[0], Y)
    with pytest.raises(InputError, match="labels"):
        measure(THETA, [0, 1])
    with pytest.raises(InputError, match="labels"):
        measure(THETA, [0.0, np.nan, 1.0])
    with pytest.raises(InputError, match="labels"):
        measure(THETA, [[0, 1], [1], [0]])  # ragged


def test_nleep_refuses_bad_input():
    x, labels = overlapping()
    with pytest.raises(InputError, match="components"):
        nleep(x[:12], labels[:12])  # 5 x 3 = 15 components > 12 samples
    with pytest.raises(InputError, match="constant"):
        nleep(np.ones((40, 4)), np.arange(40) % 2)
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(InputError, match="features"):
        nleep(bad, labels)
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="features"):
        nleep(bad, labels)
    with pytest.raises(InputError, match="features"):
        nleep(np.zeros((0, 4)), [])
    with pytest.raises(InputError, match="overflow"):
        nleep(x * 1e160, labels)  # finite, but squares overflow float64
    with pytest.raises(InputError, match="labels"):
        nleep(x, labels[:-1])
    for energy in (0, 1.5, "0.8", True):
        with pytest.raises(InputError, match="pca_energy"):
            nleep(x, labels, pca_energy=energy)
    for per_class in (0, 2.5):
        with pytest.raises(InputError, match="components_per_class"):
            nleep(x, labels, components_per_class=per_class)
    for seed in (-1, 1.5):
        with pytest.raises(InputError, match="seed"):
            nleep(x, labels, seed=seed)
    with pytest.raises(InputError, match="seeds"):
        nleep_spread(x, labels, seeds=())


def test_registry_entries():
    assert REGISTRY["leep"].needs == "source_probs" and REGISTRY["leep"].function is leep
    assert REGISTRY["nce"].needs == "source_probs" and REGISTRY["nce"].function is nce
    assert REGISTRY["nleep"].needs == "features" and REGISTRY["nleep"].function is nleep
    assert "nleep_spread" not in REGISTRY
    assert all(REGISTRY[name].care for name in ("leep", "nce", "nleep"))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(seed=2**32), "seed: expected an integer seed in [0, 2**32), got 4294967296"),
        (dict(pca_energy=0.0), "pca_energy: expected a number in (0, 1], got 0.0"),
        (dict(components_per_class=True), "components_per_class: expected a positive integer, got True"),
    ],
)
def test_nleep_options_use_the_shared_rules(options, message):
    x, labels = overlapping()
    with pytest.raises(InputError) as caught:
        nleep(x, labels, **options)
    assert str(caught.value) == message
