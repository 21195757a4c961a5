"""Label-aware optimal-transport distance between two labelled datasets (OTDD-style), solved by POT.

Ground cost between (x, y) ∈ A and (x', y') ∈ B (Alvarez-Melis & Fusi 2020, eq. 4):

.. math:: d\\big((x,y),(x',y')\\big) = \\lambda_x \\frac{\\lVert x - x' \\rVert^2}{s_x}
          + \\lambda_y \\frac{W(y, y')^2}{s_y}

with W the label distance of :mod:`tasks.mixture.labeldist`. With ``normalize=True`` the scales
s_x, s_y are the mean feature cost and the mean label cost over all pairs (so λ_x = λ_y = 1 weighs
both parts equally on average); they are returned in :class:`CostScale` so other computations
(resample mode, the weighted union) can reuse the same units.

Solvers: ``exact`` (``ot.emd2``, the default up to a few thousand points a side), ``sinkhorn``
(``ot.sinkhorn2``, log-domain; value ⟨C, π_ε⟩) and ``sinkhorn_debiased``, the Sinkhorn divergence
S_ε(a, b) = OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b) (Genevay et al. 2018; Feydy et al. 2019).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot

from tasks.mixture.labeldist import LabelMethod, label_distances, sq_euclidean

Solver = Literal["exact", "sinkhorn", "sinkhorn_debiased"]
SOLVERS = ("exact", "sinkhorn", "sinkhorn_debiased")


@dataclass(frozen=True)
class CostScale:
    """Divisors applied to the feature and label parts of the ground cost (1.0 = raw units)."""

    feature: float = 1.0
    label: float = 1.0


@dataclass(frozen=True)
class OTResult:
    """value: the OT distance; solver/reg: how it was computed; scale: the cost units used."""

    value: float
    solver: str
    reg: float
    scale: CostScale
    n_a: int
    n_b: int


def check_labelled(X: np.ndarray, y: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one labelled sample: 2-d finite X, 1-d integer y of the same length, non-empty."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: features must be a 2-d array (n, d), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 examples)")
    if y is None:
        raise ValueError(f"{name}: label-aware OT needs labels, but this sample has none")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"{name}: labels have shape {y.shape}, expected ({X.shape[0]},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integer codes, got dtype {y.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: features contain NaN or inf")
    return X, y


def label_cost_matrix(W2: np.ndarray, ca: np.ndarray, cb: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Expand class-level W² (ka, kb) to example level (na, nb): entry [i, j] = W²[y_i, y'_j]."""
    ia = np.searchsorted(ca, ya)
    ib = np.searchsorted(cb, yb)
    return W2[ia][:, ib]


