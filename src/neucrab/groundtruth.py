"""The ground truth G of NeuCRaB (Li et al., CVPR 2021, section 2 and appendix A.2): the best test accuracy of
fine-tuning a checkpoint on a task over a grid of learning rates and step counts.

The grid. Appendix A.2 sweeps the learning rate over {0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5} and the
training steps over "{2500, 5000, 10000, 15000, 20000, 400000}", batch 512. We read the last value as 40000:
the other values grow by at most 2x from one to the next (2500, 5000, 10000, 15000, 20000), 400000 steps of
batch 512 would be 200M images (thousands of epochs of the paper's tasks, whose training splits hold a few
thousand to tens of thousands of images), and a stray zero is the likelier typo. PAPER_STEPS_AS_PRINTED keeps
the printed grid for anyone who reads it the other way (pass it as `steps=`).

How a sweep runs. With a constant learning rate a shorter run is an exact prefix of a longer one (see
`neucrab.finetune`), so each learning rate takes one run to the largest step count still needed, evaluated at
every step count of the grid: 8 runs, not 48.

The run cache. Every (learning rate, step count) result is a small JSON file written atomically (temp file,
fsync, os.replace) as soon as that evaluation is reached:

    <cache root>/groundtruth/<key>.json      key = sha256 of {format, loop version, checkpoint fingerprint,
                                             task fingerprint, lr, steps, batch, image size, seed}

where the cache root is the feature cache's ($NEUCRAB_CACHE, else ~/.cache/neucrab) unless `cache_dir` says
otherwise, and batch is the batch actually used. An interrupted or extended sweep redoes only the missing
results; a damaged file is discarded with a CacheWarning and recomputed.

Selection. The best run is the highest test accuracy among runs that did not diverge; ties go to fewer steps,
then the smaller learning rate. A diverged run is recorded (accuracy None) and never selected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._validate import check_count, check_learning_rate, check_seed
from .cache import atomic_write, cache_root
from .errors import InputError
from .finetune import LOOP_VERSION, Finetuner
from .json_store import JsonStore

PAPER_LRS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5)
PAPER_STEPS = (2500, 5000, 10000, 15000, 20000, 40000)  # the text prints 400000 last: see the module docstring
PAPER_STEPS_AS_PRINTED = (2500, 5000, 10000, 15000, 20000, 400000)
PAPER_BATCH_SIZE = 512
RUN_FORMAT = 1  # bump when what a run record holds changes


@dataclass
class Run:
    """One (learning rate, step count) result. accuracy: None when the run diverged at or before `steps`.
    seconds: training time up to `steps` (a prefix of the learning rate's longest run). cached: read from
    the run cache rather than trained in this call."""

    lr: float
    steps: int
    accuracy: float | None
    diverged: bool
    seconds: float
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GroundTruth:
    """The sweep's outcome for one checkpoint and task: the best non-diverged run and every run.
    best_accuracy, best_lr, best_steps are None when every run diverged."""

    checkpoint: str
    task: str
    best_accuracy: float | None
    best_lr: float | None
    best_steps: int | None
    runs: list[dict] = field(default_factory=list)
    batch_size: int = PAPER_BATCH_SIZE
    image_size: int | None = None
    seed: int = 0
    # Repeats at the chosen configuration (see `groundtruth`'s `seeds`): one entry per seed, the first the
    # sweep's own seed; None where that seed's run diverged.
    seeds: list[int] = field(default_factory=list)
    seed_accuracies: list[float | None] = field(default_factory=list)
    curve: dict[int, list[float | None]] = field(default_factory=dict)  # steps -> per-seed accuracy at best_lr

    @property
    def accuracy(self) -> float | None:
        """The ground truth: the mean over seeds at the chosen configuration (the sweep's best with one seed)."""
        finished = [value for value in self.seed_accuracies if value is not None]
        if not self.seed_accuracies:
            return self.best_accuracy
        return float(sum(finished) / len(finished)) if finished else None

    @property
    def accuracy_std(self) -> float | None:
        """Sample standard deviation over seeds (None with fewer than two finished seeds)."""
        return _std([value for value in self.seed_accuracies if value is not None])

    @property
    def convergence(self) -> dict | None:
        """Whether the longest run had converged: the rise of the seed-mean accuracy at best_lr from the second
        largest step count to the largest, against the seed spread there. None without two step counts or
        two seeds. converged: the rise is at most the larger of that spread and one test sample."""
        counts = sorted(self.curve)
        if len(counts) < 2 or len(self.seeds) < 2:
            return None
        last, before = ([value for value in self.curve[count] if value is not None] for count in counts[-2:][::-1])
        if not last or not before:
            return None
        rise = sum(last) / len(last) - sum(before) / len(before)
        noise = max(_std(last) or 0.0, self.test_step)
        return {"steps": counts[-2:], "rise": rise, "noise": noise, "converged": rise <= noise}

    test_step: float = 0.0  # one test sample's share of the accuracy (1 / test size)

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy, "accuracy_std": self.accuracy_std,
                "convergence": self.convergence}


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


# ------------------------------------------------------------------------------------------------- cache


def run_key(checkpoint, task, *, lr: float, steps: int, batch_size: int, image_size: int | None, seed: int) -> str:
    """sha256 hex over everything that determines one run's result (batch_size: the batch actually used)."""
    parts = {"format": RUN_FORMAT, "loop": LOOP_VERSION, "checkpoint": checkpoint.fingerprint,
             "task": task.fingerprint, "lr": float(lr), "steps": int(steps), "batch_size": int(batch_size),
             "image_size": image_size, "seed": int(seed)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class RunStore(JsonStore):
    """Run results as `<root>/<key>.json` (root: the cache root's `groundtruth/` folder)."""

    FIELDS = ("lr", "steps", "accuracy", "diverged", "seconds")
    LABEL = "run cache"

    def check(self, record: dict) -> None:
        if not record["diverged"] and not isinstance(record["accuracy"], (int, float)):
            raise ValueError("a finished run without an accuracy")


def run_store(cache_dir=None) -> RunStore:
    """The run cache under `cache_dir` (default: the feature cache's root), in its `groundtruth/` folder."""
    return RunStore(cache_root(cache_dir) / "groundtruth")


# ------------------------------------------------------------------------------------------------- sweep


def check_grid(lrs, steps) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The sorted, de-duplicated grid, or InputError naming the bad value."""
    lrs, steps = list(lrs), list(steps)
    if not lrs or not steps:
        raise InputError(f"grid: got lrs={lrs}, steps={steps}; expected at least one learning rate and step count")
    lrs = [check_learning_rate(lr, "lrs") for lr in lrs]
    steps = [check_count(count, "steps") for count in steps]
    return tuple(sorted(set(lrs))), tuple(sorted(set(steps)))


def _keys(tuner: Finetuner, lr: float, steps, batch: int, seed: int) -> dict[int, str]:
    return {count: run_key(tuner.checkpoint, tuner.task, lr=lr, steps=count, batch_size=batch,
                           image_size=tuner.image_size, seed=seed) for count in steps}


def cached_runs(tuner: Finetuner, store: RunStore | None, *, lr: float, steps, batch_size: int,
                seed: int) -> dict[int, Run]:
    """step count -> Run for the results of one learning rate that the run cache already holds."""
    if store is None:
        return {}
    runs = {}
    for count, key in _keys(tuner, lr, steps, tuner.batch_for(batch_size), seed).items():
        record = store.read(key)
        if record is not None:
            runs[count] = Run(lr, count, record["accuracy"], bool(record["diverged"]), float(record["seconds"]),
                              cached=True)
    return runs


def sweep_lr(tuner: Finetuner, store: RunStore | None, *, lr: float, steps, batch_size: int, seed: int,
             advance=None) -> dict[int, Run]:
    """step count -> Run for one learning rate: the cached results, and one run to the largest missing step
    count for the rest, each result written to `store` as soon as it is known."""
    checkpoint, task = tuner.checkpoint, tuner.task
    batch = tuner.batch_for(batch_size)
    keys = _keys(tuner, lr, steps, batch, seed)
    runs = cached_runs(tuner, store, lr=lr, steps=steps, batch_size=batch, seed=seed)
    missing = sorted(count for count in steps if count not in runs)
    if not missing:
        return runs
    meta = {"checkpoint": checkpoint.name, "checkpoint_fingerprint": checkpoint.fingerprint, "task": task.name,
            "task_fingerprint": task.fingerprint, "batch_size": batch, "image_size": tuner.image_size,
            "seed": seed, "device": str(tuner.device), "loop": LOOP_VERSION}

    def record(run: Run) -> None:
        runs[run.steps] = run
        if store is not None:
            store.write(keys[run.steps], {**meta, **run.to_dict(), "cached": False,
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def on_eval(step: int, accuracy: float, seconds: float) -> None:
        if step in keys and step not in runs:
            record(Run(lr, step, accuracy, False, seconds))

    result = tuner.run(lr=lr, steps=missing[-1], batch_size=batch, seed=seed, eval_at=missing, advance=advance,
                       on_eval=on_eval)
    for count in missing:
        if count not in runs:  # never evaluated: the run diverged before this step count
            record(Run(lr, count, None, True, result.seconds))
    return runs


def best_run(runs: list[Run]) -> Run | None:
    """The highest accuracy among non-diverged runs (ties: fewer steps, then smaller lr); None if none."""
    finished = [run for run in runs if not run.diverged and run.accuracy is not None]
    if not finished:
        return None
    return min(finished, key=lambda run: (-run.accuracy, run.steps, run.lr))


def groundtruth(checkpoint_spec, task, *, lrs=PAPER_LRS, steps=PAPER_STEPS, batch_size: int = PAPER_BATCH_SIZE,
                image_size: int | None = None, seed: int = 0, seeds: int = 1, cache_dir=None, use_cache: bool = True,
                device=None, progress: bool = False, trust_pickle: bool = False, layer: str | None = None,
                name: str | None = None, trust_remote_code: bool = False) -> GroundTruth:
    """Fine-tune `checkpoint_spec` (a spec, an nn.Module or a loaded checkpoint) on `task` (a spec or Task) over
    the grid lrs x steps and return the best test accuracy (see the module docstring).

    batch_size: 512 as the paper (capped at the training split's size). image_size: input size instead of
    the checkpoint's own (CPU-sized sweeps). cache_dir / use_cache: the run cache. device: default "cuda"
    when available. progress: one bar over the steps to train. name: display name (default: the spec).
    seeds: how many seeds the chosen configuration is run with: the grid is swept at `seed`, then the best
    learning rate is rerun at seed + 1, ..., seed + seeds - 1 (to the largest step count, evaluated at every
    step count, so that convergence can be judged); the ground truth is the mean over seeds at the best step
    count (`GroundTruth.accuracy`), with their spread.
    """
    from . import checkpoints
    from .progress import progress_bar
    from .tasks import load as load_task

    lrs, steps = check_grid(lrs, steps)
    seed, seeds = check_seed(seed), check_count(seeds, "seeds")
    task = load_task(task)
    if isinstance(checkpoint_spec, checkpoints.Checkpoint):
        checkpoint = checkpoint_spec
    else:
        checkpoint = checkpoints.load(checkpoint_spec, layer=layer, trust_pickle=trust_pickle,
                                      trust_remote_code=trust_remote_code)
    label = name or (str(checkpoint_spec) if isinstance(checkpoint_spec, (str, os.PathLike)) else checkpoint.name)
    tuner = Finetuner(checkpoint, task, image_size=image_size, device=device)
    store = run_store(cache_dir) if use_cache else None
    batch = tuner.batch_for(batch_size)
    to_train = 0  # steps this call will train, for the progress bar: each lr runs to its largest missing count
    for lr in lrs:
        done = cached_runs(tuner, store, lr=lr, steps=steps, batch_size=batch, seed=seed)
        to_train += max((count for count in steps if count not in done), default=0)
    with progress_bar(to_train, f"fine-tuning {label} on {task.name}", enabled=progress) as advance:
        runs: list[Run] = []
        for lr in lrs:
            runs.extend(sweep_lr(tuner, store, lr=lr, steps=steps, batch_size=batch, seed=seed,
                                 advance=lambda lr=lr: advance(f"lr {lr:g}")).values())
    runs.sort(key=lambda run: (run.lr, run.steps))
    best = best_run(runs)
    result = GroundTruth(checkpoint=label, task=task.name, best_accuracy=best.accuracy if best else None,
                         best_lr=best.lr if best else None, best_steps=best.steps if best else None,
                         runs=[run.to_dict() for run in runs], batch_size=batch, image_size=tuner.image_size,
                         seed=seed, test_step=1.0 / len(task.test))
    if seeds > 1 and best is not None:
        _repeat_best(result, tuner, store, runs, steps, seeds, label, progress)
    return result


def _repeat_best(result: GroundTruth, tuner: Finetuner, store, runs: list[Run], steps, seeds: int, label: str,
                 progress: bool) -> None:
    """Rerun the best learning rate at the further seeds (cached like every run) and fill the seed fields."""
    from .progress import progress_bar

    lr, batch = result.best_lr, result.batch_size
    extra = [result.seed + offset for offset in range(1, seeds)]
    by_seed = {result.seed: {run.steps: run for run in runs if run.lr == lr}}
    to_train = sum(max((c for c in steps if c not in cached_runs(tuner, store, lr=lr, steps=steps,
                                                                 batch_size=batch, seed=s)), default=0)
                   for s in extra)
    with progress_bar(to_train, f"seeds of {label} on {tuner.task.name}", enabled=progress) as advance:
        for other in extra:
            by_seed[other] = sweep_lr(tuner, store, lr=lr, steps=steps, batch_size=batch, seed=other,
                                      advance=lambda other=other: advance(f"seed {other}"))
    result.seeds = [result.seed, *extra]
    result.seed_accuracies = [by_seed[s][result.best_steps].accuracy for s in result.seeds]
    result.curve = {count: [by_seed[s][count].accuracy for s in result.seeds] for count in sorted(steps)}


def groundtruth_pool(checkpoint_specs, task, *, names=None, executor=None, progress: bool = False,
                     cache_dir=None, layer=None, pooling=None,
                     **options) -> tuple[dict[str, GroundTruth], dict[str, str]]:
    """`groundtruth` for each checkpoint (one unit of work per checkpoint and task, run by `executor`: None or
    "local" here, "ray" or a `neucrab.executors.RayExecutor` as Ray tasks). Returns (name -> GroundTruth,
    name -> error) in input order; a checkpoint that fails is reported in `errors` and the others go on.
    layer, pooling: as `rank`'s (`all` and lists: one unit per hidden state of a text encoder, which fine-tunes
    the encoder truncated at that layer). options: groundtruth's keyword arguments (lrs, steps, batch_size,
    image_size, seed, device, ...)."""
    from .pool import PoolUnit, run_pool
    from .pool_manifest import split_entries
    from .tasks import load as load_task
    from .text_layers import expand_layer_choices

    def label(spec, index: int) -> str:
        return str(spec) if isinstance(spec, (str, os.PathLike)) else f"checkpoint#{index}"

    specs, names, carried = split_entries(checkpoint_specs, names, label)  # pool manifest rows give their names
    specs, names, _, layer = expand_layer_choices(specs, names, carried, layer, pooling,
                                                  trust_remote_code=options.get("trust_remote_code", False))
    options["layer"] = layer
    units = [PoolUnit(name, {"checkpoint_spec": spec, "name": name}, spec) for spec, name in zip(specs, names)]
    outcomes = run_pool(groundtruth, units, task=load_task(task), task_spec=task, executor=executor,
                        cache_dir=cache_dir, progress=progress, description="ground truth", **options)
    results = {outcome.label: outcome.result for outcome in outcomes if outcome.ok}
    errors = {outcome.label: outcome.error for outcome in outcomes if not outcome.ok}
    return results, errors


# ------------------------------------------------------------------------------------------------ output


def to_csv(task: str, results: dict[str, GroundTruth]) -> str:
    """`task,checkpoint,accuracy` rows (the file `neucrab evaluate --groundtruth` reads); checkpoints without
    an accuracy (failed, or every run diverged) are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "checkpoint", "accuracy"])
    for checkpoint, result in results.items():
        if result.accuracy is not None:
            writer.writerow([task, checkpoint, repr(float(result.accuracy))])
    return buffer.getvalue()


def to_json(task: str, results: dict[str, GroundTruth], errors: dict[str, str]) -> str:
    """{"task", "accuracies": {checkpoint: ground truth}, "runs": {checkpoint: [runs]}, "best": {checkpoint:
    {lr, steps}}, "seeds": {checkpoint: {seeds, accuracies, std, curve, convergence}} (repeats at the best
    configuration; empty lists with one seed), "errors": {checkpoint: message}}."""
    document = {
        "task": task,
        "accuracies": {name: r.accuracy for name, r in results.items() if r.accuracy is not None},
        "runs": {name: r.runs for name, r in results.items()},
        "best": {name: {"lr": r.best_lr, "steps": r.best_steps} for name, r in results.items()},
        "settings": {name: {"batch_size": r.batch_size, "image_size": r.image_size, "seed": r.seed}
                     for name, r in results.items()},
        "seeds": {name: {"seeds": r.seeds, "accuracies": r.seed_accuracies, "std": r.accuracy_std,
                         "curve": {str(count): values for count, values in r.curve.items()},
                         "convergence": r.convergence} for name, r in results.items()},
        "errors": dict(errors),
    }
    return json.dumps(document, indent=2)


def write_results(path, task: str, results: dict[str, GroundTruth], errors: dict[str, str]) -> Path:
    """Write CSV or JSON by the file's suffix (see `check_output`)."""
    path = check_output(path)
    text = to_csv(task, results) if path.suffix.lower() == ".csv" else to_json(task, results, errors)
    return atomic_write(path, text)


