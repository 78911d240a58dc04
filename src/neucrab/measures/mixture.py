"""A full-covariance Gaussian mixture fitted by EM exactly as scikit-learn's GaussianMixture does (for N-LEEP).

`mixture_posteriors(x, n_components, seed)` returns the fitted mixture's posteriors P(v|x): on the GPU when
torch sees CUDA (`mixture_torch`), else with `GaussianMixtureEM` on the CPU. Same model, initialisation,
regularisation and stopping rule as scikit-learn, computed over ten times faster (see the class docstring).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from ..errors import InputError
from ..threads import one_blas_thread
from .mixture_init import MAX_ITER, REG_COVAR, TOL, kmeans_labels, warn_not_converged

_EPS = np.finfo(np.float64).eps
# Bound on the float64 buffer of quadratic features built per chunk in the E-step (bytes).
_CHUNK_BYTES = 32 * 2**20
# Quadratic features up to this size are built once and kept for every iteration (bytes).
_CACHE_BYTES = 256 * 2**20
# The screened E-step bounds the log-densities with the leading SCREEN_SHARE of the coordinates (about a
# fifth of the full E-step's work); it is used while the posteriors are sparse (the previous support
# below SCREEN_BELOW of all pairs) and the full E-step would be large (over SCREEN_WORK multiply-adds).
SCREEN_SHARE = 0.45
SCREEN_BELOW = 0.05
SCREEN_WORK = 1e9
# A support denser than this makes the M-step one GEMM on the quadratic features instead of a loop.
DENSE_ABOVE = 0.1


def _quadratic_features(x: np.ndarray, out: np.ndarray) -> None:
    """Write the transposed features [x_i x_j for i <= j (row-major upper triangle); x] of (n, d) `x`
    into `out` (T + d, n), T = d(d+1)/2. Transposed so that every write is a contiguous block of rows."""
    xt = np.ascontiguousarray(x.T)  # rows of xt contiguous: each product below streams memory
    d = xt.shape[0]
    start = 0
    for i in range(d):
        np.multiply(xt[i:], xt[i], out=out[start : start + d - i])
        start += d - i
    out[start:] = xt


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise-equal float arrays (then everything computed from them is too)."""
    return a.shape == b.shape and bool((a == b).all())


