"""Images per second of neucrab's feature extraction against what a user would otherwise run (by hand, not in CI).

    .venv/bin/python benchmarks/extract.py [--images 640] [--repeats 3] [--batch-size 64]
                                           [--networks efficientnet_lite0 mobilenet_v2] [--ablation]

Data: N digits of the built-in `mnist5k` task (a seeded sample), upscaled to 384x320, tinted to real RGB and written
as JPEG files to a temp folder (train/<class>/*.jpg), so decoding and resizing are real work.
Networks: `packaged:efficientnet_lite0` and `packaged:mobilenet_v2` (ImageNet weights), 224 px.

Per network, alternating within each repeat, on the same image files and the same network object:
- plain PyTorch loop: a torch Dataset opening each file with PIL and applying torchvision's Resize / CenterCrop /
  ToTensor / Normalize, a DataLoader with default workers (0) and the same batch size, `torch.no_grad()`, the
  features and source probabilities neucrab returns (`checkpoint.feature_module()`, softmax of its logits).
- onnxruntime loop (the anchor): the same network exported to ONNX once (torch.onnx.export, outside the timing)
  and run by an `InferenceSession` with default options on the same DataLoader's batches.
- onnxruntime compute only: that session on the batches already decoded (no decoding: a ceiling, not a loop).
- neucrab extract: `extract(checkpoint, task, "train", cache_dir=...)`, timing everything it does (probe, cache
  write). The first repeat finds an empty cache ("neucrab, cold": its time includes exporting the network to
  ONNX); later repeats find the exported copy in the cache but no features.
- --ablation: neucrab with optimize=False (the plain PyTorch forward, no faster copy), with num_workers=0 and 1
  (default: 2 threads decoding ahead here), and with onnxruntime's intra-op threads spinning between operators if
  they do not by default, or not if they do.

Features are compared with the plain loop's (largest difference over the largest feature). The machine's
convolution throughput is measured in the same run (a dense 3x3 convolution, 256 -> 256 channels on 28x28,
batch 16, the faster of onnxruntime and PyTorch channels_last), and each network's FLOPs per image counted with
torch.utils.flop_counter (one multiply-add = 2 FLOPs), so throughput is also given as a fraction of it.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from neucrab import inference_onnx
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


def data_loader(paths, preprocess, batch_size):
    """The obvious torchvision pipeline for the checkpoint's preprocessing."""
    transform = transforms.Compose([
        transforms.Resize(math.floor(preprocess.size / preprocess.crop_pct),
                          interpolation=transforms.InterpolationMode(preprocess.interpolation)),
        transforms.CenterCrop(preprocess.size),
        transforms.ToTensor(),
        transforms.Normalize(preprocess.mean, preprocess.std),
    ])
    return DataLoader(Files(paths, transform), batch_size=batch_size)


class Outputs(torch.nn.Module):
    """features, softmax(logits): what the user wants from the network."""

    def __init__(self, feature_module):
        super().__init__()
        self.feature_module = feature_module

    def forward(self, images):
        features, logits = self.feature_module.forward_with_logits(images)
        return features, torch.softmax(logits, dim=1)


def plain_loop(network, paths, preprocess, batch_size):
    """The obvious PyTorch extraction loop; returns (features (N, D), seconds)."""
    start = time.perf_counter()
    network.eval()
    features = []
    with torch.no_grad():
        for images, _ in data_loader(paths, preprocess, batch_size):
            features.append(network(images)[0].numpy())
    return np.concatenate(features), time.perf_counter() - start


def export(network, size) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network.eval(), (torch.zeros(2, 3, size, size),), buffer, dynamo=False,
                          input_names=["images"], output_names=["features", "probs"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}, "probs": {0: "batch"}})
    return buffer.getvalue()


def onnxruntime_loop(session, paths, preprocess, batch_size):
    """The same network through onnxruntime on the same DataLoader's batches; returns (features, seconds)."""
    start = time.perf_counter()
    features = [session.run(None, {"images": images.numpy()})[0]
                for images, _ in data_loader(paths, preprocess, batch_size)]
    return np.concatenate(features), time.perf_counter() - start


def compute_only(session, batches):
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {"images": batch})
    return time.perf_counter() - start


