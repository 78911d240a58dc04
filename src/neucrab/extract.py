"""The one forward pass: a task split -> `Embedding(features, probs, labels)`, batched and cached by content.

`extract` reads the feature cache (`neucrab.feature_store`) and, on a miss, runs the batch pipeline: background
threads decode and preprocess the next batches (PIL and torch release the GIL) while the network runs the
current one, features go into a preallocated array, partial progress is saved as chunks every few batches so
an interrupted extraction resumes where it stopped. PyTorch image networks on the CPU run through an onnxruntime
copy (`neucrab.inference_onnx`, exported once and cached by content), else through `neucrab.inference_copy`
(BatchNorm folded, channels_last), each only when it gives the same outputs on a probe of real images.

Memory stays bounded: at most `num_workers + 2` batches of decoded images exist at once, never the dataset.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._validate import check_count
from .cache import CacheWarning, cache_root, default_cache_dir
from .checkpoints.base import Derived, OnDevice, Trainable
from .errors import InputError
from .feature_store import CACHE_FORMAT, FeatureStore, cache_key
from .inference_copy import inference_copy
from .inference_onnx import onnx_forward
from .progress import progress_bar
from .tasks import Split, Task
from .tasks import load as load_task

# Re-exported: where they lived before the cache and the inference copy got modules of their own.
__all__ = ["CACHE_FORMAT", "CacheWarning", "Embedding", "FeatureStore", "cache_key", "default_cache_dir", "extract",
           "inference_copy"]

SAVE_EVERY = 8  # batches between partial-progress chunks
PROBE = 3  # images run through both PyTorch and a faster copy to check they agree


@dataclass
class Embedding:
    """One split's extracted outputs.

    features: float32 (N, D). probs: float32 (N, S) source-class probabilities, or None when the checkpoint
    has no head. labels: the split's labels, int64 (N,) or multi-hot (N, C). cached: whether it came from the
    cache without a forward pass. path: the cache entry (None when caching is off). seconds: wall time.
    batch_seconds: the part of it spent running batches (decoding and the network). setup_seconds: the part spent
    preparing them (the probe, the faster copy of the network: export or inference copy); the rest is the cache's.
    """

    features: np.ndarray
    probs: np.ndarray | None
    labels: np.ndarray
    cached: bool = False
    path: Path | None = None
    seconds: float = 0.0
    batch_seconds: float = 0.0
    setup_seconds: float = 0.0


# ------------------------------------------------------------------------------------------ batch pipeline


class _Collector:
    """Features (N, D) and probs (N, S) filled batch by batch; allocated once the widths are known."""

    def __init__(self, rows: int):
        self.rows = rows
        self.features: np.ndarray | None = None
        self.probs: np.ndarray | None = None

    def put(self, start: int, features: np.ndarray, probs: np.ndarray | None) -> None:
        if self.features is None:
            self.features = np.empty((self.rows, features.shape[1]), dtype=np.float32)
            self.probs = None if probs is None else np.empty((self.rows, probs.shape[1]), dtype=np.float32)
        stop = start + len(features)
        self.features[start:stop] = features
        if self.probs is not None:
            self.probs[start:stop] = probs

    def slice(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.features[start:stop], None if self.probs is None else self.probs[start:stop]


def _batch_loader(checkpoint, split: Split, modality: str, channels_last: bool) -> Callable[[int, int], object]:
    """A function (start, stop) -> the network's input for samples start..stop-1 of `split`."""
    if modality == "image":
        from .tasks.preprocess import normalize, resize_crop

        preprocess = checkpoint.preprocess
        size = preprocess.size

        def load_images(start: int, stop: int) -> torch.Tensor:
            pixels = np.empty((stop - start, size, size, 3), dtype=np.uint8)  # decoded one image at a time
            for row, index in enumerate(range(start, stop)):
                pixels[row] = np.asarray(resize_crop(split[index], preprocess))
            return normalize(pixels, preprocess, channels_last)

        return load_images
    if modality == "text":
        return lambda start, stop: [split[index] for index in range(start, stop)]
    return lambda start, stop: torch.from_numpy(np.stack([split[index] for index in range(start, stop)]))


