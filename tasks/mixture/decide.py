"""Safe selection: the predictor proposes, measurements decide (mixture stage and planner).

The final choice is made among a small set of **finalists** — the predicted optimum(s), the best
piloted mixtures, every vertex (each pool alone), uniform and (planner) the best unpruned mixture —
by trainings at the largest affordable size (``rank`` draws). The chosen alternative is then
trained again with fresh seeds (``confirm`` draws): its reported accuracy and interval come only
from those, never from the draws that chose it (no winner's curse). Validation trainings
(``validate`` draws, when enabled) are a third independent set, so the interval's coverage can be
checked against them.

Intervals live in logit space (accuracy a ↦ log(a / (1 − a))), so they never leave [0, 1]:
a measurement interval is the mean logit of the confirm draws ± t_{df} · s · sqrt(1/R + 1/R_v),
with s the within-alternative standard deviation of logit accuracies pooled over every finalist's
rank draws (df = Σ (R_i − 1)), or over the alternative's own draws when those vary more
(:func:`interval_sd`), and R_v the draws a later measurement averages — a prediction interval for
that measurement, not only for the mean. Extrapolated predictions use log-error
intervals, err · exp(±w) (see :func:`log_error_interval`), which stay in [0, 1] as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LOGIT_EPS = 1e-3
ERR_FLOOR = 1e-4


def logit(a: np.ndarray | float) -> np.ndarray:
    a = np.clip(np.asarray(a, dtype=np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(a / (1 - a))


def expit(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Finalist:
    """One alternative of the final choice. key : its trainings' key; reasons : why it is a finalist
    (predicted-optimum, best-pilot-k, vertex:<pool>, uniform, best-unpruned, ...), first one = name."""

    key: str
    reasons: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.reasons[0]


def merge_finalists(items: Sequence[tuple[str, str]]) -> list[Finalist]:
    """(key, reason) pairs → finalists, one per key in first-seen order, reasons merged."""
    order: list[str] = []
    reasons: dict[str, list[str]] = {}
    for key, why in items:
        if key not in reasons:
            order.append(key)
            reasons[key] = []
        if why not in reasons[key]:
            reasons[key].append(why)
    return [Finalist(k, tuple(reasons[k])) for k in order]


def pooled_logit_sd(draws: Sequence[np.ndarray]) -> tuple[float, int]:
    """Within-alternative SD of logit accuracies pooled over alternatives, and its degrees of freedom."""
    ss, df = 0.0, 0
    for d in draws:
        z = logit(np.asarray(d, dtype=np.float64))
        if z.size > 1:
            ss += float(((z - z.mean()) ** 2).sum())
            df += z.size - 1
    return (float(np.sqrt(ss / df)) if df else float("nan")), df


def interval_sd(own: Sequence[np.ndarray], everyone: Sequence[np.ndarray]) -> tuple[float, int]:
    """The SD (and df) for one alternative's interval: the pooled SD over every alternative's draws, or
    over its own draws (``own``: e.g. its rank and confirm draws) when that is larger — variance
    differs between mixtures, and a pooled SD alone under-covered the noisier ones."""
    s_all, df_all = pooled_logit_sd(everyone)
    s_own, df_own = pooled_logit_sd(own)
    if df_own and (not df_all or s_own > s_all):
        return s_own, df_own
    return s_all, df_all


def snap(lo: float, hi: float) -> tuple[float, float]:
    """Interval ends within LOGIT_EPS of 0 or 1 become 0 or 1: logit clipping maps [1 − ε, 1] to one
    point (and a finite evaluation set measures 100% exactly), so an end there covers the whole band."""
    return (0.0 if lo <= LOGIT_EPS * 1.0001 else float(lo)), (1.0 if hi >= 1 - LOGIT_EPS * 1.0001 else float(hi))


def measurement_interval(draws: np.ndarray, sd: float, df: int, *, level: float = 0.95, n_future: int = 1) -> tuple[float, float, float]:
    """(estimate, lo, hi) of accuracy from independent draws: the back-transformed mean logit with a
    prediction interval for a future mean of ``n_future`` draws. [0, 1] without a pooled SD (df = 0)."""
    from scipy.stats import t as student_t

    d = np.asarray(draws, dtype=np.float64)
    if d.size == 0:
        raise ValueError("a measurement interval needs at least one draw")
    z = float(logit(d).mean())
    est = float(expit(z))
    if df < 1 or not np.isfinite(sd):
        return est, 0.0, 1.0
    half = float(student_t.ppf(0.5 + level / 2, df)) * sd * np.sqrt(1.0 / d.size + 1.0 / max(n_future, 1))
    return (est, *snap(float(expit(z - half)), float(expit(z + half))))


def log_error_interval(pred: np.ndarray | float, w: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] accuracy for predicted accuracy ``pred`` with half-width ``w`` in log error:
    err · exp(±w), err = 1 − pred; always inside [0, 1]."""
    err = np.clip(1.0 - np.asarray(pred, dtype=np.float64), ERR_FLOOR, 1.0)
    w = np.asarray(w, dtype=np.float64)
    lo, hi = 1.0 - np.minimum(err * np.exp(w), 1.0), 1.0 - err * np.exp(-w)
    return np.where(lo <= LOGIT_EPS, 0.0, lo), np.where(hi >= 1 - LOGIT_EPS, 1.0, hi)


def extrapolation_halfwidth(residuals: np.ndarray, level: float, n: float, n_max: float, n_prev: float) -> float:
    """Half-width in log error of a prediction at ``n`` from pilots up to ``n_max``: the level-quantile of
    held-out one-step residuals (largest pilot size predicted from the smaller ones) per unit of
    log-distance, times the distance log(n / n_max) / log(n_max / n_prev), never below one step."""
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("inf")
    steps = max(1.0, float(np.log(n / n_max) / np.log(n_max / n_prev))) if n > n_max else 1.0
    return float(np.quantile(r, level)) * steps


def choose_by_draws(rank: Mapping[str, np.ndarray], order: Sequence[str] | None = None) -> str:
    """The key with the highest mean rank-draw accuracy (the first in ``order`` on a tie)."""
    keys = list(order) if order is not None else list(rank)
    keys = [k for k in keys if k in rank and np.asarray(rank[k]).size]
    if not keys:
        raise ValueError("no finalist has rank draws to choose from")
    return max(keys, key=lambda k: (float(np.mean(rank[k])), -keys.index(k)))


@dataclass(frozen=True)
class Coverage:
    """How many measured alternatives fell inside their reported interval."""

    inside: int
    total: int

    @property
    def rate(self) -> float:
        return self.inside / self.total if self.total else float("nan")

    def line(self, level: float) -> str:
        if not self.total:
            return "interval coverage: nothing measured"
        return (f"interval coverage: {self.inside}/{self.total} measured alternatives inside their "
                f"{int(round(100 * level))}% interval ({100 * self.rate:.0f}%)")


def coverage(rows: Sequence[tuple[float, float, float]]) -> Coverage:
    """rows of (lo, hi, measured); rows whose measurement is nan are skipped."""
    got = [(lo <= m <= hi) for lo, hi, m in rows if np.isfinite(m)]
    return Coverage(int(sum(got)), len(got))
