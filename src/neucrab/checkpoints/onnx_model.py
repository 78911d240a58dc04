"""ONNX models run with onnxruntime.

Features come from a tensor inside the graph: the one named by `layer` (a node name, whose first output is
used, or a tensor name), or by default the input of the final classifier, found by walking back from the
graph output through Softmax / Identity / Reshape-like nodes and a bias Add to the last Gemm or MatMul.
To read an intermediate tensor, neucrab adds it as a graph output to an in-memory copy of the model (the
file is never modified). When the classifier feeds a Softmax, its output gives the probabilities; otherwise
the classifier's logits are softmaxed.

Inputs are assumed NCHW float images. A model exported with a fixed spatial size gets its batch resized
(bilinear) to that size; one exported with a fixed batch of 1 is run one image at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ._common import fingerprint, near_names, optional_import, require_file, sha256_file
from .base import Checkpoint, Preprocess

# Ops that can sit between the classifier and the graph output without changing what the logits are.
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout"}
_CLASSIFIER_OPS = {"Gemm", "MatMul"}


class OnnxCheckpoint(Checkpoint):
    """An image checkpoint computed by onnxruntime from an ONNX file.

    `session`: the onnxruntime InferenceSession; `input_name`; `feature_tensor`, `logits_tensor`,
    `probs_tensor`: the graph tensors read for features, logits and probabilities (None when absent).
    `path`, `file_sha256`: the file and the sha256 of its bytes when loaded (fine-tuning converts the graph
    to PyTorch from the file: `neucrab.checkpoints.onnx_torch`).
    """

    def __init__(self, *, session, input_name: str, input_shape: list, feature_tensor: str,
                 logits_tensor: str | None, probs_tensor: str | None, path: Path | None = None,
                 file_sha256: str | None = None, **fields):
        super().__init__(modality="image", has_head=logits_tensor is not None or probs_tensor is not None,
                         **fields)
        self.session = session
        self.input_name = input_name
        self.input_shape = input_shape
        self.feature_tensor = feature_tensor
        self.logits_tensor = logits_tensor
        self.probs_tensor = probs_tensor
        self.path, self.file_sha256 = path, file_sha256
        self._outputs = [t for t in (feature_tensor, probs_tensor or logits_tensor) if t is not None]

    def _prepare(self, batch) -> np.ndarray:
        x = np.asarray(batch.detach().cpu().numpy() if hasattr(batch, "detach") else batch, dtype=np.float32)
        if x.ndim != 4:
            raise InputError(f"{self.name}: expected an image batch (B, C, H, W), got shape {x.shape}")
        height, width = self.input_shape[2:4] if len(self.input_shape) == 4 else (None, None)
        if isinstance(height, int) and isinstance(width, int) and x.shape[2:] != (height, width):
            import torch

            x = torch.nn.functional.interpolate(torch.from_numpy(x), size=(height, width), mode="bilinear",
                                                align_corners=False).numpy()
        return x

    def forward(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, C, H, W) float32 images -> (features (B, D), probabilities (B, S) or None)."""
        x = self._prepare(batch)
        chunks = [x[i:i + 1] for i in range(len(x))] if self.input_shape[:1] == [1] else [x]
        results = [self.session.run(self._outputs, {self.input_name: chunk}) for chunk in chunks]
        features = _pool(np.concatenate([r[0] for r in results]))
        if len(self._outputs) == 1:
            return features, None
        head = np.concatenate([r[1] for r in results]).reshape(len(x), -1).astype(np.float32)
        if self.probs_tensor is None:
            head = np.exp(head - head.max(axis=1, keepdims=True))
            head /= head.sum(axis=1, keepdims=True)
        return features, head.astype(np.float32)


