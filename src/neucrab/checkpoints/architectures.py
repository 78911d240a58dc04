"""Architectures that a weights file (`ARCH=PATH`) or a random initialisation (`ARCH:random`) can fill.

- `timm:NAME`: any timm model name (`timm:resnet50`, `timm:convnext_tiny`); preprocessing from its
  pretrained config (timm's `resolve_data_config`).
- `torchvision:NAME`: any torchvision classification model (`torchvision:resnet18`); ImageNet defaults.
- `efficientnet_lite0` ... `efficientnet_lite4`: neucrab's own EfficientNet-Lite (lukemelas key names);
  `efficientnet_lite` reads the variant off the state dict's shapes.
- `mini_cnn`, `mini_resnet`, `mini_mlp`, `mini_vit`: neucrab's small 32x32 networks (`mini.py`), which
  `neucrab pretrain-mini` trains; a random one gets a 10-way head.

The number of classes is read off the weights (the head's weight shape; no head weights = headless), so
fine-tuned checkpoints with any head size load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ._common import near_names, optional_import
from .base import Preprocess
from .efficientnet_lite import VARIANTS, EfficientNetLite, variant_from_state_dict
from .features import find_head
from .mini import MINI_ARCHS, MINI_DEFAULT_CLASSES, MINI_PREPROCESS
from .weights import fit_state_dict

LITE_NAMES = (*VARIANTS, "efficientnet_lite")
KNOWN = "timm:<timm model>, torchvision:<torchvision model>, " + ", ".join((*LITE_NAMES, *MINI_ARCHS))


@dataclass
class Built:
    """A network ready for use, with the preprocessing its config prescribes (None: no config)."""

    module: nn.Module
    preprocess: Preprocess | None
    preprocess_source: str
    arch: str


def build(arch: str, state_dict: dict[str, torch.Tensor] | None, spec: str, seed: int = 0) -> Built:
    """The architecture `arch` holding `state_dict`, or randomly initialised (seeded) when it is None."""
    family, _, model_name = arch.partition(":")
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        if family == "timm" and model_name:
            built = _build_timm(model_name, state_dict, spec)
        elif family == "torchvision" and model_name:
            built = _build_torchvision(model_name, state_dict, spec)
        elif arch in LITE_NAMES:
            built = _build_lite(arch, state_dict, spec)
        elif arch in MINI_ARCHS:
            built = _build_mini(arch, state_dict)
        else:
            raise InputError(f"{spec}: unknown architecture {arch!r}; known: {KNOWN}")
    if state_dict is not None:
        fit_state_dict(built.module, state_dict, spec, arch)
    built.module.eval()
    return built


def _num_classes(model: nn.Module, state_dict: dict | None) -> int | None:
    """The head size the weights imply: rows of the head's weight, 0 if the weights have no head,
    None if they match the default model (or there are no weights)."""
    if state_dict is None:
        return None
    head = find_head(model)
    if head is None:
        return None
    key = f"{head[0]}.weight"
    if key in state_dict:
        rows = state_dict[key].shape[0]
        return None if rows == head[1].weight.shape[0] else rows
    return 0 if not any(k.startswith(head[0] + ".") for k in state_dict) else None


def _build_timm(name: str, state_dict, spec: str) -> Built:
    timm = optional_import("timm", spec)
    if not timm.is_model(name):
        raise InputError(
            f"{spec}: unknown timm architecture {name!r}; near names: {near_names(name, timm.list_models())}"
        )
    model = timm.create_model(name, pretrained=False)
    classes = _num_classes(model, state_dict)
    if classes is not None:
        model = timm.create_model(name, pretrained=False, num_classes=classes)
    return Built(model, timm_preprocess(model), "timm pretrained_cfg", f"timm:{name}")


def timm_preprocess(model: nn.Module) -> Preprocess:
    """The evaluation preprocessing timm prescribes for this model (resolve_data_config)."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    interpolation = config.get("interpolation", "bilinear")
    return Preprocess(
        size=int(config["input_size"][-1]),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
        crop_pct=float(config.get("crop_pct", 0.875)),
    )


def _build_torchvision(name: str, state_dict, spec: str) -> Built:
    models = optional_import("torchvision.models", spec)
    available = models.list_models(module=models)
    if name not in available:
        raise InputError(f"{spec}: unknown torchvision architecture {name!r}; near names: "
                         f"{near_names(name, available)}")
    model = models.get_model(name, weights=None)
    classes = _num_classes(model, state_dict)
    if classes:
        model = models.get_model(name, weights=None, num_classes=classes)
    return Built(model, None, "", f"torchvision:{name}")


def _build_lite(arch: str, state_dict, spec: str) -> Built:
    if arch == "efficientnet_lite":
        variant = variant_from_state_dict(state_dict) if state_dict is not None else None
        if variant is None:
            what = "a random network" if state_dict is None else "these weights"
            raise InputError(
                f"{spec}: cannot tell which EfficientNet-Lite variant {what} is; name it: "
                + ", ".join(VARIANTS)
            )
        arch = variant
    classes = 1000
    if state_dict is not None:
        fc = state_dict.get("_fc.weight")
        classes = fc.shape[0] if fc is not None and fc.ndim == 2 else 0
    model = EfficientNetLite(arch, num_classes=classes)
    return Built(model, VARIANTS[arch].preprocess(), f"{arch} (TF lite preprocessing)", arch)


def _build_mini(arch: str, state_dict) -> Built:
    classes = MINI_DEFAULT_CLASSES
    if state_dict is not None:
        head = state_dict.get("head.weight")
        classes = head.shape[0] if head is not None and head.ndim == 2 else 0
    return Built(MINI_ARCHS[arch](num_classes=classes), MINI_PREPROCESS, f"{arch} (pretrain-mini preprocessing)", arch)
