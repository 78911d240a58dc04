"""Reading weight files safely and fitting them into an architecture.

`.safetensors` files hold tensors only. `.pth` / `.pt` / `.bin` / `.ckpt` files are pickles and are read
ONLY with `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers; a full
pickled model needs `trust_pickle=True` (it runs arbitrary code from the file).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ._common import optional_import

# One-liner converting a pickled full model to a safe safetensors state dict, quoted in the error message.
CONVERT_HINT = (
    "python -c \"import torch, safetensors.torch as s; "
    "s.save_file(torch.load('m.pth', weights_only=False).state_dict(), 'm.safetensors')\""
)

# Keys under which training scripts commonly nest the state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "state_dict_ema", "model_ema")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_safetensors(path: Path, spec: str) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, or InputError when it is truncated or not safetensors."""
    safetensors = optional_import("safetensors.torch", spec)
    try:
        return safetensors.load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError (header/size checks), OSError, ValueError
        raise InputError(
            f"{spec}: not a readable .safetensors file (truncated or corrupt?): {_first_line(error)}"
        ) from None


def read_torch_file(path: Path, spec: str, *, trust_pickle: bool = False):
    """The object in a torch.save file, read with weights_only=True unless `trust_pickle`.

    Raises InputError for corrupt files and for pickles that need trust (telling how to proceed).
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():  # a damaged pickle stream, not a refusal
            raise InputError(
                f"{spec}: not a readable PyTorch file (truncated or corrupt?): {_first_line(error)}"
            ) from None
        if not trust_pickle:
            raise InputError(
                f"{spec}: {path.name} is a pickle holding Python objects (e.g. a whole pickled model), which "
                f"neucrab does not unpickle by default because that can run arbitrary code; if you trust the "
                f"file pass --trust-pickle (trust_pickle=True), or convert it to safetensors: {CONVERT_HINT}"
            ) from None
        unsafe_reason = _first_line(error)
    except Exception as error:  # zip errors, EOF, bad magic number: torch raises several types
        raise InputError(
            f"{spec}: not a readable PyTorch file (truncated or corrupt?): {_first_line(error)}"
        ) from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:
        raise InputError(
            f"{spec}: could not unpickle {path.name} even with trust_pickle ({unsafe_reason}): "
            f"{_first_line(error)}"
        ) from None


def read_weights(path: Path, spec: str, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a .safetensors or torch file; unwraps common nestings
    ({"state_dict": ...}, {"model": ...}) and the "module." prefix of DataParallel."""
    if path.suffix == ".safetensors":
        return read_safetensors(path, spec)
    obj = read_torch_file(path, spec, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    return as_state_dict(obj, spec)


def as_state_dict(obj, spec: str) -> dict[str, torch.Tensor]:
    """Unwrap a loaded object to a flat name -> tensor dict, or InputError saying what was found."""
    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            nested = [k for k in _NESTED_KEYS if isinstance(obj.get(k), (dict, nn.Module))]
            if not nested:
                break
            obj = obj[nested[0]]
            if isinstance(obj, nn.Module):
                obj = obj.state_dict()
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        found = type(obj).__name__
        if isinstance(obj, dict):
            found += f" with keys {', '.join(map(str, list(obj)[:5]))}"
        raise InputError(f"{spec}: expected a state dict (parameter name -> tensor), found a {found}")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return obj


def _is_tensor_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def fit_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], spec: str, arch: str) -> None:
    """Load `state_dict` into `model` strictly, or InputError naming the missing / unexpected / misshapen keys.

    Missing `num_batches_tracked` counters are tolerated (some exporters drop them; they do not affect
    inference).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        f"{k}: file {tuple(state_dict[k].shape)} vs {arch} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshapen:
        problems = []
        if misshapen:
            problems.append(f"{len(misshapen)} shape mismatch(es): " + "; ".join(misshapen[:3]))
        if missing:
            problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        raise InputError(f"{spec}: the weights do not fit architecture {arch}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)
