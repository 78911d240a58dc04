"""neucrab: rank pre-trained neural checkpoints for transfer learning.

The public names load on first use (PEP 562), so importing a light part (the caches, the JSON stores, the
command line's parser) does not import torch and every measure.
"""

from importlib import import_module

from .errors import InputError

__all__ = ["InputError", "Ranking", "evaluate", "measures", "rank"]
__version__ = "0.1.0"

_LAZY = {"measures": ("neucrab.measures", None), "evaluate": ("neucrab.evaluation", "evaluate"),
         "rank": ("neucrab.ranking", "rank"), "Ranking": ("neucrab.ranking", "Ranking")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'neucrab' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
