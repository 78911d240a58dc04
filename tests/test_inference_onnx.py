"""The onnxruntime copy of torch checkpoints used for extraction on the CPU: same features as PyTorch within 1e-5
of the largest, exported once and found again by content, refused where it would compute something else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neucrab import inference_onnx
from neucrab.checkpoints import load
from neucrab.checkpoints.base import Preprocess, at_image_size
from neucrab.extract import extract
from neucrab.tasks import load as load_task

pytest.importorskip("onnxruntime")
PREPROCESS = Preprocess(size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


class SmallNet(nn.Module):
    """conv-BN-ReLU x 2, depthwise conv, mean pool -> 12 features; linear head -> 5 logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 12, 3, stride=2), nn.BatchNorm2d(12), nn.ReLU(),
                                  nn.Conv2d(12, 12, 3, padding=1, groups=12))
        self.fc = nn.Linear(12, 5)
        with torch.no_grad():
            for bn in (self.body[1], self.body[4]):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


class FrozenBatch(SmallNet):
    """Scales its features by the batch size as a Python number: a trace freezes the traced batch's size."""

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)) * float(x.shape[0]))


@pytest.fixture(scope="module")
def task():
    return load_task("digits:60")


@pytest.fixture
def always_export(monkeypatch):
    """Export whatever PyTorch would take (the default waits for 2 s of forward pass); start each test without
    this process's sessions."""
    monkeypatch.setattr(inference_onnx, "MIN_TORCH_SECONDS", 0.0)
    monkeypatch.setattr(inference_onnx, "_SESSIONS", type(inference_onnx._SESSIONS)())


def relative_difference(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def test_onnxruntime_features_equal_pytorch_within_1e_5(task, tmp_path, always_export):
    checkpoint = load(SmallNet(), preprocess=PREPROCESS, name="small")
    weights = {name: value.clone() for name, value in checkpoint.module.state_dict().items()}
    for split in ("train", "test"):
        fast = extract(checkpoint, task, split, cache_dir=tmp_path, progress=False, batch_size=7)
        plain = extract(checkpoint, task, split, use_cache=False, optimize=False, progress=False, batch_size=7)
        assert relative_difference(fast.features, plain.features) <= 1e-5
        assert relative_difference(fast.probs, plain.probs) <= 1e-5
    # It ran through onnxruntime: one exported file, and this process's session under its key.
    key = inference_onnx.export_key(checkpoint)
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [f"{key}.onnx"]
    assert (key, torch.get_num_threads()) in inference_onnx._SESSIONS
    # Exporting left the network as it was.
    assert not checkpoint.module.training
    assert all(torch.equal(value, weights[name]) for name, value in checkpoint.module.state_dict().items())


def test_the_cached_export_is_used_by_a_new_process_and_a_damaged_one_replaced(task, tmp_path, always_export,
                                                                               monkeypatch):
    checkpoint = load(SmallNet(), preprocess=PREPROCESS, name="small")
    expected = extract(checkpoint, task, "test", use_cache=False, optimize=False, progress=False).features
    extract(checkpoint, task, "test", cache_dir=tmp_path, progress=False)
    path = tmp_path / "onnx" / f"{inference_onnx.export_key(checkpoint)}.onnx"

    def no_export(*args):
        raise AssertionError("exported again")

    inference_onnx._SESSIONS.clear()  # as in a new process
    (tmp_path / next(p.name for p in tmp_path.glob("*.npz"))).unlink()  # the features, not the export
    with monkeypatch.context() as patch:
        patch.setattr(inference_onnx, "_export", no_export)
        again = extract(checkpoint, task, "test", cache_dir=tmp_path, progress=False)
    assert relative_difference(again.features, expected) <= 1e-5
    assert (inference_onnx.export_key(checkpoint), torch.get_num_threads()) in inference_onnx._SESSIONS  # used

    inference_onnx._SESSIONS.clear()
    path.write_bytes(b"not an onnx model")
    for entry in tmp_path.glob("*.npz"):
        entry.unlink()
    replaced = extract(checkpoint, task, "test", cache_dir=tmp_path, progress=False)
    assert relative_difference(replaced.features, expected) <= 1e-5 and path.stat().st_size > 1000
    assert (inference_onnx.export_key(checkpoint), torch.get_num_threads()) in inference_onnx._SESSIONS


def test_export_keys_differ_exactly_when_the_exported_graph_may(tmp_path):
    first = load(SmallNet(seed=0), preprocess=PREPROCESS, name="a")
    key = inference_onnx.export_key(first)
    assert inference_onnx.export_key(load(SmallNet(seed=0), preprocess=PREPROCESS, name="b")) == key  # same content
    assert inference_onnx.export_key(load(SmallNet(seed=1), preprocess=PREPROCESS)) != key  # other weights
    assert inference_onnx.export_key(load(SmallNet(seed=0), preprocess=PREPROCESS, layer="body.3")) != key
    assert inference_onnx.export_key(at_image_size(first, 32)) != key  # traced at another input size


def test_a_graph_that_freezes_the_batch_size_is_refused(task, tmp_path, always_export):
    checkpoint = load(FrozenBatch(), preprocess=PREPROCESS, name="frozen")
    probe = torch.randn(3, 3, 24, 24)
    assert inference_onnx.onnx_forward(checkpoint, probe, rows=100, cache_dir=tmp_path) is None
    fast = extract(checkpoint, task, "test", use_cache=False, progress=False, batch_size=4)
    plain = extract(checkpoint, task, "test", use_cache=False, optimize=False, progress=False, batch_size=4)
    assert relative_difference(fast.features, plain.features) <= 1e-5


def test_small_forward_passes_stay_with_pytorch(tmp_path, monkeypatch):
    monkeypatch.setattr(inference_onnx, "_SESSIONS", type(inference_onnx._SESSIONS)())
    checkpoint = load(SmallNet(), preprocess=PREPROCESS, name="small")
    probe = torch.randn(3, 3, 24, 24)
    assert inference_onnx.onnx_forward(checkpoint, probe, rows=10, cache_dir=tmp_path) is None  # ms of PyTorch
    assert not (tmp_path / "onnx").exists()
    forward = inference_onnx.onnx_forward(checkpoint, probe, rows=10, cache_dir=tmp_path, min_seconds=0.0)
    features, probs = forward(probe)
    with torch.no_grad():
        logits = checkpoint.module(probe)
        expected = checkpoint.module.body(probe).mean(dim=(2, 3))
    assert relative_difference(features, expected.numpy()) <= 1e-5
    assert relative_difference(probs, torch.softmax(logits, dim=1).numpy()) <= 1e-5
    # Once exported, even a small forward pass uses the copy (its cost is paid).
    assert inference_onnx.onnx_forward(checkpoint, probe, rows=10, cache_dir=tmp_path) is not None
