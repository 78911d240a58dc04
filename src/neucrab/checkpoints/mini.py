"""Small image networks for 3x32x32 input, pre-trained by `neucrab pretrain-mini` (Mini-NeuCRaB).

- `mini_cnn`: 4 conv3x3-BN-ReLU blocks (32, 64, 128, 128 channels, 2x2 max-pool between), global average
  pool -> 128-d features.
- `mini_resnet`: stem conv (32) + 2x2 max-pool, then 3 stages of one basic residual block (32, 64, 128
  channels; stride 2 from the second on), global average pool -> 128-d features.
- `mini_mlp`: flatten -> Linear 512 -> ReLU -> Linear 256 -> ReLU -> 256-d features.
- `mini_vit`: 4x4 patches, dim 64, depth 4, 4 heads, MLP ratio 2, learned position embeddings, tokens
  averaged, then LayerNorm -> 64-d features.
- `mini_mobilenet`: MobileNet-v1 style: a conv3x3-BN-ReLU stem (32), then depthwise-separable blocks
  (depthwise conv3x3-BN-ReLU, pointwise conv1x1-BN-ReLU) to 64, 128, 128 channels with stride 2, global
  average pool -> 128-d features.

`Mini*(num_classes)` puts a Linear `head` on the features; num_classes=0 means headless (`head` is an
Identity). The networks follow timm's calling convention (`forward_features`, `forward_head(pre_logits=...)`,
`get_classifier`, `num_classes`), so neucrab's features are the pooled pre-head vector, and
`get_classifier()` tells `find_head` which Linear is the head (else it would take the MLP's or the ViT's last
hidden Linear for a headless network's head).

Grey images are given as 3 equal channels; the preprocessing is `MINI_PREPROCESS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Preprocess

# What `pretrain-mini` trained on: 32x32, bilinear, no crop, pixels in [-1, 1].
MINI_PREPROCESS = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                             crop_pct=1.0)


class MiniNet(nn.Module):
    """timm-style head handling shared by the mini networks; subclasses give `forward_features` and `_pool`."""

    num_features: int

    def _init_head(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """forward_features' output -> pooled features (B, num_features) if pre_logits, else logits."""
        x = self._pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MiniCNN(MiniNet):
    num_features = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 32), nn.MaxPool2d(2),
            conv_bn_relu(32, 64), nn.MaxPool2d(2),
            conv_bn_relu(64, 128), nn.MaxPool2d(2),
            conv_bn_relu(128, 128),
        )
        self._init_head(num_classes)

    def forward_features(self, x):
        return self.features(x)  # (B, 128, 4, 4)

    def _pool(self, x):
        return x.mean(dim=(2, 3))


class BasicBlock(nn.Module):
    """ResNet's basic block: two conv3x3-BN, a 1x1 conv-BN shortcut when the shape changes, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class MiniResNet(MiniNet):
    num_features = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 32), nn.MaxPool2d(2))  # 16x16 from here: a quarter the work
        self.stages = nn.Sequential(BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2))
        self._init_head(num_classes)

    def forward_features(self, x):
        return self.stages(self.stem(x))  # (B, 128, 4, 4)

    def _pool(self, x):
        return x.mean(dim=(2, 3))


class MiniMLP(MiniNet):
    num_features = 256

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(inplace=True),
                                  nn.Linear(512, 256), nn.ReLU(inplace=True))
        self._init_head(num_classes)

    def forward_features(self, x):
        return self.body(x)  # (B, 256)

    def _pool(self, x):
        return x


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block, as in ViT."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MiniViT(MiniNet):
    def __init__(self, num_classes: int = 10, dim: int = 64, depth: int = 4, heads: int = 4, patch: int = 4):
        super().__init__()
        self.num_features = dim
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.randn(1, (32 // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)  # after token averaging, like timm's fc_norm
        self._init_head(num_classes)

    def forward_features(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.blocks(tokens)  # (B, 64 tokens, dim)

    def _pool(self, x):
        return self.norm(x.mean(dim=1))


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNet-v1's block: a depthwise conv3x3-BN-ReLU, then a pointwise conv1x1-BN-ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                         nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class MiniMobileNet(MiniNet):
    num_features = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 32), separable(32, 64, 2), separable(64, 128, 2),
                                      separable(128, 128, 2))
        self._init_head(num_classes)

    def forward_features(self, x):
        return self.features(x)  # (B, 128, 4, 4)

    def _pool(self, x):
        return x.mean(dim=(2, 3))


MINI_ARCHS: dict[str, type[MiniNet]] = {
    "mini_cnn": MiniCNN,
    "mini_resnet": MiniResNet,
    "mini_mlp": MiniMLP,
    "mini_vit": MiniViT,
    "mini_mobilenet": MiniMobileNet,
}
MINI_DEFAULT_CLASSES = 10  # a random (From-Scratch) network gets a 10-way head, the shape of the digit nets