def _as_output(value, rows: int, what: str, checkpoint) -> np.ndarray | None:
    """A forward output as float32 (rows, K), or InputError naming the checkpoint."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    value = np.asarray(value, dtype=np.float32)
    if value.ndim != 2 or value.shape[0] != rows:
        raise InputError(f"checkpoint {checkpoint.name}: forward returned {what} of shape {value.shape}; "
                         f"expected ({rows}, K)")
    return value


def _run_batches(checkpoint, forward, loader, ranges: list[tuple[int, int]], workers: int, on_batch,
                 advance) -> None:
    """Run `forward` (the checkpoint's, or its onnxruntime copy's) over `ranges` in order, loading up to
    `workers + 1` batches ahead on a thread pool; call on_batch(start, stop, features, probs) and
    advance(count) after each."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neucrab-load") if workers else None
    pending: deque = deque()
    upcoming = iter(ranges)

    def submit() -> None:
        span = next(upcoming, None)
        if span is not None:
            pending.append((span, pool.submit(loader, *span) if pool else None))

    try:
        for _ in range(workers + 1):
            submit()
        while pending:
            (start, stop), future = pending.popleft()
            batch = future.result() if future is not None else loader(start, stop)
            submit()  # keep the pool busy while the network runs this batch
            with torch.inference_mode():
                features, probs = forward(batch)
            features = _as_output(features, stop - start, "features", checkpoint)
            on_batch(start, stop, features, _as_output(probs, stop - start, "probs", checkpoint))
            advance(stop - start)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

# ------------------------------------------------------------------------------------------------- extract


@contextmanager
def full_precision_convolutions(checkpoint):
    """cuDNN convolutions in float32, not TF32 (PyTorch's default on Ampere and later), while a CUDA network
    extracts features: TF32 moved EfficientNet-Lite0 features by 0.4% of their range on an H200, enough to
    change N-LEEP's mixture fit, and GPU and CPU runs share one feature cache. Set once per extraction and
    restored after it; nothing is touched for a network on the CPU."""
    if not (isinstance(checkpoint, OnDevice) and torch.device(checkpoint.device).type == "cuda"):
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@contextmanager
def _fastest_forward(checkpoint, probe, rows: int, cache_dir, use_cache: bool):
    """(forward function, whether its batches should be channels_last) for the block: the checkpoint's
    onnxruntime copy (`neucrab.inference_onnx`) where it gives the same outputs on `probe`, else its
    PyTorch forward through the inference copy (`neucrab.inference_copy`). None probe: the plain forward.
    rows: how many images the forward will see (whether exporting pays)."""
    if probe is None:
        yield checkpoint.forward, False
        return
    onnx = onnx_forward(checkpoint, probe, rows, cache_dir, use_cache)
    if onnx is not None:
        yield onnx, False
        return
    with inference_copy(checkpoint, probe[:2]):
        yield checkpoint.forward, True


def _check_pair(checkpoint, task: Task) -> None:
    if checkpoint.modality == "features":
        return
    if checkpoint.modality != task.modality:
        raise InputError(f"checkpoint {checkpoint.name} takes {checkpoint.modality} input but task "
                         f"{task.name} holds {task.modality} data; expected matching kinds")
    if task.modality == "image" and checkpoint.preprocess is None:
        raise InputError(f"checkpoint {checkpoint.name}: an image checkpoint needs a `preprocess`")


