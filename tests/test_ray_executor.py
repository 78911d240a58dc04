"""The Ray executor (`--executor ray`) against the local one: the same ranking and benchmark table bit for bit,
a worker killed mid-run retried, a unit that fails on every try reported in its row, the install hint without
ray, and the CLI options reaching the executor. One local Ray instance (2 CPUs) serves the whole module."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import ray
import torch
from fault_injection import KillingRayExecutor
from torch import nn

from neucrab import measures, tasks
from neucrab.bench.suite import load_suite
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.executors import GPU_MIN_BYTES, RayExecutor, Unit, ray_resources, spec_size
from neucrab.ranking import rank

TASK = "digits:100"
MEASURES = ["nleep", "logme", "knn", "leep", "nce"]


def tiny_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the whole module (local runs and, through the executor, the Ray tasks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_cluster(one_thread):
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory, one_thread):
    """Three TorchScript CNNs (with BatchNorm, so extraction's folded copy is exercised), precomputed features,
    and a damaged file; their local ranking on a fresh cache is the reference."""
    folder = tmp_path_factory.mktemp("pool")
    specs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, still what users have
        for seed in range(3):
            torch.jit.script(tiny_network(seed)).save(str(folder / f"net{seed}.pt"))
            specs.append(str(folder / f"net{seed}.pt"))
    task = tasks.load(TASK)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 6))
    arrays = {f"features_{split}": (centres[getattr(task, split).labels]
                                    + rng.normal(size=(len(getattr(task, split)), 6))).astype(np.float32)
              for split in ("train", "test")}
    np.savez(folder / "pre.npz", **arrays)
    (folder / "broken.pt").write_bytes(b"not a checkpoint")
    specs += [str(folder / "pre.npz"), str(folder / "broken.pt")]
    local = rank(specs, TASK, MEASURES, cache_dir=folder / "local-cache", progress=False)
    return {"specs": specs, "folder": folder, "arrays": arrays, "task": task, "local": local}


def outcome(ranking) -> list[tuple]:
    """Everything a ranking says except timings and whether the features came from the cache."""
    return [(row.checkpoint, row.scores, row.notes, row.has_head, row.error) for row in ranking.rows]


def cache_entries(folder) -> dict[str, dict[str, np.ndarray]]:
    entries = {}
    for path in folder.glob("*.npz"):
        with np.load(path) as archive:
            entries[path.name] = {name: archive[name] for name in archive.files if name != "meta"}
    return entries


def test_ray_ranking_equals_the_local_one_and_shares_its_cache(pool, ray_cluster, tmp_path):
    cache = tmp_path / "cache"
    ranked = rank(pool["specs"], TASK, MEASURES, cache_dir=cache, progress=False, executor="ray")
    assert outcome(ranked) == outcome(pool["local"])  # exact: same floats, same order, same errors
    assert not any(row.cached for row in ranked.rows)
    # Checked independently: precomputed features scored directly.
    npz = next(row for row in ranked.rows if row.checkpoint.endswith("pre.npz"))
    assert npz.scores["logme"] == measures.logme(pool["arrays"]["features_train"], pool["task"].train.labels)
    # The workers wrote the same cache entries (same keys, same bits) as the local run.
    ours, local = cache_entries(cache), cache_entries(pool["folder"] / "local-cache")
    assert len(ours) == 3 * 2 and set(ours) == set(local)
    for name, arrays in ours.items():
        assert arrays.keys() == local[name].keys()
        for key, value in arrays.items():
            assert np.array_equal(value, local[name][key]), (name, key)
    # A Ray run on the local run's cache does no forward pass: the work is shared.
    again = rank(pool["specs"], TASK, MEASURES, cache_dir=pool["folder"] / "local-cache", progress=False,
                 executor=RayExecutor())
    assert outcome(again) == outcome(pool["local"])
    assert all(row.cached for row in again.rows if row.checkpoint.endswith(("net0.pt", "net1.pt", "net2.pt")))


def test_a_worker_killed_mid_run_is_retried_and_the_run_completes(pool, ray_cluster, tmp_path):
    executor = KillingRayExecutor(folder=str(tmp_path), match="net1.pt", times=1)
    ranked = rank(pool["specs"], TASK, MEASURES, cache_dir=tmp_path / "cache", progress=False, executor=executor)
    attempts = list(tmp_path.glob("attempts-*"))
    assert len(attempts) == 1 and len(attempts[0].read_text().splitlines()) == 1  # killed once, then retried
    assert outcome(ranked) == outcome(pool["local"])


def test_a_checkpoint_that_fails_on_every_try_is_reported_in_its_row(pool, ray_cluster, tmp_path):
    executor = KillingRayExecutor(max_retries=1, folder=str(tmp_path), match="net2.pt", times=5)
    ranked = rank(pool["specs"], TASK, MEASURES, cache_dir=tmp_path / "cache", progress=False, executor=executor)
    rows = {row.checkpoint: row for row in ranked.rows}
    killed = rows[pool["specs"][2]]
    assert not killed.scores and "failed on each of 2 tries" in killed.error and "\n" not in killed.error
    assert len(next(tmp_path.glob("attempts-*")).read_text().splitlines()) == 2
    local = {row.checkpoint: row for row in pool["local"].rows}
    broken = pool["specs"][4]
    assert rows[broken].error and rows[broken].error == local[broken].error  # the unit's own error, as locally
    for spec in pool["specs"][:2] + pool["specs"][3:4]:
        assert rows[spec].scores == local[spec].scores


def test_cli_rank_and_extract_with_the_ray_executor(pool, ray_cluster, tmp_path, capsys):
    specs = pool["specs"][:2]
    args = ["rank", *specs, "--task", TASK, "--measure", "logme", "--measure", "leep", "--format", "json",
            "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--executor", "ray", "--ray-num-cpus", "1"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    local = {row.checkpoint: row.scores for row in pool["local"].rows}
    for row in report["rows"]:
        assert row["scores"] == {m: local[row["checkpoint"]][m] for m in ("logme", "leep")}
    assert main(["extract", specs[0], "--task", TASK, "--cache-dir", str(tmp_path / "extract"), "--no-progress",
                 "--executor", "ray"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("computed") == 2  # one checkpoint x 2 splits, each a Ray task
    extracted = cache_entries(tmp_path / "extract")
    assert len(extracted) == 2 and set(extracted) <= set(cache_entries(tmp_path / "cache"))  # the keys rank uses


def tiny_suite(folder) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            torch.jit.script(tiny_network(seed)).save(str(folder / f"net{seed}.pt"))
    document = {"name": "tiny", "groups": {"g": {"checkpoints": [{"name": f"net{s}", "spec": f"net{s}.pt"}
                                                                 for s in range(3)]}},
                "tasks": [TASK], "measures": ["knn", "logme"],
                "sweep": {"lrs": [0.05, 0.2], "steps": [2, 4], "batch_size": 32, "image_size": 16}}
    (folder / "suite.json").write_text(json.dumps(document))
    return str(folder / "suite.json")


def without_timings(value):
    """The bench document less wall-clock seconds and cache flags, which differ between any two runs."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k not in ("seconds", "forward_seconds", "cached", "files", "suite_file")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_bench_with_ray_gives_the_local_table(ray_cluster, tmp_path, capsys):
    from neucrab.bench.run import run_bench

    suite = load_suite(tiny_suite(tmp_path))
    local = run_bench(suite, tmp_path / "local", cache_dir=tmp_path / "c1", device="cpu", progress=False)
    args = ["bench", str(suite.path), "--out", str(tmp_path / "ray"), "--cache-dir", str(tmp_path / "c2"),
            "--device", "cpu", "--no-progress", "--executor", "ray"]
    assert main(args) == 0
    capsys.readouterr()
    remote = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert without_timings(remote) == without_timings(json.loads(json.dumps(local)))
    assert (tmp_path / "ray" / "table.csv").read_text().count("\n") == 3
    # Ground truth checked independently: each best accuracy is the best of the run records the workers wrote.
    records = [json.loads(p.read_text()) for p in (tmp_path / "c2" / "groundtruth").glob("*.json")]
    assert len(records) == 3 * 2 * 2
    accuracies = remote["groups"]["g"][TASK]["accuracies"]
    for name, accuracy in accuracies.items():
        assert accuracy == max(r["accuracy"] for r in records if r["checkpoint"] == name and not r["diverged"])
    assert {p.name for p in (tmp_path / "c2" / "groundtruth").glob("*.json")} == \
        {p.name for p in (tmp_path / "c1" / "groundtruth").glob("*.json")}


def test_without_ray_the_executor_says_how_to_install_it(pool, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'neucrab\[ray\]'"):
        RayExecutor()
    assert main(["rank", pool["specs"][3], "--task", TASK, "--executor", "ray", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install 'neucrab[ray]'" in error and "--executor ray" in error


def test_cli_options_reach_the_executor(pool, monkeypatch, capsys):
    import neucrab.ranking

    seen = {}

    def fake_rank(checkpoints, task, measures=None, **options):
        seen.update(options)
        return neucrab.ranking.Ranking(task=TASK, measures=["knn"], rows=[neucrab.ranking.Row("x", {"knn": 1.0})])

    monkeypatch.setattr(neucrab.ranking, "rank", fake_rank)
    assert main(["rank", "x.npz", "--task", TASK, "--executor", "ray", "--address", "auto", "--ray-num-cpus", "0.5",
                 "--ray-num-gpus", "0", "--ray-max-retries", "2", "--format", "json"]) == 0
    executor = seen["executor"]
    assert isinstance(executor, RayExecutor)
    assert (executor.address, executor.num_cpus, executor.num_gpus, executor.max_retries) == ("auto", 0.5, 0, 2)
    assert main(["rank", "x.npz", "--task", TASK, "--format", "json"]) == 0
    assert seen["executor"].name == "local"
    capsys.readouterr()
    assert main(["rank", "x.npz", "--task", TASK, "--address", "auto"]) == 2
    assert "--address: only applies with --executor ray" in capsys.readouterr().err
    assert main(["rank", "x.npz", "--task", TASK, "--executor", "ray", "--ray-max-retries", "-1"]) == 2
    assert "--ray-max-retries" in capsys.readouterr().err
    with pytest.raises(InputError, match="object-store URLs are not supported yet"):
        RayExecutor().cache_dir("s3://bucket/cache")


def test_units_name_their_device_and_gpu_requests_need_gpus(ray_cluster):
    # A unit given no GPU is told to run on the CPU (Ray would let it see a node's GPUs); `dict` echoes its kwargs.
    results = list(RayExecutor().map(dict, [Unit("a", {"x": 1}), Unit("b", {"device": "cuda:1"})],
                                     shared={"device": None}, progress=False))
    assert sorted((index, result, error) for index, result, error in results) == \
        [(0, {"device": "cpu", "x": 1}, None), (1, {"device": "cuda:1"}, None)]
    with pytest.raises(InputError, match="--ray-num-gpus 1: the Ray cluster has no GPU"):
        list(RayExecutor(num_gpus=1).map(dict, [Unit("a")], progress=False))


def test_resource_rule(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"\0" * 1000)
    assert spec_size(str(weights)) == 1000 and spec_size(f"timm:resnet18={weights}") == 1000
    assert spec_size("timm:resnet18:random:3") is None and spec_size(nn.Linear(2, 2)) is None
    big = GPU_MIN_BYTES
    assert ray_resources(big, 1) == {"num_cpus": 1, "num_gpus": 1}
    assert ray_resources(big - 1, 4) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(big, 0) == {"num_cpus": 1, "num_gpus": 0}  # no GPU in the cluster
    assert ray_resources(None, 8) == {"num_cpus": 1, "num_gpus": 0}  # unknown size (hub name, random init)
    assert ray_resources(1, 0, num_cpus=2, num_gpus=0.5) == {"num_cpus": 2, "num_gpus": 0.5}
    assert ray_resources(big, 2, num_gpus=0) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(big, 2, gpu_min_bytes=big + 1) == {"num_cpus": 1, "num_gpus": 0}
