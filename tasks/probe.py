"""Linear probes: multinomial logistic regression on fixed embeddings (torch, CPU, float32).

The probe is the yardstick of the whole project: embeddings are judged by the accuracy of a
linear probe on them, prunings by the accuracy of a probe trained on the kept subset, and the
supervised pruning baselines (EL2N, GraNd, forgetting, AUM) read the training dynamics of a probe.

Model and objective (standardised features :math:`\\tilde x = (x - \\mu) / \\sigma`, with
:math:`\\mu, \\sigma` taken from the training rows only):

.. math::

    \\min_{W, b}\\; \\frac{1}{n}\\sum_{i=1}^{n} -\\log \\operatorname{softmax}(W^\\top \\tilde x_i + b)_{y_i}
    \\; + \\; \\frac{\\lambda}{2}\\,\\lVert W \\rVert_F^2

which is strictly convex for :math:`\\lambda > 0`; it is solved full-batch with L-BFGS (strong
Wolfe line search) from :math:`W = 0, b = 0`, so the result is deterministic. With
:math:`\\lambda = 1/(C n)` this is scikit-learn's ``LogisticRegression(C=C)`` objective.

Public functions
----------------
- :func:`train_linear_probe` — one probe, train -> test accuracy (60k x 128 in ~1-2 s on 2 cores).
- :func:`train_linear_probes_batched` — many independent probes over subsets of the same
  training matrix (pruning curves, pilot runs), solved as one stacked tensor problem.
- :func:`train_probe_with_dynamics` — minibatch Adam for E epochs, recording the softmax of every
  training example after each epoch, for EL2N / GraNd / forgetting / AUM.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tasks.progress import progress_bar

__all__ = [
    "BatchedProbeResult",
    "ProbeDynamics",
    "ProbeResult",
    "train_linear_probe",
    "train_linear_probes_batched",
    "train_probe_with_dynamics",
]

DEFAULT_WEIGHT_DECAY = 1e-3
DEFAULT_MAX_ITER = 200
# Upper bound on the floats held by one stacked logits tensor (B, n, C) in the batched solver.
_BATCH_FLOAT_BUDGET = 40_000_000


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    """A trained linear probe and its test accuracy.

    Attributes
    ----------
    accuracy : float — fraction of correctly predicted test rows (nan when there are none).
    test_pred : (n_test,) int64 — predicted class per test row.
    seconds : float — wall time of standardisation + optimisation + prediction.
    n_iter : int — L-BFGS iterations used.
    converged : bool — True when L-BFGS stopped before ``max_iter``.
    train_loss : float — final regularised training objective.
    weight : (d, C) float32 — weights on standardised features.
    bias : (C,) float32.
    mean, std : (d,) float32 — the standardisation fitted on the training rows.
    """

    accuracy: float
    test_pred: np.ndarray
    seconds: float
    n_iter: int
    converged: bool
    train_loss: float
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits, (n, C) float32, for raw (unstandardised) features ``X`` (n, d)."""
        X = _as_features(X, "X", d=self.weight.shape[0])
        return ((X - self.mean) / self.std) @ self.weight + self.bias

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities, (n, C) float32."""
        z = torch.from_numpy(self.decision_function(X))
        return torch.softmax(z, dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class per row, (n,) int64."""
        return self.decision_function(X).argmax(axis=1).astype(np.int64)


