"""Placeholder: the scaling section (being written by its owner)."""

from configs._model import StrictModel


class ExtrapolateConfig(StrictModel):
    pass
