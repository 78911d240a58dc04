"""Where the features of a PyTorch network come from: the head's input by default, or a named layer.

Each strategy is a `FeatureModule`: an `nn.Module` whose `forward(x)` returns the (B, D) features, with
gradients when called outside inference mode (so a fine-tuning loop can put a new linear layer on top), and
whose `forward_with_logits(x)` also returns the head's logits (B, S) or None. The strategies:

- `TimmStyleFeatures`: models with timm's `forward_features` / `forward_head(pre_logits=True)` (timm models,
  neucrab's EfficientNet-Lite, scripted timm models): the exact pre-logits features, pooling included.
- `HookFeatures`: any other module: hooks capture the input of the head (the last `nn.Linear` of `fc`,
  `classifier`, `head`, ... or of the whole network) or the output of a named layer.
- `OutputFeatures`: a network without a head: its output is the features.

A spatial map (B, C, H, W) is global-average-pooled to (B, C); a token sequence (B, T, D) is averaged over
tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ._common import near_names

# Attribute names under which common model families keep their classification head, most specific first.
HEAD_NAMES = ("fc", "classifier", "head", "heads", "_fc", "last_linear", "logits", "linear")


def pool(output, where: str) -> torch.Tensor:
    """Reduce a layer's output to (B, D): a transformers output's pooled (else last hidden) state, the first
    element of a tuple, then GAP of 4-d maps, token mean of 3-d sequences."""
    if getattr(output, "pooler_output", None) is not None:  # Hugging Face ModelOutput with a pooler
        output = output.pooler_output
    elif getattr(output, "last_hidden_state", None) is not None:
        output = output.last_hidden_state
    elif isinstance(output, (tuple, list)):
        output = output[0]
    elif isinstance(output, dict):
        output = next(iter(output.values()))
    if not isinstance(output, torch.Tensor):
        raise InputError(f"{where}: gives a {type(output).__name__}, expected a tensor to take features from")
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    if output.ndim == 2:
        return output
    if output.ndim == 1:
        return output[:, None]
    return output.flatten(1)


def as_logits(output) -> torch.Tensor | None:
    """A head's output as (B, S) logits, or None when it is not a batch of vectors."""
    if hasattr(output, "logits") and not isinstance(output, torch.Tensor):
        output = output.logits
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        return None
    if output.ndim == 4 and output.shape[2:] == (1, 1):  # 1x1-conv classifiers
        output = output.flatten(1)
    return output if output.ndim == 2 else None


def call(model: nn.Module, x: torch.Tensor):
    """Run a network on an image batch: Hugging Face models take `pixel_values=`, others a positional."""
    if getattr(model, "main_input_name", None) == "pixel_values":
        return model(pixel_values=x)
    return model(x)


def find_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(dotted name, module) of the classification head's final layer, or None if there is no head.

    Order: timm's `get_classifier()`; then the last `nn.Linear` under a conventional head attribute
    (`fc`, `classifier`, `head`, ...); then the last `nn.Linear` registered anywhere in the network.
    """
    names = {id(module): name for name, module in model.named_modules()}
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            classifier = getter()
        except Exception:  # some wrappers expose get_classifier but break on it; fall back to the search
            classifier = None
        if isinstance(classifier, nn.Identity):
            return None
        if isinstance(classifier, nn.Module) and id(classifier) in names:
            return names[id(classifier)], classifier
    for attribute in HEAD_NAMES:
        container = getattr(model, attribute, None)
        if isinstance(container, nn.Module):
            found = _last_linear(container, f"{attribute}.")
            if found is not None:
                return found
    if is_transformers_model(model):
        return None  # a bare transformers backbone: its last Linear is a pooler or an MLP, not a head
    return _last_linear(model, "")


def is_transformers_model(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "main_input_name")


def _last_linear(module: nn.Module, prefix: str) -> tuple[str, nn.Module] | None:
    linears = [(prefix + name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    name, linear = linears[-1]
    return name.rstrip("."), linear


def get_layer(model: nn.Module, layer: str, spec: str) -> nn.Module:
    """The submodule called `layer`, or InputError listing near names."""
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        raise InputError(
            f"{spec}: no layer named {layer!r}; near names: {near_names(layer, [n for n in modules if n])}"
        )
    return modules[layer]


class FeatureModule(nn.Module):
    """Maps an input batch to features (B, D); `forward_with_logits` also gives the head's logits or None."""

    has_head: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_logits(x)[0]

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class TimmStyleFeatures(FeatureModule):
    """Pre-logits features through timm's protocol: forward_head(forward_features(x), pre_logits=True)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        self.has_head = getattr(model, "num_classes", 1) > 0 and not isinstance(classifier, nn.Identity)

    def forward_with_logits(self, x):
        feature_map = self.model.forward_features(x)
        features = pool(self.model.forward_head(feature_map, pre_logits=True), "forward_head")
        # The full head again on the same map (cheap) rather than get_classifier(features): some models
        # (distilled, multi-head) combine several classifiers in forward_head.
        logits = as_logits(self.model.forward_head(feature_map)) if self.has_head else None
        return features, logits


class HookFeatures(FeatureModule):
    """Features captured by hooks during the ordinary forward pass.

    target: the named module whose input (capture="input", used for the head) or output (capture="output",
    used for `layer=`) gives the features. head: the classifier module whose output gives the logits, or None.
    Hooks are registered for the duration of one call only, so the wrapped network stays untouched.
    """

    def __init__(self, model: nn.Module, target: str, capture: str, head: str | None):
        super().__init__()
        self.model = model
        self.target, self.capture, self.head = target, capture, head
        self.has_head = head is not None

    def forward_with_logits(self, x):
        modules = dict(self.model.named_modules())
        seen: dict[str, object] = {}
        if self.capture == "input":
            def grab(module, args):
                seen["features"] = args[0]

            handles = [modules[self.target].register_forward_pre_hook(grab)]
        else:
            def grab(module, args, output):
                seen["features"] = output

            handles = [modules[self.target].register_forward_hook(grab)]
        if self.head is not None:
            def grab_logits(module, args, output):
                seen["logits"] = output

            handles.append(modules[self.head].register_forward_hook(grab_logits))
        try:
            call(self.model, x)
        finally:
            for handle in handles:
                handle.remove()
        if "features" not in seen:
            raise InputError(f"layer {self.target!r} is not used in the network's forward pass")
        features = pool(seen["features"], f"layer {self.target!r}")
        logits = as_logits(seen.get("logits")) if self.head is not None else None
        return features, logits


class OutputFeatures(FeatureModule):
    """A network without a classification head: its (pooled) output is the features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward_with_logits(self, x):
        return pool(call(self.model, x), "the network's output"), None


def is_timm_style(model: nn.Module) -> bool:
    """Whether the model follows timm's forward_features / forward_head(pre_logits=...) protocol."""
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def feature_module_for(model: nn.Module, layer: str | None, spec: str) -> FeatureModule:
    """Pick the strategy for an in-memory nn.Module (see the module docstring)."""
    head = find_head(model)
    if layer is not None:
        get_layer(model, layer, spec)
        return HookFeatures(model, layer, "output", head[0] if head else None)
    if is_timm_style(model):
        return TimmStyleFeatures(model)
    if head is not None:
        return HookFeatures(model, head[0], "input", head[0])
    return OutputFeatures(model)
