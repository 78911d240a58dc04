"""LogME: the maximised log evidence of Bayesian linear regression on the features (You et al., ICML 2021).

For one target column y (N,) the model is y = F w + noise with prior w ~ N(0, I / alpha) and noise
N(0, 1 / beta). With A = alpha I_D + beta F^T F and m = beta A^-1 F^T y, the log evidence is

    L(alpha, beta) = D/2 log alpha + N/2 log beta - 1/2 log|A|
                     - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - N/2 log(2 pi).

neucrab returns the mean over target columns of max L / N. Two faults of the fast code in circulation are
avoided:

* log|A| is exact. With F = U S V^T (k = min(N, D) singular values s_i, sigma_i = s_i^2), F^T F has D - k
  further zero eigenvalues, so log|A| = sum_i log(alpha + beta sigma_i) + (D - k) log alpha. Dropping the
  last term (as the fast code does when D > N) is off by orders of magnitude on 1280-d features of 150
  images. Here D/2 log alpha - 1/2 log|A| is evaluated as -1/2 sum_i log1p(sigma_i / t), t = alpha / beta,
  which is exact for any D and free of cancellation (zero singular values contribute nothing).
* The maximum is the maximum. The paper's fixed point (MacKay's updates with 1e-5 added to ||m||^2 and to the
  residual) stops where the gradient equals beta * 1e-5 / 2, not 0: harmless at moderate beta, but when the
  features nearly interpolate a class (N < D, or a class they separate almost perfectly) the optimum has beta
  near 1e12 .. 1e15 and the fixed point ends percents below it. neucrab maximises the exact evidence instead:
  for fixed t the best beta is N / Q(t), with Q(t) = ||y - F m||^2 + t ||m||^2 = sum_i x_i^2 t / (sigma_i + t)
  + ||y outside span(F)||^2 (x = U^T y), so max L is the maximum of the 1-d profile

      P(t) = N/2 log(N / Q(t)) - N/2 - 1/2 sum_i log1p(sigma_i / t) - N/2 log(2 pi),

  found on a grid in log t that spans the spectrum and the scale where the unreachable part of y matters (P is
  monotone outside it), then refined by golden-section search around the best grid point. Near the optimum
  Q is mostly the part of y outside span(F), so that part is computed as a residual, not as a difference
  of norms, where it is small; it is floored at the round-off of a residual, ||y||^2 (max(N, D) eps)^2, below
  which it is not resolved (and without which a target in the span of fewer than N directions would have
  unbounded evidence).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from .. import flops
from .._validate import as_features, features_and_labels
from ..errors import InputError
from .registry import FEATURES, SaturationWarning, register

GRID_STEP = 0.25  # spacing of the search grid in log t; P changes over about one unit of log t per sigma_i
LOW_MARGIN, HIGH_MARGIN = 25.0, 30.0  # log t beyond the interesting range, where P is monotone (see `_grid`)
GOLDEN_STEPS = 60  # golden-section steps: the bracket of 2 grid steps shrinks by 0.618^60 ~ 3e-13
ROUND_OFF = np.finfo(np.float64).eps
NEAR_FIT = 1e-4  # ||y outside span(F)||^2 below this share of ||y||^2 is computed directly (see `_outside`)


def _spectrum_and_coordinates(x: np.ndarray, targets_t, target_columns, norms2):
    """Spectrum of F^T F, the targets' coordinates on the left singular vectors and the squared norm of the
    part of each target outside span(F), from one Gram matrix.

    `targets_t(M)` must return Y^T M (K, m) for an (N, m) matrix M, `target_columns(j)` the dense columns
    Y[:, j] (N, len(j)); norms2 (K,): ||y||^2. Returns (sigma (r,), coords (K, r), outside (K,)): sigma the
    non-negligible squared singular values of F, coords[j] = U_r^T y_j. Costs one N x D x min(N, D) product
    and the eigen-decomposition of the smaller Gram matrix, so each target column then costs O(r), except the
    columns F nearly fits (see `_outside`).
    """
    n, d = x.shape
    if n > d:
        sigma, v = np.linalg.eigh(x.T @ x)  # F^T F = V diag(sigma) V^T
    else:
        sigma, u = np.linalg.eigh(x @ x.T)  # F F^T = U diag(sigma) U^T
    # Eigenvalues at round-off level of the largest are zero singular values: drop them (they carry no
    # evidence term, and dividing by their square roots below would only amplify noise).
    cutoff = max(float(sigma.max(initial=0.0)), 0.0) * max(n, d) * ROUND_OFF
    keep = sigma > cutoff
    sigma = sigma[keep]
    if n > d:
        v = v[:, keep]
        f_t_y = targets_t(x)  # (K, D): F^T y, a class sum for a one-hot target
        coords = (f_t_y @ v) / np.sqrt(sigma)  # U_r^T y = S_r^-1 V_r^T F^T y

        def residuals(columns):  # y - F w at the least-squares w, refined once (seminormal equations)
            y = target_columns(columns)
            w = v @ ((f_t_y[columns] @ v) / sigma).T
            r = y - x @ w
            w += v @ (((r.T @ x) @ v) / sigma).T
            return y - x @ w
    else:
        u = u[:, keep]
        coords = targets_t(u)

        def residuals(columns):  # U_r is orthonormal to working precision: project directly
            return target_columns(columns) - u @ coords[columns].T
    return sigma, coords, _outside(coords, norms2, residuals)


def _outside(coords, norms2, residuals, block: int = 64):
    """||y outside span(F)||^2 per column: ||y||^2 - ||U_r^T y||^2, except where that cancels.

    Where F nearly fits y the difference loses every digit (1e-11 of ||y||^2 came out 2e-5 off), yet it
    decides the evidence there (beta ~ N / it): those columns get the residual's norm computed directly."""
    outside = norms2 - (coords**2).sum(axis=1)
    close = np.flatnonzero(outside < NEAR_FIT * norms2)
    for start in range(0, close.size, block):
        columns = close[start:start + block]
        outside[columns] = (residuals(columns) ** 2).sum(axis=0)
    return outside


