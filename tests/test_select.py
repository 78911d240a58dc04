"""`neucrab select`: successive halving within a budget, on real digits with tiny CNNs, against runs made alone."""

import pytest
import torch
from torch import nn

import neucrab.checkpoints as nc
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.finetune import finetune
from neucrab.select import schedule, select
from neucrab.tasks import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PREPROCESS = nc.Preprocess(size=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


def test_schedule_halves_the_checkpoints_and_doubles_the_steps_within_the_budget():
    assert schedule(4, 800) == [(4, 100), (2, 200)]  # 4 x 100 + 2 x 200 = 800
    assert schedule(5, 900) == [(5, 47), (3, 94), (2, 188)]  # 900 // (5 + 3 x 2 + 2 x 4) = 47
    assert schedule(1, 100) == []
    with pytest.raises(InputError, match="--budget 3"):
        schedule(4, 3)


def test_the_equal_schedule_gives_each_of_the_shortlist_an_equal_share_in_one_round():
    assert schedule(4, 800, "equal") == [(4, 200)]
    assert schedule(3, 100, "equal") == [(3, 33)]  # 100 // 3; the remainder is not spent
    with pytest.raises(InputError, match="--budget 2"):
        schedule(3, 2, "equal")
    with pytest.raises(InputError, match="--schedule thirds: expected one of equal, halving"):
        schedule(3, 100, "thirds")


def test_select_picks_the_best_short_run_and_counts_what_it_trained(tmp_path):
    task = load("digits:300")
    folder = tmp_path / "nets"
    folder.mkdir()
    specs = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 4 + 4 * seed, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                            nn.Flatten(), nn.Linear(4 * (4 + 4 * seed), 5)).eval()
        torch.jit.script(net).save(str(folder / f"net{seed}.pt"))
        specs.append(str(folder / f"net{seed}.pt"))
    chosen = select(specs, task, budget=40, shortlist=2, lr=0.1, image_size=8, cache_dir=tmp_path / "cache",
                    device="cpu", progress=False)
    (first,) = chosen.rounds
    assert first["steps"] == 20 and len(first["accuracies"]) == 2 and chosen.spent_steps == 40
    for name, accuracy in first["accuracies"].items():  # each the accuracy of the same run made alone
        alone = finetune(nc.load(name, preprocess=None), task, lr=0.1, steps=20, batch_size=32, image_size=8,
                         device="cpu")
        assert accuracy == alone.accuracy
    assert chosen.pick == max(first["accuracies"], key=first["accuracies"].get)
    again = select(specs, task, budget=40, shortlist=2, lr=0.1, image_size=8, cache_dir=tmp_path / "cache",
                   device="cpu", progress=False)
    assert again.spent_steps == 0 and again.pick == chosen.pick  # every run from the cache
    assert main(["select", *specs, "--task", "digits:300", "--budget", "40", "--shortlist", "2", "--lr", "0.1",
                 "--schedule", "halving",
                 "--image-size", "8", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--no-progress"]) == 0
