"""LEEP, NCE and N-LEEP: transferability from (pseudo-)source-class probabilities.

- `leep` (Nguyen et al. 2020) and `nce` (Tran et al. 2019) read the checkpoint's own classification head:
  `source_probs` (N, S), rows summing to 1.
- `nleep` (Li et al. 2021) needs only features: it replaces the head by the posteriors of a Gaussian mixture
  fitted to the PCA-reduced features of the target task, then computes LEEP from them.

Targets. `labels` is either N class labels of any hashable kind (gaps and strings allowed; remapped to
0..C-1) or, for multi-label tasks such as the paper's detection/segmentation appendix, a 2-d 0/1 multi-hot
(N, C) array. In the multi-hot case every (sample, label) pair counts as one observation, both in the joint
P(y, z) and in the mean log; a sample with two labels therefore weighs as two samples with one label each.
Columns that are never set are classes that do not occur; a row with no label at all is refused.

Every statistic is computed in float64 whatever the input dtype. Bad input raises `InputError`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse

from .._validate import as_features, as_probabilities, encode_labels
from ..errors import InputError
from .registry import FEATURES, SOURCE_PROBS, register

# scikit-learn's GaussianMixture defaults, which Google's N-LEEP reference code uses unchanged.
MAX_ITER = 100
TOL = 1e-3
REG_COVAR = 1e-6

_EPS = np.finfo(np.float64).eps
# Bound on the float64 buffer of quadratic features built per chunk in the E-step (bytes).
_CHUNK_BYTES = 32 * 2**20


_CONTROLLER = None


def _one_blas_thread():
    """Context manager running BLAS/LAPACK on one thread: for the many small (d, d) products and
    factorisations, where threads only synchronise (and stall badly on a busy machine). The threadpoolctl
    controller is built once, since building one scans every loaded library (milliseconds a time)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


# ----------------------------------------------------------------------------------------------- targets
def _targets(labels, n: int, name: str = "labels") -> tuple[np.ndarray, np.ndarray, int]:
    """Turn `labels` into (sample index, class code) observation pairs; return (rows, codes, C).

    1-d labels give one pair per sample. A 2-d array is read as a 0/1 multi-hot (N, C) matrix and gives
    one pair per set entry; classes (columns) that never occur are dropped, so C counts observed classes.
    """
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: expected N labels or a multi-hot (N, C) array ({error})") from None
    if array.ndim != 2:
        codes, _ = encode_labels(labels, n, name)
        return np.arange(n), codes, int(codes.max()) + 1 if codes.size else 0
    if array.shape[0] != n:
        raise InputError(
            f"{name}: expected {n} rows of multi-hot labels (one per sample), got {array.shape[0]}"
        )
    if array.shape[1] == 0:
        raise InputError(f"{name}: expected a multi-hot (N, C) array with C >= 1, got shape {array.shape}")
    try:
        values = array.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: 2-d labels are read as a 0/1 multi-hot (N, C) array; "
            "pass class labels as a 1-d sequence"
        ) from None
    if not np.isin(values, (0.0, 1.0)).all():
        raise InputError(
            f"{name}: 2-d labels are read as a 0/1 multi-hot (N, C) array and must hold only 0 and 1; "
            "pass class labels as a 1-d sequence"
        )
    hot = values == 1.0
    empty = ~hot.any(axis=1)
    if empty.any():
        raise InputError(
            f"{name}: {int(empty.sum())} row(s) of the multi-hot array have no label (first: row "
            f"{int(empty.argmax())}); expected at least one 1 per row"
        )
    used = hot.any(axis=0)
    rows, columns = np.nonzero(hot)
    codes = (np.cumsum(used) - 1)[columns]  # renumber the observed columns 0..C-1
    return rows, codes.astype(np.int64), int(used.sum())


