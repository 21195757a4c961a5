"""Performance predictor (Projektor stage 1) and simpler OT forms, chosen by held-out error.

Per pilot size N, accuracy over mixtures p is regressed on features of (p, OT(p)) by (ridge) least
squares. With q = (p_1, …, p_{K−1}) (p_K eliminated since Σp = 1):

* ``projektor`` (Kang et al. 2023, eq. 3):
  acc ≈ Σ_i (b2_i q_i² + b1_i q_i + b0)·OT + Σ_i (c2_i q_i² + c1_i q_i) + c0   (10 coefficients, K=3)
* ``ot``: a + b·OT
* ``ot_linear``: a + b·OT + Σ_i c_i q_i
* ``ot_quadratic``: a + b·OT + c·OT²

Baselines without OT: ``quadratic_p`` (full quadratic in q) and ``nearest_grid`` (the accuracy of
the nearest training mixture). Validation (mixture.md): Projektor's extrapolation split (train on
p_2 < 0.5, test on p_2 ≥ 0.5) and random splits; MAE, RMSE, R².
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.errors import WinnowError

OT_FORMS = ("ot", "ot_linear", "ot_quadratic", "projektor")
BASELINES = ("quadratic_p", "nearest_grid")
ALL_FORMS = OT_FORMS + BASELINES


def _design(form: str, P: np.ndarray, ot: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Design matrix (G, n_coef) and coefficient names for ``form``."""
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    o = np.asarray(ot, dtype=np.float64).reshape(-1)
    q = P[:, :-1]
    k1 = q.shape[1]
    one = np.ones(len(P))
    if form == "ot":
        return np.column_stack([one, o]), ["a", "b_ot"]
    if form == "ot_linear":
        return np.column_stack([one, o, q]), ["a", "b_ot"] + [f"c_p{i + 1}" for i in range(k1)]
    if form == "ot_quadratic":
        return np.column_stack([one, o, o * o]), ["a", "b_ot", "c_ot2"]
    if form == "projektor":
        cols = [one, o] + [q[:, i] * o for i in range(k1)] + [q[:, i] ** 2 * o for i in range(k1)]
        cols += [q[:, i] for i in range(k1)] + [q[:, i] ** 2 for i in range(k1)]
        names = ["c0", "b0"] + [f"b1_p{i + 1}" for i in range(k1)] + [f"b2_p{i + 1}" for i in range(k1)]
        names += [f"c1_p{i + 1}" for i in range(k1)] + [f"c2_p{i + 1}" for i in range(k1)]
        return np.column_stack(cols), names
    if form == "quadratic_p":
        cols, names = [one], ["c0"]
        for i in range(k1):
            cols.append(q[:, i]); names.append(f"c_p{i + 1}")
        for i in range(k1):
            for j in range(i, k1):
                cols.append(q[:, i] * q[:, j]); names.append(f"c_p{i + 1}p{j + 1}")
        return np.column_stack(cols), names
    raise ValueError(f"predictor form={form!r} must be one of {ALL_FORMS}")


def _design_jac(form: str, p: np.ndarray, ot: float) -> tuple[np.ndarray, np.ndarray]:
    """∂features/∂p (n_coef, K) (p_K enters only through the OT term) and ∂features/∂OT (n_coef,)."""
    p = np.asarray(p, dtype=np.float64)
    q = p[:-1]
    k1, K = q.size, p.size
    if form == "ot":
        dp, do = np.zeros((2, K)), np.array([0.0, 1.0])
    elif form == "ot_linear":
        dp = np.zeros((2 + k1, K)); dp[2:, :k1] = np.eye(k1)
        do = np.r_[0.0, 1.0, np.zeros(k1)]
    elif form == "ot_quadratic":
        dp, do = np.zeros((3, K)), np.array([0.0, 1.0, 2.0 * ot])
    elif form == "projektor":
        n = 2 + 4 * k1
        dp, do = np.zeros((n, K)), np.zeros(n)
        do[1] = 1.0
        for i in range(k1):
            do[2 + i], do[2 + k1 + i] = q[i], q[i] ** 2
            dp[2 + i, i] = ot
            dp[2 + k1 + i, i] = 2 * q[i] * ot
            dp[2 + 2 * k1 + i, i] = 1.0
            dp[2 + 3 * k1 + i, i] = 2 * q[i]
    elif form == "quadratic_p":
        rows = [np.zeros(K)]
        for i in range(k1):
            r = np.zeros(K); r[i] = 1.0; rows.append(r)
        for i in range(k1):
            for j in range(i, k1):
                r = np.zeros(K); r[i] += q[j]; r[j] += q[i]; rows.append(r)
        dp = np.array(rows)
        do = np.zeros(len(rows))
    else:
        raise ValueError(f"form {form!r} has no gradient")
    return dp, do


@dataclass(frozen=True)
class PredictorFit:
    """A fitted predictor for one pilot size.

    coef : (n_coef,) with names coef_names; for ``nearest_grid`` the training grid and accuracies
    are kept instead. train_rmse in accuracy units.
    """

    form: str
    n: int
    coef: np.ndarray
    coef_names: list[str]
    train_rmse: float
    ridge: float = 0.0
    train_P: np.ndarray | None = field(default=None, repr=False)
    train_acc: np.ndarray | None = field(default=None, repr=False)

    def predict(self, P: np.ndarray, ot: np.ndarray | None = None) -> np.ndarray:
        """Predicted accuracy (G,) for mixtures P (G, K) with OT values ot (G,)."""
        P = np.atleast_2d(np.asarray(P, dtype=np.float64))
        if self.form == "nearest_grid":
            d = np.abs(P[:, None, :] - self.train_P[None]).sum(-1)
            return self.train_acc[d.argmin(1)]
        if ot is None and self.form in OT_FORMS:
            raise ValueError(f"form {self.form!r} needs OT values to predict")
        X, _ = _design(self.form, P, np.zeros(len(P)) if ot is None else ot)
        return X @ self.coef

    def grad(self, p: np.ndarray, ot: float, ot_grad: np.ndarray) -> np.ndarray:
        """∂acc/∂p (K,) at mixture p, given OT(p) and ∂OT/∂p (chain rule through the OT terms)."""
        dp, do = _design_jac(self.form, p, ot)
        return self.coef @ dp + (self.coef @ do) * np.asarray(ot_grad, dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.coef_names, self.coef)}


