"""Pools from a manifest (`--pool POOL`, `neucrab.pool_manifest.read_manifest`): CSV, JSON and folder forms,
relative specs resolved against the manifest's folder, free columns carried into rank's JSON and CSV rows, a
failing row reported in place, resumption from the caches, and one-line errors naming the row and the field."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import neucrab.extract
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.pool_manifest import PoolEntry, read_manifest, resolve_spec

TASK = "digits:200"
MEASURES = ["knn", "leep"]


class TinyNet(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.body(x))


POOL_CSV = """name,spec,group,params,note
tiny one,tiny1.pt,small,0.4k,"plain, with a comma"
tiny two,weights/tiny2.pt,,0.4k,
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A pool folder: two tiny TorchScript networks (one in a subfolder), a broken file, and pool.csv."""
    folder = tmp_path_factory.mktemp("pool")
    (folder / "weights").mkdir()
    for seed, path in ((1, folder / "tiny1.pt"), (2, folder / "weights" / "tiny2.pt")):
        torch.jit.trace(TinyNet(seed).eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    (folder / "broken.pt").write_bytes(b"not a checkpoint at all")
    (folder / "pool.csv").write_text(POOL_CSV, encoding="utf-8")
    return folder


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _rank(capsys, *argv, cache) -> tuple[int, dict]:
    code = main(["rank", *argv, "--task", TASK, *sum((["--measure", m] for m in MEASURES), []), "--format",
                 "json", "--batch-size", "50", "--no-progress", "--cache-dir", str(cache)])
    return code, json.loads(capsys.readouterr().out)


def _error(capsys, argv) -> str:
    """The one stderr line of a command that must fail on bad input (exit 2)."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------------------- reading


