"""Which hidden state of a text encoder gives the features, and how its tokens are pooled.

A text encoder (a Hugging Face / sentence-transformers folder, `packaged:minilm_l6`) with L transformer layers has
L + 1 hidden states: 0 is the embeddings' output, k the output of layer k. The choices:

- `layer`: None (the model's output, as sentence-transformers encodes), `K` (hidden state K, 0..L; negative counts
  from the end, -1 = L), `mean` (transformer-ranker's layer-mean: the token-wise mean of hidden states 1..L, then
  pooled), `all` (every hidden state 0..L, one checkpoint each: `rank` gives one row per layer), or a list of
  these (`0,3,mean`). Any other text names a module whose output replaces the last hidden state.
- `pooling`: `mean` (the mean over real tokens, padding left out: sentence-transformers' mean pooling) or `first`
  (the first token's state, [CLS] for BERT-style encoders); None keeps the folder's own Pooling config.
  The folder's Normalize module, where modules.json lists one, is applied to whatever is pooled: a layer choice
  only changes which hidden state enters the sentence-transformers head.

In a spec they are written after `@`: `packaged:minilm_l6@layer=3`, `packaged:minilm_l6@layer=mean,pool=first`,
`models/bert@pool=first`; `rank(..., layer=, pooling=)` and `--layer`/`--pooling` set them for every checkpoint.
`neucrab.text_layers.expand_layer_choices` turns `all` and lists into one spec per layer, `NAME@layer=K`.
"""

from __future__ import annotations

import re

from ..errors import InputError

POOLINGS = {"mean": ("mean_tokens",), "first": ("cls_token",)}  # choice -> sentence-transformers pooling modes
OPTION_KEYS = ("layer", "pool")
_SUFFIX = re.compile(r"[A-Za-z_]+=[^,=@\s]+(?:,[A-Za-z_]+=[^,=@\s]+)*")
_INTEGER = re.compile(r"-?\d+")


def split_spec(text: str) -> tuple[str, dict[str, str]] | None:
    """(base spec, {"layer": ..., "pool": ...}) for a spec ending in `@key=value[,key=value]`, else None.
    InputError for an unknown key or a key given twice."""
    base, at, suffix = text.rpartition("@")
    if not at or not base or not _SUFFIX.fullmatch(suffix):
        return None
    options: dict[str, str] = {}
    for pair in suffix.split(","):
        key, _, value = pair.partition("=")
        if key not in OPTION_KEYS:
            raise InputError(f"{text}: unknown option {key!r} after '@'; expected {' or '.join(OPTION_KEYS)} (e.g. "
                             f"{base}@layer=3,pool=first)")
        if key in options:
            raise InputError(f"{text}: option {key!r} given twice")
        options[key] = value
    return base, options


def join_spec(base: str, options: dict) -> str:
    """The spec `base@key=value,...` for the options that are set (base alone when none is)."""
    given = [f"{key}={options[key]}" for key in OPTION_KEYS if options.get(key) is not None]
    return f"{base}@{','.join(given)}" if given else base


def merge_option(spec: str, key: str, written, given):
    """One option from the spec (`written`) or from the caller (`given`); InputError when both set it."""
    if written is not None and given is not None and str(written) != str(given):
        flag = "pooling" if key == "pool" else key
        raise InputError(f"{spec}: {flag} given twice ({key}={written} in the spec, {flag}={given!r} as an option); "
                         "expected one of them")
    return written if written is not None else given


def check_pooling(pooling, spec: str) -> tuple[str, ...] | None:
    """The sentence-transformers pooling modes for a pooling choice (None: the folder's own), or InputError."""
    if pooling is None:
        return None
    if pooling not in POOLINGS:
        raise InputError(f"{spec}: pooling {pooling!r}; expected {' or '.join(POOLINGS)}")
    return POOLINGS[pooling]


def is_many(layer) -> bool:
    """Whether a layer choice names several hidden states (`all`, a list, or a comma-separated text)."""
    if isinstance(layer, (list, tuple)):
        return True
    return isinstance(layer, str) and (layer.strip() == "all" or "," in layer)


def hidden_choice(layer, num_layers: int, spec: str):
    """A single layer choice for an encoder with `num_layers` layers: (hidden, module) where hidden is an int
    0..num_layers or "mean" and module None, or hidden None and module a module name (or both None)."""
    if layer is None:
        return None, None
    if is_many(layer):
        raise InputError(f"{spec}: layer {show_layer(layer)} names several hidden states, one checkpoint each; rank, "
                         "extract and groundtruth expand it (one row per layer), loading takes one layer")
    text = str(layer).strip()
    if isinstance(layer, bool) or not text:
        raise InputError(f"{spec}: layer {layer!r}; expected 0..{num_layers}, mean, all or a module name")
    if text == "mean":
        return "mean", None
    if _INTEGER.fullmatch(text):
        index = int(text)
        if not -(num_layers + 1) <= index <= num_layers:
            raise InputError(f"{spec}: layer {index}; expected a hidden state 0..{num_layers} (0: the embeddings, "
                             f"{num_layers}: the last of its {num_layers} layers; -1 also means {num_layers}), "
                             "mean or all")
        return index % (num_layers + 1), None
    return None, text


def layer_list(layer, num_layers: int, spec: str) -> list[str]:
    """The single choices a multi-choice layer names, in order, written as they appear in specs."""
    parts = list(layer) if isinstance(layer, (list, tuple)) else str(layer).split(",")
    chosen: list[str] = []
    for part in parts:
        text = str(part).strip()
        expanded = [str(k) for k in range(num_layers + 1)] if text == "all" else [text]
        for item in expanded:
            hidden, module = hidden_choice(item, num_layers, spec)
            if module is not None:
                raise InputError(f"{spec}: layer {show_layer(layer)}: {module!r} is not a hidden state; a list takes "
                                 f"0..{num_layers}, mean and all")
            value = str(hidden)
            if value not in chosen:
                chosen.append(value)
    if not chosen:
        raise InputError(f"{spec}: layer {show_layer(layer)} names no hidden state; expected 0..{num_layers}, mean "
                         "or all")
    return chosen


def show_layer(layer) -> str:
    return ",".join(map(str, layer)) if isinstance(layer, (list, tuple)) else repr(layer)
