"""Text encoders from Hugging Face / sentence-transformers folders: `HFTextCheckpoint` and its `TextFeatures`.

Features are token states pooled into one vector per text: the folder's sentence-transformers Pooling config
(mean over real tokens when there is none), L2-normalised when `modules.json` lists a Normalize module, as
sentence-transformers' own `encode` does. `text_options.py` chooses another hidden state (`layer=K`, `mean`) or
pooling (`mean`, `first`); the Normalize module then applies to what is pooled.

How a hidden state is computed: hidden state K < L is the input of transformer block K (what transformers'
`output_hidden_states` returns at index K), so the forward pass stops there; this also makes fine-tuning at
layer K train the encoder truncated after block K, plus the new head. Hidden state L, the layer-mean and the
all-layer stack run the whole encoder with `output_hidden_states=True`.

The all-layer stack (`hidden="stack"`: the pooled, unnormalised hidden states 0..L side by side) is what feature
extraction caches for a layer choice: each layer's features, and the layer-mean's (the mean of the pooled states
1..L, equal to pooling the token-wise mean since mean and first-token pooling are linear), are derived from it
(`HFTextCheckpoint.derived_from`), so ranking every layer of an encoder costs one forward pass. Each layer's
features are cached under their own key too. With max pooling (not linear) each choice runs on its own.

`random_seed`: the same architecture and tokenizer with transformers' random initialisation (the from-scratch
baseline), seeded; its fingerprint names the seed and the torch and transformers versions that drew it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ._common import fingerprint, sha256_folder
from .base import Checkpoint
from .features import get_layer
from .hf_files import from_pretrained as _from_pretrained
from .hf_files import read_json as _read_json
from .remote_code import check_custom_code
from .text_options import check_pooling, hidden_choice

POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # ST's concatenation order
LINEAR_MODES = {"cls_token", "mean_tokens", "mean_sqrt_len_tokens"}


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: tuple[str, ...]) -> torch.Tensor:
    """(B, T, D) token states -> (B, D * len(pooling)): each sentence-transformers mode, concatenated."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = []
    for mode in pooling:
        if mode == "cls_token":
            pooled.append(hidden[:, 0])
        elif mode == "max_tokens":
            pooled.append(hidden.masked_fill(mask == 0, -1e9).max(dim=1).values)
        else:
            total = (hidden * mask).sum(dim=1)
            count = mask.sum(dim=1).clamp(min=1e-9)
            pooled.append(total / (count if mode == "mean_tokens" else count.sqrt()))
    return torch.cat(pooled, dim=-1)


def transformer_blocks(model: nn.Module, num_layers: int | None) -> nn.ModuleList | None:
    """The ModuleList of the encoder's `num_layers` transformer blocks (BERT's `encoder.layer`), or None."""
    if not num_layers:
        return None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and \
                len({type(block) for block in module}) == 1:
            return module
    return None


class _Reached(Exception):
    """Raised by a hook when the forward pass has computed the hidden state asked for."""


