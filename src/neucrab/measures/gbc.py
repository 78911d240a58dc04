"""GBC: Gaussian Bhattacharyya Coefficient (Pandy et al., CVPR 2022).

Each class is modelled by a Gaussian with diagonal covariance in a PCA space; the score is minus the total
Bhattacharyya coefficient (overlap) between classes, so well separated classes give a score near 0 and fully
overlapping ones -C (C - 1).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from .. import flops
from .._validate import features_and_labels
from .pca import pca
from .registry import FEATURES, SaturationWarning, register

PCA_DIMENSIONS = 64  # the authors' setting (pca_reduction = 64, exact full-SVD PCA, no whitening)
VARIANCE_FLOOR = 1e-4  # the authors' floor on per-class variances (a class with one sample has variance 0)


def _bhattacharyya_distance(mean1, var1, mean2, var2):
    """Bhattacharyya distance between Gaussians with diagonal covariances; broadcasts over leading axes.

    D_B = 1/8 sum_k (m1 - m2)^2 / v + 1/2 sum_k [log v - (log v1 + log v2) / 2], with v = (v1 + v2) / 2.
    """
    var = (var1 + var2) / 2.0
    mahalanobis = ((mean1 - mean2) ** 2 / var).sum(axis=-1) / 8.0
    log_ratio = (np.log(var) - 0.5 * (np.log(var1) + np.log(var2))).sum(axis=-1) / 2.0
    return mahalanobis + log_ratio


def _gbc_cost(n, d, c, sources, test_n, *, dims=64):
    k = min(dims, d, n - 1)
    s = min(n, d)
    reduce = n * d + (flops.gemm(d, n, d) if d <= n else flops.gemm(n, d, n)) + flops.top_eigenpairs(s, k, dense=True)
    reduce += flops.gemm(n, d, k) if d <= n else n * k
    statistics = 4.0 * n * k  # class means and variances
    bhattacharyya = c * c * (10.0 * k + 1.0)  # distance over k dimensions (logs, ratios) and exp, per pair
    return reduce + statistics + bhattacharyya


@register(
    "gbc",
    needs=FEATURES,
    description="minus the summed Bhattacharyya coefficients between per-class diagonal Gaussians",
    citation="Pandy et al., Transferability Estimation using Bhattacharyya Class Separability, CVPR 2022",
    care=(
        "PCA to 64 dimensions first (on raw high-dimensional features every checkpoint underflows to "
        "about -1e-80); per-class variances floored at 1e-4 (a class with one sample has variance 0); a "
        "SaturationWarning when every coefficient underflows (score 0 for any such checkpoint)"
    ),
    cost=_gbc_cost,
    default=4,
)
def gbc(features, labels) -> float:
    """GBC score; higher (closer to 0) is better, the range is [-C (C - 1), 0].

    Parameters
    ----------
    features : array (N, D)
        Features of the target task's training samples (computed in float64).
    labels : N labels of any hashable kind; at least 2 classes.

    Returns
    -------
    float
        GBC = -sum_{i != j} BC(c_i, c_j) over ordered pairs of classes, BC = exp(-D_B) with D_B the
        Bhattacharyya distance between the classes' diagonal Gaussians (`_bhattacharyya_distance`).

    As the authors do: the features are first projected by exact PCA (centred, not whitened) onto their
    min(64, D, N - 1) leading principal axes — without it, high-dimensional features make every BC
    underflow and all checkpoints score about -1e-80; each class's mean and population variance (ddof 0)
    are taken per PCA dimension, and variances are floored at 1e-4, which is how a class with one sample, or
    a dimension constant within a class, is handled. The floor is absolute, as theirs: features whose
    principal-axis variances are far below 1e-4 (a tiny feature scale) are treated as broader than they
    are, so their score moves toward -C (C - 1). With D <= 64 the PCA is a rotation onto the principal
    axes (the authors' code applies it always). All-constant features give -C (C - 1). Classes so far
    apart that every BC underflows float64 give 0 for any such checkpoint, with a SaturationWarning.
    """
    x, codes, n_classes = features_and_labels(features, labels, "GBC")
    n, d = x.shape
    # Unsigned scores suffice: each class's mean and variance along an axis flip with it exactly.
    z = pca(x, min(PCA_DIMENSIONS, d, n - 1), signs=False, drop_null=False)
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    average = sparse.csr_array((1.0 / counts[codes], (codes, np.arange(n))), shape=(n_classes, n))
    means = np.asarray(average @ z)  # (C, k)
    # Population variance from deviations to the class means (no E[z^2] - E[z]^2 cancellation).
    variances = np.maximum(np.asarray(average @ (z - means[codes]) ** 2), VARIANCE_FLOOR)
    total = 0.0
    for i in range(n_classes):  # one row of the (C, C) table at a time: memory O(C k) for many classes
        distance = _bhattacharyya_distance(means[i], variances[i], means, variances)
        coefficient = np.exp(-distance)
        coefficient[i] = 0.0  # pairs i != j only
        total += coefficient.sum()
    if total < np.finfo(np.float64).tiny:
        warnings.warn(
            f"gbc: every Bhattacharyya coefficient between the {n_classes} classes underflows float64, so the "
            "score is 0 for any checkpoint this separated: it cannot rank them here",
            SaturationWarning,
            stacklevel=2,
        )
    return float(-total)
