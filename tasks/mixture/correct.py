"""A predictor that uses the pilots it paid for: OT form + kernel smoothing of the pilot residuals.

The OT-based form f(p, OT(p)) (:mod:`tasks.mixture.predictor`) captures the global trend; where it
misses (a vertex whose domain suits the target better than its OT says, say) the pilots show it.
The corrected predictor adds a Nadaraya–Watson smoothing of the residuals r_j = acc_j − f(p_j) of
the piloted mixtures p_j:

.. math:: \\hat a(p) = f(p, OT(p)) + \\frac{\\sum_j k_h(p, p_j)\\, r_j}{\\sum_j k_h(p, p_j) + \\kappa},
          \\qquad k_h(p, p') = \\exp(-\\lVert p - p'\\rVert^2 / 2h^2)

so the surface agrees with the pilots where they exist and falls back to the OT form away from them
(κ shrinks the correction where no pilot is near). The bandwidth h — including h = 0, no correction —
is chosen by held-out error over random splits of the piloted mixtures, like the form itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.mixture.predictor import PredictorFit, fit_predictor, metrics

BANDWIDTHS = (0.0, 0.05, 0.1, 0.2, 0.4)
KAPPA = 0.05


def _smooth(P: np.ndarray, train_P: np.ndarray, resid: np.ndarray, h: float) -> np.ndarray:
    d2 = ((np.atleast_2d(P)[:, None, :] - train_P[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * h * h))
    return (w @ resid) / (w.sum(1) + KAPPA)


@dataclass(frozen=True)
class CorrectedFit:
    """The OT form ``base`` plus the smoothed pilot residuals (bandwidth h; h = 0: no correction).

    Same interface as :class:`PredictorFit` for prediction (``predict``, ``grad``, ``n``, ``form``)."""

    base: PredictorFit
    h: float
    train_P: np.ndarray = field(repr=False)
    resid: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return self.base.n

    @property
    def form(self) -> str:
        return self.base.form if self.h == 0 else f"{self.base.form}+pilots(h={self.h:g})"

    def predict(self, P: np.ndarray, ot: np.ndarray | None = None) -> np.ndarray:
        out = self.base.predict(P, ot)
        if self.h > 0:
            out = out + _smooth(np.asarray(P, dtype=np.float64), self.train_P, self.resid, self.h)
        return out

    def grad(self, p: np.ndarray, ot: float, ot_grad: np.ndarray) -> np.ndarray:
        g = self.base.grad(p, ot, ot_grad)
        if self.h == 0:
            return g
        p = np.asarray(p, dtype=np.float64)
        diff = p[None] - self.train_P  # (G, K)
        w = np.exp(-(diff ** 2).sum(1) / (2 * self.h ** 2))
        dw = -w[:, None] * diff / self.h ** 2  # (G, K)
        s, num = w.sum() + KAPPA, w @ self.resid
        return g + (self.resid @ dw * s - num * dw.sum(0)) / (s * s)


def fit_corrected(form: str, P: np.ndarray, ot: np.ndarray, acc: np.ndarray, h: float, *, n: int = 0, ridge: float = 0.0) -> CorrectedFit:
    """Fit ``form`` to (P, ot, acc) and smooth its residuals with bandwidth h."""
    base = fit_predictor(form, P, ot, acc, n=n, ridge=ridge)
    P = np.asarray(P, dtype=np.float64)
    return CorrectedFit(base, float(h), P.copy(), np.asarray(acc, dtype=np.float64) - base.predict(P, ot))


@dataclass(frozen=True)
class BandwidthChoice:
    """Held-out MAE (accuracy units, mean over pilot sizes and splits) per bandwidth, and the chosen one."""

    h: float
    mae: dict[float, float]


def choose_bandwidth(form: str, P: np.ndarray, ot: np.ndarray, acc_by_size: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                     *, bandwidths: Sequence[float] = BANDWIDTHS, ridge: float = 0.0) -> BandwidthChoice:
    """Bandwidth with the lowest held-out MAE; ``masks`` are boolean train masks over the mixtures.
    Ties go to the smaller bandwidth (h = 0 first: no correction unless it helps)."""
    P = np.asarray(P, dtype=np.float64)
    ot = np.asarray(ot, dtype=np.float64)
    mae: dict[float, float] = {}
    for h in bandwidths:
        errs = []
        for acc in acc_by_size:
            for m in masks:
                if m.sum() < 3 or (~m).sum() == 0:
                    continue
                fit = fit_corrected(form, P[m], ot[m], acc[m], h, ridge=ridge)
                errs.append(metrics(acc[~m], fit.predict(P[~m], ot[~m]))["mae"])
        if errs:
            mae[float(h)] = float(np.mean(errs))
    if not mae:
        return BandwidthChoice(0.0, {})
    best = min(mae, key=lambda h: (round(mae[h], 12), h))
    return BandwidthChoice(best, mae)