def _precomputed(checkpoint, task: Task, split: str, started: float) -> Embedding:
    """Features a "features" checkpoint already holds for this split."""
    features, probs = checkpoint.arrays(split)
    rows = len(task.split(split))
    features = _as_output(features, len(features), "features", checkpoint)
    if len(features) != rows:
        raise InputError(f"checkpoint {checkpoint.name}: holds {len(features)} {split} feature rows but task "
                         f"{task.name} has {rows} {split} samples; expected one row per sample")
    probs = _as_output(probs, rows, "probs", checkpoint)
    return Embedding(features, probs, task.split(split).labels, seconds=time.perf_counter() - started)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def extract(checkpoint, task, split: str, *, cache_dir=None, batch_size: int = 64, progress: bool = True,
            num_workers: int | None = None, use_cache: bool = True, save_every: int = SAVE_EVERY,
            optimize: bool = True) -> Embedding:
    """Features (and source probabilities) of one split of `task` under `checkpoint`: one batched forward
    pass, or none when the cache already holds them.

    checkpoint: a `neucrab.checkpoints.base.Checkpoint`. task: a `Task` or a task spec. split: "train" or
    "test". cache_dir: default $NEUCRAB_CACHE or ~/.cache/neucrab. num_workers: threads decoding and
    preprocessing ahead of the network (default min(4, CPUs); 0 loads in the calling thread).
    use_cache=False computes without reading or writing the cache. save_every: batches between saved
    partial-progress chunks. optimize: allow the faster copies of `checkpoint.module` (onnxruntime, else
    the inference copy; see the module docstring).
    Returns an `Embedding` with float32 features (N, D) in the split's order.
    """
    started = time.perf_counter()
    task = load_task(task)
    samples = task.split(split)
    _check_pair(checkpoint, task)
    if checkpoint.modality == "features":
        return _precomputed(checkpoint, task, split, started)
    source = checkpoint.derived_from() if isinstance(checkpoint, Derived) else None
    if source is not None:
        return _derived(checkpoint, source, task, split, started, cache_dir=cache_dir, use_cache=use_cache,
                        batch_size=batch_size, progress=progress, num_workers=num_workers, save_every=save_every,
                        optimize=optimize)
    batch_size, save_every = check_count(batch_size, "batch_size"), check_count(save_every, "save_every")
    workers = _default_workers() if num_workers is None else max(0, int(num_workers))
    rows = len(samples)
    key = cache_key(checkpoint, task, split)
    store = FeatureStore(cache_root(cache_dir))
    collector, done, batch_seconds, setup_seconds = _Collector(rows), 0, 0.0, 0.0
    if use_cache:
        store.sweep_temps(key)
        hit = store.read(key, rows)
        if hit is not None:
            store.clear_chunks(key)  # left over if a run stopped between writing the entry and cleaning up
            return Embedding(hit[0], hit[1], samples.labels, cached=True, path=store.entry(key),
                             seconds=time.perf_counter() - started)
        for start, stop, features, probs in store.read_chunks(key, rows):
            collector.put(start, features, probs)
            done = stop
    uses_module = task.modality == "image" and isinstance(checkpoint, Trainable) and \
        isinstance(checkpoint.module, nn.Module)
    ranges = [(start, min(start + batch_size, rows)) for start in range(done, rows, batch_size)]
    unsaved = {"from": done, "batches": 0}

    def on_batch(start: int, stop: int, features, probs) -> None:
        collector.put(start, features, probs)
        unsaved["batches"] += 1
        if use_cache and unsaved["batches"] >= save_every and stop < rows:
            store.write_chunk(key, unsaved["from"], stop, *collector.slice(unsaved["from"], stop))
            unsaved.update({"from": stop, "batches": 0})

    if ranges:
        setup_started = time.perf_counter()
        probe = _batch_loader(checkpoint, samples, task.modality, channels_last=False)(
            ranges[0][0], min(ranges[0][0] + PROBE, rows)) if optimize and uses_module else None
        with _fastest_forward(checkpoint, probe, rows - done, cache_dir, use_cache) as (forward, channels_last), \
                full_precision_convolutions(checkpoint), \
                progress_bar(rows, f"{checkpoint.name} / {task.name} {split}", enabled=progress, completed=done,
                             transient=False) as advance:
            loader = _batch_loader(checkpoint, samples, task.modality, channels_last=channels_last)
            batches_started = time.perf_counter()
            setup_seconds = batches_started - setup_started
            _run_batches(checkpoint, forward, loader, ranges, workers, on_batch, advance)
            batch_seconds = time.perf_counter() - batches_started
    path = None
    if use_cache:
        path = store.write(key, collector.features, collector.probs, _meta(checkpoint, task, split, rows))
        store.clear_chunks(key)
    return Embedding(collector.features, collector.probs, samples.labels, path=path,
                     seconds=time.perf_counter() - started, batch_seconds=batch_seconds, setup_seconds=setup_seconds)


def _meta(checkpoint, task: Task, split: str, rows: int) -> dict:
    return {"rows": rows, "checkpoint": checkpoint.name, "checkpoint_fingerprint": checkpoint.fingerprint,
            "task": task.name, "task_fingerprint": task.fingerprint, "split": split,
            "layer": checkpoint.layer, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _derived(checkpoint, source, task: Task, split: str, started: float, *, cache_dir, use_cache: bool,
             **options) -> Embedding:
    """Features derived from another checkpoint's (`checkpoints.base.Derived`): that checkpoint's are extracted
    (cached, resumable), these computed from them and cached under their own key."""
    base, derive = source
    samples = task.split(split)
    rows = len(samples)
    key = cache_key(checkpoint, task, split)
    store = FeatureStore(cache_root(cache_dir))
    if use_cache:
        hit = store.read(key, rows)
        if hit is not None:
            return Embedding(hit[0], hit[1], samples.labels, cached=True, path=store.entry(key),
                             seconds=time.perf_counter() - started)
    underlying = extract(base, task, split, cache_dir=cache_dir, use_cache=use_cache, **options)
    features = _as_output(derive(underlying.features), rows, "derived features", checkpoint)
    path = None
    if use_cache:
        meta = {**_meta(checkpoint, task, split, rows), "derived_from": base.fingerprint}
        path = store.write(key, features, None, meta)
    return Embedding(features, None, samples.labels, cached=underlying.cached, path=path,
                     seconds=time.perf_counter() - started)