def _moments(sigma, x2, outside, t):
    """||m||^2 and ||y - F m||^2 per column at t = alpha / beta (a column vector), from the spectrum.

    In the singular basis m_i = s_i x_i / (sigma_i + t) and the residual's coordinates are t x_i / (sigma_i + t),
    plus the part of y outside span(U_r) (`outside`, its squared norm), which no weight vector reaches.
    """
    denominator = sigma + t
    m2 = (x2 * sigma / denominator**2).sum(axis=1)
    res2 = (x2 * (t / denominator) ** 2).sum(axis=1) + outside
    return m2, res2


def _q(sigma, x2, outside, t, shared=False):
    """Q(t) = ||y - F m||^2 + t ||m||^2 per column (module docstring): t (K,), one per column -> (K,); or with
    `shared`, t (G,) for every column -> (K, G). All terms are positive: no cancellation, even at round-off."""
    if shared:
        return x2 @ (t[:, None] / (sigma + t[:, None])).T + outside[:, None]
    return (x2 * (t[:, None] / (sigma + t[:, None]))).sum(axis=1) + outside


def _profile(sigma, x2, outside, n, u, shared=False):
    """P(exp(u)), the evidence maximised over beta at t = exp(u) (module docstring), as `_q` lays it out."""
    t = np.exp(u)
    log_det = np.log1p(sigma / t[:, None]).sum(axis=1)  # per t: (K,) or (G,)
    q = _q(sigma, x2, outside, t, shared)
    return n / 2.0 * np.log(n / q) - n / 2.0 - 0.5 * log_det - n / 2.0 * np.log(2.0 * np.pi)