def em_device() -> str | None:
    """Where `mixture_posteriors` fits: "cuda" when torch sees a GPU, else None (numpy on the CPU)."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def mixture_posteriors(x: np.ndarray, n_components: int, seed: int, device: str | None = "auto") -> np.ndarray:
    """Posteriors (N, K) of the mixture fitted to float64 `x`; device "auto" (`em_device`), None (numpy)
    or a torch device name (the torch EM, float64 throughout)."""
    device = em_device() if device == "auto" else device
    if device is None:
        return GaussianMixtureEM(x, n_components, seed).fit_posteriors()
    from .mixture_torch import TorchGaussianMixtureEM

    return TorchGaussianMixtureEM(x, n_components, seed, device).fit_posteriors()


class GaussianMixtureEM:
    """A full-covariance Gaussian mixture fitted by EM exactly as scikit-learn's GaussianMixture does.

    Same model, initialisation (k-means labels from a seeded ``KMeans(n_init=1)``), regularisation
    (reg_covar on the diagonal), 10*eps added to each component's mass, weights, convergence test
    (|change of the mean log-likelihood| < tol) and final E-step, but computed differently for speed:

    - E-step: -0.5 |A_k (x - mu_k)|^2 (A_k^T A_k = P_k, the precision) is a linear function of the
      quadratic features q(x) = (x_i x_j, i <= j) and x, so all N x K log-densities come from one large GEMM
      (the features built once when they fit in _CACHE_BYTES, else chunk by chunk) instead of K
      per-component products; log-sum-exp gives the posteriors and the likelihood. The expanded quadratic
      form loses about eps * mu^T P mu to cancellation (~1e-8 for a component collapsed to reg_covar, 10
      units from the origin of the centred PCA scores): negligible next to the log-densities.
    - Screened E-step, while the posteriors are sparse (many components, each sample in ~1): with A_k lower
      triangular (L_k^-1), the leading j coordinates of A_k (x - mu_k) depend only on those of x - mu_k,
      so their squared norm, one GEMM on the j-dimensional quadratic features (a fifth of the work), bounds
      the Mahalanobis distance from below and the log-density from above. Each sample's best bound is
      evaluated exactly; every pair whose bound is not below that exact value + `_drop` (the M-step's
      threshold, ~e^-64) is evaluated exactly, per component, in the centred form; the rest get posterior
      0 where they had < e^-64 relative: the same M-step, and the same log-likelihood to rounding.
    - M-step: posteriors below exp(`_drop`) are zero to float64 precision for the statistics. A sparse
      support (a sample sits in few components) gives each covariance as the centred scatter over its
      support, sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T. A dense one (over DENSE_ABOVE of the pairs) gives all
      second moments as one GEMM with the quadratic features, covariance E[x x^T] - mu mu^T: its
      cancellation costs eps * |mu|^2 / var in relative terms (the scores are centred, so a few eps).
    - Precisions from a Cholesky factor (as scikit-learn); a component that is not numerically positive
      definite even after reg_covar (scikit-learn raises there) gets its eigenvalues floored at reg_covar.
    """

    def __init__(self, x: np.ndarray, n_components: int, seed: int):
        self.x = x
        self.n, self.d = x.shape
        self.k = n_components
        self.seed = seed
        self._screen_dims = max(1, round(SCREEN_SHARE * self.d))
        self._features = {}  # dims -> cached transposed quadratic features of x[:, :dims]
        self._density = 0.0  # share of (sample, component) pairs in the last support: 0 tries the screen
        # Responsibilities below exp(_drop) change any covariance by less than eps * reg_covar (see _support).
        radius2 = float(np.einsum("ij,ij->i", x, x).max())
        self._drop = math.log(_EPS * REG_COVAR) - math.log(4.0 * self.n * max(radius2, 1.0))
        self._floor = math.exp(self._drop)
        self._previous = None  # (means, covariances, log joint, log-normalisers) of the last E-step

    # -- quadratic features
    @staticmethod
    def _width(dims: int) -> int:
        return dims * (dims + 1) // 2 + dims

    def _quadratic_product(self, dims: int, right: np.ndarray, *, transpose: bool) -> np.ndarray:
        """Q @ right (N, K) when `transpose` (right (W, K)), else Q^T @ right (W, K) (right (N, K)); Q is the
        (N, W) quadratic features of x[:, :dims], kept when small enough, else built chunk by chunk."""
        width = self._width(dims)
        cached = self._features.get(dims)
        if cached is None and self.n * width * 8 <= _CACHE_BYTES:
            cached = self._features[dims] = np.empty((width, self.n))
            _quadratic_features(self.x[:, :dims], cached)
        if cached is not None:
            return cached.T @ right if transpose else cached @ right
        step = max(1, min(self.n, _CHUNK_BYTES // (8 * width)))
        buffer = np.empty((width, step))
        out = np.empty((self.n, right.shape[1])) if transpose else np.zeros((width, right.shape[1]))
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            block = buffer[:, : stop - start]
            _quadratic_features(self.x[start:stop, :dims], block)
            if transpose:
                np.matmul(block.T, right, out=out[start:stop])
            else:
                out += block @ right[start:stop]
        return out

    # -- parameters from responsibilities
    def _m_step_sparse(self, rows: np.ndarray, comps: np.ndarray, resp: np.ndarray) -> None:
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

    def _m_step_dense(self, resp: np.ndarray) -> None:
        """The same statistics from dense (N, K) responsibilities: first and second moments in one GEMM."""
        nk = resp.sum(axis=0) + 10 * _EPS
        moments = self._quadratic_product(self.d, resp, transpose=False) / nk  # (W, K)
        means = np.ascontiguousarray(moments[-self.d :].T)
        upper = np.triu_indices(self.d)
        covariances = np.empty((self.k, self.d, self.d))
        covariances[:, upper[0], upper[1]] = moments[: -self.d].T
        covariances[:, upper[1], upper[0]] = moments[: -self.d].T
        covariances -= means[:, :, None] * means[:, None, :]
        covariances[:, np.arange(self.d), np.arange(self.d)] += REG_COVAR
        self.nk, self.means, self.covariances = nk, means, covariances

    def _m_step(self, resp) -> None:
        """From `_e_step`'s posteriors, dense (N, K) or sparse (rows, components, values by component)."""
        if isinstance(resp, tuple):
            rows, comps, values = resp
            kept = values > self._floor
            self._density = float(np.count_nonzero(kept)) / (self.n * self.k)
            if self._density > DENSE_ABOVE:
                self._m_step_dense(self._dense(resp))
            else:
                self._m_step_sparse(rows[kept], comps[kept], values[kept])
            return
        kept = resp > self._floor
        self._density = float(np.count_nonzero(kept)) / kept.size
        if self._density > DENSE_ABOVE:
            self._m_step_dense(resp)
        else:
            self._m_step_sparse(*self._support(resp, kept))

    def _support(self, resp: np.ndarray, kept: np.ndarray):
        """Responsibilities that matter, as sparse (row, component, value) sorted by component.

        Means are convex combinations of the points, so |x_n - mu_k|^2 <= 4 max|x|^2 =: 4 R^2, and the
        entries dropped (each below exp(_drop) = eps * reg_covar / (4 N R^2)) move any component's scatter
        by less than eps * reg_covar in total: below the rounding of the covariances themselves.
        """
        comps, rows = np.nonzero(np.ascontiguousarray(kept.T))  # transposed: sorted by component
        return rows, comps, resp[rows, comps]

    def _precisions(self) -> None:
        """Factors A_k (A_k^T A_k = P_k) and log-normalisers log w_k - d/2 log 2 pi + 0.5 log|P_k|."""
        if self._previous is not None and _same(self._previous[1], self.covariances):
            self.log_norm = self.log_norm - self._log_weights + np.log(self.weights)  # same factors
            self._log_weights = np.log(self.weights)
            return
        self._log_weights = np.log(self.weights)
        with one_blas_thread():  # K small (d, d) factorisations
            try:
                chol = np.linalg.cholesky(self.covariances)
            except np.linalg.LinAlgError:
                chol = None
            if chol is not None:
                # L^-1: a batched inverse of the triangular factor; its error grows with sqrt(cond(S)) rather
                # than with cond(S) as inverting S itself would.
                self.factor = np.tril(np.linalg.inv(chol))  # exact zeros above the diagonal
                log_det = -np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)  # 0.5 log|P|
                self.triangular = True
            else:
                self.factor, log_det = self._precisions_by_eigh()
                self.triangular = False
        self.log_norm = self._log_weights - 0.5 * self.d * math.log(2 * math.pi) + log_det

    def _precisions_by_eigh(self):
        """Factors from eigenvalues floored at reg_covar: the fallback for non-positive-definite ones."""
        values, vectors = np.linalg.eigh((self.covariances + self.covariances.transpose(0, 2, 1)) / 2)
        values = np.maximum(values, REG_COVAR)
        factor = (vectors / np.sqrt(values)[:, None, :]).transpose(0, 2, 1)  # diag(1/sqrt(l)) V^T
        return np.ascontiguousarray(factor), -0.5 * np.log(values).sum(axis=1)

    def _coefficients(self, dims: int):
        """(W, K) GEMM coefficients and (K,) offsets with [q(x), x] . coef_k + offset_k equal to
        -0.5 |A_k[:dims, :dims] (x - mu_k)[:dims]|^2."""
        factor = self.factor[:, :dims, :dims]
        means = self.means[:, :dims]
        precisions = factor.transpose(0, 2, 1) @ factor
        upper = np.triu_indices(dims)
        off_diagonal = (upper[0] != upper[1]) + 1.0  # 2 x_i x_j for i < j
        quadratic = -0.5 * precisions[:, upper[0], upper[1]] * off_diagonal
        linear = np.einsum("kij,kj->ki", precisions, means)
        offset = -0.5 * (np.einsum("kij,kj->ki", factor, means) ** 2).sum(axis=1)
        return np.ascontiguousarray(np.concatenate([quadratic, linear], axis=1).T), offset

    # -- E-step
    def _exact(self, rows: np.ndarray, comps: np.ndarray) -> np.ndarray:
        """Log joint densities log w_k N(x_n | k) of pairs sorted by component, in the centred form."""
        out = np.empty(rows.size)
        bounds = np.searchsorted(comps, np.arange(self.k + 1))
        with one_blas_thread():  # many small products, one per component
            for k in np.flatnonzero(np.diff(bounds)):
                lo, hi = bounds[k], bounds[k + 1]
                y = (self.x[rows[lo:hi]] - self.means[k]) @ self.factor[k].T
                out[lo:hi] = self.log_norm[k] - 0.5 * np.einsum("ij,ij->i", y, y)
        return out

    def _log_joint_full(self) -> np.ndarray:
        coef, offset = self._coefficients(self.d)
        log_joint = self._quadratic_product(self.d, coef, transpose=True)
        log_joint += offset + self.log_norm
        return log_joint

    def _log_joint_screened(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log joint densities of the pairs that can matter (see the class docstring), sparse: (rows, components,
        values) sorted by component; every other pair is -inf."""
        dims = self._screen_dims
        coef, offset = self._coefficients(dims)
        self._quadratic_product(dims, coef[:, :0], transpose=True)  # builds the cache when it fits
        cached = self._features.get(dims)
        # (K, N): component-major, so that np.nonzero lists the kept pairs sorted by component.
        bound = coef.T @ cached if cached is not None else self._quadratic_product(dims, coef, transpose=True).T
        bound += (offset + self.log_norm)[:, None]
        # A floor under each sample's largest log joint: the exact values at the component of its best
        # bound and at the one that held it last (the own component, whose bound may not be the best).
        probes = np.stack([bound.argmax(axis=0), self._last_best], axis=1).ravel()
        order = np.argsort(probes, kind="stable")
        floor = np.empty(probes.size)
        floor[order] = self._exact(order // 2, probes[order])
        floor = floor.reshape(self.n, 2).max(axis=1) + self._drop
        # Slack for the rounding of the expanded bound: a GEMM of width W errs by at most W eps times the
        # sum of |terms|, here <= |P_k| (R + |mu_k|)^2 with |P_k| <= |A_k|_F^2 and R the largest |x[:dims]|;
        # doubled, plus one unit of log-density.
        radius = float(np.sqrt(np.einsum("ij,ij->i", self.x[:, :dims], self.x[:, :dims]).max()))
        norm2 = np.einsum("kij,kij->k", self.factor[:, :dims, :dims], self.factor[:, :dims, :dims])
        reach = (radius + np.linalg.norm(self.means[:, :dims], axis=1)) ** 2
        slack = 1.0 + 2.0 * self._width(dims) * _EPS * norm2 * reach
        comps, rows = np.nonzero(bound >= floor[None, :] - slack[:, None])
        return rows, comps, self._exact(rows, comps)

    def _e_step(self, keep: bool = True):
        """Return the posteriors and the mean log-likelihood; `keep` the log joint densities for the next.

        Posteriors come dense (N, K), or after a screened E-step sparse as (rows, components, values) sorted by
        component (the other pairs 0), which spares the passes over N x K mostly -inf entries."""
        screen = (
            self.triangular
            and self._density < SCREEN_BELOW
            and self._screen_dims < self.d
            and self.n * self.k * self._width(self.d) > SCREEN_WORK
        )
        previous = self._previous
        if previous is not None and _same(previous[0], self.means) and _same(previous[1], self.covariances):
            # Only the weights moved (as when EM starts at its fixed point: one-hot posteriors reproduce the
            # k-means statistics): log w_k enters additively, so shift the last log joint densities.
            shift = self.log_norm - previous[3]
            if isinstance(previous[2], tuple):
                rows, comps, values = previous[2]
                log_joint = (rows, comps, values + shift[comps])
            else:
                log_joint = previous[2] + shift
        else:
            log_joint = self._log_joint_screened() if screen else self._log_joint_full()
        if isinstance(log_joint, tuple):
            return self._posteriors_sparse(log_joint, keep)
        self._last_best = log_joint.argmax(axis=1)
        peak = log_joint[np.arange(self.n), self._last_best][:, None]
        if keep and log_joint.nbytes <= _CACHE_BYTES:  # kept for the next E-step, posteriors in a new array
            self._previous = (self.means, self.covariances, log_joint, self.log_norm)
            resp = np.subtract(log_joint, peak)
        else:
            resp = np.subtract(log_joint, peak, out=log_joint)
        np.exp(resp, out=resp)
        total = resp.sum(axis=1, keepdims=True)
        resp /= total
        return resp, self._mean_log_likelihood(peak[:, 0], total[:, 0])

    def _posteriors_sparse(self, log_joint, keep: bool):
        """`_e_step` on sparse log joint densities (rows, components, values): the same peaks, posteriors and
        likelihood as the dense computation, over the pairs that are not -inf only."""
        rows, comps, values = log_joint
        peak = np.full(self.n, -np.inf)
        np.maximum.at(peak, rows, values)
        at_peak = values == peak[rows]
        best = np.full(self.n, self.k)
        np.minimum.at(best, rows[at_peak], comps[at_peak])  # argmax's choice: the first component at the peak
        self._last_best = best
        if keep:
            self._previous = (self.means, self.covariances, log_joint, self.log_norm)
        resp = np.exp(values - peak[rows])
        total = np.bincount(rows, weights=resp, minlength=self.n)
        resp /= total[rows]
        return (rows, comps, resp), self._mean_log_likelihood(peak, total)

    @staticmethod
    def _mean_log_likelihood(peak: np.ndarray, total: np.ndarray) -> float:
        lower_bound = float(np.mean(peak + np.log(total)))  # mean log-sum-exp
        if not np.isfinite(lower_bound):  # only with features near float64's range
            raise InputError("features: the mixture's likelihood overflows float64; rescale the features")
        return lower_bound

    def _dense(self, resp) -> np.ndarray:
        """(N, K) posteriors from `_e_step`'s dense or sparse ones."""
        if not isinstance(resp, tuple):
            return resp
        rows, comps, values = resp
        dense = np.zeros((self.n, self.k))
        dense[rows, comps] = values
        return dense

    # -- fit
    def fit_posteriors(self) -> np.ndarray:
        """Fit by EM from a k-means start; return the posteriors P(v|x) (N, K) of the fitted mixture."""
        init = kmeans_labels(self.x, self.k, self.seed)
        order = np.argsort(init, kind="stable")
        self._m_step_sparse(order, init[order].astype(np.int64), np.ones(self.n))
        self._last_best = init
        self.weights = self.nk / self.n  # scikit-learn divides by N at initialisation, by sum(nk) later
        self._precisions()
        lower_bound = -np.inf
        self.n_iter, self.converged = 0, False
        for self.n_iter in range(1, MAX_ITER + 1):
            previous = lower_bound
            resp, lower_bound = self._e_step()
            self._m_step(resp)
            self.weights = self.nk / self.nk.sum()
            self._precisions()
            if abs(lower_bound - previous) < TOL:
                self.converged = True
                break
        if not self.converged:
            warn_not_converged()
        posteriors, self.lower_bound = self._e_step(keep=False)
        posteriors = self._dense(posteriors)
        posteriors[posteriors < np.finfo(np.float64).tiny] = 0.0  # subnormals: slow, and worth nothing
        return posteriors
