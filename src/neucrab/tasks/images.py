"""Image files: which files count as images, reading and checking them, decoding to RGB.

A task checks every image once when it is loaded (hashing its bytes for the fingerprint and decoding it), so
an unreadable file is reported, or skipped, before any extraction starts. JPEGs are checked with PIL's
draft mode (the decoder still walks the whole entropy-coded stream, so truncation shows, but at 1/8 scale).
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ..errors import InputError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def is_image_name(path: Path) -> bool:
    """Whether a file name looks like an image we read (hidden files never do)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def inspect_image(path: Path) -> tuple[bytes | None, str | None]:
    """(sha256 digest of the file's bytes, None) if it decodes, else (None, one-line reason)."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))
            image.load()
    except FileNotFoundError:
        return None, "file not found"
    except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, DecompressionBombError, ...)
        return None, _reason(error)
    return hashlib.sha256(data).digest(), None


def inspect_images(paths: list[Path]) -> list[tuple[bytes | None, str | None]]:
    """`inspect_image` for every path, in order, on a thread pool (file I/O, hashing and decoding release
    the GIL)."""
    if len(paths) < 16:
        return [inspect_image(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(inspect_image, paths, chunksize=16))


def open_rgb(path: Path) -> Image.Image:
    """The image at `path` decoded as RGB (grey, palette, CMYK and alpha images converted), or InputError."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:
        reason = _reason(error)
        raise InputError(f"{path}: unreadable image ({reason}); expected an image file PIL can decode") from None


def unreadable_message(path: Path, reason: str) -> str:
    return (f"{path}: unreadable image ({reason}); expected an image file PIL can decode "
            "(or load the task with skip_unreadable=True to skip such files)")
