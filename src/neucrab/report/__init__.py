"""Presenting a Ranking: the terminal table, and the files `--out DIR` writes."""

from .files import write_outputs
from .table import ranking_table

__all__ = ["ranking_table", "write_outputs"]
