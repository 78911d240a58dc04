"""Where the units of work run: in this process (`LocalExecutor`, the default) or as Ray tasks (`RayExecutor`).

A unit is one call of a picklable top-level function with keyword arguments that name things (checkpoint
specs, task specs, paths), never loaded models: `scoring.score_checkpoint` per checkpoint for `rank`,
`groundtruth.groundtruth` per (checkpoint, task) for `groundtruth` and `bench`, `extract_pool.extract_spec` per
(checkpoint, task, split) for `extract`. Every executor (the `Executor` protocol) has one method that runs units,

    map(function, units, shared=..., description=..., progress=...) -> iterator of (index, result, error)

which yields each unit's result (or the exception that ended it) as it finishes. Callers do not use it
directly: `neucrab.pool.run_pool` does, and puts the outcomes back in input order, so rows and rankings are the
same whichever executor ran them.

Workers share work through the caches that already exist (the feature cache of `neucrab.extract` and the
run cache of `neucrab.groundtruth`): both are content-keyed files written atomically, so the cache folder
must be a path every worker reaches (a shared filesystem). Object-store URLs (s3://...) are not supported.

Ray resources, per unit: `num_cpus` (default 1) and `num_gpus`: 1 when the cluster has a GPU and the
checkpoint's file (its weights file for ARCH=WEIGHTS, its folder for a Hugging Face folder) is at least
`gpu_min_bytes` (default 100 MB, about 25M float32 parameters), else 0. Checkpoints without a local file
(hub names, ARCH:random) ask for CPUs. `num_gpus=` / `num_cpus=` (--ray-num-gpus / --ray-num-cpus) set the
request of every unit instead. A unit given a GPU runs its torch checkpoint on CUDA, one given none on the CPU
(even on a GPU node: Ray does not hide the GPUs from such a task), unless the caller named a device.

A worker that dies (killed, out of memory, node lost) is retried up to `max_retries` times by Ray; exceptions
raised by the unit itself are not retried (they are deterministic: a bad checkpoint stays bad) and are
reported in the unit's row, as locally. Ray tasks run with the driver's torch and BLAS thread counts and
working directory, so deterministic computations give the same bits as the local executor.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._validate import check_count, check_number, check_positive
from .cache import cache_root
from .errors import CacheWriteError, InputError

GPU_MIN_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_RETRIES = 3
INSTALL_HINT = "pip install 'neucrab[ray]'"


@dataclass
class Unit:
    """One unit of work: `label` names it in progress and errors; `kwargs` are the function's own keyword
    arguments; `size_bytes` is the checkpoint's file size (None when unknown), which picks Ray resources."""

    label: str
    kwargs: dict = field(default_factory=dict)
    size_bytes: int | None = None


class WorkerFailed(RuntimeError):
    """The engine gave up on a unit: its worker died on every try (not an exception of the unit itself)."""


def describe(error: BaseException) -> str:
    """One line for a row's `error`: an InputError's message as it is, other exceptions with their type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (InputError, WorkerFailed)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def spec_size(spec) -> int | None:
    """Bytes of the file a checkpoint spec names (ARCH=WEIGHTS: the weights; a folder: its files); None for
    objects, hub names, ARCH:random and paths that do not exist here."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    text = os.fspath(spec)
    path = Path(text.split("=", 1)[1] if "=" in text and not Path(text).exists() else text).expanduser()
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
    return None


def check_store(cache_dir) -> None:
    """Object-store URLs are not a cache folder (yet): say so in one line."""
    if cache_dir is not None and "://" in str(cache_dir):
        raise InputError(f"--cache-dir {cache_dir}: object-store URLs are not supported yet; expected a folder "
                         "path that every worker reaches (a shared filesystem such as NFS)")


def _label(unit: Unit, running: int, failed: int) -> str:
    return f"{unit.label} · running {running}, failed {failed}"


@runtime_checkable
class Executor(Protocol):
    """Where units run. `remote`: whether they run in other processes (which then get specs, not loaded
    objects); `cache_dir(path)`: the cache folder to hand to units; `map` (see the module docstring); `close`."""

    remote: bool

    def cache_dir(self, cache_dir): ...

    def map(self, function: Callable, units: list[Unit], *, shared: dict | None = None, description: str = "units",
            progress: bool = True) -> Iterator[tuple[int, object, Exception | None]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs the units one after another in this process, in input order (the default)."""

    name = "local"
    remote = False

    def cache_dir(self, cache_dir):
        """The cache folder to hand to units (as given: None means the default)."""
        check_store(cache_dir)
        return cache_dir

    def map(self, function: Callable, units: list[Unit], *, shared: dict | None = None, description: str = "units",
            progress: bool = True) -> Iterator[tuple[int, object, Exception | None]]:
        from .progress import progress_bar

        failures = 0
        with progress_bar(len(units), description, enabled=progress) as advance:
            for index, unit in enumerate(units):
                try:
                    result, error = function(**{**(shared or {}), **unit.kwargs}), None
                except CacheWriteError:  # the disk's failure, not the unit's: stops the run
                    raise
                except Exception as raised:  # reported in the unit's outcome by the pool, as Ray's are
                    result, error = None, raised
                failures += error is not None
                advance(label=_label(unit, 0, failures))
                yield index, result, error

    def close(self) -> None:
        pass


def require_ray():
    """The ray module, or a one-line InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray: the ray package is not installed; expected it installed: "
                         f"{INSTALL_HINT}") from None
    return ray


