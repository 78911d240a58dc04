"""Pool manifests: many checkpoints named in one CSV or JSON file (`--pool POOL`, `read_manifest`).

A manifest has one checkpoint per row: `name` (unique, the checkpoint's name in every output), `spec` (any
checkpoint spec, see `neucrab.checkpoints`), an optional `group`, and any other columns, which are carried into
the ranking's output as they are. POOL is

- a `.csv` file with a header row (column names are matched without regard to case or surrounding spaces), or
- a `.json` file holding an array of objects (`{"name": ..., "spec": ..., ...}`; values of the free-form fields
  are strings, numbers, true/false or null), or
- a folder holding exactly one of `pool.csv` and `pool.json`, beside the weight files it names.

A relative path in `spec` (the whole spec, or the WEIGHTS of `ARCH=WEIGHTS`) is resolved against the folder the
manifest is in, so a pool folder can be moved or shared; specs that are not paths (`packaged:NAME`, `hf:NAME`,
`timm:NAME`, `ARCH:random`) are kept as written.

Rows are numbered as a person reads the file: in a CSV the row is the line it starts on (the header is row 1),
in JSON the position of the object in the array (1 = first), with its line. Every problem (a missing column,
an empty or duplicate name, a value of the wrong type, a file that is not UTF-8 or not valid JSON) is an
`InputError` of one line naming the manifest, the row and the field.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

FOLDER_MANIFESTS = ("pool.csv", "pool.json")  # what a POOL folder must hold (exactly one of them)
REQUIRED = ("name", "spec")
# Keys of a ranking's rows and CSV columns: a free-form column of the same name would be ambiguous there.
RESERVED = frozenset({"checkpoint", "task", "scores", "notes", "seconds", "cached", "has_head", "error",
                      "forward_seconds", "manifest"})
# Spec forms that are not file paths (see neucrab.checkpoints.load), kept as written.
_NOT_PATHS = ("packaged:", "hf:", "timm:")
_RANDOM = re.compile(r".+:random(?::\d+)?")
_SCALARS = (str, int, float, bool, type(None))
EXPECTED = "a .csv or .json manifest (columns name, spec[, group, ...]) or a folder holding pool.csv or pool.json"


@dataclass(frozen=True)
class PoolEntry:
    """One manifest row. `spec` is resolved (relative paths made absolute against the manifest's folder);
    `columns` are the free-form columns in the manifest's order; `where` names the manifest and row."""

    name: str
    spec: str
    group: str | None = None
    columns: dict = field(default_factory=dict)
    where: str = ""

    def carried(self) -> dict:
        """What the ranking's output carries for this checkpoint: its group (when it has one), then the
        free-form columns."""
        return {**({"group": self.group} if self.group is not None else {}), **self.columns}


def read_manifest(path) -> list[PoolEntry]:
    """The checkpoints a pool manifest names, in the file's order (see the module docstring for the forms).
    Raises InputError (one line naming the file, the row and the field) for anything ill-formed."""
    path = manifest_path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        unit = "line" if path.suffix.lower() == ".json" else "row"
        raise InputError(f"{path}: {unit} {line}: not UTF-8 text ({error.reason} at byte {error.start}); expected a "
                         "UTF-8 file") from None
    records = _json_records(path, text) if path.suffix.lower() == ".json" else _csv_records(path, text)
    entries, seen = [], {}
    for where, record in records:
        entry = _entry(record, where, path.parent)
        if entry.name in seen:
            raise InputError(f"{where}, field 'name': {entry.name!r} is also the name of {seen[entry.name]}; "
                             "expected a unique name per row")
        seen[entry.name] = where.rpartition(": ")[2]
        entries.append(entry)
    if not entries:
        raise InputError(f"{path}: no checkpoint rows; expected at least one row with name and spec")
    return entries


def manifest_path(path) -> Path:
    """The manifest file POOL names: the file itself, or the one pool.csv / pool.json in a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / name for name in FOLDER_MANIFESTS if (path / name).is_file()]
        if len(found) != 1:
            what = "holds both pool.csv and pool.json" if found else "holds neither pool.csv nor pool.json"
            raise InputError(f"--pool {path}: the folder {what}; expected exactly one of them")
        return found[0]
    if not path.is_file():
        raise InputError(f"--pool {path}: no such file or folder; expected {EXPECTED}")
    if path.suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--pool {path}: unknown manifest type {path.suffix or '(none)'!r}; expected {EXPECTED}")
    return path


def split_entries(checkpoints, names=None, label=None) -> tuple[list, list[str], list[dict]]:
    """(specs, names, carried columns) of a list of checkpoints that may mix `PoolEntry` rows and plain specs:
    an entry gives its spec, its name and `carried()`; a plain spec `label(spec, index)` (default str) and no
    columns. `names`, given, replace the names."""
    specs, labels, carried = [], [], []
    for index, item in enumerate(checkpoints):
        if isinstance(item, PoolEntry):
            specs.append(item.spec)
            labels.append(item.name)
            carried.append(item.carried())
        else:
            specs.append(item)
            labels.append(label(item, index) if label else str(item))
            carried.append({})
    return specs, (list(names) if names else labels), carried


def combine(checkpoints, entries: list[PoolEntry]) -> list:
    """Positional CHECKPOINTs then manifest rows, refusing a manifest name that repeats an earlier name."""
    seen = {item.name if isinstance(item, PoolEntry) else str(item): "a CHECKPOINT on the command line"
            for item in checkpoints}
    for entry in entries:
        if entry.name in seen:
            raise InputError(f"{entry.where}, field 'name': {entry.name!r} is also the name of {seen[entry.name]}; "
                             "expected unique names across the pool")
        seen[entry.name] = entry.where
    return [*checkpoints, *entries]


# --------------------------------------------------------------------------------------------- parsing


def _csv_records(path: Path, text: str) -> list[tuple[str, dict]]:
    """(where, {column: text}) per non-blank data row; where = "FILE: row N", N the row's first line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file; expected a header row with columns name, spec[, group, ...]")
        columns = _header(path, header)
        records, line = [], reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            where = f"{path}: row {start}"
            if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns):]):
                raise InputError(f"{where}: {len(cells)} cells but the header names {len(columns)} columns; "
                                 "expected one cell per column (quote cells that contain commas)")
            cells = cells + [""] * (len(columns) - len(cells))
            records.append((where, {column: cell for column, cell in zip(columns, cells) if column is not None}))
    except csv.Error as error:
        raise InputError(f"{path}: row {reader.line_num}: not valid CSV ({error}); expected a CSV file with a "
                         "header row") from None
    return records


