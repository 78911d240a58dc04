"""Every file loader, fuzzed: truncated, bit-flipped and spliced versions of small valid files.

The only outcomes allowed: a loaded object, or an `InputError` whose message is one line naming the file. No
other exception type and no hang (each case runs under a SIGALRM time limit). Zip-based formats (TorchScript,
`.pth`, `.npz`) are also mutated member by member and re-zipped, so the parsers behind the zip layer see damage
too. Declared sizes that the file cannot hold (a safetensors / npy / ONNX header or a zip entry claiming gigabytes)
are checked in a subprocess whose address space is capped: the loader must refuse before it allocates.

Hypothesis runs derandomized (the same cases on every run); FUZZ_CASES counts the cases run, per format.
"""

from __future__ import annotations

import collections
import io
import json
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neucrab
from neucrab import InputError

CASE_SECONDS = 20  # per case; generous because CI machines are shared (a case takes ~10 ms to ~0.3 s)
FUZZ_CASES: collections.Counter = collections.Counter()


def fuzz(examples: int):
    return settings(derandomize=True, max_examples=examples, deadline=None, database=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no loader's `except Exception` turns it into an InputError."""


@contextmanager
def time_limit(seconds: float, what: str):
    def expire(signum, frame):
        raise CaseTimeout(f"{what}: still loading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_outcome(load, target, names, kind: str):
    """Run `load(target)`: a loaded object, or an InputError of one line naming one of `names`."""
    FUZZ_CASES[kind] += 1
    try:
        with time_limit(CASE_SECONDS, f"{kind} {target}"):
            return load(target)
    except InputError as error:
        message = str(error)
        assert message and "\n" not in message, f"{kind}: message not one line: {message!r}"
        assert any(name in message for name in names), f"{kind}: message names none of {names}: {message!r}"
        return error


# ------------------------------------------------------------------------------------------------ mutations
def _position(draw, size: int) -> int:
    """A byte offset, half the time within the first 512 bytes (where headers live)."""
    top = max(size - 1, 0)
    return draw(st.one_of(st.integers(0, min(top, 511)), st.integers(0, top)))


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` truncated, bit-flipped, spliced (a chunk copied over another place), or with bytes overwritten,
    inserted or deleted."""
    kind = draw(st.sampled_from(("truncate", "flip", "splice", "overwrite", "insert", "delete")))
    size = len(data)
    if kind == "truncate":
        return data[:draw(st.integers(0, max(size - 1, 0)))]
    if kind == "flip":
        blob = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            at = _position(draw, size)
            blob[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(blob)
    if kind == "splice":
        start, length, at = _position(draw, size), draw(st.integers(1, 256)), _position(draw, size)
        chunk = data[start:start + length]
        if draw(st.booleans()):
            return data[:at] + chunk + data[at + len(chunk):]  # overwrite in place
        return data[:at] + chunk + data[at:]  # insert (the file grows)
    at = _position(draw, size)
    if kind == "overwrite":
        noise = draw(st.binary(min_size=1, max_size=16))
        return data[:at] + noise + data[at + len(noise):]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return data[:at] + data[at + draw(st.integers(1, 64)):]


@st.composite
def mutated_zip(draw, data: bytes) -> bytes:
    """Either the archive's bytes mutated, or one member's bytes mutated and the archive rebuilt (valid zip
    structure, damaged content)."""
    if draw(st.booleans()):
        return draw(mutated(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    index = draw(st.integers(0, len(members) - 1))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for position, (info, content) in enumerate(members):
            if position == index:
                content = draw(mutated(content)) if content else draw(st.binary(max_size=16))
            archive.writestr(info, content)
    return out.getvalue()


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


# -------------------------------------------------------------------------------------------- valid seeds
@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """name -> path of a small valid file (or folder) of every format a loader reads."""
    import onnx
    import safetensors.torch
    import torch
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image
    from torch import nn

    from neucrab import groundtruth
    from neucrab.cells import Row
    from neucrab.checkpoints.mini import MINI_ARCHS
    from neucrab.ranking import Ranking

    root = tmp_path_factory.mktemp("seeds")
    made = {}
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    made["torchscript"] = root / "net.pt"
    torch.jit.save(torch.jit.script(net), str(made["torchscript"]))

    conv = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "conv_w")
    fc_w = numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc_w")
    fc_b = numpy_helper.from_array(np.zeros(3, np.float32), "fc_b")
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              [conv, fc_w, fc_b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    made["onnx"] = root / "net.onnx"
    onnx.save(model, str(made["onnx"]))

    state = MINI_ARCHS["mini_mobilenet"](num_classes=3).state_dict()
    made["safetensors"] = root / "mobilenet.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(made["safetensors"]))
    made["pth"] = root / "mobilenet.pth"
    torch.save(state, made["pth"])

    probs = rng.dirichlet(np.ones(3), size=18).astype(np.float32)
    made["features_npz"] = root / "features.npz"
    np.savez(made["features_npz"], features_train=rng.normal(size=(12, 4)).astype(np.float32),
             features_test=rng.normal(size=(6, 4)).astype(np.float32), probs_train=probs[:12], probs_test=probs[12:])

    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                       image_size=8, patch_size=4, num_labels=3)
    made["hf"] = root / "hf_vit"
    ViTForImageClassification(config).save_pretrained(str(made["hf"]))
    (made["hf"] / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 8, "width": 8},
         "do_normalize": True, "resample": 2}))

    made["image_folder"] = root / "images"
    for label in ("cat", "dog"):
        (made["image_folder"] / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(made["image_folder"] / label / f"{i}.png")
    made["task_csv"] = root / "texts.csv"
    lines = ["text,label,split"] + [f"sample {i} of {label},{label},{split}" for label in ("pos", "neg")
                                     for i, split in enumerate(["train"] * 4 + ["test"] * 2)]
    made["task_csv"].write_text("\n".join(lines) + "\n")
    made["task_npz"] = root / "task.npz"
    np.savez(made["task_npz"], x_train=rng.integers(0, 256, size=(8, 8, 8), dtype=np.uint8),
             y_train=np.arange(8) % 2, x_test=rng.integers(0, 256, size=(4, 8, 8), dtype=np.uint8),
             y_test=np.arange(4) % 2)

    suite = {"name": "fuzz", "groups": {"g": {"checkpoints": [{"name": "a", "spec": "efficientnet_lite0:random"},
                                                               "timm:resnet18.tv_in1k"]}},
             "tasks": ["digits:100"], "measures": ["knn", "logme"],
             "sweep": {"lrs": [0.01, 0.1], "steps": [10, 20], "batch_size": 8, "seed": 0, "seeds": 1},
             "notes": ["free", "text"]}
    made["suite_json"] = root / "suite.json"
    made["suite_json"].write_text(json.dumps(suite, indent=1))
    made["suite_toml"] = root / "suite.toml"
    made["suite_toml"].write_text(textwrap.dedent("""\
        name = "fuzz"
        tasks = ["digits:100"]
        measures = ["knn", "logme"]
        [groups.g]
        checkpoints = ["efficientnet_lite0:random", {name = "b", spec = "timm:resnet18.tv_in1k"}]
        [sweep]
        lrs = [0.01, 0.1]
        steps = [10, 20]
        batch_size = 8
        """))

    names = ("a", "b", "c")
    rows = [Row(name, scores={"knn": 0.1 * i, "logme": 1.0 - 0.2 * i}) for i, name in enumerate(names)]
    ranking = Ranking("digits", ["knn", "logme"], rows)
    made["scores_json"] = root / "ranking.json"
    made["scores_json"].write_text(ranking.to_json())
    made["scores_csv"] = root / "ranking.csv"
    made["scores_csv"].write_text(ranking.to_csv())
    made["scores_long_csv"] = root / "scores.csv"
    made["scores_long_csv"].write_text("task,checkpoint,measure,score\n" + "".join(
        f"digits,{name},knn,{0.1 * i}\n" for i, name in enumerate(names)))
    results = {name: groundtruth.GroundTruth(name, "digits", 0.5 + 0.1 * i, 0.01, 10) for i, name in enumerate(names)}
    made["truth_csv"] = root / "truth.csv"
    made["truth_csv"].write_text(groundtruth.to_csv("digits", results))
    made["truth_json"] = root / "truth.json"
    made["truth_json"].write_text(groundtruth.to_json("digits", results, {}))
    return made


def test_the_seeds_load(seeds):
    """Every seed is valid, so that the fuzzing starts from files the loaders accept."""
    from neucrab import checkpoints, tasks
    from neucrab.bench.evaluate_files import evaluate_files, load_groundtruth
    from neucrab.bench.suite import load_suite

    for key in ("torchscript", "onnx", "features_npz", "hf"):
        assert checkpoints.load(str(seeds[key])) is not None, key
    for key in ("safetensors", "pth"):
        assert checkpoints.load(f"mini_mobilenet={seeds[key]}") is not None, key
    for key in ("image_folder", "task_csv", "task_npz"):
        assert tasks.load(str(seeds[key])) is not None, key
    for key in ("suite_json", "suite_toml"):
        assert load_suite(seeds[key]).groups, key
    for key in ("truth_csv", "truth_json"):
        assert load_groundtruth(seeds[key])["digits"]["c"] == pytest.approx(0.7), key
    for key in ("scores_json", "scores_csv", "scores_long_csv"):
        assert evaluate_files([seeds[key]], str(seeds["truth_csv"])).tasks["digits"], key


def _workdir(seeds, name: str) -> Path:
    work = seeds["torchscript"].parent.parent / f"work_{name}"
    work.mkdir(exist_ok=True)
    return work


# -------------------------------------------------------------------------------------------- checkpoints
def _load_checkpoint(spec):
    return neucrab.checkpoints.load(spec)


@fuzz(160)
@given(st.data())
def test_torchscript(seeds, data):
    path = _write(_workdir(seeds, "ts") / "net.pt", data.draw(mutated_zip(seeds["torchscript"].read_bytes())))
    check_outcome(_load_checkpoint, str(path), [path.name], "torchscript")


@fuzz(160)
@given(st.data())
def test_onnx(seeds, data):
    path = _write(_workdir(seeds, "onnx") / "net.onnx", data.draw(mutated(seeds["onnx"].read_bytes())))
    check_outcome(_load_checkpoint, str(path), [path.name], "onnx")


@fuzz(120)
@given(st.data())
def test_safetensors_weights(seeds, data):
    path = _write(_workdir(seeds, "st") / "w.safetensors", data.draw(mutated(seeds["safetensors"].read_bytes())))
    check_outcome(_load_checkpoint, f"mini_mobilenet={path}", [path.name], "safetensors")


@fuzz(120)
@given(st.data())
def test_pth_state_dict(seeds, data):
    path = _write(_workdir(seeds, "pth") / "w.pth", data.draw(mutated_zip(seeds["pth"].read_bytes())))
    spec = data.draw(st.sampled_from([f"mini_mobilenet={path}", str(path)]))  # with and without an architecture
    check_outcome(_load_checkpoint, spec, [path.name], "pth")


@fuzz(120)
@given(st.data())
def test_precomputed_npz(seeds, data):
    path = _write(_workdir(seeds, "pre") / "features.npz", data.draw(mutated_zip(seeds["features_npz"].read_bytes())))
    check_outcome(_load_checkpoint, str(path), [path.name], "features npz")


@fuzz(60)
@given(st.data())
def test_hf_folder(seeds, data):
    folder = _workdir(seeds, "hf") / "vit"
    if not folder.exists():
        shutil.copytree(seeds["hf"], folder)
    member = data.draw(st.sampled_from(["config.json", "model.safetensors", "preprocessor_config.json"]))
    original = (seeds["hf"] / member).read_bytes()
    try:
        _write(folder / member, data.draw(mutated(original)))
        check_outcome(_load_checkpoint, str(folder), [folder.name, member], "hf folder")
    finally:
        (folder / member).write_bytes(original)


# -------------------------------------------------------------------------------------------------- tasks
def _load_task(spec):
    return neucrab.tasks.load(spec)


@fuzz(80)
@given(st.data())
def test_image_folder_with_a_corrupt_image(seeds, data):
    folder = _workdir(seeds, "img") / "images"
    if not folder.exists():
        shutil.copytree(seeds["image_folder"], folder)
    image = folder / "dog" / "1.png"
    original = (seeds["image_folder"] / "dog" / "1.png").read_bytes()
    try:
        _write(image, data.draw(mutated(original)))
        check_outcome(_load_task, str(folder), [image.name], "image folder")
    finally:
        image.write_bytes(original)


@fuzz(120)
@given(st.data())
def test_task_csv(seeds, data):
    path = _write(_workdir(seeds, "csv") / "texts.csv", data.draw(mutated(seeds["task_csv"].read_bytes())))
    check_outcome(_load_task, str(path), [path.name], "task csv")


@fuzz(120)
@given(st.data())
def test_task_npz(seeds, data):
    path = _write(_workdir(seeds, "npz") / "task.npz", data.draw(mutated_zip(seeds["task_npz"].read_bytes())))
    check_outcome(_load_task, str(path), [path.name], "task npz")


# ---------------------------------------------------------------------------------- suites, scores, truth
@fuzz(120)
@given(st.data())
def test_suite_file(seeds, data):
    from neucrab.bench.suite import load_suite

    key = data.draw(st.sampled_from(["suite_json", "suite_toml"]))
    path = _write(_workdir(seeds, "suite") / seeds[key].name, data.draw(mutated(seeds[key].read_bytes())))
    check_outcome(load_suite, path, [path.name], "suite")


@fuzz(150)
@given(st.data())
def test_scores_file(seeds, data):
    from neucrab.bench.evaluate_files import evaluate_files

    key = data.draw(st.sampled_from(["scores_json", "scores_csv", "scores_long_csv"]))
    path = _write(_workdir(seeds, "scores") / seeds[key].name, data.draw(mutated(seeds[key].read_bytes())))
    check_outcome(lambda p: evaluate_files([p], str(seeds["truth_csv"]), intersect=True), path, [path.name], "scores")


@fuzz(120)
@given(st.data())
def test_groundtruth_file(seeds, data):
    from neucrab.bench.evaluate_files import load_groundtruth

    key = data.draw(st.sampled_from(["truth_csv", "truth_json"]))
    path = _write(_workdir(seeds, "truth") / seeds[key].name, data.draw(mutated(seeds[key].read_bytes())))
    check_outcome(load_groundtruth, path, [path.name], "ground truth")


# ------------------------------------------------------------------------------------ declared sizes lie
LIE_BYTES = 4 * 2**30  # what each lying header below declares: 4 GiB, in files of a few hundred bytes
MEMORY_SLACK = 512 * 2**20  # the load may grow the peak resident memory by at most this


def _npy_declaring(shape, dtype="<f8") -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + b"\0" * 64  # a few bytes of "data"


def _zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _safetensors_declaring() -> bytes:
    rows = LIE_BYTES // 4 // 1024
    header = json.dumps({"w": {"dtype": "F32", "shape": [rows, 1024], "data_offsets": [0, LIE_BYTES]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


def _pth_declaring(seeds) -> bytes:
    """A real torch.save archive whose tensor storage member is replaced by a zip entry that claims 4 GiB."""
    with zipfile.ZipFile(seeds["pth"]) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    blob = bytearray(_zip_of(members))
    storage = next(name for name in members if "/data/" in name)
    # Patch the uncompressed size of that entry in its local header and its central-directory record.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := blob.find(signature, start)) >= 0:
            name_length = struct.unpack_from("<H", blob, found + (26 if signature == b"PK\x03\x04" else 28))[0]
            name_at = found + (30 if signature == b"PK\x03\x04" else 46)
            if blob[name_at:name_at + name_length].decode() == storage:
                struct.pack_into("<I", blob, found + offset, 0xFFFFFFF0)
            start = found + 4
    return bytes(blob)


LIARS = {
    "precomputed features npz": (lambda seeds: _zip_of({
        "features_train.npy": _npy_declaring((LIE_BYTES // 8 // 64, 64)),
        "features_test.npy": _npy_declaring((4, 64))}),
        "features.npz", "checkpoint"),
    "task npz": (lambda seeds: _zip_of({"x_train.npy": _npy_declaring((LIE_BYTES // 64, 8, 8), "|u1"),
                                        "y_train.npy": _npy_declaring((8,), "<i8")}), "task.npz", "task"),
    "safetensors weights": (lambda seeds: _safetensors_declaring(), "w.safetensors", "weights"),
    "pth state dict": (_pth_declaring, "w.pth", "checkpoint"),
}

LIAR_DRIVER = """
import json, resource, sys
import neucrab.checkpoints, neucrab.tasks
from neucrab import InputError
kind, path = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    if kind == "task":
        neucrab.tasks.load(path)
    elif kind == "weights":
        neucrab.checkpoints.load("mini_mobilenet=" + path)
    else:
        neucrab.checkpoints.load(path)
    outcome = "loaded"
except InputError as error:
    outcome = "InputError: " + str(error)
except BaseException as error:
    outcome = type(error).__name__ + ": " + str(error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "grew": after - before}))
"""


@pytest.mark.parametrize("liar", list(LIARS))
def test_a_header_declaring_more_than_the_file_holds_is_refused_before_allocating(seeds, tmp_path, liar):
    make, name, kind = LIARS[liar]
    path = _write(tmp_path / name, make(seeds))
    assert path.stat().st_size < 256 * 1024
    done = subprocess.run([sys.executable, "-c", LIAR_DRIVER, kind, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    FUZZ_CASES["declared size"] += 1
    assert report["outcome"].startswith("InputError: "), report["outcome"]
    message = report["outcome"].removeprefix("InputError: ")
    assert "\n" not in message and path.name in message, message
    assert report["grew"] < MEMORY_SLACK, f"peak memory grew {report['grew'] / 2**20:.0f} MiB while refusing"


def test_zz_fuzz_case_count():
    """Runs last in this file (pytest keeps file order): reports how many fuzz cases ran."""
    total = sum(FUZZ_CASES.values())
    print(f"\nfuzz cases run: {total} ({', '.join(f'{k} {v}' for k, v in sorted(FUZZ_CASES.items()))})")
    if FUZZ_CASES:
        assert total >= 100