def _grid(sigma, x2, outside):
    """Grid of log t holding every column's maximum of P.

    HIGH_MARGIN above the largest sigma_i, P is within about r sigma_max / t of its limit as t -> infinity (the
    noise-only evidence), so the grid's top stands for that limit. Below both the smallest sigma_i and the
    scale ||y outside||^2 / sum_i x_i^2 / sigma_i, under which the unreachable part of y dominates Q, P grows
    as r/2 log t: its maximum is not there."""
    reach = (x2 / sigma).sum(axis=1)
    crossover = np.min(outside / np.maximum(reach, np.finfo(np.float64).tiny))
    low = np.log(min(sigma.min(), crossover)) - LOW_MARGIN
    high = np.log(sigma.max()) + HIGH_MARGIN
    return np.arange(low, high + GRID_STEP, GRID_STEP)


def _golden(function, lo, hi, steps):
    """Golden-section search for the maximum of `function` on [lo, hi], element-wise over arrays of brackets."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = function(a), function(b)
    for _ in range(steps):
        left = fa >= fb  # the maximum is in [lo, b], else in [a, hi]
        lo, hi = np.where(left, lo, a), np.where(left, b, hi)
        new_a, new_b = np.where(left, hi - ratio * (hi - lo), b), np.where(left, a, lo + ratio * (hi - lo))
        value = function(np.where(left, new_a, new_b))
        fa, fb = np.where(left, value, fb), np.where(left, fa, value)
        a, b = new_a, new_b
    return np.where(fa >= fb, a, b)


def _fit(sigma: np.ndarray, coords: np.ndarray, outside: np.ndarray, norms2: np.ndarray, n: int):
    """Maximise the evidence of every target column; return (log evidence (K,), alpha (K,), beta (K,)).

    sigma (r,): non-zero squared singular values of F; coords (K, r): U_r^T y per column; outside (K,): the
    squared norm of y outside span(F); norms2 (K,): ||y||^2 per column (> 0). Maximises the profile P over
    log t (module docstring): a grid, then golden section between the best grid point's neighbours;
    beta = N / Q(t), alpha = t beta."""
    x2 = coords**2
    # The part of y that no weight vector reaches, floored at the round-off of a computed residual.
    floor = norms2 * (max(n, sigma.size) * ROUND_OFF) ** 2
    unbounded = np.flatnonzero((outside <= floor) & (sigma.size < n))
    if unbounded.size:  # y in a span of r < N directions: P grows as (N - r)/2 log(1 / t) until the floor
        warnings.warn(f"LogME: the features fit target column {int(unbounded[0])} exactly with rank {sigma.size} < "
                      f"N = {n} (duplicate samples?): its evidence has no maximum and the value is set by round-off",
                      SaturationWarning, stacklevel=4)
    outside = np.maximum(outside, floor)
    columns = x2.shape[0]
    if sigma.size == 0:  # F = 0: the evidence does not depend on alpha (t = 1 is as good as any)
        u = np.zeros(columns)
    else:
        grid = _grid(sigma, x2, outside)
        values = _profile(sigma, x2, outside, n, grid, shared=True)  # (K, G)
        best = values.argmax(axis=1)
        lo, hi = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, grid.size - 1)]
        refined = _golden(lambda v: _profile(sigma, x2, outside, n, v), lo, hi, GOLDEN_STEPS)
        keep = _profile(sigma, x2, outside, n, refined) >= values[np.arange(columns), best]
        u = np.where(keep, refined, grid[best])
    t = np.exp(u)
    beta = n / _q(sigma, x2, outside, t)
    return _log_evidence(sigma, x2, outside, n, t * beta, beta), t * beta, beta


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
    real-valued targets (regression). Exposed for tests: (alpha, beta) must maximise the evidence.
    """
    if regression:
        x = as_features(features)
        y = _regression_targets(labels, x.shape[0])

        def targets_t(m):
            return y.T @ m

        def target_columns(columns):
            return y[:, columns]

        norms2 = (y**2).sum(axis=0)
        if not norms2.all():  # y = 0 is fitted exactly by any model: the evidence grows without bound
            raise InputError(f"labels: target column {int(np.argmin(norms2))} is all zeros; LogME's evidence is "
                             "unbounded for it (expected a target with a non-zero value)")
    else:
        x, codes, n_classes = features_and_labels(features, labels, "LogME")
        # Y is the (N, C) one-hot matrix, kept sparse: Y^T M is a class sum, O(N m).
        onehot = sparse.csr_array((np.ones(x.shape[0]), (codes, np.arange(x.shape[0]))), shape=(n_classes, x.shape[0]))

        def targets_t(m):
            return np.asarray(onehot @ m)

        def target_columns(columns):
            return (codes[:, None] == np.asarray(columns)[None, :]).astype(np.float64)

        norms2 = np.bincount(codes, minlength=n_classes).astype(np.float64)
    n = x.shape[0]
    sigma, coords, outside = _spectrum_and_coordinates(x, targets_t, target_columns, norms2)
    evidence, alpha, beta = _fit(sigma, coords, outside, norms2, n)
    return evidence / n, alpha, beta


