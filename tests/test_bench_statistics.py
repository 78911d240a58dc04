"""The benchmark's statistics, against values worked out by hand or from their definitions."""

import math

import numpy as np
import pytest
from scipy import stats

from neucrab.bench.statistics import _halves, bootstrap_interval, noise_ceiling, sign_test


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_tasks():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.5, 0.2, 5), rng.normal(0.5, 0.2, 80)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    wide, narrow = high - low, np.subtract(*bootstrap_interval(many)[::-1])
    assert narrow < wide
    # For many tasks the percentile interval approaches mean +- 1.96 standard errors.
    error = many.std(ddof=0) / math.sqrt(len(many))
    assert narrow == pytest.approx(2 * 1.96 * error, rel=0.1)
    assert bootstrap_interval([0.3]) is None and bootstrap_interval([0.2, 0.2]) == (0.2, 0.2)


def test_sign_test_counts_and_p_value_by_hand():
    a = {"t1": 0.9, "t2": 0.8, "t3": 0.7, "t4": 0.6, "t5": 0.5, "t6": 0.1}
    b = {"t1": 0.1, "t2": 0.1, "t3": 0.1, "t4": 0.1, "t5": 0.5, "t6": 0.2, "only_b": 1.0}
    result = sign_test(a, b)
    assert (result["wins"], result["losses"], result["ties"], result["tasks"]) == (4, 1, 1, 6)
    # two-sided binomial: P(X <= 1) + P(X >= 4) for X ~ Bin(5, 1/2) = (1 + 5 + 5 + 1) / 32
    assert result["p"] == pytest.approx(12 / 32)
    assert sign_test({"t": 1.0}, {"t": 1.0})["p"] == 1.0


def test_halves_split_the_seeds_once_each():
    assert sorted(_halves(3)) == [((0,), (1, 2)), ((1,), (0, 2)), ((2,), (0, 1))]
    assert len(list(_halves(4))) == 3  # {01|23, 02|13, 03|12}


def test_noise_ceiling_is_one_when_seeds_agree_and_low_when_they_are_noise():
    agree = {f"c{i}": [i / 10, i / 10 + 0.01, i / 10 - 0.01] for i in range(6)}
    ceiling = noise_ceiling(agree)
    assert ceiling["kendall"] == pytest.approx(1.0) and ceiling["weighted_tau"] == pytest.approx(1.0)
    assert ceiling["splits"] == 3
    rng = np.random.default_rng(0)
    noise = {f"c{i}": list(rng.normal(0.5, 0.1, 4)) for i in range(30)}
    assert abs(noise_ceiling(noise)["kendall"]) < 0.2
    assert noise_ceiling({"a": [0.5], "b": [0.6]}) is None and noise_ceiling({"a": [0.5, 0.6]}) is None


def test_noise_ceiling_equals_the_taus_of_its_splits_by_hand():
    seeds = {"a": [0.9, 0.7, 0.8], "b": [0.6, 0.8, 0.7], "c": [0.5, 0.5, 0.4]}
    taus = []
    for first, second in (((0,), (1, 2)), ((1,), (0, 2)), ((2,), (0, 1))):
        x = [np.mean([seeds[n][s] for s in first]) for n in "abc"]
        y = [np.mean([seeds[n][s] for s in second]) for n in "abc"]
        taus.append(stats.kendalltau(x, y).statistic)
    assert noise_ceiling(seeds)["kendall"] == pytest.approx(np.mean(taus))


def test_the_tables_name_the_pairs_still_rising_at_the_longest_run():
    from neucrab.bench.run import _convergence_lines

    document = {"sweep": {"steps": [60, 180]}, "groups": {"g": {"t": {"convergence": {
        "a": {"steps": [60, 180], "rise": 0.05, "noise": 0.01, "converged": False},
        "b": {"steps": [60, 180], "rise": 0.0, "noise": 0.01, "converged": True},
        "c": None}}}}}
    line = _convergence_lines(document)[0]
    assert line.startswith("Convergence: 1 of 2 checkpoint-task pairs were still rising from 60 to 180 steps")
    assert "t 1 of 2: a (+5.0 points, noise 1.0)" in line and "b (" not in line
