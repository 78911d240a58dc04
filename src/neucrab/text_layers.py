"""Layer choices that name several hidden states of a text encoder (`all`, `0,3,mean`) become one unit of work
per hidden state: `rank`, `extract` and `groundtruth` call `expand_layer_choices` on their pool before running it
(the choices themselves: `neucrab.checkpoints.text_options`)."""

from __future__ import annotations

from .checkpoints import load
from .checkpoints.text_options import (
    check_pooling,
    is_many,
    join_spec,
    layer_list,
    merge_option,
    show_layer,
    split_spec,
)
from .errors import InputError


def expand_layer_choices(specs: list, names: list[str], carried: list, layer=None, pooling=None,
                         *, trust_remote_code: bool = False):
    """One unit per checkpoint and layer: (specs, names, carried columns, layer for every unit).

    A multi-choice `layer` (`all`, a list) or a spec written with `@layer=all` becomes one spec per hidden state,
    `SPEC@layer=K`, named `NAME@layer=K` (the encoder is loaded once here to learn its layer count); `pooling`
    is written into every spec as `@pool=...`. The returned layer is what every unit still passes to `load`:
    `layer` itself when it is a single choice, None when it went into the specs.
    """
    if pooling is not None:
        check_pooling(pooling, "pooling")
    many = is_many(layer)
    if not many and pooling is None and not any(isinstance(s, str) and "@" in s for s in specs):
        return specs, names, carried, layer
    out_specs, out_names, out_carried = [], [], []
    for spec, name, columns in zip(specs, names, carried):
        written = split_spec(spec) if isinstance(spec, str) else None
        base, options = written if written else (spec, {})
        label = join_spec(base, {**options, "layer": None}) if name == spec else name
        expand = many or options.get("layer", "").strip() == "all"
        if (expand or pooling is not None) and not isinstance(spec, str):
            raise InputError(f"{type(spec).__name__}: layer {show_layer(layer)} / pooling apply to text encoder specs "
                             "(strings); expected a spec such as packaged:minilm_l6")
        if pooling is not None:
            options = {**options, "pool": merge_option(spec, "pool", options.get("pool"), pooling)}
        if not expand:
            out_specs.append(join_spec(base, options) if isinstance(spec, str) else spec)
            out_names.append(name)
            out_carried.append(columns)
            continue
        if many and options.get("layer") is not None:
            merge_option(spec, "layer", options["layer"], layer)  # raises: given twice
        single = {**options, "layer": None}
        checkpoint = load(join_spec(base, single), trust_remote_code=trust_remote_code)
        num_layers = getattr(checkpoint, "num_layers", None)
        if num_layers is None:
            raise InputError(f"{spec}: layer {show_layer(layer if many else 'all')} ranks the hidden states of a text "
                             f"encoder; this checkpoint takes {checkpoint.modality} input (name one module with "
                             "--layer NAME instead)")
        for choice in layer_list(layer if many else "all", num_layers, str(spec)):
            out_specs.append(join_spec(base, {**single, "layer": choice}))
            out_names.append(f"{label}@layer={choice}")
            out_carried.append(columns)
    return out_specs, out_names, out_carried, None if many else layer
