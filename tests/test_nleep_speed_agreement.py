"""N-LEEP's fast paths against scikit-learn's formulation and against each other: the screened E-step, the
dense (one GEMM) and sparse M-steps, the whole-spectrum PCA and the torch EM (its GPU code, run on the CPU).
No timings here: speed is measured by benchmarks/nleep.py."""

import math

import numpy as np
import pytest

from neucrab.measures import leep, mixture, nleep
from neucrab.measures.leep import _reduce
from neucrab.measures.mixture import GaussianMixtureEM
from neucrab.measures.mixture_torch import TorchGaussianMixtureEM


def sklearn_nleep(x, labels, per_class=5, seed=0):
    """The plain formulation (Google's reference code): PCA(0.8, full SVD) + GaussianMixture + LEEP."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    reduced = PCA(0.8, svd_solver="full").fit_transform(np.asarray(x, dtype=np.float64))
    classes = len(np.unique(labels))
    mixture_ = GaussianMixture(per_class * classes, covariance_type="full", random_state=seed).fit(reduced)
    return leep(mixture_.predict_proba(reduced), labels)


def cnn_like(n=600, d=40, classes=4, separation=0.8, seed=0):
    """Non-negative features with a power-law spectrum and class structure (like benchmarks/measures.py)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    scale = np.arange(1, d + 1) ** -0.5
    factors = rng.standard_normal((classes, d))[labels] * scale * separation + rng.standard_normal((n, d)) * scale
    mixing = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return np.maximum(5.0 * factors @ mixing + 0.5, 0.0).astype(np.float32), labels


