"""Prune stage end to end on sklearn digits (PCA embeddings): DuckDB rows, idempotent reruns,
the export command, and bad input that leaves every table unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from configs.base import parse_config
from helpers import db_fingerprint, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

SOURCES = [{"name": "digits", "kind": "sklearn_digits", "test_fraction": 0.25, "seed": 0, "max_rows": 700}]
ENCODER = {"kind": "pca", "dim": 8, "seed": 0}


def _config(**prune):
    base = {"metrics": ["ssp", "semdedup", "dbp", "random"], "policies": ["auto", "hard"],
            "fractions": [0.5, 0.1], "k": 10, "semdedup_eps": [0.01, 0.2]}
    base.update(prune)
    return parse_config({"sources": SOURCES, "encoder": ENCODER, "prune": base})


def _ingest(cfg, db_path):
    from flows.ingest import ingest_flow

    ingest_flow(config=cfg, db=str(db_path), progress=False)


def _prune(cfg, db_path, run_id="prune-test"):
    from flows.prune import prune_flow

    return prune_flow(config=cfg, db=str(db_path), run_id=run_id, progress=False)


def _rows(db_path, sql, params=()):
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def pruned_db(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("prune") / "w.duckdb"
    cfg = _config(evaluate={"fractions": [1.0, 0.3], "seeds": [0, 1], "policies": ["hard"], "probe_max_iter": 200})
    _ingest(cfg, db_path)
    out = _prune(cfg, db_path)
    return db_path, cfg, out


def test_prune_flow_stores_scores_selections_and_auto_reason(pruned_db):
    db_path, _, out = pruned_db
    n_pool = _rows(db_path, "SELECT n_train FROM sources WHERE name = 'digits'")[0][0]
    # 4 metrics score every pool row once
    assert _rows(db_path, "SELECT metric, count(*) FROM scores GROUP BY 1 ORDER BY 1") == [
        ("dbp", n_pool), ("random", n_pool), ("semdedup", n_pool), ("ssp", n_pool)]
    # 3 metrics x 2 policies x 2 fractions + random x 2 fractions + SemDeDup at 2 raw and 2 relative eps
    assert out["selections"] == 14 + 4
    sel = _rows(db_path, "SELECT selection_id, fraction, n_kept, n_pool, resolved_policy, reason FROM selections "
                         "WHERE metric = 'ssp' AND policy = 'auto' ORDER BY fraction")
    # auto: alpha = kept/(10 classes * 8 dims): 0.1*n_pool/80 < 3 <= 0.5*n_pool/80 for 480 <= n_pool <= 2400
    assert 480 <= n_pool <= 2400
    assert [r[4] for r in sel] == ["easy", "hard"]
    assert "alpha" in sel[0][5] and "threshold" in sel[0][5]
    for sid, frac, n_kept, n, _, _ in sel:
        assert n == n_pool and n_kept == round(frac * n_pool)
        members = _rows(db_path, "SELECT count(*), count(DISTINCT example_id) FROM selection_members WHERE selection_id = ?", [sid])
        assert members == [(n_kept, n_kept)]
    # members are train rows of the source and their ids decode to (source_id, row_index)
    bad = _rows(db_path, "SELECT count(*) FROM selection_members m JOIN examples e USING (example_id) "
                         "WHERE e.split <> 'train' OR (m.example_id & 4294967295) <> m.row_index")
    assert bad == [(0,)]
    latest = _rows(db_path, "SELECT count(DISTINCT selection_id), count(*) FROM latest_selection")
    assert latest == [(18, sum(r[0] for r in _rows(db_path, "SELECT n_kept FROM selections")))]
    removed = dict(_rows(db_path, "SELECT eps, n_removed FROM semdedup_report"))
    assert removed[0.2] >= removed[0.01] >= 0 and removed[0.2] > 0


def test_prune_flow_stores_pruning_curve_and_plot(pruned_db):
    db_path, _, out = pruned_db
    summ = _rows(db_path, "SELECT metric, policy, fraction, n_seeds, mean_accuracy FROM pruning_curve_summary "
                          "ORDER BY metric, fraction")
    by = {(m, p, f): (n, acc) for m, p, f, n, acc in summ}
    assert by[("full", "none", 1.0)][0] == 2 and by[("full", "none", 1.0)][1] > 0.8
    assert by[("random", "random", 0.3)][1] > 0.6
    assert ("ssp", "hard", 0.3) in by and ("dbp", "hard", 0.3) in by
    pngs = list((db_path.parent / "w.artifacts" / "prune").glob("*-curve.png"))
    assert pngs and pngs[0].stat().st_size > 5_000
    assert any("best" in line and "vs random" in line for line in out["lines"])


def test_prune_rerun_is_idempotent(pruned_db):
    db_path, cfg, _ = pruned_db
    before = db_fingerprint(db_path, ignore=("created_at",))
    _prune(cfg, db_path)
    assert db_fingerprint(db_path, ignore=("created_at",)) == before


def test_export_writes_ids_and_refuses_to_overwrite(pruned_db, tmp_path, winnow):
    db_path, _, _ = pruned_db
    sid, n_kept = _rows(db_path, "SELECT selection_id, n_kept FROM selections WHERE metric = 'ssp' "
                                 "AND policy = 'hard' AND fraction < 0.2")[0]
    out = tmp_path / "kept.parquet"
    code, _, err = winnow("export", sid, "--to", out, "--db", db_path)
    assert code == 0, err
    t = pq.read_table(out)
    assert t.column_names == ["example_id", "source_id", "row_index"] and t.num_rows == n_kept
    stored = sorted(r[0] for r in _rows(db_path, "SELECT example_id FROM selection_members WHERE selection_id = ?", [sid]))
    assert t.column("example_id").to_pylist() == stored
    mtime = out.stat().st_mtime_ns
    code, _, err = winnow("export", sid, "--to", out, "--db", db_path)
    assert code == 2 and "--force" in err and out.stat().st_mtime_ns == mtime
    code, _, err = winnow("export", sid, "--to", out, "--db", db_path, "--force")
    assert code == 0, err
    csv = tmp_path / "kept.csv"
    assert winnow("export", f"latest:digits:ssp:hard:f=0.1", "--to", csv, "--db", db_path)[0] == 0
    assert len(csv.read_text().strip().splitlines()) == n_kept + 1
    code, _, err = winnow("export", "no-such-selection", "--to", tmp_path / "x.csv", "--db", db_path)
    assert code == 2 and "no selection" in err and not (tmp_path / "x.csv").exists()
    # never onto winnow's own files, even with --force (a source's stored Parquet replaced by an export
    # broke the next run with a bare KeyError)
    from storage.db import Store

    art = Store(db_path).artifacts_dir
    own = sorted((art / "sources").glob("*.parquet"))[0]
    before = own.read_bytes()
    code, _, err = winnow("export", sid, "--to", own, "--db", db_path, "--force")
    assert code == 2 and "inside the database's own files" in err and own.read_bytes() == before
    code, _, err = winnow("export", sid, "--to", art / "new.parquet", "--db", db_path)
    assert code == 2 and not (art / "new.parquet").exists()


@pytest.mark.parametrize(
    "prune, match",
    [
        ({"fractions": [0.5], "counts": [10**7]}, "count=10000000 exceeds"),
        ({"k": 5000}, "k=5000"),
    ],
)
def test_bad_prune_input_leaves_tables_unchanged(pruned_db, prune, match):
    db_path, _, _ = pruned_db
    before = db_fingerprint(db_path)
    from tasks.errors import WinnowError

    with pytest.raises(WinnowError, match=match):
        _prune(_config(**prune), db_path, run_id="prune-bad")
    assert db_fingerprint(db_path) == before


def test_semdedup_memory_refusal_and_missing_labels_leave_tables_unchanged(pruned_db, tmp_path):
    from tasks.errors import WinnowError

    db_path, _, _ = pruned_db
    before = db_fingerprint(db_path)
    with pytest.raises(WinnowError, match="semdedup_block"):
        _prune(_config(metrics=["semdedup"], semdedup_block=None, semdedup_max_pairs=1000), db_path, run_id="prune-bad")
    assert db_fingerprint(db_path) == before
    # an unlabelled source (npy features only) asking for a supervised metric
    X = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    cfg = parse_config({"sources": [{"name": "plain", "kind": "npy", "path": str(tmp_path / "x.npy")}],
                        "encoder": {"kind": "raw"}, "prune": {"metrics": ["ssp", "el2n"], "k": 4}})
    db2 = tmp_path / "u.duckdb"
    _ingest(cfg, db2)
    before2 = db_fingerprint(db2)
    with pytest.raises(WinnowError, match="needs labels"):
        _prune(cfg, db2)
    assert db_fingerprint(db2) == before2
    # label-free metrics work on it
    cfg_ok = parse_config({"sources": [{"name": "plain", "kind": "npy", "path": str(tmp_path / "x.npy")}],
                           "encoder": {"kind": "raw"}, "prune": {"metrics": ["ssp", "moderate"], "k": 4,
                                                                  "policies": ["auto", "easy"]}})
    out = _prune(cfg_ok, db2)
    assert out["selections"] == 2 * 2 * 5


def test_prune_config_rejects_bad_values():
    from tasks.errors import WinnowError

    with pytest.raises(WinnowError, match="fractions"):
        _config(fractions=[1.5])
    with pytest.raises(WinnowError, match="policies"):
        _config(policies=["hardest"])
    with pytest.raises(WinnowError, match="metrics"):
        _config(metrics=["ssp", "magic"])
    with pytest.raises(WinnowError, match="fractions"):
        _config(fractions=[0.0])


def test_prune_cli_runs_config(tmp_path, winnow):
    cfg = write_yaml(tmp_path / "c.yaml", """
