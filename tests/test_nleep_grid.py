"""The N-LEEP grid (the paper's Figure 2, `neucrab.bench.nleep_grid`) on a tiny synthetic suite: every cell's Kendall
equals scipy's on N-LEEP scores computed here, cells with more components than samples are n/a, a group's mean is
n/a exactly where a task is, and the command-line entries write the table and the heat maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from neucrab import tasks
from neucrab.bench import nleep_grid
from neucrab.bench.suite import load_suite
from neucrab.measures import nleep

CLASSES = 3
SAMPLES = {"small": 10, "big": 20}  # training samples per class: 10 x 3 components are n/a on "small" (30 of 30)
SIGNALS = {"a": 0.3, "b": 1.0, "c": 2.0, "d": 4.0}  # class separation of each checkpoint's features
ACCURACY = {"small": {"a": 0.5, "b": 0.7, "c": 0.6, "d": 0.9}, "big": {"a": 0.4, "b": 0.6, "c": 0.8, "d": 0.7}}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A suite of four precomputed-feature checkpoints on two array tasks, and the bench document (ground truth)."""
    folder = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    arrays = {}
    for task, per_class in SAMPLES.items():
        y = {split: np.repeat(np.arange(CLASSES), per_class if split == "train" else 4) for split in ("train", "test")}
        np.savez(folder / f"{task}.npz", x_train=rng.normal(size=(len(y["train"]), 2)).astype(np.float32),
                 y_train=y["train"], x_test=rng.normal(size=(len(y["test"]), 2)).astype(np.float32), y_test=y["test"])
        centres = rng.normal(size=(CLASSES, 5))
        for name, signal in SIGNALS.items():
            features = {f"features_{split}": (signal * centres[labels] + rng.normal(size=(len(labels), 5)))
                        .astype(np.float32) for split, labels in y.items()}
            np.savez(folder / f"{name}_{task}.npz", **features)
            arrays[name, task] = (features["features_train"], y["train"])
    suite = {"name": "tiny-grid", "tasks": [f"{task}.npz" for task in SAMPLES], "measures": ["nleep"],
             "groups": {"g": {"checkpoints": [{"name": name, "spec": f"{name}.npz"} for name in SIGNALS]}}}
    # Precomputed features fit one task's rows: the suite names a.npz (a copy of a_small.npz, so that the suite
    # validates) and `_grid` hands each task its own file, a_small.npz or a_big.npz.
    for name in SIGNALS:
        (folder / f"{name}.npz").write_bytes((folder / f"{name}_small.npz").read_bytes())
    (folder / "suite.json").write_text(json.dumps(suite))
    labels = {task: tasks.load(str(folder / f"{task}.npz")).name for task in SAMPLES}
    document = {"suite": "tiny-grid", "suite_file": "suite.json",
                "groups": {"g": {labels[task]: {"accuracies": ACCURACY[task]} for task in SAMPLES}}}
    return {"folder": folder, "arrays": arrays, "document": document, "labels": labels}


def _grid(bench, tmp_path, monkeypatch):
    """compute_grid with each checkpoint spec pointing at the features of the task being scored."""
    real = nleep_grid.checkpoint_grid

    def per_task(spec, task, **options):
        task_name = next(name for name, label in bench["labels"].items() if label == task.name)
        return real(spec.replace(".npz", f"_{task_name}.npz"), task, **options)

    monkeypatch.setattr(nleep_grid, "checkpoint_grid", per_task)
    suite = load_suite(bench["folder"] / "suite.json")
    return nleep_grid.compute_grid(suite, bench["document"], cache_dir=tmp_path / "cache", progress=False)


def test_each_cell_is_scipys_kendall_of_nleep_and_too_many_components_are_n_a(bench, tmp_path, monkeypatch):
    report = _grid(bench, tmp_path, monkeypatch)
    assert report["energies"] == [0.5, 0.6, 0.7, 0.8, 0.9] and report["per_class"] == [1, 2, 5, 10]
    for task, label in bench["labels"].items():
        kendalls = report["groups"]["g"][label]["kendall"]
        n = CLASSES * SAMPLES[task]
        for energy in (0.5, 0.6, 0.7, 0.8, 0.9):
            for k in (1, 2, 5, 10):
                cell = nleep_grid.cell_key(energy, k)
                if k * CLASSES >= n:  # 10 x 3 = 30 components for 30 samples: one each, N-LEEP 0 for all
                    assert task == "small" and k == 10 and kendalls[cell] is None
                    continue
                names = list(SIGNALS)
                scores = [nleep(*bench["arrays"][name, task], pca_energy=energy, components_per_class=k)
                          for name in names]
                expected = stats.kendalltau(scores, [ACCURACY[task][name] for name in names]).statistic
                assert kendalls[cell] == pytest.approx(expected, abs=1e-12), (task, cell)
    complete = report["sections"]["g, tasks with every cell defined"]  # "big" alone
    assert all(row["mean"] == report["groups"]["g"][bench["labels"]["big"]]["kendall"][cell]
               for cell, row in complete.items())
    section = report["sections"]["g"]
    small, big = (report["groups"]["g"][bench["labels"][t]]["kendall"] for t in ("small", "big"))
    for cell, row in section.items():
        if cell.endswith("/10x"):  # n/a on one task: n/a for the group, and the task is named
            assert row["mean"] is None and row["n_a_tasks"] == [bench["labels"]["small"]]
        else:
            assert row["mean"] == pytest.approx((small[cell] + big[cell]) / 2)
    default = nleep_grid.cell_key(0.8, 5)
    other = section[nleep_grid.cell_key(0.5, 1)]
    assert other["minus_default"]["mean"] == pytest.approx(other["mean"] - section[default]["mean"])
    assert "minus_default" not in section[default]


def test_the_command_reads_a_bench_folder_and_writes_table_json_and_heat_map(bench, tmp_path, monkeypatch):
    from neucrab.bench import run
    from neucrab.cli import main

    expected = _grid(bench, tmp_path, monkeypatch)  # fills the score cache the commands then read
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(bench["document"]))
    out = tmp_path / "grid"
    assert nleep_grid.main([str(folder), "--suite", str(bench["folder"] / "suite.json"), "--out", str(out),
                            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    written = json.loads((out / "nleep_grid.json").read_text())
    assert written["sections"] == json.loads(json.dumps(expected["sections"]))
    text = (out / "nleep_grid.md").read_text()
    assert "| 80% |" in text and "n/a" in text and (out / "nleep_grid_g.png").stat().st_size > 1000

    # `neucrab bench SUITE --nleep-grid` draws the same grid after the bench (here: the bench's document given).
    monkeypatch.setattr(run, "run_bench", lambda *args, **kwargs: bench["document"] | {"groups": {
        "g": {label: {"accuracies": acc, "errors": {}, "groundtruth_errors": {}}
              for label, acc in ((bench["labels"][t], ACCURACY[t]) for t in SAMPLES)}}})
    monkeypatch.setattr(run, "to_markdown", lambda document: "")
    flag_out = tmp_path / "flag"
    assert main(["bench", str(bench["folder"] / "suite.json"), "--nleep-grid", "--out", str(flag_out),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert json.loads((flag_out / "nleep_grid.json").read_text())["sections"] == written["sections"]
