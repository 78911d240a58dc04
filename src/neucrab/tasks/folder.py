"""Image-folder tasks: DIR/train/<class>/* and DIR/test/<class>/*, or DIR/<class>/* split here."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import Task, assemble
from .images import inspect_images, is_image_name, unreadable_message
from .items import ImageFiles


def _scan(folder: Path) -> tuple[list[Path], list[tuple[str]]]:
    """(image paths, label sets) under folder/<class>/ (searched recursively, sorted)."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(f"{folder}: no class folders; expected {folder}/<class>/<image files>")
    paths, label_sets = [], []
    for class_dir in class_dirs:
        images = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_name(p))
        if not images:
            raise InputError(f"{class_dir}: empty class folder; expected at least one image file "
                             "(.jpg, .jpeg, .png, .bmp, .gif, .tif, .webp, ...)")
        paths += images
        label_sets += [(class_dir.name,)] * len(images)
    return paths, label_sets


def _checked(paths, label_sets, skip_unreadable: bool, skipped: list[str]):
    """Image files that decode (ImageFiles) and their label sets; unreadable ones raise or are skipped."""
    keep_paths, keep_digests, keep_labels = [], [], []
    for path, labels, (digest, reason) in zip(paths, label_sets, inspect_images(paths)):
        if digest is None:
            if not skip_unreadable:
                raise InputError(unreadable_message(path, reason))
            skipped.append(str(path))
            continue
        keep_paths.append(path)
        keep_digests.append(digest)
        keep_labels.append(labels)
    return ImageFiles(keep_paths, keep_digests), keep_labels


def load_folder(root: Path, *, seed: int, test_fraction: float, skip_unreadable: bool) -> Task:
    """Load an image-folder task (see the module docstring). Files whose extension is not an image
    extension are ignored; a folder named `train` switches to the pre-split layout, which needs `test`."""
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise InputError(f"{root}: has a train/ folder but no test/ folder; expected "
                             f"{root}/train/<class>/* and {root}/test/<class>/*")
        scanned = {"train": _scan(root / "train"), "test": _scan(root / "test")}
    else:
        scanned = {"all": _scan(root)}
    skipped: list[str] = []
    parts = {name: _checked(paths, labels, skip_unreadable, skipped) for name, (paths, labels) in scanned.items()}
    return assemble(root.resolve().name, str(root), parts, seed=seed, test_fraction=test_fraction,
                    skipped=skipped)
