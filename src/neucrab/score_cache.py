"""The score cache: each measure's outcome for one checkpoint's features on one task, so a rerun (a benchmark
after adding a measure) computes only what is new.

    <cache root>/scores/<key>.json    key = sha256 of {format, measure, measure code digest, the feature-cache
                                      keys of both splits, the measure's options}

The feature-cache keys cover the checkpoint's bytes, the task's data and labels, the layer and the
preprocessing; the code digest covers the source of every measure and of what they call (`neucrab.measures`,
`_validate.py`, `finetune.py`), so changing a measure's code recomputes its scores instead of serving stale
ones. A record holds the score, or the note (an error) the measure gave, and the seconds it first took.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .json_store import JsonStore

SCORE_FORMAT = 1


class ScoreStore(JsonStore):
    FIELDS = ("measure", "score", "note", "seconds")
    LABEL = "score cache"

    def check(self, record: dict) -> None:
        if (record["score"] is None) == (record["note"] is None):
            raise ValueError("expected a score or a note, not both or neither")


def score_store(cache_dir=None) -> ScoreStore:
    from .extract import default_cache_dir

    return ScoreStore(Path(cache_dir if cache_dir is not None else default_cache_dir()) / "scores")


@lru_cache(maxsize=1)
def measures_code_digest() -> str:
    """sha256 over the source files that compute the measures."""
    package = Path(__file__).parent
    files = sorted((package / "measures").glob("*.py")) + [package / "_validate.py", package / "finetune.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def score_key(measure: str, feature_keys: tuple[str, str], options: dict) -> str:
    parts = {"format": SCORE_FORMAT, "measure": measure, "code": measures_code_digest(),
             "features": list(feature_keys), "options": {k: repr(v) for k, v in sorted(options.items())}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
