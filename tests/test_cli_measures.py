"""`neucrab measures` lists every measure the foundation promises, with what it needs and a citation."""

import subprocess
import sys

from neucrab.measures import REGISTRY

PROMISED = {
    "nleep": "features",
    "logme": "features",
    "hscore": "features",
    "shrinkage_hscore": "features",
    "gbc": "features",
    "transrate": "features",
    "knn": "features",
    "sfda": "features",
    "parc": "features",
    "leep": "source_probs",
    "nce": "source_probs",
    "linear_probe": "features+test",
    "linear_probe_1ep": "features+test",
    "linear_probe_5ep": "features+test",
}


def test_registry_holds_every_promised_measure():
    assert {name: REGISTRY[name].needs for name in PROMISED if name in REGISTRY} == PROMISED
    for info in REGISTRY.values():
        assert info.description and info.citation, f"{info.name} lacks a description or citation"


def test_cli_lists_them():
    result = subprocess.run(
        [sys.executable, "-m", "neucrab.cli", "measures", "--width", "250"], capture_output=True, text=True, check=True
    )
    for name in PROMISED:
        assert name in result.stdout


def test_cli_unknown_command_fails_cleanly():
    result = subprocess.run([sys.executable, "-m", "neucrab.cli", "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr
