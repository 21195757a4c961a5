"""The ``mixture:`` section: pools derived from ingested sources, the target, OT, pilots, predictor,
extrapolation and selection settings (method: /work/shared/design/mixture.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs._model import StrictModel, listed_once


class PoolConfig(StrictModel):
    """One mixture source: ``n`` rows of an ingested source's split, optionally class-skewed.

    ``class_proportions`` maps label names to shares; labels not listed share the remainder
    equally (Projektor: four classes at 0.2425 each, the other six at 0.005). Pools drawn from the
    same source and split never share rows.
    """

    name: str
    source: str
    split: Literal["train", "test", "all"] = "train"
    n: int | None = Field(default=None, gt=0, description="rows in the pool (None: every row of the split)")
    class_proportions: dict[str, float] | None = None
    seed: int = 0
    cost: float = Field(default=1.0, ge=0, description="cost per example, for the selection budget")

    @field_validator("class_proportions")
    @classmethod
    def _props(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if any(x < 0 for x in v.values()) or sum(v.values()) > 1 + 1e-9:
            raise ValueError(f"class_proportions {v} must be >= 0 and sum to at most 1")
        return v


class TargetConfig(StrictModel):
    """The target: ``n_ot`` rows revealed for OT and ``n_eval`` disjoint rows to evaluate pilots on."""

    source: str
    split: Literal["train", "test", "all"] = "test"
    n_ot: int = Field(default=1000, gt=0)
    n_eval: int = Field(default=2000, gt=0)
    seed: int = 0


class FeatureConfig(StrictModel):
    """The shared feature space: ``space`` says where the vectors come from, then a common image side
    (bilinear resize, raw image features only) and the shared PCA dimension (0 = keep features).

    ``space``: ``raw`` — the sources' own feature matrices (pixels, columns); ``encoder`` — the run
    config's ``encoder`` embeddings (MiniLM for text, SSL/PCA for images, user vectors), computed or
    read from the embedding cache; ``auto`` (default) — ``encoder`` when some mixture source has no
    feature matrix (text), else ``raw``."""

    space: Literal["auto", "raw", "encoder"] = "auto"
    image_size: int | None = Field(default=16, gt=0)
    dim: int = Field(default=64, ge=0)
    seed: int = 0


class OTConfig(StrictModel):
    """Label-aware OT settings. ``reveal``: examples per pool that enter the OT union."""

    solver: Literal["exact", "sinkhorn", "sinkhorn_debiased"] = "sinkhorn"
    mode: Literal["weighted", "resample"] = "weighted"
    reg: float = Field(default=0.05, gt=0, description=(
        "entropic ε in normalised cost units (0.02 keeps the batched sweep's values within ~0.6% of exact emd, "
        "0.05 ~2%, but 0.02 stalls on pools with disjoint classes); a mixture that has not converged after "
        "2,000 iterations is solved again at 2ε, 4ε, 8ε, and ot_distances records its ε and iterations"))
    tol: float = Field(default=1e-4, gt=0, description="Sinkhorn stop: L1 error of the source marginal")
    max_iter: int = Field(default=2000, gt=0, description="Sinkhorn iterations per attempt; a mixture still above tol "
                          "is solved again at 2ε, 4ε, 8ε, then reported as not converged")
    lambda_x: float = Field(default=1.0, ge=0)
    lambda_y: float = Field(default=1.0, ge=0)
    label_method: Literal["gaussian", "exact"] = "gaussian"
    reveal: int = Field(default=1000, gt=0)
    resample_n: int = Field(default=1000, gt=0, description="examples per mixture in resample mode")
    compare: list[Literal["exact", "resample"]] = Field(
        default_factory=list, description="extra sweeps for comparison: exact emd on the union, Projektor's resample mode")
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="torch device of the Sinkhorn solvers: cpu, cuda or cuda:N")
    seed: int = 0

    @model_validator(mode="after")
    def _lambdas(self) -> "OTConfig":
        if self.lambda_x + self.lambda_y == 0:
            raise ValueError("lambda_x and lambda_y cannot both be 0")
        return self


class ProbeSettings(StrictModel):
    weight_decay: float = Field(default=1e-3, ge=0)
    max_iter: int = Field(default=100, gt=0)
    rows_per_task: int = Field(default=20_000, gt=0, description="training rows per Prefect task (chunk of pilots)")


class PredictorConfig(StrictModel):
    """Forms and baselines validated on held-out mixtures; ``bandwidths``: kernel widths over the simplex
    for smoothing the chosen form's pilot residuals (0 = no correction), chosen by held-out error too."""

    forms: list[Literal["ot", "ot_linear", "ot_quadratic", "projektor"]] = Field(
        default_factory=lambda: ["ot", "ot_linear", "ot_quadratic", "projektor"], min_length=1)
    bandwidths: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.4])
    baselines: list[Literal["quadratic_p", "nearest_grid"]] = ["quadratic_p", "nearest_grid"]
    ridge: float = Field(default=0.0, ge=0)
    random_splits: int = Field(default=5, ge=0)
    random_test_fraction: float = Field(default=0.3, gt=0, lt=1)
    seed: int = 0

    @field_validator("forms", "baselines", "bandwidths")
    @classmethod
    def _listed_once(cls, v: list, info) -> list:  # noqa: ANN001 - pydantic's ValidationInfo
        listed_once(v)
        if info.field_name == "bandwidths" and any(not (h >= 0) for h in v):
            raise ValueError("bandwidths must be >= 0 (0 = no correction)")
        return v


