"""Python code that a model folder asks its loading library to import, and neucrab's refusal to run it unasked.

transformers imports `modeling_*.py` / `configuration_*.py` / `tokenization_*.py` from a folder (or from
another hub repository, `org/repo--module.Class`) when its `config.json` or `tokenizer_config.json` has an
`auto_map`. Left to itself, transformers then asks "Do you wish to run the custom code? [y/N]" on stdin, or
runs it when told `trust_remote_code=True`. neucrab never lets it ask: a folder with an `auto_map` is refused
here unless the user opted in (`--trust-remote-code`, `trust_remote_code=True`), and every `from_pretrained`
call passes `trust_remote_code` explicitly, so transformers itself refuses anything this check might miss.

sentence-transformers folders: neucrab builds the Transformer, Pooling and Normalize modules itself and never
imports the class a `modules.json` entry names; an entry outside `sentence_transformers.` (custom module
code) is refused in `hf.py`, opt-in or not, because neucrab has no way to run it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

# The files of a folder that transformers' Auto classes read an `auto_map` from.
CODE_CONFIGS = ("config.json", "tokenizer_config.json")
OPT_IN = "--trust-remote-code (trust_remote_code=True)"


def _modules_named(auto_map) -> list[str]:
    """`{"AutoModel": "modeling_x.X", "AutoTokenizer": ["tok.Slow", null]}` -> ["modeling_x.py", "tok.py"];
    a reference into another repository (`org/repo--modeling_x.X`) keeps the repository's name."""
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    references = []
    for value in values:
        references += value if isinstance(value, (list, tuple)) else [value]
    found = []
    for reference in references:
        if not isinstance(reference, str) or not reference:
            continue
        repository, _, dotted = reference.rpartition("--")
        module = dotted.rsplit(".", 1)[0] + ".py"
        where = f"{repository}/{module}" if repository else module
        if where not in found:
            found.append(where)
    return found


def custom_code(folder: Path) -> list[str]:
    """`CONFIG: module.py, ...` for each config file in `folder` with an `auto_map` (empty: none).

    A config that is not valid JSON is left to the loader, which reports it."""
    found = []
    for config_name in CODE_CONFIGS:
        path = folder / config_name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            found.append(f"{config_name} auto_map -> {', '.join(_modules_named(auto_map)) or auto_map}")
    return found


def check_custom_code(folder: Path, spec: str, *, trust_remote_code: bool) -> None:
    """InputError, one line naming the folder, the code and the opt-in, when `folder` asks transformers to
    import code and the user has not opted in."""
    found = custom_code(folder)
    if found and not trust_remote_code:
        raise InputError(
            f"{spec}: the model folder {folder} asks to run its own Python code ({'; '.join(found)}); neucrab "
            f"does not run code from a checkpoint by default; if you trust the folder pass {OPT_IN}"
        )