@dataclass(frozen=True)
class BatchedProbeResult:
    """B independent probes trained on subsets of one training matrix.

    Attributes
    ----------
    accuracies : (B,) float64 — test accuracy of each probe.
    test_pred : (B, n_test) int64 — predictions of each probe on the shared test set.
    train_sizes : (B,) int64 — number of training rows (with repeats) of each probe.
    seconds : float — total wall time.
    n_iter : int — L-BFGS iterations (maximum over the chunks).
    converged : bool — every chunk stopped before ``max_iter``.
    """

    accuracies: np.ndarray
    test_pred: np.ndarray
    train_sizes: np.ndarray
    seconds: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class ProbeDynamics:
    """Training dynamics of a minibatch-trained linear probe.

    Attributes
    ----------
    probs_per_epoch : (E, n, C) float32 — softmax of every training example after each epoch
        (model in its end-of-epoch state), rows aligned with the input ``X``.
    y : (n,) int64 — the labels the probe was trained on.
    feature_norms : (n,) float32 — :math:`\\lVert[\\tilde x_i, 1]\\rVert_2` of the standardised
        input with the bias coordinate. For a linear softmax probe the last-layer gradient of the
        cross-entropy is :math:`(p_i - e_{y_i}) \\otimes [\\tilde x_i, 1]`, so
        GraNd_i = ``||probs - onehot(y)||_2 * feature_norms`` (Paul et al. 2021).
    train_loss_per_epoch : (E,) float32 — mean cross-entropy over the training set per epoch.
    train_accuracy_per_epoch : (E,) float32.
    seconds : float
    seed : int
    """

    probs_per_epoch: np.ndarray
    y: np.ndarray
    feature_norms: np.ndarray
    train_loss_per_epoch: np.ndarray
    train_accuracy_per_epoch: np.ndarray
    seconds: float
    seed: int

    @property
    def n_epochs(self) -> int:
        return int(self.probs_per_epoch.shape[0])

    def correct_per_epoch(self) -> np.ndarray:
        """(E, n) bool — whether each example is classified correctly after each epoch."""
        return self.probs_per_epoch.argmax(axis=2) == self.y[None, :]


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _as_features(X: np.ndarray, name: str, d: int | None = None) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {X.shape}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{name} has {X.shape[1]} features; expected d={d}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s); clean the features first")
    return X


def _as_labels(y: np.ndarray, name: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the features; got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class codes; got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} has negative class code {int(y.min())}; codes must be >= 0")
    return y


def _resolve_n_classes(n_classes: int | None, *ys: np.ndarray) -> int:
    seen = max((int(y.max()) + 1 for y in ys if y.size), default=0)
    if n_classes is None:
        n_classes = seen
    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes} must be >= 2 for a classifier")
    if seen > n_classes:
        raise ValueError(f"labels go up to {seen - 1} but n_classes={n_classes}")
    return int(n_classes)


def _check_hparams(weight_decay: float, max_iter: int) -> None:
    if not (weight_decay >= 0 and np.isfinite(weight_decay)):
        raise ValueError(f"weight_decay={weight_decay} must be a finite number >= 0")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")


