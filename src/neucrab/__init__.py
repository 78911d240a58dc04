"""neucrab: rank pre-trained neural checkpoints for transfer learning."""

from . import measures
from .errors import InputError
from .evaluation import evaluate

__all__ = ["InputError", "evaluate", "measures"]
__version__ = "0.1.0"
