"""An onnxruntime copy of a PyTorch checkpoint's network, for feature extraction on the CPU.

onnxruntime ran EfficientNet-Lite0 and MobileNetV2 about 2.5x faster than PyTorch (channels_last, BatchNorm
folded) on this project's CPU (`benchmarks/extract.py`), so a torch image checkpoint on the CPU is exported once
with torch.onnx's TorchScript exporter: features and source probabilities, exactly what `TorchCheckpoint.forward`
returns, at the checkpoint's input size, with a free batch dimension. The file is kept in the cache by content
(`<cache root>/onnx/<export_key>.onnx`), so a checkpoint is exported once for all its splits and tasks.

It is used only when it computes the same thing: on a probe of real images (a batch size other than the one
traced, so a batch size frozen into the graph shows) its features and probabilities must equal PyTorch's within
TOLERANCE of the largest value. Otherwise, or when onnxruntime is missing or the export fails, extraction stays
with PyTorch. Like any trace, the export follows the control flow the probe took; a network that branches on its
input's values takes the PyTorch path only if the probe shows a difference. Fine-tuning and CUDA never use it.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .cache import atomic_write, cache_root
from .errors import CacheWriteError
from .inference_copy import same_outputs

EXPORT_FORMAT = 1  # bump when what an exported file computes, or how it is exported, changes
OPSET = 17
TOLERANCE = 1e-5  # largest |onnxruntime - torch| allowed, relative to the largest |torch| value
# Export (0.1-0.4 s a network, plus about 1 s once a process) only when PyTorch would take this long for the split.
MIN_TORCH_SECONDS = 2.0
# onnxruntime's intra-op threads spin between operators by default, taking CPU time from the threads that decode
# the next batches meanwhile.
SPIN = False
_SESSIONS: OrderedDict = OrderedDict()  # (file key, threads) -> session; a train split's is reused for the test split
_KEEP_SESSIONS = 2


class _Outputs(nn.Module):
    """What `TorchCheckpoint.forward` computes: (features, softmax of the logits) or features alone."""

    def __init__(self, features: nn.Module, has_head: bool):
        super().__init__()
        self.features, self.has_head = features, has_head

    def forward(self, x):
        features, logits = self.features.forward_with_logits(x)
        if self.has_head and logits is not None:
            return features.float(), torch.softmax(logits.float(), dim=-1)
        return features.float()


def applies(checkpoint) -> bool:
    """Whether the checkpoint is a torch image network on the CPU whose `forward` is `TorchCheckpoint`'s own
    (features and probabilities from `feature_module()`), the only computation the export reproduces.
    TorchScript networks qualify: the exporter inlines their graphs."""
    from .checkpoints.torch_module import TorchCheckpoint

    return (isinstance(checkpoint, TorchCheckpoint) and type(checkpoint).forward is TorchCheckpoint.forward
            and checkpoint.modality == "image" and checkpoint.preprocess is not None
            and torch.device(checkpoint.device).type == "cpu")


def export_key(checkpoint) -> str:
    """sha256 hex over what determines the exported graph: the checkpoint's content (fingerprint, layer), the
    input size it is traced at, whether probabilities are exported, torch's version and the export format."""
    parts = {"format": EXPORT_FORMAT, "opset": OPSET, "checkpoint": checkpoint.fingerprint, "layer": checkpoint.layer,
             "size": checkpoint.preprocess.size, "head": bool(checkpoint.has_head), "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _export(checkpoint, example: torch.Tensor) -> bytes:
    """The ONNX bytes of `_Outputs` traced on `example` (NCHW float32), batch dimension left free."""
    wrapper = _Outputs(checkpoint.feature_module(), bool(checkpoint.has_head)).eval()
    outputs = ["features", "probs"] if checkpoint.has_head else ["features"]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notes: the probe check below is what counts
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["images"],
                          output_names=outputs, dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]})
    return buffer.getvalue()


def _session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _path(key: str, cache_dir):
    return cache_root(cache_dir) / "onnx" / f"{key}.onnx"


def _load_or_export(checkpoint, key: str, example: torch.Tensor, cache_dir, use_cache: bool, threads: int):
    """An onnxruntime session for the checkpoint: this process's, the cached file's, or a fresh export's."""
    if (key, threads) in _SESSIONS:
        _SESSIONS.move_to_end((key, threads))
        return _SESSIONS[(key, threads)]
    path = _path(key, cache_dir)
    session = None
    if use_cache and path.exists():
        try:
            session = _session(str(path), threads)
        except Exception:  # damaged or foreign: export again over it
            path.unlink(missing_ok=True)
    if session is None:
        model = _export(checkpoint, example)
        session = _session(model, threads)
        if use_cache:
            atomic_write(path, model)
    _SESSIONS[(key, threads)] = session
    while len(_SESSIONS) > _KEEP_SESSIONS:
        _SESSIONS.popitem(last=False)
    return session


def onnx_forward(checkpoint, probe: torch.Tensor, rows: int, cache_dir=None, use_cache: bool = True,
                 min_seconds: float | None = None) -> Callable | None:
    """A function batch -> (features, probs) computed by onnxruntime that equals `checkpoint.forward` on
    `probe` (a real NCHW batch, ideally of 3 or more images: the export is traced on the first two and checked
    on all), or None when onnxruntime is unavailable, the network does not export, the outputs differ, or
    exporting would not pay: no copy is in the cache or this process and PyTorch would take less than
    `min_seconds` (default MIN_TORCH_SECONDS) for the `rows` images (estimated from its time on the probe)."""
    if not applies(checkpoint) or probe is None or len(probe) == 0:
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    probe = probe.to(torch.float32).contiguous()
    example = probe[: 2] if len(probe) > 2 else probe
    threads = max(1, torch.get_num_threads())
    key = export_key(checkpoint)
    try:
        with torch.inference_mode():
            reference = checkpoint.forward(probe)
        if (key, threads) not in _SESSIONS and not (use_cache and _path(key, cache_dir).exists()):
            with torch.inference_mode():
                started = time.perf_counter()  # timed warm: the first call also set up the network's kernels
                checkpoint.forward(probe)
            estimate = (time.perf_counter() - started) * rows / len(probe)
            if estimate < (MIN_TORCH_SECONDS if min_seconds is None else min_seconds):
                return None
        session = _load_or_export(checkpoint, key, example, cache_dir, use_cache, threads)

        def forward(batch):
            x = np.ascontiguousarray(torch.as_tensor(batch).numpy(), dtype=np.float32)
            outputs = session.run(None, {"images": x})
            return outputs[0], outputs[1] if len(outputs) > 1 else None

        candidate = forward(probe)
    except CacheWriteError:  # the disk's failure stops the run, as any cache write's does
        raise
    except Exception:  # no export for this network, or onnxruntime refuses the graph: stay with PyTorch
        return None
    return forward if same_outputs(reference, candidate, TOLERANCE) else None
