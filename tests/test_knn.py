"""Leave-one-out k-NN accuracy: hand-worked cases, tie rules, and an exact brute-force comparison."""

import importlib

import numpy as np
import pytest

from neucrab.errors import InputError
from neucrab.measures import REGISTRY, knn

knn_module = importlib.import_module("neucrab.measures.knn")


def brute_force_neighbours(x, k):
    """Independent float64 loop: order by squared distance, then by index; never oneself."""
    n = len(x)
    out = np.empty((n, k), dtype=int)
    for i in range(n):
        d = ((x - x[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        out[i] = np.lexsort((np.arange(n), d))[:k]
    return out


def brute_force_accuracy(x, labels, k):
    """Majority vote; among the classes with the most votes, the one met first (nearest) wins."""
    labels = np.asarray(labels)
    correct = 0
    for i, row in enumerate(brute_force_neighbours(x, k)):
        votes = [labels[j] for j in row]
        best = max(votes.count(v) for v in votes)
        winner = next(v for v in votes if votes.count(v) == best)
        correct += winner == labels[i]
    return correct / len(x)


def test_hand_worked_one_nn():
    # 1-d points 0, 1, 3, 4, 10 labelled a a b b a: each of the first four has a same-class nearest neighbour;
    # 10's nearest is 4 (class b), so 4 of 5 are right.
    x = np.array([[0.0], [1.0], [3.0], [4.0], [10.0]])
    assert knn(x, ["a", "a", "b", "b", "a"]) == pytest.approx(4 / 5)
    # k = 3: 0 -> {1, 3, 4} = a b b -> b (wrong); 1 -> {0, 3, 4} -> b (wrong); 3 -> {4, 1, 0} = b a a -> a
    # (wrong); 4 -> {3, 1, 0} -> a (wrong); 10 -> {4, 3, 1} = b b a -> b (wrong).
    assert knn(x, ["a", "a", "b", "b", "a"], k=3) == 0.0


def test_distance_tie_goes_to_lower_index():
    # x = 2 is equidistant from x = 0 (index 0) and x = 4 (index 2): index 0 wins, so x = 2 is predicted p.
    # 0 -> 2 (q, wrong); 2 -> tie -> index 0 (p, wrong); 4 -> 2 (q, right); 10 -> 4 (q, wrong): 1/4.
    assert knn([[0.0], [2.0], [4.0], [10.0]], ["p", "q", "q", "p"]) == pytest.approx(1 / 4)
    # Same geometry, rows reordered so that the tie partner with the lower index is now the q at x = 4:
    # 4 -> 2 (q, right); 2 -> tie -> index 0 (x = 4, q, right); 0 -> 2 (q, wrong); 10 -> 4 (q, wrong): 2/4.
    assert knn([[4.0], [2.0], [0.0], [10.0]], ["q", "q", "p", "p"]) == pytest.approx(2 / 4)


def test_vote_tie_goes_to_nearest_class_and_ignores_label_names():
    # k = 2 on 0, 1, 3, 7 labelled a a b b: 0 -> {1 a, 3 b} tie -> nearest a (right); 1 -> {0 a, 3 b} -> a
    # (right); 3 -> {1 a, 0 a} -> a (wrong); 7 -> {3 b, 1 a} tie -> b (right): 3/4. A "smallest label wins"
    # rule would give 2/4 here and 3/4 after swapping the names; the nearest rule gives 3/4 both ways.
    x = [[0.0], [1.0], [3.0], [7.0]]
    assert knn(x, ["a", "a", "b", "b"], k=2) == pytest.approx(3 / 4)
    assert knn(x, ["b", "b", "a", "a"], k=2) == pytest.approx(3 / 4)


def test_duplicate_points_are_neighbours_at_distance_zero():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    labels = ["a", "a", "b", "b", "b"]
    # 1-NN: 0 -> duplicate 1 (a, right); 1 -> duplicate 0 (a, right); 2 -> duplicate 0 (a, wrong);
    # 3 -> 4 (b, right); 4 -> 3 (b, right).
    assert knn(x, labels) == pytest.approx(4 / 5)
    # k = 2: 0 -> {1 a, 2 b} tie -> a; 1 -> {0 a, 2 b} -> a; 2 -> {0, 1} -> a (wrong);
    # 3 -> {4 b, 0 a} tie -> b; 4 -> {3 b, 0 a} -> b.
    assert knn(x, labels, k=2) == pytest.approx(4 / 5)
    # -0.0 equals 0.0: rows 0 and 1 are duplicates, so each is the other's nearest neighbour (all 4 wrong).
    signed = np.array([[0.0, 1.0], [-0.0, 1.0], [3.0, 3.0], [3.0, 3.1]])
    assert knn(signed, [0, 1, 1, 0]) == 0.0


def test_k_larger_than_smallest_class():
    # Class A: 2 points near 0; class B: 10 points at 100..109. With k = 5 an A point has 1 A neighbour and
    # 4 B neighbours and is outvoted; every B point has 9 B points nearer than any A point.
    x = np.concatenate([[0.0, 0.1], np.arange(100.0, 110.0)])[:, None]
    labels = ["A", "A"] + ["B"] * 10
    assert knn(x, labels, k=5) == pytest.approx(10 / 12)
    assert knn(x, labels, k=1) == 1.0


def test_singleton_class_is_always_wrong():
    # The only sample of a class has no other member to vote for it.
    x = [[0.0], [1.0], [2.0], [50.0]]
    assert knn(x, [0, 0, 0, 1]) == pytest.approx(3 / 4)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(5, 70)), int(rng.integers(1, 6))
    kind = seed % 3
    if kind == 0:
        x = rng.standard_normal((n, dim))
    elif kind == 1:  # integer grid: many exact distance ties and duplicates
        x = rng.integers(0, 3, (n, dim)).astype(float)
    else:  # a few distinct points repeated, shifted far from the origin (dyadic, so exact)
        x = rng.integers(-2, 3, (n // 3 + 1, dim))[rng.integers(0, n // 3 + 1, n)] * 0.25 + 1e3
    labels = rng.integers(0, 3, n)
    labels[:2] = [0, 1]
    for k in {1, 2, min(5, n - 1), n - 1}:
        assert np.array_equal(knn_module.loo_neighbours(x, k), brute_force_neighbours(x, k))
        assert knn(x, labels, k=k) == pytest.approx(brute_force_accuracy(x, labels, k))


@pytest.mark.parametrize(("block", "margin"), [(3, 0), (4, 1), (7, 2)])
def test_blocked_search_and_fallbacks_match_brute_force(monkeypatch, block, margin):
    # Tiny blocks and candidate margins force every path: cross-block merging, float64 re-ranking and the
    # full-row fallback when the kept float32 candidates cannot be proved complete.
    monkeypatch.setattr(knn_module, "_BLOCK", block)
    monkeypatch.setattr(knn_module, "_MARGIN", margin)
    rng = np.random.default_rng(block)
    for x in (
        rng.standard_normal((40, 3)),
        rng.integers(0, 3, (40, 2)).astype(float),
        np.repeat(rng.standard_normal((6, 4)), 7, axis=0)[rng.permutation(42)],
    ):
        for k in (1, 3, 8):
            assert np.array_equal(knn_module.loo_neighbours(x, k), brute_force_neighbours(x, k))


def test_large_duplicate_group_and_all_identical_rows():
    x = np.zeros((300, 5))
    x[:150, 0] = 1.0
    labels = np.array([0, 1] * 150)
    # Every sample's nearest is the lowest-index other copy of its point: index 1 (class 1) for index 0
    # (wrong) and index 0 (class 0) for 1..149 (right for the 74 even ones); likewise index 151 for 150
    # (wrong) and index 150 (class 0) for 151..299 (right for the 74 even ones).
    assert knn(x, labels) == pytest.approx((74 + 74) / 300)
    # All rows identical: the k nearest of i are the k lowest other indices. Labels 0 0 1 1 1 1, k = 2:
    # 0 -> {1, 2} = 0 1 tie -> 0 (right); 1 -> {0, 2} -> 0 (right); 2..5 -> {0, 1} = 0 0 (wrong): 2/6.
    assert knn(np.ones((6, 3)), [0, 0, 1, 1, 1, 1], k=2) == pytest.approx(2 / 6)


def test_float32_input_scale_and_offset_do_not_change_neighbours():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 6))
    labels = rng.integers(0, 4, 80)
    expected = brute_force_accuracy(x, labels, 3)
    assert knn(x.astype(np.float32).astype(np.float64), labels, k=3) == knn(x.astype(np.float32), labels, k=3)
    assert knn(x * 2.0**-300, labels, k=3) == pytest.approx(expected)  # power-of-two scaling is exact
    assert knn(x * 2.0**200 + 0.0, labels, k=3) == pytest.approx(expected)


def test_columns_and_shapes_edge_cases():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 4))
    labels = rng.integers(0, 3, 30)
    base = knn(x, labels, k=3)
    # A constant column adds 0 to every distance.
    assert knn(np.column_stack([x, np.full(30, 7.0)]), labels, k=3) == base
    # A duplicated column weights that coordinate twice: still exact.
    dup = np.column_stack([x, x[:, 0]])
    assert knn(dup, labels, k=3) == pytest.approx(brute_force_accuracy(dup, labels, 3))
    # D > N.
    wide = rng.standard_normal((10, 50))
    wide_labels = rng.integers(0, 2, 10)
    assert knn(wide, wide_labels, k=3) == pytest.approx(brute_force_accuracy(wide, wide_labels, 3))


