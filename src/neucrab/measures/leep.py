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

import numpy as np
import scipy.sparse

from .. import flops
from .._validate import as_features, as_probabilities, check_count, check_fraction, check_seed, encode_labels
from ..errors import InputError
from .mixture import MAX_ITER, mixture_posteriors
from .pca import pca
from .registry import FEATURES, SOURCE_PROBS, register

# Bound on the float64 buffer of (pair, source) products built per chunk by LEEP (bytes).
_CHUNK_BYTES = 32 * 2**20


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


def _leep_cost(n, d, c, sources, test_n):
    s = flops.need_sources("leep", sources)
    # rows checked and renormalised (2 N S); joint P(y, z) as a sparse one-hot product (2 N S); P(z), P(y|z)
    # (2 C S); sum_z P(y_j|z) theta_jz (2 N S); log and mean (2 N).
    return 6.0 * n * s + 2.0 * c * s + 2.0 * n


@register(
    "leep",
    needs=SOURCE_PROBS,
    description="Log expected empirical prediction of the source head (mean log, not mean probability)",
    citation="Nguyen et al., LEEP: A New Measure to Evaluate Transferability of Learned Representations, "
    "ICML 2020",
    care="mean LOG of the dummy classifier's probability as defined; source classes with zero mass get "
    "P(y|z)=0 instead of 0/0; float32 row sums checked to 1e-5 and renormalised; labels remapped",
    multilabel=True,
    cost=_leep_cost,
    default=7,
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


def _nce_cost(n, d, c, sources, test_n):
    s = flops.need_sources("nce", sources)
    # rows checked and renormalised (2 N S); argmax over sources (N S); sort the (y, z) pair codes; entropy
    # of the observed pairs (at most N terms, 4 each).
    return 3.0 * n * s + flops.sort(n) + 4.0 * n


@register(
    "nce",
    needs=SOURCE_PROBS,
    description="Negative conditional entropy -H(Y|Z) of the target label given the argmax source class",
    citation="Tran et al., Transferability and Hardness of Supervised Classification Tasks, ICCV 2019",
    care="only observed (target, source) pairs enter the entropy, so unused source classes never take log(0)",
    multilabel=True,
    cost=_nce_cost,
    default=8,
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


# -------------------------------------------------------------------------------------------- N-LEEP
def _nleep_inputs(features, labels, pca_energy, components_per_class):
    """Validate N-LEEP's inputs; return (float64 features, owned, rows, codes, C, K, pca_energy).

    `owned` says whether the float64 array is a fresh copy (float32 input, lists) that may be overwritten.
    """
    x = as_features(features)
    owned = not (isinstance(features, np.ndarray) and np.may_share_memory(x, features))
    rows, codes, n_classes = _targets(labels, x.shape[0])
    pca_energy = check_fraction(pca_energy, "pca_energy")
    components_per_class = check_count(components_per_class, "components_per_class")
    n_components = int(components_per_class) * n_classes
    if n_classes > 1 and n_components > x.shape[0]:
        raise InputError(
            f"features: N-LEEP fits components_per_class x C = {components_per_class} x {n_classes} = "
            f"{n_components} mixture components but got only {x.shape[0]} samples; expected at least as many "
            "samples as components (lower components_per_class)"
        )
    return x, owned, rows, codes, n_classes, n_components, pca_energy


def _reduce(x: np.ndarray, energy: float, owned: bool) -> np.ndarray:
    """N-LEEP's PCA: scikit-learn's PCA(energy) scores with its sign convention (k-means sees the signs)."""
    # The whole eigendecomposition: LAPACK's divide and conquer is several times faster than its subset
    # solver on a 1,280 x 1,280 scatter (0.4 s against 3 s here), and no eigenvalue can be missed.
    reduced = pca(x, energy=energy, overwrite=owned, solver="full")
    if reduced.shape[1] == 0:
        raise InputError("features: every column is constant; N-LEEP needs features that vary across samples")
    return reduced


def _nleep_cost(n, d, c, sources, test_n, *, reduced_dims=None, iterations=MAX_ITER, kmeans_iterations=300,
                components_per_class=5):
    k = min(n, d) if reduced_dims is None else reduced_dims  # dimension kept by PCA (80% of the variance)
    m = components_per_class * c  # mixture components
    t = k * (k + 1) / 2 + k  # quadratic features [x_i x_j (i <= j), x]: one E-step GEMM column each
    kmeans = kmeans_iterations * (flops.gemm(n, k, m) + 3.0 * n * m)  # distances, argmin, centres
    e_step = n * t + flops.gemm(n, t, m) + 4.0 * n * m  # features, log-densities, log-sum-exp
    # M-step on the sparse posteriors (~1 component per sample): means and scatter 2 N k^2; precisions from
    # a Cholesky factor, its inverse and L^-T L^-1 per component.
    m_step = 2.0 * n * k + flops.gemm(n, k, k) + m * (2.0 * flops.cholesky(k) + flops.gemm(k, k, k))
    leep = 4.0 * n * m + 2.0 * c * m + 2.0 * n  # LEEP on the (N, K) posteriors
    return flops.pca(n, d, k) + kmeans + m_step + iterations * (e_step + m_step) + e_step + leep


@register(
    "nleep",
    needs=FEATURES,
    description="LEEP with the posteriors of a Gaussian mixture (5 x C components) on PCA-80% features",
    citation="Li et al., Ranking Neural Checkpoints, CVPR 2021",
    care="seeded mixture (same value twice; nleep_spread reports the seed spread); PCA and EM statistics in "
    "float64; more components than samples refused; constant or duplicate columns and D > N handled by PCA; "
    "own EM (numpy, or torch float64 on a CUDA GPU), same fit as scikit-learn, over ten times faster",
    multilabel=True,
    cost=_nleep_cost,
    default=0,
)
def nleep(features, labels, *, pca_energy=0.8, components_per_class=5, seed=0) -> float:
    """N-LEEP: LEEP computed with a Gaussian mixture's posteriors in place of a classification head.

    Steps (Li et al. 2021, with the scikit-learn defaults of Google's reference code):
    PCA of `features` keeping `pca_energy` of the variance (no whitening); a full-covariance Gaussian
    mixture with K = components_per_class x C components fitted by EM (k-means initialisation seeded by
    `seed`, one initialisation, max_iter=100, tol=1e-3 on the mean log-likelihood, reg_covar=1e-6); its
    posteriors P(v|x) on the same (training) samples used as theta(x) in LEEP: mean log, as `leep`.
    The stop is the reference's, not EM's fixed point: on scikit-learn's digits (raw pixels, 1,000 images, 2 x C
    components) running EM on to tol=1e-9 moves the score by 2.5% (by 0.3% on the example pool's RapidOCR
    features, by nothing on the others: with 5 x C components EM usually reaches its fixed point first).
    The EM runs on the GPU (torch, float64) when torch sees CUDA, else on the CPU; the same fit either way
    (`neucrab.measures.mixture`).

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
    seed : int in [0, 2**32)
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
    x, owned, rows, codes, n_classes, n_components, energy = _nleep_inputs(
        features, labels, pca_energy, components_per_class
    )
    seed = check_seed(seed)
    if n_classes == 1:
        return 0.0
    posteriors = mixture_posteriors(_reduce(x, energy, owned), n_components, seed)
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
    x, owned, rows, codes, n_classes, n_components, energy = _nleep_inputs(features, labels, energy, per_class)
    seeds = [check_seed(seed) for seed in np.atleast_1d(np.asarray(seeds, dtype=object)).tolist()]
    if not seeds:
        raise InputError("seeds: expected at least one seed")
    if n_classes == 1:
        return np.zeros(len(seeds))
    reduced = _reduce(x, energy, owned)
    return np.array(
        [
            _leep_from_theta(mixture_posteriors(reduced, n_components, s), rows, codes, n_classes)
            for s in seeds
        ]
    )
