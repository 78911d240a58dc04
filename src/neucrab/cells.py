"""One checkpoint's row of a ranking, and the typed note a cell carries when it has no score.

A note is a `str` (so JSON, CSV and tables show its text, e.g. "n/a: checkpoint has no classification head")
with a `kind` saying what happened, so code asks `note.kind is NoteKind.FAILED` instead of parsing the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

CSV_FIELDS = ("forward_seconds", "cached", "error")  # a ranking CSV's columns after the measures' scores


def measure_columns(header: list[str]) -> list[str]:
    """The measure columns of a ranking CSV's header: those between `checkpoint` and CSV_FIELDS (a pool
    manifest's columns come after CSV_FIELDS and are not scores)."""
    names = [name.strip().lower() for name in header]
    return list(header[names.index("checkpoint") + 1: names.index(CSV_FIELDS[0])])


def manifest_columns(rows) -> list[str]:
    """The pool manifest columns the rows carry (`Row.manifest`): group first, then the others in the order
    they first appear."""
    return sorted(dict.fromkeys(key for row in rows for key in row.manifest), key=lambda key: key != "group")


class NoteKind(str, Enum):
    NOT_APPLICABLE = "n/a"  # the measure cannot apply here (no head, single-label measure on a multi-label task)
    FAILED = "error"  # the measure raised on this checkpoint
    SATURATED = "saturated"  # the measure returned a value, but one known to carry no information here


class Note(str):
    """A cell's note: its text reads "<kind>: <reason>"; `kind` and `reason` give the parts."""

    kind: NoteKind
    reason: str

    def __new__(cls, kind: NoteKind | str, reason: str) -> Note:
        kind = NoteKind(kind)
        note = super().__new__(cls, f"{kind.value}: {reason}")
        note.kind, note.reason = kind, reason
        return note

    @classmethod
    def parse(cls, text: str) -> Note:
        """A note back from its text (as the score cache and JSON files keep it)."""
        if isinstance(text, Note):
            return text
        prefix, _, reason = str(text).partition(": ")
        try:
            return cls(NoteKind(prefix), reason)
        except ValueError:
            return cls(NoteKind.FAILED, str(text))

    def __reduce__(self):  # pickles (Ray) as kind + reason, not as a bare str
        return Note, (self.kind, self.reason)


def not_applicable(reason: str) -> Note:
    return Note(NoteKind.NOT_APPLICABLE, reason)


def failed(reason: str) -> Note:
    return Note(NoteKind.FAILED, reason)


def saturated(reason: str) -> Note:
    return Note(NoteKind.SATURATED, reason)


@dataclass
class Row:
    """One checkpoint's result. `scores` holds the measures that gave a value; `notes` says why the others did
    not (not applicable, failed) and flags scores that saturated; `error` is set when the checkpoint itself
    failed (could not be loaded or run), and then it has no scores."""

    checkpoint: str
    scores: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Note] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # "load", "forward", ... (score_checkpoint), measures
    cached: bool = False  # features came from the cache: no forward pass was run
    has_head: bool | None = None
    error: str | None = None
    draws: dict[str, list[float]] = field(default_factory=dict)  # measure -> values on subsamples (recommend)
    manifest: dict = field(default_factory=dict)  # a pool manifest row's group and free columns (pool_manifest)

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "scores": dict(self.scores),
            "notes": {name: str(note) for name, note in self.notes.items()},
            "seconds": dict(self.seconds),
            "cached": self.cached,
            "has_head": self.has_head,
            "error": self.error,
            "manifest": dict(self.manifest),
        }
