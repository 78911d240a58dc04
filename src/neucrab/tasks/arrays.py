"""Array tasks from a `.npz`, and the conversion of arrays to images that the built-in datasets share.

Keys: `x_train`, `y_train`, `x_test`, `y_test` (or `x`, `y`, split here, stratified and seeded); optional
`classes`, names for the columns of a multi-hot `y`.

What x holds decides the modality:
- (N, H, W) or (N, H, W, 1): grey images; (N, H, W, 3): RGB images -> modality "image". uint8 is taken as
  is; other numbers must lie in [0, 1] (scaled by 255) or in [0, 255] (taken as is), judged over train and
  test together so both splits are scaled alike.
- (N, D): one feature vector per sample -> modality "array" (float32 rows), for checkpoints that take
  vectors. (Flattened images are not guessed: reshape them to (N, H, W) first.)
y: N labels of any kind (ints, strings) -> single-label, or an (N, C) 0/1 array -> multi-label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._npz import read_npz
from ..errors import InputError
from .base import Task, assemble
from .items import ImageArray, Rows

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def images_uint8(arrays: list[np.ndarray], where: str) -> list[np.ndarray]:
    """Image arrays (N, H, W[, 1|3]) as uint8 (N, H, W) or (N, H, W, 3), scaled alike (see module doc)."""
    for array in arrays:
        if array.dtype.kind not in "uif" or array.dtype == np.bool_:
            raise InputError(f"{where}: images of dtype {array.dtype}; expected uint8, integers or floats")
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            raise InputError(f"{where}: images contain NaN or inf; expected finite pixel values")
    if all(array.dtype == np.uint8 for array in arrays):
        scale = 1.0
    else:
        low = min((float(array.min()) for array in arrays if array.size), default=0.0)
        high = max((float(array.max()) for array in arrays if array.size), default=0.0)
        if low < 0 or high > 255:
            raise InputError(f"{where}: pixel values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 and any(array.dtype.kind == "f" for array in arrays) else 1.0
    out = []
    for array in arrays:
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        out.append(array[..., 0] if array.ndim == 4 and array.shape[-1] == 1 else array)
    return out


def _label_sets(y: np.ndarray, n: int, names, where: str) -> list[tuple]:
    if y.ndim == 1:
        if len(y) != n:
            raise InputError(f"{where}: {len(y)} labels for {n} samples; expected one label per sample")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise InputError(f"{where}: labels contain NaN or inf; expected class labels")
        return [(label,) for label in y.tolist()]
    if y.ndim == 2:
        if len(y) != n:
            raise InputError(f"{where}: {len(y)} label rows for {n} samples; expected one row per sample")
        if not np.isin(y, (0, 1)).all():
            raise InputError(f"{where}: a 2-d label array must be multi-hot 0/1 (N, C)")
        columns = list(names) if names is not None else list(range(y.shape[1]))
        if len(columns) != y.shape[1]:
            raise InputError(f"{where}: 'classes' has {len(columns)} names for {y.shape[1]} label columns")
        sets = [tuple(columns[c] for c in np.flatnonzero(row)) for row in y]
        for index, labels in enumerate(sets):
            if not labels:
                raise InputError(f"{where}: sample {index} has no label (an all-zero row); expected at least one")
        return sets
    raise InputError(f"{where}: labels of shape {y.shape}; expected (N,) or multi-hot (N, C)")


def load_npz(path: Path, *, seed: int, test_fraction: float) -> Task:
    """Load an `.npz` task (see the module docstring)."""
    data = read_npz(path, str(path))
    found = ", ".join(sorted(data)) or "none"
    if "x" in data and "x_train" not in data:
        wanted = ("x", "y")
    else:
        wanted = SPLIT_KEYS
    for key in wanted:
        if key not in data:
            raise InputError(f"{path}: missing array '{key}'; found arrays: {found} "
                             "(expected x_train, y_train, x_test, y_test, or x, y)")
    names = data["classes"].tolist() if "classes" in data else None
    xs = [data["x"]] if wanted == ("x", "y") else [data["x_train"], data["x_test"]]
    ys = [data["y"]] if wanted == ("x", "y") else [data["y_train"], data["y_test"]]
    ndims = {x.ndim for x in xs}
    if ndims == {2}:
        for x in xs:
            if x.dtype.kind not in "uif" or (x.size and not np.isfinite(x.astype(np.float64)).all()):
                raise InputError(f"{path}: feature rows must be finite numbers; got dtype {x.dtype} or NaN/inf")
        if len({x.shape[1] for x in xs}) > 1:
            raise InputError(f"{path}: x_train and x_test have {xs[0].shape[1]} and {xs[1].shape[1]} columns; "
                             "expected the same number")
        items = [Rows(np.ascontiguousarray(x, dtype=np.float32), f"{path}:{key}") for x, key in
                 zip(xs, wanted[::2])]
    elif all(x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3)) for x in xs):
        items = [ImageArray(array, f"{path}:{key}") for array, key in
                 zip(images_uint8(xs, str(path)), wanted[::2])]
    else:
        shapes = ", ".join(str(x.shape) for x in xs)
        raise InputError(f"{path}: x of shape {shapes}; expected images (N, H, W) or (N, H, W, 3), "
                         "or feature rows (N, D)")
    label_sets = [_label_sets(y, len(x), names, f"{path}:{key}") for x, y, key in zip(xs, ys, wanted[1::2])]
    if wanted == ("x", "y"):
        parts = {"all": (items[0], label_sets[0])}
    else:
        parts = {"train": (items[0], label_sets[0]), "test": (items[1], label_sets[1])}
    return assemble(path.stem, str(path), parts, seed=seed, test_fraction=test_fraction)
