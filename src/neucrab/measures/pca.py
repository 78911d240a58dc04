"""PCA and leading eigenpairs, shared by the measures (N-LEEP, GBC, PARC, MI; SFDA and the probe's curvature).

Scores come from the float64 eigendecomposition of the smaller of the (D, D) scatter X^T X and the (N, N) Gram
matrix X X^T of the centred features X (same non-zero spectrum), never from an SVD of the whole (N, D) matrix,
and only the leading eigenpairs are computed unless told otherwise. No whitening.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ..errors import InputError
from ..threads import one_blas_thread

_EPS = np.finfo(np.float64).eps
LANCZOS_ABOVE = 256  # matrices larger than this use Lanczos for a few eigenpairs (dense costs seconds at 1280)
FIRST_BATCH = 256  # eigenpairs computed first when the count depends on the energy (enough for real features)
# EIGH_THREADS: dense eigendecompositions run on one BLAS thread. Their tridiagonal reduction is a chain of
# memory-bound matrix-vector products whose threads synchronise at every step: a 1,280 x 1,280 eigh took 0.4 s on
# one thread and 3-10 s on two while another process used the second core (2.2x slower for a 256-pair subset).


def top_eigenpairs(matrix: np.ndarray, k: int, *, lanczos: bool = True, tol: float = 0.0, vectors: bool = True):
    """The k largest eigenvalues (descending) of a symmetric PSD matrix, with eigenvectors unless `vectors`
    is False (then the values alone).

    LAPACK's subset solver, or Lanczos (ARPACK, fixed start vector, `tol` 0 = machine precision) when
    `lanczos` and the matrix is large and k small: a dense tridiagonalisation of a 1280 x 1280 matrix costs
    seconds, the Lanczos iterations a fraction of that. Lanczos falls back to LAPACK if it does not converge.
    """
    size = matrix.shape[0]
    if lanczos and size > LANCZOS_ABOVE and k < size // 4:
        start = np.random.default_rng(0).standard_normal(size)
        try:
            found = scipy.sparse.linalg.eigsh(matrix, k=k, which="LA", v0=start, tol=tol, return_eigenvectors=vectors)
        except scipy.sparse.linalg.ArpackNoConvergence:
            found = None
        if found is not None:  # ARPACK does not promise an order
            values = found[0] if vectors else found
            order = np.argsort(values)[::-1]
            return (values[order], found[1][:, order]) if vectors else values[order]
    with one_blas_thread():  # see EIGH_THREADS
        found = scipy.linalg.eigh(matrix, eigvals_only=not vectors, subset_by_index=[size - k, size - 1])
    return (found[0][::-1], found[1][:, ::-1]) if vectors else found[::-1]  # LAPACK: ascending


def pca(x: np.ndarray, dims: int | None = None, *, energy: float | None = None, overwrite: bool = False,
        solver: str = "subset", signs: bool = True, drop_null: bool = True, unit_axes: bool = False) -> np.ndarray:
    """Scores (N, k) of float64 (N, D) `x` on its leading principal axes (centred, not whitened).

    k is `dims`, or with `energy` the fewest axes whose cumulated explained-variance ratio exceeds it
    (scikit-learn's ``PCA(energy)``; all non-zero ones when energy == 1). Null directions (eigenvalue at or
    below largest * max(N, D) * eps) are dropped unless `drop_null` is False (dims only); features that do
    not vary at all then give an (N, 0) array.

    solver: "subset" (LAPACK, leading eigenpairs only), "lanczos" (ARPACK for large matrices and few dims,
    see `top_eigenpairs`) or "full" (numpy's eigh of the whole matrix). signs: make each axis' largest loading
    positive (scikit-learn's svd_flip), so that the scores do not depend on LAPACK's sign choices; without,
    D > N scores are read off the Gram eigenvectors directly (X V = U S). unit_axes (with signs): rescale the
    axes to unit length by their norms (when D > N instead of dividing X^T u by sqrt(lambda)), as PARC always
    has: the same scores to rounding, and PARC's rank correlation of near-tied pairs sees that rounding. With
    `overwrite`, `x` is centred in place. Raises InputError when the features' squares overflow float64.
    """
    n, d = x.shape
    centred = x if overwrite else x.copy()
    centred -= x.mean(axis=0)
    gram = d > n
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
        matrix = centred @ centred.T if gram else centred.T @ centred
    size = matrix.shape[0]
    total = float(np.trace(matrix))
    if not np.isfinite(total):
        raise InputError("features: values so large that their squares overflow float64; rescale the features")
    drop_null = drop_null or energy is not None
    if drop_null and not total > 0:
        return centred[:, :0]
    values, vectors = _leading(matrix, size if dims is None else dims, energy, total, solver)
    values = np.clip(values, 0.0, None)
    kept = values.size
    if drop_null:
        kept = int((values > values[0] * max(n, d) * _EPS).sum())
    if energy is not None:
        ratios = np.cumsum(values / total)
        kept = min(int(np.searchsorted(ratios, energy, side="right")) + 1, kept)
    values, vectors = values[:kept], vectors[:, :kept]
    if not signs:
        return vectors * np.sqrt(values) if gram else centred @ vectors
    if gram:  # principal axes from the Gram matrix's eigenvectors u: v = X^T u / sqrt(lambda)
        vectors = centred.T @ (np.ascontiguousarray(vectors) if unit_axes else vectors / np.sqrt(values))
    if unit_axes:  # column-major, as PARC's code has always laid them out (the norms' summation order)
        vectors = np.asfortranarray(vectors)
        vectors /= np.linalg.norm(vectors, axis=0)
    biggest = np.abs(vectors).argmax(axis=0)
    return centred @ (vectors * np.sign(vectors[biggest, np.arange(kept)]))


def _leading(matrix: np.ndarray, wanted: int, energy: float | None, total: float, solver: str):
    """Leading eigenpairs (descending): `wanted` of them, or with `energy` enough to exceed that share of
    `total` (a first batch, then four times as many until it does)."""
    size = matrix.shape[0]
    if solver == "full":
        with one_blas_thread():  # see EIGH_THREADS
            values, vectors = np.linalg.eigh(matrix)
        return values[::-1], vectors[:, ::-1]
    if solver not in ("subset", "lanczos"):
        raise ValueError(f"pca: unknown solver {solver!r}")
    if energy is None:
        return top_eigenpairs(matrix, wanted, lanczos=solver == "lanczos")
    wanted = min(size, FIRST_BATCH)
    while True:
        values, vectors = top_eigenpairs(matrix, wanted, lanczos=False)
        if np.cumsum(np.clip(values, 0.0, None) / total)[-1] > energy or wanted == size:
            return values, vectors
        wanted = min(size, 4 * wanted)