# Profile evaluations per column, at most: the grid spans LOW_MARGIN + HIGH_MARGIN plus two ranges of at most
# log(1 / (max(N, D) eps)) ~ 45 each (kept eigenvalues, floored outside part), GRID_STEP apart; then golden section.
MAX_EVALUATIONS = int((LOW_MARGIN + HIGH_MARGIN + 2 * 45) / GRID_STEP) + GOLDEN_STEPS


def _logme_cost(n, d, c, sources, test_n, *, iterations=MAX_EVALUATIONS):
    r = min(n, d)
    if n > d:  # eigh of F^T F; F^T Y (class sums) and its rotation into the eigenbasis
        spectrum = flops.gemm(d, n, d) + flops.eigh(d) + n * d + flops.gemm(c, d, d)
    else:  # eigh of F F^T; U^T Y (class sums)
        spectrum = flops.gemm(n, d, n) + flops.eigh(n) + n * n
    # per class column and evaluation of the profile (`iterations`: grid points + golden-section steps): Q(t)
    # ~4 operations per singular value, log|A| ~3 (shared by the columns on the grid); the final evidence ~20.
    return spectrum + c * r * (4.0 * iterations + 20.0) + r * 3.0 * iterations


@register(
    "logme",
    needs=FEATURES,
    description="maximised log evidence of Bayesian linear regression from features to one-hot labels / N",
    citation="You et al., LogME: Practical Assessment of Pre-trained Models for Transfer Learning, ICML 2021",
    care=(
        "exact evidence (keeps the (D - k) log alpha term of log|A| when D > N), its true maximum (a 1-d "
        "profile over alpha / beta searched on a grid and refined, no epsilon-shifted fixed point), labels "
        "remapped (no phantom classes)"
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
        maximised log evidence per sample (module docstring), the exact maximum rather than the paper's
        epsilon-shifted fixed point: equal to it at moderate beta, higher (by up to percents) where the
        features nearly interpolate a class. Invariant to rescaling the features, as the maximum is.

    When D >= N and the features span R^N, a one-hot target is fitted exactly and the evidence approaches its
    supremum as beta -> infinity; the value returned is that supremum to round-off (the part of y outside
    span(F) is floored at ||y||^2 (max(N, D) eps)^2, which puts the maximum at a finite, very large beta).

    Classification needs at least 2 classes (InputError otherwise); a class with one sample, constant or
    duplicate columns, all-zero features and D > N give finite scores (all-zero features: the evidence does
    not depend on alpha and equals that of pure noise); an all-zero regression target is an InputError.
    """
    evidence, _, _ = _logme_fit(features, labels, regression=regression)
    return float(np.mean(evidence))
