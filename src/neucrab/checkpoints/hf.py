"""Hugging Face model folders (`save_pretrained` output, sentence-transformers folders, hub snapshots).

Text (a tokenizer in the folder, or a sentence-transformers `modules.json`): `hf_text.HFTextCheckpoint`,
features = the token embeddings pooled as the folder's sentence-transformers Pooling config says (mean over real
tokens when there is none), L2-normalised when `modules.json` lists a Normalize module, as
sentence-transformers' own `encode` does; `hf_text.py` also picks a hidden state and a pooling.

Images (a `preprocessor_config.json` with image statistics): a `TorchCheckpoint` over the transformers
model. With an image-classification head the features are the classifier's input and the probabilities its
softmax; a bare backbone gives its pooled output (`pooler_output`, else the token mean). Preprocessing comes
from `preprocessor_config.json`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ._common import fingerprint, optional_import, sha256_folder
from .base import Checkpoint, Preprocess
from .features import OutputFeatures, feature_module_for
from .hf_files import from_pretrained as _from_pretrained
from .hf_files import read_json as _read_json
from .torch_module import TorchCheckpoint

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "vocab.json")
# PIL resample codes used in preprocessor configs -> the interpolations Preprocess knows.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}


def is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "modules.json").is_file()


def load_hf_folder(folder: Path, spec: str, *, layer=None, preprocess=None, name=None,
                   trust_remote_code: bool = False, pooling: str | None = None,
                   random_seed: int | None = None) -> Checkpoint:
    """Load a local Hugging Face / sentence-transformers folder as a text or image checkpoint.

    trust_remote_code: let transformers import the Python code the folder's `auto_map` names (see
    `remote_code.py`); without it such a folder is refused. pooling, random_seed: text encoders only (see
    `hf_text.load_text`): the token pooling (`text_options.POOLINGS`), and a random initialisation of the same
    architecture instead of the folder's weights.
    """
    transformers = optional_import("transformers", spec)
    modules = _read_json(folder / "modules.json", spec) if (folder / "modules.json").is_file() else None
    image_config = folder / "preprocessor_config.json"
    image_stats = image_config.is_file() and "image_mean" in _read_json(image_config, spec)
    has_tokenizer = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    name = name or folder.name
    if modules is not None or (has_tokenizer and not image_stats):
        from .hf_text import load_text

        return load_text(transformers, folder, modules, spec, layer=layer, name=name, trust=trust_remote_code,
                         pooling=pooling, random_seed=random_seed)
    if pooling is not None or random_seed is not None:
        raise InputError(f"{spec}: {'pooling' if pooling is not None else 'random initialisation'} applies to text "
                         "encoders; this folder holds an image model")
    if image_stats:
        return _load_image(transformers, folder, spec, layer=layer, preprocess=preprocess, name=name,
                           trust=trust_remote_code)
    raise InputError(
        f"{spec}: a Hugging Face folder needs a tokenizer (text) or a preprocessor_config.json with image_mean "
        "(images); found neither"
    )


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