def _standardise_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    # a column is constant when its spread is negligible against its OWN magnitude (a threshold from the
    # largest column's mean, e.g. an id or timestamp column, left every small-scale feature unscaled)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _warn_not_converged(max_iter: int) -> None:
    warnings.warn(
        f"linear probe: L-BFGS hit max_iter={max_iter} before converging; "
        "raise max_iter or weight_decay",
        RuntimeWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------------------------
# Kernel: L-BFGS over a stack of B probes sharing one feature matrix
# --------------------------------------------------------------------------------------------
def _lbfgs_stacked(
    X: torch.Tensor,  # (n, d) raw features
    Y1h: torch.Tensor,  # (n, C) one-hot labels
    sample_w: torch.Tensor,  # (B, n) per-probe row weights, each row sums to 1
    mean: torch.Tensor,  # (B, d)
    std: torch.Tensor,  # (B, d)
    weight_decay: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, int, bool, float]:
    """Solve B independent L2-regularised softmax regressions jointly.

    The objective is the sum of the B per-probe objectives, so its Hessian is block-diagonal
    and the joint minimiser is the tuple of the individual minimisers. Standardisation is
    folded into the weights: ((x - mu_b) / s_b) W_b = x (W_b / s_b) - mu_b (W_b / s_b), so only
    the (B, n, C) logits are materialised, never B standardised copies of X.
    """
    B, d, C = sample_w.shape[0], X.shape[1], Y1h.shape[1]
    W = torch.zeros(B, d, C, dtype=torch.float32, requires_grad=True)
    b = torch.zeros(B, C, dtype=torch.float32, requires_grad=True)
    inv_std = (1.0 / std).unsqueeze(2)  # (B, d, 1)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.5) + 10,
        history_size=20,
        tolerance_grad=1e-5,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        V = W * inv_std  # (B, d, C)
        offset = torch.einsum("bd,bdc->bc", mean, V)  # (B, C)
        logits = torch.einsum("nd,bdc->bnc", X, V) + (b - offset).unsqueeze(1)
        nll = -(torch.log_softmax(logits, dim=2) * Y1h.unsqueeze(0)).sum(dim=2)  # (B, n)
        return (nll * sample_w).sum() + 0.5 * weight_decay * (W * W).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        final = float(objective()) / B
    V = (W * inv_std).detach()
    bias = (b - torch.einsum("bd,bdc->bc", mean, V)).detach()
    return V, bias, n_iter, n_iter < max_iter, final


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def train_linear_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> ProbeResult:
    """Train a multinomial logistic-regression probe and report its test accuracy.

    Parameters
    ----------
    X_train : (n, d) float array — features of the training rows (not standardised; the probe
        standardises with the training mean/std).
    y_train : (n,) int array — class codes in ``[0, n_classes)``.
    X_test : (m, d) float array; y_test : (m,) int array. ``m`` may be 0 (accuracy is nan).
    n_classes : number of classes; default ``max(y) + 1`` over train and test.
    seed : accepted for a uniform signature; the solver is deterministic (convex, zero start).
    max_iter : L-BFGS iteration cap; a RuntimeWarning says when it is reached.
    weight_decay : λ in the objective (module docstring); ``1/(C n)`` matches sklearn's ``C``.

    Returns
    -------
    ProbeResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> train_linear_probe(X[:150], y[:150], X[150:], y[150:]).accuracy > 0.9
    True
    """
    t0 = time.perf_counter()
    _check_hparams(weight_decay, max_iter)
    X_train = _as_features(X_train, "X_train")
    y_train = _as_labels(y_train, "y_train", X_train.shape[0])
    X_test = _as_features(X_test, "X_test", d=X_train.shape[1])
    y_test = _as_labels(y_test, "y_test", X_test.shape[0])
    if X_train.shape[0] < 1:
        raise ValueError("X_train has 0 rows; a probe needs at least one training example")
    C = _resolve_n_classes(n_classes, y_train, y_test)
    del seed  # deterministic solver; see docstring

    mean, std = _standardise_stats(X_train)
    n = X_train.shape[0]
    V, bias, n_iter, converged, loss = _lbfgs_stacked(
        torch.from_numpy(X_train),
        F.one_hot(torch.from_numpy(y_train), C).to(torch.float32),
        torch.full((1, n), 1.0 / n, dtype=torch.float32),
        torch.from_numpy(mean)[None],
        torch.from_numpy(std)[None],
        weight_decay,
        max_iter,
    )
    if not converged:
        _warn_not_converged(max_iter)
    W_std = (V[0] * torch.from_numpy(std)[:, None]).numpy()  # back to standardised-feature weights
    b_std = (bias[0] + torch.from_numpy(mean) @ V[0]).numpy()
    logits = (torch.from_numpy(X_test) @ V[0] + bias[0]).numpy() if len(X_test) else np.zeros((0, C))
    pred = logits.argmax(axis=1).astype(np.int64)
    acc = float((pred == y_test).mean()) if len(y_test) else float("nan")
    return ProbeResult(
        accuracy=acc,
        test_pred=pred,
        seconds=time.perf_counter() - t0,
        n_iter=n_iter,
        converged=converged,
        train_loss=loss,
        weight=W_std.astype(np.float32),
        bias=b_std.astype(np.float32),
        mean=mean,
        std=std,
    )


def _subset_weights(train_sets: Sequence[np.ndarray], n: int) -> np.ndarray:
    """(B, n) float32 row weights: counts of each row in each subset, normalised to sum 1."""
    B = len(train_sets)
    w = np.zeros((B, n), dtype=np.float32)
    for j, s in enumerate(train_sets):
        s = np.asarray(s)
        if s.dtype == bool:
            if s.shape != (n,):
                raise ValueError(f"train_sets[{j}] is a mask of shape {s.shape}; expected ({n},)")
            w[j] = s
        else:
            if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
                raise ValueError(f"train_sets[{j}] must be a 1-D int index array or bool mask")
            if s.size and (s.min() < 0 or s.max() >= n):
                raise ValueError(
                    f"train_sets[{j}] has index {int(s.min() if s.min() < 0 else s.max())} "
                    f"outside [0, {n})"
                )
            w[j] = np.bincount(s, minlength=n)
        total = w[j].sum()
        if total == 0:
            raise ValueError(f"train_sets[{j}] is empty; every probe needs >= 1 training row")
        w[j] /= total
    return w


def train_linear_probes_batched(
    X_train: np.ndarray,
    y_train: np.ndarray,
    train_sets: Sequence[np.ndarray],
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_classes: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    chunk_size: int | None = None,
    progress: bool = False,
) -> BatchedProbeResult:
    """Train one probe per training subset, all at once, and evaluate each on the same test set.

    Each probe solves the same objective as :func:`train_linear_probe` on its own subset,
    standardised with its own subset's mean/std, so results match the one-at-a-time call up to
    solver tolerance. Probes are stacked into one (B, d, C) weight tensor and optimised jointly
    (block-diagonal objective), in chunks of ``chunk_size`` probes.

    Parameters
    ----------
    X_train : (n, d) float — the shared pool of training rows.
    y_train : (n,) int.
    train_sets : length-B sequence of (k_b,) int index arrays into ``X_train`` (repeats count
        as weights) or (n,) bool masks.
    X_test : (m, d) float; y_test : (m,) int — shared evaluation set.
    chunk_size : probes per stacked solve; default keeps the (chunk, n, C) logits under
        ~40M floats.
    progress : show a rich progress bar over chunks.

    Returns
    -------
    BatchedProbeResult
    """
    t0 = time.perf_counter()
    _check_hparams(weight_decay, max_iter)
    X_train = _as_features(X_train, "X_train")
    n, d = X_train.shape
    y_train = _as_labels(y_train, "y_train", n)
    X_test = _as_features(X_test, "X_test", d=d)
    y_test = _as_labels(y_test, "y_test", X_test.shape[0])
    if len(train_sets) == 0:
        raise ValueError("train_sets is empty; pass at least one training subset")
    C = _resolve_n_classes(n_classes, y_train, y_test)
    weights = _subset_weights(train_sets, n)  # (B, n)
    B = weights.shape[0]
    if chunk_size is None:
        chunk_size = max(1, _BATCH_FLOAT_BUDGET // max(1, n * max(C, d // 4)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")

    Xt = torch.from_numpy(X_train)
    Xte = torch.from_numpy(X_test)
    Y1h = F.one_hot(torch.from_numpy(y_train), C).to(torch.float32)
    Wt = torch.from_numpy(weights)
    # Weighted mean / std per probe, (B, d), via matmuls rather than B passes over X; in float64 and
    # about a global centre (E[x^2] - E[x]^2 in float32 cancels on columns with an offset), and a
    # column counts as constant against its own magnitude, as in the one-probe path
    X64 = Xt.to(torch.float64)
    centre = X64.mean(dim=0, keepdim=True)
    Xc = X64 - centre
    W64 = Wt.to(torch.float64)
    mean_c = W64 @ Xc
    var_all = (W64 @ (Xc * Xc) - mean_c * mean_c).clamp_min(0.0)
    mean_all64 = mean_c + centre
    std64 = var_all.sqrt()
    std64 = torch.where(std64 > 1e-6 * mean_all64.abs().clamp_min(1.0), std64, torch.ones_like(std64))
    mean_all, std_all = mean_all64.to(torch.float32), std64.to(torch.float32)
    del X64, Xc

    preds = np.empty((B, X_test.shape[0]), dtype=np.int64)
    n_iter_max, all_conv = 0, True
    starts = range(0, B, chunk_size)
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("linear probes", total=B)
        for s in starts:
            e = min(B, s + chunk_size)
            V, bias, n_iter, conv, _ = _lbfgs_stacked(
                Xt, Y1h, Wt[s:e], mean_all[s:e], std_all[s:e], weight_decay, max_iter
            )
            n_iter_max, all_conv = max(n_iter_max, n_iter), all_conv and conv
            if X_test.shape[0]:
                logits = torch.einsum("md,bdc->bmc", Xte, V) + bias.unsqueeze(1)
                preds[s:e] = logits.argmax(dim=2).numpy()
            bar.update(task, advance=e - s)
    if not all_conv:
        _warn_not_converged(max_iter)
    accs = (preds == y_test[None, :]).mean(axis=1) if X_test.shape[0] else np.full(B, np.nan)
    sizes = np.array(
        [int(np.asarray(s).sum()) if np.asarray(s).dtype == bool else len(s) for s in train_sets],
        dtype=np.int64,
    )
    return BatchedProbeResult(
        accuracies=accs.astype(np.float64),
        test_pred=preds,
        train_sizes=sizes,
        seconds=time.perf_counter() - t0,
        n_iter=n_iter_max,
        converged=all_conv,
    )


def train_probe_with_dynamics(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-2,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    seed: int = 0,
    progress: bool = False,
) -> ProbeDynamics:
    """Train a linear softmax probe with minibatch Adam and record per-epoch softmax outputs.

    The proxy model of the supervised pruning baselines (pruning.md, "Supervised baselines"):
    EL2N_i = ||p_i^{(e)} - onehot(y_i)||_2 read at an early epoch e (Paul et al. 2021);
    GraNd_i = EL2N_i * ``feature_norms[i]`` for this linear model; forgetting events = number of
    correct -> incorrect transitions in :meth:`ProbeDynamics.correct_per_epoch` (Toneva et al.
    2019, read once per epoch rather than per minibatch); AUM_i = mean over epochs of
    p_{y_i} - max_{k != y_i} p_k (Pleiss et al. 2020, on probabilities). Average over seeds
    by calling with several ``seed`` values.

    Parameters
    ----------
    X : (n, d) float — training features (standardised inside).
    y : (n,) int — class codes.
    epochs : E >= 1; batch_size >= 1; lr > 0 (Adam); weight_decay >= 0 (L2 on W, mean loss).
    seed : seeds the weight init and the minibatch order.
    progress : rich progress bar over epochs.

    Returns
    -------
    ProbeDynamics with ``probs_per_epoch`` of shape (E, n, C).
    """
    t0 = time.perf_counter()
    _check_hparams(weight_decay, 1)
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not (lr > 0):
        raise ValueError(f"lr={lr} must be > 0")
    X = _as_features(X, "X")
    n, d = X.shape
    if n < 1:
        raise ValueError("X has 0 rows")
    y = _as_labels(y, "y", n)
    C = _resolve_n_classes(n_classes, y)

    mean, std = _standardise_stats(X)
    Xs = torch.from_numpy((X - mean) / std)
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(int(seed))
    W = (torch.randn(d, C, generator=gen) * 0.01).requires_grad_(True)
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    probs = np.empty((epochs, n, C), dtype=np.float32)
    losses = np.empty(epochs, dtype=np.float32)
    accs = np.empty(epochs, dtype=np.float32)
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("probe dynamics", total=epochs)
        for ep in range(epochs):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                loss = F.cross_entropy(Xs[idx] @ W + b, yt[idx])
                loss = loss + 0.5 * weight_decay * (W * W).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                logits = Xs @ W + b
                losses[ep] = float(F.cross_entropy(logits, yt))
                p = torch.softmax(logits, dim=1)
                probs[ep] = p.numpy()
                accs[ep] = float((p.argmax(dim=1) == yt).float().mean())
            bar.update(task, advance=1)
    feat_norms = torch.sqrt((Xs * Xs).sum(dim=1) + 1.0).numpy().astype(np.float32)
    return ProbeDynamics(
        probs_per_epoch=probs,
        y=y,
        feature_norms=feat_norms,
        train_loss_per_epoch=losses,
        train_accuracy_per_epoch=accs,
        seconds=time.perf_counter() - t0,
        seed=int(seed),
    )
