"""Small helpers shared by the loaders: fingerprints, file checks, optional imports, "did you mean" lists."""

from __future__ import annotations

import difflib
import hashlib
import importlib
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError

_CHUNK = 1 << 20


def sha256_file(path: str | Path, digest=None) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks); feeds `digest` instead when one is given."""
    own = digest is None
    digest = hashlib.sha256() if own else digest
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_folder(folder: str | Path, digest=None) -> str:
    """Hex sha256 over every regular file below `folder` (relative names and bytes, in sorted order)."""
    folder = Path(folder)
    digest = digest or hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # .git, .cache, .gitattributes: not part of what the model computes
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        sha256_file(path, digest)
    return digest.hexdigest()


def fingerprint(*parts) -> str:
    """Hex sha256 over `parts` (str, bytes or None), each length-prefixed so ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode() if part is None else str(part).encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def module_digest(module) -> str:
    """Hex sha256 over an nn.Module's class name and state-dict tensors (names, dtypes, shapes, bytes)."""
    import torch

    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, value in sorted(module.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            digest.update(f"{key}={value!r}".encode())
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def require_file(path: str | Path, spec: str, expected: str) -> Path:
    """The path as a Path, or InputError when it does not exist or is not a regular file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{spec}: file not found: {path} (expected {expected})")
    if not path.is_file():
        raise InputError(f"{spec}: {path} is not a regular file (expected {expected})")
    return path


def optional_import(module: str, spec: str, extra: str = "checkpoints"):
    """Import an optional dependency, or InputError telling which pip extra provides it (pyproject.toml's
    `checkpoints` extra holds every loader's dependencies)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise InputError(
            f"{spec}: needs the Python package {module!r}, not installed ({error}); "
            f"install it with: pip install 'neucrab[{extra}]'"
        ) from None


def near_names(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """A short "did you mean" list: the closest candidates, else the first few."""
    candidates = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    if not close:
        close = candidates[:n]
    more = "" if len(candidates) <= len(close) else f" (of {len(candidates)})"
    return ", ".join(close) + more if close else "(none)"
