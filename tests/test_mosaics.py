"""The multi-label built-in task `mosaics`: 2 x 2 mosaics of real photograph patches, each labelled with exactly the
set of classes whose patches it shows. The tiles are found again in the shipped files, read here independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neucrab.errors import InputError
from neucrab.tasks import builtin, load
from neucrab.tasks.mosaics import compose

CLASSES = ["astronaut", "brick", "chelsea", "china", "coffee", "fundus", "grace_hopper", "grass", "gravel", "histology"]


def source_files() -> dict[str, Path]:
    import matplotlib
    import skimage
    import sklearn

    data = Path(skimage.__file__).parent / "data"
    files = {"brick": data / "brick.png", "grass": data / "grass.png", "gravel": data / "gravel.png",
             "fundus": data / "retina.jpg", "histology": data / "ihc.png", "astronaut": data / "astronaut.png",
             "chelsea": data / "chelsea.png", "coffee": data / "coffee.png",
             "china": Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
             "grace_hopper": Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"}
    return files


def tile_index() -> dict[bytes, set[str]]:
    """Every 16 x 16 grid patch of every source photograph (RGB; grey ones repeated) -> the classes it belongs to.
    Medical images in grey as the `medical` task makes them (rounded channel mean); the rest as shipped."""
    index: dict[bytes, set[str]] = {}
    for label, path in source_files().items():
        with Image.open(path) as opened:
            image = np.asarray(opened)
        if label in ("fundus", "histology"):
            image = np.rint(image[..., :3].mean(axis=-1)).astype(np.uint8)
        elif image.ndim == 3:
            image = image[..., :3]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        for r in range(0, image.shape[0] - 15, 16):
            for c in range(0, image.shape[1] - 15, 16):
                index.setdefault(image[r:r + 16, c:c + 16].tobytes(), set()).add(label)
    return index


@pytest.fixture(scope="module")
def task():
    return load("mosaics")


def quadrants(image: np.ndarray) -> list[np.ndarray]:
    return [image[r:r + 16, c:c + 16] for r in (0, 16) for c in (0, 16)]


def test_labels_are_exactly_the_classes_of_the_tiles_found_in_the_shipped_photographs(task):
    index = tile_index()
    assert task.classes == CLASSES and task.multilabel
    for split in (task.train, task.test):
        for i in range(0, len(split), 23):
            image = split.items.array[i]
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            found = set()
            for tile in quadrants(image):
                owners = index[tile.tobytes()]  # a KeyError: a tile that is no grid patch of any source
                assert len(owners) == 1
                found |= owners
            assert {task.classes[c] for c in np.flatnonzero(split.labels[i])} == found
            assert 1 <= len(found) <= 3


def test_no_tile_is_used_twice_so_the_splits_share_none(task):
    tiles = [tile.tobytes() for split in (task.train, task.test) for image in split.items.array
             for tile in quadrants(image)]
    assert len(tiles) == 4 * 800 and len(set(tiles)) == len(tiles)
    assert len(task.train) == 600 and len(task.test) == 200
    counts = np.concatenate([task.train.labels, task.test.labels]).sum(axis=1)
    assert set(np.unique(counts)) == {1, 2, 3}


def test_the_task_is_deterministic_and_takes_a_size_but_no_shots(task):
    builtin.mosaic_task_data.cache_clear()
    builtin.mosaic_tiles.cache_clear()
    assert load("mosaics").fingerprint == task.fingerprint
    subset = load("mosaics:200")
    assert subset.multilabel and len(subset.train) + len(subset.test) == 200
    with pytest.raises(InputError, match="multi-label task has no K images per class"):
        load("mosaics:10shot")


def test_compose_places_each_chosen_class_at_least_once_and_never_reuses_a_tile():
    # Tile j of class k is filled with the value 30 k + j: every cell says where it came from.
    pools = {label: np.stack([np.full((2, 2, 3), 30 * k + j, dtype=np.uint8) for j in range(24)])
             for k, label in enumerate("abcd")}
    images, labels, placements = compose(pools, 6, np.random.default_rng(3))
    assert images.shape == (6, 4, 4, 3)
    seen = set()
    for image, label_set, cells in zip(images, labels, placements):
        values = [int(image[r, c, 0]) for r in (0, 2) for c in (0, 2)]
        assert [(p.label, p.tile) for p in cells] == [("abcd"[v // 30], v % 30) for v in values]
        assert label_set == tuple(sorted({"abcd"[v // 30] for v in values}))
        seen.update(values)
    assert len(seen) == 24  # 6 mosaics x 4 cells, each tile once
    with pytest.raises(InputError, match="too few"):
        compose({label: pool[:2] for label, pool in pools.items()}, 6, np.random.default_rng(3))
