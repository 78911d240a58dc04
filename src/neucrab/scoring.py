"""Scoring one checkpoint: load it, extract its features on both splits (cached), apply each measure.

`score_checkpoint` is the unit of work of `rank`: a function of (checkpoint spec, task spec, measures, options)
that keeps everything it computes in content-keyed caches, so an interrupted run redoes only what they lack and
any worker can run it. Each measure is its own cell: one that raises (a LinAlgError, anything) fails only its
cell, with the reason as the cell's note; the checkpoint's other scores stay.
"""

from __future__ import annotations

import time
import warnings

from .cells import NoteKind, Row, failed, not_applicable, saturated
from .errors import CacheWriteError, InputError
from .measures import REGISTRY
from .measures.registry import MeasureInputs, Needs, NotApplicable, SaturationWarning, default_measures


def resolve_measures(names=None) -> list[str]:
    """Expand None (the recommended score, then the default set) and "all" (every registered measure computed
    from arrays); check names. "recommended" (`neucrab.recommend`) brings its recipe's measures along."""
    from .recommend import RECIPE, RECOMMENDED

    if not names:
        names = [RECOMMENDED, *default_measures()]
    resolved: list[str] = []
    for name in names:
        if name == RECOMMENDED:
            resolved += [m for m in (RECOMMENDED, *RECIPE.measures) if m not in resolved]
            continue
        expanded = [info.name for info in REGISTRY.values() if info.needs is not Needs.MODEL] if name == "all" \
            else [name]
        for measure in expanded:
            if measure not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise InputError(f"--measure: unknown measure {measure!r}; expected 'all' or one of: {known}")
            if measure not in resolved:
                resolved.append(measure)
    return resolved