@pytest.mark.parametrize(
    ("features", "labels", "k"),
    [
        (np.zeros((0, 3)), [], 1),  # empty
        (np.zeros((3, 0)), [0, 1, 0], 1),  # no columns
        (np.zeros((4, 2)), [0, 1, 0], 1),  # N mismatch
        ([[0.0], [np.nan], [1.0]], [0, 1, 0], 1),  # NaN
        ([[0.0], [np.inf], [1.0]], [0, 1, 0], 1),  # inf
        ([[0.0], [1.0], [2.0]], ["a", "a", "a"], 1),  # one class
        ([[0.0], [1.0], [2.0]], [0, 1, 0], 0),  # k < 1
        ([[0.0], [1.0], [2.0]], [0, 1, 0], 3),  # k > N - 1
        ([[0.0], [1.0], [2.0]], [0, 1, 0], 1.5),  # non-integer k
        ([[0.0], [1.0], [2.0]], [0, 1, 0], True),  # bool is not a count
        (np.zeros(3), [0, 1, 0], 1),  # 1-d features
    ],
)
def test_bad_input_raises(features, labels, k):
    with pytest.raises(InputError):
        knn(features, labels, k=k)


def test_registered():
    info = REGISTRY["knn"]
    assert info.function is knn and info.needs == "features" and info.care


