"""A Keras model file as a PyTorch network: `load_keras(path, spec)` gives a trainable `KerasCheckpoint`.

`keras_file.read_keras` parses the file (no code runs from it); this module builds one torch module per
Keras layer from its config and weights (`keras_layers.py`, which says how: NHWC -> NCHW, TensorFlow's "same"
padding, BatchNorm, activations, grey input) and runs them in the file's graph order (`KerasNet`).

Features and source probabilities (`find_head`): walking back from the output through layers that only
reshape, pool or activate (Activation, Softmax, Dropout, Flatten, global pooling), the first Dense or Conv2D
is the head (a Dense layer, or a convolution followed by global pooling as in mini-Xception). Features: the
head's input (global-average-pooled when it is a map); logits: the input of the softmax on that path (the
pre-activation of a Dense(activation="softmax")), or the output itself when the path applies no activation.
A path with another activation (e.g. a sigmoid) gives no source probabilities. `layer=` names a Keras layer
whose output (pooled) gives the features instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._common import fingerprint, near_names, sha256_file
from .base import Preprocess
from .features import FeatureModule, pool
from .keras_file import KerasLayer, KerasModel, read_keras
from .keras_layers import ACTIVATED, Activation, GreyInput, build_layer, module_key
from .torch_module import TorchCheckpoint

CONVERSION_VERSION = 1  # bump when the conversion changes what a network computes: cached features go stale
# Layers that may sit between the head and the output without making the output something else than scores.
BETWEEN_HEAD_AND_OUTPUT = {"Activation", "Softmax", "Dropout", "SpatialDropout2D", "Flatten",
                           "GlobalAveragePooling2D", "GlobalMaxPooling2D"}
HEAD_KINDS = {"Dense", "Conv2D"}


# ------------------------------------------------------------------------------------------------ network
class KerasNet(nn.Module):
    """The Keras graph as a PyTorch network taking a normalised RGB batch (B, 3, H, W).

    `ops[key]`: the layer's module (its output before the layer's activation), `activations[key]` the
    activation where it is not linear; `graph`: (key, Keras name, input keys) in the file's order. `forward`
    gives the model's output; `run` any layers' outputs, or a layer's pre-activation.
    """

    def __init__(self, model: KerasModel, spec: str, preprocess: Preprocess):
        super().__init__()
        keras3 = model.keras_version.split(".")[0].isdigit() and int(model.keras_version.split(".")[0]) >= 3
        self.ops, self.activations = nn.ModuleDict(), nn.ModuleDict()
        self.keys: dict[str, str] = {}
        graph, taken = [], set()
        for layer in model.layers:
            try:
                built = build_layer(layer, keras3)
            except (ValueError, TypeError, KeyError) as error:
                reason = " ".join(str(error).split())[:200] or type(error).__name__
                raise InputError(f"{spec}: layer {layer.name!r} ({layer.kind}): {reason}") from None
            key = module_key(layer.name, taken)
            self.keys[layer.name] = key
            self.ops[key] = built.op
            if built.activation != "linear":
                self.activations[key] = Activation(built.activation, keras3)
            graph.append((key, layer.name, tuple(self.keys[source] for source in layer.inputs)))
        self.graph = graph
        self.kinds = {self.keys[layer.name]: layer.kind for layer in model.layers}
        self.input_key, self.output_key = self.keys[model.input_name], self.keys[model.output_name]
        channels = model.input_shape[-1] if model.input_shape else 3
        if channels not in (1, 3):
            raise InputError(f"{spec}: the model takes {channels}-channel images; expected 1 (grey) or 3 (RGB)")
        self.to_input = GreyInput(preprocess.mean, preprocess.std) if channels == 1 else nn.Identity()
        height, width = (model.input_shape[:2] if len(model.input_shape) == 3 else (None, None))
        fixed = isinstance(height, int) and isinstance(width, int)
        needs_size = any(layer.kind == "Flatten" for layer in model.layers)
        self.input_size = (height, width) if fixed and needs_size else None
        self.declared_size = (height, width) if fixed else None
        self._last_use = {}
        for index, (_, _, inputs) in enumerate(graph):
            for source in inputs:
                self._last_use[source] = index

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_input(x)
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def run(self, x: torch.Tensor, outputs: tuple[str, ...] = (), before_activation: str | None = None,
            where: str | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the layers keyed `outputs` and, under the key "pre", the pre-activation of the layer keyed
        `before_activation`; stops once they are computed. `where`: name errors after the file (a dry run)."""
        wanted = set(outputs)
        values = {self.input_key: self.prepare(x)}
        found: dict[str, torch.Tensor] = {}
        for index, (key, name, inputs) in enumerate(self.graph):
            if key != self.input_key:
                op = self.ops[key]
                args = [values[source] for source in inputs]
                try:
                    if isinstance(op, nn.BatchNorm2d) and args[0].ndim == 2:  # after a Dense
                        value = op(args[0][:, :, None, None])[:, :, 0, 0]
                    else:
                        value = op(*args)
                except (RuntimeError, ValueError, IndexError) as error:
                    if where is None:
                        raise
                    reason = " ".join(str(error).split())[:200]
                    shapes = ", ".join(str(tuple(a.shape)) for a in args)
                    raise InputError(f"{where}: layer {name!r} ({self.kinds[key]}) fails on input {shapes} "
                                     f"(NCHW): {reason}") from None
                if key == before_activation:
                    found["pre"] = value
                if key in self.activations:
                    value = self.activations[key](value)
                values[key] = value
            if key in wanted:
                found[key] = values[key]
                wanted.discard(key)
            if not wanted and (before_activation is None or "pre" in found):
                return found
            for source in inputs:  # free what no later layer reads
                if self._last_use.get(source) == index and source not in outputs:
                    values.pop(source, None)
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, (self.output_key,))[self.output_key]


