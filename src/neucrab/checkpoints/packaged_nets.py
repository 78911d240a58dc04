"""The PyTorch networks behind three `packaged:NAME` checkpoints whose weights come without an architecture
neucrab knows (`packaged.py` names them; every file is read with `torch.load(weights_only=True)`).

- `CraftBackbone` (`packaged:craft_vgg16_bn`): the VGG16-BN backbone of CRAFT, the text detector that
  EasyOCR ships (`craft_mlt_25k.pth`; Baek et al., CVPR 2019). CRAFT builds its backbone from torchvision's
  `vgg16_bn().features` modules 0-38, cut into `basenet.slice1` (0-11), `slice2` (12-18), `slice3` (19-28) and
  `slice4` (29-38) with the original module numbers kept, so `module.basenet.sliceK.N.*` is torchvision's
  `features.N.*`: 12 convolutions (conv1_1 .. conv5_2) with their batch norms, 84 tensors in all. conv5_3 is
  not part of CRAFT. The backbone is torchvision's `vgg16_bn().features[:39]`, loaded strictly from those 84
  tensors. Features: slice4's output, global-average-pooled (512-d) -- the batch-normalised conv5_2 map, the
  deepest layer of the VGG16-BN backbone and what CRAFT itself passes to its U-net decoder (CRAFT calls it
  `relu5_3`, although no ReLU follows it; none is added here). Not used: CRAFT's `slice5` (fc6/fc7, two
  convolutions CRAFT adds on top of VGG, trained from scratch, 4 tensors), its U-net (`upconv1-4`) and its
  region/affinity head (`conv_cls`; 66 tensors): they map back to pixels, not part of the backbone. There is no
  classifier (has_head False). Input: RGB with ImageNet mean/std, as CRAFT normalises.
- `EasyOcrRecognizer` (`packaged:easyocr_english_g2`): EasyOCR's `english_g2` text-line recogniser (a
  VGG-style CNN, two BiLSTMs and a 97-way per-column CTC classifier over 1-channel 64-pixel-high lines), all
  44 tensors loaded strictly. Features: the CNN's output (its last conv + ReLU, `FeatureExtraction.ConvNet`,
  256 channels), global-average-pooled (256-d): the visual backbone. The BiLSTMs model the sequence of
  columns (reading order) and the CTC layer scores characters per column, not images, so there is no head
  (has_head False); `layer="SequenceModeling"` gives the BiLSTM output averaged over columns instead. The
  network reads grey images: the RGB batch is converted inside the network (ITU-R 601 luma, 0.299 R +
  0.587 G + 0.114 B, as OpenCV's RGB2GRAY, computed on the un-normalised pixels) and normalised as EasyOCR does
  ((grey - 0.5) / 0.5).
- `MtcnnONet` (`packaged:mtcnn_onet`): the output network of MTCNN (Zhang et al., 2016; weights converted
  from the authors' Caffe models by TropComplique/mtcnn-pytorch, as packaged by fdet), a face / non-face
  classifier on 48x48 crops that also regresses a box and 5 landmarks. Features: the 256-d `prelu5` output,
  the input of its three heads; logits: the face / non-face head `conv6_1` (2 source classes: 0 = not a
  face, 1 = face). The box and landmark heads are loaded but unused. The network takes exactly 48x48 (a
  Linear layer follows the convolutions), so other sizes are resized (bilinear) to 48x48 first. Its Flatten
  transposes H and W before flattening, as the converted Caffe weights need.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .features import FeatureModule, pool

# What each network was trained on (see the module docstring).
CRAFT_PREPROCESS = Preprocess(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
                              crop_pct=1.0)
EASYOCR_PREPROCESS = Preprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                                crop_pct=1.0)
MTCNN_PREPROCESS = Preprocess(size=48, mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3, interpolation="bilinear",
                              crop_pct=1.0)  # MTCNN: (pixel - 127.5) / 128

CRAFT_SLICES = {1: range(0, 12), 2: range(12, 19), 3: range(19, 29), 4: range(29, 39)}
LUMA = (0.299, 0.587, 0.114)
MTCNN_SIZE = 48


def strict_load(module: nn.Module, state_dict: dict[str, torch.Tensor], spec: str, what: str) -> None:
    """Load `state_dict` into `module`: every tensor used and every one of the module's tensors filled, with
    equal shapes; InputError naming the first problems otherwise."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [f"{k}: file {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state_dict.items()
                 if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or misshapen:
        problems = [f"{len(items)} {label}, e.g. {', '.join(items[:3])}" for label, items in
                    (("shape mismatch(es)", misshapen), ("missing", missing), ("unexpected", unexpected)) if items]
        raise InputError(f"{spec}: the weights do not fit {what}: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)


def _under(state_dict: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------- CRAFT
class CraftBackbone(nn.Module):
    """torchvision's `vgg16_bn().features[:39]` (CRAFT's basenet slices 1-4); forward gives the (B, 512, H/16,
    W/16) map of slice4 (batch-normalised conv5_2)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import vgg16_bn

        self.features = vgg16_bn(weights=None).features[:39]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def craft_state_dict(state_dict: dict[str, torch.Tensor], spec: str) -> dict[str, torch.Tensor]:
    """CRAFT's `module.basenet.sliceK.N.*` tensors (K = 1..4) renamed to torchvision's `features.N.*`, checking
    that each N lies in slice K's range of torchvision indices."""
    renamed = {}
    for key, tensor in state_dict.items():
        for slice_number, indices in CRAFT_SLICES.items():
            prefix = f"module.basenet.slice{slice_number}."
            if not key.startswith(prefix):
                continue
            index, _, rest = key[len(prefix):].partition(".")
            if not index.isdigit() or int(index) not in indices:
                raise InputError(f"{spec}: {key}: module {index} is outside CRAFT's slice{slice_number} "
                                 f"(torchvision vgg16_bn.features {indices.start}-{indices.stop - 1})")
            renamed[f"features.{index}.{rest}"] = tensor
    if not renamed:
        raise InputError(f"{spec}: no module.basenet.slice1-4 tensors: not a CRAFT checkpoint")
    return renamed


def build_craft(state_dict: dict[str, torch.Tensor], spec: str) -> CraftBackbone:
    model = CraftBackbone()
    strict_load(model, craft_state_dict(state_dict, spec), spec, "torchvision vgg16_bn.features[:39]")
    return model.eval()


# ----------------------------------------------------------------------------------------------- EasyOCR
class RgbToGrey(nn.Module):
    """A normalised RGB batch -> the 1-channel grey batch EasyOCR's recogniser reads: un-normalise with the
    checkpoint's mean/std, luma (0.299, 0.587, 0.114), then (grey - 0.5) / 0.5."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        pixels = x * self.std + self.mean
        grey = (pixels * self.luma).sum(dim=1, keepdim=True)
        return (grey - 0.5) / 0.5


class EasyOcrFeatureExtractor(nn.Module):
    """EasyOCR's VGG_FeatureExtractor: 7 convolutions (32, 64, 128, 128, 256 + BN, 256 + BN, 256), max-pools
    2x2, 2x2, 2x1, 2x1; a 64-pixel-high line becomes a (B, 256, 3, W/4 - 1) map."""

    def __init__(self, input_channel: int = 1, output_channel: int = 256):
        super().__init__()
        c = [output_channel // 8, output_channel // 4, output_channel // 2, output_channel]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(input_channel, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)


class BidirectionalLSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.rnn(x)[0])


class EasyOcrRecognizer(nn.Module):
    """EasyOCR's generation-2 recogniser (VGG CNN, 2 BiLSTMs, CTC Linear) taking a normalised RGB batch:
    forward gives the per-column CTC logits (B, T, classes)."""

    def __init__(self, num_class: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), hidden_size: int = 256,
                 output_channel: int = 256):
        super().__init__()
        self.to_grey = RgbToGrey(mean, std)
        self.FeatureExtraction = EasyOcrFeatureExtractor(1, output_channel)
        self.SequenceModeling = nn.Sequential(BidirectionalLSTM(output_channel, hidden_size, hidden_size),
                                              BidirectionalLSTM(hidden_size, hidden_size, hidden_size))
        self.Prediction = nn.Linear(hidden_size, num_class)

    def visual_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.FeatureExtraction(self.to_grey(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.visual_features(x).permute(0, 3, 1, 2).mean(dim=3)  # (B, W', C): EasyOCR's pool over H
        return self.Prediction(self.SequenceModeling(columns))


def build_easyocr(state_dict: dict[str, torch.Tensor], spec: str, preprocess: Preprocess) -> EasyOcrRecognizer:
    weights = _under(state_dict, "module.") if all(k.startswith("module.") for k in state_dict) else state_dict
    head = weights.get("Prediction.weight")
    if head is None or head.ndim != 2:
        raise InputError(f"{spec}: no Prediction.weight: not an EasyOCR generation-2 recogniser")
    model = EasyOcrRecognizer(head.shape[0], preprocess.mean, preprocess.std)
    strict_load(model, weights, spec, "EasyOCR's VGG + BiLSTM recogniser")
    return model.eval()


class CnnFeatures(FeatureModule):
    """The recogniser's CNN output (B, 256, H', W'), global-average-pooled; no head."""

    def __init__(self, model: EasyOcrRecognizer):
        super().__init__()
        self.model = model

    def forward_with_logits(self, x):
        return pool(self.model.visual_features(x), "EasyOCR's CNN"), None


# ----------------------------------------------------------------------------------------------- MTCNN
class TransposedFlatten(nn.Module):
    """(B, C, H, W) -> (B, C*W*H): H and W swapped first, the layout of the Caffe weights (Caffe's MATLAB
    MTCNN ran on transposed images)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(3, 2).contiguous().flatten(1)


class MtcnnONet(nn.Module):
    """MTCNN's O-Net with fdet's / mtcnn-pytorch's parameter names; forward gives the face / non-face logits
    (B, 2) of a batch resized to 48x48."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 32, 3, 1)), ("prelu1", nn.PReLU(32)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(32, 64, 3, 1)), ("prelu2", nn.PReLU(64)),
            ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(64, 64, 3, 1)), ("prelu3", nn.PReLU(64)),
            ("pool3", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv4", nn.Conv2d(64, 128, 2, 1)), ("prelu4", nn.PReLU(128)),
            ("flatten", TransposedFlatten()),
            ("conv5", nn.Linear(1152, 256)), ("drop5", nn.Dropout(0.25)), ("prelu5", nn.PReLU(256)),
        ]))
        self.conv6_1 = nn.Linear(256, 2)  # face / non-face
        self.conv6_2 = nn.Linear(256, 4)  # box offsets
        self.conv6_3 = nn.Linear(256, 10)  # 5 landmarks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != (MTCNN_SIZE, MTCNN_SIZE):
            x = F.interpolate(x, size=(MTCNN_SIZE, MTCNN_SIZE), mode="bilinear", align_corners=False)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv6_1(self.embed(x))


def build_mtcnn_onet(state_dict: dict[str, torch.Tensor], spec: str) -> MtcnnONet:
    model = MtcnnONet()
    strict_load(model, state_dict, spec, "MTCNN's O-Net")
    return model.eval()


class ONetFeatures(FeatureModule):
    """O-Net's prelu5 output (B, 256) and its face / non-face logits (B, 2)."""

    has_head = True

    def __init__(self, model: MtcnnONet):
        super().__init__()
        self.model = model

    def forward_with_logits(self, x):
        features = self.model.embed(x)
        return features, self.model.conv6_1(features)