# ---------------------------------------------------------------------------------------- LEEP and NCE
def _leep_from_theta(theta: np.ndarray, rows: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """LEEP of float64 (N, Z) probabilities `theta` for the observation pairs (rows, codes)."""
    pairs = rows.size
    # joint[y, z] = (1/M) sum over pairs with label y of theta(x)_z, as a sparse (C, N) @ dense (N, Z).
    onehot = scipy.sparse.csr_matrix((np.ones(pairs), (codes, rows)), shape=(n_classes, theta.shape[0]))
    joint = np.asarray(onehot @ theta) / pairs
    marginal = joint.sum(axis=0)
    # A source class that no sample puts any mass on has P(z) = 0: its P(y|z) is undefined but it is
    # always multiplied by theta(x)_z = 0, so set it to 0 instead of dividing 0 by 0.
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    # expected_j = sum_z P(y_j|z) theta(x_j)_z, in chunks of pairs so that memory stays ~(chunk, Z).
    step = max(1, _CHUNK_BYTES // (16 * theta.shape[1]))
    expected = np.concatenate(
        [
            np.einsum("pz,pz->p", theta[rows[i : i + step]], conditional[codes[i : i + step]])
            for i in range(0, pairs, step)
        ]
    )
    # Each term is > 0 in exact arithmetic (some z has theta >= 1/Z and then P(y|z) > 0); the floor only
    # guards the log against underflow.
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


@register(
    "leep",
    needs=SOURCE_PROBS,
    description="Log expected empirical prediction of the source head (mean log, not mean probability)",
    citation="Nguyen et al., LEEP: A New Measure to Evaluate Transferability of Learned Representations, "
    "ICML 2020",
    care="mean LOG of the dummy classifier's probability as defined; source classes with zero mass get "
    "P(y|z)=0 instead of 0/0; float32 row sums checked to 1e-5 and renormalised; labels remapped",
    multilabel=True,
)
def leep(source_probs, labels) -> float:
    """LEEP score of a classification head on a target task (higher is better, always <= 0).

    Parameters
    ----------
    source_probs : array (N, S)
        The checkpoint's softmax outputs theta(x) on the N target samples; rows sum to 1 (within 1e-5).
    labels : N labels of any hashable kind, or a 0/1 multi-hot array (N, C)
        With multi-hot labels every (sample, label) pair is one observation (see the module docstring).

    Returns
    -------
    float
        ``mean_j log sum_z P(y_j|z) theta(x_j)_z`` with the empirical ``P(y, z) = mean_j onehot(y_j) *
        theta(x_j)_z`` and ``P(y|z) = P(y, z) / P(z)``. A single target class gives exactly 0 (then
        P(y|z) = 1 for every z), the value of a perfect predictor; uninformative uniform theta gives
        -H(Y), the mean log of the empirical class prior.
    """
    theta = as_probabilities(source_probs)
    rows, codes, n_classes = _targets(labels, theta.shape[0])
    if n_classes == 1:
        return 0.0
    return _leep_from_theta(theta, rows, codes, n_classes)


@register(
    "nce",
    needs=SOURCE_PROBS,
    description="Negative conditional entropy -H(Y|Z) of the target label given the argmax source class",
    citation="Tran et al., Transferability and Hardness of Supervised Classification Tasks, ICCV 2019",
    care="only observed (target, source) pairs enter the entropy, so unused source classes never take log(0)",
    multilabel=True,
)
def nce(source_probs, labels) -> float:
    """Negative conditional entropy -H(Y|Z), Z = argmax of the source head (higher is better, <= 0).

    Parameters
    ----------
    source_probs : array (N, S)
        Softmax outputs on the N target samples, rows summing to 1 (within 1e-5). Ties in the argmax go
        to the first source class.
    labels : N labels of any hashable kind, or a 0/1 multi-hot array (N, C)
        With multi-hot labels every (sample, label) pair is one observation.

    Returns
    -------
    float
        ``sum_{y,z} P(y, z) log P(y|z)`` over the observed pairs, with empirical counts. 0 when the source
        class determines the target class (in particular with a single target class); ``-H(Y)`` when every
        sample has the same argmax.
    """
    theta = as_probabilities(source_probs)
    rows, codes, n_classes = _targets(labels, theta.shape[0])
    if n_classes == 1:
        return 0.0
    n_sources = theta.shape[1]
    z = theta.argmax(axis=1)[rows]
    pair_code, pair_count = np.unique(codes * n_sources + z, return_counts=True)
    z_of_pair = pair_code % n_sources
    z_count = np.bincount(z, minlength=n_sources)[z_of_pair]
    joint = pair_count / rows.size
    return float(np.sum(joint * np.log(pair_count / z_count)))


# ------------------------------------------------------------------------------------------------- PCA
def _pca(x: np.ndarray, energy: float, *, overwrite: bool = False) -> np.ndarray:
    """Project float64 (N, D) `x` on the leading principal axes keeping `energy` of the variance.

    Same choice of dimension as scikit-learn's ``PCA(energy)``: the fewest components whose cumulated
    explained-variance ratio exceeds `energy` (all non-zero ones when energy == 1). No whitening. Computed
    from the float64 eigendecomposition of the (D, D) scatter matrix, or of the (N, N) Gram matrix when
    D > N, instead of an SVD of the whole (N, D) matrix; only the leading eigenpairs are computed (the total
    variance is the trace). Each axis' sign makes its largest loading positive (as scikit-learn's svd_flip
    does), so the output does not depend on LAPACK's sign choices. With `overwrite`, `x` is centred in place.
    """
    n, dims = x.shape
    centred = x if overwrite else x.copy()
    centred -= x.mean(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
        scatter = centred.T @ centred if dims <= n else centred @ centred.T
    size = scatter.shape[0]
    total = float(np.trace(scatter))
    if not np.isfinite(total):
        raise InputError(
            "features: values so large that their squares overflow float64; rescale the features"
        )
    if not total > 0:
        raise InputError("features: every column is constant; N-LEEP needs features that vary across samples")
    wanted = min(size, 256)  # enough for 80% of the variance of real features; more if not
    while True:
        values, vectors = scipy.linalg.eigh(scatter, subset_by_index=[size - wanted, size - 1], driver="evr")
        values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
        ratios = np.cumsum(values / total)
        if ratios[-1] > energy or wanted == size:
            break
        wanted = min(size, 4 * wanted)
    rank = int((values > values[0] * size * _EPS).sum())
    kept = min(int(np.searchsorted(ratios, energy, side="right")) + 1, rank)
    vectors = vectors[:, :kept]
    if dims > n:
        # Principal axes from the Gram matrix's eigenvectors u: v = X^T u / sqrt(lambda).
        vectors = centred.T @ (vectors / np.sqrt(values[:kept]))
    biggest = np.abs(vectors).argmax(axis=0)
    vectors = vectors * np.sign(vectors[biggest, np.arange(kept)])
    return centred @ vectors


# ------------------------------------------------------------------------------------- Gaussian mixture
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


class _Mixture:
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
        with _one_blas_thread():  # many small products, one per component
            for k in range(self.k):
                lo, hi = bounds[k], bounds[k + 1]
                diff = self.x[rows[lo:hi]] - means[k]
                covariances[k] = (diff.T * resp[lo:hi]) @ diff / nk[k]
                covariances[k].flat[:: self.d + 1] += REG_COVAR
        self.nk, self.means, self.covariances = nk, means, covariances

    def _precisions(self) -> None:
        """Coefficients of the E-step GEMM: log p(x, k) = const_k + [q(x), x] . coef_k."""
        with _one_blas_thread():  # K small (d, d) factorisations
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

        with warnings.catch_warnings(), _one_blas_thread():
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


# -------------------------------------------------------------------------------------------- N-LEEP
def _nleep_inputs(features, labels, pca_energy, components_per_class):
    """Validate N-LEEP's inputs; return (float64 features, owned, rows, codes, C, K).

    `owned` says whether the float64 array is a fresh copy (float32 input, lists) that may be overwritten.
    """
    x = as_features(features)
    owned = not (isinstance(features, np.ndarray) and np.may_share_memory(x, features))
    rows, codes, n_classes = _targets(labels, x.shape[0])
    if isinstance(pca_energy, bool) or not isinstance(pca_energy, (int, float, np.number)):
        raise InputError(f"pca_energy: expected a fraction of variance in (0, 1], got {pca_energy!r}")
    if not 0.0 < float(pca_energy) <= 1.0:
        raise InputError(f"pca_energy: expected a fraction of variance in (0, 1], got {pca_energy!r}")
    if isinstance(components_per_class, bool) or not isinstance(components_per_class, (int, np.integer)):
        raise InputError(f"components_per_class: expected a positive integer, got {components_per_class!r}")
    if components_per_class < 1:
        raise InputError(f"components_per_class: expected a positive integer, got {components_per_class!r}")
    n_components = int(components_per_class) * n_classes
    if n_classes > 1 and n_components > x.shape[0]:
        raise InputError(
            f"features: N-LEEP fits components_per_class x C = {components_per_class} x {n_classes} = "
            f"{n_components} mixture components but got only {x.shape[0]} samples; expected at least as many "
            "samples as components (lower components_per_class)"
        )
    return x, owned, rows, codes, n_classes, n_components


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise InputError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
    return int(seed)


@register(
    "nleep",
    needs=FEATURES,
    description="LEEP with the posteriors of a Gaussian mixture (5 x C components) on PCA-80% features",
    citation="Li et al., Ranking Neural Checkpoints, CVPR 2021",
    care="seeded mixture (same value twice; nleep_spread reports the seed spread); PCA and EM statistics in "
    "float64; more components than samples refused; constant or duplicate columns and D > N handled by PCA; "
    "own EM, same fit as scikit-learn, several times faster",
    multilabel=True,
)
def nleep(features, labels, *, pca_energy=0.8, components_per_class=5, seed=0) -> float:
    """N-LEEP: LEEP computed with a Gaussian mixture's posteriors in place of a classification head.

    Steps (Li et al. 2021, with the scikit-learn defaults of Google's reference code):
    PCA of `features` keeping `pca_energy` of the variance (no whitening); a full-covariance Gaussian
    mixture with K = components_per_class x C components fitted by EM (k-means initialisation seeded by
    `seed`, one initialisation, max_iter=100, tol=1e-3 on the mean log-likelihood, reg_covar=1e-6); its
    posteriors P(v|x) on the same (training) samples used as theta(x) in LEEP: mean log, as `leep`.

    Parameters
    ----------
    features : array (N, D)
        Features of the task's training split, any float dtype (computed in float64).
    labels : N labels of any hashable kind, or a 0/1 multi-hot array (N, C)
        With multi-hot labels every (sample, label) pair is one observation; the mixture is still fitted
        to the N samples once, and C counts the classes that occur.
    pca_energy : float in (0, 1]
        Fraction of the variance kept; 1 keeps every direction of non-zero variance.
    components_per_class : int >= 1
    seed : int
        Seeds the k-means initialisation: the same inputs and seed give the same value. On small tasks the
        value moves with the seed; `nleep_spread` reports that spread.

    Returns
    -------
    float
        The N-LEEP score (<= 0, higher is better).

    Edge cases
    ----------
    - One class: 0.0 without fitting anything (P(y|v) = 1 for every component, as for LEEP).
    - K > N components: `InputError` (as scikit-learn; lower `components_per_class`). K <= N works, also
      with fewer distinct samples than components (empty components keep weight ~0).
    - D > N, constant or duplicate columns: well defined; PCA keeps only directions of non-zero variance
      (computed from the N x N Gram matrix when D > N). Constant columns do not change the value at all.
      Every column constant: `InputError`.
    - Components with fewer samples than PCA dimensions (the usual case: 5 x C components on a few
      thousand images) have singular scatter; reg_covar keeps them proper, as in scikit-learn, and the
      posteriors are then nearly one-hot.
    - A class with one sample is fine.
    """
    x, owned, rows, codes, n_classes, n_components = _nleep_inputs(
        features, labels, pca_energy, components_per_class
    )
    seed = _check_seed(seed)
    if n_classes == 1:
        return 0.0
    reduced = _pca(x, float(pca_energy), overwrite=owned)
    posteriors = _Mixture(reduced, n_components, seed).fit_posteriors()
    return _leep_from_theta(posteriors, rows, codes, n_classes)


def nleep_spread(features, labels, *, seeds=(0, 1, 2, 3, 4), **kwargs) -> np.ndarray:
    """N-LEEP under several mixture seeds: array (len(seeds),), entry i equal to nleep(..., seed=seeds[i]).

    On small tasks the mixture's initialisation moves N-LEEP enough to reorder checkpoints; report e.g.
    the mean and the range of this array rather than a single seed. `kwargs` are `pca_energy` and
    `components_per_class`. The PCA is computed once and shared by all seeds.
    """
    unknown = set(kwargs) - {"pca_energy", "components_per_class"}
    if unknown:
        raise InputError(f"nleep_spread: unexpected argument(s) {sorted(unknown)}")
    energy = kwargs.get("pca_energy", 0.8)
    per_class = kwargs.get("components_per_class", 5)
    x, owned, rows, codes, n_classes, n_components = _nleep_inputs(features, labels, energy, per_class)
    seeds = [_check_seed(seed) for seed in np.atleast_1d(np.asarray(seeds, dtype=object)).tolist()]
    if not seeds:
        raise InputError("seeds: expected at least one seed")
    if n_classes == 1:
        return np.zeros(len(seeds))
    reduced = _pca(x, float(energy), overwrite=owned)
    return np.array(
        [
            _leep_from_theta(_Mixture(reduced, n_components, s).fit_posteriors(), rows, codes, n_classes)
            for s in seeds
        ]
    )
