"""neucrab.evaluate against values worked out by hand (paper section 2.3)."""

import itertools
import math

import numpy as np
import pytest

from neucrab import InputError, evaluate

SCORES = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}
ACCURACIES = {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.3}


def test_recall_and_rel_by_hand():
    result = evaluate(SCORES, ACCURACIES)
    # Top-1 by score is "a" (0.5); the best checkpoint is "b" (0.9).
    assert result["recall@1"] == 0.0
    assert result["rel@1"] == pytest.approx(0.5 / 0.9)
    # Top-3 is a, b, c: contains b.
    assert result["recall@3"] == 1.0
    assert result["rel@3"] == 1.0


def test_kendall_by_hand():
    # Pairs (score order a>b>c>d): ab discordant, ac, ad, bc, bd concordant, cd discordant: (4 - 2) / 6.
    assert evaluate(SCORES, ACCURACIES)["kendall"] == pytest.approx(1 / 3)


def test_pearson_from_formula():
    x = np.array([3.0, 2.0, 1.0, 0.0])
    y = np.array([0.5, 0.9, 0.1, 0.3])
    dx, dy = x - x.mean(), y - y.mean()
    expected = (dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum())
    assert evaluate(SCORES, ACCURACIES)["pearson"] == pytest.approx(expected)


def _weighted_tau_by_definition(x, y):
    """Vigna's weighted tau without ties: hyperbolic additive weights 1/(r+1) on the ranks by decreasing
    importance, averaged over ranking by x and by y (scipy's weightedtau defaults)."""

    def one_way(order_by):
        rank = np.empty(len(order_by), dtype=int)
        rank[np.argsort(-order_by)] = np.arange(len(order_by))
        numerator = denominator = 0.0
        for i, j in itertools.combinations(range(len(x)), 2):
            weight = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
            numerator += weight * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            denominator += weight
        return numerator / denominator

    return (one_way(x) + one_way(y)) / 2


def test_weighted_tau_from_definition():
    x = np.array([3.0, 2.0, 1.0, 0.0])
    y = np.array([0.5, 0.9, 0.1, 0.3])
    assert evaluate(SCORES, ACCURACIES)["weighted_tau"] == pytest.approx(_weighted_tau_by_definition(x, y))


def test_perfect_and_reversed_rankings():
    accuracies = {"a": 0.9, "b": 0.7, "c": 0.4}
    perfect = evaluate({"a": 10.0, "b": 5.0, "c": 1.0}, accuracies)
    assert [perfect[key] for key in ("recall@1", "rel@1", "recall@3", "rel@3")] == [1.0, 1.0, 1.0, 1.0]
    assert perfect["kendall"] == pytest.approx(1.0) and perfect["weighted_tau"] == pytest.approx(1.0)
    reversed_ = evaluate({"a": 1.0, "b": 5.0, "c": 10.0}, accuracies)
    assert reversed_["recall@1"] == 0.0 and reversed_["rel@1"] == pytest.approx(0.4 / 0.9)
    assert reversed_["kendall"] == pytest.approx(-1.0) and reversed_["weighted_tau"] == pytest.approx(-1.0)


def test_custom_ks_and_constant_scores():
    result = evaluate({"a": 1.0, "b": 1.0}, {"a": 0.2, "b": 0.8}, ks=(1, 2))
    # Constant scores carry no ranking information: correlations are 0, and ties keep the input order.
    assert result["pearson"] == 0.0 and result["kendall"] == 0.0
    assert result["recall@1"] == 0.0 and result["recall@2"] == 1.0


@pytest.mark.parametrize(
    "scores, accuracies, message",
    [
        ({"a": 1.0}, {"a": 0.5, "b": 0.6}, "no score"),
        ({"a": 1.0, "b": 2.0, "z": 0.0}, {"a": 0.5, "b": 0.6}, "no ground truth"),
        ({"a": 1.0}, {"a": 0.5}, "at least 2"),
        ({"a": float("nan"), "b": 1.0}, {"a": 0.5, "b": 0.6}, "non-finite"),
        ([1.0, 2.0], [0.5, 0.6], "dicts"),
    ],
)
def test_bad_input(scores, accuracies, message):
    with pytest.raises(InputError, match=message):
        evaluate(scores, accuracies)
