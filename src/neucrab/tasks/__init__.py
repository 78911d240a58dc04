"""Downstream tasks: `load(spec)` -> `Task` with a train and a test split.

Specs:
- `DIR`: an image folder, `DIR/train/<class>/*` + `DIR/test/<class>/*`, or `DIR/<class>/*` split here.
- `FILE.csv`: header `path,label[,split]` (image paths relative to the CSV's folder) or `text,label[,split]`;
  `label` may hold several classes, `cat|dog`, making the task multi-label.
- `FILE.npz`: arrays `x_train`, `y_train`, `x_test`, `y_test` (or `x`, `y`); images (N, H, W[, 3]) or
  feature rows (N, D) (see `neucrab.tasks.arrays`).
- `digits`, `mnist5k` (or `builtin:NAME`): built-in real datasets that need no download; `NAME:SIZE` keeps a
  seeded stratified subset of SIZE images.
An existing path wins over a built-in name. Without a given split, samples are split here: stratified by
class (by label combination for multi-label tasks), `test_fraction` of them to test, seeded by `seed`.
"""

from __future__ import annotations

from pathlib import Path

from .._validate import check_number, check_seed
from ..errors import InputError
from .arrays import load_npz
from .base import Split, Task
from .builtin import BUILTINS, load_builtin
from .csvfile import load_csv
from .folder import load_folder

__all__ = ["BUILTINS", "Split", "Task", "load"]


def load(spec, *, seed: int = 0, test_fraction: float = 0.25, skip_unreadable: bool = False) -> Task:
    """Load the task named by `spec` (a path or a built-in name; see the module docstring).

    seed, test_fraction: the split made when the data does not come split (ignored otherwise).
    skip_unreadable: leave out image files that do not decode (listed in `task.skipped`) instead of
    raising InputError.
    """
    if isinstance(spec, Task):
        return spec
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise InputError(f"task: got {spec!r}; expected a folder, a .csv or .npz file, or a built-in name "
                         f"({', '.join(BUILTINS)})")
    test_fraction = check_number(test_fraction, "test_fraction", 0.0, 1.0, open_low=True, open_high=True)
    seed = check_seed(seed)
    text = str(spec)
    name, _, size = text.removeprefix("builtin:").partition(":")
    if name in BUILTINS and size:
        return load_builtin(name, seed=seed, test_fraction=test_fraction, size=size)  # it checks SIZE / Kshot
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTINS:
            raise InputError(f"task {text!r}: unknown built-in task; expected one of {', '.join(BUILTINS)}")
        return load_builtin(name, seed=seed, test_fraction=test_fraction)
    path = Path(spec).expanduser()
    if not path.exists():
        if text in BUILTINS:
            return load_builtin(text, seed=seed, test_fraction=test_fraction)
        raise InputError(f"task {text!r}: no such file or folder, and not a built-in task; expected a folder, "
                         f"a .csv or .npz file, or one of {', '.join(BUILTINS)}")
    if path.is_dir():
        return load_folder(path, seed=seed, test_fraction=test_fraction, skip_unreadable=skip_unreadable)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path, seed=seed, test_fraction=test_fraction, skip_unreadable=skip_unreadable)
    if suffix == ".npz":
        return load_npz(path, seed=seed, test_fraction=test_fraction)
    raise InputError(f"task {text!r}: unknown task file type {suffix or '(no extension)'!r}; "
                     "expected a folder, a .csv or a .npz file")
