"""Benchmark suite files for `neucrab bench SUITE_FILE`: parsing and validation, before any work is done.

A suite is a JSON (or, on Python 3.11+, TOML) document:

    {"name": "my-bench",
     "groups": {"group1": {"checkpoints": [{"name": "a", "spec": "models/a.pt"}, {"spec": "timm:resnet50.tv_in1k"}]}},
     "tasks": ["data/flowers", "digits:100"],
     "measures": ["knn", "logme"],
     "sweep": {"lrs": [0.01, 0.1], "steps": [500, 1000], "batch_size": 64, "image_size": 224, "seed": 0,
               "seeds": 3},
     "notes": "free text"}

Checkpoint and task specs are those of `neucrab rank`. Relative paths resolve against the suite file's folder.
Hub names (`timm:NAME`, `hf:ORG/NAME`, `torchvision:...`, `ARCH:random`, `packaged:NAME`) and built-in tasks (`digits`,
`mnist5k`, `NAME:SIZE`, `builtin:NAME`) are not files. `ARCH=WEIGHTS` checks (and resolves) the weights path.
A checkpoint's name defaults to its spec as written. `sweep` keys default to the paper's grid
(`neucrab.groundtruth`), batch 512 and the checkpoint's own image size; `seeds` (default 1) reruns each
checkpoint's best configuration with that many seeds in all, and the ground truth is their mean.

Every problem raises one `InputError` line naming the suite file, the field path (e.g.
`groups.group1.checkpoints[2].spec`) and what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._validate import check_count, check_seed
from ..errors import InputError

HUB_PREFIXES = ("timm:", "hf:", "torchvision:", "packaged:")
_RANDOM = re.compile(r".+:random(:\d+)?")
SWEEP_KEYS = ("lrs", "steps", "batch_size", "image_size", "seed", "seeds")


@dataclass
class Entry:
    """One checkpoint of a group: display name and spec (paths already resolved)."""

    name: str
    spec: str


@dataclass
class Suite:
    name: str
    path: Path
    groups: dict[str, list[Entry]]
    tasks: list[str]
    measures: list[str]
    lrs: tuple[float, ...]
    steps: tuple[int, ...]
    batch_size: int
    image_size: int | None
    seed: int = 0
    seeds: int = 1
    notes: str = ""
    raw: dict = field(default_factory=dict)


def is_hub_checkpoint(spec: str) -> bool:
    """A checkpoint spec that names a hub model or a random-init architecture, not a file."""
    return spec.startswith(HUB_PREFIXES) or bool(_RANDOM.fullmatch(spec))


def is_builtin_task(spec: str) -> bool:
    from ..tasks import BUILTINS
    from ..tasks.builtin import is_size_spec

    name, _, size = spec.removeprefix("builtin:").partition(":")
    return name in BUILTINS and (not size or is_size_spec(size))


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"suite {path}: cannot read it ({error.strerror or error}); expected a JSON or TOML "
                         "suite file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"suite {path}: not UTF-8 text ({error.reason} at byte {error.start}); expected a JSON "
                         "or TOML suite file") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:
            raise InputError(f"suite {path}: TOML suites need Python 3.11+; write it as JSON") from None
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"suite {path}: not valid TOML ({error})") from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"suite {path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise InputError(f"suite {path}: expected an object with name, groups, tasks, measures, sweep")
    return document


def _fail(path: Path, where: str, message: str):
    raise InputError(f"suite {path}: {where}: {message}")


def _resolve(path: Path, spec: str) -> Path:
    candidate = Path(spec).expanduser()
    return candidate if candidate.is_absolute() else path.parent / candidate


def _checkpoint_spec(path: Path, where: str, spec, check_files: bool) -> str:
    if not isinstance(spec, str) or not spec.strip():
        _fail(path, where, f"got {spec!r}; expected a checkpoint spec string (a file, timm:NAME, hf:ORG/NAME, "
                           "ARCH=WEIGHTS)")
    if is_hub_checkpoint(spec):
        return spec
    from ..checkpoints.text_options import join_spec, split_spec

    options = split_spec(spec) if not _resolve(path, spec).exists() else None
    if options is not None:  # a text encoder's SPEC@layer=K,pool=...: check and resolve SPEC
        return join_spec(_checkpoint_spec(path, where, options[0], check_files), options[1])
    if "=" in spec and not _resolve(path, spec).exists():
        arch, _, weights = spec.partition("=")
        target = _resolve(path, weights)
        if check_files and not target.exists():
            _fail(path, where, f"weights file {str(target)!r} of {spec!r} does not exist; expected an existing "
                               "file (relative paths resolve against the suite's folder)")
        return f"{arch}={target}"
    target = _resolve(path, spec)
    if check_files and not target.exists():
        _fail(path, where, f"checkpoint {str(target)!r} does not exist; expected an existing file or folder, or "
                           "a hub name (timm:NAME, hf:ORG/NAME)")
    return str(target)


def _task_spec(path: Path, where: str, spec, check_files: bool) -> str:
    if not isinstance(spec, str) or not spec.strip():
        _fail(path, where, f"got {spec!r}; expected a task spec string (a folder, a .csv or .npz file, or a "
                           "built-in such as digits:100)")
    target = _resolve(path, spec)
    if target.exists():
        return str(target)
    if is_builtin_task(spec):
        return spec
    if check_files:
        _fail(path, where, f"task {str(target)!r} does not exist; expected an existing folder, .csv or .npz "
                           "file (relative paths resolve against the suite's folder), or a built-in task")
    return str(target)


def _scalar(path: Path, where: str, value, check, optional: bool = False):
    """`check(value, where)` (a `_validate` helper), its message prefixed with the suite file."""
    if optional and value is None:
        return None
    try:
        return check(value, where)
    except InputError as error:
        raise InputError(f"suite {path}: {error}" + (" (or null)" if optional else "")) from None


def parse_suite(document: dict, path, *, check_files: bool = True) -> Suite:
    """Validate a suite document (see the module docstring); `path` is the suite file (for relative paths and
    messages). check_files=False skips the existence checks (a suite for another machine)."""
    from .. import groundtruth as gt
    from ..ranking import resolve_measures

    path = Path(path)
    known = {"name", "groups", "tasks", "measures", "sweep", "notes"}
    unknown = sorted(set(document) - known)
    if unknown:
        _fail(path, unknown[0], f"unknown field; expected only {', '.join(sorted(known))}")
    name = document.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        _fail(path, "name", f"got {name!r}; expected a non-empty string")
    notes = document.get("notes", "")
    if isinstance(notes, list) and all(isinstance(line, str) for line in notes):
        notes = "\n".join(notes)
    if not isinstance(notes, str):
        _fail(path, "notes", f"got {notes!r}; expected a string or a list of strings")

    groups_doc = document.get("groups")
    if not isinstance(groups_doc, dict) or not groups_doc:
        _fail(path, "groups", f"got {groups_doc!r}; expected an object of groups, each {{\"checkpoints\": [...]}}")
    groups: dict[str, list[Entry]] = {}
    for group, body in groups_doc.items():
        where = f"groups.{group}"
        if not isinstance(body, dict) or not isinstance(body.get("checkpoints"), list):
            _fail(path, where, "expected an object with a \"checkpoints\" list")
        extra = sorted(set(body) - {"checkpoints", "notes"})
        if extra:
            _fail(path, f"{where}.{extra[0]}", "unknown field; expected checkpoints (and notes)")
        items = body["checkpoints"]
        if len(items) < 2:
            _fail(path, f"{where}.checkpoints", f"got {len(items)} checkpoint(s); expected at least 2 to rank")
        entries = []
        for index, item in enumerate(items):
            spot = f"{where}.checkpoints[{index}]"
            if isinstance(item, str):
                item = {"spec": item}
            if not isinstance(item, dict) or "spec" not in item:
                _fail(path, spot, f"got {item!r}; expected {{\"name\": ..., \"spec\": ...}} or a spec string")
            bad = sorted(set(item) - {"name", "spec", "notes"})
            if bad:
                _fail(path, f"{spot}.{bad[0]}", "unknown field; expected name, spec (and notes)")
            spec = _checkpoint_spec(path, f"{spot}.spec", item["spec"], check_files)
            label = item.get("name", item["spec"])
            if not isinstance(label, str) or not label.strip():
                _fail(path, f"{spot}.name", f"got {label!r}; expected a non-empty string")
            if any(entry.name == label for entry in entries):
                _fail(path, f"{spot}.name", f"{label!r} appears twice in {where}; expected unique names")
            entries.append(Entry(label, spec))
        groups[str(group)] = entries

    tasks_doc = document.get("tasks")
    if not isinstance(tasks_doc, list) or not tasks_doc:
        _fail(path, "tasks", f"got {tasks_doc!r}; expected a non-empty list of task specs")
    tasks = [_task_spec(path, f"tasks[{i}]", spec, check_files) for i, spec in enumerate(tasks_doc)]

    measures_doc = document.get("measures")
    if not isinstance(measures_doc, list) or not measures_doc:
        _fail(path, "measures", f"got {measures_doc!r}; expected a non-empty list of measure names")
    measures: list[str] = []
    for index, measure in enumerate(measures_doc):
        if not isinstance(measure, str):
            _fail(path, f"measures[{index}]", f"got {measure!r}; expected a measure name")
        try:
            resolved = resolve_measures([measure])
        except InputError:
            from ..measures import REGISTRY

            _fail(path, f"measures[{index}]", f"unknown measure {measure!r}; expected 'all' or one of: "
                                              f"{', '.join(sorted(REGISTRY))}")
        measures += [m for m in resolved if m not in measures]

    sweep = document.get("sweep", {})
    if not isinstance(sweep, dict):
        _fail(path, "sweep", f"got {sweep!r}; expected an object with {', '.join(SWEEP_KEYS)}")
    bad = sorted(set(sweep) - set(SWEEP_KEYS))
    if bad:
        _fail(path, f"sweep.{bad[0]}", f"unknown field; expected {', '.join(SWEEP_KEYS)}")
    for key in ("lrs", "steps"):
        if key in sweep and not isinstance(sweep[key], list):
            _fail(path, f"sweep.{key}", f"got {sweep[key]!r}; expected a list")
    try:
        lrs, steps = gt.check_grid(sweep.get("lrs", gt.PAPER_LRS), sweep.get("steps", gt.PAPER_STEPS))
    except InputError as error:
        _fail(path, f"sweep.{str(error).partition(':')[0]}", str(error).partition(": ")[2])
    batch_size = _scalar(path, "sweep.batch_size", sweep.get("batch_size", gt.PAPER_BATCH_SIZE), check_count)
    image_size = _scalar(path, "sweep.image_size", sweep.get("image_size"), check_count, optional=True)
    seed = _scalar(path, "sweep.seed", sweep.get("seed", 0), check_seed)
    seeds = _scalar(path, "sweep.seeds", sweep.get("seeds", 1), check_count)
    return Suite(name=name, path=path, groups=groups, tasks=tasks, measures=measures, lrs=lrs, steps=steps,
                 batch_size=batch_size, image_size=image_size, seed=seed, seeds=seeds, notes=notes, raw=document)


def shipped_names() -> list[str]:
    """Names of the suites shipped with neucrab (`neucrab bench NAME`)."""
    return sorted(p.stem for p in (Path(__file__).parent / "suites").glob("*.json"))


def load_suite(path, *, check_files: bool = True, quick: bool = False) -> Suite:
    """Read and validate the suite at `path`: a suite file, or the name of a shipped suite (see
    `shipped_names`). quick: its quick variant instead, the shipped suite NAME-quick (or FILE-quick.json
    beside a suite file)."""
    path = Path(path).expanduser()
    if not path.is_file() and str(path) in shipped_names():
        path = shipped_suite(str(path))
    if quick:
        quick_path = path.with_name(f"{path.stem}-quick{path.suffix or '.json'}")
        if not quick_path.is_file():
            raise InputError(f"suite {path}: --quick needs its quick variant {quick_path}, which does not exist")
        path = quick_path
    if not path.is_file():
        raise InputError(f"suite {path}: no such file; expected a JSON or TOML suite file or a shipped suite "
                         f"({', '.join(shipped_names())})")
    return parse_suite(_read(path), path, check_files=check_files)


def shipped_suite(name: str = "paper") -> Path:
    """The path of a suite shipped with neucrab (`neucrab/bench/suites/NAME.json`)."""
    return Path(__file__).parent / "suites" / f"{name}.json"