sources:
  - {name: digits, kind: sklearn_digits, max_rows: 300}
encoder: {kind: pca, dim: 8}
prune: {metrics: [ssp, random], policies: [easy], fractions: [0.2], k: 5, semdedup_eps: []}
""")
    db = tmp_path / "c.duckdb"
    code, out, err = winnow("prune", cfg, "--db", db)
    assert code == 0, err
    assert "selections over 2 metrics" in out
    code, out, err = winnow("selections", "--db", db, "--json")
    assert code == 0 and out.count('"selection_id"') == 2
    run_id = json.loads(out)[0]["run_id"]
    code, out, err = winnow("selections", run_id, "--db", db, "--json")
    assert code == 0 and out.count('"selection_id"') == 2
    code, out, err = winnow("selections", "nosuch", "--db", db)  # an unknown run is an error, not "no rows"
    assert code == 2 and err.strip() == f"error: no run 'nosuch' in {db} (`winnow runs` lists them)", err


def test_semdedup_removals_are_selections_with_queryable_removed_ids(pruned_db, tmp_path, winnow):
    from storage.db import Store
    from storage.prune import load_removed, load_selection

    db_path, _, out = pruned_db
    rows = _rows(db_path, "SELECT selection_id, budget_spec, n_pool, n_kept, reason FROM selections "
                          "WHERE metric = 'semdedup' AND policy = 'dedup' ORDER BY budget_spec")
    assert [r[1] for r in rows] == ["eps=0.01", "eps=0.2", "rel=0.05", "rel=0.1"]
    report = dict(_rows(db_path, "SELECT eps, n_removed FROM semdedup_report"))
    store = Store(db_path)
    for sid, spec, n_pool, n_kept, reason in rows:
        head, kept = load_selection(store, sid)
        removed = load_removed(store, sid)
        assert kept.num_rows == n_kept and removed.num_rows == n_pool - n_kept
        assert not set(kept.column("example_id").to_pylist()) & set(removed.column("example_id").to_pylist())
        assert f"removed {n_pool - n_kept} of {n_pool}" in reason
        if spec.startswith("eps="):
            assert report[float(spec[4:])] == n_pool - n_kept
        else:
            assert "median nearest-neighbour distance" in reason
    assert any(line.startswith("digits: semdedup rel=0.1 removes") for line in out["lines"])
    # winnow export works on a de-duplication like on any selection
    csv = tmp_path / "dedup.csv"
    code, _, err = winnow("export", "latest:digits:semdedup:dedup:eps=0.2", "--to", csv, "--db", db_path)
    assert code == 0, err
    assert len(csv.read_text().strip().splitlines()) == rows[1][3] + 1


def test_counts_only_and_exact_duplicates_end_to_end(tmp_path):
    # a CSV with 3 exact copies of earlier rows: exact_dedup removes exactly them; counts alone run alone
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).round(3)
    X = np.vstack([X, X[[1, 5, 9]]])
    y = rng.integers(0, 3, len(X))
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,d,e,y\n" + "\n".join(",".join(map(str, r)) + f",{c}" for r, c in zip(X, y)))
    cfg = parse_config({"sources": [{"name": "d", "kind": "csv", "path": str(path), "label": "y"}],
                        "encoder": {"kind": "raw"},
                        "prune": {"metrics": ["ssp", "exact_dedup", "random"], "counts": [40], "k": 4}})
    db = tmp_path / "e.duckdb"
    _ingest(cfg, db)
    out = _prune(cfg, db)
    train = {r[0] for r in _rows(db, "SELECT row_index FROM examples WHERE split = 'train'")}
    n_copies = sum(a in train and b in train for a, b in ((1, 120), (5, 121), (9, 122)))
    n_pool = len(train)
    specs = _rows(db, "SELECT metric, policy, budget_spec, n_pool - n_kept FROM selections ORDER BY 1, 2, 3")
    assert specs == [("exact_dedup", "dedup", "exact", n_copies), ("random", "random", "n=40", n_pool - 40),
                     ("ssp", "auto", "n=40", n_pool - 40)]
    assert out["selections"] == 3
