"""Building blocks of the measures' FLOP formulas (each formula sits next to its measure, `register(cost=...)`).

Conventions (Golub and Van Loan, "Matrix Computations"; one multiply-add = 2 FLOPs):
- product of (m, k) and (k, n) matrices: 2 m k n;
- symmetric eigendecomposition with eigenvectors ~ 9 s^3; eigenvalues only (tridiagonal reduction) ~ 4/3 s^3;
  k leading eigenpairs by LAPACK subset ~ 4/3 s^3 + 2 s^2 k; Cholesky s^3 / 3; triangular inverse s^3 / 3;
  Householder QR of an (m, n) matrix with Q formed ~ 4 m n^2 - 4/3 n^3;
- Lanczos (ARPACK) for k eigenpairs of an s x s matrix: ncv = max(2k + 1, 20) basis vectors, counted as three
  sweeps of ncv matrix-vector products (2 s^2 each) and their re-orthogonalisation (4 s ncv each);
- an elementwise operation, exp or log, and a comparison in a sort or top-k: 1 each (sorting m keys: m log2 m).
Iterative measures stop when they converge; unless told the count the formulas use their iteration caps, so the
number is an upper bound. Data-dependent sizes (the dimension PCA keeps) default to their largest possible value
for the same reason. Class sizes are taken as balanced (n / C each).

Imports nothing from `neucrab.measures` (the measures import this module) and no torch.
"""

from __future__ import annotations

import math

from ._validate import check_count, check_positive
from .errors import InputError


def gemm(m: float, k: float, n: float) -> float:
    """FLOPs of an (m, k) @ (k, n) product."""
    return 2.0 * m * k * n


def eigh(s: float) -> float:
    """Symmetric eigendecomposition with eigenvectors."""
    return 9.0 * s**3


def eigvalsh(s: float) -> float:
    """Symmetric eigenvalues only (the tridiagonal reduction dominates)."""
    return 4.0 / 3.0 * s**3


def cholesky(s: float) -> float:
    return s**3 / 3.0


def qr(m: float, n: float) -> float:
    """Householder QR of an (m, n) matrix, m >= n, with the (m, n) Q formed explicitly."""
    return 4.0 * m * n**2 - 4.0 / 3.0 * n**3


def top_eigenpairs(s: float, k: float, dense: bool) -> float:
    """k leading eigenpairs of an s x s symmetric matrix: LAPACK subset (dense) or Lanczos."""
    if dense:
        return eigvalsh(s) + 2.0 * s**2 * k
    ncv = max(2 * k + 1, 20)
    return 3.0 * ncv * (2.0 * s**2 + 4.0 * s * ncv)


def sort(m: float) -> float:
    return m * math.log2(max(m, 2.0))


def pca(n: float, d: float, kept: float, scores_from_gram: bool = False) -> float:
    """Centring, scatter or Gram matrix, full eigendecomposition, projection onto `kept` axes: the (D, D)
    scatter when D <= N, else the (N, N) Gram matrix, whose eigenvectors give the scores directly
    (`scores_from_gram`, as the MI measure) or the axes first (X^T U, as N-LEEP)."""
    if d <= n:
        return n * d + gemm(d, n, d) + eigh(d) + gemm(n, d, kept)
    scores = n * kept if scores_from_gram else gemm(d, n, kept) + gemm(n, d, kept)
    return n * d + gemm(n, d, n) + eigh(n) + scores


def finetune_cost(n: int, forward_per_sample: float, epochs: float, test_n: int) -> float:
    """Fine-tuning the whole network for `epochs` epochs and testing it: a backward pass costs about twice a
    forward pass (a gradient for the activations and one for the weights), so 3 forward passes per training
    sample per epoch, and one per test sample. `forward_per_sample` from `forward_flops(module, x) / len(x)`."""
    return 3.0 * epochs * n * forward_per_sample + test_n * forward_per_sample


# ------------------------------------------------------------------ what a formula needs besides the shapes
def need_sources(name: str, sources) -> int:
    """The number of source classes, which `name`'s formula needs."""
    if sources is None:
        raise InputError(f"measure_cost: {name} needs sources=the number of source classes, got None")
    return check_count(sources, "sources")


def need_forward(name: str, forward) -> float:
    """FLOPs of one sample's forward pass, which `name`'s formula needs."""
    if forward is None:
        raise InputError(f"measure_cost: {name} needs forward=FLOPs of one sample's forward pass (forward_flops)")
    return check_positive(forward, "forward")
