"""Where a split's samples live: image files, an in-memory image array, texts or feature rows.

Each source is a small sequence (`len`, `[i]`), can be subset with `take(indices)`, describes sample i for
error messages, and gives an order-sensitive `digest()` of its content for the task fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from .images import open_rgb


@runtime_checkable
class SampleSource(Protocol):
    """What every source below offers (and what a new task format's source must offer)."""

    kind: str  # "image", "text" or "features"

    def __len__(self) -> int: ...

    def __getitem__(self, i: int): ...

    def take(self, indices: np.ndarray) -> SampleSource: ...

    def describe(self, i: int) -> str: ...

    def digest(self) -> bytes: ...


def _array_digest(array: np.ndarray) -> bytes:
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


class ImageFiles:
    """Image files decoded on access: `[i]` is a PIL RGB image. digests: sha256 of each file's bytes."""

    kind = "image"

    def __init__(self, paths: list[Path], digests: list[bytes]):
        self.paths, self.digests = list(paths), list(digests)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        return open_rgb(self.paths[i])

    def take(self, indices: np.ndarray) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], [self.digests[i] for i in indices])

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    def digest(self) -> bytes:
        return hashlib.sha256(b"files|" + b"".join(self.digests)).digest()


class ImageArray:
    """Images held as a uint8 array (N, H, W) (grey) or (N, H, W, 3) (RGB): `[i]` is a PIL RGB image."""

    kind = "image"

    def __init__(self, array: np.ndarray, origin: str):
        self.array, self.origin = array, origin

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> Image.Image:
        image = Image.fromarray(self.array[i])
        return image if image.mode == "RGB" else image.convert("RGB")

    def take(self, indices: np.ndarray) -> ImageArray:
        return ImageArray(self.array[indices], self.origin)

    def describe(self, i: int) -> str:
        return f"{self.origin}[{i}]"

    def digest(self) -> bytes:
        return _array_digest(self.array)


class Texts:
    """Strings: `[i]` is a str."""

    kind = "text"

    def __init__(self, texts: list[str], origin: str):
        self.texts, self.origin = list(texts), origin

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]

    def take(self, indices: np.ndarray) -> Texts:
        return Texts([self.texts[i] for i in indices], self.origin)

    def describe(self, i: int) -> str:
        return f"{self.origin} text {i}"

    def digest(self) -> bytes:
        digest = hashlib.sha256(b"texts|")
        for text in self.texts:
            data = text.encode()
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.digest()


class Rows:
    """Feature vectors held as a float32 array (N, D): `[i]` is row i (D,)."""

    kind = "array"

    def __init__(self, array: np.ndarray, origin: str):
        self.array, self.origin = array, origin

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]

    def take(self, indices: np.ndarray) -> Rows:
        return Rows(self.array[indices], self.origin)

    def describe(self, i: int) -> str:
        return f"{self.origin}[{i}]"

    def digest(self) -> bytes:
        return _array_digest(self.array)
