"""One pool driver: run one function per unit of work on an executor, get one `Outcome` per unit back.

`rank` (one unit per checkpoint), `extract` (per checkpoint, or per checkpoint and split on Ray) and
`groundtruth` (per checkpoint and task) are thin callers of `run_pool`: it builds the units, hands the shared
arguments (the task, the cache folder, progress) to the executor the way that executor needs them, captures
each unit's failure as its outcome's `error`, and returns the outcomes in input order, whichever executor ran
them and in whatever order they finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import executors
from .errors import CacheWriteError


@dataclass(frozen=True)
class Outcome:
    """One unit's result, or the one-line reason it failed (`error`; `result` is then None)."""

    label: str
    result: object = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PoolUnit:
    """What the caller says about one unit: its label, its own keyword arguments, and the checkpoint spec whose
    file size picks Ray resources (None when there is no file)."""

    label: str
    kwargs: dict
    spec: object = None


def run_pool(function: Callable, units: list[PoolUnit], *, task, task_spec=None, executor=None, cache_dir=None,
             progress: bool = True, description: str = "units", **shared) -> list[Outcome]:
    """Run `function(task=..., cache_dir=..., progress=..., device=None, **shared, **unit.kwargs)` once per unit
    on `executor` (None or "local": here; "ray" or an executor object). `task` is the loaded Task (the caller
    loads it first, so a bad task fails once, before any unit); remote executors get `task_spec` instead when it
    is a string (workers load it themselves), and no progress bars inside units. `device=None` lets each unit
    pick CUDA when it has one."""
    executor = executors.resolve(executor)
    remote_task = executor.remote and isinstance(task_spec, str)
    arguments = {"task": task_spec if remote_task else task, "device": None,
                 "cache_dir": executor.cache_dir(cache_dir), "progress": progress and not executor.remote, **shared}
    work = [executors.Unit(unit.label, unit.kwargs, executors.spec_size(unit.spec)) for unit in units]
    outcomes: list[Outcome | None] = [None] * len(work)
    for index, result, error in executor.map(function, work, shared=arguments, description=description,
                                             progress=progress):
        label = work[index].label
        if isinstance(error, CacheWriteError):  # a remote unit's full disk stops the run as a local one's does
            raise error
        outcomes[index] = Outcome(label, result) if error is None else Outcome(label, error=executors.describe(error))
    return outcomes
