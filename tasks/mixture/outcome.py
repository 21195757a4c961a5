"""The results of one mixture study, as handed from the flow to storage (plain data, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.mixture.pilots import PilotResult
from tasks.mixture.predictor import PredictorFit, ValidationRow
from tasks.mixture.select import SelectionResult
from tasks.mixture.weighted import SweepResult


@dataclass(frozen=True)
class SweepRecord:
    """One OT sweep over the grid. label: 'weighted' | 'weighted-exact' | 'resample' ...; n: resample N."""

    label: str
    sweep: SweepResult
    n: int | None = None


@dataclass(frozen=True)
class ExtrapolationRow:
    """Predicted accuracy at n_target for one grid mixture by one method, and the measured one (nan if not trained)."""

    mixture_id: int
    p: tuple[float, ...]
    n_target: int
    method: str
    source: str  # "pilots" (measured pilot medians) | "predictor" (stage-1 predictions)
    predicted: float
    measured: float


@dataclass(frozen=True)
class FinalistRecord:
    """One finalist of the safe selection: why it is one, its mean over the rank draws, its reported
    accuracy at N with interval (the chosen one's from its confirm draws) and its validation mean."""

    name: str
    reasons: tuple[str, ...]
    p: tuple[float, ...]
    rank_mean: float
    predicted: float
    lo: float
    hi: float
    measured: float
    chosen: bool


@dataclass(frozen=True)
class SelectionRecord:
    """The chosen mixture, with real-training confirmation when run (nan otherwise).

    ``result`` holds the chosen p with its confirmed accuracy and interval (and the predictor's ascent
    path); best_grid_* : the best measured alternative (validated grid points and finalists);
    coverage_* : measured alternatives inside their ``level`` interval."""

    result: SelectionResult
    form: str
    extrapolation: str
    measured: float = float("nan")
    best_grid_p: tuple[float, ...] | None = None
    best_grid_measured: float = float("nan")
    best_pilot_grid_p: tuple[float, ...] | None = None
    best_pilot_grid_measured: float = float("nan")
    finalists: list[FinalistRecord] = field(default_factory=list)
    coverage_inside: int = 0
    coverage_total: int = 0
    level: float = 0.95

    @property
    def regret(self) -> float:
        return float(self.best_grid_measured - self.measured)

    @property
    def pilot_pick_regret(self) -> float:
        return float(self.best_grid_measured - self.best_pilot_grid_measured)


@dataclass(frozen=True)
class PoolInfo:
    name: str
    source: str
    n_rows: int
    class_counts: dict[str, int]


@dataclass
class MixtureOutcome:
    """Everything a mixture run produced; ``storage.mixture.save_mixture`` writes it in one transaction."""

    pools: list[PoolInfo]
    grid: np.ndarray
    sweeps: list[SweepRecord] = field(default_factory=list)
    pilots: list[PilotResult] = field(default_factory=list)
    target_runs: list[PilotResult] = field(default_factory=list)
    fits: list[PredictorFit] = field(default_factory=list)
    chosen_form: str = ""
    validation: list[ValidationRow] = field(default_factory=list)
    extrapolations: list[ExtrapolationRow] = field(default_factory=list)
    selection: SelectionRecord | None = None
    plots: dict[str, str] = field(default_factory=dict)
    final_runs: dict[str, list[PilotResult]] = field(default_factory=dict)  # rank / confirm trainings of the finalists
