"""What both Gaussian-mixture EMs share (numpy `mixture`, torch `mixture_torch`): scikit-learn's settings, its
k-means initialisation and its convergence warning."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..threads import one_blas_thread

# scikit-learn's GaussianMixture defaults, which Google's N-LEEP reference code uses unchanged.
MAX_ITER = 100
TOL = 1e-3
REG_COVAR = 1e-6
# From this many rows k-means++'s candidate products run as two column blocks on two threads: 500 centres at
# 20,000 x 74 took 0.66 s of products on one thread and 0.32 s on two.
SPLIT_ROWS = 8192


def kmeans_labels(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """scikit-learn's GaussianMixture initialisation: the labels of a seeded KMeans(n_init=1), its k-means++
    centres picked by `kmeans_plusplus_indices` (the same picks, about twice as fast)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), one_blas_thread():
        # Fewer distinct points than clusters: k-means says so; empty components are handled by the EM.
        # One BLAS thread: k-means++ makes K skinny products where threads only synchronise (Lloyd's
        # iterations already run one BLAS thread per OpenMP worker); same labels either way.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            init = x[kmeans_plusplus_indices(x, n_components, seed)]
        except Exception:  # anything unforeseen in the replica: scikit-learn picks them itself
            init = "k-means++"
        # KMeans subtracts the mean from x and from `init` alike: the centres it starts from are the picked
        # rows of its centred x, as with its own k-means++.
        return KMeans(n_clusters=n_components, init=init, n_init=1, random_state=seed).fit(x).labels_


def kmeans_plusplus_indices(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """The rows scikit-learn's KMeans(n_clusters, n_init=1, random_state=seed).fit(x) picks as k-means++ centres
    (sklearn.cluster._kmeans._kmeans_plusplus on its centred x, unit weights, 2 + log K trials a centre).

    The same random draws and the same arithmetic, step by step: each candidate's squared distances are
    -2 c . x + |c|^2 + |x|^2 clipped at 0, and the candidates' products with x are the same dot products of
    74-odd terms, taken against a contiguous copy of x's transpose; scikit-learn's strided transpose made
    BLAS repack all of x for every centre (2.4 ms against 1.2 ms a centre at 20,000 x 74, one thread).
    `tests/test_leep.py` checks the picks and labels against scikit-learn's own.
    """
    from sklearn.utils.extmath import row_norms

    x = np.array(x, dtype=np.float64, order="C")
    x -= x.mean(axis=0)  # as KMeans.fit does before picking
    n = x.shape[0]
    norms = row_norms(x, squared=True)
    weights = np.ones(n)
    random_state = np.random.RandomState(seed)
    trials = 2 + int(np.log(n_clusters))
    indices = np.empty(n_clusters, dtype=int)
    indices[0] = random_state.choice(n, p=weights / weights.sum())
    first = x[indices[:1]]
    closest = _squared_distances(first @ x.T, first, norms)  # (1, n); the first as scikit-learn computes it
    potential = closest @ weights
    threads = _product_threads(n)
    with ThreadPoolExecutor(threads) as pool:
        product = _column_blocks(np.ascontiguousarray(x.T), pool, threads)
        for c in range(1, n_clusters):
            draws = random_state.uniform(size=trials) * potential
            candidates = np.searchsorted(np.cumsum(weights * closest), draws)
            np.clip(candidates, None, closest.size - 1, out=candidates)
            rows = x[candidates]
            distances = _squared_distances(product(rows), rows, norms)
            np.minimum(closest, distances, out=distances)
            potentials = distances @ weights.reshape(-1, 1)
            best = np.argmin(potentials)
            potential = potentials[best]
            closest = distances[best]
            indices[c] = candidates[best]
    return indices


def _product_threads(n: int) -> int:
    """Threads for k-means++'s candidate products: two from SPLIT_ROWS rows on when two CPUs are available."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if n >= SPLIT_ROWS and available >= 2 else 1


def _column_blocks(transposed: np.ndarray, pool: ThreadPoolExecutor, count: int):
    """A function rows -> rows @ transposed, whose `count` column blocks are computed on the pool's threads.
    Every entry is the same dot product of one row and one column either way, so the result equals a single
    product's bit for bit (`tests/test_leep.py` checks the picks against scikit-learn's)."""
    if count == 1:
        return lambda rows: rows @ transposed
    bounds = np.linspace(0, transposed.shape[1], count + 1).astype(int)
    blocks = [np.ascontiguousarray(transposed[:, start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]

    def product(rows: np.ndarray) -> np.ndarray:
        out = np.empty((rows.shape[0], transposed.shape[1]))
        list(pool.map(lambda i: np.matmul(rows, blocks[i], out=out[:, bounds[i]:bounds[i + 1]]), range(count)))
        return out

    return product


def _squared_distances(products: np.ndarray, rows: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """scikit-learn's _euclidean_distances(rows, x, Y_norm_squared=norms, squared=True), float64, from the
    products rows @ x.T (overwritten)."""
    distances = products
    distances *= -2  # exact, as scikit-learn's -2 * product
    distances += np.einsum("ij,ij->i", rows, rows)[:, None]
    distances += norms[None, :]
    np.maximum(distances, 0, out=distances)
    return distances


def warn_not_converged() -> None:
    from sklearn.exceptions import ConvergenceWarning

    warnings.warn(
        f"nleep: the Gaussian mixture did not converge in {MAX_ITER} EM iterations (tol {TOL}); "
        "using the last iterate, as scikit-learn does",
        ConvergenceWarning,
        stacklevel=4,
    )
