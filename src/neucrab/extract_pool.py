"""`neucrab extract`: fill the feature cache for many checkpoint specs, on any executor.

The unit of work is `extract_spec` (one checkpoint, one or more splits); `extract_pool` is a thin caller of
`neucrab.pool.run_pool`. Locally one unit per checkpoint (its splits one after another); on Ray one unit per
checkpoint and split, so the splits of one large checkpoint can run on two workers.
"""

from __future__ import annotations

from .extract import extract
from .tasks import load as load_task


def extract_spec(spec, task, splits, *, layer=None, trust_pickle=False, cache_dir=None, batch_size: int = 64,
                 progress: bool = False, device=None, trust_remote_code=False) -> list[dict]:
    """Load the checkpoint `spec` and fill the feature cache for each of `splits` of `task`. device: where
    torch checkpoints run (default: CUDA when available, else the CPU, as `rank`). Returns one summary per
    split (the features stay in the cache)."""
    from .checkpoints import load as load_checkpoint
    from .checkpoints.base import OnDevice
    from .scoring import default_device

    task = load_task(task)
    checkpoint = load_checkpoint(spec, layer=layer, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    if isinstance(checkpoint, OnDevice):
        checkpoint.to(device or default_device())
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
    here; "ray" or a `neucrab.executors.RayExecutor`: Ray tasks). Returns (spec, summaries, error) per unit in
    input order. options: layer, trust_pickle, trust_remote_code, batch_size."""
    from . import executors
    from .pool import PoolUnit, run_pool

    executor = executors.resolve(executor)
    groups = [(split,) for split in splits] if executor.remote else [tuple(splits)]
    units = [PoolUnit(f"{spec} {'+'.join(group)}", {"spec": spec, "splits": group}, spec)
             for spec in specs for group in groups]
    outcomes = run_pool(extract_spec, units, task=load_task(task), task_spec=task, executor=executor,
                        cache_dir=cache_dir, progress=progress, description="extract", **options)
    return [(unit.kwargs["spec"], outcome.result, outcome.error) for unit, outcome in zip(units, outcomes)]
