"""End-to-end mixture flow on built-in sklearn digits (fast), idempotent reruns, and a failed run
that writes nothing; the shipped mixture-digits config runs under ``-m slow``."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from helpers import write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

FAST = """
name: mixture-fast
sources:
  - {name: digits, kind: sklearn_digits, test_fraction: 0.3, seed: 0}
mixture:
  pools:
    - {name: low, source: digits, n: 200, class_proportions: {"0": 0.24, "1": 0.24, "2": 0.24, "3": 0.24}, seed: 1}
    - {name: high, source: digits, n: 200, class_proportions: {"6": 0.24, "7": 0.24, "8": 0.24, "9": 0.24}, seed: 2}
    - {name: mid, source: digits, n: 200, seed: 3}
  target: {source: digits, split: test, n_ot: 120, n_eval: 300}
  features: {image_size: 8, dim: 16}
  ot: {solver: sinkhorn, reg: 0.1, reveal: 100, compare: [exact]}
  grid_step: 0.25
  pilot_sizes: [40, 80]
  reps: 1
  predictor: {random_splits: 2}
  extrapolation: {method: power_law, target_n: 160, n_validate: 4, reps: 1}
  select: {steps: 6}
"""

MIXTURE_TABLES = ("mixture_pools", "ot_distances", "ot_sweeps", "pilot_results", "predictor_fits",
                  "predictor_validation", "mixture_extrapolations", "mixture_selections")


def _counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in MIXTURE_TABLES}
    finally:
        con.close()


def test_fast_mixture_flow_writes_every_table_and_reruns_idempotently(tmp_path, db_path, winnow):
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 0, err
    counts = _counts(db_path)
    assert counts["ot_distances"] == 2 * 15 and counts["ot_sweeps"] == 2  # weighted + weighted-exact
    assert counts["pilot_results"] >= 15 * 2 and counts["mixture_selections"] == 1
    assert counts["predictor_fits"] == 2 * 6  # 4 OT forms + 2 baselines per pilot size
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        (chosen,) = con.execute("SELECT DISTINCT form FROM predictor_fits WHERE chosen").fetchone()
        best = con.execute("SELECT form FROM predictor_validation WHERE form IN ('ot','ot_linear','ot_quadratic','projektor') "
                           "GROUP BY form ORDER BY avg(mae), form LIMIT 1").fetchone()[0]
        assert chosen == best
        p, n_target, measured = con.execute("SELECT p, n_target, measured FROM mixture_selections").fetchone()
        assert abs(sum(p) - 1) < 1e-9 and min(p) >= 0 and n_target == 160 and 0 <= measured <= 1
        surf = con.execute("SELECT count(*) FROM mixture_surface").fetchone()[0]
        assert surf == 15 * 2
    finally:
        con.close()
    art = db_path.parent / f"{db_path.stem}.artifacts" / "mixture"
    assert len(list(art.glob("*-surface.png"))) == 1 and len(list(art.glob("*-pred-vs-measured.png"))) == 1
    # same config again: the run's rows are replaced, not duplicated
    code, _, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 0, err
    assert _counts(db_path) == counts


def test_bad_mixture_config_fails_cleanly_and_writes_no_mixture_rows(tmp_path, db_path, winnow):
    bad = FAST.replace("pilot_sizes: [40, 80]", "pilot_sizes: [40, 400]")  # 400 > pool size 200
    cfg = write_yaml(tmp_path / "bad.yaml", bad)
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 2 and "pilot size 400" in err
    assert not Path(db_path).exists()  # refused before the first write: a new database is not even created


@pytest.mark.slow
def test_shipped_mixture_digits_config_runs_end_to_end(db_path, winnow):
    cfg = Path(__file__).resolve().parents[1] / "configs" / "mixture-digits.yaml"
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 0, err
    counts = _counts(db_path)
    assert counts["ot_distances"] == 3 * 66 and counts["mixture_selections"] == 1


def test_resample_mode_with_exact_solver_and_exact_label_distances(tmp_path, db_path, winnow):
    cfg_text = (FAST.replace("ot: {solver: sinkhorn, reg: 0.1, reveal: 100, compare: [exact]}",
                             "ot: {mode: resample, solver: exact, label_method: exact, reveal: 60, resample_n: 60}")
                .replace("grid_step: 0.25", "grid_step: 0.5").replace("random_splits: 2", "random_splits: 0"))
    code, out, err = winnow("mixture", write_yaml(tmp_path / "resample.yaml", cfg_text), "--db", db_path)
    assert code == 0, err
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        sweeps = dict(con.execute("SELECT sweep, solver FROM ot_sweeps").fetchall())
        assert sweeps == {"resample": "resample-exact", "weighted-exact": "exact"}
        # no gradient in resample mode: the predictor proposes its best grid point; the finalists are grid
        # points, vertices and uniform, so the choice is one of those
        (p,) = con.execute("SELECT p FROM mixture_selections").fetchone()
        assert all(abs(x * 2 - round(x * 2)) < 1e-9 for x in p) or all(abs(x - 1 / 3) < 1e-9 for x in p)
        assert con.execute("SELECT count(*) FROM ot_distances WHERE sweep = 'resample' AND grad IS NULL").fetchone()[0] == 6
    finally:
        con.close()