def _pool(array: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> mean over H, W; (B, T, D) -> mean over T; anything else flattened per sample."""
    if array.ndim == 4:
        array = array.mean(axis=(2, 3))
    elif array.ndim == 3:
        array = array.mean(axis=1)
    return np.ascontiguousarray(array.reshape(array.shape[0], -1), dtype=np.float32)


def _find_classifier(graph, initializers: set[str]):
    """(feature tensor, logits tensor, probs tensor or None) of the final classifier, or None."""
    producer = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        if len(output.type.tensor_type.shape.dim) > 2:  # per-position scores (B, T, C) are not a classifier
            continue
        tensor, probs = output.name, None
        for _ in range(50):  # walk back from the output
            node = producer.get(tensor)
            if node is None:
                break
            if node.op_type == "Softmax" and probs is None:
                probs = node.output[0]
                tensor = node.input[0]
            elif node.op_type in _PASS_THROUGH:
                tensor = node.input[0]
            elif node.op_type == "Add":  # bias after a MatMul
                data = [t for t in node.input if t not in initializers and t in producer
                        and producer[t].op_type != "Constant"]
                if len(data) != 1:
                    break
                before = producer[data[0]]
                if before.op_type != "MatMul":
                    break
                logits, tensor = node.output[0], data[0]
                return _classifier_input(before, initializers, producer), logits, probs
            elif node.op_type in _CLASSIFIER_OPS:
                features = _classifier_input(node, initializers, producer)
                if features is None:
                    break
                return features, node.output[0], probs
            else:
                break
    return None


def _classifier_input(node, initializers: set[str], producer: dict) -> str | None:
    """The data input of a Gemm/MatMul: the operand that is not a stored weight."""
    data = [t for t in node.input[:2] if t not in initializers
            and not (t in producer and producer[t].op_type == "Constant")]
    return data[0] if len(data) == 1 else None


def load_onnx(path: Path, spec: str, *, layer=None, preprocess=None, name=None) -> OnnxCheckpoint:
    """Load an ONNX file (see the module docstring for how features and probabilities are found)."""
    onnx = optional_import("onnx", spec)
    ort = optional_import("onnxruntime", spec)
    path = require_file(path, spec, "an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{spec}: not a readable ONNX model (truncated or corrupt?): {reason}") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"{spec}: expected an ONNX model with one image input, found "
                         f"{len(inputs)}: {', '.join(i.name for i in inputs)}")
    input_shape = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]

    found = _find_classifier(graph, initializers)
    if layer is not None:
        feature_tensor = _resolve_layer(graph, layer, spec)
        logits_tensor, probs_tensor = (found[1], found[2]) if found else (None, None)
    elif found is not None:
        feature_tensor, logits_tensor, probs_tensor = found
    else:
        feature_tensor, logits_tensor, probs_tensor = graph.output[0].name, None, None

    _expose(onnx, model, [t for t in (feature_tensor, probs_tensor or logits_tensor) if t])
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings on stderr for every run
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        raise InputError(f"{spec}: onnxruntime cannot load this model (truncated, corrupt or unsupported?): "
                         f"{reason}") from None

    chosen, source = (preprocess, "argument") if preprocess else (Preprocess(), "default")
    square = len(input_shape) == 4 and isinstance(input_shape[2], int) and input_shape[2] == input_shape[3]
    if preprocess is None and square:  # the model's fixed input size, ImageNet statistics
        chosen, source = Preprocess(size=input_shape[2]), "default, size from the model's input"
    digest = sha256_file(path)
    return OnnxCheckpoint(
        session=session,
        input_name=inputs[0].name,
        input_shape=input_shape,
        feature_tensor=feature_tensor,
        logits_tensor=logits_tensor,
        probs_tensor=probs_tensor,
        name=name or path.stem,
        path=path,
        file_sha256=digest,
        fingerprint=fingerprint("onnx", digest, layer, chosen.key()),
        preprocess=chosen,
        layer=layer,
        details={"source": str(path), "architecture": "onnx", "feature_tensor": feature_tensor,
                 "preprocess_source": source},
    )


def _resolve_layer(graph, layer: str, spec: str) -> str:
    """A node name (its first output) or a tensor name -> the tensor to read."""
    for node in graph.node:
        if node.name == layer:
            return node.output[0]
    tensors = {out for node in graph.node for out in node.output}
    if layer in tensors:
        return layer
    names = [n.name for n in graph.node if n.name] + sorted(tensors)
    raise InputError(f"{spec}: no ONNX node or tensor named {layer!r}; near names: {near_names(layer, names)}")


def _expose(onnx, model, tensors: list[str]) -> None:
    """Add `tensors` as graph outputs of the in-memory model (with their types when inference knows them)."""
    present = {o.name for o in model.graph.output}
    missing = [t for t in tensors if t not in present]
    if not missing:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:  # shape inference is best effort; onnxruntime infers the rest
        known = {}
    for tensor in missing:
        if tensor in known:
            model.graph.output.append(known[tensor])
        else:
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))


def prune_to(onnx, model, tensors) -> None:
    """Cut the in-memory ONNX `model` so that its outputs are `tensors` (a name or a list of names), keeping
    only the nodes and initializers that compute them. Left whole (the tensors added as outputs) when a node
    carries a subgraph (If, Loop, Scan), whose outer-scope inputs this walk does not follow."""
    graph = model.graph
    tensors = [tensors] if isinstance(tensors, str) else list(tensors)
    outputs = [onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node
           for a in n.attribute):
        present = {o.name for o in graph.output}
        graph.output.extend(o for o in outputs if o.name not in present)
        return
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output}
    needed, stack, kept = set(), list(tensors), set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        index = producer.get(name)
        if index is not None and index not in kept:
            kept.add(index)
            stack.extend(i for i in graph.node[index].input if i)
    nodes = [node for index, node in enumerate(graph.node) if index in kept]
    dropped = {t.name for t in graph.initializer if t.name not in needed}
    weights = [t for t in graph.initializer if t.name in needed]
    inputs = [i for i in graph.input if i.name not in dropped]  # older models list initializers as inputs
    values = [v for v in graph.value_info if v.name in needed]
    del graph.node[:], graph.initializer[:], graph.input[:], graph.value_info[:], graph.output[:]
    graph.node.extend(nodes)
    graph.initializer.extend(weights)
    graph.input.extend(inputs)
    graph.value_info.extend(values)
    graph.output.extend(outputs)