def ray_resources(size_bytes: int | None, cluster_gpus: float, *, num_cpus: float | None = None,
                  num_gpus: float | None = None, gpu_min_bytes: int = GPU_MIN_BYTES) -> dict:
    """The Ray request of one unit (see the module docstring for the rule)."""
    if num_gpus is None:
        large = size_bytes is not None and size_bytes >= gpu_min_bytes
        num_gpus = 1 if large and cluster_gpus >= 1 else 0
    return {"num_cpus": 1 if num_cpus is None else num_cpus, "num_gpus": num_gpus}


def thread_settings() -> dict:
    """This process's torch intra-op threads and BLAS threads (what Ray tasks copy)."""
    import torch

    from .threads import blas_thread_count

    return {"torch": torch.get_num_threads(), "blas": blas_thread_count()}  # blas None: left as the worker has it


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(describe(error))


def run_unit(function: Callable, shared: dict, kwargs: dict, threads: dict, cwd: str | None):
    """The body of every Ray task: the driver's thread settings and working directory (relative paths in specs
    resolve as on the driver when the folder exists here), then the function. Returns ("ok", result) or
    ("raised", exception), so the unit's own exceptions reach the caller unchanged and are not retried."""
    from .threads import blas_threads, torch_threads

    before_cwd = os.getcwd()
    try:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        with torch_threads(threads["torch"]), blas_threads(threads.get("blas")):
            return "ok", function(**{**shared, **kwargs})
    except Exception as error:
        return "raised", _picklable(error)
    finally:
        os.chdir(before_cwd)


class RayExecutor:
    """Runs each unit as a Ray task on the cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"; None:
    the cluster ray.init finds, else a new local one). If Ray is already initialised in this process, that
    instance is used as it is. See the module docstring for resources, retries and thread settings."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, *, num_cpus: float | None = None, num_gpus: float | None = None,
                 gpu_min_bytes: int = GPU_MIN_BYTES, max_retries: int = DEFAULT_MAX_RETRIES,
                 threads: dict | None = None, init_options: dict | None = None):
        self.ray = require_ray()
        if num_cpus is not None:
            num_cpus = check_positive(num_cpus, "--ray-num-cpus")
        if num_gpus is not None:
            num_gpus = check_number(num_gpus, "--ray-num-gpus", 0.0, math.inf)
        max_retries = check_count(max_retries, "--ray-max-retries", minimum=0)
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.gpu_min_bytes, self.max_retries = int(gpu_min_bytes), max_retries
        self.threads, self.init_options = threads, dict(init_options or {})
        self._started = False

    def start(self) -> None:
        """Connect to (or start) Ray unless this process already has it initialised."""
        if self.ray.is_initialized():
            return
        options = {"include_dashboard": False, "logging_level": logging.WARNING, **self.init_options}
        try:
            self.ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.address or "a new local instance"
            raise InputError(f"--address {where}: could not start or reach Ray ({describe(error)}); expected "
                             "'auto', HOST:PORT or ray://HOST:PORT of a running cluster") from None
        self._started = True

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def cache_dir(self, cache_dir):
        """An absolute cache folder for the workers (the default one resolved here, on the driver)."""
        check_store(cache_dir)
        return str(cache_root(cache_dir).absolute())

    def resources(self, unit: Unit, cluster_gpus: float) -> dict:
        return ray_resources(unit.size_bytes, cluster_gpus, num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                             gpu_min_bytes=self.gpu_min_bytes)

    def map(self, function: Callable, units: list[Unit], *, shared: dict | None = None, description: str = "units",
            progress: bool = True) -> Iterator[tuple[int, object, Exception | None]]:
        from .progress import progress_bar

        ray = self.ray
        self.start()
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if self.num_gpus and not gpus:  # Ray would wait for a GPU node forever
            raise InputError(f"--ray-num-gpus {self.num_gpus:g}: the Ray cluster has no GPU; expected 0 (or a "
                             "cluster with GPUs)")
        threads = self.threads or thread_settings()
        shared_ref = ray.put(dict(shared or {}))
        task = ray.remote(run_unit)
        refs = {}
        # Ray leaves CUDA_VISIBLE_DEVICES alone for a task given no GPU: name its device, or it would use one.
        free_device = "device" in (shared or {}) and (shared or {})["device"] is None
        for index, unit in enumerate(units):
            resources = self.resources(unit, gpus)
            kwargs = unit.kwargs
            if free_device and "device" not in kwargs:
                kwargs = {**kwargs, "device": "cuda" if resources["num_gpus"] > 0 else "cpu"}
            options = {**resources, "max_retries": self.max_retries, "retry_exceptions": False}
            ref = task.options(**options).remote(function, shared_ref, kwargs, threads, os.getcwd())
            refs[ref] = index
        pending, failures = list(refs), 0
        try:
            with progress_bar(len(units), description, enabled=progress) as advance:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        index = refs[ref]
                        try:
                            status, payload = ray.get(ref)
                            result, error = (payload, None) if status == "ok" else (None, payload)
                        except ray.exceptions.RayError as crash:  # the worker died on every try, or Ray failed
                            tries = self.max_retries + 1
                            result, error = None, WorkerFailed(
                                f"the Ray worker failed on each of {tries} tries ({describe(crash)})")
                        failures += error is not None
                        advance(label=_label(units[index], len(pending), failures))
                        yield index, result, error
        finally:
            for ref in pending:  # interrupted or abandoned: do not leave work queued on the cluster
                ray.cancel(ref)


def resolve(executor) -> Executor:
    """None or "local" -> LocalExecutor(); "ray" -> RayExecutor(); an `Executor` object as it is."""
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, Executor):
        return executor
    raise InputError(f"executor: got {executor!r}; expected 'local', 'ray' or an executor object")
