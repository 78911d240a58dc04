"""`neucrab extract`: fill the feature cache for many checkpoint specs, on any executor.

The unit of work is `extract_spec` (one checkpoint, one or more splits); `extract_pool` is a thin caller of
`neucrab.pool.run_pool`. Locally one unit per checkpoint (its splits one after another); on Ray one unit per
checkpoint and split, so the splits of one large checkpoint can run on two workers.
"""

from __future__ import annotations

from .extract import extract
from .tasks import load as load_task


def extract_spec(spec, task, splits, *, layer=None, trust_pickle=False, cache_dir=None, batch_size: int = 64,
                 progress: bool = False, device=None, trust_remote_code=False, name=None) -> list[dict]:
    """Load the checkpoint `spec` and fill the feature cache for each of `splits` of `task`. device: where
    torch checkpoints run (default: CUDA when available, else the CPU, as `rank`). name: the checkpoint's
    display name (default: derived from the spec). Returns one summary per split (the features stay in the
    cache)."""
    from .checkpoints import load as load_checkpoint
    from .checkpoints.base import OnDevice
    from .scoring import default_device

    task = load_task(task)
    checkpoint = load_checkpoint(spec, layer=layer, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code,
                                 name=name)
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
                 layer=None, pooling=None, **options) -> list[tuple[str, list[dict] | None, str | None]]:
    """Fill the feature cache for every checkpoint spec (or `neucrab.pool_manifest.PoolEntry` row) and split of
    `task`, run by `executor` (None or "local": here; "ray" or a `neucrab.executors.RayExecutor`: Ray tasks).
    Returns (label, summaries, error) per unit in input order, the label being the spec, or a manifest row's
    name. layer, pooling: as `rank`'s (`all` and lists: one unit per hidden state of a text encoder).
    options: trust_pickle, trust_remote_code, batch_size."""
    from . import executors
    from .pool import PoolUnit, run_pool
    from .pool_manifest import PoolEntry, split_entries
    from .text_layers import expand_layer_choices

    executor = executors.resolve(executor)
    groups = [(split,) for split in splits] if executor.remote else [tuple(splits)]
    entries = [isinstance(item, PoolEntry) for item in specs]
    specs, names, carried = split_entries(specs)
    expanded, names, _, layer = expand_layer_choices(specs, names, carried, layer, pooling,
                                                     trust_remote_code=options.get("trust_remote_code", False))
    named = entries if len(expanded) == len(specs) else [True] * len(expanded)
    labelled = [(name, spec, {"name": name} if keep or name != spec else {})
                for name, spec, keep in zip(names, expanded, named)]
    units = [PoolUnit(f"{label} {'+'.join(group)}", {"spec": spec, "splits": group, **named}, spec)
             for label, spec, named in labelled for group in groups]
    labels = [label for label, _, _ in labelled for _ in groups]
    outcomes = run_pool(extract_spec, units, task=load_task(task), task_spec=task, executor=executor,
                        cache_dir=cache_dir, progress=progress, description="extract", layer=layer, **options)
    return [(label, outcome.result, outcome.error) for label, outcome in zip(labels, outcomes)]