def _compute(info, inputs: MeasureInputs, options: dict):
    """(score or None, note or None) of one cell; a SaturationWarning keeps the score and notes it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score, note = float(info(inputs, **options)), None
        except NotApplicable as reason:
            score, note = None, not_applicable(str(reason))
        except InputError as error:
            score, note = None, failed(str(error))
        except CacheWriteError:  # the disk's failure (a fine-tuning run's record): no 'failed' score is cached
            raise
        except Exception as error:  # one measure's numerical failure must not cost the checkpoint's other scores
            score, note = None, failed(f"{type(error).__name__}: {error}")
    for warning in caught:
        if issubclass(warning.category, SaturationWarning) and score is not None:
            note = saturated(str(warning.message))
        else:  # not ours to swallow: show it as it would have been shown
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return score, note


def _record(row: Row, name: str, score, note, seconds: float) -> None:
    if score is not None:
        row.scores[name] = score
    if note is not None:
        row.notes[name] = note
    row.seconds[name] = seconds


def apply_measures(row: Row, measures, task, train, test, checkpoint=None, cache_dir=None, feature_keys=None) -> None:
    """Score one checkpoint's embeddings with each measure into `row` (scores, typed notes, seconds). Measures
    that need the model get the loaded checkpoint and task, and keep their training runs in `cache_dir`'s run
    cache. feature_keys: the feature-cache keys of (train, test); given, each outcome is kept in and read from
    the score cache (`neucrab.score_cache`) under `cache_dir`."""
    from .cells import Note
    from .score_cache import score_key, score_store

    store = score_store(cache_dir) if feature_keys else None
    inputs = MeasureInputs(labels=task.train.labels, features=train.features, source_probs=train.probs,
                           test_features=test.features, test_labels=task.test.labels, checkpoint=checkpoint,
                           task=task, cache_dir=cache_dir)
    for name in measures:
        info = REGISTRY[name]
        options = {}
        if task.multilabel and not info.multilabel:
            if not info.regression:
                row.notes[name] = not_applicable("single-label measure on a multi-label task")
                continue
            options["regression"] = True  # multi-hot targets as real-valued columns (LogME)
        key = score_key(name, feature_keys, options) if store else None
        record = store.read(key) if store else None
        if record is not None:  # the measure's cost is the one measured when it was computed
            note = None if record["note"] is None else Note(record["note_kind"], Note.parse(record["note"]).reason)
            _record(row, name, record["score"], note, record["seconds"])
            continue
        started = time.perf_counter()
        score, note = _compute(info, inputs, options)
        _record(row, name, score, note, time.perf_counter() - started)
        if store:
            store.write(key, {"measure": name, "score": score, "note": None if note is None else str(note),
                              "note_kind": None if note is None else note.kind.value, "seconds": row.seconds[name]})


def checkpoint_label(spec, index: int) -> str:
    if isinstance(spec, str):
        return spec
    return getattr(spec, "name", None) or f"{type(spec).__name__}#{index}"


def _draw_values(name: str, info, task, train, test, draws: int) -> list[float | None]:
    """Measure `name` on the training subsamples 0..draws-1 (`recommend.draw_subsets`), None where it gave no
    score. kNN's come from one neighbour search (`knn_subsamples`, the same values); any other measure, or kNN on
    features it refuses, is computed draw by draw."""
    from .measures.knn import knn_subsamples
    from .recommend import draw_subsets

    labels = task.train.labels
    subsets = draw_subsets(labels, draws)
    if name == "knn" and draws > 1:
        try:
            return knn_subsamples(train.features, labels, subsets)
        except Exception:  # what knn itself would refuse: computed draw by draw below, each failing alike
            pass
    return [_compute(info, MeasureInputs(labels=labels[rows], features=train.features[rows], task=task,
                                         test_features=test.features, test_labels=task.test.labels), {})[0]
            for rows in subsets]


def draw_measures(row: Row, measures, task, train, test, cache_dir=None, feature_keys=None, draws: int = 0) -> None:
    """Each measure (of the features, or features + test split) on `draws` stratified subsamples of the training
    split (`recommend.draw_indices`; the test split stays whole), into row.draws when every draw gave a score;
    all draws of a measure kept as one record of the draw cache (`score_cache.draw_store`). row.seconds["draws"]:
    the time they took."""
    from .recommend import FRACTION
    from .score_cache import draw_store, score_key

    started = time.perf_counter()
    store = draw_store(cache_dir) if feature_keys else None
    for name in measures:
        info = REGISTRY[name]
        if info.needs not in (Needs.FEATURES, Needs.TRAIN_TEST) or (task.multilabel and not info.multilabel):
            continue
        key = score_key(name, feature_keys, {"draws": draws, "fraction": FRACTION}) if store else None
        record = store.read(key) if store else None
        if record is None or len(record["values"]) != draws:
            computing = time.perf_counter()
            values = _draw_values(name, info, task, train, test, draws)
            record = {"measure": name, "values": values, "seconds": time.perf_counter() - computing}
            if store:
                store.write(key, record)
        if all(value is not None for value in record["values"]):  # a draw without a score: no spread
            row.draws[name] = [float(value) for value in record["values"]]
    row.seconds["draws"] = time.perf_counter() - started


def score_checkpoint(spec, task, measures, *, name=None, cache_dir=None, trust_pickle=False, layer=None,
                     batch_size=64, progress=False, image_size=None, device=None, draws=(), draw_count=0,
                     trust_remote_code=False) -> Row:
    """Load one checkpoint, extract its features on both splits (cached), and score it. image_size: feed
    images of that size instead of the checkpoint's own (see `checkpoints.base.at_image_size`). device: where
    torch checkpoints run (default: CUDA when available, else the CPU). A checkpoint that cannot be loaded or
    run raises; `rank` turns that into the row's `error`, so one bad checkpoint never stops a pool. draws,
    draw_count: also compute these measures on that many training subsamples (`draw_measures`). row.seconds:
    each measure's, "load", "forward" (both splits: set-up, batches, cache), "forward_setup" (the probe and the
    faster copy of the network), "forward_batches" (the batches alone) and "draws"."""
    from . import checkpoints, tasks
    from .checkpoints.base import OnDevice, at_image_size
    from .extract import cache_key, extract

    row = Row(checkpoint=name or checkpoint_label(spec, 0))
    task = tasks.load(task)
    started = time.perf_counter()
    checkpoint = at_image_size(checkpoints.load(spec, layer=layer, trust_pickle=trust_pickle,
                                                trust_remote_code=trust_remote_code), image_size)
    if isinstance(checkpoint, OnDevice):  # torch checkpoints: the GPU when there is one
        checkpoint.to(device or default_device())
    row.has_head = bool(checkpoint.has_head)
    row.seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = {split: extract(checkpoint, task, split, cache_dir=cache_dir, batch_size=batch_size,
                                 progress=progress) for split in ("train", "test")}
    row.seconds["forward"] = time.perf_counter() - started
    row.seconds["forward_batches"] = sum(embedding.batch_seconds for embedding in embeddings.values())
    row.seconds["forward_setup"] = sum(embedding.setup_seconds for embedding in embeddings.values())
    row.cached = all(embedding.cached for embedding in embeddings.values())
    model = None if checkpoint.modality == "features" else checkpoint
    keys = tuple(cache_key(checkpoint, task, split) for split in ("train", "test"))
    apply_measures(row, measures, task, embeddings["train"], embeddings["test"], model, cache_dir=cache_dir,
                   feature_keys=keys)
    if draws and draw_count:  # how sure the recommendation is (neucrab.recommend)
        draw_measures(row, draws, task, embeddings["train"], embeddings["test"], cache_dir=cache_dir,
                      feature_keys=keys, draws=draw_count)
    return row


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["NoteKind", "Row", "apply_measures", "checkpoint_label", "resolve_measures", "score_checkpoint"]
