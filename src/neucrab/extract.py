"""The one forward pass: a task split -> `Embedding(features, probs, labels)`, batched and cached by content.

Sections, each with one job:
1. the cache: one `.npz` per (checkpoint, task, split, layer, preprocessing), written atomically, checked on
   read; partial progress kept as chunk files so an interrupted extraction resumes where it stopped;
2. the batch pipeline: background threads decode and preprocess the next batches (PIL and torch release
   the GIL) while the network runs the current one; features go into a preallocated array;
3. an optional inference copy of `checkpoint.module` (BatchNorm folded into the preceding convolutions,
   channels_last memory layout), used only when it gives the same outputs as the original;
4. `extract` itself.

Memory stays bounded: at most `num_workers + 2` batches of decoded images exist at once, never the dataset.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .progress import progress_bar
from .tasks import Split, Task
from .tasks import load as load_task

CACHE_FORMAT = 1  # bump when what an entry holds, or how features are computed, changes
SAVE_EVERY = 8  # batches between partial-progress chunks
STALE_TEMP_SECONDS = 3600  # temp files older than this were left by a killed process


class CacheWarning(UserWarning):
    """A cache entry or chunk was unreadable or inconsistent and has been discarded (it is recomputed)."""


@dataclass
class Embedding:
    """One split's extracted outputs.

    features: float32 (N, D). probs: float32 (N, S) source-class probabilities, or None when the checkpoint
    has no head. labels: the split's labels, int64 (N,) or multi-hot (N, C). cached: whether it came from the
    cache without a forward pass. path: the cache entry (None when caching is off). seconds: wall time.
    """

    features: np.ndarray
    probs: np.ndarray | None
    labels: np.ndarray
    cached: bool = False
    path: Path | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- 1. cache


def default_cache_dir() -> Path:
    """$NEUCRAB_CACHE, else ~/.cache/neucrab."""
    configured = os.environ.get("NEUCRAB_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "neucrab"


def cache_key(checkpoint, task: Task, split: str) -> str:
    """sha256 hex over everything that determines the features of one split."""
    preprocess = checkpoint.preprocess.key() if task.modality == "image" and checkpoint.preprocess else None
    parts = {
        "format": CACHE_FORMAT,
        "checkpoint": checkpoint.fingerprint,
        "task": task.fingerprint,
        "split": split,
        "layer": checkpoint.layer,
        "preprocess": preprocess,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where directories cannot be opened."""
    with suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz so that `path` holds either nothing, the old file, or the complete new one: temp file
    in the same folder, fsync, os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _load_checked(path: Path, key: str, rows: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(features, probs, meta) of an entry or chunk, or ValueError/OSError when it is damaged or does not
    belong to `key` with `rows` rows. Reading every array fully also checks the zip CRCs."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        features = archive["features"]
        probs = archive["probs"] if "probs" in archive.files else None
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        raise ValueError("it belongs to another cache key or format")
    if features.dtype != np.float32 or features.ndim != 2 or features.shape[0] != rows:
        raise ValueError(f"features {features.dtype} {features.shape}, expected float32 with {rows} rows")
    if probs is not None and (probs.dtype != np.float32 or probs.ndim != 2 or probs.shape[0] != rows):
        raise ValueError(f"probs {probs.dtype} {probs.shape}, expected float32 with {rows} rows")
    return features, probs, meta


def _arrays(meta: dict, features: np.ndarray, probs: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True)), "features": features}
    if probs is not None:
        arrays["probs"] = probs
    return arrays