def _header(path: Path, header: list[str]) -> list[str | None]:
    """Column names (None for an unnamed column, whose cells are ignored), checked."""
    columns: list[str | None] = []
    for cell in header:
        name = cell.strip()
        key = name.lower() if name.lower() in (*REQUIRED, "group") else name
        if key and key in columns:
            raise InputError(f"{path}: row 1, column {name!r}: appears twice; expected distinct column names")
        if key.lower() in RESERVED:
            raise InputError(f"{path}: row 1, column {name!r}: a name the ranking's output uses itself; expected "
                             "another column name")
        columns.append(key or None)
    for required in REQUIRED:
        if required not in columns:
            found = ", ".join(repr(c) for c in columns if c) or "none"
            raise InputError(f"{path}: row 1, column {required!r}: missing (found {found}); expected a header "
                             "row with columns name, spec[, group, ...]")
    return columns


def _json_records(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}); "
                         "expected a JSON array of objects, one per checkpoint") from None
    if not isinstance(document, list):
        raise InputError(f"{path}: row 1: expected a JSON array of objects (one per checkpoint), got a "
                         f"{_json_type(document)}")
    lines = _element_lines(text)
    records = []
    for index, record in enumerate(document):
        where = f"{path}: row {index + 1} (line {lines[index]})" if index < len(lines) else f"{path}: row {index + 1}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected an object with name and spec, got a {_json_type(record)}")
        for required in REQUIRED:
            if required not in record:
                raise InputError(f"{where}, field {required!r}: missing; expected an object with name and spec")
        records.append((where, record))
    return records


def _element_lines(text: str) -> list[int]:
    """The line each element of a top-level JSON array starts on (the text is known to parse)."""
    decoder, lines = json.JSONDecoder(), []
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return lines
        lines.append(text.count("\n", 0, position) + 1)
        _, position = decoder.raw_decode(text, position)


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "true/false", type(None): "null"}.get(
        type(value), "number")


# ---------------------------------------------------------------------------------------------- one row


def _entry(record: dict, where: str, folder: Path) -> PoolEntry:
    name = _text(record.get("name"), where, "name", "a non-empty checkpoint name")
    spec = _text(record.get("spec"), where, "spec", "a checkpoint spec (a file, ARCH=WEIGHTS, packaged:NAME, ...)")
    group = record.get("group")
    if group is not None:
        if not isinstance(group, str):
            raise InputError(f"{where}, field 'group': expected a string or nothing, got {_json_type(group)}")
        group = group.strip() or None
    columns = {}
    for key, value in record.items():
        if key in ("name", "spec", "group"):
            continue
        if key.strip().lower() in RESERVED:
            raise InputError(f"{where}, field {key!r}: a name the ranking's output uses itself; expected another "
                             "column name")
        if not isinstance(value, _SCALARS):
            raise InputError(f"{where}, field {key!r}: expected a string, number, true/false or null, got "
                             f"{_json_type(value)}")
        columns[key] = value.strip() if isinstance(value, str) else value
    return PoolEntry(name=name, spec=resolve_spec(spec, folder), group=group, columns=columns, where=where)


def _text(value, where: str, field_name: str, expected: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}, field {field_name!r}: expected {expected}, got {_json_type(value)}")
    if not value.strip():
        raise InputError(f"{where}, field {field_name!r}: empty; expected {expected}")
    return value.strip()


def resolve_spec(spec: str, folder: Path) -> str:
    """`spec` with a relative file path made absolute against `folder`; non-path specs unchanged."""
    from .checkpoints.text_options import join_spec, split_spec

    options = split_spec(spec) if not (folder / spec).exists() else None
    if options is not None:  # a text encoder's SPEC@layer=K,pool=...: resolve SPEC
        return join_spec(resolve_spec(options[0], folder), options[1])
    if spec.startswith(("packaged:", "hf:")):
        return spec
    if "=" in spec:  # ARCH=WEIGHTS: the weights are the path
        arch, _, weights = spec.partition("=")
        return f"{arch}={_resolve_path(weights, folder)}"
    if spec.startswith(_NOT_PATHS) or _RANDOM.fullmatch(spec):
        return spec
    resolved = _resolve_path(spec, folder)
    if not Path(resolved).exists() and "/" not in spec and not Path(spec).suffix:
        return spec  # a bare word such as an architecture name: leave it for load() to explain
    return resolved


def _resolve_path(text: str, folder: Path) -> str:
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())
