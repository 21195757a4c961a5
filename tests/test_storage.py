"""The DuckDB store: schema versioning, idempotent ingestion, versions, read-only query, duckdb CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from configs.base import parse_config
from flows.ingest import ingest_flow
from helpers import db_fingerprint
from storage.db import Store
from storage.query import run_query
from storage.schema import SCHEMA_VERSION
from storage.sources import list_sources, load_source
from tasks.errors import SchemaTooNewError, WinnowError

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows


def csv_config(path: Path, name: str = "tab"):
    return parse_config({"sources": [{"name": name, "kind": "csv", "path": str(path), "label": "y"}]})


def write_csv(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = ["a,b,y"] + [f"{rng.normal():.6f},{rng.normal():.6f},{i % 3}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")


def test_ingest_twice_adds_no_rows_and_a_change_becomes_a_new_version(tmp_path, store):
    src = tmp_path / "t.csv"
    write_csv(src, 50)
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    before = db_fingerprint(store.path)
    records = ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    assert not records[0].created
    assert db_fingerprint(store.path) == before
    write_csv(src, 60, seed=1)
    records = ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    assert records[0].created and records[0].version == 2
    rows = list_sources(store)
    assert [(r["version"], r["n_rows"]) for r in rows] == [(2, 60), (1, 50)]
    assert load_source(store, "tab").n == 60 and load_source(store, "tab", version=1).n == 50
    with store.read() as con:
        assert con.execute("SELECT count(*) FROM examples").fetchall()[0][0] == 110
        dup = con.execute("SELECT count(*) - count(DISTINCT example_id) FROM examples").fetchall()[0][0]
        assert dup == 0


def test_a_staged_file_taken_by_a_concurrent_run_reads_as_the_registered_version_or_one_line(tmp_path, store):
    """Staging is cached across processes: two runs started at once on a new database hold one staged
    file. When the first registers it (moving it into the artifacts), the second's checks read the
    registered version, which is the same content; when the first was refused and removed it, the second
    says so in one line and writes nothing (it failed with 'data file missing', a file the user never named)."""
    from storage.sources import load_staged, register_sources
    from tasks.ingest import stage_source

    src = tmp_path / "t.csv"
    write_csv(src, 40)
    spec = csv_config(src).sources[0]
    first, second = stage_source(spec, store.staging_dir()), stage_source(spec, store.staging_dir())
    shared = second.__class__(**{**second.__dict__, "path": first.path})  # what the cache hands the second run
    register_sources(store, [first])  # the first run registers: the staged file moves away
    assert not shared.path.exists()
    assert load_staged(store, shared).n == 40
    assert not register_sources(store, [shared])[0].created  # same content: nothing new
    other = tmp_path / "u.csv"
    write_csv(other, 30, seed=2)
    gone = stage_source(csv_config(other).sources[0], store.staging_dir())
    gone.path.unlink()  # a refused first run cleaned up what it staged
    before = db_fingerprint(store.path)
    with pytest.raises(WinnowError, match="its staged file is gone .* nothing was written: run again"):
        load_staged(store, gone)
    with pytest.raises(WinnowError, match="its staged file is gone"):
        register_sources(store, [gone])
    assert db_fingerprint(store.path) == before


def test_loaded_source_round_trips_features_labels_and_ids(tmp_path, store):
    src = tmp_path / "t.csv"
    write_csv(src, 30)
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    data = load_source(store, "tab")
    raw = np.loadtxt(src, delimiter=",", skiprows=1)
    np.testing.assert_allclose(data.X, raw[:, :2], rtol=1e-6)
    assert data.label_names == ["0", "1", "2"] and np.array_equal(data.y, raw[:, 2].astype(int))
    assert np.array_equal(data.example_ids >> 32, np.full(30, data.source_id))
    assert data.train().n + data.test().n == 30


def test_bad_source_among_good_ones_writes_nothing(tmp_path, store):
    good, bad = tmp_path / "g.csv", tmp_path / "b.csv"
    write_csv(good, 20)
    bad.write_text("a,b,y\n1,2,\n")
    cfg = parse_config({"sources": [{"name": "g", "kind": "csv", "path": str(good), "label": "y"},
                                    {"name": "b", "kind": "csv", "path": str(bad), "label": "y"}]})
    with pytest.raises(WinnowError, match="'b'.*null at row 1"):
        ingest_flow(config=cfg, db=str(store.path), progress=False)
    assert db_fingerprint(store.path) is None
    assert not list((store.artifacts_dir / "staging").iterdir())


def test_newer_schema_is_refused_and_the_file_left_untouched(tmp_path, store):
    src = tmp_path / "t.csv"
    write_csv(src, 10)
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    con = duckdb.connect(str(store.path), config={"storage_compatibility_version": "v1.5.0"})
    con.execute("UPDATE winnow_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    before = db_fingerprint(store.path)
    with pytest.raises(SchemaTooNewError, match="newer than this winnow"):
        ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    with pytest.raises(SchemaTooNewError):
        list_sources(Store(store.path))
    assert db_fingerprint(store.path) == before


def test_directory_and_read_only_locations_are_clear_errors(tmp_path):
    src = tmp_path / "t.csv"
    write_csv(src, 10)
    d = tmp_path / "adir.duckdb"
    d.mkdir()
    with pytest.raises(WinnowError, match="is a directory"):
        ingest_flow(config=csv_config(src), db=str(d), progress=False)
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; the read-only case cannot be staged")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(WinnowError, match="not writable"):
        ingest_flow(config=csv_config(src), db=str(ro / "w.duckdb"), progress=False)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    write_csv(tmp / "t.csv", 10)
    store = Store(tmp / "q.duckdb")
    ingest_flow(config=csv_config(tmp / "t.csv"), db=str(store.path), progress=False)
    return store


@pytest.mark.parametrize("sql,message", [
    ("DELETE FROM sources", "read-only"),
    ("INSERT INTO runs SELECT * FROM runs", "read-only"),
    ("CREATE TABLE x (a INT)", "read-only"),
    ("ATTACH 'other.duckdb' AS o", "read-only"),
    ("COPY sources TO 'out.csv'", "read-only"),
    ("INSTALL httpfs", "read-only"),
    ("LOAD httpfs", "read-only"),
    ("SELECT * FROM read_csv('/etc/hostname')", "cannot touch files"),
    ("SELECT 1; DROP TABLE sources", "read-only"),
    ("SET enable_external_access = true", "read-only"),
])
def test_query_refuses_anything_but_reading_the_database(small_store, sql, message):
    before = db_fingerprint(small_store.path)
    with pytest.raises(WinnowError, match=message):
        run_query(small_store, sql)
    assert db_fingerprint(small_store.path) == before
    assert run_query(small_store, "SELECT count(*) AS n FROM examples") == [{"n": 10}]


def test_the_duckdb_cli_from_pypi_reads_the_file(tmp_path, store):
    exe = shutil.which("duckdb", path=str(Path(sys.executable).parent)) or shutil.which("duckdb")
    if exe is None:
        pytest.skip("duckdb CLI (duckdb-cli, dev extra) not installed")
    src = tmp_path / "t.csv"
    write_csv(src, 12)
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    out = subprocess.run([exe, str(store.path), "-csv", "-c", "select name, n_rows from sources"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tab,12" in out.stdout


def test_a_version_1_file_is_migrated_in_place_keeping_its_rows(tmp_path):
    """Schema v2 added the planner's tables: an older file gains them on the first write, rows intact."""
    from storage import schema

    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute(schema._META)
    for statement in schema.MIGRATIONS[1]:
        con.execute(statement)
    con.execute("INSERT INTO winnow_meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO mixture_pools VALUES ('r1', 0, 'a', 'src', 10, '{}')")
    con.close()
    store = Store(path)
    with store.write() as c:
        assert c.execute("SELECT value FROM winnow_meta WHERE key = 'schema_version'").fetchall() == [(str(SCHEMA_VERSION),)]
        assert c.execute("SELECT count(*) FROM plan_runs").fetchall() == [(0,)]
        assert c.execute("SELECT run_id, pool FROM mixture_pools").fetchall() == [("r1", "a")]


def test_a_source_read_twice_in_one_process_is_read_once_and_cannot_be_changed(tmp_path, store):
    src = tmp_path / "t.csv"
    write_csv(src, 30)
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    a, b = load_source(store, "tab"), load_source(store, "tab")
    assert a is b
    with pytest.raises(ValueError):
        a.X[0, 0] = 1.0
    write_csv(src, 31, seed=1)  # new content -> new version -> its own entry
    ingest_flow(config=csv_config(src), db=str(store.path), progress=False)
    c = load_source(store, "tab")
    assert c is not a and c.version == a.version + 1 and c.n == 31
