"""Fine-tuning ONNX checkpoints: the ONNX graph converted to a PyTorch network by `onnx2torch`.

onnxruntime cannot train, so `to_torch(onnx_checkpoint)` re-reads the checkpoint's file (checking its bytes
are still the ones loaded), converts the graph with onnx2torch into a torch.fx GraphModule and returns an
`OnnxTorchCheckpoint` (a `TorchCheckpoint`) that computes what the ONNX checkpoint computes:

- features: the graph cut so that its output is the ONNX checkpoint's `feature_tensor` (the input of the final
  Gemm/MatMul, or the named `layer`), pooled as the ONNX path pools it (mean over H, W of a map, over T of a
  sequence, else flattened per sample); probabilities: softmax of the classifier's output, as there.
- inputs: the same `preprocess`; a model exported with a fixed spatial size gets its batch resized (bilinear)
  to that size first, as the ONNX path does. Other sizes run as they are: convolutions and global pooling
  take any size large enough, a fixed Reshape does not (`check_input_size` then gives an InputError).
- MaxPool: onnxruntime computes a pooled size of 1 where the input is a little smaller than the window
  ((size + pads - window) / stride + 1 with C's truncation toward zero: a 1-row map, window 2, stride 2
  gives 1 row, the maximum over the part of the window inside the map), where PyTorch refuses (0 rows).
  The converted MaxPool2d does as onnxruntime does (it pads that end with -inf), so a network such as
  RapidOCR's orientation classifier (48x192 inputs) runs on 32x32 images as it does under onnxruntime.
- weights: convolutions, batch norms and linear layers become torch modules with trainable parameters; other
  stored tensors (onnx2torch keeps them as buffers) become trainable parameters when they are floating point
  with more than one element (biases added after a Conv, MatMul weights), while scalars (the 3 and 6 of a
  hard-swish written out as Add/Clip/Div, epsilons) stay constants. Weights stored as Constant nodes (as
  Paddle's exporter does) are made initializers first, which onnx2torch needs for Conv and Gemm.
- identity: the same name; the fingerprint is the ONNX checkpoint's combined with a conversion marker, so the
  ground-truth run cache of an ONNX checkpoint stays stable across loads while the feature cache never mixes
  onnxruntime features with the converted network's (equal only to float rounding).

The features agree with onnxruntime's to float32 rounding (~1e-6 relative; the tests check rtol 1e-4).
"""

from __future__ import annotations

import math
from operator import getitem

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.utils import _pair

from ..errors import InputError
from ._common import fingerprint, sha256_file
from .features import FeatureModule, pool
from .onnx_model import prune_to
from .torch_module import TorchCheckpoint

CONVERSION_VERSION = 1  # bump when the conversion changes what the network computes: cached runs become stale
FALLBACK_OPSET = 17  # see _convert_at_older_opset
INSTALL_HINT = "pip install onnx2torch (or pip install 'neucrab[checkpoints]')"


class OnnxGraphFeatures(FeatureModule):
    """The converted graph as a feature module: `body` (input -> feature tensor) and, when the ONNX model has
    a classifier, `full` (input -> (feature tensor, classifier output)); both share their weights."""

    def __init__(self, body: fx.GraphModule, full: fx.GraphModule | None, input_size: tuple[int, int] | None):
        super().__init__()
        self.body, self.full, self.input_size = body, full, input_size
        self.has_head = full is not None

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.body(self._resize(x)), "the ONNX feature tensor")

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.full is None:
            return self.forward(x), None
        features, logits = self.full(self._resize(x))
        return pool(features, "the ONNX feature tensor"), logits.reshape(len(x), -1)


class OrtMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d with onnxruntime's output size where the map is a little smaller than the window: the end
    of such a dimension is padded with -inf so that one window fits (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ceil_mode and not self.return_indices:
            window = [(k - 1) * d + 1 for k, d in zip(_pair(self.kernel_size), _pair(self.dilation))]
            stride, padding = _pair(self.stride or self.kernel_size), _pair(self.padding)
            short = [k - (n + 2 * p) for n, k, p in zip(x.shape[-2:], window, padding)]
            extra = [s if 0 < s < step else 0 for s, step in zip(short, stride)]
            if any(extra):
                x = F.pad(x, (0, extra[1], 0, extra[0]), value=float("-inf"))
        return super().forward(x)


class OnnxTorchCheckpoint(TorchCheckpoint):
    """An ONNX checkpoint converted to PyTorch (see the module docstring). `onnx_fingerprint`: the source
    checkpoint's fingerprint."""

    def __init__(self, *, onnx_fingerprint: str, **fields):
        super().__init__(**fields)
        self.onnx_fingerprint = onnx_fingerprint

    def check_input_size(self, size: int) -> None:
        """InputError unless the converted network maps a (2, 3, size, size) batch to 2 feature rows."""
        x = torch.zeros(2, 3, size, size, device=self.device)
        try:
            with torch.no_grad():
                rows = self._features(x).shape[0]
        except Exception as error:
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            raise InputError(f"{self.name}: the ONNX network (converted to PyTorch by onnx2torch) cannot take "
                             f"{size}x{size} images: {reason}; expected an image size the network accepts "
                             f"(e.g. its own input size)") from None
        if rows != 2:
            raise InputError(f"{self.name}: the ONNX network (converted to PyTorch by onnx2torch) maps 2 images "
                             f"to {rows} feature rows (a fixed batch size or Reshape in the graph?); fine-tuning "
                             "needs a graph exported with a dynamic batch axis")


def to_torch(checkpoint) -> OnnxTorchCheckpoint:
    """The ONNX checkpoint `checkpoint` (an `OnnxCheckpoint`) as a trainable PyTorch checkpoint."""
    features = getattr(checkpoint, "_onnx_torch_features", None)
    if features is None:  # converted once per loaded checkpoint; users deep-copy the feature module to train
        features = _convert(checkpoint)
        _verify(checkpoint, features.module)
        checkpoint._onnx_torch_features = features
    return OnnxTorchCheckpoint(
        module=features.root,
        features=features.module,
        name=checkpoint.name,
        fingerprint=fingerprint("onnx2torch", CONVERSION_VERSION, checkpoint.fingerprint),
        preprocess=checkpoint.preprocess,
        layer=checkpoint.layer,
        details={**checkpoint.details, "converted": "onnx2torch", "onnx_fingerprint": checkpoint.fingerprint},
        onnx_fingerprint=checkpoint.fingerprint,
    )


def _verify(checkpoint, module: OnnxGraphFeatures) -> None:
    """InputError unless the converted network gives onnxruntime's features on a seeded random batch at the
    checkpoint's input size (to within 1e-3 of their largest magnitude: float rounding is ~1e-6)."""
    size = checkpoint.preprocess.size if checkpoint.preprocess is not None else 224
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    try:
        expected = checkpoint.forward(x)[0]
    except Exception:  # onnxruntime cannot run this input size: nothing to compare against
        return
    try:
        with torch.no_grad():
            got = module(torch.from_numpy(x)).float().numpy()
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{checkpoint.name}: the network onnx2torch converted fails on {size}x{size} images "
                         f"that onnxruntime runs: {reason}") from None
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf
    if not difference <= 1e-3 * scale + 1e-5:
        raise InputError(f"{checkpoint.name}: the network onnx2torch converted computes other features than "
                         f"onnxruntime (largest difference {difference:.3g}, features up to {scale:.3g}); it "
                         "cannot stand in for this ONNX model in fine-tuning")


class _Converted:
    def __init__(self, root: fx.GraphModule, module: OnnxGraphFeatures):
        self.root, self.module = root, module


