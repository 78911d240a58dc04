"""CSV tasks: a header `path,label[,split]` (image files, paths relative to the CSV's folder) or
`text,label[,split]` (text). `label` may hold several classes separated by "|" (multi-label); without a
`split` column the rows are split here (stratified, seeded). Other columns are ignored; blank lines too.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputError
from .base import Task, assemble
from .images import inspect_images, unreadable_message
from .items import ImageFiles, Texts
from .labels import parse_label_field

SPLITS = ("train", "test")


def _columns(path: Path, header: list[str] | None) -> tuple[str, dict[str, int]]:
    """(data column name, {column name: index}) from the header row, or InputError."""
    if not header:
        raise InputError(f"{path}: empty file; expected a header row path,label[,split] or text,label[,split]")
    columns = [name.strip().lower() for name in header]
    found = ", ".join(name.strip() for name in header)
    data_column = "path" if "path" in columns else "text" if "text" in columns else None
    if data_column is None:
        raise InputError(f"{path}: missing column 'path' (or 'text' for a text task); found columns: {found}")
    if "label" not in columns:
        raise InputError(f"{path}: missing column 'label'; found columns: {found}")
    return data_column, {name: columns.index(name) for name in (data_column, "label", "split") if name in columns}


def _parse_row(path: Path, line: int, cells: list[str], data_column: str, where: dict[str, int]):
    """(line, data, label set, split name or "all") for one row, or InputError naming the line."""
    values = {name: cells[index].strip() if index < len(cells) else "" for name, index in where.items()}
    labels = parse_label_field(values["label"])
    if not labels:
        raise InputError(f"{path} line {line}: empty 'label'; expected a class name (several as a|b)")
    if not values[data_column]:
        expected = "an image file path" if data_column == "path" else "a text"
        raise InputError(f"{path} line {line}: empty '{data_column}'; expected {expected}")
    split = values.get("split", "all").lower()
    if "split" in where and split not in SPLITS:
        raise InputError(f"{path} line {line}: 'split' is {values['split']!r}; expected train or test")
    return line, values[data_column], labels, split


def _read_rows(path: Path) -> tuple[str, list[tuple[int, str, tuple[str, ...], str]]]:
    """(data column name, rows as (line number, data, label set, split name or "all"))."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            data_column, where = _columns(path, next(reader, None))
            rows = [_parse_row(path, reader.line_num, cells, data_column, where)
                    for cells in reader if any(cell.strip() for cell in cells)]  # blank lines skipped
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); "
                         "expected a UTF-8 CSV") from None
    except csv.Error as error:
        raise InputError(f"{path}: malformed CSV ({error}); expected comma-separated values with a header") from None
    return data_column, rows


def load_csv(path: Path, *, seed: int, test_fraction: float, skip_unreadable: bool) -> Task:
    """Load a CSV task (see the module docstring)."""
    data_column, rows = _read_rows(path)
    has_split = bool(rows) and rows[0][3] != "all"
    skipped: list[str] = []
    if data_column == "path":
        files = [Path(data) if Path(data).is_absolute() else path.parent / data for _, data, _, _ in rows]
        checked = []
        for (line, _, labels, split), file, (digest, reason) in zip(rows, files, inspect_images(files)):
            if digest is None:
                if not skip_unreadable:
                    raise InputError(f"{path} line {line}: {unreadable_message(file, reason)}")
                skipped.append(str(file))
                continue
            checked.append((file, digest, labels, split))
    names = SPLITS if has_split else ("all",)
    parts = {}
    for name in names:
        if data_column == "path":
            chosen = [row for row in checked if row[3] == name]
            items = ImageFiles([row[0] for row in chosen], [row[1] for row in chosen])
            parts[name] = (items, [row[2] for row in chosen])
        else:
            chosen = [row for row in rows if row[3] == name]
            parts[name] = (Texts([row[1] for row in chosen], str(path)), [row[2] for row in chosen])
    return assemble(path.stem, str(path), parts, seed=seed, test_fraction=test_fraction, skipped=skipped)
