"""Ground truth over seeds: the grid swept at one seed, the best configuration rerun at the others, the mean and
spread, the curve that judges convergence, and the run cache shared by it all (real digits, a tiny CNN, CPU)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

import neucrab.checkpoints as nc
from neucrab.finetune import Finetuner, finetune
from neucrab.groundtruth import GroundTruth, groundtruth, to_csv, to_json
from neucrab.tasks import load

PREPROCESS = nc.Preprocess(size=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load("digits:300")


def tiny_checkpoint():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                            nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    return nc.load(network, preprocess=PREPROCESS, name="tiny")


def test_the_best_configuration_is_rerun_at_each_seed_and_averaged(tmp_path, digits, monkeypatch):
    result = groundtruth(tiny_checkpoint(), digits, lrs=(0.05, 0.2), steps=(6, 12), batch_size=32, seeds=3,
                         cache_dir=tmp_path, device="cpu")
    assert result.seeds == [0, 1, 2]
    assert result.seed_accuracies[0] == result.best_accuracy  # the sweep's own seed
    for seed, accuracy in zip(result.seeds[1:], result.seed_accuracies[1:]):  # each rerun, trained on its own
        alone = finetune(tiny_checkpoint(), digits, lr=result.best_lr, steps=result.best_steps, batch_size=32,
                         seed=seed, device="cpu")
        assert accuracy == alone.accuracy
    assert result.accuracy == pytest.approx(statistics.mean(result.seed_accuracies))
    assert result.accuracy_std == pytest.approx(statistics.stdev(result.seed_accuracies))
    assert sorted(result.curve) == [6, 12] and result.curve[result.best_steps] == result.seed_accuracies

    rise = statistics.mean(result.curve[12]) - statistics.mean(result.curve[6])
    noise = max(statistics.stdev(result.curve[12]), 1 / len(digits.test))
    convergence = result.convergence
    assert convergence["steps"] == [6, 12] and convergence["converged"] == (rise <= noise)
    assert convergence["rise"] == pytest.approx(rise) and convergence["noise"] == pytest.approx(noise)

    trained = []
    monkeypatch.setattr(Finetuner, "run", lambda self, **kwargs: trained.append(kwargs))
    again = groundtruth(tiny_checkpoint(), digits, lrs=(0.05, 0.2), steps=(6, 12), batch_size=32, seeds=3,
                        cache_dir=tmp_path, device="cpu")
    assert not trained and again.seed_accuracies == result.seed_accuracies  # all from the run cache

    document = json.loads(to_json("digits:300", {"tiny": result}, {}))
    assert document["accuracies"]["tiny"] == result.accuracy
    assert document["seeds"]["tiny"]["accuracies"] == result.seed_accuracies
    assert to_csv("digits:300", {"tiny": result}).splitlines()[1] == f"digits:300,tiny,{result.accuracy!r}"


def test_one_seed_keeps_the_sweeps_best_as_the_ground_truth():
    single = GroundTruth(checkpoint="c", task="t", best_accuracy=0.8, best_lr=0.1, best_steps=10)
    assert single.accuracy == 0.8 and single.accuracy_std is None and single.convergence is None
    diverged = GroundTruth(checkpoint="c", task="t", best_accuracy=0.8, best_lr=0.1, best_steps=10, seeds=[0, 1],
                           seed_accuracies=[0.8, None])
    assert diverged.accuracy == 0.8 and diverged.accuracy_std is None
