"""A faster inference copy of a checkpoint's network, used only when it gives the same outputs.

BatchNorm layers that take exactly a convolution's output are folded into that convolution (in float64), and
the copy runs in the channels_last memory layout. The pairs are found by tracing one real forward pass, the
copy's outputs on that batch are compared with the original's, and the original modules, untouched, are put
back after the block (`inference_copy`), so a checkpoint is never changed by extracting from it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

# Largest |copy - original| allowed, relative to the largest original value: float32 rounding of folded BatchNorms.
COPY_TOLERANCE = 1e-3


def _checksum(tensor: torch.Tensor) -> tuple[float, float]:
    values = tensor.detach().double()
    return float(values.sum()), float(values.abs().sum())


def _conv_bn_pairs(module: nn.Module, run: Callable[[], object], keep: str | None) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) pairs where, in one real forward pass (`run`), a BatchNorm2d in eval
    mode took exactly the output of a Conv2d (the same tensor, values unchanged), each module being called
    once. `keep`: the checkpoint's feature layer, whose own output must stay as it is, so never folded."""
    outputs: dict[int, tuple[str, torch.Tensor, tuple[float, float]]] = {}
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []

    def conv_hook(name):
        def hook(_module, _args, output):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(output)] = (name, output, _checksum(output))
        return hook

    def bn_hook(name):
        def hook(_module, args):
            calls[name] = calls.get(name, 0) + 1
            seen = outputs.get(id(args[0]))
            # The very tensor the convolution returned, not modified in place since (checksum).
            if seen is not None and seen[1] is args[0] and _checksum(args[0]) == seen[2]:
                pairs.append((seen[0], name))
        return hook

    handles = []
    try:
        for name, child in module.named_modules():
            is_kept = keep is not None and (name == keep or name.endswith("." + keep))
            if isinstance(child, nn.Conv2d) and not is_kept:
                handles.append(child.register_forward_hook(conv_hook(name)))
            elif type(child) is nn.BatchNorm2d and child.running_var is not None and not child.training:
                handles.append(child.register_forward_pre_hook(bn_hook(name)))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return [(conv, bn) for conv, bn in pairs if calls[conv] == 1 and calls[bn] == 1]


@torch.no_grad()
def _fold(module: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BatchNorm's affine map into its convolution (in float64) and replace it by Identity."""
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias.double() * scale + shift
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        parent_name, _, attribute = bn_name.rpartition(".")
        setattr(module.get_submodule(parent_name), attribute, nn.Identity())


def same_outputs(reference, candidate, tolerance: float) -> bool:
    """Whether each of two (features, probs) outputs agrees within `tolerance` of the reference's largest value."""
    for ref, got in zip(reference, candidate):
        if (ref is None) != (got is None):
            return False
        if ref is None:
            continue
        ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape or not np.isfinite(got).all():
            return False
        if np.abs(ref - got).max(initial=0.0) > tolerance * max(np.abs(ref).max(initial=0.0), 1e-30):
            return False
    return True


def _module_attributes(checkpoint) -> dict[str, nn.Module]:
    """Every nn.Module the checkpoint holds as an attribute (`module`, and e.g. a feature wrapper around it)."""
    return {name: value for name, value in vars(checkpoint).items() if isinstance(value, nn.Module)}


def _swap(checkpoint, modules: dict[str, nn.Module]) -> None:
    for name, value in modules.items():
        setattr(checkpoint, name, value)


def _faster_modules(checkpoint, probe) -> dict[str, nn.Module] | None:
    """Faster copies of the checkpoint's modules whose outputs on `probe` (through `checkpoint.forward`)
    match the originals': BatchNorm folded + channels_last, else channels_last alone; None if neither, or
    if the network has no Conv2d -> BatchNorm2d pair (then the copy would gain little and cost memory).

    The modules are deep-copied together, so one that wraps `module` (a feature extractor) wraps the copy.
    """
    originals = _module_attributes(checkpoint)
    outputs = {}

    def run() -> None:
        outputs["reference"] = checkpoint.forward(probe)

    try:
        with torch.inference_mode():
            pairs = _conv_bn_pairs(checkpoint.module, run, checkpoint.layer)
    except Exception:  # a module that refuses hooks, or anything unexpected: keep the original
        return None
    if not pairs:  # nothing to fold (no BatchNorm convnet): not worth a copy of the network
        return None
    for fold in (True, False):
        try:
            copies = copy.deepcopy(originals)
            if fold:
                _fold(copies["module"], pairs)
            for candidate in copies.values():
                candidate.to(memory_format=torch.channels_last)
            _swap(checkpoint, copies)
            with torch.inference_mode():
                if same_outputs(outputs["reference"], checkpoint.forward(probe), COPY_TOLERANCE):
                    return copies
        except Exception:
            pass
        finally:
            _swap(checkpoint, originals)
    return None


@contextmanager
def inference_copy(checkpoint, probe):
    """For the duration of the block, swap the checkpoint's modules (when it has an nn.Module `module`) for
    `_faster_modules`' copies; the originals, untouched, are always put back. Yields whether it swapped."""
    module = getattr(checkpoint, "module", None)
    faster = None
    if probe is not None and isinstance(module, nn.Module) and not isinstance(module, torch.jit.ScriptModule):
        faster = _faster_modules(checkpoint, probe)
    if faster is None:
        yield False
        return
    originals = _module_attributes(checkpoint)
    _swap(checkpoint, faster)
    try:
        yield True
    finally:
        _swap(checkpoint, originals)


