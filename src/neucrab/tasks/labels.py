"""Turning raw labels into class lists and label arrays.

Every loader hands over one tuple of raw labels per sample (one element for single-label tasks, several for
multi-label ones). `encode` sorts the classes (numerically when every class name is an integer, so "10"
follows "9") and returns int codes (N,) or, when any sample has several labels, a multi-hot (N, C) array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sort_classes(names) -> list:
    """Sorted distinct class names: by value when all are integers (or integer strings), else as text."""
    names = list(dict.fromkeys(names))
    try:
        return sorted(names, key=lambda name: int(name))
    except (TypeError, ValueError):
        return sorted(names, key=str)


def encode(label_sets: Sequence[tuple]) -> tuple[np.ndarray, list, bool]:
    """(labels, classes, multilabel) from one tuple of raw labels per sample.

    labels: int64 codes (N,) into `classes`, or int64 multi-hot (N, C) when some sample has several labels.
    """
    classes = sort_classes(label for labels in label_sets for label in labels)
    index = {name: code for code, name in enumerate(classes)}
    multilabel = any(len(labels) > 1 for labels in label_sets)
    if multilabel:
        hot = np.zeros((len(label_sets), len(classes)), dtype=np.int64)
        for row, labels in enumerate(label_sets):
            hot[row, [index[label] for label in labels]] = 1
        return hot, classes, True
    codes = np.fromiter((index[labels[0]] for labels in label_sets), dtype=np.int64, count=len(label_sets))
    return codes, classes, False


def parse_label_field(text: str) -> tuple[str, ...]:
    """A CSV label field as a tuple of class names: "cat|dog" -> ("cat", "dog"); blanks are dropped."""
    parts = (part.strip() for part in text.split("|"))
    return tuple(dict.fromkeys(part for part in parts if part))