def fit_predictor(form: str, P: np.ndarray, ot: np.ndarray | None, acc: np.ndarray, *, n: int = 0, ridge: float = 0.0) -> PredictorFit:
    """Least-squares (ridge on all but the intercept) fit of ``form`` to accuracies acc (G,) at mixtures P (G, K)."""
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    acc = np.asarray(acc, dtype=np.float64)
    if len(P) != len(acc):
        raise ValueError(f"{len(P)} mixtures but {len(acc)} accuracies")
    if not np.all(np.isfinite(acc)):
        raise RuntimeError("accuracies contain NaN (missing pilots?)")
    if form == "nearest_grid":
        return PredictorFit(form=form, n=n, coef=np.zeros(0), coef_names=[], train_rmse=0.0, train_P=P.copy(), train_acc=acc.copy())
    if form in OT_FORMS and ot is None:
        raise ValueError(f"form {form!r} needs OT values")
    X, names = _design(form, P, np.zeros(len(P)) if ot is None else ot)
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be >= 0")
    if ridge > 0:
        R = np.sqrt(ridge) * np.eye(X.shape[1])
        R[0, 0] = 0.0
        coef = np.linalg.lstsq(np.vstack([X, R]), np.r_[acc, np.zeros(X.shape[1])], rcond=None)[0]
    else:
        coef = np.linalg.lstsq(X, acc, rcond=None)[0]
    rmse = float(np.sqrt(np.mean((X @ coef - acc) ** 2)))
    return PredictorFit(form=form, n=n, coef=coef, coef_names=names, train_rmse=rmse, ridge=ridge)


def metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² (1 − SSE/SST; nan when the held-out targets are constant)."""
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    r = y - yhat
    sst = float(((y - y.mean()) ** 2).sum())
    return {"mae": float(np.abs(r).mean()), "rmse": float(np.sqrt((r * r).mean())),
            "r2": float(1 - (r * r).sum() / sst) if sst > 0 else float("nan")}


def projektor_split(P: np.ndarray, coord: int = 1, threshold: float = 0.5) -> np.ndarray:
    """Boolean train mask of Projektor's extrapolation split: p_{coord+1} < threshold."""
    return np.asarray(P)[:, coord] < threshold - 1e-9


def random_splits(n_points: int, n_test: int, n_splits: int, seed: int = 0) -> list[np.ndarray]:
    """``n_splits`` boolean train masks, each holding out ``n_test`` random mixtures."""
    if not 0 < n_test < n_points:
        raise WinnowError(f"n_test={n_test} must be in (0, {n_points})")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        m = np.ones(n_points, dtype=bool)
        m[rng.choice(n_points, n_test, replace=False)] = False
        out.append(m)
    return out


@dataclass(frozen=True)
class ValidationRow:
    """Held-out error of one form on one split for one pilot size (metrics in accuracy units)."""

    form: str
    split: str
    n: int
    mae: float
    rmse: float
    r2: float
    n_train: int
    n_test: int


def validate_forms(
    P: np.ndarray,
    ot: np.ndarray,
    acc: np.ndarray,
    splits: dict[str, Sequence[np.ndarray]],
    *,
    forms: Sequence[str] = ALL_FORMS,
    n: int = 0,
    ridge: float = 0.0,
) -> list[ValidationRow]:
    """Fit each form on every train mask and score the held-out mixtures; metrics pooled per split
    family (all held-out predictions of a family's masks together)."""
    rows = []
    for form in forms:
        for name, masks in splits.items():
            ys, yh, ntr = [], [], []
            for m in masks:
                if m.sum() == 0 or (~m).sum() == 0:
                    continue
                fit = fit_predictor(form, P[m], ot[m], acc[m], n=n, ridge=ridge)
                ys.append(acc[~m]); yh.append(fit.predict(P[~m], ot[~m])); ntr.append(int(m.sum()))
            if not ys:
                continue
            mt = metrics(np.concatenate(ys), np.concatenate(yh))
            rows.append(ValidationRow(form=form, split=name, n=n, n_train=int(np.mean(ntr)),
                                      n_test=int(np.mean([len(y) for y in ys])), **mt))
    return rows


def choose_form(rows: Sequence[ValidationRow], candidates: Sequence[str] = OT_FORMS) -> str:
    """The OT form with the lowest mean held-out MAE over all splits and pilot sizes (fewer coefficients
    win ties); the default predictor is whatever validates best, never a fixed form."""
    scores = {}
    for f in candidates:
        maes = [r.mae for r in rows if r.form == f and np.isfinite(r.mae)]
        if maes:
            scores[f] = float(np.mean(maes))
    if not scores:
        raise ValueError("no validation results to choose a predictor form from")
    order = {f: i for i, f in enumerate(OT_FORMS)}
    return min(scores, key=lambda f: (round(scores[f], 12), order.get(f, 99)))
