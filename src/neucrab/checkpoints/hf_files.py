"""Reading a Hugging Face folder: its JSON files, and transformers' `from_pretrained` run without prompts (the
folder's own code only with trust_remote_code, `remote_code.py`) and without progress bars."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .remote_code import check_custom_code


def read_json(path: Path, spec: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{spec}: cannot read {path.name} as JSON: {error}") from None


def from_pretrained(loader, folder: Path, spec: str, trust: bool):
    from transformers.utils import logging

    check_custom_code(folder, spec, trust_remote_code=trust)
    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar per model: not the user's concern
    try:  # trust_remote_code always explicit: transformers must never ask on stdin
        return loader.from_pretrained(str(folder), trust_remote_code=trust)
    except Exception as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise InputError(f"{spec}: transformers could not load the model in {folder}: {reason}") from None
    finally:
        if shown:
            logging.enable_progress_bar()
