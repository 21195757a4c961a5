"""What a planner run produced; ``storage.plan.save_plan`` writes it in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.plan.predict import ScreenModel
from tasks.plan.space import CandidateSet, PoolOption
from tasks.plan.trials import TrialResult


@dataclass(frozen=True)
class Alternative:
    """A plan, a finalist or a baseline, with its predictions and (validation mode) measurement.

    key : trial key; role : plan | finalist | baseline; name : e.g. best_mixture_unpruned,
    uniform_random_pruning, alone:<pool>, finalist-2; options : per-pool option label; p : (K,);
    counts : (K,) rows taken at N (may sum to < N for a baseline capped by availability or budget);
    ot : OT of the pruned mixture to the target; screen : predictor + power law at N;
    predicted / lo / hi : scaling law on its own pilots, with the reported interval (calibrated:
    the bootstrap interval widened by the held-out extrapolation error); boot_lo / boot_hi : the
    bootstrap-only interval;
    measured / measured_std / n_measured : trainings at N (nan / 0 without validation).
    """

    key: str
    role: str
    name: str
    options: list[str]
    p: list[float]
    counts: list[int]
    ot: float
    screen: float
    predicted: float
    lo: float
    hi: float
    boot_lo: float = float("nan")
    boot_hi: float = float("nan")
    measured: float = float("nan")
    measured_std: float = float("nan")
    n_measured: int = 0
    note: str = ""

    @property
    def contained(self) -> bool | None:
        if not np.isfinite(self.measured):
            return None
        return bool(self.lo <= self.measured <= self.hi)


@dataclass(frozen=True)
class PlanSource:
    """One pool's line of the plan."""

    pool: str
    source: str
    policy: str
    fraction: float
    n_pool: int
    n_available: int
    n_taken: int
    p: float
    cost: float


@dataclass
class PlanOutcome:
    """Everything of one planner run.

    options : per pool, its pruning options; candidates / candidate_ot / candidate_screen : the
    feasible search space with OT (C,) and screened accuracy at N (C,); design : candidate indices
    piloted to fit the predictor; members : (example_id, source_id, row_index, pool) of the plan.
    """

    target_n: int
    pools: list[str]
    sources: list[str]
    costs: list[float]
    budget: float | None
    options: list[list[PoolOption]]
    candidates: CandidateSet
    candidate_ot: np.ndarray
    candidate_screen: np.ndarray
    design: np.ndarray
    screen: ScreenModel
    trials: list[TrialResult]
    alternatives: list[Alternative]
    plan: list[PlanSource]
    members: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def chosen(self) -> Alternative:
        return next(a for a in self.alternatives if a.role == "plan")
