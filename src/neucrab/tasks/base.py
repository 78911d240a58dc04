"""`Task` and `Split`, and `assemble`, which every loader calls to validate, encode, split and fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .items import SampleSource
from .labels import encode
from .split import strata_of, stratified_split

TASK_FORMAT = 1  # bump when the fingerprint recipe changes


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a task. `split[i]` is sample i: a PIL RGB image, a str, or a float32 row (D,).

    labels: int64 class codes (N,), or an int64 multi-hot array (N, C) for multi-label tasks.
    """

    name: str
    items: SampleSource  # see neucrab.tasks.items
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    def describe(self, i: int) -> str:
        """Where sample i comes from (a file path, or array name and index), for messages."""
        return self.items.describe(i)


@dataclass(frozen=True, eq=False)
class Task:
    """A labelled downstream task with a train and a test split.

    fingerprint: sha256 hex of the content (file bytes or arrays, labels, split membership and order), not
    of names or paths, so it changes exactly when the extracted features or the labels could.
    modality: "image", "text" or "array". classes: sorted class names; labels index into them.
    skipped: files left out because they could not be decoded (only with skip_unreadable=True).
    """

    name: str
    fingerprint: str
    modality: str
    classes: list
    multilabel: bool
    train: Split
    test: Split
    source: str
    skipped: tuple[str, ...] = ()

    def split(self, name: str) -> Split:
        """The split called `name` ("train" or "test")."""
        if name not in ("train", "test"):
            raise InputError(f"split: got {name!r}; expected 'train' or 'test'")
        return self.train if name == "train" else self.test

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        kind = "multi-label " if self.multilabel else ""
        return (f"Task({self.name!r}, {self.modality}, {kind}{self.n_classes} classes, "
                f"train={len(self.train)}, test={len(self.test)}, fingerprint={self.fingerprint[:12]})")


def _fingerprint(modality: str, classes: list, multilabel: bool, splits: Sequence[Split]) -> str:
    digest = hashlib.sha256(f"neucrab-task|{TASK_FORMAT}|".encode())
    header = {"modality": modality, "classes": [str(name) for name in classes], "multilabel": multilabel}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for split in splits:
        labels = np.ascontiguousarray(split.labels, dtype="<i8")
        digest.update(f"|{split.name}|{len(split)}|{labels.shape}|".encode())
        digest.update(split.items.digest())
        digest.update(labels.data)
    return digest.hexdigest()


def assemble(name: str, source: str, parts: dict, *, seed: int, test_fraction: float,
             skipped: Sequence[str] = ()) -> Task:
    """Build a Task from `parts`: {"train": (items, label_sets), "test": (items, label_sets)} for data
    that comes split, or {"all": (items, label_sets)} to split it here (stratified, seeded).

    label_sets: one tuple of raw class names per sample. `source` prefixes every error message.
    """
    names = list(parts)
    label_sets = [labels for part in names for labels in parts[part][1]]
    labels, classes, multilabel = encode(label_sets)
    if len(classes) < 2:
        shown = ", ".join(map(str, classes)) or "none"
        raise InputError(f"{source}: found {len(classes)} class(es) ({shown}); expected at least 2")
    if names == ["all"]:
        items = parts["all"][0]
        train_rows, test_rows = stratified_split(strata_of(labels), test_fraction, seed)
        chosen = {"train": (items.take(train_rows), labels[train_rows]),
                  "test": (items.take(test_rows), labels[test_rows])}
    else:
        cut = len(parts["train"][1])
        chosen = {"train": (parts["train"][0], labels[:cut]), "test": (parts["test"][0], labels[cut:])}
    for split_name, (items, _) in chosen.items():
        if len(items) == 0:
            raise InputError(f"{source}: the {split_name} split has no samples; expected at least one")
    splits = [Split(split_name, items, split_labels) for split_name, (items, split_labels) in chosen.items()]
    modality = splits[0].items.kind
    fingerprint = _fingerprint(modality, classes, multilabel, splits)
    return Task(name, fingerprint, modality, classes, multilabel, splits[0], splits[1], source, tuple(skipped))
