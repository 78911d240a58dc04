"""The measure registry: one decorated function is a measure, with everything the rest of neucrab needs.

    @register("my_measure", needs=Needs.FEATURES, description=..., citation=..., cost=my_cost_formula)
    def my_measure(features, labels, *, seed=0) -> float: ...

is all it takes (as in timm's model registry): `neucrab measures` lists it, `neucrab rank --measure my_measure`
computes it, `neucrab.cost.measure_cost` counts it, `neucrab bench` judges it, and `neucrab.measures.my_measure`
calls it. Packages outside neucrab add measures the same way, found through the entry-point group
`neucrab.measures` (see `load_entry_points`).

`Needs` says what a measure is computed from and binds a call's arguments from a `MeasureInputs`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import InputError

ENTRY_POINT_GROUP = "neucrab.measures"


class SaturationWarning(UserWarning):
    """A measure hit a known saturation on these inputs (H-score = C - 1 when N - 1 <= D, SFDA near 1, GBC
    underflow): its value says nothing about this checkpoint. `rank` records it as the cell's note."""


class NotApplicable(Exception):
    """The inputs lack what a measure needs (no classification head, no network): the cell is not applicable."""


@dataclass(frozen=True)
class MeasureInputs:
    """Everything one checkpoint offers the measures on one task. Missing parts are None."""

    labels: object  # training labels: (N,) codes, or multi-hot (N, C)
    features: object = None  # (N, D) training features
    source_probs: object = None  # (N, S) source-class probabilities of the checkpoint's head
    test_features: object = None
    test_labels: object = None
    checkpoint: object = None  # the loaded network (measures that train it)
    task: object = None  # the loaded Task
    cache_dir: object = None  # where measures that train keep their runs


class Needs(str, Enum):
    """What a measure consumes. A `str` so that it prints, compares and serialises as its value."""

    FEATURES = "features"  # (N, D) features of the training split + labels
    SOURCE_PROBS = "source_probs"  # (N, S) source-class probabilities (needs a classification head)
    TRAIN_TEST = "features+test"  # features and labels of both the training and the test split
    MODEL = "model"  # the network itself (trained further)

    def __str__(self) -> str:
        return self.value

    def bind(self, inputs: MeasureInputs) -> tuple[tuple, dict]:
        """(positional, keyword) arguments of a measure with this need; NotApplicable when `inputs` lack them."""
        if self is Needs.FEATURES:
            return (inputs.features, inputs.labels), {}
        if self is Needs.SOURCE_PROBS:
            if inputs.source_probs is None:
                raise NotApplicable("checkpoint has no classification head")
            return (inputs.source_probs, inputs.labels), {}
        if self is Needs.TRAIN_TEST:
            return (inputs.features, inputs.labels, inputs.test_features, inputs.test_labels), {}
        if inputs.checkpoint is None:
            raise NotApplicable("needs the model, and only precomputed features were given")
        return (inputs.checkpoint, inputs.task), {"cache_dir": inputs.cache_dir}


# What each kind is called in one word, for listings.
FEATURES, SOURCE_PROBS, TRAIN_TEST, MODEL = Needs.FEATURES, Needs.SOURCE_PROBS, Needs.TRAIN_TEST, Needs.MODEL

CostFormula = Callable[..., float]  # f(n, d, classes, sources, test_n, **details) -> FLOPs


@dataclass(frozen=True)
class MeasureInfo:
    """A registered measure. cost: its FLOP formula (see `neucrab.cost.measure_cost`), None when it has none.
    default: its position in `rank`'s default set (lower first), None when it is not in it. options: its
    keyword-only parameters and their defaults, read off the function's signature."""

    name: str
    function: Callable
    needs: Needs
    description: str
    citation: str
    care: str = ""  # how neucrab handles a known pitfall of the measure (shown by `neucrab measures NAME`)
    regression: bool = False  # accepts real-valued targets
    multilabel: bool = False  # accepts multi-hot (N, C) labels (the paper's detection/segmentation appendix)
    cost: CostFormula | None = None
    default: int | None = None
    options: dict = field(default_factory=dict)

    def __call__(self, inputs: MeasureInputs, **options) -> float:
        """The measure on `inputs` (NotApplicable when they lack what it needs)."""
        args, kwargs = self.needs.bind(inputs)
        return self.function(*args, **kwargs, **options)


REGISTRY: dict[str, MeasureInfo] = {}


def _keyword_options(function: Callable) -> dict:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


def register(name: str, *, needs: Needs | str, description: str, citation: str, care: str = "",
             regression: bool = False, multilabel: bool = False, cost: CostFormula | None = None,
             default: int | None = None):
    """Decorator adding a measure function to REGISTRY under `name` (see the module docstring)."""
    kind = Needs(needs)

    def decorate(function: Callable) -> Callable:
        if name in REGISTRY:
            raise RuntimeError(f"measure {name!r} registered twice")
        REGISTRY[name] = MeasureInfo(name, function, kind, description, citation, care, regression, multilabel,
                                     cost, default, _keyword_options(function))
        return function

    return decorate


def get(name: str) -> MeasureInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"measure: unknown measure {name!r}; expected one of: {known}") from None


def default_measures() -> list[str]:
    """`rank`'s default set, in order."""
    chosen = [info for info in REGISTRY.values() if info.default is not None]
    return [info.name for info in sorted(chosen, key=lambda info: info.default)]


class PluginWarning(UserWarning):
    """A package's `neucrab.measures` entry point could not be loaded; its measures are missing."""


def load_entry_points() -> list[str]:
    """Import every installed `neucrab.measures` entry point (a module whose import registers measures, or a
    registered function); return the names they added. A plugin that fails to load is reported with a
    PluginWarning and skipped, so one broken package never stops neucrab."""
    from importlib.metadata import entry_points

    before = set(REGISTRY)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as error:  # a stranger's package can fail in any way; the others still load
            warnings.warn(f"neucrab: measure plugin {point.name} ({point.value}) failed to load: "
                          f"{type(error).__name__}: {error}", PluginWarning, stacklevel=2)
    return [name for name in REGISTRY if name not in before]
