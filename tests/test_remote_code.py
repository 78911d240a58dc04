"""Code shipped inside a checkpoint folder runs only when the user opted in (`--trust-remote-code`).

Each folder's Python files create a marker file when imported, so "no code ran" is checked directly: the marker
must be absent after a refusal and present after an opted-in load. Opted-in loads run in a subprocess with
HF_MODULES_CACHE in the test's folder (transformers copies the code there), stdin closed and a time limit, so a
library prompt ("Do you wish to run the custom code? [y/N]") fails or times out instead of passing unseen.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import neucrab
from neucrab import InputError
from neucrab.checkpoints import load as load_checkpoint

pytest.importorskip("transformers")
TIMEOUT = 180  # seconds for a subprocess: imports of torch and transformers on a loaded 2-core machine
SRC = Path(neucrab.__file__).resolve().parent

CONFIGURATION = '''
import pathlib
pathlib.Path({marker!r}).write_text("configuration ran")
from transformers import PretrainedConfig


class MarkerConfig(PretrainedConfig):
    model_type = "neucrab-marker"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
'''

MODELING = '''
import pathlib
pathlib.Path({marker!r}).write_text("modeling ran")
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_marker import MarkerConfig


class MarkerModel(PreTrainedModel):
    config_class = MarkerConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(3, config.width)
        self.post_init()

    def forward(self, pixel_values, **kwargs):
        pooled = self.proj(pixel_values.mean(dim=(2, 3)))
        return BaseModelOutputWithPooling(last_hidden_state=pooled[:, None], pooler_output=pooled)
'''


def _marker_folder(root: Path) -> tuple[Path, Path, dict]:
    """An image model folder whose config's auto_map names its own modeling code; (folder, marker, weights)."""
    folder, marker = root / "marker_model", root / "code_ran.txt"
    folder.mkdir()
    (folder / "configuration_marker.py").write_text(CONFIGURATION.format(marker=str(marker)))
    (folder / "modeling_marker.py").write_text(MODELING.format(marker=str(marker)))
    config = {"model_type": "neucrab-marker", "architectures": ["MarkerModel"], "width": 4,
              "auto_map": {"AutoConfig": "configuration_marker.MarkerConfig",
                           "AutoModel": "modeling_marker.MarkerModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 8, "width": 8}}))
    generator = torch.Generator().manual_seed(0)
    weights = {"proj.weight": torch.randn(4, 3, generator=generator), "proj.bias": torch.randn(4, generator=generator)}
    save_file(weights, str(folder / "model.safetensors"))
    return folder, marker, {key: value.numpy() for key, value in weights.items()}


@pytest.fixture
def marker(tmp_path):
    folder, marker_path, weights = _marker_folder(tmp_path)
    return {"folder": folder, "marker": marker_path, "weights": weights, "root": tmp_path}


def _one_line_refusal(error: InputError, folder: Path) -> None:
    text = str(error)
    assert "\n" not in text and str(folder) in text and "--trust-remote-code" in text, text


def _env(root: Path) -> dict:
    env = dict(os.environ, HF_MODULES_CACHE=str(root / "hf_modules"), HF_HUB_OFFLINE="1", NEUCRAB_CACHE=str(root))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC.parent), env.get("PYTHONPATH", "")])
    return env


def _run(argv: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env(root), cwd=root)


# ------------------------------------------------------------------------------------------ refused by default
def test_auto_map_folder_is_refused_and_no_code_runs(marker):
    with pytest.raises(InputError) as excinfo:
        load_checkpoint(marker["folder"])
    _one_line_refusal(excinfo.value, marker["folder"])
    assert "modeling_marker.py" in str(excinfo.value) and "configuration_marker.py" in str(excinfo.value)
    assert not marker["marker"].exists()


def test_transformers_is_never_left_to_ask(marker, monkeypatch):
    """Even past neucrab's own check, transformers is told trust_remote_code=False: it must refuse, not ask.
    Were it to ask, the patched input() would answer yes and the marker would appear."""
    import builtins

    from neucrab.checkpoints import hf_files

    asked = []
    monkeypatch.setattr(builtins, "input", lambda *args: asked.append(args) or "y")
    monkeypatch.setattr(hf_files, "check_custom_code", lambda *args, **kwargs: None)
    with pytest.raises(InputError) as excinfo:
        load_checkpoint(marker["folder"])
    assert "\n" not in str(excinfo.value) and str(marker["folder"]) in str(excinfo.value)
    assert asked == [] and not marker["marker"].exists()


def test_tokenizer_auto_map_is_refused(tmp_path):
    folder, marker_path = tmp_path / "text", tmp_path / "code_ran.txt"
    folder.mkdir()
    (folder / "tokenization_marker.py").write_text(f"import pathlib\npathlib.Path({str(marker_path)!r}).touch()\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["tokenization_marker.MarkerTokenizer", None]}}))
    with pytest.raises(InputError) as excinfo:
        load_checkpoint(folder)
    _one_line_refusal(excinfo.value, folder)
    assert "tokenizer_config.json auto_map -> tokenization_marker.py" in str(excinfo.value)
    assert not marker_path.exists()


def test_auto_map_into_another_repository_is_named(tmp_path):
    from neucrab.checkpoints.remote_code import custom_code

    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "org/code--modeling_x.XModel"}}))
    assert custom_code(tmp_path) == ["config.json auto_map -> org/code/modeling_x.py"]