class KerasFeatures(FeatureModule):
    """The features (a layer's output, pooled) and logits (a layer's pre-activation or output) of a KerasNet."""

    def __init__(self, net: KerasNet, feature_key: str, logits_key: str | None, logits_before_activation: bool):
        super().__init__()
        self.net = net
        self.feature_key, self.logits_key, self.before = feature_key, logits_key, logits_before_activation
        self.has_head = logits_key is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.net.run(x, (self.feature_key,))[self.feature_key], "the Keras feature layer")

    def forward_with_logits(self, x: torch.Tensor, where: str | None = None):
        if self.logits_key is None:
            found = self.net.run(x, (self.feature_key,), where=where)
            return pool(found[self.feature_key], "the Keras feature layer"), None
        if self.before:
            found = self.net.run(x, (self.feature_key,), before_activation=self.logits_key, where=where)
            logits = found["pre"]
        else:
            found = self.net.run(x, (self.feature_key, self.logits_key), where=where)
            logits = found[self.logits_key]
        if logits.ndim == 4 and logits.shape[2:] == (1, 1):  # GlobalPooling(keepdims=True), 1x1 maps
            logits = logits.flatten(1)
        if logits.ndim != 2:
            raise InputError(f"{where or 'Keras network'}: the logits layer gives shape {tuple(logits.shape)}; "
                             "expected (batch, classes)")
        return pool(found[self.feature_key], "the Keras feature layer"), logits


@dataclass(frozen=True)
class Head:
    """Where the features and logits come from: the head layer (None: no Dense/Conv2D head found), the layer
    whose output gives the features, and the layer whose pre-activation (`before_activation`) or output
    gives the logits (None: no source probabilities)."""

    head: str | None
    features: str
    logits: str | None
    before_activation: bool


def find_head(model: KerasModel) -> Head:
    """The head, features and logits of a parsed model (see the module docstring)."""
    layers = {layer.name: layer for layer in model.layers}
    name, softmax, other = model.output_name, None, False
    while True:
        layer = layers[name]
        activation = _layer_activation(layer)
        if activation == "softmax" and softmax is None and not other:
            softmax = name
        elif activation not in ("linear", "softmax") and softmax is None:
            other = True  # a sigmoid, a relu, ... after any softmax: the output is no class distribution
        if layer.kind in HEAD_KINDS and len(layer.inputs) == 1:
            if other:
                return Head(name, layer.inputs[0], None, False)
            if softmax is not None:
                return Head(name, layer.inputs[0], softmax, True)
            return Head(name, layer.inputs[0], model.output_name, False)
        if layer.kind not in BETWEEN_HEAD_AND_OUTPUT or len(layer.inputs) != 1:
            return Head(None, model.output_name, None, False)
        name = layer.inputs[0]


