"""Multi-label images built from single-label ones: 2 x 2 mosaics of real tiles, labelled with the set of classes
whose tiles were placed in them.

`compose(pools, count, rng)` draws, per mosaic, how many distinct classes it shows (1 to MAX_CLASSES, uniform),
which classes (uniform, without replacement), and which of its four cells each class fills (every chosen class
at least one cell, the other cells one of the chosen classes again); each cell takes the next unused tile of its
class, so no tile appears twice and a train/test split of the mosaics never shares a tile. The built-in task
`mosaics` (`neucrab.tasks.builtin`) supplies the pools: real patches of shipped photographs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

CELLS = 4  # a 2 x 2 grid: top-left, top-right, bottom-left, bottom-right
MAX_CLASSES = 3


@dataclass(frozen=True)
class Placement:
    """One cell of a mosaic: the class of its tile and the tile's index in that class's pool."""

    label: str
    tile: int


def compose(pools: dict[str, np.ndarray], count: int, rng: np.random.Generator,
            max_classes: int = MAX_CLASSES) -> tuple[np.ndarray, list[tuple[str, ...]], list[tuple[Placement, ...]]]:
    """`count` mosaics of the tiles in `pools` (class -> uint8 tiles (n, T, T, 3), all the same size).

    Returns (images (count, 2T, 2T, 3) uint8, label sets (sorted class names present), placements (the four
    cells of each mosaic in reading order)).
    """
    classes = sorted(pools)
    if not 1 <= max_classes <= min(CELLS, len(classes)):
        raise InputError(f"mosaics: max_classes={max_classes}; expected 1..{min(CELLS, len(classes))}")
    tile = next(iter(pools.values())).shape[1]
    used = dict.fromkeys(classes, 0)
    images = np.zeros((count, 2 * tile, 2 * tile, 3), dtype=np.uint8)
    labels, placements = [], []
    for index in range(count):
        shown = int(rng.integers(1, max_classes + 1))
        chosen = [classes[i] for i in rng.choice(len(classes), shown, replace=False)]
        cells = chosen + [chosen[int(i)] for i in rng.integers(0, shown, CELLS - shown)]
        cells = [cells[i] for i in rng.permutation(CELLS)]
        mosaic = []
        for cell, label in enumerate(cells):
            if used[label] >= len(pools[label]):
                raise InputError(f"mosaics: class {label!r} has {len(pools[label])} tiles, too few for {count} "
                                 "mosaics")
            row, col = divmod(cell, 2)
            images[index, row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = pools[label][used[label]]
            mosaic.append(Placement(label, used[label]))
            used[label] += 1
        labels.append(tuple(sorted(set(cells))))
        placements.append(tuple(mosaic))
    return images, labels, placements