class TextFeatures(nn.Module):
    """Tokenised text -> pooled (B, D) embeddings: `forward(input_ids, attention_mask, **other_inputs)`.

    pooling: sentence-transformers mode names (see POOLING_MODES); several are concatenated in ST's order.
    layer: a named module whose output replaces the last hidden state (pooled the same way).
    hidden: None (the model's last hidden state), K (hidden state K), "mean" (token-wise mean of hidden states
    1..L), "stack" (every hidden state 0..L pooled, concatenated: (B, (L + 1) * D), never normalised).
    """

    def __init__(self, model: nn.Module, pooling: tuple[str, ...], normalize: bool, layer: str | None = None,
                 hidden: int | str | None = None, num_layers: int | None = None):
        super().__init__()
        self.model = model
        self.pooling, self.normalize, self.layer, self.hidden = pooling, normalize and hidden != "stack", layer, hidden
        self.num_layers = num_layers
        early = isinstance(hidden, int) and num_layers is not None and hidden < num_layers
        self.stop_at = transformer_blocks(model, num_layers) if early else None  # not a submodule: no copy

    def forward(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        if self.hidden is None:
            states = self._last_or_module(inputs)
        elif isinstance(self.hidden, int):
            states = self._hidden_state(inputs, self.hidden)
        else:
            every = self._all_hidden_states(inputs)
            if self.hidden == "stack":
                return torch.cat([pool_tokens(state, attention_mask, self.pooling) for state in every], dim=-1)
            states = torch.stack(every[1:]).mean(dim=0)  # transformer-ranker's layer-mean, before pooling
        embedding = pool_tokens(states, attention_mask, self.pooling)
        if self.normalize:
            embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
        return embedding

    def _last_or_module(self, inputs: dict) -> torch.Tensor:
        seen, handle = {}, None
        if self.layer is not None:
            def grab(module, args, output):
                seen["hidden"] = output[0] if isinstance(output, (tuple, list)) else output

            handle = dict(self.model.named_modules())[self.layer].register_forward_hook(grab)
        try:
            output = self.model(**inputs)
        finally:
            if handle is not None:
                handle.remove()
        return seen.get("hidden", output[0] if isinstance(output, tuple) else output.last_hidden_state)

    def _hidden_state(self, inputs: dict, index: int) -> torch.Tensor:
        if self.stop_at is None:
            return self._all_hidden_states(inputs)[index]
        seen = {}

        def stop(module, args, kwargs):  # the block's input is hidden state `index`; the rest is not needed
            seen["hidden"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            raise _Reached

        handle = self.stop_at[index].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.model(**inputs)
        except _Reached:
            pass
        finally:
            handle.remove()
        if "hidden" not in seen:
            raise InputError(f"transformer block {index} was not run in the forward pass")
        return seen["hidden"]

    def _all_hidden_states(self, inputs: dict) -> tuple[torch.Tensor, ...]:
        states = getattr(self.model(**inputs, output_hidden_states=True), "hidden_states", None)
        if states is None or len(states) != (self.num_layers or 0) + 1:
            raise InputError(f"{type(self.model).__name__}: expected {self.num_layers} + 1 hidden states from "
                             "output_hidden_states=True")
        return states


class HFTextCheckpoint(Checkpoint):
    """A text checkpoint (modality "text"): `forward(list of B strings)` -> (embeddings (B, D), None).

    `module`: the transformers model; `tokenizer`; `tokenize(texts)` -> dict of tensors;
    `feature_module()`: the `TextFeatures` nn.Module mapping `**tokenize(texts)` to (B, D) embeddings
    (shares parameters with `module`; backpropagates outside inference mode). `num_layers`: the encoder's layer
    count L (hidden states 0..L); `hidden`: the hidden-state choice (None, K, "mean", "stack").
    """

    def __init__(self, *, module, tokenizer, features: TextFeatures, max_length: int, lowercase: bool,
                 name: str, fingerprint: str, layer: str | None, details: dict, identity: str = "",
                 num_layers: int | None = None):
        super().__init__(name=name, fingerprint=fingerprint, modality="text", preprocess=None, has_head=False,
                         layer=layer, details=details)
        self.module = module.eval()
        self.tokenizer = tokenizer
        self._features = features
        self.max_length = max_length
        self.lowercase = lowercase
        self.identity, self.num_layers = identity, num_layers
        self.hidden, self.pooling, self.normalize = features.hidden, features.pooling, features.normalize

    def tokenize(self, texts) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{self.name}: expected a list of strings for a text checkpoint")
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        return dict(self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt",
                                   max_length=self.max_length))

    def feature_module(self) -> TextFeatures:
        return self._features

    def forward(self, batch) -> tuple[np.ndarray, None]:
        encoded = self.tokenize(batch)
        with torch.inference_mode():
            embedding = self._features(**encoded)
        return embedding.float().cpu().numpy(), None

    def derived_from(self):
        """(the all-layer stack checkpoint, a function from its features to this checkpoint's) for a hidden-state
        choice with linear pooling; None when this checkpoint's features are computed on their own."""
        if self.hidden is None or self.hidden == "stack" or not set(self.pooling) <= LINEAR_MODES:
            return None
        stack = self.variant("stack")
        hidden, layers, normalize = self.hidden, self.num_layers, self.normalize

        def derive(features: np.ndarray) -> np.ndarray:
            parts = features.reshape(len(features), layers + 1, -1)
            chosen = parts[:, hidden] if hidden != "mean" else parts[:, 1:].mean(axis=1, dtype=np.float64)
            if normalize:
                chosen = chosen / np.maximum(np.linalg.norm(chosen, axis=1, keepdims=True), 1e-12)
            return np.ascontiguousarray(chosen, dtype=np.float32)

        return stack, derive

    def variant(self, hidden) -> HFTextCheckpoint:
        """The same encoder, tokenizer and pooling with another hidden-state choice (shares the network)."""
        features = TextFeatures(self.module, self.pooling, self.normalize, None, hidden, self.num_layers)
        name = self.name if hidden == self.hidden else f"{self.name} (hidden states: {hidden})"
        return HFTextCheckpoint(module=self.module, tokenizer=self.tokenizer, features=features,
                                max_length=self.max_length, lowercase=self.lowercase, name=name,
                                fingerprint=text_fingerprint(self.identity, None, hidden, self.pooling,
                                                             features.normalize, self.max_length),
                                layer=None if hidden is None else str(hidden), identity=self.identity,
                                num_layers=self.num_layers, details={**self.details, "hidden_state": hidden})


def text_fingerprint(identity: str, module_layer, hidden, pooling, normalize: bool, max_length: int) -> str:
    """The feature-cache identity of a text checkpoint: its weights (or random-init recipe), layer, pooling."""
    layer = module_layer if hidden is None else f"hidden:{hidden}"
    return fingerprint("hf-text", identity, layer, pooling, normalize, max_length)


def sentence_transformers_setup(folder: Path, modules: list | None, spec: str):
    """(transformer folder, pooling modes, normalize, max_length or None, lowercase) from an ST folder."""
    if modules is None:
        return folder, ("mean_tokens",), False, None, False
    if not isinstance(modules, list) or not all(isinstance(e, dict) and isinstance(e.get("type", ""), str)
                                                for e in modules):
        raise InputError(f"{spec}: modules.json: expected a list of {{\"type\": ..., \"path\": ...}} objects")
    transformer_dir, pooling, normalize = folder, ("mean_tokens",), False
    for entry in modules:
        kind = entry.get("type", "").rsplit(".", 1)[-1]
        if not entry.get("type", "").startswith("sentence_transformers."):  # custom module code
            raise InputError(f"{spec}: modules.json in {folder} names the module {entry.get('type')!r}, code from "
                             "outside sentence-transformers; neucrab builds Transformer, Pooling and Normalize "
                             "itself and never imports module code, so it cannot load this folder")
        path = folder / str(entry.get("path", ""))
        if not path.resolve().is_relative_to(folder.resolve()):  # an untrusted file names what we read
            raise InputError(f"{spec}: modules.json: module path {entry.get('path')!r} leads outside {folder}")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            config = _read_json(path / "config.json", spec)
            pooling = tuple(m for m in POOLING_MODES if config.get(f"pooling_mode_{m}"))
            others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v
                      and k[len("pooling_mode_"):] not in POOLING_MODES]
            if others or not pooling:
                raise InputError(f"{spec}: unsupported sentence-transformers pooling {others or 'none'}; "
                                 f"neucrab supports {', '.join(POOLING_MODES)}")
        elif kind == "Normalize":
            normalize = True
        else:
            raise InputError(f"{spec}: unsupported sentence-transformers module {kind!r} in modules.json "
                             "(neucrab handles Transformer, Pooling, Normalize)")
    st_config = transformer_dir / "sentence_bert_config.json"
    if not st_config.is_file():
        st_config = folder / "sentence_bert_config.json"
    settings = _read_json(st_config, spec) if st_config.is_file() else {}
    return (transformer_dir, pooling, normalize, settings.get("max_seq_length"),
            bool(settings.get("do_lower_case", False)))


