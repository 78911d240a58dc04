"""`TorchCheckpoint`: a checkpoint backed by a PyTorch network, whatever file or object it came from."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .base import Checkpoint, Preprocess
from .features import FeatureModule


class TorchCheckpoint(Checkpoint):
    """An image checkpoint computed by a PyTorch `nn.Module` (in-memory module, TorchScript archive, weights
    file + architecture, timm or Hugging Face network).

    Beyond `Checkpoint`:

    - `module`: the full network as loaded, head included, put in eval mode.
    - `feature_module()`: an `nn.Module` mapping an input batch (B, 3, H, W), normalised with `preprocess`,
      to the (B, D) features that `forward` returns. It shares its parameters with `module` and
      backpropagates when called outside `torch.inference_mode()`, so a fine-tuning loop can train
      `nn.Sequential(checkpoint.feature_module(), nn.Linear(D, classes))`. Its `forward_with_logits(x)` gives
      (features, source logits or None).
    - `forward(batch)`: float32 numpy features (B, D) and source probabilities (softmax of the head's
      logits, (B, S)) or None, computed under `torch.inference_mode()`.
    - `to(device)`: move the network (CPU by default).
    """

    def __init__(
        self,
        *,
        module: nn.Module,
        features: FeatureModule,
        name: str,
        fingerprint: str,
        preprocess: Preprocess | None,
        layer: str | None = None,
        details: dict | None = None,
    ):
        super().__init__(
            name=name,
            fingerprint=fingerprint,
            modality="image",
            preprocess=preprocess,
            has_head=bool(features.has_head),
            layer=layer,
            details=dict(details or {}),
        )
        self.module = module.eval()
        self._features = features
        self.device = torch.device("cpu")
        # Channels-last input makes convolutions about 1.3-1.5x faster on CPU (oneDNN) for ResNets and
        # EfficientNets (measured); converting the input suffices, so the module's parameters stay as they
        # are (a channels-last state dict would, e.g., refuse to be saved as safetensors).
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in module.modules()) or _is_script_conv(module)

    def feature_module(self) -> FeatureModule:
        """The nn.Module mapping an input batch to the (B, D) features (see the class docstring)."""
        return self._features

    def to(self, device) -> TorchCheckpoint:
        """Run on `device` ("cpu", "cuda", ...) from now on; returns self."""
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def forward(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 3, H, W) float32 images normalised with `preprocess` -> (features (B, D), probs (B, S) or None)."""
        x = torch.as_tensor(batch)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.name}: expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}"
            )
        x = x.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features, logits = self._features.forward_with_logits(x)
            probs = None if logits is None else torch.softmax(logits.float(), dim=-1)
        features = features.float().cpu().numpy()
        return features, None if probs is None else probs.cpu().numpy()


def _is_script_conv(module: nn.Module) -> bool:
    """TorchScript submodules are RecursiveScriptModules; their `original_name` says what they were."""
    return any(getattr(m, "original_name", "") == "Conv2d" for m in module.modules())