def _layer_activation(layer: KerasLayer) -> str:
    if layer.kind == "Softmax":
        return "softmax" if layer.config.get("axis", -1) == -1 else "other"
    if layer.kind in ACTIVATED:
        return layer.config.get("activation") or "linear"
    if layer.kind in ("ReLU", "LeakyReLU"):
        return "other"
    return "linear"


class KerasCheckpoint(TorchCheckpoint):
    """A Keras model file rebuilt in PyTorch (see the module docstring); trainable like any TorchCheckpoint."""

    def check_input_size(self, size: int) -> None:
        """InputError unless the network maps a (2, 3, size, size) batch to 2 feature rows."""
        x = torch.zeros(2, 3, size, size, device=self.device)
        with torch.no_grad():
            rows = self._features.forward_with_logits(x, where=self.name)[0].shape[0]
        if rows != 2:
            raise InputError(f"{self.name}: the Keras network maps 2 images to {rows} feature rows; expected one "
                             "row per image")


def load_keras(path: Path, spec: str, *, layer: str | None = None, preprocess: Preprocess | None = None,
               name: str | None = None, preprocess_source: str | None = None) -> KerasCheckpoint:
    """Load a Keras model file (.h5 / .hdf5 / .keras) as a trainable PyTorch checkpoint.

    preprocess: the inputs' preprocessing (default: the model's declared square size, ImageNet mean/std);
    preprocess_source: where a given preprocess comes from, for reports (default "argument").
    """
    model = read_keras(path, spec)
    if len(model.input_shape) != 3:
        raise InputError(f"{spec}: the model's input has shape {model.input_shape}; expected an image (H, W, C)")
    height, width = model.input_shape[:2]
    if preprocess is not None:
        chosen, source = preprocess, preprocess_source or "argument"
    elif isinstance(height, int) and height == width:
        chosen, source = Preprocess(size=height), "default, size from the model's input"
    else:
        chosen, source = Preprocess(), "default"
    net = KerasNet(model, spec, chosen).eval()
    head = find_head(model)
    if layer is not None:
        if layer not in net.keys:
            raise InputError(f"{spec}: no Keras layer named {layer!r}; near names: {near_names(layer, net.keys)}")
        head = Head(head.head, layer, head.logits, head.before_activation)
    size = net.declared_size or (chosen.size, chosen.size)
    with torch.no_grad():  # a dry run: a graph that does not fit together fails here, naming the layer
        logits_key = net.keys[head.logits] if head.logits else None
        found = net.run(torch.zeros(2, 3, *size), tuple(k for k in (net.keys[head.features], logits_key) if k),
                        before_activation=logits_key if head.before_activation else None, where=spec)
    logits = found.get("pre" if head.before_activation else logits_key)
    if logits is not None and not (logits.ndim == 2 or (logits.ndim == 4 and logits.shape[2:] == (1, 1))):
        logits_key = None  # scores per position (a segmentation map), not per image: no source probabilities
    features = KerasFeatures(net, net.keys[head.features], logits_key, head.before_activation).eval()
    dimension = pool(found[net.keys[head.features]], "the Keras feature layer").shape[1]
    digest = sha256_file(path)
    arch = f"keras {model.keras_version} -> torch v{CONVERSION_VERSION}"
    return KerasCheckpoint(
        module=net,
        features=features,
        name=name or path.stem,
        fingerprint=fingerprint("keras", CONVERSION_VERSION, digest, layer, chosen.key()),
        preprocess=chosen,
        layer=layer,
        details={"architecture": arch, "source": str(path), "preprocess_source": source,
                 "feature_layer": head.features, "head_layer": head.head, "logits_layer": head.logits,
                 "feature_dim": int(dimension), "layers": len(model.layers)},
    )
