"""The I_alpha mutual information measure against cases whose mutual information is known.

Known answers used here:
- two classes, x | y ~ N(+-mu, 1) in one dimension: I = log 2 - E_x[H(Y | X = x)], with
  P(y = 1 | x) = sigmoid(2 mu x), integrated numerically;
- labels a deterministic function of well-separated clusters: I = H(Y) = log C for balanced classes;
- labels drawn independently of the features: I = 0;
- alpha = 1 (InfoNCE): every minibatch estimate is at most log(K - 1), exactly (module docstring).
Training uses few steps (the `steps` keyword) to keep this file fast.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

from neucrab import InputError
from neucrab.measures import REGISTRY, ialpha, mutual_information
from neucrab.measures.registry import FEATURES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def true_mi_two_gaussians(mu: float) -> float:
    def conditional_entropy_density(x):
        density = 0.5 * stats.norm.pdf(x, mu) + 0.5 * stats.norm.pdf(x, -mu)
        p = 1.0 / (1.0 + math.exp(-2.0 * mu * x))
        entropy = -(p * math.log(p) + (1 - p) * math.log1p(-p)) if 0.0 < p < 1.0 else 0.0
        return density * entropy

    return math.log(2.0) - integrate.quad(conditional_entropy_density, -mu - 12, mu + 12, limit=200)[0]


def two_gaussians(mu: float, n: int, seed: int = 0):
    # Labels drawn i.i.d. (not exactly balanced): the minibatch bound assumes an i.i.d. sample.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    return (2 * labels - 1)[:, None] * mu + rng.normal(size=(n, 1)), labels


def estimate_and_error(features, labels, **kwargs):
    """The estimate and the standard error of its held-out batch estimates (CLT over batches)."""
    options = dict(alpha=0.01, pca=False, pca_energy=0.8, steps=ialpha.STEPS, seed=0,
                   batch_size=ialpha.BATCH_SIZE)
    options.update(kwargs)
    values, sizes = np.array(ialpha._estimate(features, labels, **options)).T
    return float(np.average(values, weights=sizes)), float(values.std(ddof=1) / math.sqrt(values.size))


# ------------------------------------------------------------------------------ the bound itself
def bound_by_loops(f: np.ndarray, codes: np.ndarray, log_q: np.ndarray, alpha: float) -> float:
    """I_hat written term by term from the module docstring; f[k, y] = f(x_k, y)."""
    k = len(codes)

    def log_a(label, held_out):
        others = [f[m, label] for m in range(k) if m != held_out]
        log_m = logsumexp(others) - math.log(k - 1)
        terms = [log_m + math.log(alpha)] if alpha > 0 else []
        terms += [log_q[label] + math.log(1 - alpha)] if alpha < 1 else []
        return logsumexp(terms)

    total = 0.0
    for j, i in itertools.permutations(range(k), 2):  # j held out, i != j
        total += f[i, codes[i]] - log_a(codes[i], j) - math.exp(f[i, codes[j]] - log_a(codes[j], j))
    return 1.0 + total / (k * (k - 1))


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5, 1.0])
def test_minibatch_bound_matches_the_formula_term_by_term(alpha):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(6, 3)) * 2
    codes = np.array([0, 1, 2, 0, 1, 1])
    log_q = np.log([0.2, 0.5, 0.3])
    value = ialpha._bound(torch.tensor(f), torch.tensor(codes), torch.tensor(log_q), alpha)
    assert float(value) == pytest.approx(bound_by_loops(f, codes, log_q, alpha), rel=1e-12, abs=1e-12)


def test_leave_one_out_mean_is_exact_when_one_score_dominates():
    # Row 0: one entry 800 above the rest; leaving it out must give the log-mean of the others, not -inf/NaN.
    scores = np.array([[800.0, 0.0, -1.0, -2.0], [1.0, 2.0, 3.0, 4.0]])
    loo = ialpha._log_loo_mean(torch.tensor(scores)).numpy()
    for i, j in itertools.product(range(2), range(4)):
        assert loo[i, j] == pytest.approx(logsumexp(np.delete(scores[i], j)) - math.log(3), rel=1e-13)


def test_optimal_critic_makes_the_bound_tight():
    # With f(x, y) = log p(y|x) and q(y) = p(y), alpha = 0 gives E[I_hat] = 1 + I - E_p(x)p(y)[p(y|x) / p(y)]
    # = I exactly. Averaged over 400 batches of 64, within 4 standard errors of the quadrature value.
    mu, k, batches = 1.0, 64, 400
    rng = np.random.default_rng(0)
    log_q = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    values = []
    for _ in range(batches):
        codes = rng.integers(0, 2, size=k)
        x = (2 * codes - 1) * mu + rng.normal(size=k)
        f = np.stack([-np.logaddexp(0, 2 * mu * x), -np.logaddexp(0, -2 * mu * x)], axis=1)  # log p(y|x)
        values.append(float(ialpha._bound(torch.tensor(f), torch.tensor(codes), log_q, 0.0)))
    error = np.std(values, ddof=1) / math.sqrt(batches)
    assert abs(np.mean(values) - true_mi_two_gaussians(mu)) < 4 * error


# ------------------------------------------------------------------------- trained critic
def test_deterministic_labels_give_log_c():
    # Four clusters 20 noise standard deviations apart: the label is a function of x, I = H(Y) = log 4
    # for the uniform label distribution the labels are drawn from.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=256)  # i.i.d. uniform: H(Y) = log 4
    centres = np.eye(4) * 10.0
    features = centres[labels] + rng.normal(size=(256, 4)) * 0.5
    estimate, error = estimate_and_error(features, labels, steps=60)
    assert math.log(4) - 0.1 < estimate < math.log(4) + 4 * error  # a lower bound, and close


def test_estimates_stay_below_the_true_mi_and_grow_with_separation():
    estimates = []
    for mu in (0.5, 1.5):
        features, labels = two_gaussians(mu, 768, seed=2)
        estimate, error = estimate_and_error(features, labels, steps=120)
        truth = true_mi_two_gaussians(mu)
        assert estimate < truth + 4 * error, (mu, estimate, truth)
        assert estimate > truth - 0.1, (mu, estimate, truth)
        estimates.append(estimate)
    assert estimates[1] > estimates[0]


def test_independent_labels_give_about_zero():
    rng = np.random.default_rng(4)
    features, labels = rng.normal(size=(384, 3)), rng.integers(0, 3, size=384)
    estimate, error = estimate_and_error(features, labels, steps=120)
    # Upper side: the held-out bound has expectation <= I = 0, so above 0 only by sampling noise (CLT).
    assert estimate < 4 * error
    # Lower side: the kept critic beat the near-constant initial one (bound ~0) on the early-stopping samples,
    # so on new data it can fall below 0 only by what it fitted to noise; 0.1 nats is a loose margin for that.
    assert estimate > -0.1


def test_infonce_estimate_never_exceeds_log_k_minus_one():
    # alpha = 1: the marginal term is exactly 1, and e^f(x_i,y_i) <= sum_{k != j} e^f(x_k,y_i) caps each batch
    # at log(K - 1). Sixteen perfectly separable classes with batches of 8 reach close to the cap.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 16, size=320)
    features = np.eye(16)[labels] * 10.0 + rng.normal(size=(320, 16)) * 0.3
    value = mutual_information(features, labels, alpha=1.0, batch_size=8, steps=150)
    assert math.log(7) - 0.3 < value <= math.log(7) + 1e-12


def test_same_seed_same_value_and_global_rng_untouched():
    features, labels = two_gaussians(1.0, 64, seed=6)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = mutual_information(features, labels, steps=40, seed=3)
    assert mutual_information(features, labels, steps=40, seed=3) == first
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert mutual_information(features, labels, steps=40, seed=4) != first


def test_one_class_is_exactly_zero():
    assert mutual_information(np.random.default_rng(0).normal(size=(20, 3)), np.zeros(20)) == 0.0


# -------------------------------------------------------------------------------------- PCA
@pytest.mark.parametrize("energy, kept", [(0.5, 1), (0.8, 2), (0.95, 3), (1.0, 4)])
def test_pca_keeps_the_fewest_axes_exceeding_the_energy(energy, kept):
    # Uncorrelated columns with variances 50, 30, 15, 5 (of 100): cumulated ratios 0.5, 0.8, 0.95, 1.0. The rule
    # (scikit-learn's PCA(energy)) keeps the fewest axes whose ratio exceeds the energy, so an energy just
    # below 0.8 keeps 2. The columns are made exactly uncorrelated with exact variances so this holds to rounding.
    rng = np.random.default_rng(7)
    z = rng.normal(size=(500, 4))
    z -= z.mean(axis=0)
    z = np.linalg.qr(z)[0] * math.sqrt(500)  # orthonormal columns: exact unit variances, no correlation
    features = z * np.sqrt([50.0, 30.0, 15.0, 5.0]) + 3.0
    reduced = ialpha._reduce(features, energy - 1e-9)
    assert reduced.shape == (500, kept)
    # No whitening: the scores keep the variances of the kept axes.
    np.testing.assert_allclose(np.sort(reduced.var(axis=0))[::-1], [50.0, 30.0, 15.0, 5.0][:kept], rtol=1e-9)


# -------------------------------------------------------------------------------- registry
def test_the_four_registered_variants_pass_the_right_settings(monkeypatch):
    calls = []
    monkeypatch.setattr(ialpha, "mutual_information", lambda features, labels, **kw: calls.append(kw) or 0.0)
    for name in ("mi", "mi_alpha0.5", "mi_pca", "mi_pca_alpha0.5"):
        assert REGISTRY[name].needs == FEATURES
        REGISTRY[name].function(np.zeros((2, 2)), [0, 1])
    assert [(kw["alpha"], kw.get("pca", False)) for kw in calls] == [
        (0.01, False), (0.5, False), (0.01, True), (0.5, True)]


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(features=np.full((20, 2), np.nan)), "NaN or inf"),
        (dict(labels=np.arange(19) % 2), "labels"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(batch_size=1), "batch_size"),
        (dict(pca_energy=0.0), "pca_energy"),
        (dict(seed=-1), "seed"),
        (dict(features=np.zeros((10, 2)), labels=np.arange(10) % 2), "at least 16 samples"),
    ],
)
def test_bad_input_is_one_line_input_error(change, match):
    arguments = dict(features=np.random.default_rng(0).normal(size=(20, 2)), labels=np.arange(20) % 2)
    arguments.update(change)
    features, labels = arguments.pop("features"), arguments.pop("labels")
    with pytest.raises(InputError, match=match) as caught:
        mutual_information(features, labels, steps=arguments.pop("steps", 5), **arguments)
    assert "\n" not in str(caught.value)
