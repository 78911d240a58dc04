"""Reading `.npz` archives (numpy.savez output) without trusting them: every member must be a `.npy` array, and
the size its header declares must fit in the bytes the archive holds, checked before numpy allocates it."""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .errors import InputError

# Deflate expands at most ~1032:1, so a member declaring more than that many times the archive's size is a lie.
_MAX_RATIO = 1032
# What a damaged archive makes zipfile / numpy raise: bad zip structure or CRC, unsupported compression methods,
# corrupt deflate streams, truncated reads, malformed .npy headers (numpy parses them as Python literals).
_DAMAGE = (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError, ValueError, SyntaxError,
           tokenize.TokenError)


def _declared_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes the member's .npy header declares for its array (shape x item size)."""
    with archive.open(info) as member:
        version = npy_format.read_magic(member)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(member)
    return math.prod(shape) * dtype.itemsize


def read_npz(path: str | Path, where: str) -> dict[str, np.ndarray]:
    """name -> array of the .npz at `path`; InputError (prefixed with `where`) when it is damaged or declares
    arrays larger than the file can hold."""
    limit = Path(path).stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise InputError(f"{where}: member {info.filename!r} is not a .npy array; expected "
                                     "numpy.savez output")
                room = limit if info.compress_type == zipfile.ZIP_STORED else limit * _MAX_RATIO
                declared = _declared_bytes(archive, info)
                if max(info.file_size, declared) > room or declared > info.file_size:
                    raise InputError(f"{where}: array {info.filename!r} declares {declared} bytes "
                                     f"({info.file_size} in the archive), more than a {limit}-byte file can hold "
                                     "(truncated or corrupt?)")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except InputError:
        raise
    except _DAMAGE as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise InputError(f"{where}: not a readable .npz ({reason}); expected numpy.savez output") from None
