"""Registry of scaling-law forms: each form is one declarative :class:`Form` entry.

A form predicts ``log y`` from its *fit coordinates* ``theta`` (positive constants enter as their
logarithm, so ``A = exp(a)``; exponents are fitted as themselves, inside box bounds) and returns the
Jacobian columns ``d log y / d theta_j`` analytically. Every function is batched over starts:
``theta`` has shape ``(S, p)``, the data ``x`` (and ``x2``) shape ``(n,)``, and ``log_y`` returns an
``(S, n)`` array plus ``p`` arrays broadcastable to ``(S, n)``.

Forms (x = data size, parameters, steps or compute; see /work/shared/design/scaling.md):

.. math::

    \\text{m1}:\\; y = B x^{-c} \\qquad
    \\text{m2}:\\; y = E + B x^{-c} \\qquad
    \\text{pow4}:\\; y = E + B (x + d)^{-c}

    \\text{bnsl}:\\; y = a + b x^{-c_0} \\left(1 + (x / d_1)^{1/f_1}\\right)^{-c_1 f_1}

    \\text{chinchilla}:\\; L(N, D) = E + A N^{-\\alpha} + B D^{-\\beta}

    \\text{gadre}:\\; L(N, D) = E + (a M^{\\eta} + b M^{-\\eta}) C^{-\\eta},\\; M = D/N,\\; C = 6ND

    \\text{downstream}:\\; \\mathrm{Err}(L) = \\varepsilon - k \\exp(-\\gamma L)

    \\text{data\\_constrained}:\\; L(N, D, U) = E + A N'^{-\\alpha} + B D'^{-\\beta},\\quad
    D' = U + U R^*_D (1 - e^{-R_D / R^*_D}),\\; R_D = \\max(D/U - 1, 0)

    N' = U_N + U_N R^*_N (1 - e^{-R_N / R^*_N}),\\; U_N = \\min(N, N_{opt}(U)),\\; R_N = N / U_N - 1

    \\text{data\\_constrained\\_ot}:\\; \\text{gadre with } N \\to N',\\, D \\to D'

References: Hestness et al. 2017 (m1, m2); pow4 is the offset power law of the learning-curve literature
(LCDB's "pow4"; the form Zhai et al. 2022 fit to ViT scaling), not one of Alabdulmohsin et al. 2022's
estimators M1-M4 (M4, implicit in y, is not offered); Caballero et al. 2022
(BNSL); Hoffmann et al. 2022 and Besiroglu et al. 2024 (Chinchilla approach 3, log-sum-exp
parameterisation); Gadre et al. 2024 (over-training, Eq. 4, and downstream error, Eq. 5);
Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (data_constrained: Eqs. 5-7;
U = unique tokens, D = tokens seen, R = repetitions beyond the first; they report R*_D ~ 15.4,
R*_N ~ 5.3).

Three-variable forms (N, D, U) take ``x = N`` and ``x2`` of shape ``(n, 2)`` holding ``[D, U]``
(rows align with ``x``, so boolean masks on the first axis select points of every variable).

Adding a form: write its ``log_y`` (value and Jacobian), its initialisation grid, and one
``_register(Form(...))`` line. ``tests/test_scaling_forms.py`` checks every registered form's
Jacobian against finite differences and its exact recovery from noiseless data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError

Array = np.ndarray
LogYFn = Callable[[Array, Array, "Array | None"], tuple[Array, list[Array]]]
GridFn = Callable[[Array, "Array | None", Array], Array]
TermsFn = Callable[[Array, "Array | None"], Array]

_BIG = 60.0  # bound on log-coefficients: exp(60) ~ 1e26 covers raw token counts to the power 2


@dataclass(frozen=True)
class Param:
    """One fitted parameter.

    ``name`` is the reported (natural) name; ``log=True`` means the fit coordinate is ``log(value)``
    (value > 0). ``lower``/``upper`` bound the *fit coordinate*.
    """

    name: str
    log: bool
    lower: float = -np.inf
    upper: float = np.inf
    doc: str = ""


@dataclass(frozen=True)
class Extends:
    """A form whose first parameters are those of a simpler ``base`` form (e.g. data_constrained
    extends chinchilla by R*_D, R*_N). The fitter adds starts: ``base`` fitted to ``(x, x2_b, y)`` for
    each ``x2_b`` in ``inputs(x2)``, its best solution crossed with the rows of ``extra``."""

    base: str
    inputs: Callable[["Array | None"], list[Array]]
    extra: Array


@dataclass(frozen=True)
class Form:
    """A scaling-law form: parameters, bounds, batched ``log y`` with Jacobian, start grid.

    ``lse_terms`` (optional) declares that ``log y`` is a log-sum-exp of terms *linear* in the fit
    coordinates: ``lse_terms(x, x2)`` returns ``F`` of shape ``(T, n, p)`` with
    ``log y_i = log sum_j exp(F[j, i] @ theta)`` (term 0 is the anchor, usually the floor ``E``). It
    must agree with ``log_y``; the fitter then evaluates the objective and its gradient in one fused
    pass (:func:`tasks.scaling.fit.huber_objective`) instead of going through ``log_y``.
    """

    name: str
    formula: str
    params: tuple[Param, ...]
    n_vars: int
    log_y: LogYFn
    grid: GridFn
    x_names: tuple[str, ...] = ("x",)
    lse_terms: TermsFn | None = None
    extends: "Extends | None" = None
    # +1: a larger x is a larger model (N, D, compute); -1: a smaller x is (downstream: x is the model's
    # loss). Validation holds out the "largest scales" in this direction, and the last-value forecast
    # is y at the largest one.
    scale_sign: int = 1

    @property
    def p(self) -> int:
        return len(self.params)

    @property
    def names(self) -> list[str]:
        return [q.name for q in self.params]

    @property
    def lower(self) -> Array:
        return np.array([q.lower for q in self.params], dtype=np.float64)

    @property
    def upper(self) -> Array:
        return np.array([q.upper for q in self.params], dtype=np.float64)

    @property
    def is_log(self) -> Array:
        return np.array([q.log for q in self.params], dtype=bool)

    def to_natural(self, theta: Array) -> Array:
        """Fit coordinates ``(..., p)`` -> natural parameter values ``(..., p)``."""
        theta = np.asarray(theta, dtype=np.float64)
        return np.where(self.is_log, np.exp(np.where(self.is_log, theta, 0.0)), theta)

    def from_natural(self, values: dict[str, float] | Array) -> Array:
        """Natural values (dict by name or ``(..., p)`` array) -> fit coordinates."""
        if isinstance(values, dict):
            missing = [n for n in self.names if n not in values]
            if missing:
                raise ValueError(f"form {self.name!r} needs parameters {self.names}; missing {missing}")
            values = np.array([values[n] for n in self.names], dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.is_log, np.log(np.where(self.is_log, values, 1.0)), values)

    def predict(self, theta: Array, x: Array, x2: Array | None = None) -> Array:
        """``y`` at ``x`` (and ``x2``) for one ``(p,)`` or many ``(S, p)`` parameter vectors."""
        theta = np.asarray(theta, dtype=np.float64)
        single = theta.ndim == 1
        x = np.asarray(x, dtype=np.float64)
        x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
        with np.errstate(all="ignore"):
            ly, _ = self.log_y(np.atleast_2d(theta), x, x2)
            y = np.exp(ly)
        return y[0] if single else y


# ----------------------------------------------------------------------------- helpers


def _lse(anchor: Array, *terms: Array) -> tuple[Array, list[Array]]:
    """``log(exp(anchor) + sum exp(terms))`` and its weights (d/d anchor, d/d term_i).

    ``anchor`` is the floor term, an ``(S, 1)`` per-row constant; the sum is shifted by it. Shifted
    exponents are clipped to [-700, 700]: beyond that the floor (or a term) is e^700 times smaller
    than another term, far outside any fit worth having, and clipping keeps exp out of its slow
    subnormal/overflow paths (~40x slower for -745..-708 in numpy).
    """
    ps = []
    for t in terms:
        d = t - anchor
        np.clip(d, -700.0, 700.0, out=d)
        np.exp(d, out=d)
        ps.append(d)
    total = 1.0 + ps[0]
    for p in ps[1:]:
        total += p
    out = np.log(total)
    out += anchor
    inv = np.reciprocal(total, out=total)
    return out, [inv] + [p * inv for p in ps]


def _softplus(z: Array) -> Array:
    return np.logaddexp(0.0, z)


def _sigmoid(z: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _col(theta: Array, j: int) -> Array:
    return theta[:, j : j + 1]


def _grid(*axes: list[float] | Array) -> Array:
    return np.array(list(itertools.product(*axes)), dtype=np.float64)


def _floor_fracs(y: Array) -> Array:
    """Candidate floors E as fractions of the smallest observation (tiny first = 'no floor')."""
    return np.array([1e-4, 0.25, 0.5, 0.75, 0.9, 0.98]) * float(np.min(y))


def _anchor(x: Array, y: Array) -> tuple[float, float]:
    """The point at the smallest x (mean y there): starts pass through it."""
    i = x == np.min(x)
    return float(np.min(x)), float(np.mean(y[i]))


EXPONENTS = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0])

# ----------------------------------------------------------------------------- m1


def _m1_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    lx = np.log(x)[None, :]
    ly = _col(theta, 0) - _col(theta, 1) * lx
    return ly, [np.ones_like(ly), -np.broadcast_to(lx, ly.shape)]


def _m1_grid(x: Array, x2: Array | None, y: Array) -> Array:
    x0, y0 = _anchor(x, y)
    return np.array([[np.log(y0) + c * np.log(x0), c] for c in EXPONENTS])


# ----------------------------------------------------------------------------- m2


def _m2_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    lx = np.log(x)[None, :]
    e, b, c = _col(theta, 0), _col(theta, 1), _col(theta, 2)
    ly, (w_e, w_b) = _lse(e, b - c * lx)
    return ly, [w_e, w_b, -w_b * lx]


def _m2_grid(x: Array, x2: Array | None, y: Array) -> Array:
    x0, y0 = _anchor(x, y)
    rows = []
    for c, E in itertools.product(EXPONENTS, _floor_fracs(y)):
        b0 = np.log(max(y0 - E, 1e-12 * y0)) + c * np.log(x0)
        for db in (-1.0, 0.0, 1.0):
            rows.append([np.log(E), b0 + db, c])
    return np.array(rows)


# ----------------------------------------------------------------------------- pow4


def _pow4_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    e, b, c, ld = (_col(theta, j) for j in range(4))
    d = np.exp(ld)
    xd = x[None, :] + d
    lxd = np.log(xd)
    ly, (w_e, w_b) = _lse(e, b - c * lxd)
    return ly, [w_e, w_b, -w_b * lxd, -w_b * c * d / xd]


def _pow4_grid(x: Array, x2: Array | None, y: Array) -> Array:
    x0, y0 = _anchor(x, y)
    rows = []
    for c, E, df in itertools.product(EXPONENTS, _floor_fracs(y), (1e-3, 0.1, 1.0, 10.0)):
        d = df * x0
        b0 = np.log(max(y0 - E, 1e-12 * y0)) + c * np.log(x0 + d)
        rows.append([np.log(E), b0, c, np.log(d)])
    return np.array(rows)


# ----------------------------------------------------------------------------- bnsl


def _bnsl_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    la, lb, c0, c1, ld1, lf1 = (_col(theta, j) for j in range(6))
    lx = np.log(x)[None, :]
    f1 = np.exp(lf1)
    z = (lx - ld1) / f1
    sp = _softplus(z)
    sg = _sigmoid(z)
    t = lb - c0 * lx - c1 * f1 * sp
    ly, (w_a, w_t) = _lse(la, t)
    return ly, [
        w_a,
        w_t,
        -w_t * lx,
        -w_t * f1 * sp,
        w_t * c1 * sg,
        -w_t * c1 * f1 * (sp - z * sg),
    ]


def _bnsl_grid(x: Array, x2: Array | None, y: Array) -> Array:
    x0, y0 = _anchor(x, y)
    lx0 = np.log(x0)
    lxq = np.quantile(np.log(x), [0.25, 0.5, 0.75])
    rows = []
    fr = np.array([1e-4, 0.5, 0.9]) * float(np.min(y))
    for a, c0, c1, ld1, f1 in itertools.product(fr, (0.0, 0.25, 0.5, 1.0), (-0.5, 0.0, 0.5, 1.0), lxq, (0.3, 1.0, 3.0)):
        lb = np.log(max(y0 - a, 1e-12 * y0)) + c0 * lx0 + c1 * f1 * float(_softplus((lx0 - ld1) / f1))
        rows.append([np.log(a), lb, c0, c1, ld1, np.log(f1)])
    return np.array(rows)


# ----------------------------------------------------------------------------- chinchilla


def _chinchilla_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    e, a, b, al, be = (_col(theta, j) for j in range(5))
    ln, ld = np.log(x)[None, :], np.log(x2)[None, :]
    ta = a - al * ln
    tb = b - be * ld
    ly, (w_e, w_a, w_b) = _lse(e, ta, tb)
    return ly, [w_e, w_a, w_b, w_a * -ln, w_b * -ld]


def _chinchilla_terms(x: Array, x2: Array | None) -> Array:
    # log L = LSE(e, a - alpha log N, b - beta log D); columns (e, a, b, alpha, beta).
    n = x.size
    F = np.zeros((3, n, 5))
    F[0, :, 0] = 1.0
    F[1, :, 1] = 1.0
    F[1, :, 3] = -np.log(x)
    F[2, :, 2] = 1.0
    F[2, :, 4] = -np.log(x2)
    return F


def _chinchilla_grid(x: Array, x2: Array | None, y: Array) -> Array:
    # Besiroglu et al. 2024 (Epoch) grid: 5 * 6 * 6 * 5 * 5 = 4,500 starts, in (e, a, b, alpha, beta).
    half = np.arange(0.0, 2.01, 0.5)
    return _grid(np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 25.1, 5.0), np.arange(0.0, 25.1, 5.0), half, half)


# ----------------------------------------------------------------------------- gadre


def _gadre_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    # (a M^eta + b M^-eta) C^-eta with M = D/N, C = 6ND equals a (C/M)^-eta + b (C M)^-eta,
    # C/M = 6 N^2 and C M = 6 D^2: a three-term log-sum-exp like Chinchilla with alpha = beta = 2 eta.
    e, la, lb, eta = (_col(theta, j) for j in range(4))
    u = (np.log(6.0) + 2.0 * np.log(x))[None, :]
    v = (np.log(6.0) + 2.0 * np.log(x2))[None, :]
    ta = la - eta * u
    tb = lb - eta * v
    ly, (w_e, w_a, w_b) = _lse(e, ta, tb)
    return ly, [w_e, w_a, w_b, -(w_a * u + w_b * v)]


def _gadre_grid(x: Array, x2: Array | None, y: Array) -> Array:
    le = np.log(np.array([0.1, 0.3, 0.5, 0.7, 0.9]) * float(np.min(y)))
    coef = np.arange(0.0, 25.1, 5.0)
    return _grid(le, coef, coef, (0.05, 0.1, 0.15, 0.2, 0.3, 0.5))


# ----------------------------------------------------------------------------- downstream


def _downstream_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    # log Err = log eps + log(1 - exp(u)), u = log k - log eps - gamma L; defined only where u < 0.
    le, lk, g = (_col(theta, j) for j in range(3))
    L = x[None, :]
    u = lk - le - g * L
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ly = np.where(u < 0, le + np.log(-np.expm1(u)), np.nan)
        r = 1.0 / np.expm1(-u)  # e^u / (1 - e^u); d log Err / du = -r
    return ly, [1.0 + r, -r, r * L]


def _downstream_grid(x: Array, x2: Array | None, y: Array) -> Array:
    i = int(np.argmin(x))
    L0, y0 = float(x[i]), float(y[i])
    rows = []
    for ef, g in itertools.product((1.001, 1.01, 1.05, 1.2, 1.5, 2.0), (0.1, 0.3, 1.0, 2.0, 4.0)):
        eps = ef * float(np.max(y))
        k = (eps - y0) * np.exp(g * L0)
        rows.append([np.log(eps), np.log(k), g])
    return np.array(rows)


# ----------------------------------------------------------------------------- data-constrained
# Muennighoff et al. 2023: repeated data and excess parameters decay in value. Three variables:
# x = N (parameters), x2[:, 0] = D (tokens seen, all epochs), x2[:, 1] = U (unique tokens).

R_STAR_D, R_STAR_N = 15.4, 5.3  # Muennighoff et al. 2023's fitted constants (reference values)


def _dcu(x2: Array | None) -> tuple[Array, Array]:
    """Tokens seen D and the unique tokens actually used, U_D = min(U, D) (Muennighoff et al. 2023): a run
    that stops inside its first epoch has seen D distinct tokens, not the whole pool."""
    if x2 is None or np.ndim(x2) != 2 or np.shape(x2)[1] != 2:
        raise ValueError("a data-constrained form needs x2 of shape (n, 2): [tokens seen D, unique tokens U]")
    D = np.asarray(x2[:, 0], dtype=np.float64)
    return D, np.minimum(np.asarray(x2[:, 1], dtype=np.float64), D)


def repetitions(seen: Array, unique: Array) -> Array:
    """Repetitions beyond the first, ``R = max(seen / unique - 1, 0)`` (Muennighoff et al. 2023)."""
    return np.maximum(np.asarray(seen, dtype=np.float64) / np.asarray(unique, dtype=np.float64) - 1.0, 0.0)


def _effective(log_u: Array, R: Array, r: Array) -> tuple[Array, Array, Array]:
    """``log X'`` with ``X' = U (1 + R* (1 - exp(-R/R*)))``, ``R* = exp(r)``; and d/dr, d/dR of it."""
    rs = np.exp(r)
    q = R / rs
    eq = np.exp(-q)
    om = -np.expm1(-q)  # 1 - e^-q, accurate for small q
    term = 1.0 + rs * om
    return log_u + np.log(term), rs * (om - q * eq) / term, eq / term


def effective_data(unique: Array, seen: Array, r_star: float = R_STAR_D) -> Array:
    """Effective data ``D' = U + U R* (1 - exp(-R/R*))`` with ``R = max(seen/unique - 1, 0)``, U the unique
    tokens used, ``min(unique, seen)`` (so ``D' = seen`` inside the first epoch).

    The value of ``seen`` tokens drawn from ``unique`` distinct ones, in fresh-token units
    (Muennighoff et al. 2023, Eq. 5): ``D' -> U (1 + R*)`` as the repetitions grow, so data repeated
    far beyond ``R*`` times is worth little more. Arrays broadcast; ``r_star`` > 0.

    >>> round(float(effective_data(1e9, 4e9, 15.4)) / 1e9, 3)  # 4 epochs = 3 repetitions: worth 3.726 fresh epochs
    3.726
    """
    if not r_star > 0:
        raise ValueError(f"r_star={r_star!r} must be > 0")
    u = np.minimum(np.asarray(unique, dtype=np.float64), np.asarray(seen, dtype=np.float64))  # unique tokens used
    R = repetitions(seen, u)
    return np.exp(_effective(np.log(u), R, np.log(r_star))[0])


def _unique_params(lnopt: Array, ln: Array, rn: Array) -> tuple[Array, Array, Array]:
    """``log N'`` for ``N`` parameters when ``U`` unique tokens optimally fit ``N_opt`` (log ``lnopt``):
    ``U_N = min(N, N_opt)``; returns ``log N'``, d/d rn, and d/d lnopt (zero where N <= N_opt)."""
    exc = ln > lnopt
    lun = np.where(exc, lnopt, ln)
    R = np.expm1(ln - lun)
    lnp, d_r, d_R = _effective(lun, R, rn)
    g = np.where(exc, 1.0 - (R + 1.0) * d_R, 0.0)
    return lnp, d_r, g


def _dc_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    e, a, b, al, be, rd, rn = (_col(theta, j) for j in range(7))
    D, U = _dcu(x2)
    lu = np.log(U)[None, :]
    ln = np.log(x)[None, :]
    ldp, dD_r, _ = _effective(lu, repetitions(D, U)[None, :], rd)
    # N_opt(U): the compute-optimal N whose optimal D is U under this law (Hoffmann et al. 2022,
    # G = (alpha A / (beta B))^(1/(alpha+beta)), N_opt = G (G U)^(beta/alpha)).
    L = al + be
    s = be / al
    lg = (np.log(al) - np.log(be) + a - b) / L
    lnopt = (1.0 + s) * lg + s * lu
    lnp, dN_r, g = _unique_params(lnopt, ln, rn)
    ly, (w_e, w_a, w_b) = _lse(e, a - al * lnp, b - be * ldp)
    c = -al * w_a * g  # d log y / d log N_opt
    return ly, [
        w_e,
        w_a + c * (1.0 + s) / L,
        w_b - c * (1.0 + s) / L,
        -w_a * lnp + c * ((-be / al**2) * (lg + lu) + (1.0 + s) * (1.0 / al - lg) / L),
        -w_b * ldp + c * ((lg + lu) / al + (1.0 + s) * (-1.0 / be - lg) / L),
        -be * w_b * dD_r,
        -al * w_a * dN_r,
    ]


def _dc_ot_log_y(theta: Array, x: Array, x2: Array | None) -> tuple[Array, list[Array]]:
    # gadre's form (alpha = beta = 2 eta, A = a 6^-eta, B = b 6^-eta) with N -> N', D -> D';
    # then G = (a/b)^(1/(4 eta)) and N_opt(U) = G^2 U.
    e, la, lb, eta, rd, rn = (_col(theta, j) for j in range(6))
    D, U = _dcu(x2)
    lu = np.log(U)[None, :]
    ln = np.log(x)[None, :]
    ldp, dD_r, _ = _effective(lu, repetitions(D, U)[None, :], rd)
    lnopt = (la - lb) / (2.0 * eta) + lu
    lnp, dN_r, g = _unique_params(lnopt, ln, rn)
    u = np.log(6.0) + 2.0 * lnp
    v = np.log(6.0) + 2.0 * ldp
    ly, (w_e, w_a, w_b) = _lse(e, la - eta * u, lb - eta * v)
    c = -2.0 * eta * w_a * g
    return ly, [
        w_e,
        w_a + c / (2.0 * eta),
        w_b - c / (2.0 * eta),
        -(w_a * u + w_b * v) - c * (la - lb) / (2.0 * eta**2),
        -2.0 * eta * w_b * dD_r,
        -2.0 * eta * w_a * dN_r,
    ]


_R_GRID = np.log([2.0, 5.0, 15.0, 50.0, 200.0])


def _dc_base_inputs(x2: Array | None) -> list[Array]:
    """The second variable to give the two-variable base form: D = tokens seen, and D = unique tokens."""
    D, U = _dcu(x2)
    return [D, U]


def _dc_grid(x: Array, x2: Array | None, y: Array) -> Array:
    le = np.log(np.array([0.3, 0.7]) * float(np.min(y)))
    return _grid(le, (5.0, 10.0, 15.0), (5.0, 10.0, 15.0), (0.3, 0.6), (0.3, 0.6), np.log([15.0]), np.log([5.0]))


def _dc_ot_grid(x: Array, x2: Array | None, y: Array) -> Array:
    le = np.log(np.array([0.3, 0.7]) * float(np.min(y)))
    return _grid(le, (5.0, 10.0, 15.0), (5.0, 10.0, 15.0), (0.1, 0.2, 0.3), np.log([15.0]), np.log([5.0]))


# ----------------------------------------------------------------------------- registry

FORMS: dict[str, Form] = {}


def _register(form: Form) -> None:
    FORMS[form.name] = form


_register(Form(
    "m1", "y = B * x^-c", (Param("B", True, -_BIG, _BIG), Param("c", False, 0.0, 10.0)), 1, _m1_log_y, _m1_grid,
))
_register(Form(
    "m2", "y = E + B * x^-c",
    (Param("E", True, -30.0, _BIG), Param("B", True, -_BIG, _BIG), Param("c", False, 0.0, 10.0)),
    1, _m2_log_y, _m2_grid,
))
_register(Form(
    "pow4", "y = E + B * (x + d)^-c",
    (Param("E", True, -30.0, _BIG), Param("B", True, -_BIG, _BIG), Param("c", False, 0.0, 10.0),
     Param("d", True, -_BIG, _BIG)),
    1, _pow4_log_y, _pow4_grid,
))
_register(Form(
    "bnsl", "y = a + b * x^-c0 * (1 + (x/d1)^(1/f1))^(-c1*f1)",
    (Param("a", True, -30.0, _BIG), Param("b", True, -_BIG, _BIG), Param("c0", False, -2.0, 10.0),
     Param("c1", False, -10.0, 10.0), Param("d1", True, -_BIG, _BIG), Param("f1", True, np.log(1e-2), np.log(1e2))),
    1, _bnsl_log_y, _bnsl_grid,
))
_register(Form(
    "chinchilla", "L = E + A * N^-alpha + B * D^-beta",
    (Param("E", True, -30.0, _BIG), Param("A", True, -_BIG, _BIG), Param("B", True, -_BIG, _BIG),
     Param("alpha", False, 0.0, 10.0), Param("beta", False, 0.0, 10.0)),
    2, _chinchilla_log_y, _chinchilla_grid, ("N", "D"), _chinchilla_terms,
))
_register(Form(
    "gadre", "L = E + (a * M^eta + b * M^-eta) * C^-eta,  M = D/N, C = 6*N*D",
    (Param("E", True, -30.0, _BIG), Param("a", True, -_BIG, _BIG), Param("b", True, -_BIG, _BIG),
     Param("eta", False, 0.0, 5.0)),
    2, _gadre_log_y, _gadre_grid, ("N", "D"),
))
_register(Form(
    "downstream", "Err = eps - k * exp(-gamma * L)",
    (Param("eps", True, -30.0, 5.0), Param("k", True, -_BIG, _BIG), Param("gamma", False, 0.0, 50.0)),
    1, _downstream_log_y, _downstream_grid, ("L",), scale_sign=-1,
))

_register(Form(
    "data_constrained", "L = E + A * N'^-alpha + B * D'^-beta,  D' = U (1 + R*_D (1 - exp(-R_D/R*_D))), N' likewise",
    (Param("E", True, -30.0, _BIG), Param("A", True, -_BIG, _BIG), Param("B", True, -_BIG, _BIG),
     Param("alpha", False, 0.02, 10.0), Param("beta", False, 0.02, 10.0),
     Param("Rstar_D", True, np.log(0.05), np.log(1e4), "R*_D: repetitions of data worth having"),
     Param("Rstar_N", True, np.log(0.05), np.log(1e4), "R*_N: excess parameters worth having")),
    3, _dc_log_y, _dc_grid, ("N", "D", "U"), extends=Extends("chinchilla", _dc_base_inputs, _grid(_R_GRID, _R_GRID)),
))
_register(Form(
    "data_constrained_ot", "L = E + (a * M'^eta + b * M'^-eta) * C'^-eta,  M' = D'/N', C' = 6 N' D'",
    (Param("E", True, -30.0, _BIG), Param("a", True, -_BIG, _BIG), Param("b", True, -_BIG, _BIG),
     Param("eta", False, 0.01, 5.0),
     Param("Rstar_D", True, np.log(0.05), np.log(1e4), "R*_D: repetitions of data worth having"),
     Param("Rstar_N", True, np.log(0.05), np.log(1e4), "R*_N: excess parameters worth having")),
    3, _dc_ot_log_y, _dc_ot_grid, ("N", "D", "U"), extends=Extends("gadre", _dc_base_inputs, _grid(_R_GRID, _R_GRID)),
))


def get_form(name: str) -> Form:
    """The registered form called ``name``; a :class:`WinnowError` lists the choices otherwise."""
    try:
        return FORMS[name]
    except KeyError:
        raise WinnowError(f"unknown scaling-law form {name!r}; choose one of {', '.join(FORMS)} (or 'auto')") from None


def forms_for(n_vars: int) -> list[str]:
    """Names of the registered forms that take ``n_vars`` input variables."""
    return [f.name for f in FORMS.values() if f.n_vars == n_vars]
