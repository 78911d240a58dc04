"""The measure registry: what each measure is called, what it needs, what it does and where it comes from.

Adding a measure is one decorated function (as in timm's model registry): the decorator records it here,
and `neucrab measures`, `neucrab rank` and the benchmark find it without further wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# What a measure consumes. Kept as plain strings so they print well and serialise to JSON.
FEATURES = "features"  # (N, D) features of the training split + labels
SOURCE_PROBS = "source_probs"  # (N, S) source-class probabilities (needs a classification head)
TRAIN_TEST = "features+test"  # features and labels of both the training and the test split
MODEL = "model"  # the network itself (trained further)


@dataclass(frozen=True)
class MeasureInfo:
    name: str
    function: Callable
    needs: str
    description: str
    citation: str
    care: str = ""  # how neucrab handles a known pitfall of the measure (shown by `neucrab measures`)
    regression: bool = False  # accepts real-valued targets
    multilabel: bool = False  # accepts multi-hot (N, C) labels (the paper's detection/segmentation appendix)


REGISTRY: dict[str, MeasureInfo] = {}


def register(
    name: str,
    *,
    needs: str,
    description: str,
    citation: str,
    care: str = "",
    regression: bool = False,
    multilabel: bool = False,
):
    """Decorator adding a measure function to REGISTRY under `name`."""

    def decorate(function: Callable) -> Callable:
        if name in REGISTRY:
            raise RuntimeError(f"measure {name!r} registered twice")
        REGISTRY[name] = MeasureInfo(name, function, needs, description, citation, care, regression, multilabel)
        return function

    return decorate


def get(name: str) -> MeasureInfo:
    from ..errors import InputError

    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"measure: unknown measure {name!r}; expected one of: {known}") from None