class FeatureStore:
    """The feature cache under `root`.

    root/<key>.npz                           a complete entry: features, probs (if any), meta (JSON)
    root/<key>.partial/rows-<a>-<b>.npz      rows a..b-1 of an unfinished extraction, written every few batches
    """

    _CHUNK = re.compile(r"rows-(\d+)-(\d+)\.npz")

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    def entry(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def partial(self, key: str) -> Path:
        return self.root / f"{key}.partial"

    def read(self, key: str, rows: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The complete entry, or None when absent; a damaged entry is deleted with a CacheWarning."""
        path = self.entry(key)
        if not path.exists():
            return None
        try:
            features, probs, _ = _load_checked(path, key, rows)
        except Exception as error:  # zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, ...
            self._discard(path, error)
            return None
        return features, probs

    def write(self, key: str, features: np.ndarray, probs: np.ndarray | None, meta: dict) -> Path:
        path = self.entry(key)
        _atomic_savez(path, _arrays({**meta, "key": key, "format": CACHE_FORMAT}, features, probs))
        return path

    def write_chunk(self, key: str, start: int, stop: int, features: np.ndarray, probs: np.ndarray | None):
        meta = {"key": key, "format": CACHE_FORMAT, "start": start, "stop": stop}
        _atomic_savez(self.partial(key) / f"rows-{start:010d}-{stop:010d}.npz", _arrays(meta, features, probs))

    def read_chunks(self, key: str, rows: int) -> list[tuple[int, int, np.ndarray, np.ndarray | None]]:
        """The saved chunks that cover rows 0..k-1 without a gap, in order. A damaged chunk is deleted with a
        CacheWarning, and so is every chunk after it or after a gap (they cannot be used without it)."""
        folder = self.partial(key)
        if not folder.is_dir():
            return []
        found = sorted((int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := self._CHUNK.fullmatch(p.name)))
        chunks, expected, width = [], 0, None
        for position, (start, stop, path) in enumerate(found):
            try:
                if start != expected or not start < stop <= rows:
                    raise ValueError(f"rows {start}..{stop} do not continue from row {expected}")
                features, probs, _ = _load_checked(path, key, stop - start)
                shape = (features.shape[1], None if probs is None else probs.shape[1])
                if width is not None and shape != width:
                    raise ValueError(f"widths {shape} differ from the earlier chunks' {width}")
            except Exception as error:
                self._discard(path, error)
                for _, _, later in found[position + 1:]:
                    later.unlink(missing_ok=True)
                break
            chunks.append((start, stop, features, probs))
            expected, width = stop, shape
        return chunks

    def clear_chunks(self, key: str) -> None:
        shutil.rmtree(self.partial(key), ignore_errors=True)

    def sweep_temps(self, key: str) -> None:
        """Delete temp files that a killed process left behind (old enough that no writer still owns them)."""
        now = time.time()
        for folder in (self.root, self.partial(key)):
            for temp in folder.glob(".tmp-*") if folder.is_dir() else ():
                with suppress(OSError):
                    if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                        temp.unlink()

    @staticmethod
    def _discard(path: Path, error: BaseException) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"neucrab cache: discarding damaged {path} ({reason}); recomputing it",
                      CacheWarning, stacklevel=4)
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- 2. batch pipeline


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


def _run_batches(checkpoint, loader, ranges: list[tuple[int, int]], workers: int, on_batch, advance) -> None:
    """Run `checkpoint.forward` over `ranges` in order, loading up to `workers + 1` batches ahead on a
    thread pool; call on_batch(start, stop, features, probs) and advance(count) after each."""
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
                features, probs = checkpoint.forward(batch)
            features = _as_output(features, stop - start, "features", checkpoint)
            on_batch(start, stop, features, _as_output(probs, stop - start, "probs", checkpoint))
            advance(stop - start)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------- 3. inference copy


def _checksum(tensor: torch.Tensor) -> tuple[float, float]:
    values = tensor.detach().double()
    return float(values.sum()), float(values.abs().sum())


def _conv_bn_pairs(module: nn.Module, run: Callable[[], object], keep: str | None) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) pairs where, in one real forward pass (`run`), a BatchNorm2d in eval
    mode took exactly the output of a Conv2d (the same tensor, values unchanged), each module being called
    once. `keep`: the checkpoint's feature layer, whose own output must stay as it is, so never folded."""
    outputs: dict[int, tuple[str, torch.Tensor, tuple[float, float]]] = {}
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []

    def conv_hook(name):
        def hook(_module, _args, output):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(output)] = (name, output, _checksum(output))
        return hook

    def bn_hook(name):
        def hook(_module, args):
            calls[name] = calls.get(name, 0) + 1
            seen = outputs.get(id(args[0]))
            # The very tensor the convolution returned, not modified in place since (checksum).
            if seen is not None and seen[1] is args[0] and _checksum(args[0]) == seen[2]:
                pairs.append((seen[0], name))
        return hook

    handles = []
    try:
        for name, child in module.named_modules():
            is_kept = keep is not None and (name == keep or name.endswith("." + keep))
            if isinstance(child, nn.Conv2d) and not is_kept:
                handles.append(child.register_forward_hook(conv_hook(name)))
            elif type(child) is nn.BatchNorm2d and child.running_var is not None and not child.training:
                handles.append(child.register_forward_pre_hook(bn_hook(name)))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return [(conv, bn) for conv, bn in pairs if calls[conv] == 1 and calls[bn] == 1]


@torch.no_grad()
def _fold(module: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BatchNorm's affine map into its convolution (in float64) and replace it by Identity."""
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias.double() * scale + shift
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        parent_name, _, attribute = bn_name.rpartition(".")
        setattr(module.get_submodule(parent_name), attribute, nn.Identity())


def _same_outputs(reference, candidate) -> bool:
    """Whether two forward outputs agree to float32 rounding (relative to the features' scale)."""
    for ref, got in zip(reference, candidate):
        if (ref is None) != (got is None):
            return False
        if ref is None:
            continue
        ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape or not np.isfinite(got).all():
            return False
        if np.abs(ref - got).max() > 1e-3 * max(np.abs(ref).max(), 1e-6):
            return False
    return True


def _module_attributes(checkpoint) -> dict[str, nn.Module]:
    """Every nn.Module the checkpoint holds as an attribute (`module`, and e.g. a feature wrapper around it)."""
    return {name: value for name, value in vars(checkpoint).items() if isinstance(value, nn.Module)}


def _swap(checkpoint, modules: dict[str, nn.Module]) -> None:
    for name, value in modules.items():
        setattr(checkpoint, name, value)


def _faster_modules(checkpoint, probe) -> dict[str, nn.Module] | None:
    """Faster copies of the checkpoint's modules whose outputs on `probe` (through `checkpoint.forward`)
    match the originals': BatchNorm folded + channels_last, else channels_last alone; None if neither, or
    if the network has no Conv2d -> BatchNorm2d pair (then the copy would gain little and cost memory).

    The modules are deep-copied together, so one that wraps `module` (a feature extractor) wraps the copy.
    """
    originals = _module_attributes(checkpoint)
    outputs = {}

    def run() -> None:
        outputs["reference"] = checkpoint.forward(probe)

    try:
        with torch.inference_mode():
            pairs = _conv_bn_pairs(checkpoint.module, run, checkpoint.layer)
    except Exception:  # a module that refuses hooks, or anything unexpected: keep the original
        return None
    if not pairs:  # nothing to fold (no BatchNorm convnet): not worth a copy of the network
        return None
    for fold in (True, False):
        try:
            copies = copy.deepcopy(originals)
            if fold:
                _fold(copies["module"], pairs)
            for candidate in copies.values():
                candidate.to(memory_format=torch.channels_last)
            _swap(checkpoint, copies)
            with torch.inference_mode():
                if _same_outputs(outputs["reference"], checkpoint.forward(probe)):
                    return copies
        except Exception:
            pass
        finally:
            _swap(checkpoint, originals)
    return None


@contextmanager
def inference_copy(checkpoint, probe):
    """For the duration of the block, swap the checkpoint's modules (when it has an nn.Module `module`) for
    `_faster_modules`' copies; the originals, untouched, are always put back. Yields whether it swapped."""
    module = getattr(checkpoint, "module", None)
    faster = None
    if probe is not None and isinstance(module, nn.Module) and not isinstance(module, torch.jit.ScriptModule):
        faster = _faster_modules(checkpoint, probe)
    if faster is None:
        yield False
        return
    originals = _module_attributes(checkpoint)
    _swap(checkpoint, faster)
    try:
        yield True
    finally:
        _swap(checkpoint, originals)


# ------------------------------------------------------------------------------------------- 4. extract


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
    partial-progress chunks. optimize: allow the inference copy of `checkpoint.module` (section 3).
    Returns an `Embedding` with float32 features (N, D) in the split's order.
    """
    started = time.perf_counter()
    task = load_task(task)
    samples = task.split(split)
    _check_pair(checkpoint, task)
    if checkpoint.modality == "features":
        return _precomputed(checkpoint, task, split, started)
    if batch_size < 1 or save_every < 1:
        raise InputError(f"batch_size, save_every: got {batch_size}, {save_every}; expected positive integers")
    workers = _default_workers() if num_workers is None else max(0, int(num_workers))
    rows = len(samples)
    key = cache_key(checkpoint, task, split)
    store = FeatureStore(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    collector, done = _Collector(rows), 0
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
    uses_module = task.modality == "image" and isinstance(getattr(checkpoint, "module", None), nn.Module)
    loader = _batch_loader(checkpoint, samples, task.modality, channels_last=optimize and uses_module)
    ranges = [(start, min(start + batch_size, rows)) for start in range(done, rows, batch_size)]
    unsaved = {"from": done, "batches": 0}

    def on_batch(start: int, stop: int, features, probs) -> None:
        collector.put(start, features, probs)
        unsaved["batches"] += 1
        if use_cache and unsaved["batches"] >= save_every and stop < rows:
            store.write_chunk(key, unsaved["from"], stop, *collector.slice(unsaved["from"], stop))
            unsaved.update({"from": stop, "batches": 0})

    if ranges:
        probe = loader(ranges[0][0], min(ranges[0][0] + 2, rows)) if optimize and uses_module else None
        with inference_copy(checkpoint, probe), \
                progress_bar(rows, f"{checkpoint.name} / {task.name} {split}", enabled=progress, completed=done,
                             transient=False) as advance:
            _run_batches(checkpoint, loader, ranges, workers, on_batch, advance)
    path = None
    if use_cache:
        meta = {"rows": rows, "checkpoint": checkpoint.name, "checkpoint_fingerprint": checkpoint.fingerprint,
                "task": task.name, "task_fingerprint": task.fingerprint, "split": split,
                "layer": checkpoint.layer, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        path = store.write(key, collector.features, collector.probs, meta)
        store.clear_chunks(key)
    return Embedding(collector.features, collector.probs, samples.labels, path=path,
                     seconds=time.perf_counter() - started)


# ------------------------------------------------------------------------------------------ 5. many specs


def extract_spec(spec, task, splits, *, layer=None, trust_pickle=False, cache_dir=None, batch_size: int = 64,
                 progress: bool = False, device=None) -> list[dict]:
    """Load the checkpoint `spec` and fill the feature cache for each of `splits` of `task`: the unit of work of
    `extract_pool`. device: where torch checkpoints run (default: CUDA when available, else the CPU, as `rank`).
    Returns one summary per split (the features stay in the cache)."""
    from .checkpoints import load as load_checkpoint

    task = load_task(task)
    checkpoint = load_checkpoint(spec, layer=layer, trust_pickle=trust_pickle)
    if callable(getattr(checkpoint, "to", None)):  # torch checkpoints: the GPU when there is one
        checkpoint.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    summaries = []
    for split in splits:
        embedding = extract(checkpoint, task, split, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        path = None if embedding.path is None else str(embedding.path)
        summaries.append({"checkpoint": checkpoint.name, "task": task.name, "split": split,
                          "shape": tuple(embedding.features.shape), "cached": embedding.cached,
                          "seconds": embedding.seconds, "path": path})
    return summaries


def extract_pool(specs, task, *, splits=("train", "test"), executor=None, progress: bool = True, cache_dir=None,
                 **options) -> list[tuple[str, list[dict] | None, str | None]]:
    """Fill the feature cache for every checkpoint spec and split of `task`, run by `executor` (None or "local":
    here, one unit per checkpoint; "ray" or a `neucrab.executors.RayExecutor`: one Ray task per checkpoint and
    split). Returns (spec, summaries, error) per unit in input order. options: layer, trust_pickle, batch_size."""
    from . import executors

    executor = executors.resolve(executor)
    task_spec, task = task, load_task(task)
    shared = {"task": task_spec if executor.remote and isinstance(task_spec, str) else task, "device": None,
              "cache_dir": executor.cache_dir(cache_dir), "progress": progress and not executor.remote, **options}
    groups = [(split,) for split in splits] if executor.remote else [tuple(splits)]
    units = [executors.Unit(f"{spec} {'+'.join(group)}", {"spec": spec, "splits": group}, executors.spec_size(spec))
             for spec in specs for group in groups]
    outcomes: list = [None] * len(units)
    for index, result, error in executor.map(extract_spec, units, shared=shared, description="extract",
                                             progress=progress):
        outcomes[index] = (units[index].kwargs["spec"], result, None if error is None else executors.describe(error))
    return outcomes
