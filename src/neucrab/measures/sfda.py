"""SFDA: Self-challenging Fisher Discriminant Analysis (Shao et al., ECCV 2022).

"Not All Models Are Equal: Predicting Model Transferability in a Self-challenging Fisher Space". This
module follows the authors' reference code (TencentARC/SFDA, `metrics.py`: `SFDA`, `SFDA_Score`); the
formula is written out in `sfda`'s docstring.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from .. import flops
from .._validate import features_and_labels
from ..errors import InputError
from .pca import top_eigenpairs
from .registry import FEATURES, SaturationWarning, register

SHRINKAGE_FLOOR = 1e-10  # the reference's lower bound on the adaptive shrinkage
SATURATED = 0.99  # a score at least this high with D >= N - C is the saturation, not a property of the features


def _sfda_cost(n, d, c, sources, test_n):
    s = min(n, d)
    rotate = flops.qr(d, n) + flops.gemm(n, d, n) if d > n else 0.0  # D > N: solved in the span of the rows
    largest = flops.top_eigenpairs(s, 1, dense=s <= 256)

    def fit(rows):  # means, within-class scatter, regularised Cholesky solve, class scores, softmax
        return (2.0 * rows * s + flops.gemm(s, rows, s) + flops.cholesky(s) + 2.0 * c * s * s + flops.gemm(n, s, c)
                + 4.0 * n * c)

    mix = 3.0 * n * s + 2.0 * c * s
    return n * d + rotate + largest + 2.0 * fit(n) + mix


@register(
    "sfda",
    needs=FEATURES,
    description="Self-challenging Fisher Discriminant Analysis: mean true-class probability of a regularised "
    "FDA classifier refitted after mixing hard examples towards the other classes, in (0, 1]",
    citation="Shao et al., ECCV 2022 (Not All Models Are Equal: ... a Self-challenging Fisher Space)",
    care=(
        "float64 statistics on centred features (exactly shift-invariant); exact largest eigenvalue for the "
        "adaptive shrinkage exp(-5 lambda_max), floor 1e-10; D > N solved exactly in the N-dimensional row "
        "space; zero within-class scatter refused. The shrinkage depends on the feature scale, and when D is "
        "near or above N - C the training-set classifier separates every sample and the score saturates "
        "near 1 (as in the reference; a SaturationWarning then says so)"
    ),
    cost=_sfda_cost,
    default=5,
)
def sfda(features, labels) -> float:
    """SFDA transferability score of `features` for `labels` (higher = better), in (0, 1].

    With class codes y_i in 0..C-1, priors pi_c = N_c / N, class means mu_c and
    S_w = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T (prior-weighted biased class covariances):

    1. Shrinkage (fixed for both fits): lam = max(exp(-5 * lambda_max(S_w)), 1e-10).
    2. Regularised FDA: S = (1 - lam) S_w + lam * (tr(S_w) / D) * I. The reference solves the generalised
       eigenproblem S_b v = e S v with S_b = S_t,shrunk - S (S_t the total covariance shrunk the same way)
       and keeps all D eigenvectors V, normalised so that V^T S V = I; its class weights
       W = M V V^T therefore equal M S^{-1} exactly (M the (C, D) class means), which is what is computed
       here (Cholesky solve; S_b drops out). Scores s_ic = x_i . w_c - w_c . mu_c / 2 + log pi_c and
       p_i = softmax_c(s_ic).
    3. Self-challenge (ConfMix): q_i = softmax(p_i)[y_i] (the reference softens the probabilities by a
       second softmax), mu'_c = mean of the other C - 1 class means, and every sample is pulled towards
       the other classes: x'_i = q_i x_i + (1 - q_i) mu'_{y_i}.
    4. Refit step 2 on x' with the same lam (new means and S_w) to get p'_i.
    5. Score = (1/N) sum_i p'_i[y_i] (the reference drops the log "in case of instability").

    Deviation from the reference: lambda_max(S_w) is computed exactly (LAPACK/Lanczos) rather than estimated
    by three power-iteration steps (which can only underestimate it); the shrinkage differs only when
    lambda_max is near or below 4.6, where exp(-5 lambda_max) leaves the 1e-10 floor. Features are centred
    first (the scores shift by a class-independent amount, so the softmax is unchanged) and, when D > N,
    the problem is solved exactly in the span of the centred rows.

    Parameters
    ----------
    features : array (N, D), converted to float64.
    labels : sequence of N hashable labels (at least 2 classes).

    Returns
    -------
    float in (0, 1]. With D >= N - C (in the row space) and a score of at least 0.99, a SaturationWarning says
    that the value is this saturation rather than a property of the features.

    Raises InputError when the within-class scatter is zero (every class a single repeated point).
    Cost: O(N D^2 + D^3), or O(N^2 D + N^3) when D > N; O(N D + D^2) memory.
    """
    x, codes, n_classes = features_and_labels(features, labels, "sfda")
    n, dim = x.shape
    x = x - x.mean(axis=0)
    if dim > n:
        # Means, scatter and every score live in the row space: solving there is exact, not approximate.
        basis, _ = np.linalg.qr(x.T)
        x = x @ basis
    counts = np.bincount(codes, minlength=n_classes)
    log_prior = np.log(counts / n)

    means, scatter = _class_means_and_scatter(x, codes, counts)
    if np.trace(scatter) <= 0.0:
        raise InputError(
            "features: zero within-class scatter (every class is a single repeated point); SFDA needs "
            "within-class variation"
        )
    largest = float(top_eigenpairs(scatter, 1, vectors=False)[0])
    shrinkage = max(float(np.exp(-5.0 * largest)), SHRINKAGE_FLOOR)

    prob = _fda_probabilities(x, means, scatter, log_prior, shrinkage, dim)
    confidence = _softmax(prob)[np.arange(n), codes]  # the reference's softened true-class probability
    others = (means.sum(axis=0) - means) / (n_classes - 1)
    mixed = confidence[:, None] * x + (1.0 - confidence)[:, None] * others[codes]

    means, scatter = _class_means_and_scatter(mixed, codes, counts)
    prob = _fda_probabilities(mixed, means, scatter, log_prior, shrinkage, dim)
    score = float(prob[np.arange(n), codes].mean())
    if x.shape[1] >= n - n_classes and score >= SATURATED:
        # The within-class scatter has rank <= N - C: with as many dimensions the classifier separates every
        # training sample, whatever the labels.
        warnings.warn(
            f"sfda: min(D, N) = {x.shape[1]} >= N - C = {n - n_classes}, so the training-set classifier separates "
            f"every sample and the score ({score:.4f}) saturates near 1: it cannot rank checkpoints here",
            SaturationWarning,
            stacklevel=2,
        )
    return score


def _class_means_and_scatter(x: np.ndarray, codes: np.ndarray, counts: np.ndarray):
    """Class means (C, D) and the prior-weighted within-class covariance (D, D) (1/N normalisation)."""
    means = np.zeros((counts.size, x.shape[1]))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    within = x - means[codes]
    scatter = np.dot(within.T, within) / x.shape[0]  # np.dot on (A.T, A) runs a symmetric rank-k update
    return means, scatter


def _fda_probabilities(x, means, scatter, log_prior, shrinkage: float, dim: int) -> np.ndarray:
    """Class posteriors (N, C) of the regularised FDA classifier (step 2 of `sfda`)."""
    mu = np.trace(scatter) / dim  # the shrinkage target uses the full feature dimension D
    if mu <= 0.0:
        raise InputError("features: SFDA's re-weighted within-class scatter vanished; expected variation")
    regularised = (1.0 - shrinkage) * scatter
    regularised.flat[:: scatter.shape[0] + 1] += shrinkage * mu
    try:
        factor = scipy.linalg.cho_factor(regularised, lower=True)
        coef = scipy.linalg.cho_solve(factor, means.T).T  # (C, D) = M S^{-1}
    except np.linalg.LinAlgError:  # numerically indefinite (rounding at extreme D): eigen-solve, clipped
        w, v = np.linalg.eigh(regularised)
        w = np.maximum(w, w.max() * scatter.shape[0] * np.finfo(float).eps)
        coef = ((means @ v) / w) @ v.T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + log_prior
    return _softmax(x @ coef.T + intercept)


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
