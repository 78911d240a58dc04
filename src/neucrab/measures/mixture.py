"""A full-covariance Gaussian mixture fitted by EM exactly as scikit-learn's GaussianMixture does (for N-LEEP).

`GaussianMixtureEM(x, n_components, seed).fit_posteriors()` returns the fitted mixture's posteriors P(v|x).
Same model, initialisation, regularisation and stopping rule as scikit-learn, computed several times faster
(see the class docstring).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse

from ..errors import InputError
from ..threads import one_blas_thread

# scikit-learn's GaussianMixture defaults, which Google's N-LEEP reference code uses unchanged.
MAX_ITER = 100
TOL = 1e-3
REG_COVAR = 1e-6

_EPS = np.finfo(np.float64).eps
# Bound on the float64 buffer of quadratic features built per chunk in the E-step (bytes).
_CHUNK_BYTES = 32 * 2**20


def _quadratic_features(x: np.ndarray, out: np.ndarray) -> None:
    """Write the transposed features [x_i x_j for i <= j (row-major upper triangle); x] of (n, d) `x`
    into `out` (T + d, n), T = d(d+1)/2. Transposed so that every write is a contiguous block of rows."""
    xt = x.T
    d = xt.shape[0]
    start = 0
    for i in range(d):
        np.multiply(xt[i:], xt[i], out=out[start : start + d - i])
        start += d - i
    out[start:] = xt


class GaussianMixtureEM:
    """A full-covariance Gaussian mixture fitted by EM exactly as scikit-learn's GaussianMixture does.

    Same model, initialisation (k-means labels from a seeded ``KMeans(n_init=1)``), regularisation
    (reg_covar on the diagonal), 10*eps added to each component's mass, weights, convergence test
    (|change of the mean log-likelihood| < tol) and final E-step, but computed differently for speed:

    - E-step: log N(x|mu_k, S_k) = c_k + x.b_k - 0.5 x^T P_k x is a linear function of the quadratic features
      (x_i x_j, i <= j) and x, so all N x K log-densities come from one large GEMM (chunked over N to bound
      memory) instead of K per-component products; log-sum-exp gives the posteriors and the likelihood.
      The expanded quadratic form loses about eps * mu^T P mu to cancellation (~1e-8 for a component
      collapsed to reg_covar, 10 units from the origin of the centred PCA scores): negligible next to the
      log-densities, and the M-step below has no such cancellation.
    - M-step: posteriors below a threshold (~1e-30, see `_support`) are zero to float64 precision for the
      statistics; the rest are sparse (a sample sits in few components), so each covariance is the
      centred scatter over its support, sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T: exact and free of the
      cancellation of E[xx^T] - mu mu^T.
    - Precisions from a Cholesky factor (as scikit-learn); a component that is not numerically positive
      definite even after reg_covar (scikit-learn raises there) gets its eigenvalues floored at reg_covar.
    """

    def __init__(self, x: np.ndarray, n_components: int, seed: int):
        self.x = x
        self.n, self.d = x.shape
        self.k = n_components
        self.seed = seed
        upper = np.triu_indices(self.d)
        self._upper = upper
        self._off_diagonal = (upper[0] != upper[1]).astype(np.float64) + 1.0  # 2 x_i x_j for i < j
        self._width = len(upper[0]) + self.d
        self._chunk = max(1, min(self.n, _CHUNK_BYTES // (8 * self._width)))
        # Responsibilities below exp(_drop) change any covariance by less than eps * reg_covar (see _support).
        radius2 = float(np.einsum("ij,ij->i", x, x).max())
        self._drop = math.log(_EPS * REG_COVAR) - math.log(4.0 * self.n * max(radius2, 1.0))

    # -- parameters from (sparse) responsibilities
    def _m_step(self, rows: np.ndarray, comps: np.ndarray, resp: np.ndarray) -> None:
        """Weights, means and covariances from responsibilities given as sparse (row, component, value).

        The entries must be sorted by component. Covariances are the centred weighted scatter over each
        component's support plus reg_covar on the diagonal, as scikit-learn computes them.
        """
        counts = np.bincount(comps, minlength=self.k)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        nk = np.bincount(comps, weights=resp, minlength=self.k) + 10 * _EPS
        weighted = scipy.sparse.csr_matrix((resp, rows, bounds), shape=(self.k, self.n))
        means = np.asarray(weighted @ self.x) / nk[:, None]
        covariances = np.empty((self.k, self.d, self.d))
        with one_blas_thread():  # many small products, one per component
            for k in range(self.k):
                lo, hi = bounds[k], bounds[k + 1]
                diff = self.x[rows[lo:hi]] - means[k]
                covariances[k] = (diff.T * resp[lo:hi]) @ diff / nk[k]
                covariances[k].flat[:: self.d + 1] += REG_COVAR
        self.nk, self.means, self.covariances = nk, means, covariances

    def _precisions(self) -> None:
        """Coefficients of the E-step GEMM: log p(x, k) = const_k + [q(x), x] . coef_k."""
        with one_blas_thread():  # K small (d, d) factorisations
            try:
                chol = np.linalg.cholesky(self.covariances)
            except np.linalg.LinAlgError:
                chol = None
            if chol is not None:
                # L^-1 (P = L^-T L^-1): a batched inverse of the triangular factor; its error grows with
                # sqrt(cond(S)) rather than with cond(S) as inverting S itself would.
                prec_chol = np.tril(np.linalg.inv(chol))  # exact zeros above the diagonal
                log_det = -np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)  # 0.5 log|P|
                precisions = prec_chol.transpose(0, 2, 1) @ prec_chol
                root_mean = np.einsum("kij,kj->ki", prec_chol, self.means)
            else:
                precisions, log_det, root_mean = self._precisions_by_eigh()
        log_weights = np.log(self.weights)
        self.const = (
            log_weights - 0.5 * self.d * math.log(2 * math.pi) + log_det - 0.5 * (root_mean**2).sum(axis=1)
        )
        quadratic = -0.5 * precisions[:, self._upper[0], self._upper[1]] * self._off_diagonal
        linear = np.einsum("kij,kj->ki", precisions, self.means)
        self.coef = np.ascontiguousarray(np.concatenate([quadratic, linear], axis=1).T)  # (T + d, K)

    def _precisions_by_eigh(self):
        """Precisions with eigenvalues floored at reg_covar: the fallback for non-positive-definite ones."""
        values, vectors = np.linalg.eigh((self.covariances + self.covariances.transpose(0, 2, 1)) / 2)
        values = np.maximum(values, REG_COVAR)
        precisions = (vectors / values[:, None, :]) @ vectors.transpose(0, 2, 1)
        log_det = -0.5 * np.log(values).sum(axis=1)
        root_mean = np.einsum("kji,kj->ki", vectors, self.means) / np.sqrt(values)
        return precisions, log_det, root_mean

    # -- E-step
    def _log_resp(self) -> tuple[np.ndarray, float]:
        """Return log posteriors (N, K) and the mean log-likelihood, chunked over N."""
        log_resp = np.empty((self.n, self.k))
        buffer = np.empty((self._width, self._chunk))
        total = 0.0
        for start in range(0, self.n, self._chunk):
            stop = min(start + self._chunk, self.n)
            block = buffer[:, : stop - start]
            _quadratic_features(self.x[start:stop], block)
            weighted = np.matmul(block.T, self.coef, out=log_resp[start:stop])
            weighted += self.const
            peak = weighted.max(axis=1, keepdims=True)
            norm = peak[:, 0] + np.log(np.exp(weighted - peak).sum(axis=1))  # log-sum-exp
            weighted -= norm[:, None]
            total += norm.sum()
        return log_resp, total / self.n

    def _support(self, log_resp: np.ndarray):
        """Responsibilities that matter, as sparse (row, component, value).

        Means are convex combinations of the points, so |x_n - mu_k|^2 <= 4 max|x|^2 =: 4 R^2, and the
        entries dropped (each below exp(_drop) = eps * reg_covar / (4 N R^2)) move any component's scatter
        by less than eps * reg_covar in total: below the rounding of the covariances themselves.
        """
        # Transposed first so that np.nonzero returns the entries sorted by component.
        comps, rows = np.nonzero(np.ascontiguousarray((log_resp > self._drop).T))
        return rows, comps, np.exp(log_resp[rows, comps])

    # -- fit
    def fit_posteriors(self) -> np.ndarray:
        """Fit by EM from a k-means start; return the posteriors P(v|x) (N, K) of the fitted mixture."""
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(), one_blas_thread():
            # Fewer distinct points than clusters: k-means says so; empty components are handled below.
            # One BLAS thread: k-means++ makes K skinny products where threads only synchronise (Lloyd's
            # iterations already run one BLAS thread per OpenMP worker); same labels either way.
            warnings.simplefilter("ignore", ConvergenceWarning)
            init = KMeans(n_clusters=self.k, n_init=1, random_state=self.seed).fit(self.x).labels_
        order = np.argsort(init, kind="stable")
        self._m_step(order, init[order].astype(np.int64), np.ones(self.n))
        self.weights = self.nk / self.n  # scikit-learn divides by N at initialisation, by sum(nk) later
        self._precisions()
        lower_bound = -np.inf
        self.n_iter, self.converged = 0, False
        for self.n_iter in range(1, MAX_ITER + 1):
            previous = lower_bound
            log_resp, lower_bound = self._log_resp()
            if not np.isfinite(lower_bound):  # only with features near float64's range
                raise InputError("features: the mixture's likelihood overflows float64; rescale the features")
            self._m_step(*self._support(log_resp))
            self.weights = self.nk / self.nk.sum()
            self._precisions()
            if abs(lower_bound - previous) < TOL:
                self.converged = True
                break
        if not self.converged:
            warnings.warn(
                f"nleep: the Gaussian mixture did not converge in {MAX_ITER} EM iterations (tol {TOL}); "
                "using the last iterate, as scikit-learn does",
                ConvergenceWarning,
                stacklevel=3,
            )
        log_resp, self.lower_bound = self._log_resp()
        if not np.isfinite(self.lower_bound):
            raise InputError("features: the mixture's likelihood overflows float64; rescale the features")
        posteriors = np.exp(log_resp, out=log_resp)
        posteriors[posteriors < np.finfo(np.float64).tiny] = 0.0  # subnormals: slow, and worth nothing
        return posteriors
