"""LogME: the maximised log evidence of Bayesian linear regression on the features (You et al., ICML 2021).

For one target column y (N,) the model is y = F w + noise with prior w ~ N(0, I / alpha) and noise
N(0, 1 / beta). With A = alpha I_D + beta F^T F and m = beta A^-1 F^T y, the log evidence is

    L(alpha, beta) = D/2 log alpha + N/2 log beta - 1/2 log|A|
                     - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - N/2 log(2 pi).

neucrab maximises it by the fixed-point iteration of the paper and returns the mean over target columns of
max L / N. Two faults of the fast code in circulation are avoided:

* log|A| is exact. With F = U S V^T (k = min(N, D) singular values s_i, sigma_i = s_i^2), F^T F has D - k
  further zero eigenvalues, so log|A| = sum_i log(alpha + beta sigma_i) + (D - k) log alpha. Dropping the
  last term (as the fast code does when D > N) is off by orders of magnitude on 1280-d features of 150
  images. Here D/2 log alpha - 1/2 log|A| is evaluated as -1/2 sum_i log1p(sigma_i / t), t = alpha / beta,
  which is exact for any D and free of cancellation (zero singular values contribute nothing).
* The iteration runs to convergence (relative change of alpha / beta below 1e-10, at most 10,000 steps),
  not for 11 fixed steps.

The epsilon that keeps the updates finite is scaled with the features in the alpha update (see `logme`), so
the score is invariant to the features' units, as the maximised evidence itself is.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .. import flops
from .._validate import as_features, features_and_labels
from ..errors import InputError
from .registry import FEATURES, register

# Added to the residual and (scaled, see `_fit`) to ||m||^2 in the updates, as in the reference code: it keeps
# alpha and beta finite when a target is orthogonal to the features or fitted exactly.
EPSILON = 1e-5
TOLERANCE = 1e-10  # relative change of t = alpha / beta at which the fixed-point iteration stops
MAX_ITERATIONS = 10_000


def _spectrum_and_coordinates(x: np.ndarray, targets_t) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum of F^T F and the targets' coordinates on the left singular vectors, from one Gram matrix.

    `targets_t(M)` must return Y^T M (K, m) for an (N, m) matrix M. Returns (sigma (r,), coords (K, r)):
    sigma the non-negligible squared singular values of F, coords[j] = U_r^T y_j. Costs one N x D x min(N, D)
    product and the eigen-decomposition of the smaller Gram matrix, so each target column then costs O(r).
    """
    n, d = x.shape
    if n > d:
        sigma, v = np.linalg.eigh(x.T @ x)  # F^T F = V diag(sigma) V^T
    else:
        sigma, u = np.linalg.eigh(x @ x.T)  # F F^T = U diag(sigma) U^T
    # Eigenvalues at round-off level of the largest are zero singular values: drop them (they carry no
    # evidence term, and dividing by their square roots below would only amplify noise).
    cutoff = max(float(sigma.max(initial=0.0)), 0.0) * max(n, d) * np.finfo(np.float64).eps
    keep = sigma > cutoff
    sigma = sigma[keep]
    if n > d:
        # U_r^T y = S_r^-1 V_r^T F^T y; F^T y is a class sum for a one-hot target.
        coords = (targets_t(x) @ v[:, keep]) / np.sqrt(sigma)
    else:
        coords = targets_t(u[:, keep])
    return sigma, coords


def _moments(sigma, x2, outside, t):
    """||m||^2 and ||y - F m||^2 per column at t = alpha / beta (a column vector), from the spectrum.

    In the singular basis m_i = s_i x_i / (sigma_i + t) and the residual's coordinates are t x_i / (sigma_i + t),
    plus the part of y outside span(U_r) (`outside`, its squared norm), which no weight vector reaches.
    """
    denominator = sigma + t
    m2 = (x2 * sigma / denominator**2).sum(axis=1)
    res2 = (x2 * (t / denominator) ** 2).sum(axis=1) + outside
    return m2, res2


def _fit(sigma: np.ndarray, coords: np.ndarray, norms2: np.ndarray, n: int, weight_epsilon: float = EPSILON):
    """Maximise the evidence of every target column; return (log evidence (K,), alpha (K,), beta (K,)).

    sigma (r,): non-zero squared singular values of F; coords (K, r): U_r^T y per column; norms2 (K,):
    ||y||^2 per column. The updates are MacKay's: gamma = sum_i sigma_i / (sigma_i + t),
    alpha = gamma / (||m||^2 + weight_epsilon), beta = (N - gamma) / (||y - F m||^2 + EPSILON).
    """
    x2 = coords**2
    # The part of each target outside span(U_r): no weight vector can fit it.
    outside = np.maximum(norms2 - x2.sum(axis=1), 0.0)
    columns = x2.shape[0]
    alpha, beta = np.ones(columns), np.ones(columns)  # reset to 1 for every column, as in the paper
    active = np.arange(columns)  # columns still iterating
    for _ in range(MAX_ITERATIONS):
        t = (alpha[active] / beta[active])[:, None]
        m2, res2 = _moments(sigma, x2[active], outside[active], t)
        gamma = (sigma / (sigma + t)).sum(axis=1)  # effective number of well-determined weights
        # N - gamma summed term by term: subtracting gamma from N would cancel to 0 when sigma >> t.
        rest = (n - sigma.size) + (t / (sigma + t)).sum(axis=1)
        alpha[active] = gamma / (m2 + weight_epsilon)
        beta[active] = rest / (res2 + EPSILON)
        new_t = alpha[active] / beta[active]
        done = np.abs(new_t - t[:, 0]) <= TOLERANCE * t[:, 0]
        active = active[~done]
        if active.size == 0:
            break
    return _log_evidence(sigma, x2, outside, n, alpha, beta), alpha, beta


