"""Wall time of one ranking with the local executor and with a local Ray instance (run by hand, not in CI).

    .venv/bin/python benchmarks/ray_executor.py [--checkpoints 16] [--arch timm:resnet10t] [--task digits:300]
        [--image-size 112] [--ray-cpus 2] [--torch-threads N]

Pool: `ARCH:random:SEED` for SEED = 0 .. N-1 (randomly initialised timm ResNet-10t by default: real networks,
different weights, nothing to download). Task: the built-in digits subset; images fed at --image-size pixels
(the checkpoint's own 224 makes each of the two runs take several minutes on two cores). Measures: `rank`'s
default set. Each executor starts from a fresh, empty feature cache, so both do the full work.

Reported: local seconds; for Ray, the start-up (`ray.init(num_cpus=...)`), the workers' warm-up (one task per
CPU importing torch, timm and neucrab in a fresh worker, timed inside the worker), the ranking itself, and the
total; the ratio Ray total / local (above 1: Ray's overhead, below 1: its parallelism wins). Both rankings are
compared: scores, notes and order must be identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from neucrab.executors import RayExecutor
from neucrab.ranking import rank


def _warm_up() -> tuple[int, float]:
    started = time.perf_counter()
    import timm  # noqa: F401

    import neucrab.checkpoints  # noqa: F401
    import neucrab.ranking  # noqa: F401

    time.sleep(0.5)  # hold this worker so the next warm-up task lands on another one
    return os.getpid(), time.perf_counter() - started - 0.5


def outcome(ranking) -> list[tuple]:
    return [(row.checkpoint, row.scores, row.notes, row.error) for row in ranking.rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=16)
    parser.add_argument("--arch", default="timm:resnet10t")
    parser.add_argument("--task", default="digits:300")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, help="torch threads here and in each Ray task (default: torch's)")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    specs = [f"{args.arch}:random:{seed}" for seed in range(args.checkpoints)]
    print(f"{len(specs)} x {args.arch}:random on {args.task} at {args.image_size} px; torch threads "
          f"{torch.get_num_threads()}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        local = rank(specs, args.task, cache_dir=cache, progress=False, image_size=args.image_size)
        local_seconds = time.perf_counter() - started
    print(f"local: {local_seconds:.1f} s", flush=True)

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    init_seconds = time.perf_counter() - started
    started = time.perf_counter()
    warm = ray.get([ray.remote(_warm_up).remote() for _ in range(args.ray_cpus)])
    warm_seconds = time.perf_counter() - started
    imports = ", ".join(f"{seconds:.1f}" for _, seconds in warm)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        remote = rank(specs, args.task, cache_dir=cache, progress=False, image_size=args.image_size,
                      executor=RayExecutor())
        rank_seconds = time.perf_counter() - started
    ray.shutdown()
    total = init_seconds + warm_seconds + rank_seconds
    print(f"ray: start-up {init_seconds:.1f} s, worker warm-up {warm_seconds:.1f} s (imports in the workers: "
          f"{imports} s), ranking {rank_seconds:.1f} s, total {total:.1f} s")
    print(f"ratio ray/local: total {total / local_seconds:.2f}, ranking alone {rank_seconds / local_seconds:.2f}")
    same = outcome(remote) == outcome(local)
    print(f"identical rankings (scores, notes, order): {same}; errors: "
          f"{sum(bool(row.error) for row in local.rows)} local, {sum(bool(row.error) for row in remote.rows)} ray")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