def test_k_uses_the_shared_count_rule():
    with pytest.raises(InputError) as caught:
        knn([[0.0], [1.0], [2.0]], [0, 1, 0], k=1.5)
    assert str(caught.value) == "k: expected a positive integer, got 1.5"


@pytest.mark.parametrize("k, spare", [(1, 31), (3, 31), (1, 0), (2, 1)])
def test_subsample_scores_equal_brute_force_on_each_subsample(k, spare):
    """One neighbour search serves every subsample: the values are brute force's on each subsample, with ties,
    duplicates and (spare 0-1) rows whose kept candidates the subsample lacks, scored by knn itself."""
    rng = np.random.default_rng(k + spare)
    x = rng.integers(0, 3, (120, 4)).astype(float)  # a grid: many distance ties and duplicate rows
    labels = rng.integers(0, 3, 120)
    subsets = [np.sort(rng.choice(120, size, replace=False)) for size in (96, 96, 60, 119)]
    got = knn_module.knn_subsamples(x, labels, subsets, k=k, spare=spare)
    assert got == [brute_force_accuracy(x[s], labels[s], k) for s in subsets]


def test_subsamples_knn_would_refuse_are_refused_alike():
    x, labels = np.arange(12.0)[:, None], np.array([0, 1] * 6)
    with pytest.raises(InputError, match="class"):
        knn_module.knn_subsamples(x, labels, [np.arange(0, 12, 2)])  # one class only
    unsorted = np.array([5, 1, 2, 3, 0, 7])
    assert knn_module.knn_subsamples(x, labels, [unsorted]) == [knn(x[unsorted], labels[unsorted])]
