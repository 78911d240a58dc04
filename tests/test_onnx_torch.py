"""Fine-tuning ONNX checkpoints through onnx2torch (neucrab.checkpoints.onnx_torch): the converted network gives
onnxruntime's features, trains, and feeds the ground truth and the fine-tuning measures.

Expectations are worked out independently: onnxruntime's own outputs for the real RapidOCR classifier, and the
PyTorch module's own activations for networks the tests export to ONNX themselves. Tolerances as in
test_checkpoints.py: the same float32 network run by onnxruntime and by PyTorch differs by float rounding
(~1e-6 relative); rtol=1e-4 with atol=1e-5 still catches a wrong layer, op or pooling (>1e-2).
"""

from __future__ import annotations

import glob
import math
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neucrab.checkpoints as nc
from neucrab.checkpoints.onnx_torch import OnnxTorchCheckpoint, to_torch
from neucrab.errors import InputError
from neucrab.finetune import Finetuner, finetune
from neucrab.groundtruth import groundtruth
from neucrab.measures.finetune_measures import finetune_1ep

RTOL, ATOL = 1e-4, 1e-5
RAPIDOCR_PRE = nc.Preprocess(size=48, mean=(0.5,) * 3, std=(0.5,) * 3)
RAPIDOCR = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")]  # onnx2torch's Slice


def orientation_classifier() -> str:
    found = glob.glob(str(Path(sysconfig.get_paths()["purelib"]) / RAPIDOCR))
    # rapidocr-onnxruntime is part of neucrab's `examples` extra, which the tests install: missing is a failure.
    assert found, f"packaged checkpoint not installed: {RAPIDOCR}; pip install -e '.[all]'"
    return found[0]


@pytest.fixture(scope="module")
def rapidocr():
    """RapidOCR's text-orientation classifier (the `examples` extra installs it) as loaded by neucrab."""
    return nc.load(orientation_classifier(), preprocess=RAPIDOCR_PRE)


