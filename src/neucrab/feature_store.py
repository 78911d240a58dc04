"""The feature cache: one `.npz` per (checkpoint, task, split, layer, preprocessing), keyed by content.

    <cache root>/<key>.npz                         a complete entry: features, probs (if any), meta (JSON)
    <cache root>/<key>.partial/rows-<a>-<b>.npz    rows a..b-1 of an unfinished extraction

Entries and chunks are written atomically (`neucrab.cache.atomic_write`) and checked on read: a damaged or
foreign file is deleted with a CacheWarning and recomputed, and an interrupted extraction resumes from its
chunks. `cache_key` covers everything that determines the features, so a hit is always the right features.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from .cache import CacheWarning, atomic_write, sweep_stale_temps
from .errors import CacheWriteError

CACHE_FORMAT = 1  # bump when what an entry holds, or how features are computed, changes


def cache_key(checkpoint, task, split: str) -> str:
    """sha256 hex over everything that determines the features of one split."""
    preprocess = checkpoint.preprocess.key() if task.modality == "image" and checkpoint.preprocess else None
    parts = {
        "format": CACHE_FORMAT,
        "checkpoint": checkpoint.fingerprint,
        "task": task.fingerprint,
        "split": split,
        "layer": checkpoint.layer,
        "preprocess": preprocess,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _load_checked(path: Path, key: str, rows: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(features, probs, meta) of an entry or chunk, or ValueError/OSError when it is damaged or does not
    belong to `key` with `rows` rows. Reading every array fully also checks the zip CRCs."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        features = archive["features"]
        probs = archive["probs"] if "probs" in archive.files else None
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        raise ValueError("it belongs to another cache key or format")
    if features.dtype != np.float32 or features.ndim != 2 or features.shape[0] != rows:
        raise ValueError(f"features {features.dtype} {features.shape}, expected float32 with {rows} rows")
    if probs is not None and (probs.dtype != np.float32 or probs.ndim != 2 or probs.shape[0] != rows):
        raise ValueError(f"probs {probs.dtype} {probs.shape}, expected float32 with {rows} rows")
    return features, probs, meta


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda stream: np.savez(stream, **arrays))


def _arrays(meta: dict, features: np.ndarray, probs: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True)), "features": features}
    if probs is not None:
        arrays["probs"] = probs
    return arrays


class FeatureStore:
    """The feature cache under `root` (layout: the module docstring)."""

    _CHUNK = re.compile(r"rows-(\d+)-(\d+)\.npz")

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    def entry(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def partial(self, key: str) -> Path:
        return self.root / f"{key}.partial"

    def read(self, key: str, rows: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The complete entry, or None when absent; a damaged entry is deleted with a CacheWarning."""
        path = self.entry(key)
        if not path.exists():
            return None
        try:
            features, probs, _ = _load_checked(path, key, rows)
        except Exception as error:  # zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, ...
            self._discard(path, error)
            return None
        return features, probs

    def write(self, key: str, features: np.ndarray, probs: np.ndarray | None, meta: dict) -> Path:
        path = self.entry(key)
        _save_npz(path, _arrays({**meta, "key": key, "format": CACHE_FORMAT}, features, probs))
        return path

    def write_chunk(self, key: str, start: int, stop: int, features: np.ndarray, probs: np.ndarray | None):
        """Save rows start..stop-1 of an unfinished extraction. Chunks only serve resumption: when another process
        sharing the cache has finished the entry (and removed the chunks folder, perhaps mid-write), skip it."""
        if self.entry(key).exists():
            return
        meta = {"key": key, "format": CACHE_FORMAT, "start": start, "stop": stop}
        try:
            _save_npz(self.partial(key) / f"rows-{start:010d}-{stop:010d}.npz", _arrays(meta, features, probs))
        except FileNotFoundError:
            if not self.entry(key).exists():
                raise
        except CacheWriteError as error:
            if error.errno != errno.ENOENT or not self.entry(key).exists():
                with contextlib.suppress(OSError):  # leave no empty chunks folder behind (rmdir fails if not)
                    self.partial(key).rmdir()
                raise

    def read_chunks(self, key: str, rows: int) -> list[tuple[int, int, np.ndarray, np.ndarray | None]]:
        """The saved chunks that cover rows 0..k-1 without a gap, in order. A damaged chunk is deleted with a
        CacheWarning, and so is every chunk after it or after a gap (they cannot be used without it)."""
        folder = self.partial(key)
        try:
            names = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = sorted((int(m[1]), int(m[2]), p) for p in names if (m := self._CHUNK.fullmatch(p.name)))
        chunks, expected, width = [], 0, None
        for position, (start, stop, path) in enumerate(found):
            try:
                if start != expected or not start < stop <= rows:
                    raise ValueError(f"rows {start}..{stop} do not continue from row {expected}")
                try:
                    features, probs, _ = _load_checked(path, key, stop - start)
                except FileNotFoundError:  # another process finished the entry and cleared the chunks
                    break
                shape = (features.shape[1], None if probs is None else probs.shape[1])
                if width is not None and shape != width:
                    raise ValueError(f"widths {shape} differ from the earlier chunks' {width}")
            except Exception as error:
                self._discard(path, error)
                for _, _, later in found[position + 1:]:
                    later.unlink(missing_ok=True)
                break
            chunks.append((start, stop, features, probs))
            expected, width = stop, shape
        return chunks

    def clear_chunks(self, key: str) -> None:
        shutil.rmtree(self.partial(key), ignore_errors=True)

    def sweep_temps(self, key: str) -> None:
        """Delete temp files that a killed process left behind (old enough that no writer still owns them)."""
        for folder in (self.root, self.partial(key)):
            sweep_stale_temps(folder)

    @staticmethod
    def _discard(path: Path, error: BaseException) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"neucrab cache: discarding damaged {path} ({reason}); recomputing it",
                      CacheWarning, stacklevel=4)
        path.unlink(missing_ok=True)


