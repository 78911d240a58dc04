"""Reading the character vectors an R package keeps in its lazy-load database (`data/Rdata.rdx` + `Rdata.rdb`),
without R: enough of R's serialization format (XDR, versions 2 and 3) for vectors, lists, attributes and
symbols, which is what such a database and its index hold.

The index (`.rdx`) is one gzip'd serialized list whose `variables` element maps each object's name to
(offset, length) in the `.rdb` file; each `.rdb` record is a 4-byte big-endian length followed by the
zlib-compressed serialization of one object (R's default `compress = TRUE`).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from ..errors import InputError

# SEXP types (R Internals, "Serialization Formats").
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 14, 16, 19
REFSXP, NILVALUE_SXP = 255, 254
_SPECIAL_ENVS = {253, 242, 241, 240, 252, 251, 250}  # global, empty, base env/namespace, missing, unbound, ...
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10


class RObject:
    """A vector or list with its attributes (`names` among them), as R holds it."""

    def __init__(self, kind: int, values, attributes: dict):
        self.kind, self.values, self.attributes = kind, values, attributes

    def named(self) -> dict:
        """{name: value} for a list with a `names` attribute."""
        names = self.attributes.get("names")
        if names is None:
            raise ValueError("the object has no names")
        return dict(zip(names.values, self.values))


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.at, self.where, self.refs = data, 0, where, []

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise ValueError(f"truncated at byte {self.at}")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def integer(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        value = self.integer()
        if value == -1:  # a long vector: two more ints
            upper, lower = self.integer(), self.integer()
            value = (upper << 32) + lower
        return value

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise ValueError("not R's XDR serialization format (expected 'X\\n')")
        version = self.integer()
        self.integer(), self.integer()  # writer's R version, minimal R version
        if version == 3:
            self.take(self.integer())  # native encoding name
        elif version != 2:
            raise ValueError(f"serialization version {version}; expected 2 or 3")

    def item(self):
        flags = self.integer()
        kind = flags & 0xFF
        if kind == NILVALUE_SXP or kind in _SPECIAL_ENVS:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.integer()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if kind == LISTSXP:  # pairlist: attributes, tag, then car and cdr
            attributes = self.attributes() if flags & HAS_ATTR else {}
            tag = self.item() if flags & HAS_TAG else None
            head = self.item()
            rest = self.item()
            pairs = [(tag, head)] + (rest.values if isinstance(rest, RObject) and rest.kind == LISTSXP else [])
            return RObject(LISTSXP, pairs, attributes)
        if kind == CHARSXP:
            size = self.integer()
            return None if size == -1 else self.take(size).decode("utf-8", errors="replace")
        if kind in (LGLSXP, INTSXP):
            values = list(struct.unpack(f">{(n := self.length())}i", self.take(4 * n)))
        elif kind == REALSXP:
            values = list(struct.unpack(f">{(n := self.length())}d", self.take(8 * n)))
        elif kind in (STRSXP, VECSXP):
            values = [self.item() for _ in range(self.length())]
        else:
            raise ValueError(f"R object type {kind} is not supported by this reader")
        return RObject(kind, values, self.attributes() if flags & HAS_ATTR else {})

    def attributes(self) -> dict:
        pairs = self.item()
        return {tag: value for tag, value in pairs.values} if isinstance(pairs, RObject) else {}


def unserialize(data: bytes, where: str = "R data"):
    """The object serialized in `data` (R's XDR format): an RObject, a str, or None."""
    reader = _Reader(data, where)
    reader.header()
    return reader.item()


def lazyload_character_vectors(folder: Path, what: str) -> dict[str, list[str | None]]:
    """{object name: its character vector} for every character vector in `folder`/Rdata.rdx + Rdata.rdb (an
    installed R package's `data` folder). `what` names the data in error messages."""
    index_path, data_path = folder / "Rdata.rdx", folder / "Rdata.rdb"
    try:
        index = unserialize(gzip.decompress(index_path.read_bytes()), str(index_path)).named()
        records = data_path.read_bytes()
        variables = index["variables"].named()
        found = {}
        for name, where in variables.items():
            offset, size = where.values
            record = records[offset:offset + size]
            expected = struct.unpack(">I", record[:4])[0]
            body = zlib.decompress(record[4:])
            if len(body) != expected:
                raise ValueError(f"record {name!r} holds {len(body)} bytes, its header says {expected}")
            value = unserialize(body, f"{data_path}[{name}]")
            if isinstance(value, RObject) and value.kind == STRSXP:
                found[name] = value.values
    except (OSError, ValueError, KeyError, zlib.error, struct.error, EOFError) as error:
        raise InputError(f"{what}: cannot read the R data in {folder} ({error}); expected an R package's "
                         "lazy-load data (Rdata.rdx and Rdata.rdb, zlib-compressed)") from None
    return found
