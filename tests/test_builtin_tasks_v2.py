"""The second set of built-in tasks (glyphs, typefaces, photos, medical) and the few-shot spec NAME:Kshot.

Each task: loads with the network blocked, has its documented classes and counts, is deterministic, and its
content is checked against the shipped files it claims to come from (read here independently).
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from neucrab.errors import InputError
from neucrab.tasks import builtin
from neucrab.tasks.builtin import BUILTINS, FEWSHOT_TEST_PER_CLASS, is_size_spec, load_builtin

# The data ship inside scikit-image and matplotlib (the examples extra, installed by scripts/setup: CI runs these).
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

NEW = {  # name: (classes, images per class)
    "glyphs": (list("abcdefghijklmnopqrstuvwxyz"), 40),
    "typefaces": (sorted(["dejavu_sans", "dejavu_sans_mono", "dejavu_serif", "stix_general", "cm_roman", "cm_sans",
                          "cm_typewriter"]), 120),
    "photos": (sorted(["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "china", "flower",
                       "grace_hopper"]), 100),
    "medical": (["fundus", "histology", "phase"], 200),
}
CACHED = (builtin._glyphs, builtin._typefaces, builtin.photo_patches, builtin.medical_patches, builtin._font)


def clear_caches():
    for function in CACHED:
        function.cache_clear()


def load(name, seed=0, size=None):
    return load_builtin(name, seed=seed, test_fraction=0.25, size=size)


def all_images(task) -> list[bytes]:
    return [split.items.array[i].tobytes() for split in (task.train, task.test) for i in range(len(split))]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a built-in task tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    clear_caches()
    yield
    clear_caches()


# ------------------------------------------------------------------------------------ classes and counts


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_task_loads_offline_with_its_documented_classes_and_counts(name, offline):
    classes, per_class = NEW[name]
    task = load(name)
    assert name in BUILTINS and task.name == name and task.modality == "image" and not task.multilabel
    assert task.classes == classes
    total = len(classes) * per_class
    assert len(task.train) + len(task.test) == total and len(task.test) == total // 4
    labels = np.concatenate([task.train.labels, task.test.labels])
    assert np.bincount(labels, minlength=len(classes)).tolist() == [per_class] * len(classes)
    assert np.all(np.abs(np.bincount(task.test.labels) - per_class / 4) <= 1)  # stratified
    images = all_images(task)
    assert len(set(images)) == len(images)  # no image twice, so none is in both splits
    image = task.train[0]
    assert image.mode == "RGB" and image.size == {"medical": (16, 16)}.get(name, (32, 32))
    assert task.train.items.array.dtype == np.uint8
    assert task.train.items.array.ndim == (4 if name == "photos" else 3)  # RGB photos, grey otherwise


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_task_is_deterministic_and_its_content_does_not_follow_the_split_seed(name):
    first = load(name)
    clear_caches()  # built again from the files, not served from the cache
    again = load(name)
    assert again.fingerprint == first.fingerprint
    other = load(name, seed=5)
    assert other.fingerprint != first.fingerprint  # another split ...
    assert Counter(all_images(other)) == Counter(all_images(first))  # ... of the same images
    # The cached arrays cannot be changed by a caller.
    images, _ = BUILTINS[name]()
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1


# ------------------------------------------------------------------------- content against the sources


def test_photo_patches_are_slices_of_the_shipped_photographs():
    import matplotlib
    import skimage
    import sklearn

    files = {name: Path(skimage.__file__).parent / "data" / file for name, file in
             [("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
              ("rocket", "rocket.jpg"), ("hubble_deep_field", "hubble_deep_field.jpg")]}
    files.update({name: Path(sklearn.__file__).parent / "datasets" / "images" / f"{name}.jpg"
                  for name in ("china", "flower")})
    files["grace_hopper"] = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    patches, labels, origins = builtin.photo_patches()
    assert patches.shape == (800, 32, 32, 3) and origins.shape == (800, 2)
    for name, path in files.items():
        with Image.open(path) as opened:
            photo = np.asarray(opened.convert("RGB"))
        rows = np.flatnonzero(labels == name)
        assert len(rows) == 100 and len({tuple(origins[i]) for i in rows}) == 100
        for i in rows:
            r, c = origins[i]
            assert r % 32 == 0 and c % 32 == 0  # on the non-overlapping grid
            assert np.array_equal(patches[i], photo[r:r + 32, c:c + 32])
            assert np.rint(patches[i].mean(axis=-1)).std() >= 4.0


def test_medical_patches_are_grey_slices_of_the_shipped_images():
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    patches, labels, origins = builtin.medical_patches()
    assert patches.shape == (600, 16, 16)
    for label, file in [("fundus", "retina.jpg"), ("histology", "ihc.png"), ("phase", "cell.png")]:
        with Image.open(folder / file) as opened:
            source = np.asarray(opened)
        grey = source if source.ndim == 2 else np.rint(source[..., :3].mean(axis=-1)).astype(np.uint8)
        rows = np.flatnonzero(labels == label)
        assert len(rows) == 200
        for i in rows:
            r, c = origins[i]
            assert r % 16 == 0 and c % 16 == 0
            assert np.array_equal(patches[i], grey[r:r + 16, c:c + 16])
            assert patches[i].std() >= 4.0


def ink_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(pixels)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_typeface_images_are_the_fonts_own_glyphs_centred_and_shifted():
    specs = builtin.typeface_specs()
    images, labels = builtin._typefaces()
    assert len(specs) == len(images) == 840 and labels.tolist() == [spec[6] for spec in specs]
    compared = 0
    for i in range(0, 840, 29):
        font, char, size, angle, dx, dy, label = specs[i]
        assert angle == 0.0 and builtin.TYPEFACES[label] == font and char.isalpha()
        # Draw the letter independently with Pillow from matplotlib's file, crop both to their ink.
        path = builtin.font_path(font)
        assert path.parts[-5:-1] == ("matplotlib", "mpl-data", "fonts", "ttf")
        canvas = Image.new("L", (120, 120), 0)
        ImageDraw.Draw(canvas).text((60, 60), char, font=ImageFont.truetype(str(path), size), fill=255, anchor="mm")
        reference = np.asarray(canvas)
        top, bottom, left, right = ink_box(reference)
        ours = images[i]
        assert ours.shape == (32, 32)
        upper, lower, first, last = ink_box(ours)
        if upper > 0 and first > 0 and lower < 32 and last < 32:  # not clipped by the box
            compared += 1
            assert np.array_equal(ours[upper:lower, first:last], reference[top:bottom, left:right])
            # The ink's centre: the box's centre moved by (dx, dy), to within the half pixel of rounding.
            assert abs((upper + lower) / 2 - (16 + dy)) <= 0.5 and abs((first + last) / 2 - (16 + dx)) <= 0.5
    assert compared >= 25  # of 29


def test_glyph_images_match_their_recorded_rendering_and_label():
    specs = builtin.glyph_specs()
    images, labels = builtin._glyphs()
    assert len(specs) == 1040
    assert {spec[0] for spec in specs} == set(builtin.TEXT_FONTS)  # every text font is used
    cases = Counter(spec[1].isupper() for spec in specs)
    assert 400 < cases[True] < 640  # both cases, about half each
    for i in range(0, 1040, 37):
        font, char, size, angle, dx, dy, label = specs[i]
        assert char.lower() == label == labels[i] and 18 <= size <= 26 and abs(angle) <= 10
        assert np.array_equal(images[i], builtin.render_glyph(font, char, size, angle, dx, dy))
        assert images[i].max() == 255 and images[i].mean() > 5  # a visible letter, white on black
    # The letters differ: no two classes share their mean image.
    means = np.stack([images[labels == letter].mean(axis=0) for letter in builtin.LETTERS])
    assert len({mean.tobytes() for mean in means}) == 26


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name in ("matplotlib", "sklearn")
                        else real(name, *rest))
    builtin._font.cache_clear()
    with pytest.raises(InputError, match="task 'glyphs/typefaces': needs the Python package 'matplotlib'.*pip install"):
        builtin.font_path("DejaVuSans")
    with pytest.raises(InputError, match="task 'photos': needs the Python package 'scikit-learn'"):
        builtin.photo_sources()


def test_render_glyph_rejects_a_blank_character():
    with pytest.raises(InputError, match="draws nothing"):
        builtin.render_glyph("DejaVuSans", " ", 20)


# ------------------------------------------------------------------------------------------- few-shot


@pytest.mark.parametrize("name", ["digits", "glyphs", "textures", "photos", "medical", "typefaces", "lfw_faces"])
def test_few_shot_split_has_k_per_class_in_train_and_a_capped_disjoint_test(name):
    images, labels = BUILTINS[name]()
    task = load(name, size="10shot")
    assert task.name == f"{name}:10shot"
    n_classes = len(np.unique(labels))
    assert task.n_classes == n_classes
    assert np.bincount(task.train.labels).tolist() == [10] * n_classes
    counts = Counter(labels.tolist())
    expected = [min(FEWSHOT_TEST_PER_CLASS, counts[c] - 10) for c in sorted(counts)]
    assert np.bincount(task.test.labels, minlength=n_classes).tolist() == expected
    train = {task.train.items.array[i].tobytes() for i in range(len(task.train))}
    test = [task.test.items.array[i].tobytes() for i in range(len(task.test))]
    assert train.isdisjoint(test) and len(set(test)) == len(test)
    # Each image keeps its label: look every split image up in the source.
    source = {}
    for image, label in zip(images, labels.tolist()):
        source.setdefault(image.tobytes(), set()).add(label)
    for split in (task.train, task.test):
        for i in range(len(split)):
            assert task.classes[split.labels[i]] in source[split.items.array[i].tobytes()]


def test_few_shot_is_seeded_and_follows_the_seed():
    first, again, other = load("digits", 0, "10shot"), load("digits", 0, "10shot"), load("digits", 1, "10shot")
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert np.array_equal(first.train.items.array, again.train.items.array)
    assert not np.array_equal(first.train.items.array, other.train.items.array)
    five = load("digits", 0, "5shot")
    assert len(five.train) == 50 and len(five.test) == 300 and five.fingerprint != first.fingerprint
    # The split helper itself: sorted indices, K per class, the rest capped.
    labels = np.repeat(np.arange(3), [12, 40, 50])
    train, test = builtin.few_shot_split(labels, 10, seed=0)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.bincount(labels[train]).tolist() == [10, 10, 10]
    assert np.bincount(labels[test]).tolist() == [2, 30, 30] and not set(train) & set(test)


def test_size_spec_forms_and_their_errors():
    assert is_size_spec("600") and is_size_spec("10shot") and is_size_spec("1shot")
    assert not any(is_size_spec(text) for text in ("", "shot", "ten", "10shots", "-5", "²", "10 shot", "1.5"))
    assert load("digits", 3, "600").fingerprint == load("digits", 3, 600).fingerprint  # a digit string is a size
    with pytest.raises(InputError, match=r"digits:tenshot.*digits:10shot"):
        load("digits", size="tenshot")
    with pytest.raises(InputError, match=r"'lfw_faces:100shot'.*between 1 and 99"):
        load("lfw_faces", size="100shot")  # 100 per class: none would be left to test
    with pytest.raises(InputError, match="between 1 and"):
        load("digits", size="0shot")
    with pytest.raises(InputError, match="size must be between 20"):
        load("digits", size="5")


def test_few_shot_through_tasks_load():
    from neucrab.tasks import load as load_task

    task = load_task("glyphs:10shot", seed=2)
    assert task.name == "glyphs:10shot" and len(task.train) == 260 and len(task.test) == 780
    assert load_task("builtin:glyphs:10shot", seed=2).fingerprint == task.fingerprint
