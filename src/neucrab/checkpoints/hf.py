"""Hugging Face model folders (`save_pretrained` output, sentence-transformers folders, hub snapshots).

Text (a tokenizer in the folder, or a sentence-transformers `modules.json`): `HFTextCheckpoint`, features =
the token embeddings pooled as the folder's sentence-transformers Pooling config says (mean over real
tokens when there is none), L2-normalised when `modules.json` lists a Normalize module, as
sentence-transformers' own `encode` does.

Images (a `preprocessor_config.json` with image statistics): a `TorchCheckpoint` over the transformers
model. With an image-classification head the features are the classifier's input and the probabilities its
softmax; a bare backbone gives its pooled output (`pooler_output`, else the token mean). Preprocessing comes
from `preprocessor_config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ._common import fingerprint, optional_import, sha256_folder
from .base import Checkpoint, Preprocess
from .features import OutputFeatures, feature_module_for, get_layer
from .remote_code import check_custom_code
from .torch_module import TorchCheckpoint

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "vocab.json")
# PIL resample codes used in preprocessor configs -> the interpolations Preprocess knows.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}
_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # ST's concat order


def _read_json(path: Path, spec: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{spec}: cannot read {path.name} as JSON: {error}") from None


def is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "modules.json").is_file()


def load_hf_folder(folder: Path, spec: str, *, layer=None, preprocess=None, name=None,
                   trust_remote_code: bool = False) -> Checkpoint:
    """Load a local Hugging Face / sentence-transformers folder as a text or image checkpoint.

    trust_remote_code: let transformers import the Python code the folder's `auto_map` names (see
    `remote_code.py`); without it such a folder is refused.
    """
    transformers = optional_import("transformers", spec)
    modules = _read_json(folder / "modules.json", spec) if (folder / "modules.json").is_file() else None
    image_config = folder / "preprocessor_config.json"
    image_stats = image_config.is_file() and "image_mean" in _read_json(image_config, spec)
    has_tokenizer = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    name = name or folder.name
    if modules is not None or (has_tokenizer and not image_stats):
        return _load_text(transformers, folder, modules, spec, layer=layer, name=name, trust=trust_remote_code)
    if image_stats:
        return _load_image(transformers, folder, spec, layer=layer, preprocess=preprocess, name=name,
                           trust=trust_remote_code)
    raise InputError(
        f"{spec}: a Hugging Face folder needs a tokenizer (text) or a preprocessor_config.json with image_mean "
        "(images); found neither"
    )


def _from_pretrained(loader, folder: Path, spec: str, trust: bool):
    check_custom_code(folder, spec, trust_remote_code=trust)
    try:  # trust_remote_code always explicit: transformers must never ask on stdin
        return loader.from_pretrained(str(folder), trust_remote_code=trust)
    except Exception as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise InputError(f"{spec}: transformers could not load the model in {folder}: {reason}") from None


# ---------------------------------------------------------------------------------------------- images
def preprocess_from_config(config: dict) -> Preprocess:
    """Preprocess from a transformers image-processor config (ViT, ConvNeXt, CLIP, ResNet, ... styles).

    `size` {"height", "width"}: resized straight to that size (crop_pct 1: for square-ish images the same).
    `size` {"shortest_edge"} with `crop_size`: resize then centre-crop, crop_pct = crop / shortest edge.
    `size` {"shortest_edge"} with `crop_pct` (ConvNeXt): resize to size / crop_pct, crop `size`.
    """
    size = config.get("size", 224)
    crop = config.get("crop_size") if config.get("do_center_crop", "crop_size" in config) else None
    if isinstance(size, dict):
        edge = size.get("shortest_edge") or size.get("height") or size.get("width") or 224
    else:
        edge = int(size)
    crop_edge = (crop.get("height") or crop.get("width")) if isinstance(crop, dict) else crop
    if crop_edge:
        target, crop_pct = int(crop_edge), float(crop_edge) / float(edge)
    elif config.get("crop_pct") and isinstance(size, dict) and "shortest_edge" in size and edge < 384:
        target, crop_pct = int(edge), float(config["crop_pct"])  # ConvNeXt warps without crop from 384 up
    else:
        target, crop_pct = int(edge), 1.0
    normalise = config.get("do_normalize", True)
    mean = tuple(config.get("image_mean", (0.5, 0.5, 0.5))) if normalise else (0.0, 0.0, 0.0)
    std = tuple(config.get("image_std", (0.5, 0.5, 0.5))) if normalise else (1.0, 1.0, 1.0)
    return Preprocess(
        size=target,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        interpolation=_RESAMPLE.get(config.get("resample", 2), "bilinear"),
        crop_pct=min(crop_pct, 1.0),
    )


def _load_image(transformers, folder: Path, spec: str, *, layer, preprocess, name, trust) -> TorchCheckpoint:
    config = _read_json(folder / "config.json", spec) if (folder / "config.json").is_file() else {}
    architectures = config.get("architectures") or []
    classifier = any(a.endswith("ForImageClassification") for a in architectures)
    loader = transformers.AutoModelForImageClassification if classifier else transformers.AutoModel
    model = _from_pretrained(loader, folder, spec, trust).eval()
    if layer is not None or classifier:
        features = feature_module_for(model, layer, spec)
    else:
        features = OutputFeatures(model)  # the backbone's pooled output
    own = preprocess_from_config(_read_json(folder / "preprocessor_config.json", spec))
    return TorchCheckpoint(
        module=model,
        features=features,
        name=name,
        fingerprint=fingerprint("hf-image", sha256_folder(folder), layer, own.key()),
        preprocess=own,
        layer=layer,
        details={"source": str(folder), "architecture": ",".join(architectures) or model.__class__.__name__,
                 "preprocess_source": "preprocessor_config.json"},
    )


# ------------------------------------------------------------------------------------------------ text
class TextFeatures(nn.Module):
    """Tokenised text -> pooled (B, D) embeddings: `forward(input_ids, attention_mask, **other_inputs)`.

    pooling: sentence-transformers mode names (see _POOLING_MODES); several are concatenated in ST's order.
    layer: a named module whose output replaces the last hidden state (pooled the same way).
    """

    def __init__(self, model: nn.Module, pooling: tuple[str, ...], normalize: bool, layer: str | None):
        super().__init__()
        self.model = model
        self.pooling, self.normalize, self.layer = pooling, normalize, layer

    def forward(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        seen = {}
        handle = None
        if self.layer is not None:
            def grab(module, args, output):
                seen["hidden"] = output[0] if isinstance(output, (tuple, list)) else output

            handle = dict(self.model.named_modules())[self.layer].register_forward_hook(grab)
        try:
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        finally:
            if handle is not None:
                handle.remove()
        hidden = seen.get("hidden", output[0] if isinstance(output, tuple) else output.last_hidden_state)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = []
        for mode in self.pooling:
            if mode == "cls_token":
                pooled.append(hidden[:, 0])
            elif mode == "max_tokens":
                pooled.append(hidden.masked_fill(mask == 0, -1e9).max(dim=1).values)
            else:
                total = (hidden * mask).sum(dim=1)
                count = mask.sum(dim=1).clamp(min=1e-9)
                pooled.append(total / (count if mode == "mean_tokens" else count.sqrt()))
        embedding = torch.cat(pooled, dim=-1)
        if self.normalize:
            embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
        return embedding


class HFTextCheckpoint(Checkpoint):
    """A text checkpoint (modality "text"): `forward(list of B strings)` -> (embeddings (B, D), None).

    `module`: the transformers model; `tokenizer`; `tokenize(texts)` -> dict of tensors;
    `feature_module()`: the `TextFeatures` nn.Module mapping `**tokenize(texts)` to (B, D) embeddings
    (shares parameters with `module`; backpropagates outside inference mode).
    """

    def __init__(self, *, module, tokenizer, features: TextFeatures, max_length: int, lowercase: bool,
                 name: str, fingerprint: str, layer: str | None, details: dict):
        super().__init__(name=name, fingerprint=fingerprint, modality="text", preprocess=None, has_head=False,
                         layer=layer, details=details)
        self.module = module.eval()
        self.tokenizer = tokenizer
        self._features = features
        self.max_length = max_length
        self.lowercase = lowercase

    def tokenize(self, texts) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{self.name}: expected a list of strings for a text checkpoint")
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        return dict(self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt",
                                   max_length=self.max_length))

    def feature_module(self) -> TextFeatures:
        return self._features

    def forward(self, batch) -> tuple[np.ndarray, None]:
        encoded = self.tokenize(batch)
        with torch.inference_mode():
            embedding = self._features(**encoded)
        return embedding.float().cpu().numpy(), None


def _sentence_transformers_setup(folder: Path, modules: list | None, spec: str):
    """(transformer folder, pooling modes, normalize, max_length or None, lowercase) from an ST folder."""
    if modules is None:
        return folder, ("mean_tokens",), False, None, False
    if not isinstance(modules, list) or not all(isinstance(e, dict) and isinstance(e.get("type", ""), str)
                                                for e in modules):
        raise InputError(f"{spec}: modules.json: expected a list of {{\"type\": ..., \"path\": ...}} objects")
    transformer_dir, pooling, normalize = folder, ("mean_tokens",), False
    for entry in modules:
        kind = entry.get("type", "").rsplit(".", 1)[-1]
        if not entry.get("type", "").startswith("sentence_transformers."):  # custom module code
            raise InputError(f"{spec}: modules.json in {folder} names the module {entry.get('type')!r}, code from "
                             "outside sentence-transformers; neucrab builds Transformer, Pooling and Normalize "
                             "itself and never imports module code, so it cannot load this folder")
        path = folder / str(entry.get("path", ""))
        if not path.resolve().is_relative_to(folder.resolve()):  # an untrusted file names what we read
            raise InputError(f"{spec}: modules.json: module path {entry.get('path')!r} leads outside {folder}")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            config = _read_json(path / "config.json", spec)
            pooling = tuple(m for m in _POOLING_MODES if config.get(f"pooling_mode_{m}"))
            others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v
                      and k[len("pooling_mode_"):] not in _POOLING_MODES]
            if others or not pooling:
                raise InputError(f"{spec}: unsupported sentence-transformers pooling {others or 'none'}; "
                                 f"neucrab supports {', '.join(_POOLING_MODES)}")
        elif kind == "Normalize":
            normalize = True
        else:
            raise InputError(f"{spec}: unsupported sentence-transformers module {kind!r} in modules.json "
                             "(neucrab handles Transformer, Pooling, Normalize)")
    st_config = transformer_dir / "sentence_bert_config.json"
    if not st_config.is_file():
        st_config = folder / "sentence_bert_config.json"
    settings = _read_json(st_config, spec) if st_config.is_file() else {}
    return (transformer_dir, pooling, normalize, settings.get("max_seq_length"),
            bool(settings.get("do_lower_case", False)))


def _load_text(transformers, folder: Path, modules, spec: str, *, layer, name, trust) -> HFTextCheckpoint:
    transformer_dir, pooling, normalize, max_length, lowercase = _sentence_transformers_setup(
        folder, modules, spec)
    tokenizer = _from_pretrained(transformers.AutoTokenizer, transformer_dir, spec, trust)
    model = _from_pretrained(transformers.AutoModel, transformer_dir, spec, trust).eval()
    if layer is not None:
        get_layer(model, layer, spec)
    if max_length is None:
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512), 512]
        max_length = int(min(v for v in limits if isinstance(v, int) and v > 0))
    details = {"source": str(folder), "architecture": model.__class__.__name__, "pooling": "+".join(pooling),
               "normalize": normalize, "max_length": max_length}
    return HFTextCheckpoint(
        module=model,
        tokenizer=tokenizer,
        features=TextFeatures(model, pooling, normalize, layer),
        max_length=max_length,
        lowercase=lowercase,
        name=name,
        fingerprint=fingerprint("hf-text", sha256_folder(folder), layer, pooling, normalize, max_length),
        layer=layer,
        details=details,
    )

