"""Where neucrab keeps what it computed, and the one way it writes files.

Every file neucrab writes (cache entries, run and score records, reports, pre-trained weights, benchmark
results) goes through `atomic_write`: a temp file in the same folder, fsync of the file, `os.replace` over the
target, fsync of the folder, and the temp file removed on any failure. So a reader (or the next run after a
crash) finds nothing, the old file or the complete new one, never half a file. This module imports no torch.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from .errors import CacheWriteError

TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600  # temp files older than this were left by a killed process (on any host)
_HOST = os.uname().nodename.replace("-", "_") if hasattr(os, "uname") else "host"


class CacheWarning(UserWarning):
    """A cache entry or chunk was unreadable or inconsistent and has been discarded (it is recomputed)."""


def default_cache_dir() -> Path:
    """$NEUCRAB_CACHE, else ~/.cache/neucrab."""
    configured = os.environ.get("NEUCRAB_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "neucrab"


def cache_root(cache_dir=None) -> Path:
    """`cache_dir` as a Path, or the default cache folder when it is None."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where directories cannot be opened."""
    with suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write(path, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function writing to a binary stream) to `path` atomically;
    create the folder if needed. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    # The writer's host and pid in the name let a later run remove what a killed writer left at once.
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-",
                                    suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode() if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException as error:
        with suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError) and not isinstance(error, CacheWriteError):
            raise CacheWriteError(path, error) from error
        raise
    fsync_dir(path.parent)
    return path


def _writer_is_gone(temp: Path) -> bool:
    """True when `temp` was made on this host by a process that no longer runs."""
    host, _, rest = temp.name[len(TEMP_PREFIX):].partition("-")
    pid = rest.partition("-")[0]
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def sweep_stale_temps(folder: Path, max_age: float = STALE_TEMP_SECONDS) -> None:
    """Delete temp files in `folder` that a killed process left behind: its writer, on this host, no longer
    runs, or the file is old enough that no writer on any host still owns it."""
    try:
        temps = list(Path(folder).glob(TEMP_PREFIX + "*"))
    except OSError:
        return
    now = time.time()
    for temp in temps:
        with suppress(OSError):
            if _writer_is_gone(temp) or now - temp.stat().st_mtime > max_age:
                temp.unlink()
