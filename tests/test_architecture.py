"""The redesign's promises: no import cycle, a measure is one decorated function (here, in this test module, it
reaches `neucrab measures`, rank, cost and bench), entry-point plugins, per-cell failure isolation, typed notes,
one exit-code rule, and library calls without process-global side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import neucrab
from neucrab import measures, tasks
from neucrab.cells import Note, NoteKind
from neucrab.cli import main
from neucrab.cost import measure_cost
from neucrab.measures import registry
from neucrab.ranking import rank

PACKAGE = Path(neucrab.__file__).parent
TASK = "digits:100"


# ------------------------------------------------------------------------------------------- import cycles


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> neucrab modules it imports anywhere in its body (top level and inside functions)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_known_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_neucrab():
    graph = import_graph()
    assert "neucrab.extract" in graph["neucrab.scoring"]  # the walker sees lazy imports inside functions
    assert "neucrab.cache" in graph["neucrab.executors"]
    assert find_cycle(graph) is None


def test_the_json_store_does_not_import_torch():
    code = "import sys, neucrab.json_store, neucrab.cache, neucrab.cells; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------- a measure is one decorated function


def class_mean_spread(features, labels, *, scale: float = 1.0) -> float:
    """Variance of the class means over the total variance, summed over dimensions."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in np.unique(labels)])
    return scale * float(means.var(axis=0).sum() / features.var(axis=0).sum())


def class_mean_spread_cost(n, d, c, sources, test_n):
    return 3.0 * n * d  # class sums, total variance, squares


@pytest.fixture
def test_measure():
    """Registers `class_mean_spread` exactly as a user's code would; removed again afterwards."""
    decorate = registry.register("class_mean_spread", needs=registry.Needs.FEATURES,
                                 description="Variance of class means over total variance.",
                                 citation="this test", cost=class_mean_spread_cost)
    decorate(class_mean_spread)
    yield "class_mean_spread"
    registry.REGISTRY.pop("class_mean_spread")


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    task = tasks.load(TASK)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, 5))
    arrays = {f"features_{split}": (centres[task.split(split).labels] + rng.normal(size=(len(task.split(split)), 5)))
              .astype(np.float32) for split in ("train", "test")}
    np.savez(folder / "pre.npz", **arrays)
    return {"path": folder / "pre.npz", "arrays": arrays, "task": task}


def test_a_measure_defined_here_reaches_listing_rank_cost_and_package(test_measure, features_file, tmp_path, capsys):
    assert main(["measures"]) == 0
    assert any(line.startswith("class_mean_spread ") for line in capsys.readouterr().out.splitlines())
    assert measures.class_mean_spread is class_mean_spread
    assert "class_mean_spread" in dir(measures)

    ranked = rank([str(features_file["path"])], TASK, [test_measure, "knn"], cache_dir=tmp_path, progress=False)
    expected = class_mean_spread(features_file["arrays"]["features_train"], features_file["task"].train.labels)
    assert ranked.rows[0].scores[test_measure] == pytest.approx(expected, rel=1e-12)
    assert measure_cost(test_measure, 100, 5, 10) == 3.0 * 100 * 5


