"""The score cache: each measure's outcome for one checkpoint's features on one task, so a rerun (a benchmark
after adding a measure) computes only what is new.

    <cache root>/scores/<key>.json    key = sha256 of {format, measure, measure code digest, the feature-cache
                                      keys of both splits, the measure's options}
    <cache root>/draws/<key>.json     a measure's values on the recommendation's subsample draws, all in one

The feature-cache keys cover the checkpoint's bytes, the task's data and labels, the layer and the
preprocessing; the code digest covers the source of every measure and of what they call (`neucrab.measures`,
`_validate.py`, `finetune.py`), so changing a measure's code recomputes its scores instead of serving stale
ones. A record holds the score and/or the note the measure gave (not applicable, failed, saturated: with its kind), and
the seconds it first took. Plugin measures defined outside `neucrab.measures` add their own source file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from functools import cache, lru_cache
from pathlib import Path

from .cache import cache_root
from .cells import NoteKind
from .json_store import JsonStore

SCORE_FORMAT = 2  # 2: records keep the note's kind


class ScoreStore(JsonStore):
    FIELDS = ("measure", "score", "note", "note_kind", "seconds")
    LABEL = "score cache"

    def check(self, record: dict) -> None:
        if record["score"] is None and record["note"] is None:
            raise ValueError("expected a score or a note")
        if record["note"] is not None and record["note_kind"] not in {kind.value for kind in NoteKind}:
            raise ValueError(f"unknown note kind {record['note_kind']!r}")


def score_store(cache_dir=None) -> ScoreStore:
    return ScoreStore(cache_root(cache_dir) / "scores")


class DrawStore(JsonStore):
    """A measure's values on the recommendation's subsample draws (None where a draw gave no score), one record
    for all draws: one file and one fsync instead of one per draw."""

    FIELDS = ("measure", "values", "seconds")
    LABEL = "draw cache"

    def check(self, record: dict) -> None:
        values = record["values"]
        if not isinstance(values, list) or not all(v is None or isinstance(v, (int, float)) for v in values):
            raise ValueError("expected a list of numbers or nulls")


def draw_store(cache_dir=None) -> DrawStore:
    """<cache root>/draws/<key>.json, key = `score_key(measure, feature keys, {"draws": n, "fraction": f})`."""
    return DrawStore(cache_root(cache_dir) / "draws")


@lru_cache(maxsize=1)
def measures_code_digest() -> str:
    """sha256 over the source files that compute the measures."""
    package = Path(__file__).parent
    helpers = ("_validate.py", "finetune.py", "threads.py", "flops.py")
    files = sorted((package / "measures").glob("*.py")) + [package / name for name in helpers]
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@cache
def plugin_code_digest(function) -> str:
    """sha256 of the source file of a measure defined outside neucrab ("" for neucrab's own, which
    `measures_code_digest` covers), so editing a plugin measure recomputes its scores too."""
    if function.__module__.startswith("neucrab."):
        return ""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(function)).read_bytes()).hexdigest()
    except (TypeError, OSError):  # defined interactively: no file to hash; its name and options still key it
        return "no source file"


def score_key(measure: str, feature_keys: tuple[str, str], options: dict) -> str:
    from .measures import REGISTRY

    code = measures_code_digest() + plugin_code_digest(REGISTRY[measure].function)
    parts = {"format": SCORE_FORMAT, "measure": measure, "code": code,
             "features": list(feature_keys), "options": {k: repr(v) for k, v in sorted(options.items())}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