def raw_costs(
    Xa: np.ndarray, ya: np.ndarray, Xb: np.ndarray, yb: np.ndarray, *,
    with_labels: bool = True, label_method: LabelMethod = "gaussian", seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled feature cost ‖x − x'‖² and label cost W²(y, y'), each (na, nb) float64."""
    Cx = sq_euclidean(Xa, Xb)
    Cy = np.zeros_like(Cx)
    if with_labels:
        W2, ca, cb = label_distances(Xa, ya, Xb, yb, method=label_method, seed=seed)
        Cy = label_cost_matrix(W2, ca, cb, ya, yb)
    return Cx, Cy


def label_aware_cost(
    Xa: np.ndarray, ya: np.ndarray, Xb: np.ndarray, yb: np.ndarray,  # dataset A, dataset B
    *,
    lambda_x: float = 1.0,
    lambda_y: float = 1.0,
    label_method: LabelMethod = "gaussian",
    normalize: bool = True,
    scale: CostScale | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, CostScale]:
    """Ground-cost matrix (na, nb) float64 between two labelled samples, and the scale used.

    ``scale`` (if given) overrides the normalisation so several cost matrices share units.
    """
    Xa, ya = check_labelled(Xa, ya, "dataset A")
    Xb, yb = check_labelled(Xb, yb, "dataset B")
    if Xa.shape[1] != Xb.shape[1]:
        raise ValueError(f"feature dimensions differ: dataset A has d={Xa.shape[1]}, dataset B has d={Xb.shape[1]}")
    if lambda_x < 0 or lambda_y < 0 or lambda_x + lambda_y == 0:
        raise ValueError(f"lambda_x={lambda_x}, lambda_y={lambda_y} must be >= 0 and not both 0")
    Cx, Cy = raw_costs(Xa, ya, Xb, yb, with_labels=lambda_y > 0, label_method=label_method, seed=seed)
    if scale is None:
        if normalize:
            sx = float(Cx.mean()) or 1.0
            sy = float(Cy.mean()) or 1.0
            scale = CostScale(feature=sx, label=sy)
        else:
            scale = CostScale()
    return lambda_x * Cx / scale.feature + lambda_y * Cy / scale.label, scale


def _solve(a: np.ndarray, b: np.ndarray, C: np.ndarray, solver: str, reg: float, max_iter: int) -> float:
    if solver == "exact":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the result code below says it, as an error
            cost, log = ot.emd2(a, b, C, numItermax=max(max_iter, 10_000_000), log=True)
        if log["result_code"] != 1:  # a network simplex stopped early returns a cost above the optimum
            raise RuntimeError(f"exact OT (ot.emd2) did not reach an optimum on {C.shape[0]} x {C.shape[1]} points "
                               f"({log['warning']})")
        return float(cost)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            return float(ot.sinkhorn2(a, b, C, reg, method="sinkhorn_log", numItermax=max_iter, stopThr=1e-9))
        except UserWarning as w:
            raise RuntimeError(f"Sinkhorn did not converge in max_iter={max_iter} with reg={reg}: raise max_iter or reg ({w})") from None


def ot_distance(
    Xa: np.ndarray, ya: np.ndarray, Xb: np.ndarray, yb: np.ndarray,  # dataset A, dataset B
    *,
    solver: Solver = "exact",
    reg: float = 0.05,
    lambda_x: float = 1.0,
    lambda_y: float = 1.0,
    label_method: LabelMethod = "gaussian",
    normalize: bool = True,
    scale: CostScale | None = None,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    max_iter: int = 10_000,
    seed: int = 0,
) -> OTResult:
    """Label-aware OT distance between dataset A = (Xa, ya) and dataset B = (Xb, yb).

    .. math:: \\mathrm{OT}(A, B) = \\min_{\\pi \\in \\Pi(a, b)} \\langle C, \\pi \\rangle

    Parameters
    ----------
    Xa : (na, d) features, ya : (na,) integer labels; Xb : (nb, d), yb : (nb,).
    solver : "exact" | "sinkhorn" | "sinkhorn_debiased".
    reg : entropic regularisation ε (in units of the normalised cost); ignored by "exact".
    a, b : (na,), (nb,) sample weights (default uniform).

    Examples
    --------
    >>> X = np.array([[0.0], [1.0]]); y = np.array([0, 1])
    >>> round(ot_distance(X, y, X + 1.0, y, lambda_y=0.0, normalize=False).value, 6)
    1.0
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} must be one of {SOLVERS}")
    if solver != "exact" and not reg > 0:
        raise ValueError(f"reg={reg} must be > 0 for solver {solver!r}")
    C, scale = label_aware_cost(
        Xa, ya, Xb, yb, lambda_x=lambda_x, lambda_y=lambda_y, label_method=label_method,
        normalize=normalize, scale=scale, seed=seed,
    )
    na, nb = C.shape
    a = np.full(na, 1.0 / na) if a is None else np.asarray(a, dtype=np.float64)
    b = np.full(nb, 1.0 / nb) if b is None else np.asarray(b, dtype=np.float64)
    if a.shape != (na,) or b.shape != (nb,) or np.any(a < 0) or np.any(b < 0):
        raise ValueError(f"weights must be non-negative with shapes ({na},) and ({nb},), got {a.shape} and {b.shape}")
    if abs(a.sum() - 1) > 1e-6 or abs(b.sum() - 1) > 1e-6:
        raise ValueError(f"weights must each sum to 1 (got {a.sum():.6g} and {b.sum():.6g})")
    value = _solve(a, b, C, solver, reg, max_iter)
    if solver == "sinkhorn_debiased":
        kw = dict(lambda_x=lambda_x, lambda_y=lambda_y, label_method=label_method, scale=scale, seed=seed)
        Caa, _ = label_aware_cost(Xa, ya, Xa, ya, **kw)
        Cbb, _ = label_aware_cost(Xb, yb, Xb, yb, **kw)
        value -= 0.5 * (_solve(a, a, Caa, "sinkhorn", reg, max_iter) + _solve(b, b, Cbb, "sinkhorn", reg, max_iter))
    return OTResult(value=value, solver=solver, reg=0.0 if solver == "exact" else reg, scale=scale, n_a=na, n_b=nb)