def _random_model(transformers, folder: Path, spec: str, trust: bool, seed: int):
    """The folder's architecture with transformers' own random initialisation, drawn from torch seeded by `seed`."""
    check_custom_code(folder, spec, trust_remote_code=trust)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust)
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(seed)
            return transformers.AutoModel.from_config(config, trust_remote_code=trust)
    except Exception as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise InputError(f"{spec}: transformers could not build the architecture in {folder}: {reason}") from None


def load_text(transformers, folder: Path, modules, spec: str, *, layer, name, trust, pooling=None,
              random_seed: int | None = None) -> HFTextCheckpoint:
    """A text checkpoint from a folder (see the module docstring for layer, pooling and random_seed)."""
    transformer_dir, own_pooling, normalize, max_length, lowercase = sentence_transformers_setup(folder, modules, spec)
    chosen_pooling = check_pooling(pooling, spec) or own_pooling
    tokenizer = _from_pretrained(transformers.AutoTokenizer, transformer_dir, spec, trust)
    if random_seed is None:
        model = _from_pretrained(transformers.AutoModel, transformer_dir, spec, trust).eval()
        identity = sha256_folder(folder)
    else:
        model = _random_model(transformers, transformer_dir, spec, trust, random_seed).eval()
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
        identity = fingerprint("random", random_seed, sha256_folder(folder), versions)
    num_layers = getattr(model.config, "num_hidden_layers", None)
    hidden, module_layer = hidden_choice(layer, num_layers or 0, spec) if num_layers else (None, layer)
    if module_layer is not None:
        get_layer(model, module_layer, spec)
    if max_length is None:
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512), 512]
        max_length = int(min(v for v in limits if isinstance(v, int) and v > 0))
    details = {"source": str(folder), "architecture": model.__class__.__name__, "pooling": "+".join(chosen_pooling),
               "normalize": normalize, "max_length": max_length, "hidden_state": hidden,
               "weights": "random init, seed " + str(random_seed) if random_seed is not None else "pretrained"}
    features = TextFeatures(model, chosen_pooling, normalize, module_layer, hidden, num_layers)
    return HFTextCheckpoint(
        module=model,
        tokenizer=tokenizer,
        features=features,
        max_length=max_length,
        lowercase=lowercase,
        name=name,
        fingerprint=text_fingerprint(identity, module_layer, hidden, chosen_pooling, normalize, max_length),
        layer=module_layer if hidden is None else str(hidden),
        details=details,
        identity=identity,
        num_layers=num_layers,
    )
