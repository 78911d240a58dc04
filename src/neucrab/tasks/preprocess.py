"""Image preprocessing for a checkpoint's `Preprocess`: the standard evaluation transform.

Resize the shorter side to floor(size / crop_pct) with the named PIL filter, centre-crop size x size, scale
to [0, 1] and normalise by mean/std. Every step follows torchvision's `Resize(int)`, `CenterCrop`,
`ToTensor` and `Normalize` (the transforms timm builds for evaluation) operation by operation, so the
tensors are identical to theirs, and deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..checkpoints.base import Preprocess
from ..errors import InputError

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resample_filter(preprocess: Preprocess) -> Image.Resampling:
    try:
        return RESAMPLE[preprocess.interpolation]
    except KeyError:
        raise InputError(f"preprocess.interpolation: got {preprocess.interpolation!r}; expected one of "
                         f"{', '.join(RESAMPLE)}") from None


def resize_crop(image: Image.Image, preprocess: Preprocess) -> Image.Image:
    """An RGB image (any size) -> the size x size RGB crop the network sees."""
    size = preprocess.size
    short_target = math.floor(size / preprocess.crop_pct)
    width, height = image.size
    # torchvision's Resize(int): the shorter side becomes short_target, the longer one is truncated.
    if width <= height:
        new_size = (short_target, int(short_target * height / width))
    else:
        new_size = (int(short_target * width / height), short_target)
    if new_size != image.size:
        image = image.resize(new_size, resample_filter(preprocess))
    # torchvision's CenterCrop: zero-pad a side that is too short ((c - n) // 2 on the left/top), else
    # round((n - c) / 2) from the left/top. PIL's crop fills outside the image with zeros.
    offsets = [-((size - n) // 2) if n < size else int(round((n - size) / 2.0)) for n in image.size]
    return image.crop((offsets[0], offsets[1], offsets[0] + size, offsets[1] + size))


def normalize(pixels: np.ndarray, preprocess: Preprocess, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S): x / 255, then (x - mean) / std per channel.

    channels_last: lay the result out in memory as (B, S, S, 3) (the layout it already has, so no copy),
    which is what a network converted to channels_last wants.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32, memory_format=layout)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.div_(255.0).sub_(mean).div_(std)


def preprocess_images(images, preprocess: Preprocess, channels_last: bool = False) -> torch.Tensor:
    """PIL RGB images -> the normalised float32 batch (B, 3, size, size)."""
    size = preprocess.size
    pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for row, image in enumerate(images):
        pixels[row] = np.asarray(resize_crop(image, preprocess))
    return normalize(pixels, preprocess, channels_last)