def test_hub_repository_with_custom_code_is_refused(marker, monkeypatch):
    """`hf:ORG/NAME` goes through the same check once its files are on disk (the download is stubbed)."""
    from neucrab.checkpoints import hub

    monkeypatch.setattr(hub, "hf_repo_files", lambda repo_id, spec: marker["folder"])
    with pytest.raises(InputError) as excinfo:
        load_checkpoint("hf:someone/marker")
    _one_line_refusal(excinfo.value, marker["folder"])
    assert str(excinfo.value).startswith("hf:someone/marker: ") and not marker["marker"].exists()


def test_sentence_transformers_custom_module_is_refused_even_with_opt_in(tmp_path):
    """neucrab builds ST's modules itself and never imports the class modules.json names."""
    folder, marker_path = tmp_path / "st", tmp_path / "code_ran.txt"
    folder.mkdir()
    (folder / "custom_pooling.py").write_text(f"import pathlib\npathlib.Path({str(marker_path)!r}).touch()\n")
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                      "type": "custom_pooling.Transformer"}]))
    for trust in (False, True):
        with pytest.raises(InputError, match=re.escape(str(folder))) as excinfo:
            load_checkpoint(folder, trust_remote_code=trust)
        assert "\n" not in str(excinfo.value) and "custom_pooling.Transformer" in str(excinfo.value)
    assert not marker_path.exists()


def test_sentence_transformers_module_path_may_not_leave_the_folder(tmp_path):
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([{"path": "../elsewhere",
                                                      "type": "sentence_transformers.models.Transformer"}]))
    with pytest.raises(InputError, match="leads outside"):
        load_checkpoint(folder)


def test_loaders_never_ask_and_never_use_torch_hub():
    """Every from_pretrained call in neucrab passes trust_remote_code; nothing loads a hubconf.py."""
    sources = {path: path.read_text() for path in SRC.rglob("*.py")}
    calls = [(path, match) for path, text in sources.items()
             for match in re.finditer(r"\.from_pretrained\(([^()]|\([^()]*\))*\)", text)]
    assert calls, "expected the Hugging Face loader's from_pretrained calls"
    for path, match in calls:
        assert "trust_remote_code=" in match.group(0), f"{path.name}: {match.group(0)}"
    for path, text in sources.items():
        assert not re.search(r"torch\.hub\.load\(|hub\.load\(|SentenceTransformer\(", text), path.name


# ----------------------------------------------------------------------------------------------- opted in
def test_python_opt_in_runs_the_code_and_gives_its_features(marker):
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.save(marker["root"] / "x.npy", x)
    script = ("import sys, numpy as np\nfrom neucrab.checkpoints import load as load_checkpoint\n"
              "checkpoint = load_checkpoint(sys.argv[1], trust_remote_code=True)\n"
              "features, probs = checkpoint.forward(np.load(sys.argv[2]))\n"
              "np.save(sys.argv[3], features)\n")
    result = _run(["-c", script, str(marker["folder"]), "x.npy", "features.npy"], marker["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker["marker"].exists()
    w, b = marker["weights"]["proj.weight"], marker["weights"]["proj.bias"]
    expected = x.mean(axis=(2, 3)) @ w.T + b  # the custom model's forward, by hand
    np.testing.assert_allclose(np.load(marker["root"] / "features.npy"), expected, rtol=1e-5, atol=1e-6)


def test_cli_refuses_then_runs_with_the_opt_in(marker):
    argv = ["-m", "neucrab.cli", "extract", str(marker["folder"]), "--task", "digits:100", "--split", "train",
            "--no-progress", "--cache-dir", str(marker["root"] / "cache")]
    refused = _run(argv, marker["root"])
    assert refused.returncode == 1, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("neucrab: error:")]
    assert len(errors) == 1 and str(marker["folder"]) in errors[0] and "--trust-remote-code" in errors[0], \
        refused.stderr[-2000:]
    assert "[y/N]" not in refused.stdout + refused.stderr and not marker["marker"].exists()

    trusted = _run([*argv, "--trust-remote-code"], marker["root"])
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert marker["marker"].exists() and "4 features" in trusted.stdout, trusted.stdout


@pytest.mark.parametrize("command", ["rank", "extract", "groundtruth", "select", "bench"])
def test_every_loading_subcommand_takes_the_opt_in(command):
    from neucrab.cli import build_parser

    extra = {"rank": ["x"], "extract": ["x", "--task", "t"], "groundtruth": ["x", "--task", "t"],
             "select": ["x", "--task", "t", "--budget", "1"], "bench": ["mini", "--out", "o"]}[command]
    assert build_parser().parse_args([command, *extra, "--trust-remote-code"]).trust_remote_code is True
    assert build_parser().parse_args([command, *extra]).trust_remote_code is False
