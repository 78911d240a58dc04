"""Transferability measures: pure functions of numpy arrays, higher score = predicted to transfer better.

`features` is an (N, D) array, `labels` N labels of any hashable kind (gaps and strings allowed),
`source_probs` an (N, S) array of source-class probabilities whose rows sum to 1. Every statistic is
computed in float64 whatever the input dtype. Bad input raises `neucrab.InputError`.

Every registered measure is `neucrab.measures.NAME` (names that are not identifiers, such as "mi_alpha0.5",
through `getattr`), including those that installed packages add through the `neucrab.measures` entry points,
which are loaded at the end of this module.
"""

from . import registry
from .finetune_measures import finetune_1ep, finetune_5ep
from .gbc import gbc
from .hscore import hscore, shrinkage_hscore
from .ialpha import mi, mi_alpha05, mi_pca, mi_pca_alpha05, mutual_information
from .knn import knn
from .leep import leep, nce, nleep, nleep_spread
from .logme import logme
from .parc import parc
from .probe import linear_probe, linear_probe_1ep, linear_probe_5ep
from .registry import (
    REGISTRY,
    MeasureInfo,
    MeasureInputs,
    Needs,
    NotApplicable,
    SaturationWarning,
    default_measures,
    get,
    register,
)
from .sfda import sfda
from .transrate import transrate

__all__ = [
    "REGISTRY",
    "MeasureInfo",
    "MeasureInputs",
    "Needs",
    "NotApplicable",
    "SaturationWarning",
    "default_measures",
    "finetune_1ep",
    "finetune_5ep",
    "gbc",
    "get",
    "hscore",
    "knn",
    "leep",
    "linear_probe",
    "linear_probe_1ep",
    "linear_probe_5ep",
    "logme",
    "mi",
    "mi_alpha05",
    "mi_pca",
    "mi_pca_alpha05",
    "mutual_information",
    "nce",
    "nleep",
    "nleep_spread",
    "parc",
    "register",
    "sfda",
    "shrinkage_hscore",
    "transrate",
]


def __getattr__(name: str):
    """A registered measure that is not imported above (a plugin's, or a name that is not an identifier)."""
    info = REGISTRY.get(name)
    if info is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return info.function


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(REGISTRY))


registry.load_entry_points()
