"""Leave-one-out k-nearest-neighbour accuracy (Euclidean) of a task's features.

The neighbour search is exact with respect to float64 squared distances computed as sum((x_i - x_j)**2),
yet runs at float32 GEMM speed:

1. Identical rows are merged first (a byte hash of each float64 row), so exact duplicates tie exactly and a
   large group of duplicates costs nothing extra.
2. A blocked float32 GEMM over the upper triangle of the distance matrix (|a|^2 + |b|^2 - 2ab on centred,
   power-of-two-scaled features, fused into one product) proposes the `k + _MARGIN` nearest candidates of
   every point; a block is scanned only for entries below each row's current candidate threshold.
3. float32 is only a filter. float32 is fine for finding neighbours, but its rounding (about D * 2^-24 of
   the squared norms) can swap near-equidistant neighbours and never yields exact ties, so a rigorous bound
   `delta` on |d32 - d64| (GEMM accumulation over D + 2 terms, rounding to float32, float64 rounding of the
   reference) decides per point whether the float32 order of its first k candidates is certain
   (consecutive gaps > 2 * delta). Uncertain points are re-ranked with exact float64 distances; if even the
   kept candidates cannot be proved complete, that point's whole row is recomputed. The result is
   identical to a float64 brute-force search with the tie rules of `knn`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .. import flops
from .._validate import check_count, features_and_labels
from ..errors import InputError
from .registry import FEATURES, register

_BLOCK = 2048  # rows per GEMM block: a 2048 x 2048 float32 block is 16 MiB
_MARGIN = 16  # extra float32 candidates kept per point beyond the k needed
_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53  # unit roundoff of float64


def _blocks(n: int) -> float:
    """Sum over the upper-triangle blocks (I, J >= I) of |I| |J|: the rows of the float32 GEMMs."""
    sizes = [min(_BLOCK, n - start) for start in range(0, n, _BLOCK)]
    return sum(sizes[i] * sizes[j] for i in range(len(sizes)) for j in range(i, len(sizes)))


def _knn_cost(n, d, c, sources, test_n, *, k=1):
    width = -(-(d + 2) // 8) * 8  # augmented rows [x, |x|^2, 1], padded to a multiple of 8
    # hashing rows, centring and norms; blocked float32 GEMM over the upper triangle; candidate selection
    # (one comparison per distance, twice for off-diagonal blocks); votes.
    return 4.0 * n * d + flops.gemm(1, width, _blocks(n)) + 2.0 * n * n + n * (k + 17)


@register(
    "knn",
    needs=FEATURES,
    description="leave-one-out k-nearest-neighbour accuracy (Euclidean, k=1), in [0, 1]",
    citation="Bolya et al., NeurIPS 2021 (kNN baseline); Li et al., CVPR 2021",
    care=(
        "exact float64 neighbour order at float32 speed (float32 GEMM filter with a proved error bound, "
        "float64 re-ranking where the bound cannot separate candidates); exact duplicate rows tie at "
        "distance 0 and are merged first; deterministic ties: distance ties -> lower sample index, vote "
        "ties -> class of the nearest tied neighbour"
    ),
    cost=_knn_cost,
    default=6,
)
def knn(features, labels, *, k: int = 1) -> float:
    """Leave-one-out k-NN accuracy of `features` for `labels`.

    Every sample is classified by a majority vote of its `k` nearest other samples (Euclidean distance; a
    sample is never its own neighbour, but an exact duplicate of it at another index is, at distance 0).

    Tie rules (deterministic, and independent of how classes are named):
      - distance ties: among equidistant samples the one with the lower row index is nearer;
      - vote ties: among the classes with the most votes, the one owning the nearest of the k neighbours wins.

    Parameters
    ----------
    features : array (N, D)
        Features of the task's samples; converted to float64.
    labels : sequence of N hashable labels (at least 2 classes).
    k : int, 1 <= k <= N - 1
        Number of neighbours.

    Returns
    -------
    float in [0, 1]: the fraction of samples whose vote equals their label.

    Cost: O(N^2 D) float32 multiply-adds in blocks of `_BLOCK` rows, O(N (k + D)) extra memory.
    """
    x, codes, n_classes = features_and_labels(features, labels, "knn")
    n = x.shape[0]
    k = check_count(k, "k")
    if k > n - 1:
        raise InputError(f"k: expected at most N - 1 = {n - 1} neighbours (leave-one-out), got {k!r}")
    neighbours = loo_neighbours(x, k)
    predicted = _vote(codes[neighbours], n_classes)
    return float(np.mean(predicted == codes))


def knn_subsamples(features, labels, subsets, *, k: int = 1, spare: int = 15) -> list[float]:
    """`knn(features[s], labels[s], k=k)` for each subset s (sorted distinct row indices), from one neighbour
    search over all rows instead of one per subset (the recommendation's 50 draws cost about one `knn`).

    A row's k nearest others within s are the first k of its nearest others overall that s holds: restricting
    the exact (distance, index) order to s keeps it, and s's renumbering keeps the index order. Each row's
    k + `spare` nearest are searched; a subset in which some row holds fewer than k of them (for an 80%
    subsample and k = 1, 0.2^16 = 7e-12 a row) is scored by `knn` itself, and so is one that is not strictly
    increasing or that `knn` would refuse (one class, k too large). Values equal `knn`'s exactly.
    """
    x, codes, n_classes = features_and_labels(features, labels, "knn")
    n = x.shape[0]
    k = check_count(k, "k")
    subsets = [np.asarray(subset, dtype=np.int64) for subset in subsets]
    if k > n - 1:
        return [knn(x[subset], np.asarray(labels)[subset], k=k) for subset in subsets]
    neighbours = loo_neighbours(x, min(n - 1, k + spare))
    scores = []
    for subset in subsets:
        inside = np.zeros(n, bool)
        inside[subset] = True
        candidates = neighbours[subset]
        held = inside[candidates]
        if (held.sum(axis=1) < k).any() or np.unique(codes[subset]).size < 2 or k > subset.size - 1 \
                or (np.diff(subset) <= 0).any():
            scores.append(knn(x[subset], codes[subset], k=k))
            continue
        if k == 1:  # the nearest held one
            predicted = codes[candidates[np.arange(subset.size), held.argmax(axis=1)]]
        else:  # the first k held, nearest first
            first = np.argsort(~held, axis=1, kind="stable")[:, :k]
            predicted = _vote(codes[np.take_along_axis(candidates, first, axis=1)], n_classes)
        scores.append(float(np.mean(predicted == codes[subset])))
    return scores


def loo_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Return the (N, k) indices of each row's k nearest other rows, nearest first.

    Order: by float64 squared distance sum((x_i - x_j)**2), ties by lower index. Requires 1 <= k < N.
    """
    n = x.shape[0]
    uid, first, counts = _unique_rows(x)
    n_unique = first.size
    width = int(min(k + 1, counts.max()))
    members = _member_table(uid, counts, width)  # (U, width) first members of each unique row, -1 padded

    k_u = min(k, n_unique - 1)  # other unique rows needed per unique row (see _expand)
    if k_u > 0:
        cand, keys = _unique_neighbours(x if n_unique == n else x[first], k_u)
    else:  # every row identical
        cand = np.zeros((n_unique, 0), np.int64)
        keys = np.zeros((n_unique, 0))
    nearest = _expand(members, cand, keys, k + 1, n)  # (U, k + 1) samples, self possibly included

    rows = nearest[uid]  # (N, k + 1)
    not_self = rows != np.arange(n)[:, None]
    pick = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(rows, pick, axis=1)


def _unique_rows(x: np.ndarray):
    """Group identical rows: (uid (N,), first index of each group (U,), group sizes (U,)).

    Groups are numbered in order of first occurrence, so group order agrees with lowest member index.
    -0.0 is mapped to 0.0 (by `+ 0.0`) so that equal values hash equally; a 16-byte BLAKE2 digest of the
    row bytes is the key (a collision has probability ~2^-128).
    """
    negative_zero = np.signbit(x) & (x == 0.0)
    rows = np.ascontiguousarray(x + 0.0 if negative_zero.any() else x)
    lookup: dict[bytes, int] = {}
    uid = np.fromiter(
        (lookup.setdefault(hashlib.blake2b(row, digest_size=16).digest(), len(lookup)) for row in rows),
        dtype=np.int64,
        count=rows.shape[0],
    )
    counts = np.bincount(uid)
    first = np.full(counts.size, rows.shape[0], np.int64)
    np.minimum.at(first, uid, np.arange(rows.shape[0]))
    return uid, first, counts


def _member_table(uid: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """(U, width) table of the lowest `width` sample indices in each group, -1 where a group is smaller."""
    order = np.argsort(uid, kind="stable")  # grouped, ascending sample index within a group
    starts = np.cumsum(counts) - counts
    table = np.full((counts.size, width), -1, np.int64)
    for t in range(width):
        has = counts > t
        table[has, t] = order[starts[has] + t]
    return table


def _unique_neighbours(u: np.ndarray, k: int):
    """For each of the U distinct rows, its k nearest other rows in exact (d64, index) order.

    Returns (cand (U, k) int64, keys (U, k) float64): `keys` increase along a row and are equal only for
    exactly tied float64 distances (they are float32 distances where the order was proved, else float64).
    """
    n_u, dim = u.shape
    # Distances are computed on centred rows scaled by a power of two (exact, order-preserving) so that the
    # largest centred norm is in [1/2, 1): float32 neither overflows nor underflows needlessly. `ref` (the
    # uncentred rows) gives the exact float64 distances, scaled by the same power of two squared.
    big = np.abs(u).max()
    if big > 2.0**400 or big < 2.0**-400:  # keep squares and sums of squares inside float64 range
        u = np.ldexp(u, -np.frexp(big)[1])
    ref = u
    centred = u - u.mean(axis=0)
    sq_norms = np.einsum("ij,ij->i", centred, centred)
    shift = -int(np.frexp(np.sqrt(sq_norms.max()))[1])
    scale2 = 2.0 ** (2 * shift)  # exact factor from squared distances of `ref` to the scaled units
    sq_norms *= scale2
    norms = np.sqrt(sq_norms)

    # |d32 - d64| <= delta_i for every j: float32 GEMM accumulation over the D + 2 terms of the fused
    # product below (gamma), float32 rounding of inputs and norms, float64 rounding of centring and of the
    # reference distance; every term is at most a multiple of (|x_i| + |x_j|)^2.
    gamma = (dim + 2) * _U32 / (1.0 - (dim + 2) * _U32)
    delta = (2.0 * gamma + 16.0 * _U32 + 4.0 * (dim + 8) * _U64) * (norms + norms.max()) ** 2

    left, right = _augmented(centred, 2.0**shift, sq_norms)
    del centred
    keep = min(k + _MARGIN, n_u - 1)
    cd, cv = _float32_candidates(left, right, keep)  # sorted ascending, (U, keep)

    cd64 = cd.astype(np.float64)
    # The float32 order is provably the float64 order when consecutive gaps exceed 2 * delta: among the
    # first k candidates and from the k-th to the (k+1)-th (which exists unless k = U - 1).
    if keep > k or keep == n_u - 1:
        gaps_ok = (np.diff(cd64[:, : k + 1], axis=1) > 2.0 * delta[:, None]).all(axis=1)
    else:  # only k candidates kept of more rows (no margin): membership cannot be proved from float32
        gaps_ok = np.zeros(n_u, bool)
    certain = gaps_ok & (cd64[:, 0] > 2.0 * delta)  # nearest other row provably at distance > 0

    cand = cv[:, :k].copy()
    keys = cd64[:, :k].copy()
    for start in range(0, n_u, 4096):
        rows = np.flatnonzero(~certain[start : start + 4096]) + start
        if rows.size == 0:
            continue
        exact = _exact_sq_distances(ref, rows, cv[rows]) * scale2
        order = np.lexsort((cv[rows], exact), axis=1)
        ordered_v = np.take_along_axis(cv[rows], order, axis=1)
        ordered_d = np.take_along_axis(exact, order, axis=1)
        kth = ordered_d[:, k - 1]
        # Complete unless an unkept row could be within float64 reach of the k-th distance.
        complete = np.ones(rows.size, bool) if keep == n_u - 1 else cd64[rows, keep - 1] - delta[rows] > kth
        cand[rows[complete]] = ordered_v[complete, :k]
        keys[rows[complete]] = ordered_d[complete, :k]
        for row, bound in zip(rows[~complete], kth[~complete] + delta[rows[~complete]]):
            cand[row], keys[row] = _full_row(ref, scale2, left, right, row, bound, k)
    return cand, keys


def _augmented(centred: np.ndarray, scale: float, sq_norms: np.ndarray):
    """float32 (U, D') L, R with L[i] . R[j] = |x_i|^2 + |x_j|^2 - 2 x_i . x_j, for x = centred * scale.

    L = [x, |x|^2, 1], R = [-2x, 1, |x|^2], zero-padded to a multiple of 8 columns: one GEMM per block gives
    squared distances without further passes over the block. `sq_norms` are the float64 |x|^2 (they differ
    from those of the float32 rows by rounding that the error bound covers).
    """
    n, dim = centred.shape
    width = -(-(dim + 2) // 8) * 8
    left = np.zeros((n, width), np.float32)
    right = np.zeros((n, width), np.float32)
    np.multiply(centred, scale, out=left[:, :dim], casting="same_kind")  # scale and round in one pass
    np.multiply(left[:, :dim], -2.0, out=right[:, :dim])  # exact in float32
    left[:, dim], left[:, dim + 1] = sq_norms, 1.0
    right[:, dim], right[:, dim + 1] = 1.0, sq_norms
    return left, right


def _float32_candidates(left: np.ndarray, right: np.ndarray, keep: int):
    """The `keep` smallest float32 squared distances to other rows, via symmetric blocked GEMM.

    Returns (distances (U, keep) float32 sorted ascending, indices (U, keep) int64). Each block (I, J),
    J >= I, is computed once and serves the rows of I and, through its transpose, the rows of J. Once a row
    has a full candidate list, only block entries below its current keep-th distance are merged.
    """
    n = left.shape[0]
    best_d = np.full((n, keep), np.inf, np.float32)
    best_i = np.full((n, keep), -1, np.int64)

    def merge(rows: slice, vals: np.ndarray, idx: np.ndarray) -> None:
        cat_d = np.concatenate([best_d[rows], vals], axis=1)
        cat_i = np.concatenate([best_i[rows], idx], axis=1)
        pos = np.argsort(cat_d, axis=1, kind="stable")[:, :keep]
        best_d[rows] = np.take_along_axis(cat_d, pos, axis=1)
        best_i[rows] = np.take_along_axis(cat_i, pos, axis=1)

    def offer(rows: slice, block: np.ndarray, offset: int, axis: int) -> None:
        """Merge the candidates of `block` for the rows along `axis` (0: block rows, 1: block columns)."""
        tau = best_d[rows, -1]
        if np.isinf(tau).any():  # first contact: take the block's own best
            t = torch.from_numpy(block)
            kk = min(keep, block.shape[1 - axis])
            vals, idx = torch.topk(t, kk, dim=1 - axis, largest=False)
            if axis == 1:
                vals, idx = vals.T, idx.T
            merge(rows, vals.numpy(), idx.numpy() + offset)
            return
        hit = block < (tau[:, None] if axis == 0 else tau[None, :])
        flat = np.flatnonzero(hit)  # much faster than a 2-d nonzero on a sparse mask
        if flat.size == 0:
            return
        value = block.ravel()[flat]
        r, c = np.divmod(flat, block.shape[1])
        if axis == 1:  # group the hits by column
            order = np.argsort(c, kind="stable")
            r, c, value = c[order], r[order], value[order]
        n_rows = block.shape[axis]
        counts = np.bincount(r, minlength=n_rows)
        slot = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
        vals = np.full((n_rows, counts.max()), np.inf, np.float32)
        idx = np.full(vals.shape, -1, np.int64)
        vals[r, slot] = value
        idx[r, slot] = c + offset
        merge(rows, vals, idx)

    for i0 in range(0, n, _BLOCK):
        rows_i = slice(i0, min(n, i0 + _BLOCK))
        for j0 in range(i0, n, _BLOCK):
            rows_j = slice(j0, min(n, j0 + _BLOCK))
            block = left[rows_i] @ right[rows_j].T
            if i0 == j0:
                np.fill_diagonal(block, np.inf)  # never one's own neighbour
            offer(rows_i, block, j0, axis=0)
            if i0 != j0:  # the same block serves the rows of J through its columns
                offer(rows_j, block, i0, axis=1)
    return best_d, best_i


def _exact_sq_distances(ref: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 sum((ref[r] - ref[c])**2) for each r in `rows` against its `cols` (len(rows), m)."""
    out = np.empty(cols.shape)
    budget = 2**22  # elements of differences at a time (32 MiB)
    col_step = max(1, min(cols.shape[1], budget // ref.shape[1]))
    row_step = max(1, budget // (col_step * ref.shape[1]))
    for s in range(0, rows.size, row_step):
        for t in range(0, cols.shape[1], col_step):
            diff = ref[cols[s : s + row_step, t : t + col_step]] - ref[rows[s : s + row_step], None, :]
            out[s : s + row_step, t : t + col_step] = np.einsum("ijk,ijk->ij", diff, diff)
    return out


def _full_row(ref, scale2: float, left, right, row: int, bound: float, k: int):
    """Exact k nearest other rows of one row whose kept candidates could not be proved complete."""
    d32 = (left @ right[row]).astype(np.float64)
    d32[row] = np.inf
    near = np.flatnonzero(d32 <= bound)  # superset of every row within the k-th float64 distance
    exact = _exact_sq_distances(ref, np.array([row]), near[None, :])[0] * scale2
    order = np.lexsort((near, exact))[:k]
    return near[order], exact[order]


def _expand(members: np.ndarray, cand: np.ndarray, keys: np.ndarray, m: int, n: int) -> np.ndarray:
    """For each distinct row u, the first m samples in (distance, index) order, u's own members included.

    Own members sit at distance 0; each candidate row contributes its lowest-index members at its key. A
    sample among the first m lies in u or in one of the k nearest other distinct rows (each of those has a
    member ahead of it otherwise), and only the lowest `width` members of a row can be among them.
    """
    n_u, width = members.shape
    out = np.empty((n_u, m), np.int64)
    step = max(1, 2**20 // (width * (1 + cand.shape[1])))
    for s in range(0, n_u, step):
        own = members[s : s + step]
        others = members[cand[s : s + step]].reshape(own.shape[0], -1)
        idx = np.concatenate([own, others], axis=1)
        key = np.concatenate([np.zeros(own.shape), np.repeat(keys[s : s + step], width, axis=1)], axis=1)
        pad = idx < 0
        idx = np.where(pad, n, idx)
        key[pad] = np.inf
        order = np.lexsort((idx, key), axis=1)[:, :m]
        out[s : s + step] = np.take_along_axis(idx, order, axis=1)
    return out


def _vote(neighbour_codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority class of each row of (N, k) neighbour codes (nearest first); ties -> nearest tied class."""
    n, k = neighbour_codes.shape
    if k == 1:
        return neighbour_codes[:, 0]
    predicted = np.empty(n, np.int64)
    step = max(1, 2**22 // n_classes)  # bound the (rows, C) count table
    for s in range(0, n, step):
        codes = neighbour_codes[s : s + step]
        rows = np.arange(codes.shape[0])[:, None]
        flat = (rows * n_classes + codes).ravel()
        counts = np.bincount(flat, minlength=codes.shape[0] * n_classes).reshape(-1, n_classes)
        votes = counts[rows, codes]  # votes of each neighbour's class
        winner = np.argmax(votes == votes.max(axis=1, keepdims=True), axis=1)  # first = nearest
        predicted[s : s + step] = codes[rows[:, 0], winner]
    return predicted
