"""N-LEEP's Gaussian-mixture EM in torch, float64 throughout: the GPU path of `mixture.mixture_posteriors`.

The same fit as `mixture.GaussianMixtureEM` (and scikit-learn): k-means labels (on the CPU, scikit-learn's),
reg_covar, 10*eps on each mass, the same stopping rule and final E-step. On a GPU the work is cheap next to
its launches, so every step is the plain dense one scikit-learn writes, batched over components: centred
scatter for the covariances, Cholesky precisions, and log-densities from |L^-1 (x - mu)|^2. The code is
device-agnostic: the tests run it on the CPU against the numpy EM.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .mixture_init import MAX_ITER, REG_COVAR, TOL, kmeans_labels, warn_not_converged

_EPS = float(np.finfo(np.float64).eps)
# Bound on the (components, N, d) float64 block built per batch of components (bytes).
_BLOCK_BYTES = 256 * 2**20


class TorchGaussianMixtureEM:
    """`GaussianMixtureEM`'s fit on a torch device; attributes n_iter, converged, lower_bound after fitting."""

    def __init__(self, x: np.ndarray, n_components: int, seed: int, device: str):
        self.x_cpu = x
        self.device = torch.device(device)
        self.x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        self.n, self.d = x.shape
        self.k = n_components
        self.seed = seed
        self._batch = max(1, min(self.k, _BLOCK_BYTES // (8 * self.n * self.d)))

    def _m_step(self, resp: torch.Tensor) -> None:
        nk = resp.sum(dim=0) + 10 * _EPS
        means = (resp.T @ self.x) / nk[:, None]
        covariances = torch.empty((self.k, self.d, self.d), dtype=torch.float64, device=self.device)
        for lo in range(0, self.k, self._batch):
            hi = min(lo + self._batch, self.k)
            diff = self.x[None] - means[lo:hi, None]  # (b, N, d)
            weighted = diff * resp[:, lo:hi].T[:, :, None]
            covariances[lo:hi] = weighted.transpose(1, 2) @ diff / nk[lo:hi, None, None]
        covariances.diagonal(dim1=1, dim2=2).add_(REG_COVAR)
        self.nk, self.means, self.covariances = nk, means, covariances

    def _precisions(self, weights: torch.Tensor) -> None:
        chol, info = torch.linalg.cholesky_ex(self.covariances)
        eye = torch.eye(self.d, dtype=torch.float64, device=self.device).expand(self.k, -1, -1)
        factor = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1, P = L^-T L^-1
        log_det = -torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)  # 0.5 log|P|
        failed = info != 0
        if bool(failed.any()):  # not numerically positive definite: eigenvalues floored at reg_covar
            bad = self.covariances[failed]
            values, vectors = torch.linalg.eigh((bad + bad.transpose(1, 2)) / 2)
            values = values.clamp_min(REG_COVAR)
            factor[failed] = (vectors / values.sqrt()[:, None, :]).transpose(1, 2)
            log_det[failed] = -0.5 * torch.log(values).sum(dim=1)
        self.factor = factor
        self.log_norm = torch.log(weights) - 0.5 * self.d * math.log(2 * math.pi) + log_det

    def _e_step(self) -> tuple[torch.Tensor, float]:
        log_joint = torch.empty((self.n, self.k), dtype=torch.float64, device=self.device)
        for lo in range(0, self.k, self._batch):
            hi = min(lo + self._batch, self.k)
            factor_t = self.factor[lo:hi].transpose(1, 2)  # (b, d, d)
            shift = (self.means[lo:hi, None, :] @ factor_t)[:, 0]  # A mu, (b, d)
            y = self.x @ factor_t - shift[:, None, :]  # (b, N, d): A (x - mu), scikit-learn's form
            log_joint[:, lo:hi] = (self.log_norm[lo:hi, None] - 0.5 * (y * y).sum(dim=2)).T
        norm = torch.logsumexp(log_joint, dim=1)
        lower_bound = float(norm.mean())
        if not math.isfinite(lower_bound):
            raise InputError("features: the mixture's likelihood overflows float64; rescale the features")
        return torch.exp(log_joint - norm[:, None]), lower_bound

    def fit_posteriors(self) -> np.ndarray:
        init = torch.as_tensor(kmeans_labels(self.x_cpu, self.k, self.seed), device=self.device)
        resp = torch.zeros((self.n, self.k), dtype=torch.float64, device=self.device)
        resp[torch.arange(self.n, device=self.device), init] = 1.0
        self._m_step(resp)
        self._precisions(self.nk / self.n)  # scikit-learn divides by N at initialisation, by sum(nk) later
        lower_bound = -math.inf
        self.n_iter, self.converged = 0, False
        for self.n_iter in range(1, MAX_ITER + 1):
            previous = lower_bound
            resp, lower_bound = self._e_step()
            self._m_step(resp)
            self._precisions(self.nk / self.nk.sum())
            if abs(lower_bound - previous) < TOL:
                self.converged = True
                break
        if not self.converged:
            warn_not_converged()
        posteriors, self.lower_bound = self._e_step()
        posteriors = posteriors.cpu().numpy()
        posteriors[posteriors < np.finfo(np.float64).tiny] = 0.0  # subnormals: slow, and worth nothing
        return posteriors
