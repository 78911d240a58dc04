"""Reading a Keras model file without TensorFlow and without running code from it: the layer graph and weights.

- `.h5` / `.hdf5`: the Keras 2 HDF5 format (also what Keras 3 writes for `model.save("m.h5")`): the root
  attribute `model_config` (JSON) holds the architecture; `model_weights/<layer>/` holds each layer's arrays,
  in order, as listed by the group's `weight_names` attribute.
- `.keras`: the Keras 3 zip: `config.json` (the architecture) and `model.weights.h5`
  (`layers/<layer>/vars/0 .. n`, in the layer's own order).

Only the JSON and the arrays are read (h5py, zipfile, json); nothing in the file is unpickled, unmarshalled
or imported. A `Lambda` layer carries marshalled Python bytecode (TensorFlow code) and a custom layer is code
from elsewhere (Keras 3 names its module; a class name outside `SUPPORTED` in either format): both are
refused, always -- there is no opt-in, since code written for TensorFlow tensors could not run in the PyTorch
network `keras_torch.py` builds anyway. So is every layer type it cannot build. A functional model (Keras 2
`Model`, Keras 3 `Functional`, with `inbound_nodes`) or a `Sequential` one, with one input and one output;
nested models and shared layers are refused.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._common import optional_import

SUFFIXES = (".h5", ".hdf5", ".keras")
SUPPORTED = ("InputLayer", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense", "BatchNormalization",
             "Activation", "ReLU", "LeakyReLU", "Softmax", "MaxPooling2D", "AveragePooling2D",
             "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout", "SpatialDropout2D",
             "ZeroPadding2D", "Rescaling", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
             "Concatenate")
CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
# Keras stores weights uncompressed; a file declaring far more bytes than it holds (a zip or HDF5 dataset that
# decompresses, or an HDF5 dataset without storage) is refused before anything that large is allocated.
EXPANSION = 64
SLACK = 1 << 20


@dataclass(frozen=True)
class KerasLayer:
    """One layer: its name, class (`kind`), config, the names of the layers feeding it (in order) and its
    weight arrays (in Keras's order, e.g. kernel then bias)."""

    name: str
    kind: str
    config: dict
    inputs: tuple[str, ...]
    weights: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class KerasModel:
    """A model file's graph: layers in an order where each comes after its inputs, the input layer's name and
    shape (Keras order, batch left out: (H, W, C)), the output layer's name, the Keras version that wrote it."""

    path: Path
    layers: tuple[KerasLayer, ...]
    input_name: str
    input_shape: tuple
    output_name: str
    keras_version: str


def read_keras(path: Path, spec: str) -> KerasModel:
    """Parse the Keras model file at `path` (see the module docstring); InputError naming the file and the
    layer for anything it will not or cannot read."""
    h5py = optional_import("h5py", spec)
    suffix = path.suffix.lower()
    try:
        if suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                if "config.json" not in names:
                    raise InputError(f"{spec}: {path.name} has no config.json; expected a Keras 3 .keras archive")
                config = _json(archive.read("config.json"), spec, "config.json")
                metadata = _json(archive.read("metadata.json"), spec, "metadata.json", model=False) if (
                    "metadata.json" in names) else {}
                for info in archive.infolist():
                    if info.file_size > EXPANSION * info.compress_size + SLACK:
                        raise InputError(f"{spec}: {info.filename} in {path.name} declares {info.file_size} bytes "
                                         f"from {info.compress_size} compressed; expected a Keras archive, not a "
                                         "zip bomb")
                blob = archive.read("model.weights.h5") if "model.weights.h5" in names else None
            version = str(metadata.get("keras_version", "3"))
            store = h5py.File(io.BytesIO(blob), "r") if blob is not None else None
            try:
                budget = _Budget(spec, len(blob or b""))
                return _parse(path, spec, config, version, lambda layers: _keras3_weights(store, layers, budget))
            finally:
                if store is not None:
                    store.close()
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise InputError(f"{spec}: {path.name} has no model_config attribute (a weights-only file?); "
                                 "expected a whole Keras model saved with model.save")
            config = _json(handle.attrs["model_config"], spec, "model_config")
            version = _text(handle.attrs.get("keras_version", b"2"))
            weights = handle["model_weights"] if "model_weights" in handle else None
            budget = _Budget(spec, path.stat().st_size)
            return _parse(path, spec, config, version,
                          lambda layers: {name: _keras2_weights(weights, name, budget) for name, _ in layers})
    except InputError:
        raise
    except (OSError, RuntimeError, zipfile.BadZipFile, zlib.error, EOFError, KeyError) as error:  # h5py: both
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{spec}: cannot read {path.name} as a Keras model file (truncated or not Keras?): "
                         f"{reason}") from None
    except (AttributeError, TypeError, IndexError, ValueError) as error:  # JSON of an unexpected shape
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{spec}: {path.name} holds a malformed Keras model config: {reason}; expected the "
                         "config Keras writes for a Sequential or functional model") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(raw, spec: str, what: str, model: bool = True) -> dict:
    try:
        document = json.loads(_text(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{spec}: {what} is not valid JSON ({error})") from None
    if not model and isinstance(document, dict):
        return document
    if not isinstance(document, dict) or "class_name" not in document:
        raise InputError(f"{spec}: {what}: expected a Keras model config with class_name and config")
    return document


class _Budget:
    """Bytes of arrays a file of `size` bytes may declare (EXPANSION times its size, plus SLACK)."""

    def __init__(self, spec: str, size: int):
        self.spec, self.left = spec, EXPANSION * size + SLACK

    def read(self, dataset, layer: str) -> np.ndarray:
        declared = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize
        if declared > self.left:
            raise InputError(f"{self.spec}: layer {layer!r} declares a {dataset.shape} weight array, more than the "
                             "file could hold; expected the weights Keras saved")
        self.left -= declared
        return np.asarray(dataset, dtype=np.float32)


def _keras2_weights(group, name: str, budget: _Budget) -> tuple[np.ndarray, ...]:
    if group is None or name not in group:
        return ()
    layer = group[name]
    return tuple(budget.read(layer[_text(weight)], name) for weight in layer.attrs.get("weight_names", []))


def _keras3_weights(store, layers: list[tuple[str, str]], budget: _Budget) -> dict[str, tuple[np.ndarray, ...]]:
    """Layer name -> arrays of a Keras 3 weights file. Keras 3 files each layer under the snake-case name of its
    class, numbered in the model's layer order (`conv2d`, `conv2d_1`, ...; saving_lib: layer names are not
    reproducible), not under the layer's own name; files that do use the layer names are read too."""
    if store is None or "layers" not in store:
        return {name: () for name, _ in layers}
    counts: dict[str, int] = {}
    by_class = {}
    for name, kind in layers:
        if kind == "InputLayer":
            continue
        base = _snake_case(kind)
        counts[base] = counts.get(base, -1) + 1
        by_class[name] = f"{base}_{counts[base]}" if counts[base] else base
    stored = set(store["layers"]) - {"input_layer"}
    paths = by_class if stored <= set(by_class.values()) else {name: name for name in by_class}
    return {name: _keras3_vars(store, f"layers/{paths[name]}/vars", name, budget) if name in paths else ()
            for name, _ in layers}


def _snake_case(name: str) -> str:
    """Keras's naming.to_snake_case: "SeparableConv2D" -> "separable_conv2d", "ReLU" -> "re_lu"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras3_vars(store, path: str, layer: str, budget: _Budget) -> tuple[np.ndarray, ...]:
    if path not in store:
        return ()
    variables = store[path]
    return tuple(budget.read(variables[key], layer) for key in sorted(variables, key=int))


def _parse(path: Path, spec: str, config: dict, version: str, weights_of) -> KerasModel:
    kind, body = config["class_name"], config.get("config")
    if kind == "Sequential":
        entries = body if isinstance(body, list) else (body or {}).get("layers", [])
        layers = _sequential(spec, entries)
        output = layers[-1][0]
    elif kind in ("Model", "Functional"):
        layers = [_functional_layer(spec, entry) for entry in body.get("layers", [])]
        inputs, outputs = _ends(body.get("input_layers")), _ends(body.get("output_layers"))
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{spec}: the model has {len(inputs)} input(s) and {len(outputs)} output(s); expected "
                             "one image input and one output")
        output = outputs[0]
    else:
        raise InputError(f"{spec}: model class {kind!r}; expected a Sequential or functional Keras model")
    weights = weights_of([(entry[0], entry[1]) for entry in layers])
    seen: dict[str, KerasLayer] = {}
    for name, layer_kind, layer_config, inputs, module in layers:
        _check_kind(spec, name, layer_kind, module)
        if name in seen:
            raise InputError(f"{spec}: layer {name!r} appears twice; expected unique layer names")
        missing = [source for source in inputs if source not in seen]
        if missing:
            raise InputError(f"{spec}: layer {name!r} reads {missing[0]!r}, which no earlier layer defines")
        seen[name] = KerasLayer(name, layer_kind, layer_config, tuple(inputs), weights[name])
    roots = [layer for layer in seen.values() if layer.kind == "InputLayer"]
    if len(roots) != 1:
        raise InputError(f"{spec}: {len(roots)} input layers; expected one image input")
    if output not in seen:
        raise InputError(f"{spec}: output layer {output!r} is not among the layers")
    shape = roots[0].config.get("batch_input_shape") or roots[0].config.get("batch_shape") or [None, None, None, 3]
    return KerasModel(path, tuple(seen.values()), roots[0].name, tuple(shape[1:]), output, version)


def _check_kind(spec: str, name: str, kind: str, module: str | None = None) -> None:
    if kind in CODE_LAYERS:
        raise InputError(f"{spec}: layer {name!r} is a {kind} layer, which holds Python code (marshalled bytecode "
                         "or TensorFlow ops); neucrab never runs code from a model file (no opt-in: TensorFlow "
                         "code cannot run in the PyTorch rebuild); expected built-in Keras layers only")
    if module is not None and not str(module).startswith("keras"):
        raise InputError(f"{spec}: layer {name!r} is a custom {kind!r} layer from the Python module {module!r}, "
                         "code neucrab will not import; expected built-in Keras layers only")
    if kind not in SUPPORTED:
        raise InputError(f"{spec}: layer {name!r} has the unsupported type {kind!r} (a custom or nested layer?); "
                         f"expected one of {', '.join(SUPPORTED)}")


def _ends(value) -> list[str]:
    """input_layers / output_layers: [[name, 0, 0], ...] or a single [name, 0, 0] (Keras 3)."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [value[0]]
    return [item[0] for item in value]


def _functional_layer(spec: str, entry: dict) -> tuple[str, str, dict, list[str], str | None]:
    name, kind = entry.get("name") or entry.get("config", {}).get("name"), entry.get("class_name")
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise InputError(f"{spec}: layer {name!r} is applied {len(nodes)} times (a shared layer); expected each "
                         "layer used once")
    inputs: list[str] = []
    for node in nodes:
        if isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
            inputs += [item[0] for item in node]
        else:  # Keras 3: {"args": [...], "kwargs": {...}} with __keras_tensor__ objects
            inputs += _keras_tensors(node.get("args", [])) + _keras_tensors(node.get("kwargs", {}))
    return name, kind, entry.get("config", {}), inputs, entry.get("module")


def _keras_tensors(value) -> list[str]:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [name for item in value.values() for name in _keras_tensors(item)]
    if isinstance(value, list):
        return [name for item in value for name in _keras_tensors(item)]
    return []


def _sequential(spec: str, entries: list) -> list[tuple[str, str, dict, list[str], str | None]]:
    layers: list[tuple[str, str, dict, list[str], str | None]] = []
    for entry in entries:
        kind, config = entry.get("class_name"), entry.get("config", {})
        name = config.get("name") or entry.get("name") or f"layer_{len(layers)}"
        if not layers and kind != "InputLayer":  # Keras 2.0-2.3: the input shape sits on the first layer
            shape = config.get("batch_input_shape") or config.get("batch_shape")
            layers.append(("input", "InputLayer", {"batch_input_shape": shape}, [], None))
        layers.append((name, kind, config, [layers[-1][0]] if layers else [], entry.get("module")))
    if len(layers) < 2:
        raise InputError(f"{spec}: a Sequential model without layers; expected at least one layer")
    return layers
