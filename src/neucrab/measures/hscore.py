"""H-score (Bao et al. 2019) and its shrinkage version (Ibrahim, Ponomareva and Mazumder 2022).

Both are traces of (a covariance of f)^-1 times cov(E[f | y]). With X the centred (N, D) features,
mu_c - mu the deviation of class c's mean from the overall mean and n_c its size,

    cov(f)       = X^T X / (N - 1),
    cov(E[f|y])  = sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1),

so the trace is a sum over classes of quadratic forms n_c (mu_c - mu)^T M^-1 (mu_c - mu), evaluated in the
eigenbasis of X^T X. The class means lie in the span of the centred rows, so when D > N everything is
computed from the (N, N) Gram matrix X X^T instead of the (D, D) scatter matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from .. import flops
from .._validate import features_and_labels
from .registry import FEATURES, SaturationWarning, register


class HScoreSaturationWarning(SaturationWarning, RuntimeWarning):
    """The H-score is C - 1 whatever the features (rank N - 1). Also a RuntimeWarning, as it was before
    SaturationWarning existed, so that existing filters keep working."""


def _centred_spectrum(x: np.ndarray, codes: np.ndarray, n_classes: int):
    """Spectrum of the scatter X^T X of centred features x (N, D), and the class-mean deviations in its basis.

    Returns (sigma (r,), proj (C, r), outside (C,), counts (C,)): sigma the eigenvalues of X^T X (ascending),
    proj[c, i] the coordinate of mu_c - mu on eigenvector i, outside[c] the squared norm of mu_c - mu not
    covered by those eigenvectors (zero up to round-off: class means lie in the span of the rows).
    """
    n, d = x.shape
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    # (C, N) matrix averaging the rows of each class.
    average = sparse.csr_array((1.0 / counts[codes], (codes, np.arange(n))), shape=(n_classes, n))
    deviations = np.asarray(average @ x)  # (C, D): mu_c - mu (x is centred)
    if d <= n:
        sigma, v = np.linalg.eigh(x.T @ x)
        sigma = np.maximum(sigma, 0.0)
        proj = deviations @ v
        outside = np.zeros(n_classes)
    else:
        # X X^T = U diag(sigma) U^T and X^T u_i = sqrt(sigma_i) v_i, so the coordinate of mu_c - mu on v_i
        # is (class average of u_i) * sqrt(sigma_i): no division by small singular values.
        sigma, u = np.linalg.eigh(x @ x.T)
        sigma = np.maximum(sigma, 0.0)
        proj = np.asarray(average @ u) * np.sqrt(sigma)
        outside = np.maximum((deviations**2).sum(axis=1) - (proj**2).sum(axis=1), 0.0)
    return sigma, proj, outside, counts


def _rank_cutoff(sigma: np.ndarray, n: int, d: int) -> float:
    """Eigenvalues of X^T X at or below this are treated as zero (numpy's matrix_rank tolerance)."""
    return max(float(sigma.max(initial=0.0)), 0.0) * max(n, d) * np.finfo(np.float64).eps


def _class_spectrum_cost(n, d, c):
    """H-score's centring, class means and eigenbasis of the centred scatter (or Gram) matrix."""
    if d <= n:
        return 2.0 * n * d + flops.gemm(d, n, d) + flops.eigh(d) + flops.gemm(c, d, d)
    return 2.0 * n * d + flops.gemm(n, d, n) + flops.eigh(n) + n * n + c * d


def _hscore_cost(n, d, c, sources, test_n):
    return _class_spectrum_cost(n, d, c) + 3.0 * c * min(n, d)  # sum of squared coordinates / eigenvalues


def _shrinkage_hscore_cost(n, d, c, sources, test_n):
    ledoit_wolf = 3.0 * n * d + 6.0 * min(n, d)  # sum_i ||x_i||^4 and the spectrum's moments
    return _class_spectrum_cost(n, d, c) + ledoit_wolf + 4.0 * c * min(n, d)


@register(
    "hscore",
    needs=FEATURES,
    description="tr(pinv(cov f) @ cov(E(f | y))): between-class over total feature covariance",
    citation="Bao et al., An Information-Theoretic Approach to Transferability in Task Transfer Learning, ICIP 2019",
    care=(
        "matrix product (not element-wise) in the trace; it equals C - 1 whatever the features whenever "
        "N - 1 <= rank(features) (e.g. D >= N - 1): kept as defined, with a SaturationWarning pointing to "
        "shrinkage_hscore; pinv with an explicit rank tolerance"
    ),
    cost=_hscore_cost,
)
def hscore(features, labels) -> float:
    """H-score: tr(pinv(cov f) @ cov(E[f | y])), a matrix product; higher is better.

    Parameters
    ----------
    features : array (N, D)
        Features of the target task's training samples (computed in float64).
    labels : N labels of any hashable kind; at least 2 classes.

    Returns
    -------
    float
        sum_c n_c (mu_c - mu)^T pinv(X^T X) (mu_c - mu) with X the centred features (the N - 1 of both
        covariances cancel). It lies in [0, C - 1]. pinv drops eigenvalues of X^T X at or below
        max eigenvalue * max(N, D) * machine epsilon (numpy's matrix_rank tolerance; the reference code's
        rcond=1e-15 lies below round-off level and may keep noise eigenvalues of rank-deficient features).

    Rank deficiency: whenever the centred features have rank N - 1 (always when N - 1 <= D for generic
    features) the H-score is exactly C - 1 whatever the features are, because pinv(cov f) then whitens the
    whole sample space. The value is kept as defined, but a SaturationWarning (`HScoreSaturationWarning`,
    also a RuntimeWarning) says that it carries no
    information; use `shrinkage_hscore` there. Constant or duplicate columns are harmless (pinv ignores the
    null directions: duplicating a column leaves the score unchanged); a class with one sample is fine.
    """
    x, codes, n_classes = features_and_labels(features, labels, "H-score")
    n, d = x.shape
    x = x - x.mean(axis=0)  # a new array: as_features may return the caller's own float64 array
    sigma, proj, _, counts = _centred_spectrum(x, codes, n_classes)
    keep = sigma > _rank_cutoff(sigma, n, d)
    if keep.sum() >= n - 1:
        warnings.warn(
            f"hscore: the centred features have rank N - 1 = {n - 1} (D = {d}), so the H-score is C - 1 = "
            f"{n_classes - 1} whatever the features: it cannot rank checkpoints here; use shrinkage_hscore",
            HScoreSaturationWarning,
            stacklevel=2,
        )
    score = counts @ ((proj[:, keep] ** 2) / sigma[keep]).sum(axis=1)
    return float(score)


def _ledoit_wolf_shrinkage(x: np.ndarray, sigma: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage coefficient of centred features x (N, D), given the eigenvalues of X^T X.

    Same estimator as scikit-learn's `ledoit_wolf_shrinkage` (biased covariance S = X^T X / N,
    mu = tr(S) / D): delta = ||S - mu I||_F^2 / D, b = (sum_i ||x_i||^4 / N - ||S||_F^2) / (N D),
    shrinkage = min(b, delta) / delta (0 when delta = 0). scikit-learn forms X2^T X2 (an N D^2 product)
    for sum_i ||x_i||^4; here it is O(N D), and ||S||_F^2 comes from the eigenvalues already at hand.
    """
    n, d = x.shape
    eig = sigma / n  # non-zero eigenvalues of S (the rest are zero)
    mu = eig.sum() / d
    frobenius2 = (eig**2).sum()  # ||S||_F^2
    delta = (frobenius2 - 2.0 * mu * eig.sum() + d * mu**2) / d
    fourth = ((x**2).sum(axis=1) ** 2).sum()  # sum_i ||x_i||^4
    b = (fourth / n - frobenius2) / (n * d)
    b = min(b, delta)
    return 0.0 if b <= 0.0 or delta <= 0.0 else float(b / delta)


@register(
    "shrinkage_hscore",
    needs=FEATURES,
    description="H-score with the Ledoit-Wolf shrunk covariance: informative also when D >= N",
    citation="Ibrahim, Ponomareva and Mazumder, Newer is not always better: Rethinking transferability "
    "metrics, their peculiarities, stability and performance, ECML PKDD 2022",
    care="the shrunk covariance is full rank, so it avoids the plain H-score's constant C - 1 when D >= N",
    cost=_shrinkage_hscore_cost,
    default=2,
)
def shrinkage_hscore(features, labels) -> float:
    """Shrinkage (regularised) H-score; higher is better.

    Parameters
    ----------
    features : array (N, D)
        Features of the target task's training samples (computed in float64).
    labels : N labels of any hashable kind; at least 2 classes.

    Returns
    -------
    float
        H_alpha = tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y])), where, with X the centred features,
        S = X^T X / N, mu = tr(S) / D and alpha the Ledoit-Wolf shrinkage of S (as in scikit-learn),
        cov_alpha(f) = (1 - alpha) S + alpha mu I and cov(E[f | y]) = sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1).

    This follows the authors' formula and the widely used reference code (transfer-learning-library's
    `regularized_h_score`: scikit-learn `LedoitWolf` for cov_alpha, `np.cov` for the class means), including
    its mixed normalisation: with alpha = 0 the score is N / (N - 1) times the H-score. The shrunk
    covariance is full rank whenever alpha > 0, so unlike the plain H-score the value stays informative for
    D >= N. If alpha = 0 (e.g. all-constant features) the inverse is a pseudo-inverse; all-constant features
    score 0. A class with one sample, constant or duplicate columns and D > N give finite scores.
    """
    x, codes, n_classes = features_and_labels(features, labels, "shrinkage H-score")
    n, d = x.shape
    x = x - x.mean(axis=0)  # a new array: as_features may return the caller's own float64 array
    sigma, proj, outside, counts = _centred_spectrum(x, codes, n_classes)
    shrinkage = _ledoit_wolf_shrinkage(x, sigma)
    mu = sigma.sum() / (n * d)
    # Eigenvalues of cov_alpha on the eigenvectors of X^T X; every other direction has alpha * mu.
    shrunk = (1.0 - shrinkage) * sigma / n + shrinkage * mu
    floor = shrunk.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    keep = shrunk > floor
    quadratic = ((proj[:, keep] ** 2) / shrunk[keep]).sum(axis=1)
    if shrinkage * mu > floor:
        quadratic = quadratic + outside / (shrinkage * mu)
    return float((1.0 - shrinkage) * (counts @ quadratic) / (n - 1))
