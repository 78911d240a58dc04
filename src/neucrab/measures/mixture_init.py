"""What both Gaussian-mixture EMs share (numpy `mixture`, torch `mixture_torch`): scikit-learn's settings, its
k-means initialisation and its convergence warning."""

from __future__ import annotations

import warnings

import numpy as np

from ..threads import one_blas_thread

# scikit-learn's GaussianMixture defaults, which Google's N-LEEP reference code uses unchanged.
MAX_ITER = 100
TOL = 1e-3
REG_COVAR = 1e-6


def kmeans_labels(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """scikit-learn's GaussianMixture initialisation: the labels of a seeded KMeans(n_init=1)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), one_blas_thread():
        # Fewer distinct points than clusters: k-means says so; empty components are handled by the EM.
        # One BLAS thread: k-means++ makes K skinny products where threads only synchronise (Lloyd's
        # iterations already run one BLAS thread per OpenMP worker); same labels either way.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=n_components, n_init=1, random_state=seed).fit(x).labels_


def warn_not_converged() -> None:
    from sklearn.exceptions import ConvergenceWarning

    warnings.warn(
        f"nleep: the Gaussian mixture did not converge in {MAX_ITER} EM iterations (tol {TOL}); "
        "using the last iterate, as scikit-learn does",
        ConvergenceWarning,
        stacklevel=4,
    )
