"""The built-in example: its committed ground truth, the check of a recommendation against it, and the
`neucrab select` command the terminal suggests."""

import json
import shlex

import numpy as np
import pytest
from scipy.stats import kendalltau

from neucrab.cells import Row
from neucrab.cli import _select_command, build_parser
from neucrab.example import GROUNDTRUTH, GROUNDTRUTH_COMMAND, check_against_groundtruth, example_pool
from neucrab.ranking import Ranking
from neucrab.recommend import RECOMMENDED


def committed():
    return json.loads(GROUNDTRUTH.read_text())


def test_the_committed_ground_truth_covers_the_example_pool_with_its_protocol():
    document = committed()
    _, names = example_pool()
    assert document["task"] == "digits:400" and sorted(document["accuracies"]) == sorted(names)
    for name in names:
        assert document["settings"][name] == {"batch_size": 32, "image_size": 64, "seed": 0}
        assert {(run["lr"], run["steps"]) for run in document["runs"][name]} == {
            (lr, steps) for lr in (0.003, 0.01, 0.03) for steps in (60, 180)}
        seeds = document["seeds"][name]
        assert seeds["seeds"] == [0, 1, 2]
        # the ground truth is the mean over the three seeds of the best configuration
        assert document["accuracies"][name] == pytest.approx(np.mean(seeds["accuracies"]))
    assert "--seeds 3" in GROUNDTRUTH_COMMAND and "--example" in GROUNDTRUTH_COMMAND


def ranking_with(recommended: dict) -> Ranking:
    rows = [Row(name, scores={RECOMMENDED: value, "knn": value}) for name, value in recommended.items()]
    rows.sort(key=lambda row: -row.scores[RECOMMENDED])
    return Ranking("digits:400", [RECOMMENDED, "knn"], rows)


def test_the_check_places_the_pick_by_its_fine_tuning_accuracy():
    truth = committed()["accuracies"]
    by_truth = sorted(truth, key=truth.get, reverse=True)
    # a recommendation in exactly the ground truth's order: the pick is the best, every rank correlation is 1
    scores = {name: -i for i, name in enumerate(by_truth)}
    check = check_against_groundtruth(ranking_with(scores))
    assert check["pick"] == by_truth[0] and check["pick_place"] == 1 and check["best"][0] == by_truth[0]
    assert check["best"] == [n for n in truth if truth[n] == max(truth.values())]
    assert check["measures"][RECOMMENDED]["recall@1"] == 1.0
    expected = kendalltau([scores[n] for n in by_truth], [truth[n] for n in by_truth]).statistic  # tau-b: ties
    assert check["measures"][RECOMMENDED]["kendall"] == pytest.approx(expected)
    # exactly backwards: the pick is the worst by fine-tuning; Rel@1 is its accuracy over the best's
    check = check_against_groundtruth(ranking_with({name: i for i, name in enumerate(by_truth)}))
    assert check["pick"] == by_truth[-1] and check["pick_place"] == len(truth)  # the worst accuracy is unique
    assert check["measures"][RECOMMENDED]["rel@1"] == pytest.approx(truth[by_truth[-1]] / truth[by_truth[0]])


def test_the_suggested_select_command_parses_back_to_the_same_pool_and_task():
    parser = build_parser()
    args = parser.parse_args(["rank", "a.onnx", "b c.pt", "--pool", "my pool", "--task", "digits:200",
                              "--image-size", "32"])
    command = _select_command(args, 3).replace("STEPS", "100")
    again = parser.parse_args(shlex.split(command)[1:])
    assert (again.command, again.checkpoints, again.pool, again.task) == ("select", ["a.onnx", "b c.pt"],
                                                                         ["my pool"], "digits:200")
    assert (again.image_size, again.shortlist, again.budget) == (32, 3, 100)
    example = parser.parse_args(["rank", "--example"])
    assert parser.parse_args(shlex.split(_select_command(example, 2).replace("STEPS", "9"))[1:]).example
