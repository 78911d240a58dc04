"""Test-only fault injection for the Ray executor: a unit whose arguments name `match` kills its own worker
process (SIGKILL) on its first `times` attempts, counting attempts in a file under `folder`. It wraps the unit's
function from outside, so the production executor carries no test hooks."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sys
from pathlib import Path

from neucrab.executors import RayExecutor


def kill_then_run(function, folder: str, match: str, times: int, **kwargs):
    named = " ".join(str(value) for value in kwargs.values() if isinstance(value, (str, os.PathLike)))
    if match in named:
        record = Path(folder) / f"attempts-{hashlib.sha256(match.encode()).hexdigest()[:16]}"
        attempts = len(record.read_text().splitlines()) if record.exists() else 0
        if attempts < times:
            with record.open("a") as stream:
                stream.write(f"{os.getpid()}\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return function(**kwargs)


class KillingRayExecutor(RayExecutor):
    """A RayExecutor whose units run through `kill_then_run`."""

    def __init__(self, *, folder: str, match: str, times: int = 1, **options):
        super().__init__(**options)
        self.fault = {"folder": folder, "match": match, "times": times}
        # Workers cannot import this test module: ship its code with the function.
        self.ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def map(self, function, units, **options):
        return super().map(functools.partial(kill_then_run, function, **self.fault), units, **options)