def _log_evidence(sigma, x2, outside, n, alpha, beta):
    """Exact log evidence L(alpha, beta) per column (formula in the module docstring)."""
    t = (alpha / beta)[:, None]
    m2, res2 = _moments(sigma, x2, outside, t)
    log_det = np.log1p(sigma / t).sum(axis=1)  # log|A| - D log alpha; 0 when there is no singular value
    return (
        n / 2.0 * np.log(beta)
        - 0.5 * log_det  # = D/2 log alpha - 1/2 log|A|, exact for any D (see the module docstring)
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2.0 * np.pi)
    )


def _regression_targets(labels, n: int) -> np.ndarray:
    """Return real-valued targets as a finite float64 (N, K) array (a 1-d target becomes one column)."""
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"labels: expected real-valued (N,) or (N, K) targets for regression ({error})") from None
    if y.ndim == 1:
        y = y[:, None]
    y = as_features(y, "labels")
    if y.shape[0] != n:
        raise InputError(f"labels: expected {n} target rows (one per feature row), got {y.shape[0]}")
    return y


def _logme_fit(features, labels, *, regression: bool = False):
    """Validate, then return (log evidence / N (K,), alpha (K,), beta (K,)), one entry per target column.

    Target columns are the one-hot columns of the remapped classes (classification) or the columns of the
    real-valued targets (regression). Exposed for tests: the evidence must be stationary at (alpha, beta).
    """
    if regression:
        x = as_features(features)
        y = _regression_targets(labels, x.shape[0])

        def targets_t(m):
            return y.T @ m

        norms2 = (y**2).sum(axis=0)
    else:
        x, codes, n_classes = features_and_labels(features, labels, "LogME")
        # Y is the (N, C) one-hot matrix, kept sparse: Y^T M is a class sum, O(N m).
        onehot = sparse.csr_array((np.ones(x.shape[0]), (codes, np.arange(x.shape[0]))), shape=(n_classes, x.shape[0]))

        def targets_t(m):
            return np.asarray(onehot @ m)

        norms2 = np.bincount(codes, minlength=n_classes).astype(np.float64)
    n = x.shape[0]
    sigma, coords = _spectrum_and_coordinates(x, targets_t)
    # ||m||^2 scales as 1 / (feature scale)^2: an absolute epsilon there would make the score depend on the
    # features' units (features x 100 already move it). Dividing by the mean squared feature entry keeps the
    # reference's 1e-5 for unit-scale features and makes the score exactly invariant to rescaling F.
    mean_square = sigma.sum() / x.size  # = mean of F_ij^2 (the dropped eigenvalues are round-off)
    weight_epsilon = EPSILON / mean_square if mean_square > 0 else EPSILON
    evidence, alpha, beta = _fit(sigma, coords, norms2, n, weight_epsilon)
    return evidence / n, alpha, beta


def _logme_cost(n, d, c, sources, test_n, *, iterations=MAX_ITERATIONS):
    r = min(n, d)
    if n > d:  # eigh of F^T F; F^T Y (class sums) and its rotation into the eigenbasis
        spectrum = flops.gemm(d, n, d) + flops.eigh(d) + n * d + flops.gemm(c, d, d)
    else:  # eigh of F F^T; U^T Y (class sums)
        spectrum = flops.gemm(n, d, n) + flops.eigh(n) + n * n
    # fixed point per class column and iteration: ||m||^2, residual, gamma, updates ~15 operations per
    # singular value; the final evidence ~20.
    return spectrum + c * r * (15.0 * iterations + 20.0)


@register(
    "logme",
    needs=FEATURES,
    description="maximised log evidence of Bayesian linear regression from features to one-hot labels / N",
    citation="You et al., LogME: Practical Assessment of Pre-trained Models for Transfer Learning, ICML 2021",
    care=(
        "exact evidence (keeps the (D - k) log alpha term of log|A| when D > N), fixed point iterated to "
        "convergence, epsilon in the updates, labels remapped (no phantom classes)"
    ),
    regression=True,
    cost=_logme_cost,
    default=1,
)
def logme(features, labels, *, regression: bool = False) -> float:
    """LogME score of features for a classification or regression target; higher is better.

    Parameters
    ----------
    features : array (N, D)
        Features of the target task's training samples (any float dtype; computed in float64).
    labels : N labels of any hashable kind (classification), or real targets (N,) or (N, K) when
        `regression=True` (multi-hot (N, K) targets are regressed column by column).
    regression : bool
        Treat `labels` as real-valued target columns instead of class labels.

    Returns
    -------
    float
        Mean over target columns (one per class, or per regression column) of max_{alpha, beta} L / N, the
        maximised log evidence per sample (module docstring). alpha = beta = 1 at the start of every column.
        As in the reference code an epsilon of 1e-5 is added to the residual in the beta update, and to
        ||m||^2 in the alpha update divided by the mean squared feature entry mean(F_ij^2): identical to
        the reference for unit-scale features, and it makes the score exactly invariant to rescaling the
        features (with a fixed 1e-5, features x 100 already lower the score markedly).

    When D >= N and the features span R^N, a one-hot target is fitted exactly and the evidence keeps
    growing as beta -> infinity; the iteration then settles where the epsilon in the beta update stops it,
    slightly below the supremum (by about 1e-3 per sample in our checks), as the reference code does.

    Classification needs at least 2 classes (InputError otherwise); a class with one sample, constant or
    duplicate columns, all-zero features and D > N give finite scores (all-zero features: the evidence does
    not depend on alpha and equals that of pure noise).
    """
    evidence, _, _ = _logme_fit(features, labels, regression=regression)
    return float(np.mean(evidence))