def test_a_measure_defined_here_is_judged_by_bench(test_measure, tmp_path, one_torch_thread):
    from test_bench import base_document, write_suite

    document = base_document(tmp_path, count=3)
    document["measures"] = [test_measure, "knn"]
    out = tmp_path / "out"
    assert main(["bench", str(write_suite(tmp_path, document)), "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    row = results["sections"]["g"]["mean"][test_measure]
    assert row["tasks"] == 1 and row["gflops"] is not None
    assert "| class_mean_spread |" in (out / "table.md").read_text()


def test_an_entry_point_plugin_registers_its_measures(tmp_path):
    (tmp_path / "plugin_measure.py").write_text(textwrap.dedent('''
        from neucrab.measures.registry import FEATURES, register

        @register("plugin_first_mean", needs=FEATURES, description="Mean of the first feature.", citation="x")
        def plugin_first_mean(features, labels):
            return float(features[:, 0].mean())
    '''))
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    info = tmp_path / "plugin_measure-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-measure\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[neucrab.measures]\nfirst = plugin_measure\nbroken = broken_plugin\n")
    code = ("import numpy, warnings\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    from neucrab import measures\n"
            "print(measures.plugin_first_mean(numpy.array([[1.0], [3.0]]), [0, 1]))\n"
            "print(measures.get('plugin_first_mean').needs.value)\n"
            "print([str(w.message) for w in caught if 'broken' in str(w.message)])\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    mean, needs, broken = result.stdout.splitlines()
    assert float(mean) == 2.0 and needs == "features"
    assert "broken" in broken and "this plugin is broken" in broken  # reported, and the others still load

    listing = subprocess.run([sys.executable, "-m", "neucrab.cli", "measures"], capture_output=True, text=True,
                             env=env)
    assert "plugin_first_mean" in listing.stdout


# ------------------------------------------------------------------------------- per-cell failure isolation


def singular_measure(features, labels):
    raise np.linalg.LinAlgError("Singular matrix")


def saturating_measure(features, labels):
    warnings.warn("saturated: N - 1 <= D", registry.SaturationWarning, stacklevel=2)
    return 9.0


@pytest.fixture
def odd_measures():
    for name, function in (("always_singular", singular_measure), ("always_saturated", saturating_measure)):
        registry.register(name, needs="features", description="test", citation="test")(function)
    yield
    for name in ("always_singular", "always_saturated"):
        registry.REGISTRY.pop(name)


def test_a_measure_that_raises_fails_only_its_cell(odd_measures, features_file, tmp_path):
    ranked = rank([str(features_file["path"])], TASK, ["always_singular", "knn", "always_saturated", "leep"],
                  cache_dir=tmp_path, progress=False)
    row = ranked.rows[0]
    assert row.error is None and "knn" in row.scores  # the other scores stay
    assert "always_singular" not in row.scores
    assert row.notes["always_singular"].kind is NoteKind.FAILED
    assert row.notes["always_singular"] == "error: LinAlgError: Singular matrix"
    assert row.scores["always_saturated"] == 9.0 and row.notes["always_saturated"].kind is NoteKind.SATURATED
    assert row.notes["leep"].kind is NoteKind.NOT_APPLICABLE  # precomputed features: no head

    again = rank([str(features_file["path"])], TASK, ["always_singular", "always_saturated"], cache_dir=tmp_path,
                 progress=False)  # from the score cache: the same typed notes
    assert again.rows[0].notes == {k: row.notes[k] for k in ("always_singular", "always_saturated")}
    assert all(isinstance(note, Note) for note in again.rows[0].notes.values())
    assert {n.kind for n in again.rows[0].notes.values()} == {NoteKind.FAILED, NoteKind.SATURATED}


def test_notes_keep_their_text_and_kind_through_parse_and_pickle():
    import pickle

    note = Note(NoteKind.NOT_APPLICABLE, "checkpoint has no classification head")
    assert note == "n/a: checkpoint has no classification head" and note.reason.startswith("checkpoint")
    assert Note.parse(str(note)).kind is NoteKind.NOT_APPLICABLE
    copied = pickle.loads(pickle.dumps(note))
    assert copied == note and copied.kind is NoteKind.NOT_APPLICABLE
    assert json.dumps({"x": note}) == '{"x": "n/a: checkpoint has no classification head"}'


# ----------------------------------------------------------------------------------------- the command line


def test_measures_listing_fits_80_columns_and_details_name_everything(capsys):
    assert main(["measures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(registry.REGISTRY) and all(len(line) <= 80 for line in lines)
    assert main(["measures", "knn"]) == 0
    details = capsys.readouterr().out
    info = registry.get("knn")
    assert details.splitlines()[0] == "knn" and info.citation.split()[0] in details
    assert all(f"{name}=" in details for name in info.options)
    assert main(["measures", "nope"]) == 2


def test_help_lists_every_builtin_task(capsys):
    from neucrab.tasks import BUILTINS

    with pytest.raises(SystemExit):
        main(["rank", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in BUILTINS)


def test_exit_codes_are_one_rule(features_file, tmp_path, capsys):
    good, missing = str(features_file["path"]), str(tmp_path / "absent.npz")
    common = ["--task", TASK, "--measure", "knn", "--cache-dir", str(tmp_path), "--no-progress", "--format", "json"]
    assert main(["rank", good, *common]) == 0
    assert main(["rank", good, missing, *common]) == 1  # one unit failed, reported in its row
    assert main(["extract", good, missing, "--task", TASK, "--cache-dir", str(tmp_path), "--no-progress"]) == 1
    assert main(["rank", good, "--task", "no-such-task", "--cache-dir", str(tmp_path)]) == 2  # bad input


def test_rank_csv_and_json_are_read_by_evaluate(features_file, tmp_path, capsys):
    spec = str(features_file["path"])
    second = tmp_path / "second.npz"
    arrays = features_file["arrays"]
    np.savez(second, **{k: v[:, ::-1] * 0.5 + 1 for k, v in arrays.items()})
    third = tmp_path / "third.npz"
    np.savez(third, **{k: np.random.default_rng(1).normal(size=v.shape).astype(np.float32) for k, v in arrays.items()})
    specs = [spec, str(second), str(third)]
    truth = tmp_path / "truth.csv"
    rows = "".join(f"digits:100,{spec},{accuracy}\n" for spec, accuracy in zip(specs, (0.9, 0.8, 0.1)))
    truth.write_text("task,checkpoint,accuracy\n" + rows)
    judged = {}
    for kind in ("csv", "json"):
        assert main(["rank", *specs, "--task", TASK, "--measure", "knn", "--measure", "logme", "--cache-dir",
                     str(tmp_path), "--no-progress", "--format", kind]) == 0
        scores = tmp_path / f"scores.{kind}"
        scores.write_text(capsys.readouterr().out)
        assert main(["evaluate", "--scores", str(scores), "--groundtruth", str(truth), "--format", "json"]) == 0
        judged[kind] = json.loads(capsys.readouterr().out)
    assert judged["csv"]["tasks"] == judged["json"]["tasks"]
    assert set(judged["csv"]["tasks"]["digits:100"]["measures"]) == {"knn", "logme"}


# ---------------------------------------------------------------------------------- no global side effects


def test_plots_and_measures_leave_process_settings_alone(features_file, tmp_path):
    import matplotlib
    import torch

    from neucrab.report import write_outputs

    backend, threads = matplotlib.get_backend(), torch.get_num_threads()
    ranked = rank([str(features_file["path"])], TASK, ["knn", "mi"] if "mi" in registry.REGISTRY else ["knn"],
                  cache_dir=tmp_path, progress=False)
    write_outputs(ranked, tmp_path / "report")
    assert matplotlib.get_backend() == backend and torch.get_num_threads() == threads
    assert (tmp_path / "report" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "report").glob(".tmp-*"))  # atomic writes leave no temp files
