"""Placeholder: the prune section (being written by its owner)."""

from configs._model import StrictModel


class PruneConfig(StrictModel):
    pass
