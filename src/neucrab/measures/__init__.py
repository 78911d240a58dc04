"""Transferability measures: pure functions of numpy arrays, higher score = predicted to transfer better.

`features` is an (N, D) array, `labels` N labels of any hashable kind (gaps and strings allowed),
`source_probs` an (N, S) array of source-class probabilities whose rows sum to 1. Every statistic is
computed in float64 whatever the input dtype. Bad input raises `neucrab.InputError`.
"""

from . import finetune_measures  # noqa: F401  (registers finetune_1ep, finetune_5ep: they need the model)
from .gbc import gbc
from .hscore import hscore, shrinkage_hscore
from .knn import knn
from .leep import leep, nce, nleep, nleep_spread
from .logme import logme
from .mi import mutual_information
from .parc import parc
from .probe import linear_probe
from .registry import REGISTRY, MeasureInfo, get
from .sfda import sfda
from .transrate import transrate

__all__ = [
    "REGISTRY",
    "MeasureInfo",
    "gbc",
    "get",
    "hscore",
    "knn",
    "leep",
    "linear_probe",
    "logme",
    "mutual_information",
    "nce",
    "nleep",
    "nleep_spread",
    "parc",
    "sfda",
    "shrinkage_hscore",
    "transrate",
]