def _convert(checkpoint) -> _Converted:
    try:
        from onnx2torch import convert
    except ImportError:
        raise InputError(f"checkpoint {checkpoint.name!r}: fine-tuning an ONNX checkpoint converts it to PyTorch "
                         f"with the package 'onnx2torch', which is not installed; {INSTALL_HINT}") from None
    import onnx

    path, digest = getattr(checkpoint, "path", None), getattr(checkpoint, "file_sha256", None)
    if path is None:
        raise InputError(f"checkpoint {checkpoint.name!r}: an ONNX checkpoint without its file cannot be "
                         "converted for fine-tuning; load it from a .onnx file")
    try:
        if sha256_file(path) != digest:
            raise InputError(f"{path}: the ONNX file changed since it was loaded; load it again to fine-tune it")
        model = onnx.load(str(path))
    except OSError as error:
        raise InputError(f"{path}: cannot read the ONNX file again to convert it: {error}") from None
    _constants_to_initializers(onnx, model)
    # Only what computes the features and logits: onnx2torch then never meets the ops after them (RapidOCR's
    # recogniser neck has a BatchNorm it cannot convert), and the converted network does no unused work.
    prune_to(onnx, model, [t for t in (checkpoint.feature_tensor, checkpoint.logits_tensor) if t])
    try:
        root = convert(model, attach_onnx_mapping=True)
    except Exception as error:  # an op or attribute onnx2torch has no converter for
        root = _convert_at_older_opset(onnx, convert, model, error)
        if root is None:
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise InputError(f"{checkpoint.name}: onnx2torch cannot convert this ONNX model to PyTorch for "
                             f"fine-tuning: {reason}") from None
    _promote_weights(root)
    for module in root.modules():
        if type(module) is nn.MaxPool2d:
            module.__class__ = OrtMaxPool2d  # same state, onnxruntime's output size (see the module docstring)
    produced = _producers(root.graph)
    features = _tensor_node(produced, checkpoint.feature_tensor, checkpoint.name)
    body = _cut(root, [features])
    full = None
    if checkpoint.logits_tensor is not None:
        full = _cut(root, [features, _tensor_node(produced, checkpoint.logits_tensor, checkpoint.name)])
    shape = list(getattr(checkpoint, "input_shape", []))
    spatial = shape[2:4] if len(shape) == 4 else []
    fixed = len(spatial) == 2 and all(isinstance(d, int) and d > 0 for d in spatial)
    module = OnnxGraphFeatures(body, full, (int(spatial[0]), int(spatial[1])) if fixed else None)
    return _Converted(root.eval(), module.eval())


def _convert_at_older_opset(onnx, convert, model, error: Exception):
    """onnx2torch registers converters per op version, up to about opset 17 for most ops (Reshape: 14), so a
    model exported at a newer opset whose ops only gained types since (PyTorch's exporter writes opset 18-20)
    is converted again after onnx's version converter moves it to FALLBACK_OPSET; None when that fails too."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not isinstance(error, NotImplementedError) or opset <= FALLBACK_OPSET:
        return None
    try:
        return convert(onnx.version_converter.convert_version(model, FALLBACK_OPSET), attach_onnx_mapping=True)
    except Exception:
        return None


def _constants_to_initializers(onnx, model) -> None:
    """Turn `Constant` nodes holding a tensor into initializers (onnx2torch reads Conv/Gemm weights there)."""
    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _promote_weights(root: fx.GraphModule) -> None:
    """Stored floating-point tensors of more than one element become trainable parameters (see the module
    docstring); scalars and integer tensors (shapes, indices) stay buffers."""
    container = getattr(root, "initializers", None)
    if container is None:
        return
    for name, buffer in list(container.named_buffers(recurse=False)):
        if buffer.is_floating_point() and buffer.numel() > 1:
            delattr(container, name)
            container.register_parameter(name, nn.Parameter(buffer.detach().clone()))


def _producers(graph: fx.Graph) -> dict[str, tuple[fx.Node, int, int]]:
    """ONNX tensor name -> (fx node of the ONNX node producing it, output index, number of outputs)."""
    produced = {}
    modules = dict(graph.owning_module.named_modules())
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        mapping = getattr(modules[node.target], "onnx_mapping", None)
        outputs = tuple(getattr(mapping, "outputs", ()) or ())
        for index, tensor in enumerate(outputs):
            produced[tensor] = (node, index, len(outputs))
    return produced


def _tensor_node(produced: dict, tensor: str, name: str) -> tuple[fx.Node, int, int]:
    if tensor not in produced:
        raise InputError(f"{name}: the ONNX tensor {tensor!r} has no counterpart in the network onnx2torch "
                         "converted; expected a tensor computed by a node of the graph")
    return produced[tensor]


def _cut(root: fx.GraphModule, targets: list[tuple[fx.Node, int, int]]) -> fx.GraphModule:
    """A GraphModule over `root`'s modules whose output is the `targets` tensors (one, or a tuple)."""
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    graph.graph_copy(root.graph, values)
    outputs = []
    for node, index, count in targets:
        value = values[node]
        outputs.append(graph.call_function(getitem, (value, index)) if count > 1 else value)
    graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    module = fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()  # the nodes after the targets (needs the owning module: purity checks)
    module.delete_all_unused_submodules()
    module.graph.lint()
    module.recompile()
    return module
