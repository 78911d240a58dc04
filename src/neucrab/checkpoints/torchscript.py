"""TorchScript archives (`torch.jit.save` output), recognised by content rather than by file extension.

Safety: `torch.jit.load` does not unpickle with Python's pickle. The archive's constants and tensors are read
by TorchScript's own C++ unpickler, which only rebuilds TorchScript types (tensors, lists, dicts, tuples,
primitive values, script classes); it never looks up or calls arbitrary Python globals the way `pickle`
does. The code in `code/` is TorchScript, run by the TorchScript interpreter with TorchScript operators
only; it cannot import Python modules or call Python functions. So loading does not need `--trust-pickle`.
(A hostile archive can still waste memory or time, like any model file.)

Features: TorchScript modules refuse Python hooks, so neucrab uses, in order:
1. a scripted model with timm's `forward_features` / `forward_head(pre_logits=True)` compiled in;
2. the network as the plain sequence of its (flattened) submodules, which holds for ResNet/VGG-style nets
   and `nn.Sequential`: the head is the last `Linear`, the features its input. On the first batch the
   sequence's final output is compared with the archive's own `forward`; if they differ, the archive's
   forward does something else and neucrab refuses rather than return wrong features.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ._common import near_names
from .features import FeatureModule, OutputFeatures, TimmStyleFeatures, as_logits, pool


def is_torchscript(path: str | Path) -> bool:
    """Whether the file is a TorchScript archive: a zip holding `<name>/code/` sources or constants.pkl.

    `torch.save` writes a zip too, but with only `data.pkl` and tensor blobs, never `code/`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in name or name.endswith("constants.pkl") for name in names)


def load_torchscript(path: Path, spec: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # torch >= 2.14 deprecates TorchScript; users' files still come as it
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:  # torch raises RuntimeError with multi-line text for corrupt archives
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{spec}: not a readable TorchScript archive (truncated or corrupt?): {reason}") from None


def _original_name(module: nn.Module) -> str:
    return getattr(module, "original_name", type(module).__name__)


def sequence_steps(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The network as a list of (dotted name, module) steps: children in order, Sequentials expanded
    (a Sequential's forward is, by definition, its children applied in order)."""
    steps = []
    for name, child in model.named_children():
        if _original_name(child) in ("Sequential", "ModuleList") and len(list(child.children())) > 0:
            steps += sequence_steps(child, f"{prefix}{name}.")
        else:
            steps.append((prefix + name, child))
    return steps


class SequentialFeatures(FeatureModule):
    """Features from running a TorchScript network step by step (see the module docstring, point 2).

    stop: the step whose output gives the features (`layer=`), or None for the input of the last Linear.
    """

    def __init__(self, model: nn.Module, stop: str | None, spec: str):
        super().__init__()
        self.model = model
        self.spec = spec
        self.steps = sequence_steps(model)
        self.stop = stop
        linears = [i for i, (_, step) in enumerate(self.steps) if _original_name(step) == "Linear"]
        self.head_index = linears[-1] if linears else None
        self.has_head = self.head_index is not None
        self.verified = False

    def _run(self, x):
        """(features before pooling, head output, final output) of the step-by-step pass."""
        out, features, logits = x, None, None
        for index, (name, step) in enumerate(self.steps):
            if _original_name(step) == "Linear" and out.ndim > 2:
                out = torch.flatten(out, 1)  # what torchvision-style forwards do before their classifier
            if index == self.head_index and self.stop is None:
                features = out
            out = step(out)
            if index == self.head_index:
                logits = out  # the head's own output: steps after it (a Softmax, say) are not logits
            if name == self.stop:
                features = out
        return features, logits, out

    def _verify(self, x):
        """The sequence must reproduce the archive's own forward (in eval mode), or the features mean
        nothing."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                reference = self.model(x)
                try:
                    out = self._run(x)[2]
                except RuntimeError:  # e.g. shapes that only the real forward's extra ops make fit
                    out = None
        finally:
            self.model.train(was_training)
        if not (isinstance(reference, torch.Tensor) and isinstance(out, torch.Tensor)
                and reference.shape == out.shape
                and torch.allclose(reference, out, rtol=1e-4, atol=1e-4)):
            raise InputError(
                f"{self.spec}: this TorchScript network's forward is not the plain sequence of its "
                "submodules, so neucrab cannot find its head's input; export it to ONNX, script a timm "
                "model (forward_features/forward_head), or pass the nn.Module itself"
            )
        self.verified = True

    def forward_with_logits(self, x):
        if not self.verified:
            self._verify(x)
        features, logits, _ = self._run(x)
        logits = as_logits(logits) if self.has_head else None
        return pool(features, f"{self.spec} step {self.stop or 'before the head'}"), logits


def torchscript_features(model: nn.Module, layer: str | None, spec: str) -> FeatureModule:
    """Pick the feature strategy for a loaded TorchScript module."""
    steps = [name for name, _ in sequence_steps(model)]
    if layer is not None:
        # A step, or a Sequential holding consecutive steps (its output is that of its last step).
        inside = [step for step in steps if step == layer or step.startswith(layer + ".")]
        if not inside:
            containers = {step.rsplit(".", 1)[0] for step in steps if "." in step}
            raise InputError(
                f"{spec}: no step named {layer!r} in this TorchScript network (layer= must name one of its "
                f"top-level steps); near names: {near_names(layer, [*steps, *sorted(containers)])}"
            )
        return SequentialFeatures(model, inside[-1], spec)
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return TimmStyleFeatures(model)
    sequential = SequentialFeatures(model, None, spec)
    return sequential if sequential.has_head else OutputFeatures(model)
