"""Placeholder: the mixture section (being written by its owner)."""

from configs._model import StrictModel


class MixtureConfig(StrictModel):
    pass
