"""`neucrab rank` end to end: a pool of several formats, checked against the measures computed directly."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from neucrab import measures, tasks
from neucrab.ranking import rank, read_csv

TASK = "digits:100"  # a seeded stratified 100-image subset of scikit-learn's digits: fast and real
MEASURES = ["logme", "knn", "leep", "nce"]


class TinyNet(nn.Module):
    """A small CNN with a classification head (5 source classes)."""

    def __init__(self, seed: int, explode: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, 5)
        self.explode = explode

    def forward(self, x):
        if self.explode:
            raise KeyboardInterrupt  # stands in for the user pressing Ctrl-C during this checkpoint
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    net = TinyNet(seed=1).eval()
    example = torch.zeros(1, 3, 224, 224)
    torch.jit.trace(net, example).save(str(folder / "tiny.pt"))
    torch.onnx.export(net, (example,), str(folder / "tiny.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    task = tasks.load(TASK)
    rng = np.random.default_rng(0)
    # Precomputed features: informative for the task (class mean + noise), no head.
    centres = rng.normal(size=(10, 6))
    npz = {f"features_{split}": (centres[getattr(task, split).labels] + rng.normal(size=(len(getattr(task, split)), 6)))
           .astype(np.float32) for split in ("train", "test")}
    np.savez(folder / "pre.npz", **npz)
    return {"torchscript": folder / "tiny.pt", "onnx": folder / "tiny.onnx", "npz": folder / "pre.npz",
            "arrays": npz, "task": task, "folder": folder}


def _run_cli(*args, cache):
    result = subprocess.run([sys.executable, "-m", "neucrab.cli", "rank", *args, "--no-progress", "--cache-dir",
                             str(cache)], capture_output=True, text=True)
    return result


def test_json_matches_measures_computed_directly(pool, tmp_path):
    specs = [str(pool["torchscript"]), str(pool["onnx"]), str(pool["npz"]), str(pool["folder"] / "missing.pt")]
    measure_args = [arg for name in MEASURES for arg in ("--measure", name)]
    result = _run_cli(*specs, "--task", TASK, *measure_args, "--format", "json", cache=tmp_path / "cache")
    assert result.returncode == 1, result.stderr  # one checkpoint failed (missing.pt): exit code 1
    report = json.loads(result.stdout)
    assert report["task"] == TASK and report["measures"] == MEASURES
    rows = {row["checkpoint"]: row for row in report["rows"]}

    # Precomputed features: the scores must be the measures applied to those arrays and the task's labels.
    labels = pool["task"].train.labels
    npz_row = rows[str(pool["npz"])]
    assert npz_row["scores"]["logme"] == pytest.approx(measures.logme(pool["arrays"]["features_train"], labels))
    assert npz_row["scores"]["knn"] == pytest.approx(measures.knn(pool["arrays"]["features_train"], labels))
    assert "leep" not in npz_row["scores"] and npz_row["notes"]["leep"].startswith("n/a")

    # The same network as TorchScript and ONNX: the same scores, LEEP/NCE included (both have a head).
    script, onnx = rows[str(pool["torchscript"])]["scores"], rows[str(pool["onnx"])]["scores"]
    assert set(script) == set(MEASURES)
    for name in MEASURES:
        assert script[name] == pytest.approx(onnx[name], rel=1e-4, abs=1e-5), name

    # A checkpoint that fails is reported in its row; the others go on. Rows are sorted by the first measure.
    assert "missing.pt" in rows[str(pool["folder"] / "missing.pt")]["error"]
    scored = [row["scores"]["logme"] for row in report["rows"] if "logme" in row["scores"]]
    assert scored == sorted(scored, reverse=True) and report["rows"][-1]["error"]


def test_csv_round_trips(pool, tmp_path):
    args = [str(pool["torchscript"]), str(pool["npz"]), "--task", TASK, "--measure", "logme", "--measure", "leep"]
    as_json = json.loads(_run_cli(*args, "--format", "json", cache=tmp_path / "c").stdout)
    as_csv = _run_cli(*args, "--format", "csv", cache=tmp_path / "c").stdout
    assert read_csv(as_csv) == {row["checkpoint"]: row["scores"] for row in as_json["rows"]}


def test_out_dir_writes_every_report_file(pool, tmp_path):
    result = _run_cli(str(pool["npz"]), "--task", TASK, "--measure", "knn", "--out", str(tmp_path / "out"),
                      cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    for name in ("ranking.json", "ranking.csv", "scores.png", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in page and str(pool["npz"]) in page


def test_unknown_measure_and_missing_task_are_one_line_errors(pool, tmp_path):
    result = _run_cli(str(pool["npz"]), "--task", TASK, "--measure", "nope", cache=tmp_path / "c")
    assert result.returncode == 2 and "unknown measure 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _run_cli(str(pool["npz"]), "--task", str(tmp_path / "no-such-task"), cache=tmp_path / "c")
    assert result.returncode == 2 and "no-such-task" in result.stderr


def test_interrupted_ranking_resumes_from_the_cache(pool, tmp_path):
    cache = tmp_path / "cache"
    first, second = TinyNet(seed=2).eval(), TinyNet(seed=3, explode=True).eval()
    with pytest.raises(KeyboardInterrupt):
        rank([first, second], TASK, ["logme"], cache_dir=cache, names=["first", "second"], progress=False)
    second.explode = False
    resumed = rank([first, second], TASK, ["logme"], cache_dir=cache, names=["first", "second"], progress=False)
    rows = {row.checkpoint: row for row in resumed.rows}
    assert rows["first"].cached and not rows["second"].cached  # only the unfinished checkpoint ran again
    fresh = rank([first, second], TASK, ["logme"], cache_dir=tmp_path / "fresh", names=["first", "second"],
                 progress=False)
    assert {r.checkpoint: r.scores for r in resumed.rows} == {r.checkpoint: r.scores for r in fresh.rows}


def test_python_api_result_converts_to_a_dataframe(pool, tmp_path):
    import neucrab

    ranking = neucrab.rank([str(pool["npz"])], TASK, ["knn", "leep"], cache_dir=tmp_path / "c", progress=False)
    frame = ranking.to_dataframe()
    labels = pool["task"].train.labels
    assert frame.loc[str(pool["npz"]), "knn"] == pytest.approx(measures.knn(pool["arrays"]["features_train"], labels))
    assert np.isnan(frame.loc[str(pool["npz"]), "leep"])  # no head: not applicable
    assert ranking.ranks()["knn"] == {str(pool["npz"]): 1}


def test_multilabel_task_scores_only_the_measures_that_allow_it(tmp_path):
    rng = np.random.default_rng(0)
    n_train, n_test, n_labels = 80, 40, 3
    y = (rng.random((n_train + n_test, n_labels)) < 0.4).astype(np.int64)
    y[y.sum(axis=1) == 0, 0] = 1  # every image has at least one label, as in a detection dataset
    images = rng.integers(0, 255, size=(n_train + n_test, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "task.npz", x_train=images[:n_train], y_train=y[:n_train], x_test=images[n_train:],
             y_test=y[n_train:])
    features = (y @ rng.normal(size=(n_labels, 5)) + 0.3 * rng.normal(size=(n_train + n_test, 5))).astype(np.float32)
    np.savez(tmp_path / "features.npz", features_train=features[:n_train], features_test=features[n_train:])

    ranking = rank([str(tmp_path / "features.npz")], str(tmp_path / "task.npz"), ["nleep", "logme", "knn"],
                   cache_dir=tmp_path / "cache", progress=False)
    row = ranking.rows[0]
    assert row.scores["nleep"] == pytest.approx(measures.nleep(features[:n_train], y[:n_train]))
    # Multi-hot targets go to LogME as real-valued columns (its regression form).
    assert row.scores["logme"] == pytest.approx(measures.logme(features[:n_train], y[:n_train], regression=True))
    assert "knn" not in row.scores and row.notes["knn"].startswith("n/a")


def test_a_rerun_reads_scores_from_the_score_cache_and_code_changes_invalidate_them(pool, tmp_path, monkeypatch):
    import dataclasses
    import warnings

    from neucrab import score_cache
    from neucrab.extract import CacheWarning
    from neucrab.measures import REGISTRY

    calls = []
    info = REGISTRY["knn"]

    def counted(*args, **kwargs):
        calls.append(1)
        return info.function(*args, **kwargs)

    monkeypatch.setitem(REGISTRY, "knn", dataclasses.replace(info, function=counted))
    specs = [str(pool["npz"]), str(pool["torchscript"])]
    first = rank(specs, pool["task"], ["knn", "logme"], cache_dir=tmp_path, progress=False)
    assert len(calls) == 2
    again = rank(specs, pool["task"], ["knn", "logme"], cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # nothing recomputed
    assert [r.scores for r in again.rows] == [r.scores for r in first.rows]
    assert [r.seconds["knn"] for r in again.rows] == [r.seconds["knn"] for r in first.rows]  # first cost kept
    # The knn score equals the measure applied to the arrays themselves (npz checkpoint).
    row = next(r for r in again.rows if r.checkpoint == str(pool["npz"]))
    direct = measures.knn(pool["arrays"]["features_train"], pool["task"].train.labels)
    assert row.scores["knn"] == pytest.approx(direct)

    # A damaged record is discarded with a warning and recomputed; so is everything when the code changes.
    records = sorted((tmp_path / "scores").glob("*.json"))
    assert len(records) == 4
    records[0].write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank(specs, pool["task"], ["knn", "logme"], cache_dir=tmp_path, progress=False)
    assert any(issubclass(w.category, CacheWarning) for w in caught)
    recomputed = len(calls)
    monkeypatch.setattr(score_cache, "measures_code_digest", lambda: "another version of the measures")
    rank(specs, pool["task"], ["knn", "logme"], cache_dir=tmp_path, progress=False)
    assert len(calls) == recomputed + 2
