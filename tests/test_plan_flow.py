"""End to end: ``winnow plan CONFIG`` on built-in sklearn digits into a real DuckDB file.

One small plan (three 280-row pools of digits train, target digits test, N = 280) is run once per
module; the tests check that its stored example ids match its stated counts (per pool, in the
``examples`` table, inside the pool's pruned rows), the constraints, the alternatives with their
intervals and validation, idempotent reruns, export, and the config / budget errors (exit 2, one
message, DB unchanged).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import db_fingerprint, results_fingerprint, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

SOURCES = """
name: plan-tiny
sources:
  - {name: digits, kind: sklearn_digits, test_fraction: 0.25, seed: 0}
"""

MIXTURE = """
mixture:
  pools:
    - {name: low, source: digits, n: 280, class_proportions: {"0": 0.24, "1": 0.24, "2": 0.24, "3": 0.24}, seed: 1}
    - {name: high, source: digits, n: 280, class_proportions: {"6": 0.24, "7": 0.24, "8": 0.24, "9": 0.24}, seed: 2}
    - {name: mid, source: digits, n: 280, seed: 3}
  target: {source: digits, split: test, n_ot: 150, n_eval: 200, seed: 0}
  features: {image_size: 8, dim: 16}
  ot: {reg: 0.1}
"""

PLAN = """
plan:
  target_n: 280
  policies: ["ssp:hard", "random:equal"]
  fractions: [0.5]
  grid_step: 0.5
  reveal: 120
  metric_k: 5
  pilot_sizes: [40, 80, 160]
  design: 8
  reps: 1
  finalists: 2
  confirm_reps: 2
  bootstrap: 50
  validation: {enabled: true, reps: 1}
"""

TINY = SOURCES + MIXTURE + PLAN
N = 280
POOLS = ["low", "high", "mid"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(config path, db path, summary) of one plan run through flows.pipeline.run_config."""
    from flows.pipeline import run_config

    tmp = tmp_path_factory.mktemp("plan")
    cfg = write_yaml(tmp / "plan.yaml", TINY)
    db = tmp / "db" / "winnow.duckdb"
    summary = run_config(cfg, str(db), ["plan"], progress=False)
    return cfg, db, summary


