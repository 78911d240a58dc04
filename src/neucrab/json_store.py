"""Small JSON records keyed by content hashes, as `<root>/<key>.json`: the ground-truth run cache and the
score cache share this. Writes go through `cache.atomic_write`, so a record is absent, old or complete; a
damaged or foreign record is deleted with a CacheWarning and recomputed by the caller. Imports no torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .cache import CacheWarning, atomic_write


class JsonStore:
    """Records as `<root>/<key>.json`. Subclasses name the FIELDS a record must hold and may check more."""

    FIELDS: tuple[str, ...] = ()
    LABEL = "cache"

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def check(self, record: dict) -> None:
        """Raise ValueError when `record` cannot be right (beyond its key and fields)."""

    def read(self, key: str) -> dict | None:
        """The record, or None when absent; a damaged or foreign record is deleted with a CacheWarning."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("key") != key or any(name not in record for name in self.FIELDS):
                raise ValueError("it belongs to another key or lacks fields")
            self.check(record)
        except (OSError, ValueError, AttributeError) as error:
            warnings.warn(f"neucrab {self.LABEL}: discarding damaged {path} ({error}); recomputing it",
                          CacheWarning, stacklevel=3)
            path.unlink(missing_ok=True)
            return None
        return record

    def write(self, key: str, record: dict) -> None:
        """Write atomically: `path` holds nothing, the old record or the complete new one."""
        atomic_write(self.path(key), json.dumps({**record, "key": key}, indent=1, sort_keys=True))