def _one_line(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ----------------------------------------------------------------------------------------- RapidOCR (real)
@pytest.mark.parametrize("shape", [(4, 3, 48, 192), (3, 3, 32, 32)])
def test_converted_rapidocr_gives_onnxruntime_features(rapidocr, shape):
    # 48x192: the classifier's own input. 32x32: its last MaxPool then sees a 1-row map, where onnxruntime
    # pools the part of the window inside the map (PyTorch alone would refuse): the conversion does the same.
    converted = to_torch(rapidocr)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    expected_features, expected_probs = rapidocr.forward(x)  # onnxruntime
    features, probs = converted.forward(torch.from_numpy(x))
    assert features.shape == expected_features.shape == (shape[0], 200)
    np.testing.assert_allclose(features, expected_features, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, expected_probs, rtol=RTOL, atol=ATOL)
    # And the feature module a fine-tuning run trains (no inference mode, gradients flowing) gives the same.
    module = converted.feature_module()
    trained_path = module(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
    assert trained_path.requires_grad
    np.testing.assert_allclose(trained_path.detach().numpy(), expected_features, rtol=RTOL, atol=ATOL)


def test_converted_checkpoint_keeps_name_and_preprocessing_and_a_marked_fingerprint(rapidocr):
    converted = to_torch(rapidocr)
    assert isinstance(converted, OnnxTorchCheckpoint) and converted.has_head
    assert converted.name == rapidocr.name and converted.preprocess == rapidocr.preprocess
    assert converted.onnx_fingerprint == rapidocr.fingerprint != converted.fingerprint  # feature caches apart
    again = to_torch(nc.load(orientation_classifier(), preprocess=RAPIDOCR_PRE))
    assert again.fingerprint == converted.fingerprint  # stable across loads: the run cache finds its runs
    other_layer = to_torch(nc.load(orientation_classifier(), preprocess=RAPIDOCR_PRE,
                                   layer="pool2d_9.tmp_0"))
    assert other_layer.fingerprint != converted.fingerprint


def test_converted_rapidocr_fine_tunes_its_whole_network(rapidocr):
    first_conv = next(m for m in to_torch(rapidocr).module.modules() if isinstance(m, nn.Conv2d))
    before = first_conv.weight.detach().clone()
    result = finetune(rapidocr, "digits:100", lr=0.05, steps=20, batch_size=32, image_size=32, device="cpu",
                      return_model=True)
    assert not result.diverged and result.steps_run == 20 and result.image_size == 32
    # A zero-initialised head gives the 10 classes equal logits: the first loss is exactly ln(10), and an
    # untrained network would keep it there. Measured: the last 5 losses average ~1.2 (0.52 ln 10).
    assert result.losses[0] == pytest.approx(math.log(10), abs=1e-6)
    assert np.mean(result.losses[-5:]) < 0.75 * math.log(10)
    trained_conv = next(m for m in result.model.features.modules() if isinstance(m, nn.Conv2d))
    assert not torch.equal(trained_conv.weight.detach(), before)  # the backbone itself trained
    assert torch.equal(first_conv.weight.detach(), before)  # on a copy: the loaded checkpoint is untouched
    # Tensors the graph stores outside Conv/BN (the SE blocks' biases, added after their Conv) train too.
    stored = {name: p for name, p in to_torch(rapidocr).module.named_parameters() if name.startswith("initial")}
    trained = dict(result.model.features.body.named_parameters())
    assert stored and any(not torch.equal(trained[name].detach(), p.detach()) for name, p in stored.items())


def test_groundtruth_and_finetune_measures_take_an_onnx_spec(tmp_path):
    spec = orientation_classifier()
    result = groundtruth(spec, "digits:100", lrs=(0.05,), steps=(2, 4), batch_size=32, image_size=32,
                         cache_dir=tmp_path, device="cpu")
    assert result.best_accuracy is not None and 0.0 <= result.best_accuracy <= 1.0
    assert [(run["steps"], run["cached"]) for run in result.runs] == [(2, False), (4, False)]
    assert result.best_accuracy == max(run["accuracy"] for run in result.runs)
    again = groundtruth(spec, "digits:100", lrs=(0.05,), steps=(2, 4), batch_size=32, image_size=32,
                        cache_dir=tmp_path, device="cpu")  # a fresh load: same fingerprint, runs cached
    assert [run["cached"] for run in again.runs] == [True, True] and again.best_accuracy == result.best_accuracy
    score = finetune_1ep(spec, "digits:100", image_size=32, cache_dir=tmp_path, device="cpu")
    assert 0.0 <= score <= 1.0


# --------------------------------------------------------------------------- networks exported by the tests
def _tiny(seed: int = 0) -> nn.Sequential:
    """conv-BN-ReLU, strided conv-ReLU, global average pool, flatten: 16 features; a 5-class head."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 5))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def _export(model: nn.Module, path, size: int, spatial_axes: bool):
    axes = {0: "batch", 2: "height", 3: "width"} if spatial_axes else {0: "batch"}
    torch.onnx.export(model, (torch.randn(2, 3, size, size),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": axes, "y": {0: "batch"}})
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = _tiny()
    return {"model": model, "dynamic": _export(model, folder / "dynamic.onnx", 16, True),
            "fixed": _export(model, folder / "fixed.onnx", 16, False)}


def test_converted_export_gives_the_torch_modules_pre_head_activations(tiny):
    model = tiny["model"]
    x = torch.randn(3, 3, 12, 20)
    converted = to_torch(nc.load(tiny["dynamic"]))
    features, probs = converted.forward(x)
    with torch.no_grad():
        expected = model[:7](x)  # the input of the Linear head
        expected_probs = torch.softmax(model(x), dim=1)
    np.testing.assert_allclose(features, expected.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, expected_probs.numpy(), rtol=RTOL, atol=ATOL)


def test_converted_export_with_a_fixed_input_size_resizes_as_the_onnx_path_does(tiny):
    model = tiny["model"]
    x = torch.randn(2, 3, 12, 12)
    converted = to_torch(nc.load(tiny["fixed"]))
    features, _ = converted.forward(x)
    with torch.no_grad():
        expected = model[:7](F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    np.testing.assert_allclose(features, expected.numpy(), rtol=RTOL, atol=ATOL)


def test_converted_export_reads_a_named_layer_pooled(tiny):
    import onnx

    relu = [n.name for n in onnx.load(tiny["dynamic"]).graph.node if n.op_type == "Relu"][0]  # the first ReLU
    x = torch.randn(2, 3, 10, 10)
    features, _ = to_torch(nc.load(tiny["dynamic"], layer=relu)).forward(x)
    with torch.no_grad():
        expected = tiny["model"][:3](x).mean(dim=(2, 3))
    np.testing.assert_allclose(features, expected.numpy(), rtol=RTOL, atol=ATOL)


class _FixedFlatten(nn.Module):
    def forward(self, x):
        return x.reshape(-1, 16 * 4 * 4)  # exported as a Reshape to the constant shape (-1, 256)


def test_graph_that_only_takes_its_own_size_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), _FixedFlatten(),
                          nn.Linear(256, 5)).eval()
    path = _export(model, tmp_path / "fixed_reshape.onnx", 8, True)
    # (PyTorch exports opset 20, whose Reshape onnx2torch has no converter for: converted at opset 17.)
    checkpoint = nc.load(path, preprocess=nc.Preprocess(size=8, crop_pct=1.0))
    Finetuner(checkpoint, "digits:100", image_size=8, device="cpu")  # its own size: accepted
    with pytest.raises(InputError) as excinfo:
        Finetuner(checkpoint, "digits:100", image_size=16, device="cpu")
    _one_line(excinfo, checkpoint.name, "onnx2torch", "feature rows")


def test_missing_onnx2torch_is_one_line_with_the_install_command(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # makes `import onnx2torch` raise ImportError
    checkpoint = nc.load(tiny["dynamic"], preprocess=nc.Preprocess(size=8, crop_pct=1.0))
    with pytest.raises(InputError) as excinfo:
        finetune(checkpoint, "digits:100", lr=0.1, steps=1, device="cpu")
    _one_line(excinfo, "pip install onnx2torch", "neucrab[checkpoints]")


def test_conversion_that_computes_other_features_is_refused(tiny, monkeypatch):
    import neucrab.checkpoints.onnx_torch as onnx_torch

    real_pool = onnx_torch.pool
    monkeypatch.setattr(onnx_torch, "pool", lambda output, where: 1.01 * real_pool(output, where))  # 1% off
    with pytest.raises(InputError) as excinfo:
        to_torch(nc.load(tiny["dynamic"], preprocess=nc.Preprocess(size=8, crop_pct=1.0)))
    _one_line(excinfo, "onnx2torch", "other features than onnxruntime")
