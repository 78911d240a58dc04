"""TransRate (Huang et al., ICML 2022, "Frustratingly Easy Transferability Estimation").

The mutual information between features and labels, estimated by coding rates: the rate of all features
minus the class-weighted rates of each class's features. Log-determinants are taken through the smaller of
the Gram and scatter matrices (Sylvester: det(I_d + c Z^T Z) = det(I_n + c Z Z^T)) by Cholesky, in float64.
"""

from __future__ import annotations

import numpy as np

from .. import flops
from .._validate import check_positive, features_and_labels
from .registry import FEATURES, register

EPSILON = 1e-4  # the authors' default distortion (their code's eps; see `transrate`)


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z, eps) = 1/2 logdet(I_d + Z^T Z / (n eps)) for z (n, d), via the smaller (min(n, d))^2 matrix."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    matrix = gram / (n * eps)
    matrix[np.diag_indices_from(matrix)] += 1.0
    try:
        # I + PSD is positive definite: logdet = 2 sum log diag(L), and R is half of it.
        return float(np.log(np.diag(np.linalg.cholesky(matrix))).sum())
    except np.linalg.LinAlgError:
        # Only for features so large (|f| ~ 1e8 with eps = 1e-4) that round-off in Z^T Z / (n eps) swamps
        # the identity: take eigenvalues, and treat those at round-off level as the zeros they are.
        eigenvalues = np.linalg.eigvalsh(gram)
        cutoff = max(float(eigenvalues.max()), 0.0) * gram.shape[0] * np.finfo(np.float64).eps
        eigenvalues = eigenvalues[eigenvalues > cutoff]
        return float(0.5 * np.log1p(eigenvalues / (n * eps)).sum())


def _transrate_cost(n, d, c, sources, test_n):
    def coding_rate(rows):
        s = min(rows, d)
        return flops.gemm(s, max(rows, d), s) + s * s + flops.cholesky(s) + s  # Gram, scale, Cholesky, log-diagonal

    return n * d + coding_rate(n) + c * coding_rate(n / c)


@register(
    "transrate",
    needs=FEATURES,
    description="coding rate of all features minus the class-weighted coding rates of each class",
    citation="Huang et al., Frustratingly Easy Transferability Estimation, ICML 2022",
    care=(
        "authors' eps = 1e-4 and global centring; classes weighted n_c / N (the paper; their code: 1 / C); "
        "log-determinants via the smaller Gram/scatter matrix in float64"
    ),
    cost=_transrate_cost,
    default=3,
)
def transrate(features, labels, *, eps: float = EPSILON) -> float:
    """TransRate score; higher is better.

    Parameters
    ----------
    features : array (N, D)
        Features of the target task's training samples (computed in float64).
    labels : N labels of any hashable kind; at least 2 classes.
    eps : float
        Distortion, > 0; default 1e-4 as in the authors' code.

    Returns
    -------
    float
        TransRate = R(Z, eps) - sum_c (n_c / N) R(Z_c, eps), where Z (N, D) are the features centred once by
        their overall mean (not re-centred per class), Z_c the n_c rows of class c, and
        R(Z, eps) = 1/2 logdet(I_D + Z^T Z / (n eps)) for n rows.

    This is the authors' code (eps = 1e-4, coefficient 1 / (n eps), global centring, no other scaling); their
    paper writes the coefficient as D / (n eps'^2), the same with eps'^2 = D eps. The class term is weighted
    by n_c / N as in the paper's definition of R(Z, eps | Y) (the mutual information I(Z; Y) = H(Z) -
    sum_c p(c) H(Z | c)); the authors' code averages the classes with equal weights 1 / C, which is the same
    for balanced classes. The value depends on the scale of the features (no normalisation, as theirs).

    A class with one sample, constant or duplicate columns and D > N give finite values; all-constant
    features score 0.
    """
    eps = check_positive(eps, "eps")
    x, codes, n_classes = features_and_labels(features, labels, "TransRate")
    n = x.shape[0]
    z = x - x.mean(axis=0)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_classes + 1))
    conditional = 0.0
    for c in range(n_classes):
        rows = z[order[bounds[c] : bounds[c + 1]]]
        conditional += rows.shape[0] / n * _coding_rate(rows, eps)
    return _coding_rate(z, eps) - conditional