def blobs(count=30, per_blob=25, dims=8, seed=0):
    """Well separated blobs, one component each: sparse posteriors (most pairs below e^-64)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count, dims)) * 30.0
    labels = np.repeat(np.arange(count), per_blob)
    return centres[labels] + rng.standard_normal((labels.size, dims)), labels


def fitted(x, k, seed=0):
    em = GaussianMixtureEM(x, k, seed)
    return em.fit_posteriors(), em


def reference(x, k, seed=0):
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(k, covariance_type="full", random_state=seed).fit(x)
    return model.predict_proba(x), model


# ------------------------------------------------------------------------------------- known answer
@pytest.mark.parametrize("device", [None, "cpu"])
def test_nleep_known_answer_two_mixed_blobs(monkeypatch, device):
    # Two far-apart blobs, one component per class (K = 2): each component is one blob, posteriors one-hot,
    # so P(y|v) is the blob's label share. Blob A: 20 of class 0, 10 of class 1; blob B: 5 and 25.
    # N-LEEP = (20 ln(2/3) + 10 ln(1/3) + 5 ln(1/6) + 25 ln(5/6)) / 60
    #        = (-8.109302 - 10.986123 - 8.958797 - 4.558038) / 60 = -32.612260 / 60 = -0.543538
    monkeypatch.setattr(mixture, "em_device", lambda: device)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    x[30:, 0] += 100.0
    labels = np.array([0] * 20 + [1] * 10 + [0] * 5 + [1] * 25)
    expected = (20 * math.log(2 / 3) + 10 * math.log(1 / 3) + 5 * math.log(1 / 6) + 25 * math.log(5 / 6)) / 60
    assert expected == pytest.approx(-0.543538, abs=1e-6)
    assert nleep(x, labels, components_per_class=1) == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------ against scikit-learn, float64
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nleep_matches_scikit_learn_on_cnn_like_features(seed):
    x, labels = cnn_like(seed=seed)
    expected = sklearn_nleep(x.astype(np.float64), labels, seed=seed)
    assert nleep(x, labels, seed=seed) == pytest.approx(expected, abs=1e-6)


def test_family_order_matches_scikit_learn():
    # Four "checkpoints" with more and more class signal: the same values (well within 1e-3), the same order.
    ours, theirs = [], []
    for i, separation in enumerate([0.2, 0.6, 1.2, 2.5]):
        x, labels = cnn_like(n=500, d=24, separation=separation, seed=10 + i)
        ours.append(nleep(x, labels))
        theirs.append(sklearn_nleep(x.astype(np.float64), labels))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.argsort(ours).tolist() == np.argsort(theirs).tolist() == [0, 1, 2, 3]


def test_whole_spectrum_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    x, _ = cnn_like(n=400, d=300, seed=3)
    x = x.astype(np.float64)
    expected = PCA(0.8, svd_solver="full").fit_transform(x)
    ours = _reduce(x.copy(), 0.8, True)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-8)


# ------------------------------------------------------------------------------------- E-step screen
def count_calls(monkeypatch, name):
    calls = []
    original = getattr(GaussianMixtureEM, name)

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GaussianMixtureEM, name, spy)
    return calls


def test_screened_e_step_matches_scikit_learn(monkeypatch):
    x, _ = blobs()
    expected, model = reference(x, 30)
    monkeypatch.setattr(mixture, "SCREEN_WORK", 0)  # screen even this small problem
    screened = count_calls(monkeypatch, "_log_joint_screened")
    full = count_calls(monkeypatch, "_log_joint_full")
    ours, em = fitted(x, 30)
    assert len(screened) >= 1 and not full  # every E-step screened (or reused, see below)
    assert em.n_iter == model.n_iter_
    assert em.lower_bound == pytest.approx(model.score(x), rel=1e-12)
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert (ours == 0).mean() > 0.9  # the screen dropped most pairs (scikit-learn keeps them, < e^-64)


def test_e_step_reused_when_only_the_weights_moved(monkeypatch):
    # Separated blobs: EM starts at its fixed point, the M-step reproduces the k-means means and covariances
    # bit for bit, and the E-step shifts the last log densities by the change of log w_k instead of
    # recomputing them. The same posteriors as recomputing, and as scikit-learn.
    x, _ = blobs()
    computed = count_calls(monkeypatch, "_log_joint_full")
    reused, em = fitted(x, 30)
    first = len(computed)
    assert first < em.n_iter + 1  # some E-step was a shift of the last one
    monkeypatch.setattr(mixture, "_same", lambda a, b: False)
    recomputed, again = fitted(x, 30)
    assert len(computed) - first == again.n_iter + 1 and again.n_iter == em.n_iter
    np.testing.assert_allclose(reused, recomputed, atol=1e-13)
    np.testing.assert_allclose(reused, reference(x, 30)[0], atol=1e-12)


def test_screen_gives_way_to_the_full_e_step_on_dense_posteriors(monkeypatch):
    x, _ = cnn_like(n=300, d=12, classes=2, separation=0.3)
    x = _reduce(x.astype(np.float64), 0.8, True)
    monkeypatch.setattr(mixture, "SCREEN_WORK", 0)
    screened = count_calls(monkeypatch, "_log_joint_screened")
    full = count_calls(monkeypatch, "_log_joint_full")
    ours, em = fitted(x, 6)
    expected, _ = reference(x, 6)
    assert len(screened) <= 1 < len(full)  # the first E-step tries the screen; a dense support stops it
    np.testing.assert_allclose(ours, expected, atol=1e-9)


# --------------------------------------------------------------------------------- dense/sparse M-step
@pytest.mark.parametrize("dense_above", [2.0, -1.0])  # never / always the one-GEMM M-step
def test_both_m_steps_match_scikit_learn(monkeypatch, dense_above):
    x, _ = cnn_like(n=300, d=10, classes=3, separation=0.5, seed=4)
    x = _reduce(x.astype(np.float64), 0.8, True)
    monkeypatch.setattr(mixture, "DENSE_ABOVE", dense_above)
    dense = count_calls(monkeypatch, "_m_step_dense")
    ours, em = fitted(x, 9, seed=2)
    expected, model = reference(x, 9, seed=2)
    assert model.n_iter_ > 3 and em.n_iter == model.n_iter_
    assert (len(dense) > 0) == (dense_above < 0)
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_m_step_from_chunked_features_equals_cached(monkeypatch):
    x, _ = cnn_like(n=400, d=10, seed=5)
    x = _reduce(x.astype(np.float64), 0.8, True)
    cached, _ = fitted(x, 8)
    monkeypatch.setattr(mixture, "_CACHE_BYTES", 0)  # rebuild the features chunk by chunk
    monkeypatch.setattr(mixture, "_CHUNK_BYTES", 8 * 1000)
    np.testing.assert_allclose(fitted(x, 8)[0], cached, atol=1e-12)


# ----------------------------------------------------------------------------- torch EM (GPU code path)
@pytest.mark.parametrize("case", ["cnn", "blobs"])
def test_torch_em_on_cpu_matches_scikit_learn(case):
    if case == "cnn":
        x, _ = cnn_like(n=300, d=10, classes=3, separation=0.5, seed=4)
        x, k = _reduce(x.astype(np.float64), 0.8, True), 9
    else:
        (x, _), k = blobs(count=10), 10
    expected, model = reference(x, k)
    em = TorchGaussianMixtureEM(x, k, 0, "cpu")
    ours = em.fit_posteriors()
    assert (em.n_iter, em.converged) == (model.n_iter_, model.converged_)
    assert em.lower_bound == pytest.approx(model.score(x), rel=1e-12)
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_nleep_picks_the_torch_em_when_a_device_is_reported(monkeypatch):
    x, labels = cnn_like(seed=6)
    on_numpy = nleep(x, labels)
    used = []
    original = TorchGaussianMixtureEM.fit_posteriors

    def spy(self):
        used.append(str(self.device))
        return original(self)

    monkeypatch.setattr(TorchGaussianMixtureEM, "fit_posteriors", spy)
    monkeypatch.setattr(mixture, "em_device", lambda: "cpu")
    assert nleep(x, labels) == pytest.approx(on_numpy, abs=1e-9)
    assert used == ["cpu"]


def test_torch_em_floors_a_singular_component():
    # Fewer distinct points than components: some components collapse onto one point; scikit-learn's
    # reg_covar keeps them positive definite, and both EMs agree.
    x, _ = blobs(count=4, per_blob=6, dims=3)
    x = np.repeat(x[:10], 3, axis=0)
    em = TorchGaussianMixtureEM(x, 12, 0, "cpu")
    np.testing.assert_allclose(em.fit_posteriors(), fitted(x, 12)[0], atol=1e-8)
