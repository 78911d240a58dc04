"""PARC: Pairwise Annotation Representation Comparison (Bolya et al., NeurIPS 2021).

"Scalable Diverse Model Selection for Accessible Transfer Learning". Follows the authors' code
(dbolya/parc, `methods.py`: `PARC`, `feature_reduce`): PCA to 32 dimensions, StandardScaler, the
dissimilarity matrices 1 - corrcoef of the samples' features and of their one-hot labels, and the Spearman
correlation of the two upper triangles, times 100.
"""

from __future__ import annotations

import numpy as np

from .. import flops
from .._validate import check_count, check_seed, features_and_labels
from ..errors import InputError
from .pca import pca
from .registry import FEATURES, register

N_DIMS = 32  # the authors' PCA dimension ("PARC f=32")
MAX_SAMPLES = 4000  # probe-set budget: 4000 samples -> ~8.0e6 pairs (the authors' benchmark uses 500)


def _parc_cost(n, d, c, sources, test_n, *, dims=32, max_samples=4000):
    m = min(n, max_samples)  # probe set
    s = min(m, d)
    k = min(dims, s)
    reduce = m * d + (flops.gemm(d, m, d) if d <= m else flops.gemm(m, d, m) + flops.gemm(d, m, k))
    reduce += flops.top_eigenpairs(s, k, dense=s <= 256 or k >= s // 4) + flops.gemm(m, d, k) + 2.0 * m * k
    pairs = m * (m - 1) / 2
    # row-centred unit scores; 1 - correlation for every pair (upper-triangle blocks); same-class flags;
    # two sorts for the rank-sum and the searches.
    return reduce + 4.0 * m * k + flops.gemm(1, k, pairs) + pairs + flops.sort(pairs) + 2.0 * pairs


@register(
    "parc",
    needs=FEATURES,
    description="Spearman correlation (x100) between the samples' feature dissimilarities (1 - Pearson, "
    "after PCA to 32 dims) and label dissimilarities, in [-100, 100]",
    citation="Bolya et al., NeurIPS 2021 (Scalable Diverse Model Selection for Accessible Transfer Learning)",
    care=(
        "N x N dissimilarities are quadratic: above 4000 samples a seeded, class-balanced probe set of 4000 "
        "is drawn (the authors use probe sets of 500), bounding time and memory (~8e6 pairs); exact PCA "
        "with sklearn's sign convention (the row correlations depend on it); ties get average ranks; "
        "features of rank < 2 are refused"
    ),
    cost=_parc_cost,
)
def parc(features, labels, *, n_dims: int = N_DIMS, max_samples: int = MAX_SAMPLES, seed: int = 0) -> float:
    """PARC score of `features` for `labels` (higher = better), in [-100, 100].

    Steps (as the authors' code, on a probe set of at most `max_samples` samples):
      1. PCA of the features to k = min(n_dims, rank) components (exact, centred, no whitening; each
         component's largest-magnitude loading made positive, sklearn's convention), then each component
         standardised to unit variance (sklearn's StandardScaler).
         Deviation: the reference asks for min(n_dims, N, D) components, so when the rank is lower (D < 32
         with a constant or duplicated column, or D > N) it keeps all-zero score columns, which shift every
         row's mean in step 2 and change the score; null directions are dropped here.
      2. Feature dissimilarity of samples i < j: 1 - Pearson correlation of their k standardised scores
         (a sample whose k scores are all equal has correlation 0 with every other sample).
      3. Label dissimilarity: 1 - Pearson correlation of one-hot labels, which is 0 for a same-class pair
         and C / (C - 1) otherwise, so only "different class" matters for ranks. Deviation: it is used
         exactly; the reference's np.corrcoef returns 0 or ~2.2e-16 for same-class pairs (and, for some C,
         two values for different-class pairs), rounding noise that its Spearman ranks as real differences
         (a shift of about 1 point on small probe sets).
      4. Score = 100 * Spearman correlation (average ranks for ties) of the two over all pairs i < j,
         the authors' scale.

    Probe set: when N > max_samples, a deterministic class-balanced subsample is drawn with
    numpy.random.default_rng(seed): classes are filled as evenly as possible (the authors' fixed-budget
    sampler), two samples of a class at a time so that even a budget below the number of classes keeps
    same-class pairs. The choice depends only on which samples share a class, never on class names. PCA is
    fitted on the probe set, as in the authors' code.

    Parameters
    ----------
    features : array (N, D), converted to float64.
    labels : sequence of N hashable labels (at least 2 classes, one of them with 2 or more samples).
    n_dims : int >= 2, PCA dimension (default 32).
    max_samples : int >= 2, probe-set budget (default 4000).
    seed : int in [0, 2**32), seed of the probe-set draw (used only when N > max_samples).

    Returns
    -------
    float in [-100, 100]; 0.0 if every feature dissimilarity is equal (no ordering to correlate).

    Raises InputError when the features have fewer than 2 linearly independent directions, or no class
    has two samples. Cost for m = min(N, max_samples): O(m D min(m, D) + m^2 log m) time, O(m^2) memory.
    """
    x, codes, _ = features_and_labels(features, labels, "parc")
    n_dims = check_count(n_dims, "n_dims", minimum=2)
    max_samples = check_count(max_samples, "max_samples", minimum=2)
    seed = check_seed(seed)
    if x.shape[0] > max_samples:
        chosen = _probe_set(codes, max_samples, seed)
        x, codes = x[chosen], codes[chosen]
    if np.bincount(codes).max() < 2:
        raise InputError("labels: PARC needs at least one class with two or more samples (a same-class pair)")

    # Signed (the row correlations see the signs), and computed exactly as PARC always has (unit_axes).
    scores = pca(x, min(n_dims, *x.shape), solver="lanczos", unit_axes=True)
    if scores.shape[1] < 2:
        raise InputError(
            f"features: PARC needs at least 2 linearly independent feature directions, got {scores.shape[1]}"
        )
    scores /= scores.std(axis=0)  # StandardScaler (the scores are already centred)
    dissimilarity = _upper_triangle_dissimilarity(scores)
    different = _upper_triangle_different(codes)
    return 100.0 * _spearman_with_binary(dissimilarity, different)


def _probe_set(codes: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced probe set of `budget` samples (see `parc`)."""
    n = codes.size
    perm = np.random.default_rng(seed).permutation(n)
    grouped = np.argsort(codes[perm], kind="stable")  # positions in perm, by class, in perm order
    counts = np.bincount(codes)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(n) - starts  # rank of grouped[s] within its class
    pair_head = grouped[starts + (rank // 2) * 2]  # perm position of the first sample of its pair
    # Fill level by level (pairs of the 1st and 2nd, then 3rd and 4th, ... sample of every class), pairs
    # in order of appearance in the random permutation.
    order = np.lexsort((rank, pair_head, rank // 2))[:budget]
    return np.sort(perm[grouped[order]])


def _upper_triangle_dissimilarity(scores: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between rows i < j of `scores`, row-major upper triangle, float64."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    unit = np.divide(centred, norms[:, None], out=np.zeros_like(centred), where=norms[:, None] > 0)
    m = unit.shape[0]
    out = np.empty(m * (m - 1) // 2)
    pos = 0
    for start in range(0, m, 512):  # row blocks keep the temporary at 512 x m
        block = 1.0 - unit[start : start + 512] @ unit[start:].T
        for r in range(block.shape[0]):
            row = block[r, r + 1 :]
            out[pos : pos + row.size] = row
            pos += row.size
    return out


def _upper_triangle_different(codes: np.ndarray) -> np.ndarray:
    """Boolean "different class" for pairs i < j, in the same order as `_upper_triangle_dissimilarity`."""
    m = codes.size
    out = np.empty(m * (m - 1) // 2, bool)
    pos = 0
    for i in range(m - 1):
        row = codes[i + 1 :] != codes[i]
        out[pos : pos + row.size] = row
        pos += row.size
    return out


def _spearman_with_binary(values: np.ndarray, flag: np.ndarray) -> float:
    """Spearman correlation between `values` (average ranks for ties) and a two-valued `flag`.

    The ranks of a two-valued variable are an increasing affine function of it, so this is the Pearson
    correlation between rank(values) and flag. The rank sum of the flagged values is the Mann-Whitney count
    from two sorted halves (np.sort is several times faster than an argsort of all pairs).
    """
    total = values.size
    positives = int(np.count_nonzero(flag))
    if positives == 0 or positives == total:
        raise InputError("labels: PARC needs both same-class and different-class pairs")
    ordered = np.sort(values)
    boundary = ordered[1:] != ordered[:-1]
    n_groups = 1 + int(np.count_nonzero(boundary))
    if n_groups == 1:
        return 0.0  # every dissimilarity equal: no ordering, no correlation
    tie_term = 0.0
    if n_groups < total:  # sum over tie groups of (t^3 - t)
        starts = np.flatnonzero(np.concatenate([[True], boundary]))
        sizes = np.diff(np.append(starts, total)).astype(np.float64)
        tie_term = float(np.sum(sizes**3 - sizes))
    del ordered, boundary
    flagged = np.sort(values[flag])
    others = np.sort(values[~flag])
    # Average rank of each flagged value = its average rank among flagged values + (others below it)
    # + (others equal to it) / 2.
    below = np.searchsorted(others, flagged, side="left").sum()
    upto = np.searchsorted(others, flagged, side="right").sum()
    rank_sum = positives * (positives + 1) / 2.0 + (float(below) + float(upto)) / 2.0
    rank_ss = ((float(total) ** 3 - total) - tie_term) / 12.0  # sum (r - mean r)^2
    covariance = rank_sum - positives * (total + 1) / 2.0  # sum (r - mean r)(flag - mean flag)
    flag_ss = positives * (total - positives) / total
    return float(np.clip(covariance / np.sqrt(rank_ss * flag_ss), -1.0, 1.0))