def check_output(path) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--out {path}: unknown file type {path.suffix or '(none)'!r}; expected .csv or .json")
    return path


def table(task: str, results: dict[str, GroundTruth], errors: dict[str, str]):
    """A rich Table: one row per checkpoint (best accuracy, best lr, best steps, runs trained / cached), failed
    checkpoints with their error."""
    from rich.markup import escape
    from rich.table import Table

    view = Table(title=f"ground truth on {task}: best fine-tuning test accuracy over the sweep")
    for column in ("checkpoint", "best accuracy", "best lr", "best steps", "runs", "note"):
        view.add_column(column, overflow="fold")
    for name, result in results.items():
        runs = result.runs
        cached = sum(run["cached"] for run in runs)
        diverged = sum(run["diverged"] for run in runs)
        note = f"{diverged} diverged" if diverged else ""
        if result.best_accuracy is None:
            view.add_row(escape(name), "-", "-", "-", f"{len(runs)}", "every run diverged")
            continue
        accuracy = f"{result.best_accuracy:.4f}"
        if result.seeds:
            spread = result.accuracy_std
            accuracy = f"{result.accuracy:.4f} ± {spread:.4f} ({len(result.seeds)} seeds)" if spread is not None \
                else f"{result.accuracy:.4f} ({len(result.seeds)} seeds)"
            convergence = result.convergence
            if convergence and not convergence["converged"]:
                note = (note + "; " if note else "") + f"still rising {100 * convergence['rise']:+.1f} points"
        view.add_row(escape(name), accuracy, f"{result.best_lr:g}", str(result.best_steps),
                     f"{len(runs)} ({cached} cached)", note)
    for name, error in errors.items():
        view.add_row(escape(name), "-", "-", "-", "-", escape(f"error: {error}"))
    return view
