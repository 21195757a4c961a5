"""The ``extrapolate`` section: scaling-law fits of pilot results and predictions at target sizes."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from configs._model import StrictModel


def _size_form(name: str, what: str) -> str:
    """A registered one-variable form whose x is a size: pilot curves are error against pilot size."""
    from tasks.scaling.forms import FORMS

    sizes = [n for n, f in FORMS.items() if f.n_vars == 1 and f.scale_sign > 0]
    if name not in sizes:
        choose = f"choose one of {', '.join(sizes)}" + (" or 'auto'" if what == "form" else "")
        if name in FORMS:
            raise ValueError(f"{what} {name!r} cannot fit a pilot curve (error against one size variable); {choose}")
        raise ValueError(f"unknown {what} {name!r}; {choose}")
    return name


class ExtrapolateConfig(StrictModel):
    """How pilot curves are fitted and extrapolated (see /work/shared/design/scaling.md).

    ``form`` is a one-variable size form (m1, m2, pow4, bnsl) or ``auto``,
    which picks among ``candidates`` by held-out error on the ``holdout_largest`` largest scales.
    Pilot accuracies are fitted in error space (1 - accuracy).
    """

    form: str = "m2"
    candidates: list[str] | None = Field(default=None, description="forms tried by 'auto' (default: m2, pow4, bnsl)")
    target_sizes: list[float] = Field(default_factory=list, description="sizes to predict, e.g. [60000, 1e6]")
    bootstrap: int = Field(default=1000, ge=0, le=100_000, description="run-level bootstrap replicates (0 = no intervals)")
    holdout_largest: int = Field(default=1, ge=0, le=1000, description="largest scales held out for validation (0 = none)")
    huber_delta: float = Field(default=1e-3, gt=0.0)
    level: float = Field(default=0.95, gt=0.0, lt=1.0, description="coverage of the percentile intervals")
    seed: int = 0

    @field_validator("form")
    @classmethod
    def _form_known(cls, v: str) -> str:
        return v if v == "auto" else _size_form(v, "form")

    @field_validator("candidates")
    @classmethod
    def _candidates_known(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_size_form(name, "candidate form") for name in v]

    @field_validator("target_sizes")
    @classmethod
    def _sizes_positive(cls, v: list[float]) -> list[float]:
        for s in v:
            if not s > 0:
                raise ValueError(f"target size {s!r} must be > 0")
        return v

    @model_validator(mode="after")
    def _auto_needs_holdout(self) -> "ExtrapolateConfig":
        if self.form == "auto" and self.holdout_largest < 1:
            raise ValueError("form 'auto' chooses by held-out error: holdout_largest must be >= 1")
        return self
