"""The ``plan:`` section: the joint data planner (per-source pruning × mixture for a target size N).

The planner reuses the ``mixture:`` section for its pools, target, feature space, OT settings and
probe; ``plan:`` says what to search (pruning policies, keep fractions, the mixture grid), under
which constraints (target size, cost budget), and how much to train (pilots, confirmation,
validation). See docs/planner.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs._model import StrictModel, listed_once

PLAN_KEEPS = ("hard", "easy")
PLAN_BALANCES = ("none", "equal", "proportional")


def parse_policy(text: str) -> tuple[str, str, str]:
    """``metric[:keep[:balance]]`` -> (metric, keep, balance). ``random:equal`` is shorthand for
    ``random:hard:equal`` (a class-balanced random subset); keep defaults to hard, balance to none."""
    parts = [p.strip() for p in str(text).split(":")]
    if not parts[0]:
        raise ValueError(f"policy {text!r}: use metric[:keep[:balance]], e.g. 'ssp:hard' or 'random:equal'")
    metric = parts[0]
    rest = parts[1:]
    if metric == "random" and len(rest) == 1 and rest[0] in PLAN_BALANCES:
        rest = ["hard", rest[0]]
    keep = rest[0] if rest else "hard"
    balance = rest[1] if len(rest) > 1 else "none"
    if len(rest) > 2:
        raise ValueError(f"policy {text!r}: use metric[:keep[:balance]]")
    from tasks.prune.registry import REGISTRY

    if metric not in REGISTRY:
        raise ValueError(f"policy {text!r}: unknown metric {metric!r} (known: {', '.join(REGISTRY)})")
    if keep not in PLAN_KEEPS:
        raise ValueError(f"policy {text!r}: keep must be one of {', '.join(PLAN_KEEPS)}, got {keep!r}")
    if balance not in PLAN_BALANCES:
        raise ValueError(f"policy {text!r}: balance must be one of {', '.join(PLAN_BALANCES)}, got {balance!r}")
    return metric, keep, balance


class PlanValidateConfig(StrictModel):
    """Validation mode: train at target_n on the plan and on the baselines, ``reps`` draws each."""

    enabled: bool = True
    reps: int = Field(default=3, gt=0)


class PlanConfig(StrictModel):
    """Joint search over per-pool pruning (policy, keep fraction) and the mixture p for ``target_n``.

    Constraints: a pool pruned to fraction f offers round(f·n_i) examples and a plan may not take more
    (availability); with pool costs (``mixture.pools[].cost``) the N examples may cost at most
    ``budget`` in total and at most ``source_budget[pool]`` from one pool.
    """

    target_n: int = Field(gt=0, description="training examples the plan selects (N)")
    policies: list[str] = Field(default_factory=lambda: ["ssp:hard", "ssp:easy", "random:equal"],
                                description="pruning policies, metric[:keep[:balance]] (balance by class)")
    fractions: list[float] = Field(default_factory=lambda: [0.5, 0.25],
                                   description="keep fractions tried with every policy (no pruning is always a candidate)")
    grid_step: float = Field(default=0.2, gt=0, le=0.5, description="mixture grid step (0.2: 21 mixtures for 3 pools)")
    budget: float | None = Field(default=None, gt=0, description="total cost of the N examples (pool costs)")
    source_budget: dict[str, float] | None = Field(default=None, description="max cost taken from a pool, by pool name")
    reveal: int = Field(default=500, gt=0, description="revealed examples per pool in the planner's OT union")
    reg: float | None = Field(default=None, gt=0, description="Sinkhorn epsilon for the candidates' OT (None: mixture.ot.reg); "
                              "ranking thousands of candidates needs less precision than the mixture sweep")
    metric_k: int = Field(default=10, gt=1, description="k-means clusters for the label-free metrics")
    pilot_sizes: list[int] = Field(default_factory=lambda: [200, 400, 800], min_length=2)
    design: int = Field(default=40, ge=0, description="pruned candidates piloted to fit the predictor (plus every unpruned grid mixture)")
    reps: int = Field(default=2, gt=0, description="repetitions of each design pilot")
    finalists: int = Field(default=3, gt=0, description="top predicted candidates confirmed by their own pilots")
    top_pilots: int = Field(default=2, ge=1, description="best piloted design candidates that are finalists too "
                            "(a candidate whose own pilots beat the others is never screened out)")
    final_reps: int = Field(default=2, ge=2, description="trainings at target_n of every finalist and baseline; the "
                            "best mean becomes the plan (baselines are eligible)")
    final_confirm_reps: int = Field(default=3, ge=2, description="fresh trainings at target_n of the chosen plan (>= 2): its "
                                    "reported accuracy and interval come from these draws only")
    confirm_reps: int = Field(default=4, gt=1, description="repetitions per size of each confirmation pilot")
    scaling_form: Literal["m1", "m2"] = Field(default="m1", description="scaling law fitted to confirmation pilots")
    bootstrap: int = Field(default=500, ge=50, description="bootstrap replicates for the interval at N")
    level: float = Field(default=0.95, gt=0, lt=1)
    interval: Literal["calibrated", "bootstrap"] = Field(
        default="calibrated", description="bootstrap: the scaling fit's bootstrap over pilots; calibrated: widened by the "
                                          "law's held-out extrapolation error on the same pilots (docs/planner.md)")
    max_epochs: float = Field(default=1.0, ge=1, le=100, description="times a pruned pool's examples may be seen to "
                              "reach target_n (1: never repeated). Forecasts count a repeated pool at its effective size "
                              "(repeats add nothing new to the project's full-batch probe), and the plan says how often "
                              "each pool is seen")
    max_candidates: int = Field(default=50_000, gt=0)
    validation: PlanValidateConfig = Field(default_factory=PlanValidateConfig)
    seed: int = Field(default=0, ge=0)

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        return listed_once(v, key=parse_policy)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for f in v:
            if not 0 < f < 1:
                raise ValueError(f"keep fraction {f} must be in (0, 1) (no pruning, 1.0, is always a candidate)")
        if len(set(v)) != len(v):
            raise ValueError(f"fractions {v} repeat a value")
        return sorted(v, reverse=True)

    @field_validator("pilot_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"pilot_sizes {v} must be positive and strictly increasing")
        return v

    @field_validator("source_budget")
    @classmethod
    def _source_budget(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and any(not x > 0 for x in v.values()):
            raise ValueError(f"source_budget {v} values must be > 0")
        return v

    @model_validator(mode="after")
    def _sizes_below_n(self) -> "PlanConfig":
        if self.pilot_sizes[-1] >= self.target_n:
            raise ValueError(f"pilot_sizes {self.pilot_sizes} must stay below target_n={self.target_n} (pilots are the cheap runs)")
        return self

    def policy_keys(self) -> list[tuple[str, str, str]]:
        return [parse_policy(p) for p in self.policies]
