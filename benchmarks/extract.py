"""Images per second of neucrab's feature extraction against a plain PyTorch loop (run by hand, not in CI).

    .venv/bin/python benchmarks/extract.py [--images 2000] [--repeats 1] [--batch-size 64] [--ablation]

Data: N digits of the built-in `mnist5k` task (a seeded sample), upscaled to 384x320, tinted to real RGB and written
as JPEG files to a temp folder (train/<class>/*.jpg), so decoding and resizing are real work.
Model: neucrab's EfficientNet-Lite0 (`efficientnet_lite0:random`; the pretrained weights cost the same).

Baseline, the obvious way: a torch Dataset that opens each file with PIL and applies torchvision's
Resize / CenterCrop / ToTensor / Normalize, a DataLoader with default workers (0) and the same batch size,
`model.eval()`, `torch.no_grad()`, features = forward_head(forward_features(x), pre_logits=True) and the
softmax of the logits (what neucrab returns too). Both run on the same network object, in the same process,
alternating when --repeats > 1; the features are compared to show both compute the same thing.

neucrab: `extract(checkpoint, task, "train", cache_dir=fresh temp dir)`, so its time includes writing the
cache entry; then the same call again, timed as the cache hit. --ablation adds neucrab without the
inference copy (optimize=False) and without background decoding (num_workers=0).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from neucrab.checkpoints import load as load_checkpoint
from neucrab.extract import extract
from neucrab.tasks import load as load_task


def write_images(folder: Path, count: int) -> None:
    """`count` mnist5k digits as 384x320 RGB JPEGs under folder/train/<digit>/, two under folder/test/
    (count <= 2,498)."""
    digits = load_task("mnist5k", test_fraction=0.5).train  # 2,500 digits, stored sorted by class
    chosen = np.random.default_rng(0).permutation(len(digits))[: count + 2]
    for i, index in enumerate(chosen):
        grey = Image.fromarray(digits.items.array[index]).resize((384, 320), Image.Resampling.BILINEAR)
        pixels = np.asarray(grey, dtype=np.float32)[:, :, None] * np.array([1.0, 0.8, 0.6]) + [0, 30, 60]
        split = "train" if i < count else "test"
        target = folder / split / str(int(digits.labels[index]))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target / f"{i:05d}.jpg", quality=90)


class Files(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), 0


def plain_loop(model, paths, preprocess, batch_size):
    """The obvious PyTorch extraction loop; returns (features (N, D), seconds)."""
    transform = transforms.Compose([
        transforms.Resize(math.floor(preprocess.size / preprocess.crop_pct),
                          interpolation=transforms.InterpolationMode(preprocess.interpolation)),
        transforms.CenterCrop(preprocess.size),
        transforms.ToTensor(),
        transforms.Normalize(preprocess.mean, preprocess.std),
    ])
    start = time.perf_counter()
    loader = DataLoader(Files(paths, transform), batch_size=batch_size)
    model.eval()
    outputs = []
    with torch.no_grad():
        for images, _ in loader:
            feature_map = model.forward_features(images)
            features = model.forward_head(feature_map, pre_logits=True)
            probs = torch.softmax(model.forward_head(feature_map), dim=1)
            outputs.append((features.numpy(), probs.numpy()))
    return np.concatenate([f for f, _ in outputs]), time.perf_counter() - start


def timed_extract(checkpoint, task, cache_dir, **options):
    start = time.perf_counter()
    embedding = extract(checkpoint, task, "train", cache_dir=cache_dir, progress=False, **options)
    return embedding, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ablation", action="store_true")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_images(scratch / "task", args.images)
        started = time.perf_counter()
        task = load_task(scratch / "task")
        load_seconds = time.perf_counter() - started
        paths = task.train.items.paths
        checkpoint = load_checkpoint("efficientnet_lite0:random")
        print(f"{len(paths)} JPEG images 384x320, {checkpoint.name}, preprocess {checkpoint.preprocess}")
        print(f"task load (hash + decode check of every file): {load_seconds:.2f} s")

        with torch.no_grad():  # warm up oneDNN and the allocator so the first timed run is not penalised
            checkpoint.module.eval().forward_features(torch.randn(args.batch_size, 3, 224, 224))
        runs: dict[str, list[float]] = {"plain PyTorch loop": [], "neucrab extract": []}
        if args.ablation:
            runs.update({"neucrab, optimize=False": [], "neucrab, num_workers=0": []})
        for repeat in range(args.repeats):
            reference, seconds = plain_loop(checkpoint.module, paths, checkpoint.preprocess, args.batch_size)
            runs["plain PyTorch loop"].append(seconds)
            cache = scratch / f"cache{repeat}"
            embedding, seconds = timed_extract(checkpoint, task, cache, batch_size=args.batch_size)
            runs["neucrab extract"].append(seconds)
            difference = np.abs(embedding.features - reference).max() / np.abs(reference).max()
            hit, hit_seconds = timed_extract(checkpoint, task, cache, batch_size=args.batch_size)
            assert hit.cached
            print(f"repeat {repeat}: max relative feature difference {difference:.1e}; "
                  f"cache hit {hit_seconds * 1000:.1f} ms")
            if args.ablation:
                runs["neucrab, optimize=False"].append(timed_extract(
                    checkpoint, task, None, use_cache=False, optimize=False, batch_size=args.batch_size)[1])
                runs["neucrab, num_workers=0"].append(timed_extract(
                    checkpoint, task, None, use_cache=False, num_workers=0, batch_size=args.batch_size)[1])
            timings = ", ".join(f"{name} {seconds[-1]:.1f}" for name, seconds in runs.items())
            print(f"repeat {repeat} seconds: {timings}", flush=True)
        base = statistics.median(runs["plain PyTorch loop"])
        for name, seconds in runs.items():
            median = statistics.median(seconds)
            print(f"{name:28s} {len(paths) / median:7.2f} images/s  ({median:.1f} s, median of {len(seconds)})"
                  f"  speed-up {base / median:.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