def test_csv_folder_form_resolves_relative_specs_against_the_manifest(pool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the pool's folder: relative specs must not depend on where we run
    entries = read_manifest(pool)
    assert entries == read_manifest(pool / "pool.csv")
    assert [entry.name for entry in entries] == ["tiny one", "tiny two"]
    assert [entry.spec for entry in entries] == [str(pool / "tiny1.pt"), str(pool / "weights" / "tiny2.pt")]
    assert entries[0].group == "small" and entries[1].group is None  # an empty cell is no group
    assert entries[0].columns == {"params": "0.4k", "note": "plain, with a comma"}
    assert entries[0].carried() == {"group": "small", "params": "0.4k", "note": "plain, with a comma"}
    assert entries[1].carried() == {"params": "0.4k", "note": ""}


def test_json_manifest_keeps_native_values(tmp_path):
    _write(tmp_path / "pool.json", '[\n  {"name": "a", "spec": "nets/a.pt", "params": 11.7, "frozen": true},\n'
                                   '  {"name": "b", "spec": "packaged:efficientnet_lite0", "group": "imagenet",\n'
                                   '   "params": null}\n]\n')
    first, second = read_manifest(tmp_path)  # the folder form finds pool.json
    assert first == PoolEntry("a", str(tmp_path / "nets" / "a.pt"), None, {"params": 11.7, "frozen": True},
                              f"{tmp_path / 'pool.json'}: row 1 (line 2)")
    assert second.spec == "packaged:efficientnet_lite0" and second.group == "imagenet"
    assert second.columns == {"params": None}


def test_non_path_specs_are_kept_and_weights_paths_resolved(tmp_path):
    for spec in ("packaged:efficientnet_lite0", "hf:google/vit-base-patch16-224", "timm:convnext_tiny.fb_in1k",
                 "efficientnet_lite0:random", "mini_cnn:random:3", "/abs/model.onnx", "mini_cnn"):
        assert resolve_spec(spec, tmp_path) == spec
    assert resolve_spec("timm:resnet50=w/r50.safetensors", tmp_path) == f"timm:resnet50={tmp_path}/w/r50.safetensors"
    assert resolve_spec("efficientnet_lite0=/abs/l0.pth", tmp_path) == "efficientnet_lite0=/abs/l0.pth"
    assert resolve_spec("model.onnx", tmp_path) == str(tmp_path / "model.onnx")  # a file, even one not there yet
    assert resolve_spec("../up/f.npz", tmp_path / "pool") == str(tmp_path / "up" / "f.npz")


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("pool.csv", "name,weights\na,a.pt\n", "pool.csv: row 1, column 'spec': missing (found 'name', 'weights')"),
    ("pool.csv", "name,spec\na,a.pt\n,b.pt\n", "pool.csv: row 3, field 'name': empty; expected a non-empty"),
    ("pool.csv", "name,spec\na,a.pt\n\nb,\n", "pool.csv: row 4, field 'spec': empty; expected a checkpoint spec"),
    ("pool.csv", "name,spec\na,a.pt\nb,b.pt\na,c.pt\n",
     "pool.csv: row 4, field 'name': 'a' is also the name of row 2; expected a unique name per row"),
    ("pool.csv", 'name,spec,note\na,a.pt,"two\nlines"\na,b.pt,x\n', "pool.csv: row 4, field 'name': 'a' is also"),
    ("pool.csv", "name,spec\na,a.pt,extra\n", "pool.csv: row 2: 3 cells but the header names 2 columns"),
    ("pool.csv", "name,spec,Spec\na,a.pt,b\n", "pool.csv: row 1, column 'Spec': appears twice"),
    ("pool.csv", "name,spec,error\na,a.pt,x\n", "pool.csv: row 1, column 'error': a name the ranking's output uses"),
    ("pool.csv", "name,spec\n", "pool.csv: no checkpoint rows; expected at least one row"),
    ("pool.csv", b"name,spec\na,a.pt\nb\xe9,b.pt\n", "pool.csv: row 3: not UTF-8 text"),
    ("pool.json", '[{"name": "a", "spec": "a.pt"},\n {"name": "b", "spec": 7}]',
     "pool.json: row 2 (line 2), field 'spec': expected a checkpoint spec (a file, ARCH=WEIGHTS, packaged:NAME, "
     "...), got number"),
    ("pool.json", '[{"name": "a", "spec": "a.pt"}\n {"name": "b"}]', "pool.json: line 2, column 2: not valid JSON"),
    ("pool.json", '{"name": "a", "spec": "a.pt"}', "pool.json: row 1: expected a JSON array of objects"),
    ("pool.json", '[{"name": "a"}]', "pool.json: row 1 (line 1), field 'spec': missing"),
    ("pool.json", '[{"name": "a", "spec": "a.pt", "group": 3}]', "row 1 (line 1), field 'group': expected a string"),
    ("pool.json", '[{"name": "a", "spec": "a.pt"}, {"name": "b", "spec": "b.pt", "tags": ["x"]}]',
     "pool.json: row 2 (line 1), field 'tags': expected a string, number, true/false or null, got array"),
    ("pool.json", '[{"name": "a", "spec": "a.pt"}, "b.pt"]', "pool.json: row 2 (line 1): expected an object"),
])
def test_ill_formed_manifests_name_the_file_row_and_field(tmp_path, capsys, name, text, expected):
    path = _write(tmp_path / name, text)
    with pytest.raises(InputError) as raised:
        read_manifest(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    assert expected in message
    line = _error(capsys, ["rank", "--pool", str(path), "--task", TASK])  # the command line: one line, exit 2
    assert line == f"neucrab: error: {message}"


def test_pool_paths_that_are_not_manifests(tmp_path):
    with pytest.raises(InputError, match="holds neither pool.csv nor pool.json; expected exactly one"):
        read_manifest(tmp_path)
    _write(tmp_path / "pool.csv", "name,spec\na,a.pt\n")
    _write(tmp_path / "pool.json", '[{"name": "a", "spec": "a.pt"}]')
    with pytest.raises(InputError, match="holds both pool.csv and pool.json"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match=r"pool.txt: unknown manifest type '.txt'"):
        read_manifest(_write(tmp_path / "pool.txt", "name,spec\n"))
    with pytest.raises(InputError, match="missing.csv: no such file or folder"):
        read_manifest(tmp_path / "missing.csv")


def test_a_pool_name_that_repeats_a_positional_checkpoint_is_refused(pool, capsys):
    manifest = _write(pool.parent / "clash.csv", f"name,spec\n{pool / 'tiny1.pt'},{pool / 'tiny1.pt'}\n")
    line = _error(capsys, ["rank", str(pool / "tiny1.pt"), "--pool", str(manifest), "--task", TASK])
    assert f"clash.csv: row 2, field 'name': '{pool / 'tiny1.pt'}' is also the name of a CHECKPOINT on the " \
           "command line" in line


# ------------------------------------------------------------------------------- rank, extract, ...


def test_rank_carries_columns_reports_a_failing_row_and_resumes_from_the_cache(pool, tmp_path, capsys,
                                                                            monkeypatch, one_torch_thread):
    manifest = _write(tmp_path / "with_broken.json", json.dumps([
        {"name": "tiny one", "spec": str(pool / "tiny1.pt"), "group": "small", "params": 436},
        {"name": "broken", "spec": str(pool / "broken.pt"), "group": "bad"},
        {"name": "tiny two", "spec": str(pool / "weights" / "tiny2.pt"), "params": 436, "ok": True}]))
    forward_passes = []
    original = neucrab.extract._run_batches

    def counted(*args, **kwargs):
        forward_passes.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(neucrab.extract, "_run_batches", counted)
    cache = tmp_path / "cache"
    code, first = _rank(capsys, "--pool", str(manifest), cache=cache)
    assert code == 1  # one row failed, and is reported in place; the others are scored
    rows = {row["checkpoint"]: row for row in first["rows"]}
    assert set(rows) == {"tiny one", "broken", "tiny two"}
    assert rows["broken"]["error"] and str(pool / "broken.pt") in rows["broken"]["error"]
    assert rows["broken"]["scores"] == {} and rows["broken"]["manifest"] == {"group": "bad"}
    assert rows["tiny one"]["manifest"] == {"group": "small", "params": 436}
    assert rows["tiny two"]["manifest"] == {"params": 436, "ok": True}
    assert all(set(rows[name]["scores"]) == set(MEASURES) for name in ("tiny one", "tiny two"))
    assert len(forward_passes) == 4  # two working networks x (train, test)

    # the same scores as naming the files on the command line, where the names are the specs
    code, plain = _rank(capsys, str(pool / "tiny1.pt"), str(pool / "weights" / "tiny2.pt"), cache=cache)
    assert code == 0
    by_spec = {row["checkpoint"]: row["scores"] for row in plain["rows"]}
    assert by_spec[str(pool / "tiny1.pt")] == rows["tiny one"]["scores"]
    assert by_spec[str(pool / "weights" / "tiny2.pt")] == rows["tiny two"]["scores"]
    assert all(row["manifest"] == {} for row in plain["rows"])

    forward_passes.clear()
    code, again = _rank(capsys, "--pool", str(manifest), cache=cache)  # a rerun: every feature from the cache
    assert code == 1 and forward_passes == []
    assert [row["cached"] for row in again["rows"] if not row["error"]] == [True, True]
    assert {row["checkpoint"]: row["scores"] for row in again["rows"]} == \
        {row["checkpoint"]: row["scores"] for row in first["rows"]}

    # CSV: the manifest's columns after the fixed ones; the readers of rank's CSV take only the measures
    assert main(["rank", "--pool", str(manifest), "--task", TASK, "--measure", "knn", "--format", "csv",
                 "--no-progress", "--cache-dir", str(cache)]) == 1
    text = capsys.readouterr().out
    header, *records = list(csv.reader(io.StringIO(text)))
    assert header == ["task", "checkpoint", "knn", "forward_seconds", "cached", "error", "group", "params", "ok"]
    by_name = {record[1]: record for record in records}
    assert by_name["tiny one"][6:] == ["small", "436", ""] and by_name["tiny two"][6:] == ["", "436", "True"]
    from neucrab.bench.evaluate_files import _ranking_csv
    from neucrab.ranking import read_csv

    assert read_csv(text) == {"tiny one": {"knn": rows["tiny one"]["scores"]["knn"]},
                              "tiny two": {"knn": rows["tiny two"]["scores"]["knn"]}, "broken": {}}
    [(task, measures, table)] = _ranking_csv(tmp_path / "ranking.csv", text)
    assert measures == ["knn"] and set(table["knn"]) == {"tiny one", "tiny two"}


def test_pool_combines_with_checkpoints_in_extract_groundtruth_and_select(pool, tmp_path, capsys,
                                                                         one_torch_thread):
    cache = tmp_path / "cache"
    broken = _write(tmp_path / "broken.csv", f"name,spec\nbroken one,{pool / 'broken.pt'}\n")
    assert main(["extract", str(pool / "tiny1.pt"), "--pool", str(pool), "--pool", str(broken), "--task", TASK,
                 "--no-progress", "--cache-dir", str(cache)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()[1:]  # after "cache: ..."
    assert [line.split(" / ")[0] for line in lines] == ["tiny1", "tiny1", "tiny one", "tiny one", "tiny two",
                                                        "tiny two"]
    assert all("computed" in line for line in lines[:2]) and all("cache hit" in line for line in lines[2:4])
    assert captured.err.startswith("neucrab: error: broken one: ")

    out = tmp_path / "gt.json"
    assert main(["groundtruth", "--pool", str(pool), "--task", TASK, "--lr", "0.05", "--steps", "2",
                 "--batch-size", "16", "--image-size", "16", "--device", "cpu", "--no-progress", "--cache-dir",
                 str(cache), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["accuracies"]) == {"tiny one", "tiny two"}
    capsys.readouterr()

    assert main(["select", "--pool", str(pool), "--task", TASK, "--budget", "4", "--shortlist", "2",
                 "--image-size", "16", "--device", "cpu", "--no-progress", "--cache-dir", str(cache)]) == 0
    pick = capsys.readouterr().out.splitlines()[-1]
    assert pick.startswith(("pick: tiny one ", "pick: tiny two "))


def test_python_api_ranks_manifest_entries(pool, tmp_path, one_torch_thread):
    import neucrab

    ranking = neucrab.rank(read_manifest(pool), TASK, measures=["knn"], cache_dir=tmp_path / "cache",
                           progress=False)
    assert {row.checkpoint: row.manifest for row in ranking.rows} == {
        "tiny one": {"group": "small", "params": "0.4k", "note": "plain, with a comma"},
        "tiny two": {"params": "0.4k", "note": ""}}
    frame = pytest.importorskip("pandas") and ranking.to_dataframe()
    assert list(frame.columns) == ["knn", "error", "group", "params", "note"]