def convolution_gflops(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a dense 3x3 convolution (batch 16, 256 -> 256 channels, 28x28, padding 1) in onnxruntime and in
    PyTorch (channels_last), the median of `repeats` runs each after a warm-up."""
    from onnx import TensorProto, helper, numpy_helper

    batch, channels, side = 16, 256, 28
    flops = 2.0 * batch * channels * channels * 9 * side * side
    weight = np.random.default_rng(0).standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.02
    x = np.random.default_rng(1).standard_normal((batch, channels, side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
    conv.weight.data = torch.from_numpy(weight)
    conv = conv.to(memory_format=torch.channels_last)
    tx = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def timed(run):
        run()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return flops / statistics.median(seconds) / 1e9

    with torch.inference_mode():
        return {"onnxruntime": timed(lambda: session.run(None, {"x": x})), "pytorch": timed(lambda: conv(tx))}


def flops_per_image(network, size) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


@contextmanager
def spinning_sessions(spinning: bool):
    """neucrab's onnxruntime sessions with their intra-op threads spinning between operators, or not."""
    before = inference_onnx.SPIN
    inference_onnx.SPIN = spinning
    inference_onnx._SESSIONS.clear()
    try:
        yield
    finally:
        inference_onnx.SPIN = before
        inference_onnx._SESSIONS.clear()


def timed_extract(checkpoint, task, cache_dir, **options):
    """extract's seconds with a cache holding no features (the exported network, if any, stays)."""
    for entry in Path(cache_dir).glob("*.npz"):
        entry.unlink()
    start = time.perf_counter()
    embedding = extract(checkpoint, task, "train", cache_dir=cache_dir, progress=False, **options)
    return embedding, time.perf_counter() - start


def difference(features, reference) -> float:
    return float(np.abs(features - reference).max() / np.abs(reference).max())


def bench_network(name, task, args, peak):
    paths = task.train.items.paths
    checkpoint = load_checkpoint(f"packaged:{name}")
    preprocess = checkpoint.preprocess
    network = Outputs(checkpoint.feature_module())
    started = time.perf_counter()
    session = ort.InferenceSession(export(network, preprocess.size), providers=["CPUExecutionProvider"])
    print(f"\n{checkpoint.name}: preprocess {preprocess}; anchor's export and session "
          f"{time.perf_counter() - started:.1f} s")
    flops = flops_per_image(network, preprocess.size)
    batches = [images.numpy() for images, _ in data_loader(paths, preprocess, args.batch_size)]
    with torch.no_grad():  # warm up oneDNN, onnxruntime and the allocator so the first timed run is not penalised
        network(torch.from_numpy(batches[0]))
        session.run(None, {"images": batches[0]})
    runs: dict[str, list[float]] = {"plain PyTorch loop": [], "onnxruntime loop (anchor)": [],
                                    "onnxruntime compute only": [], "neucrab extract": []}
    if args.ablation:
        runs.update({"neucrab, optimize=False": [], "neucrab, num_workers=0": [], "neucrab, num_workers=1": [],
                     "neucrab, other spinning": []})
    cold = None
    with tempfile.TemporaryDirectory() as cache:
        for repeat in range(args.repeats):
            reference, seconds = plain_loop(network, paths, preprocess, args.batch_size)
            runs["plain PyTorch loop"].append(seconds)
            anchor, seconds = onnxruntime_loop(session, paths, preprocess, args.batch_size)
            runs["onnxruntime loop (anchor)"].append(seconds)
            runs["onnxruntime compute only"].append(compute_only(session, batches))
            embedding, seconds = timed_extract(checkpoint, task, cache, batch_size=args.batch_size)
            if repeat == 0:
                cold = seconds
            else:
                runs["neucrab extract"].append(seconds)
            if args.ablation:
                runs["neucrab, optimize=False"].append(timed_extract(
                    checkpoint, task, cache, optimize=False, batch_size=args.batch_size)[1])
                for workers in (0, 1):
                    runs[f"neucrab, num_workers={workers}"].append(timed_extract(
                        checkpoint, task, cache, num_workers=workers, batch_size=args.batch_size)[1])
                with spinning_sessions(not inference_onnx.SPIN):
                    runs["neucrab, other spinning"].append(timed_extract(
                        checkpoint, task, cache, batch_size=args.batch_size)[1])
            timings = ", ".join(f"{key} {values[-1]:.1f}" for key, values in runs.items() if values)
            print(f"repeat {repeat}: features vs plain loop: neucrab {difference(embedding.features, reference):.1e}, "
                  f"onnxruntime {difference(anchor, reference):.1e}; seconds: {timings}"
                  + (f", neucrab cold {cold:.1f}" if repeat == 0 else ""), flush=True)
    if not runs["neucrab extract"]:
        runs["neucrab extract"].append(cold)
    base = statistics.median(runs["plain PyTorch loop"])
    anchor = statistics.median(runs["onnxruntime loop (anchor)"])
    print(f"{flops / 1e9:.3f} GFLOP per image; machine's convolution throughput {peak:.1f} GFLOP/s")
    rows = list(runs.items()) + [("neucrab, cold (export included)", [cold])]
    for key, seconds in rows:
        median = statistics.median(seconds)
        rate = len(paths) / median
        print(f"{key:34s} {rate:7.1f} images/s ({median:5.1f} s, median of {len(seconds)}); x{base / median:5.2f} "
              f"plain loop, x{anchor / median:5.2f} onnxruntime loop; {rate * flops / 1e9 / peak:6.1%} of the "
              "convolution throughput")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--networks", nargs="+", default=["efficientnet_lite0", "mobilenet_v2"])
    parser.add_argument("--ablation", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.2f}")
    convolution = convolution_gflops()
    peak = max(convolution.values())
    print("dense 3x3 convolution: " + ", ".join(f"{key} {value:.1f} GFLOP/s" for key, value in convolution.items()))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_images(scratch / "task", args.images)
        task = load_task(scratch / "task")
        print(f"{len(task.train)} JPEG images 384x320, batch size {args.batch_size}")
        for name in args.networks:
            bench_network(name, task, args, peak)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
