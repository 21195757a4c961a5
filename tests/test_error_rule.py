"""The error rule, checked from the code (nothing executed): ``WinnowError`` only at the edges.

A :class:`~tasks.errors.WinnowError` tells the user *their input* is wrong: the CLI prints one line and
exits 2, and the pipeline removes a new run's rows as if it had never started (flows/pipeline.py). A
kernel's broken precondition or a numerical failure is a bug or an accident of the numbers: it raises
``ValueError`` / ``RuntimeError``, the run is marked failed and its evidence kept (exit 1).

So in the folders of :data:`SCOPE` only the functions of :data:`EDGES` may raise a WinnowError: config
and CLI-argument checks, the checks a preflight runs before anything is written, I/O and environment,
and conditions the user can cause that are (so far) only detectable inside the stage, each with why.
A new ``raise WinnowError`` elsewhere fails :func:`test_only_edge_checks_raise_winnowerror`: raise
``ValueError``/``RuntimeError`` instead, or, when the user really can cause it, add the function
here with the reason (and better, check it in the stage's preflight).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: files under the rule: every computation in tasks/ (ingest and the shard kernels are I/O edges of their own)
SCOPE = ("tasks/prune/*.py", "tasks/embed/*.py", "tasks/mixture/*.py", "tasks/scaling/*.py", "tasks/plan/*.py",
         "tasks/probe.py", "tasks/device.py", "configs/prune.py")
#: files in those folders that are edges as a whole: reading a user's CSV/Parquet for `winnow fit`
NOT_YET = ("tasks/scaling/csvinput.py",)

ERRORS = {"WinnowError", "SchemaTooNewError", "StoreLockedError"}

EDGES: dict[str, str] = {
    # preflight / config edge checks
    "tasks/device.py:resolve_device": "the config's torch device is not on this machine (run by every preflight)",
    "tasks/embed/__init__.py:check_fits": "an encoder kind that cannot embed a source (run by the prune/mixture preflights)",
    "tasks/prune/options.py:PruneOptions.check_against": "prune options against a pool (the prune preflight)",
    "tasks/mixture/pilots.py:check_pool_capacity": "pilot sizes larger than the pools (the mixture preflight)",
    "tasks/mixture/simplex.py:simplex_grid": "mixture.grid_step that does not divide 1 (the mixture preflight)",
    "tasks/mixture/pools.py:draw_mixture_rows": "pools and target drawn from the pinned sources: sizes, labels, classes "
                                                "(the mixture and plan preflights)",
    "tasks/mixture/pools.py:draw_pool": "a pool's source has no labels or rows, or too few of a class (draw_mixture_rows)",
    "tasks/mixture/pools.py:class_targets": "class_proportions naming labels the source lacks (draw_mixture_rows)",
    "tasks/mixture/pools.py:remap_labels": "pool labels the target lacks (draw_mixture_rows)",
    "tasks/prune/perceptron.py:perceptron_experiment": "the arguments of `winnow experiment perceptron`",
    "tasks/prune/perceptron.py:check_grid": "the grid of `winnow experiment perceptron` (alphas, fractions, N)",
    # environment / I/O
    "tasks/embed/minilm.py:load_minilm": "the MiniLM weights package is not installed",
    # user-reachable, detected only while the stage runs (candidates for a preflight)
    "tasks/embed/__init__.py:_encode_pca": "encoder.dim above the source's features or fitting rows",
    "tasks/embed/ssl_cnn.py:train_ssl_cnn": "an image source with fewer than 4 training images",
    "tasks/prune/kmeans.py:check_embeddings": "an all-zero embedding row (raw/column features) has no direction",
    "tasks/prune/dbp.py:dbp_weights": "prune.k (or the pool) gives DBP a single cluster",
    "tasks/prune/semdedup.py:_check_memory": "semdedup_max_pairs too small for the clusters of this pool",
    "tasks/prune/semdedup.py:nn_distance_scale": "k so large that no cluster has two members (semdedup_rel_eps)",
    "tasks/prune/semdedup.py:resolve_thresholds": "semdedup_rel_eps x this encoder's scale outside (0, 2)",
    "tasks/mixture/features.py:align_features": "image and non-image sources, or differing feature widths, in one mixture",
    "tasks/mixture/predictor.py:random_splits": "predictor.random_test_fraction that leaves no training mixture",
    "tasks/mixture/simplex.py:feasible_region_check": "pools or select.budget that no mixture can meet",
    "tasks/mixture/pilots.py:check_target_capacity": "extrapolation.target_n that no grid mixture fits (the stage, "
                                                     "before any pilot; a preflight could run it too)",
    # `winnow fit` / the scaling API: the user's curve and the command's options (no preflight in between)
    "tasks/scaling/fit.py:check_xy": "the user's x/x2/y columns: lengths, finite, > 0, the form's variables",
    "tasks/scaling/fit.py:fit_form": "--huber-delta, and data no start of the form can fit (y outside its domain)",
    "tasks/scaling/api.py:split_targets": "--predict points that do not match the form's variables",
    "tasks/scaling/api.py:fit_curve": "--bootstrap < 0",
    "tasks/scaling/api.py:fit_report": "--holdout-largest / --form combinations and missing --x2",
    "tasks/scaling/validate.py:holdout_mask": "--holdout-largest leaving too few points to fit",
    "tasks/scaling/validate.py:choose_predictor": "a curve no candidate form can be validated on",
    "tasks/scaling/bootstrap.py:bootstrap_fit": "--bootstrap / --level out of range",
    "tasks/scaling/forms.py:get_form": "--form naming no form",
    # the planner: what the plan section asks against the pools (enumerate_candidates runs in the plan preflight)
    "tasks/plan/space.py:enumerate_candidates": "plan budget / source budgets that no (pruning, mixture) candidate meets",
    "tasks/plan/space.py:revealed_masks": "plan.reveal so small that an option keeps none of the revealed rows",
    "tasks/plan/predict.py:fit_screen": "a plan space with fewer than 6 design candidates",
    "tasks/plan/predict.py:confirm_curve": "pilots at fewer than 2 sizes after pruning",
    "tasks/plan/planner.py:capped_counts": "constraints under which a baseline mixture can take no example",
}


def _files() -> list[Path]:
    out = {p for pattern in SCOPE for p in ROOT.glob(pattern)}
    return sorted(p for p in out if p.relative_to(ROOT).as_posix() not in NOT_YET)


def _raisers(path: Path) -> dict[str, int]:
    """``{"file:Qual.name": line}`` of every function in ``path`` with a ``raise WinnowError(...)``."""
    rel = path.relative_to(ROOT).as_posix()
    found: dict[str, int] = {}

    def walk(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, scope + [child.name])
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                name = exc.id if isinstance(exc, ast.Name) else getattr(exc, "attr", None)
                if name in ERRORS:
                    found.setdefault(f"{rel}:{'.'.join(scope) or '<module>'}", child.lineno)
            walk(child, scope)

    walk(ast.parse(path.read_text()), [])
    return found


def test_scope_is_not_empty():
    names = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert {"tasks/prune/select.py", "tasks/mixture/batch.py", "tasks/embed/pca.py", "tasks/probe.py"} <= names


def test_only_edge_checks_raise_winnowerror():
    found: dict[str, int] = {}
    for path in _files():
        found.update(_raisers(path))
    kernels = {k: v for k, v in found.items() if k not in EDGES}
    assert not kernels, (
        "a kernel raises WinnowError (the pipeline would erase the run as 'bad input'): raise ValueError/"
        "RuntimeError, or list the function in EDGES with the reason the user can cause it: "
        + ", ".join(f"{k} (line {v})" for k, v in sorted(kernels.items())))


def test_every_listed_edge_still_raises_winnowerror():
    """The list stays true: an edge that no longer raises one leaves it."""
    found: set[str] = set()
    for path in _files():
        found |= set(_raisers(path))
    assert set(EDGES) - found == set()


def test_a_numerical_failure_is_not_bad_input():
    """Sinkhorn leaving the float range is a RuntimeError (retried at a larger ε by the caller), never a
    WinnowError: a failed run keeps its evidence."""
    from tasks.errors import WinnowError
    from tasks.mixture.batch import SinkhornDiverged

    assert issubclass(SinkhornDiverged, RuntimeError) and not issubclass(SinkhornDiverged, WinnowError)
    assert not issubclass(WinnowError, (ValueError, RuntimeError))
