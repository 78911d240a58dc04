"""What every loaded checkpoint looks like to the rest of neucrab.

A `Checkpoint` maps a batch of task inputs to features (the input of the classification head, or a named
layer) and, where the network has a head, source-class probabilities. The extraction code only ever calls
`forward`; it never needs to know which framework or file format the checkpoint came from.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input: resize the shorter side to size / crop_pct, centre-crop
    `size`, scale to [0, 1], normalise by mean/std (channels RGB)."""

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"
    crop_pct: float = 0.875

    def key(self) -> str:
        """A stable text form, part of the feature-cache key."""
        return f"{self.size}|{self.mean}|{self.std}|{self.interpolation}|{self.crop_pct}"


@dataclass
class Checkpoint:
    """A loaded checkpoint. Subclasses implement `forward`.

    name: short display name. fingerprint: hex digest of everything that determines the outputs (weights
    bytes, architecture, layer, preprocessing), used as the feature-cache key. modality: "image" (forward
    takes a float32 tensor (B, 3, H, W) already normalised with `preprocess`), "text" (a list of B strings)
    or "features" (precomputed; see `PrecomputedCheckpoint`). has_head: whether forward returns source-class
    probabilities.
    """

    name: str
    fingerprint: str
    modality: str
    preprocess: Preprocess | None = None
    has_head: bool = False
    layer: str | None = None
    details: dict = field(default_factory=dict)  # architecture, source file, etc., for reports
    channels_last: bool = False

    def forward(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (features float32 (B, D), source probabilities float32 (B, S) or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")


@runtime_checkable
class Trainable(Protocol):
    """A checkpoint carrying a PyTorch network: `module` (the whole network, head included) and
    `feature_module()`, an nn.Module from an input batch to the (B, D) features that shares its parameters and
    backpropagates (what fine-tuning trains, with a new linear head)."""

    module: object

    def feature_module(self): ...


@runtime_checkable
class OnDevice(Protocol):
    """A checkpoint whose network can run on a torch device: `device` now, `to(device)` to move it."""

    device: object

    def to(self, device): ...


@runtime_checkable
class Tokenizing(Protocol):
    """A text checkpoint: `tokenize(texts)` gives the tensors its feature module takes."""

    def tokenize(self, texts) -> dict: ...


@runtime_checkable
class Derived(Protocol):
    """A checkpoint whose features can be computed from another checkpoint's: `derived_from()` gives (that
    checkpoint, a function from its (N, D') features to these (N, D)), or None when they are computed on their
    own. Extraction caches the other checkpoint's features and derives these (a text encoder's layers from its
    all-layer stack: one forward pass for every layer)."""

    def derived_from(self): ...


@runtime_checkable
class SizeChecked(Protocol):
    """A checkpoint that accepts only some input sizes: `check_input_size(size)` raises InputError otherwise."""

    def check_input_size(self, size: int) -> None: ...


def at_image_size(checkpoint: Checkpoint, size: int | None) -> Checkpoint:
    """`checkpoint` fed images of `size` pixels instead of its own input size (None or the same size: itself).

    A shallow copy with the preprocessing's size replaced; the feature cache keys on the preprocessing, so
    features at different sizes never collide. Used where measures and fine-tuning must see the same inputs
    at a size smaller than the checkpoint's own (a benchmark scaled to a CPU).
    """
    if size is None or checkpoint.modality != "image" or checkpoint.preprocess is None:
        return checkpoint
    from .._validate import check_count

    size = check_count(size, "image_size")
    if size == checkpoint.preprocess.size:
        return checkpoint
    resized = copy.copy(checkpoint)
    resized.preprocess = dataclasses.replace(checkpoint.preprocess, size=size)
    return resized
