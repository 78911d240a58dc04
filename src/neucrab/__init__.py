"""neucrab: rank pre-trained neural checkpoints for transfer learning."""

from . import measures
from .errors import InputError
from .evaluation import evaluate
from .ranking import Ranking, rank

__all__ = ["InputError", "Ranking", "evaluate", "measures", "rank"]
__version__ = "0.1.0"