def _rows(db: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def _copy(db: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy" / db.parent.name
    shutil.copytree(db.parent, dst)
    return dst / db.name


def test_plan_members_match_the_plans_counts(planned):
    _, db, summary = planned
    rid = summary["run_id"]
    src = _rows(db, "SELECT pool, source, policy, keep_fraction, n_pool, n_available, n_taken, p FROM plan_sources "
                    "WHERE run_id = ? ORDER BY pool_index", [rid])
    assert [r[0] for r in src] == POOLS and all(r[1] == "digits" for r in src)
    n_taken = {r[0]: r[6] for r in src}
    (n_members,) = _rows(db, "SELECT count(*) FROM plan_members WHERE run_id = ?", [rid])[0]
    assert n_members == N == sum(n_taken.values())
    (target_n,) = _rows(db, "SELECT target_n FROM plan_runs WHERE run_id = ?", [rid])[0]
    assert target_n == N
    per_pool = dict(_rows(db, "SELECT pool, count(*) FROM plan_members WHERE run_id = ? GROUP BY pool", [rid]))
    assert {p: per_pool.get(p, 0) for p in POOLS} == n_taken
    # constraints: availability and the simplex; the counts are the mixture's largest-remainder counts
    from tasks.mixture.simplex import mixture_counts

    p = np.array([r[7] for r in src])
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-9
    np.testing.assert_array_equal([r[6] for r in src], mixture_counts(p, N))
    for pool, _, policy, frac, n_pool, n_avail, taken, _ in src:
        assert taken <= n_avail <= n_pool == 280
        assert (policy == "none") == (frac == 1.0) and (n_avail == 280 if policy == "none" else n_avail == round(frac * 280))
    opts = _rows(db, "SELECT o.n_kept FROM plan_options o JOIN plan_sources s USING (run_id, pool_index) "
                     "WHERE run_id = ? AND o.policy = s.policy AND o.keep_fraction = s.keep_fraction ORDER BY pool_index", [rid])
    assert [r[0] for r in opts] == [r[5] for r in src]
    # every member is a real example of the pool's source, train split, decoded consistently
    bad = _rows(db, "SELECT count(*) FROM plan_members m LEFT JOIN examples e USING (example_id) "
                    "LEFT JOIN sources s ON s.source_id = e.source_id "
                    "WHERE m.run_id = ? AND (e.example_id IS NULL OR e.source_id != m.source_id OR e.row_index != m.row_index "
                    "OR s.name != 'digits' OR e.split != 'train')", [rid])[0][0]
    assert bad == 0
    # the summary the CLI printed says the same
    assert [(r["pool"], r["n_taken"]) for r in summary["stages"]["plan"]["plan"]] == [(r[0], r[6]) for r in src]


def test_plan_members_lie_inside_each_pools_pruned_rows(planned):
    """Recompute the pools and the chosen pruning option independently and check every member is in it."""
    from configs.base import load_config
    from storage.db import Store
    from storage.sources import load_source
    from tasks.mixture.pools import prepare_mixture_data
    from tasks.plan.space import pool_options

    cfg_path, db, summary = planned
    rid = summary["run_id"]
    cfg = load_config(cfg_path)
    data = prepare_mixture_data({"digits": load_source(Store(db), "digits")}, cfg.mixture)
    src = _rows(db, "SELECT pool_index, policy, keep_fraction, n_taken FROM plan_sources WHERE run_id = ? ORDER BY pool_index", [rid])
    members = _rows(db, "SELECT example_id, pool FROM plan_members WHERE run_id = ?", [rid])
    for i, policy, frac, taken in src:
        ids = np.array([e for e, pool in members if pool == POOLS[i]], dtype=np.int64)
        assert ids.size == taken and np.unique(ids).size == taken
        pos = {int(e): j for j, e in enumerate(data.pools_ids[i])}
        assert all(int(e) in pos for e in ids)                       # drawn from this pool
        opts = pool_options(data.pools_X[i], data.pools_y[i], pool=i, policies=cfg.plan.policy_keys(),
                            fractions=list(cfg.plan.fractions), metric_k=cfg.plan.metric_k, seed=cfg.plan.seed)
        (opt,) = [o for o in opts if o.policy == policy and o.fraction == frac]
        assert np.all(np.isin([pos[int(e)] for e in ids], opt.kept))  # and from its pruned rows


def test_alternatives_hold_the_plan_finalists_and_baselines_with_intervals_and_measurements(planned):
    _, db, summary = planned
    rid = summary["run_id"]
    alts = _rows(db, "SELECT name, role, p, counts, n_taken, predicted, lo, hi, measured, n_measured, contained, note "
                     "FROM plan_alternatives WHERE run_id = ?", [rid])
    names = {a[0] for a in alts}
    assert {"best_mixture_unpruned", "uniform_random_pruning", *(f"alone:{p}" for p in POOLS)} <= names
    assert {"finalist-1", "finalist-2"} <= names | {next(a[0] for a in alts if a[1] == "plan")}
    roles = [a[1] for a in alts]
    assert roles.count("plan") == 1 and set(roles) <= {"plan", "finalist", "baseline"}
    for name, role, p, counts, n_taken, pred, lo, hi, meas, n_meas, contained, note in alts:
        assert abs(sum(p) - 1) < 1e-9 and min(p) >= 0 and sum(counts) == n_taken
        assert n_taken == N or note.startswith(f"takes {n_taken} < N={N}")
        assert 0 <= lo <= pred <= hi <= 1, name
        assert 0 <= meas <= 1 and n_meas == 1, name
        assert contained == (lo <= meas <= hi)
    (plan,) = [a for a in alts if a[1] == "plan"]
    assert plan[4] == N or plan[11].startswith(f"takes {plan[4]} < N={N}")  # a capped baseline may be the plan
    taken = [r[0] for r in _rows(db, "SELECT n_taken FROM plan_sources WHERE run_id = ? ORDER BY pool_index", [rid])]
    assert list(plan[3]) == taken
    head = _rows(db, "SELECT predicted, lo, hi, measured FROM plan_runs WHERE run_id = ?", [rid])[0]
    assert head == pytest.approx((plan[5], plan[6], plan[7], plan[8]))
    # the plan's candidates are feasible and on the simplex
    cands = _rows(db, "SELECT p, counts FROM plan_candidates WHERE run_id = ?", [rid])
    assert cands and all(abs(sum(p) - 1) < 1e-9 and sum(c) == N for p, c in cands)


def test_export_writes_exactly_the_plan_members(planned, tmp_path, winnow):
    _, db, summary = planned
    rid = summary["run_id"]
    before = db_fingerprint(db)
    out = tmp_path / "x.parquet"
    code, stdout, err = winnow("export", rid, "--to", out, "--db", db)
    assert code == 0, err
    table = pq.read_table(out)
    ids = sorted(table.column("example_id").to_pylist())
    assert ids == sorted(r[0] for r in _rows(db, "SELECT example_id FROM plan_members WHERE run_id = ?", [rid]))
    assert len(ids) == N == len(set(ids))
    assert f"wrote {N} kept examples of {rid}" in " ".join(stdout.split())
    assert db_fingerprint(db) == before


def test_rerun_of_the_same_config_leaves_identical_tables(planned, tmp_path, winnow):
    cfg, db, summary = planned
    copy = _copy(db, tmp_path)
    code, out, err = winnow("plan", cfg, "--db", copy, "--json")
    assert code == 0, err
    assert results_fingerprint(copy) == results_fingerprint(db)
    assert _rows(copy, "SELECT count(*) FROM plan_runs")[0][0] == 1


def _refused(winnow, db: Path, cfg: Path) -> str:
    before = db_fingerprint(db)
    code, out, err = winnow("plan", cfg, "--db", db)
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert db_fingerprint(db) == before
    return " ".join(err.split())


def test_a_budget_that_makes_nothing_feasible_is_refused_and_writes_nothing(planned, tmp_path, winnow):
    _, db, _ = planned
    copy = _copy(db, tmp_path)
    cfg = write_yaml(tmp_path / "budget.yaml", TINY.replace("  target_n: 280\n", "  target_n: 280\n  budget: 100\n"))
    err = _refused(winnow, copy, cfg)
    assert "no (pruning, mixture) candidate is feasible for target_n=280" in err
    assert "budget rejects" in err and "raise the budget" in err


def test_plan_without_a_mixture_section_is_a_config_error_naming_plan(tmp_path, winnow):
    cfg = write_yaml(tmp_path / "nomix.yaml", SOURCES + PLAN)
    db = tmp_path / "db" / "w.duckdb"
    code, out, err = winnow("plan", cfg, "--db", db)
    assert code == 2, err
    assert "plan" in err and "'mixture' section" in " ".join(err.split())
    assert "Traceback" not in err and db_fingerprint(db) is None  # refused before the file is created


def test_source_budget_naming_an_unknown_pool_is_refused(planned, tmp_path, winnow):
    _, db, _ = planned
    copy = _copy(db, tmp_path)
    cfg = write_yaml(tmp_path / "sb.yaml", TINY.replace("  target_n: 280\n", "  target_n: 280\n  source_budget: {nope: 50}\n"))
    err = _refused(winnow, copy, cfg)
    assert "plan.source_budget names pool 'nope'" in err and "low, high, mid" in err


def test_a_plan_feasible_under_a_budget_survives_a_baseline_that_cannot_afford_any_example(planned, tmp_path, winnow):
    _, db, _ = planned
    copy = _copy(db, tmp_path)
    text = TINY.replace("seed: 3}", "seed: 3, cost: 1000}").replace("  target_n: 280\n", "  target_n: 280\n  budget: 300\n")
    cfg = write_yaml(tmp_path / "costly.yaml", text)
    code, out, err = winnow("plan", cfg, "--db", copy)
    assert code == 0, err
    rid = _rows(copy, "SELECT run_id FROM plan_runs WHERE budget = 300")[0][0]
    spend = _rows(copy, "SELECT sum(n_taken * cost_per_example) FROM plan_sources WHERE run_id = ?", [rid])[0][0]
    assert spend <= 300
    assert all(n > 0 for (n,) in _rows(copy, "SELECT n_taken FROM plan_alternatives WHERE run_id = ?", [rid]))


def test_plans_lists_the_plan_and_shows_its_sources_and_alternatives(planned, winnow):
    import json

    _, db, summary = planned
    rid = summary["run_id"]
    code, out, err = winnow("plans", "--db", db, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == [rid] and rows[0]["target_n"] == N
    code, out, err = winnow("plans", rid, "--db", db, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert sum(s["n_taken"] for s in info["sources"]) == N
    assert info["alternatives"][0]["role"] == "plan" and {a["role"] for a in info["alternatives"]} >= {"plan", "baseline"}
    code, _, err = winnow("plans", "plan-000000000000", "--db", db)
    assert code == 2 and "no plan 'plan-000000000000'" in err


def test_a_plan_may_repeat_a_pruned_pool_and_says_how_often(tmp_path):
    """plan.max_epochs > 1: pools pruned below p·N may be repeated to reach N. The run completes, its members
    still list each example once, and the settings and summary carry the repetition setting."""
    from flows.pipeline import run_config

    text = TINY.replace("  fractions: [0.5]\n", "  fractions: [0.25]\n  max_epochs: 3\n").replace("target_n: 280", "target_n: 400")
    cfg = write_yaml(tmp_path / "repeat.yaml", text)
    db = tmp_path / "db" / "winnow.duckdb"
    summary = run_config(cfg, str(db), ["plan"], progress=False)
    plan = summary["stages"]["plan"]
    assert _rows(db, "SELECT count(*) FROM plan_members GROUP BY example_id HAVING count(*) > 1") == []
    settings = _rows(db, "SELECT settings FROM plan_runs")[0][0]
    assert '"max_epochs": 3' in settings.replace("3.0", "3")
    assert any(line.startswith("repeated data:") and "R*=0" in line for line in plan["lines"])
    assert any("seen" in line and "effective N" in line for line in plan["lines"])  # per alternative: how often