class ExtrapolationConfig(StrictModel):
    """Extrapolate to ``target_n`` (default 10 × the largest pilot size); ``validate`` trains real
    models at target_n on up to ``n_validate`` grid mixtures that fit the pools (``train_at_target``)."""

    method: Literal["power_law", "log_n_map"] = "power_law"
    target_n: int | None = Field(default=None, gt=0)
    train_at_target: bool = True
    n_validate: int = Field(default=11, gt=0)
    reps: int = Field(default=3, gt=0)


class SelectConfig(StrictModel):
    """Safe selection (docs/mixture.md): the predicted optimum (projected gradient ascent; ``budget`` is
    the allowed mean cost per example), the ``top_pilots`` best piloted mixtures, every vertex and uniform
    are finalists; each is trained ``rank_reps`` times at the target size (the largest pilot size when
    ``extrapolation.train_at_target`` is off) and the best mean wins; the winner is trained
    ``confirm_reps`` more times with fresh seeds, and its reported accuracy and ``level`` interval come
    from those draws only."""

    top_pilots: int = Field(default=3, ge=1)
    rank_reps: int = Field(default=3, ge=2)
    confirm_reps: int = Field(default=3, ge=2, description="fresh draws of the winner: its interval needs at least two")
    level: float = Field(default=0.95, gt=0, lt=1)
    steps: int = Field(default=20, gt=0)
    step_size: float = Field(default=0.15, gt=0)
    decay: float = Field(default=0.8, gt=0, le=1)
    budget: float | None = Field(default=None, ge=0)
    use_availability: bool = True
    confirm: bool = True


class MixtureConfig(StrictModel):
    """Optimal-transport mixture estimation over ``pools`` for ``target``."""

    pools: list[PoolConfig] = Field(min_length=2)
    target: TargetConfig
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    ot: OTConfig = Field(default_factory=OTConfig)
    grid_step: float = Field(default=0.1, gt=0, le=0.5)
    pilot_sizes: list[int] = Field(default=[200, 400, 800], min_length=2)
    reps: int = Field(default=3, gt=0)
    seed: int = 0
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    extrapolation: ExtrapolationConfig = Field(default_factory=ExtrapolationConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    plots: bool = True

    @field_validator("pilot_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError(f"pilot_sizes {v} must be positive integers")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"pilot_sizes {v} must be strictly increasing (smallest first)")
        return v

    @model_validator(mode="after")
    def _names(self) -> "MixtureConfig":
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names {names} must be unique")
        return self
