"""A multi-label bench end to end on a tiny pool: `mosaics:200` (multi-hot labels), three tiny TorchScript CNNs, a
2 x 2 sweep at 16 px with two seeds. The measures that take multi-hot targets get them (LEEP, N-LEEP; LogME in its
regression form), single-label ones are n/a, and the ground truth is the BCE loop's exact-match accuracy, checked by
retraining one run and counting exact matches here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from neucrab import checkpoints, measures
from neucrab.checkpoints.base import at_image_size
from neucrab.cli import main
from neucrab.extract import extract
from neucrab.finetune import Finetuner
from neucrab.tasks import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASK = "mosaics:200"


def tiny_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)).eval()


def test_multilabel_suite_scores_multi_hot_measures_against_exact_match_ground_truth(tmp_path):
    for seed in range(3):
        torch.jit.script(tiny_network(seed)).save(str(tmp_path / f"net{seed}.pt"))
    suite = {"name": "tiny-multilabel", "tasks": [TASK], "measures": ["leep", "nleep", "logme", "knn"],
             "groups": {"g": {"checkpoints": [{"name": f"net{s}", "spec": f"net{s}.pt"} for s in range(3)]}},
             "sweep": {"lrs": [0.2, 0.5], "steps": [30, 120], "batch_size": 16, "image_size": 16, "seeds": 2}}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["bench", str(tmp_path / "suite.json"), "--out", str(out), "--cache-dir", str(cache),
                 "--device", "cpu", "--no-progress"]) == 0
    document = json.loads((out / "results.json").read_text())
    task = load(TASK)
    assert task.multilabel and task.train.labels.ndim == 2
    result = document["groups"]["g"][task.name]
    assert result["scores"]["knn"] == {}  # a single-label measure: n/a on multi-hot labels

    # Scores: the measures on the cached features with the multi-hot labels (LogME regressing each label column).
    for name in ("net0", "net1", "net2"):
        checkpoint = at_image_size(checkpoints.load(str(tmp_path / f"{name}.pt")), 16)
        train = extract(checkpoint, task, "train", cache_dir=cache, progress=False)
        labels = task.train.labels
        assert result["scores"]["leep"][name] == pytest.approx(measures.leep(train.probs, labels))
        assert result["scores"]["nleep"][name] == pytest.approx(measures.nleep(train.features, labels))
        assert result["scores"]["logme"][name] == pytest.approx(measures.logme(train.features, labels,
                                                                               regression=True))

    # Ground truth: exact-match accuracies (multiples of 1 / test images), the mean over the two seeds.
    truth = json.loads((out / "groundtruth" / "g" / f"{task.name.replace(':', '_')}.json").read_text())
    n_test = len(task.test)
    for name, record in truth["seeds"].items():
        for accuracy in record["accuracies"]:
            assert accuracy * n_test == pytest.approx(round(accuracy * n_test))
        assert result["accuracies"][name] == pytest.approx(np.mean(record["accuracies"]))
    # One run retrained here: its accuracy is the share of test images whose every label is predicted right.
    name = max(truth["seeds"], key=lambda n: truth["seeds"][n]["accuracies"][0])
    assert truth["seeds"][name]["accuracies"][0] > 0  # some mosaics fully right: the check below can fail
    best = truth["best"][name]
    tuner = Finetuner(at_image_size(checkpoints.load(str(tmp_path / f"{name}.pt")), 16), task, device="cpu")
    run = tuner.run(lr=best["lr"], steps=best["steps"], batch_size=16, seed=0, return_model=True)
    logits = torch.cat([run.model(tuner.inputs["test"].host(np.arange(i, min(i + 16, n_test))))
                        for i in range(0, n_test, 16)]).detach().numpy()
    exact = float(np.mean(np.all((logits > 0) == (task.test.labels == 1), axis=1)))
    assert run.losses[0] == pytest.approx(np.log(2), abs=1e-6)  # BCE of zero logits
    assert exact == pytest.approx(truth["seeds"][name]["accuracies"][0])

    # The table judges the measures by the bench's Kendall: scipy's tau-b of scores against the ground truth.
    section = document["sections"]["g"]["tasks"][task.name]
    names = sorted(result["accuracies"])
    for measure in ("leep", "nleep", "logme"):
        x = [result["scores"][measure][n] for n in names]
        y = [result["accuracies"][n] for n in names]
        expected = 0.0 if np.ptp(y) == 0 else stats.kendalltau(x, y).statistic
        assert section[measure]["kendall"] == pytest.approx(expected, abs=1e-12)


def test_the_shipped_multilabel_suite_runs_only_measures_that_take_multi_hot_labels():
    from neucrab.bench.suite import load_suite
    from neucrab.measures import REGISTRY

    suite = load_suite("multilabel")
    assert suite.tasks == ["mosaics"] and {"leep", "nleep", "logme"} <= set(suite.measures)
    assert all(REGISTRY[m].multilabel or REGISTRY[m].regression for m in suite.measures)
    assert [len(entries) for entries in suite.groups.values()] == [13, 8, 5]  # Mini-NeuCRaB's pool
