"""Shared caches under concurrency, crashes and full disks: several `neucrab` processes on one cache folder all
finish with a solo run's scores; a process killed (SIGKILL) at any point, or one whose writes fail, leaves a cache
from which the next run finishes with the same scores; nothing partial or temporary is left behind.

Every run is the real command line in a subprocess, through a small driver script that may first wrap one function
(to SIGKILL the process at its Nth call, possibly half way through writing a file) or limit the size of the files
it may write (RLIMIT_FSIZE, SIGXFSZ ignored, so a write fails with EFBIG as on a full disk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

TASK = "digits:200"  # train ~150 images: with --batch-size 4, extraction saves partial chunks every 8 batches
MEASURES = ["logme", "knn", "leep"]
TIMEOUT = 180

DRIVER = r'''
import importlib, io, json, os, resource, signal, sys

spec = json.loads(sys.argv[1])
if spec.get("fsize"):  # a full disk: writes beyond this size fail with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.RLIM_INFINITY))
if spec.get("kill"):
    module, _, attribute = spec["kill"]["target"].partition(":")
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original, calls = getattr(owner, name), [0]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == spec["kill"]["at"]:
            if not spec["kill"].get("mid_write"):
                die()
            target, data = args[0], args[1]  # atomic_write(path, data): die half way through the bytes

            def half(stream):
                buffer = io.BytesIO()
                data(buffer) if callable(data) else buffer.write(data.encode() if isinstance(data, str) else data)
                stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                stream.flush()
                die()

            return original(target, half)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)
from neucrab.cli import main
sys.exit(main(spec["argv"]))
'''


class TinyNet(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten())
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concurrency")
    specs = []
    for seed in (1, 2):
        path = folder / f"tiny{seed}.pt"
        torch.jit.trace(TinyNet(seed).eval(), torch.zeros(1, 3, 64, 64)).save(str(path))
        specs.append(str(path))
    driver = folder / "driver.py"
    driver.write_text(DRIVER)
    solo_cache = folder / "solo"
    solo = {"rank": _scores(_ok(_run(driver, _rank_argv(specs, solo_cache)))),
            "groundtruth": _truth(_ok(_run(driver, _truth_argv(specs[:1], solo_cache, folder / "solo.json")))
                                  and folder / "solo.json")}
    return {"specs": specs, "driver": driver, "solo": solo, "solo_cache": solo_cache, "folder": folder}


# ----------------------------------------------------------------------------------------------- helpers


def _rank_argv(specs, cache):
    return ["rank", *specs, "--task", TASK, *sum((["--measure", m] for m in MEASURES), []), "--format", "json",
            "--batch-size", "4", "--no-progress", "--cache-dir", str(cache)]


def _extract_argv(specs, cache):
    return ["extract", *specs, "--task", TASK, "--batch-size", "4", "--no-progress", "--cache-dir", str(cache)]


def _truth_argv(specs, cache, out):
    return ["groundtruth", *specs, "--task", TASK, "--lr", "0.05", "--lr", "0.01", "--steps", "3", "--steps", "6",
            "--batch-size", "16", "--image-size", "16", "--device", "cpu", "--no-progress", "--cache-dir", str(cache),
            "--out", str(out)]


def _command(driver, argv, kill=None, fsize=None):
    return [sys.executable, str(driver), json.dumps({"argv": argv, "kill": kill, "fsize": fsize})]


def _environment():
    # One thread per process: several run at once on a small machine, and thread counts change float rounding.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def _run(driver, argv, kill=None, fsize=None) -> subprocess.CompletedProcess:
    return subprocess.run(_command(driver, argv, kill, fsize), capture_output=True, text=True, timeout=TIMEOUT,
                          env=_environment())


def _run_together(driver, argvs) -> list[subprocess.CompletedProcess]:
    """Start every command at once; wait for all (each within the timeout)."""
    processes = [subprocess.Popen(_command(driver, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_environment()) for argv in argvs]
    results = []
    try:
        for process, argv in zip(processes, argvs, strict=True):
            out, err = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CacheWarning" not in result.stderr, result.stderr[-3000:]
    return result


def _scores(result) -> dict:
    """checkpoint -> (scores, notes, error) of `rank --format json`."""
    document = json.loads(result.stdout)
    return {row["checkpoint"]: (row["scores"], row["notes"], row["error"]) for row in document["rows"]}


def _truth(path) -> dict:
    document = json.loads(Path(path).read_text())
    return {"accuracies": document["accuracies"], "best": document["best"],
            "runs": {name: sorted((run["lr"], run["steps"], run["accuracy"]) for run in runs)
                     for name, runs in document["runs"].items()}}


def _assert_clean(cache: Path) -> None:
    """No temp files or partial extractions left; every entry reads back whole and under its own key."""
    leftovers = [p for p in cache.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".partial")]
    assert not leftovers, leftovers
    for path in cache.rglob("*.json"):
        assert json.loads(path.read_text())["key"] == path.stem, path
    for path in cache.glob("*.npz"):
        with np.load(path, allow_pickle=False) as archive:
            assert json.loads(str(archive["meta"]))["key"] == path.stem
            assert np.isfinite(archive["features"]).all()


def _feature_entries(cache: Path) -> dict:
    entries = {}
    for path in cache.glob("*.npz"):
        with np.load(path, allow_pickle=False) as archive:
            entries[path.name] = archive["features"]
    return entries


def _one_line_write_error(result, cache: Path) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("neucrab: cannot write ") and str(cache) in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- concurrency


def test_concurrent_ranks_on_one_cache_give_the_solo_scores(setup, tmp_path):
    cache = tmp_path / "cache"
    results = _run_together(setup["driver"], [_rank_argv(setup["specs"], cache)] * 3)
    for result in results:
        assert _scores(_ok(result)) == setup["solo"]["rank"]
    _assert_clean(cache)
    assert len(list((cache / "scores").glob("*.json"))) == len(list((setup["solo_cache"] / "scores").glob("*.json")))


def test_concurrent_extracts_and_ranks_agree_with_a_solo_extraction(setup, tmp_path):
    cache, solo = tmp_path / "cache", tmp_path / "solo"
    _ok(_run(setup["driver"], _extract_argv(setup["specs"], solo)))
    argvs = [_extract_argv(setup["specs"], cache), _extract_argv(setup["specs"][::-1], cache),
             _extract_argv(setup["specs"], cache), _rank_argv(setup["specs"], cache)]
    results = _run_together(setup["driver"], argvs)
    for result in results:
        _ok(result)
    assert _scores(results[-1]) == setup["solo"]["rank"]
    _assert_clean(cache)
    expected, got = _feature_entries(solo), _feature_entries(cache)
    assert set(expected) <= set(got) and all(np.array_equal(expected[name], got[name]) for name in expected)


def test_concurrent_groundtruths_on_one_cache_give_the_solo_accuracies(setup, tmp_path):
    cache = tmp_path / "cache"
    outs = [tmp_path / f"truth{index}.json" for index in range(3)]
    for result in _run_together(setup["driver"], [_truth_argv(setup["specs"][:1], cache, out) for out in outs]):
        _ok(result)
    for out in outs:
        assert _truth(out) == setup["solo"]["groundtruth"]
    _assert_clean(cache)
    assert len(list((cache / "groundtruth").glob("*.json"))) == 4  # 2 learning rates x 2 step counts


# -------------------------------------------------------------------------------------------------- kills

KILLS = {
    "before the first partial chunk is written": {"target": "neucrab.feature_store:atomic_write", "at": 1},
    "half way through writing the second partial chunk": {"target": "neucrab.feature_store:atomic_write", "at": 2,
                                                          "mid_write": True},
    "before the second feature entry is written": {"target": "neucrab.feature_store:FeatureStore.write", "at": 2},
    "half way through writing a feature entry": {"target": "neucrab.feature_store:atomic_write", "at": 5,
                                                 "mid_write": True},
    "half way through writing a score": {"target": "neucrab.json_store:atomic_write", "at": 2, "mid_write": True},
    "half way through writing the last score": {"target": "neucrab.json_store:atomic_write", "at": 6,
                                                "mid_write": True},
}


@pytest.mark.parametrize("where", list(KILLS))
def test_rank_killed_then_rerun_gives_the_uninterrupted_scores(setup, tmp_path, where):
    cache = tmp_path / "cache"
    killed = _run(setup["driver"], _rank_argv(setup["specs"], cache), kill=KILLS[where])
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert _scores(_ok(_run(setup["driver"], _rank_argv(setup["specs"], cache)))) == setup["solo"]["rank"]
    _assert_clean(cache)


TRUTH_KILLS = {
    "during a fine-tuning run": {"target": "torch.optim:SGD.step", "at": 5},
    "half way through writing a run record": {"target": "neucrab.json_store:atomic_write", "at": 2, "mid_write": True},
}


@pytest.mark.parametrize("where", list(TRUTH_KILLS))
def test_groundtruth_killed_then_rerun_gives_the_uninterrupted_accuracies(setup, tmp_path, where):
    cache, out = tmp_path / "cache", tmp_path / "truth.json"
    killed = _run(setup["driver"], _truth_argv(setup["specs"][:1], cache, out), kill=TRUTH_KILLS[where])
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not out.exists()
    _ok(_run(setup["driver"], _truth_argv(setup["specs"][:1], cache, out)))
    assert _truth(out) == setup["solo"]["groundtruth"]
    _assert_clean(cache)


# ---------------------------------------------------------------------------------------------- full disk


def test_rank_on_a_full_disk_is_one_line_and_the_next_run_recomputes(setup, tmp_path):
    cache = tmp_path / "cache"
    failed = _run(setup["driver"], _rank_argv(setup["specs"], cache), fsize=2048)  # a feature entry is larger
    line = _one_line_write_error(failed, cache)
    assert ".npz" in line and "File too large" in line
    _assert_clean(cache)
    assert not list(cache.glob("*.npz"))
    assert _scores(_ok(_run(setup["driver"], _rank_argv(setup["specs"], cache)))) == setup["solo"]["rank"]
    _assert_clean(cache)


def test_scores_that_cannot_be_written_are_one_line_and_the_next_run_recomputes(setup, tmp_path):
    cache = tmp_path / "cache"
    _ok(_run(setup["driver"], _extract_argv(setup["specs"], cache)))  # features cached: only scores are written
    failed = _run(setup["driver"], _rank_argv(setup["specs"], cache), fsize=64)  # a score record is larger
    line = _one_line_write_error(failed, cache)
    assert str(cache / "scores") in line
    _assert_clean(cache)
    assert not list((cache / "scores").glob("*.json"))
    assert _scores(_ok(_run(setup["driver"], _rank_argv(setup["specs"], cache)))) == setup["solo"]["rank"]
    _assert_clean(cache)


def test_groundtruth_on_a_full_disk_is_one_line_and_the_next_run_recomputes(setup, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "truth.json"
    failed = _run(setup["driver"], _truth_argv(setup["specs"][:1], cache, out), fsize=64)
    line = _one_line_write_error(failed, cache)
    assert str(cache / "groundtruth") in line
    _assert_clean(cache)
    assert not out.exists()
    _ok(_run(setup["driver"], _truth_argv(setup["specs"][:1], cache, out)))
    assert _truth(out) == setup["solo"]["groundtruth"]
    _assert_clean(cache)


def test_a_finetuning_measure_whose_run_cannot_be_written_caches_no_failed_score(setup, tmp_path):
    """The run cache write fails inside a measure: that is the disk's fault, not the measure's, so no 'failed'
    score may be cached for it; the next run computes the real score."""
    cache = tmp_path / "cache"
    argv = ["rank", setup["specs"][0], "--task", TASK, "--measure", "finetune_1ep", "--format", "json",
            "--image-size", "16", "--no-progress", "--cache-dir", str(cache)]
    _ok(_run(setup["driver"], [*argv[:5], "knn", *argv[6:]]))  # features cached: only the run record is written
    solo = _scores(_ok(_run(setup["driver"], [*argv[:-1], str(tmp_path / "solo")])))
    _one_line_write_error(_run(setup["driver"], argv, fsize=64), cache)
    assert _scores(_ok(_run(setup["driver"], argv))) == solo
    assert solo[setup["specs"][0]][0].keys() == {"finetune_1ep"}  # a real score, not a note
    _assert_clean(cache)
