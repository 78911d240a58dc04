"""`neucrab bench SUITE_FILE`: suite validation, the shipped paper suite, and a tiny suite end to end on digits:100
(tiny TorchScript CNNs, a 2 x 2 sweep at 16 px, CPU, seconds)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from neucrab.bench.suite import load_suite, shipped_names, shipped_suite
from neucrab.checkpoints import load as load_checkpoint
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.evaluation import evaluate

METRICS = ("recall@1", "rel@1", "recall@3", "rel@3", "pearson", "kendall", "weighted_tau")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)).eval()


def write_suite(folder, document) -> str:
    path = folder / "suite.json"
    path.write_text(json.dumps(document))
    return path


def base_document(folder, count=3):
    for seed in range(count):
        torch.jit.script(tiny_network(seed)).save(str(folder / f"net{seed}.pt"))
    return {"name": "tiny", "groups": {"g": {"checkpoints": [{"name": f"net{s}", "spec": f"net{s}.pt"}
                                                             for s in range(count)]}},
            "tasks": ["digits:100"], "measures": ["knn", "logme"],
            "sweep": {"lrs": [0.05, 0.2], "steps": [2, 4], "batch_size": 32, "image_size": 16}}


def test_missing_checkpoint_names_the_field(tmp_path):
    document = base_document(tmp_path)
    document["groups"]["g"]["checkpoints"].append({"name": "gone", "spec": "absent.pt"})
    with pytest.raises(InputError) as caught:
        load_suite(write_suite(tmp_path, document))
    message = str(caught.value)
    assert "suite.json" in message and "groups.g.checkpoints[3].spec" in message and "absent.pt" in message
    assert "\n" not in message


def test_missing_task_and_unknown_measure_name_the_field(tmp_path):
    document = base_document(tmp_path)
    document["tasks"] = ["digits:100", "no_such_folder"]
    with pytest.raises(InputError, match=r"tasks\[1\].*no_such_folder"):
        load_suite(write_suite(tmp_path, document))
    document["tasks"] = ["digits:100"]
    document["measures"] = ["knn", "nope"]
    with pytest.raises(InputError, match=r"suite .*suite.json: measures\[1\]: unknown measure 'nope'"):
        load_suite(write_suite(tmp_path, document))
    document["measures"] = ["knn"]
    document["sweep"]["lrs"] = [-1]
    with pytest.raises(InputError, match=r"sweep.lrs"):
        load_suite(write_suite(tmp_path, document))


def test_cli_rejects_a_bad_suite_before_any_work(tmp_path, capsys):
    document = base_document(tmp_path)
    document["measures"] = ["bogus"]
    out = tmp_path / "out"
    assert main(["bench", str(write_suite(tmp_path, document)), "--out", str(out), "--no-progress"]) == 2
    assert "measures[0]" in capsys.readouterr().err
    assert not out.exists()


def test_relative_paths_resolve_against_the_suite_folder(tmp_path):
    suite = load_suite(write_suite(tmp_path, base_document(tmp_path)))
    assert [entry.spec for entry in suite.groups["g"]] == [str(tmp_path / f"net{s}.pt") for s in range(3)]
    assert suite.tasks == ["digits:100"] and suite.lrs == (0.05, 0.2) and suite.steps == (2, 4)


def test_the_shipped_paper_suite_parses():
    suite = load_suite(shipped_suite("paper"), check_files=False)
    assert set(suite.groups) == {"group1", "group2", "group3"}
    assert all(entry.spec.startswith("timm:") for entries in suite.groups.values() for entry in entries)
    assert len(suite.tasks) == 4 and suite.batch_size == 512 and len(suite.lrs) == 8 and len(suite.steps) == 6
    assert "no public" in suite.notes
    with pytest.raises(InputError, match=r"tasks\[0\]"):  # the task folders are the user's to provide
        load_suite(shipped_suite("paper"))


@pytest.mark.parametrize("name", [name for name in shipped_names() if name != "paper"])
def test_the_shipped_offline_suites_parse_with_their_files(name):
    """Every suite that runs offline names files that exist (relative paths resolve against the suite folder)."""
    suite = load_suite(shipped_suite(name))
    assert suite.tasks and all(entries for entries in suite.groups.values())


def test_the_keras_suite_pools_a_keras_file_with_other_formats():
    suite = load_suite(shipped_suite("keras"))
    (entries,) = suite.groups.values()
    keras = load_checkpoint(entries[0].spec)
    assert type(keras).__name__ == "KerasCheckpoint" and keras.details["packaged"] == "fer_mini_xception"
    others = {type(load_checkpoint(entry.spec)).__name__ for entry in entries[1:]}
    assert "KerasCheckpoint" not in others and len(others) >= 2  # beside networks read from other formats


def test_tiny_suite_end_to_end(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    suite_path = write_suite(tmp_path, base_document(tmp_path))
    args = ["bench", str(suite_path), "--out", str(out), "--cache-dir", str(cache), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    for name in ("table.md", "table.csv", "results.json", "figure1_g.png", "scatter_g.png",
                 "rankings/g/digits_100.json", "groundtruth/g/digits_100.json"):
        assert (out / name).is_file(), name
    assert (out / "figure1_g.png").read_bytes()[:4] == b"\x89PNG"
    document = json.loads((out / "results.json").read_text())
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    for measure in ("knn", "logme"):
        assert sum(line.startswith(f"| {measure} |") for line in table.splitlines()) == 1
        assert f"| {measure} |" in printed
    with (out / "table.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["measure"] for row in rows] == ["knn", "logme"]

    # Independent recomputation: scores from the saved ranking, accuracies from the run cache's records.
    ranking = json.loads((out / "rankings/g/digits_100.json").read_text())
    scores = {m: {row["checkpoint"]: row["scores"][m] for row in ranking["rows"]} for m in ("knn", "logme")}
    truth = json.loads((out / "groundtruth/g/digits_100.json").read_text())
    accuracies = {}
    for name, runs in truth["runs"].items():
        finished = [run for run in runs if not run["diverged"]]
        accuracies[name] = max(run["accuracy"] for run in finished)
    assert accuracies == truth["accuracies"] and set(accuracies) == {"net0", "net1", "net2"}
    assert list(document["sections"]["g"]["tasks"]) == [truth["task"]]
    records = [json.loads(p.read_text()) for p in (cache / "groundtruth").glob("*.json")]
    assert len(records) == 3 * 2 * 2  # checkpoints x lrs x steps
    for name, accuracy in accuracies.items():
        assert accuracy == max(r["accuracy"] for r in records if r["checkpoint"] == name and not r["diverged"])
    section = document["sections"]["g"]
    for measure in ("knn", "logme"):
        expected = evaluate(scores[measure], accuracies)
        got = section["tasks"][truth["task"]][measure]
        for metric in METRICS:
            assert got[metric] == pytest.approx(expected[metric], abs=1e-12)
            assert section["mean"][measure][metric] == pytest.approx(expected[metric], abs=1e-12)
            assert float(next(r for r in rows if r["measure"] == measure)[metric]) == pytest.approx(expected[metric])
        assert section["mean"][measure]["gflops"] > 0 and section["mean"][measure]["seconds"] >= 0
    assert section["forward_gflops"] > 0

    # Resumable: a second run trains nothing new and gives the same table.
    mtimes = {p: p.stat().st_mtime_ns for p in (cache / "groundtruth").glob("*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (cache / "groundtruth").glob("*.json")} == mtimes
    again = json.loads((out / "results.json").read_text())
    for measure in ("knn", "logme"):
        for metric in METRICS:
            assert again["sections"]["g"]["mean"][measure][metric] == section["mean"][measure][metric]
    assert np.isfinite(section["mean"]["knn"]["pearson"])


def test_shipped_mini_suites_load_by_name_and_quick_picks_the_quick_variant():
    full = load_suite("mini")
    quick = load_suite("mini", quick=True)
    assert full.path == shipped_suite("mini") and quick.path == shipped_suite("mini-quick")
    assert set(full.groups) == {"group1", "group2", "group3"}
    # v2: at least 6 tasks (none MNIST, the pre-training source), 3 learning rates x 2 step counts, 3 seeds.
    assert len(full.tasks) >= 6 and not any(task.startswith("mnist") for task in full.tasks)
    assert len(full.lrs) >= 3 and len(full.steps) >= 2 and full.seeds >= 3
    assert (full.image_size, full.batch_size) == (32, 32) and quick.image_size == 32
    # Group II: two sources at four stages each; Group III: five architectures; every file a spec names is shipped.
    stages = [entry.spec.rsplit("/", 1)[1] for entry in full.groups["group2"]]
    assert stages == [f"sup_cnn_stage{i}.safetensors" for i in (1, 2, 3, 4)] + \
        [f"sup_patches_cnn_stage{i}.safetensors" for i in (1, 2, 3, 4)]
    assert {entry.spec.split("=")[0] for entry in full.groups["group3"]} == {"mini_cnn", "mini_resnet", "mini_mlp",
                                                                             "mini_vit", "mini_mobilenet"}
    quick_specs = {entry.spec for entries in quick.groups.values() for entry in entries}
    assert quick_specs <= {entry.spec for entries in full.groups.values() for entry in entries}
    with pytest.raises(InputError, match="quick variant"):
        load_suite(shipped_suite("paper"), quick=True)
