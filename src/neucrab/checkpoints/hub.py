"""Downloading pretrained weights: timm names (`timm:convnext_tiny.fb_in1k`) and Hugging Face repositories
(`hf:org/name`). Without a network (or with HF_HUB_OFFLINE=1) files already in the local Hugging Face cache
are used; otherwise the error is one line naming the model and the cause.

Repositories are listed first (one request, which fails at once without a network) and then only the files
needed are fetched: one weights format, plus configs and tokenizer files.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ._common import near_names, optional_import

# Weight formats neucrab can read, best first; other formats (TF, Flax, ONNX, GGUF) are never downloaded.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ot", ".pt", ".pth", ".ckpt",
                    ".tflite", ".gguf", ".mlmodel", ".pb")
_SKIP_FOLDERS = ("onnx/", "openvino/", "coreml/", "tflite/", "runs/")


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(error).__name__)


def _download_failed(spec: str, where: str, error: BaseException) -> InputError:
    return InputError(f"{spec}: could not download weights from {where} (no network?): {_reason(error)}")


def _list_files(hub, repo_id: str) -> list[str]:
    """File names in a hub repository. model_info is one request without retries, so it fails at once
    offline (list_repo_files retries with back-off for about 25 s)."""
    info = hub.HfApi().model_info(repo_id)
    return [sibling.rfilename for sibling in info.siblings or []]


def hf_repo_files(repo_id: str, spec: str) -> Path:
    """A local folder holding the loadable files of Hugging Face repository `repo_id` (cached if present)."""
    hub = optional_import("huggingface_hub", spec)
    try:
        files = _list_files(hub, repo_id)
    except Exception as error:  # offline, unknown repo, gated: fall back to the cache
        try:
            return Path(hub.snapshot_download(repo_id, local_files_only=True))
        except Exception:
            raise _download_failed(spec, "the Hugging Face hub", error) from None
    patterns = [f for f in files if not f.endswith(_WEIGHT_SUFFIXES) and not f.startswith(_SKIP_FOLDERS)]
    safetensors = [f for f in files if f.endswith(".safetensors") and "/" not in f]
    torch_bins = [f for f in files if f.startswith("pytorch_model") and f.endswith(".bin")]
    patterns += safetensors or torch_bins
    # sentence-transformers keep module weights (Dense layers) in subfolders
    patterns += [f for f in files if "/" in f and f.endswith((".safetensors", ".bin")) and f[0].isdigit()]
    try:
        return Path(hub.snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:
        raise _download_failed(spec, "the Hugging Face hub", error) from None


def timm_pretrained(name: str, spec: str):
    """A timm model with its pretrained weights (the name may carry a tag: `convnext_tiny.fb_in1k`).

    The weights file is fetched here (fast failure offline) and read safely (safetensors, or torch.load with
    weights_only=True); timm then loads it through its own checkpoint filter, as `pretrained=True` would.
    Returns (model, weights file path).
    """
    timm = optional_import("timm", spec)
    from .weights import read_weights

    if not timm.is_model(name):
        raise InputError(
            f"{spec}: unknown timm model {name!r}; near names: {near_names(name, timm.list_models())}"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        tags = timm.list_pretrained(name.split(".")[0] + ".*")
        raise InputError(f"{spec}: timm has no pretrained weights for {name!r}; available: "
                         f"{near_names(name, tags)}")
    if cfg.file:
        path = Path(cfg.file)
    elif cfg.hf_hub_id:
        path = _timm_hub_file(cfg, spec)
    else:
        path = _url_file(cfg.url, spec)
    state_dict = read_weights(path, spec)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict})
    except Exception as error:
        raise InputError(f"{spec}: timm could not load the downloaded weights {path}: {_reason(error)}") from None
    return model.eval(), path


def _timm_hub_file(cfg, spec: str) -> Path:
    hub = optional_import("huggingface_hub", spec)
    candidates = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    try:
        files = set(_list_files(hub, cfg.hf_hub_id))
    except Exception as error:
        for filename in candidates:  # offline: use the cache when it has the file
            try:
                return Path(hub.hf_hub_download(cfg.hf_hub_id, filename, local_files_only=True))
            except Exception:
                continue
        raise _download_failed(spec, "the Hugging Face hub", error) from None
    filename = next((f for f in candidates if f in files), None)
    if filename is None:
        raise InputError(f"{spec}: the hub repository {cfg.hf_hub_id} has none of {', '.join(candidates)}")
    try:
        return Path(hub.hf_hub_download(cfg.hf_hub_id, filename))
    except Exception as error:
        raise _download_failed(spec, "the Hugging Face hub", error) from None


def _url_file(url: str, spec: str) -> Path:
    """Download `url` into torch's hub cache (once)."""
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1].split("?")[0]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as error:
            raise _download_failed(spec, url, error) from None
    return target
