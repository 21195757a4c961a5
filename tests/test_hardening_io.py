"""Hardening of files, processes and queries: safe writes, unusable databases, query limits, quiet Prefect
console, the temporary Prefect server's lifetime. The CLI checks run the installed console script."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from storage.db import Store, env_lock_timeout_s, resolve_db_path, safe_write
from tasks.errors import WinnowError

WINNOW = Path(sys.executable).parent / "winnow"
ENDLESS = "SELECT count(*) FROM range(100000000000) a, range(1000) b"


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINNOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    """A winnow DuckDB file with the schema and no rows (no Prefect needed)."""
    store = Store(tmp_path / "w.duckdb")
    with store.write():
        pass
    return store.path


# ------------------------------------------------------------------------------------ safe writes
def test_safe_write_never_follows_a_symlink_planted_at_its_temp_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    names = iter(["planted", "planted", "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".out.csv.planted.tmp").symlink_to(victim)  # the name mkstemp tries first
    (tmp_path / ".out.csv.tmp").symlink_to(victim)  # the fixed name older versions used
    safe_write(tmp_path / "out.csv", lambda fh: fh.write(b"new data"))
    assert victim.read_text() == "keep me"
    assert (tmp_path / "out.csv").read_bytes() == b"new data" and not (tmp_path / "out.csv").is_symlink()
    assert not list(tmp_path.glob(".out.csv.fresh*"))  # our own temp file is gone


def test_safe_write_gives_the_file_the_mode_the_umask_says(tmp_path):
    import stat

    old = os.umask(0o027)
    try:
        out = safe_write(tmp_path / "out.csv", lambda fh: fh.write(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # not mkstemp's 0600


def test_safe_write_refuses_to_overwrite_and_force_replaces_a_link_not_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out.csv").symlink_to(victim)
    with pytest.raises(WinnowError, match="already exists; pass --force"):
        safe_write(tmp_path / "out.csv", lambda fh: fh.write(b"x"))
    safe_write(tmp_path / "out.csv", lambda fh: fh.write(b"x"), force=True)
    assert victim.read_text() == "keep me" and (tmp_path / "out.csv").read_bytes() == b"x"


def test_safe_write_cleans_up_when_the_writer_fails(tmp_path):
    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        safe_write(tmp_path / "out.csv", boom)
    assert list(tmp_path.iterdir()) == []


def test_safe_write_names_the_place_that_cannot_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WinnowError, match="file is a file, not a folder"):
        safe_write(tmp_path / "file" / "out.csv", lambda fh: None, option="--to")
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(WinnowError, match="is a FIFO"):
        safe_write(tmp_path / "pipe.csv", lambda fh: None, force=True)
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(WinnowError, match="is a directory"):
        safe_write(tmp_path / "d.csv", lambda fh: None, force=True)


# --------------------------------------------------------------------------- environment and paths
@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e9"])
def test_a_bad_lock_timeout_is_a_user_error(monkeypatch, value):
    monkeypatch.setenv("WINNOW_LOCK_TIMEOUT", value)
    with pytest.raises(WinnowError, match="WINNOW_LOCK_TIMEOUT"):
        env_lock_timeout_s()


def test_lock_timeout_default_and_value(monkeypatch):
    monkeypatch.delenv("WINNOW_LOCK_TIMEOUT", raising=False)
    assert env_lock_timeout_s() == 120.0
    monkeypatch.setenv("WINNOW_LOCK_TIMEOUT", " 7.5 ")
    assert env_lock_timeout_s() == 7.5


def test_an_empty_db_option_is_refused(monkeypatch):
    monkeypatch.delenv("WINNOW_DB", raising=False)
    with pytest.raises(WinnowError, match="--db is empty"):
        resolve_db_path("")
    monkeypatch.setenv("WINNOW_DB", "  ")
    with pytest.raises(WinnowError, match="WINNOW_DB is blank"):
        resolve_db_path(None)


def test_foreign_and_broken_duckdb_files_are_refused_untouched(tmp_path):
    import duckdb

    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign), config={"storage_compatibility_version": "v1.5.0"})
    con.execute("CREATE TABLE runs (id INTEGER); INSERT INTO runs VALUES (1)")
    con.close()
    before = _sha(foreign)
    for use in (lambda s: s.write().__enter__(), lambda s: s.read().__enter__(), lambda s: s.check_usable()):
        with pytest.raises(WinnowError, match="not a usable winnow database"):
            use(Store(foreign))
    assert _sha(foreign) == before
    os.mkfifo(tmp_path / "pipe.duckdb")
    with pytest.raises(WinnowError, match="is a FIFO"):
        Store(tmp_path / "pipe.duckdb")


def test_a_blank_duckdb_file_reads_as_no_database_and_takes_the_first_write(tmp_path):
    """`duckdb.connect(path)` and nothing else leaves a 12 KiB header: reads say there is no winnow database
    (they printed a Catalog Error), and a write makes it one (a run onto it failed before writing)."""
    from storage.runs import list_runs

    blank = tmp_path / "blank.duckdb"
    duckdb.connect(str(blank)).close()
    p = subprocess.run([str(WINNOW), "runs", "--db", str(blank)], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error: no winnow database at") and len(p.stderr.splitlines()) == 1
    store = Store(blank)
    assert not store.exists
    with store.write():
        pass
    assert store.exists and list_runs(store) == []


def test_a_schema_version_that_is_not_a_number_is_refused(empty_db):
    import duckdb

    con = duckdb.connect(str(empty_db), config={"storage_compatibility_version": "v1.5.0"})
    con.execute("UPDATE winnow_meta SET value = 'abc' WHERE key = 'schema_version'")
    con.close()
    before = _sha(empty_db)
    with pytest.raises(WinnowError, match="schema_version is 'abc'"):
        Store(empty_db).check_usable()
    with pytest.raises(WinnowError, match="schema_version is 'abc'"):
        with Store(empty_db).write():
            pass
    assert _sha(empty_db) == before


# ------------------------------------------------------------------------------ one line on stderr
def test_prefect_console_filter_drops_failures_the_cli_reports_as_one_line(monkeypatch):
    from flows._env import HideUserErrors

    f = HideUserErrors()
    try:
        raise WinnowError("source 'x': file not found")
    except WinnowError:
        with_exc = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception", None, sys.exc_info())
    state = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                              "Finished in state Failed('Task run encountered an exception WinnowError: bad')", None, None)
    bug = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Finished in state Failed('ValueError: bug')", None, None)
    try:
        raise ValueError("bug")
    except ValueError:
        bug_exc = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception", None, sys.exc_info())
    other = logging.LogRecord("prefect.client", logging.WARNING, __file__, 1, "the server is slow to answer", None, None)
    assert not f.filter(with_exc) and not f.filter(state) and f.filter(other)
    # a bug is one 'internal error' line from the CLI (the traceback with WINNOW_DEBUG=1), not Prefect's dump
    assert not f.filter(bug) and not f.filter(bug_exc)
    monkeypatch.setenv("WINNOW_CONSOLE_FAILURES", "1")  # winnow serve: a service shows its runs' failures
    # (no CLI prints them there): a user error as its one state line, never its traceback
    assert f.filter(bug) and f.filter(bug_exc) and f.filter(state) and not f.filter(with_exc)
    monkeypatch.setenv("WINNOW_DEBUG", "1")
    assert f.filter(with_exc) and f.filter(state)


def test_server_problems_are_one_line_with_the_right_exit_code():
    from cli.main import server_problem

    class ConnectError(Exception):
        pass

    class RemoteProtocolError(Exception):
        pass

    code, line = server_problem(RuntimeError("Failed to reach API at http://x/api/"))
    assert code == 2 and "cannot reach the Prefect server" in line
    try:
        try:
            raise ConnectError("refused")
        except ConnectError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert server_problem(outer)[0] == 2
    assert server_problem(RemoteProtocolError("peer closed"))[0] == 1
    assert server_problem(ValueError("a bug")) is None
    # a refused request says the server's own reason, not the URL-led text cut at 200 characters
    import httpx

    reason = ("Error creating flow run: Validation failed for field 'config.sources[0].max_rows'. "
              "Failure reason: 'abc' is not valid under any of the given schemas")
    req = httpx.Request("POST", "http://127.0.0.1:4299/api/deployments/" + "8b01" * 16 + "/create_flow_run")
    resp = httpx.Response(409, json={"detail": reason}, request=req)
    err = httpx.HTTPStatusError(f"Client error '409 Conflict' for url '{req.url}'", request=req, response=resp)
    code, line = server_problem(err)
    assert code == 2 and line.endswith(f"refused the request (409): {reason}")


# ----------------------------------------------------------------------------------------- query
def test_an_endless_query_stops_at_its_timeout_with_one_line(empty_db, tmp_path):
    """Exit 2 within timeout + 5 s of the query starting. The process's own start-up (imports: ~1 s on an
    idle machine, 10x that on a loaded one) is measured alongside with a trivial query and left out."""
    def timed(sql: str, timeout: str) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        p = subprocess.run([str(WINNOW), "query", sql, "--db", str(empty_db), "--timeout", timeout], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=120)
        return p, time.monotonic() - t0

    _, startup = timed("SELECT 1", "60")
    p, elapsed = timed(ENDLESS, "2")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "query stopped after --timeout 2 s" in p.stderr
    assert elapsed - startup < 2 + 5, f"took {elapsed:.1f} s, of which start-up ~{startup:.1f} s"


def test_ctrl_c_stops_a_running_query_at_once(empty_db, tmp_path):
    proc = subprocess.Popen([str(WINNOW), "query", ENDLESS, "--db", str(empty_db), "--timeout", "600"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)  # well inside the query (start-up is ~1-2 s)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.strip() == "error: interrupted"
    assert stopped < 2.0, f"took {stopped:.2f} s"


def test_query_results_stream_and_stop_at_the_limit(empty_db, tmp_path):
    p = subprocess.run([str(WINNOW), "query", "SELECT range AS i FROM range(100000)", "--db", str(empty_db), "--json",
                        "--limit", "5000"], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    import json

    rows = json.loads(p.stdout)
    assert p.returncode == 0 and len(rows) == 5000 and rows[-1] == {"i": 4999}
    assert p.stderr.strip() == "note: --limit 5000 reached: more rows match (raise --limit, or narrow the query)"
    exact = subprocess.run([str(WINNOW), "query", "SELECT range AS i FROM range(5000)", "--db", str(empty_db), "--json",
                            "--limit", "5000"], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert exact.returncode == 0 and len(json.loads(exact.stdout)) == 5000 and exact.stderr == ""  # nothing was cut
    bad = subprocess.run([str(WINNOW), "query", "selec 1", "--db", str(empty_db), "--json"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.startswith("error: query does not parse")  # no stray "["


def test_query_prints_bracketed_column_names_and_values_as_text(empty_db, tmp_path):
    sql = 'SELECT 1 AS "[y]", 2 AS "[bold]z", \'[red]v\' AS "a[b]"'
    env = {**_env(tmp_path), "COLUMNS": "200"}
    p = subprocess.run([str(WINNOW), "query", sql, "--db", str(empty_db)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "[y]" in p.stdout and "[bold]z" in p.stdout and "a[b]" in p.stdout and "[red]v" in p.stdout, p.stdout


def _hostile(db: Path, *statements: str) -> None:
    with duckdb.connect(str(db)) as con:
        for st in statements:
            con.execute(st)


SECRET = "read_text('{f}')"


@pytest.mark.parametrize("case", ["stored path", "artifacts link to /", "glob", "view reads a file"])
def test_a_crafted_database_cannot_open_the_query_sandbox(empty_db, tmp_path, case):
    """The database file is the user's: what it says about shard files is never trusted. Paths are rebuilt
    from (set_id, kind, shard) in winnow's own layout, links below the artifacts folder are refused, and
    the query's connection is locked before anything reads the file."""
    from storage.query import run_query

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    row = "INSERT INTO shard_files VALUES ('{set_id}', 'vectors', 0, 0, 1, 'h', '{path}', now())"
    if case == "stored path":
        _hostile(empty_db, row.format(set_id="set-abc", path=secret), row.format(set_id="../..", path=secret).replace(", 0, 0", ", 1, 0"))
    elif case == "artifacts link to /":  # every absolute path would lie "inside" a resolved artifacts folder
        Path(str(empty_db.with_suffix("")) + ".artifacts").symlink_to("/")
        _hostile(empty_db, row.format(set_id="set-abc", path=secret))
    elif case == "glob":
        art = Path(str(empty_db.with_suffix("")) + ".artifacts")
        (art / "shards").mkdir(parents=True)
        (art / "shards" / "set-abc").symlink_to(tmp_path)  # a link below the artifacts folder
        (tmp_path / "shard-00000.parquet").write_text("not parquet")
        _hostile(empty_db, row.format(set_id="set-abc", path="x"))
    else:  # shard_files replaced by a view that reads a file while the sandbox is being set up
        _hostile(empty_db, "DROP TABLE shard_files",
                 f"CREATE VIEW shard_files AS SELECT error(content) AS set_id FROM read_text('{secret}')")
    store = Store(empty_db)
    for sql in (f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM glob('{tmp_path}/*')"):
        with pytest.raises(WinnowError) as err:
            run_query(store, sql)
        assert "s3cret" not in str(err.value) and ("cannot touch files" in str(err.value) or "query failed" in str(err.value))
    assert run_query(store, "SELECT 1 AS one") == [{"one": 1}]


def test_query_streams_batches_without_holding_the_result():
    from storage.query import BATCH_ROWS

    assert BATCH_ROWS <= 10_000


# ----------------------------------------------------------------- the temporary Prefect server
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_sigkill_of_winnow_takes_its_temporary_prefect_server_down(tmp_path):
    """kill -9 of `winnow ingest` used to orphan the uvicorn server Prefect started; its watchdog ends it."""
    (tmp_path / "c.yaml").write_text("sources:\n  - {name: d, kind: sklearn_digits, max_rows: 200}\n")
    proc = subprocess.Popen([str(WINNOW), "ingest", "c.yaml", "--db", str(tmp_path / "w.duckdb")], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    deadline = time.monotonic() + 240
    try:
        while server is None and time.monotonic() < deadline and proc.poll() is None:
            server = next((c for c in _children(proc.pid) if "flows._server_watchdog" in _cmdline(c)), None)
            time.sleep(0.2)
        assert server is not None, "winnow never started its temporary server"
        proc.kill()
        proc.wait()
        gone = time.monotonic() + 10
        while time.monotonic() < gone and Path(f"/proc/{server}").exists() and "watchdog" in _cmdline(server):
            time.sleep(0.1)
        assert not (Path(f"/proc/{server}").exists() and "watchdog" in _cmdline(server)), "the server outlived winnow"
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None and "watchdog" in _cmdline(server):
            os.kill(server, signal.SIGKILL)


# ------------------------------------------------------------------------------------ fit plots
def test_a_prediction_outside_its_interval_still_plots(tmp_path):
    """errorbar refused the negative offset ('yerr must not contain negative values') whenever a
    prediction fell outside its bootstrap interval; the interval is now drawn from its own ends."""
    import dataclasses

    import numpy as np

    from tasks.scaling.api import fit_report
    from tasks.scaling.plot import plot_fit

    x = 100.0 * 2.0 ** np.arange(8)
    y = 0.05 + 2.0 * x ** -0.4
    report = fit_report(x, y, form="m2", predict_at=[1e5, 1e6], holdout_largest=0)
    p = np.asarray(report.predictions if report.predictions is not None else report.fit.predictions)
    outside = dataclasses.replace(report, predictions=p, pred_lo=p * 1.2, pred_hi=p * 1.5)  # point below its interval
    plot_fit(tmp_path / "fit.png", outside)
    assert (tmp_path / "fit.png").stat().st_size > 1000


def test_ctrl_c_in_a_terminal_interrupts_a_run_at_once(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group. The temporary Prefect server runs in
    its own session, so it survives the signal until winnow stops it: the run exits 130 with one line
    (it used to hang 3-5 minutes retrying a dead API, then exit 2 with a wrong hint)."""
    cfg = tmp_path / "long.yaml"
    cfg.write_text("sources:\n  - {name: digits, kind: sklearn_digits}\n"
                   "encoder: {kind: ssl_cnn, dim: 16, epochs: 50, max_train: 1200}\n")
    proc = subprocess.Popen([str(WINNOW), "run", str(cfg), "--db", str(tmp_path / "w.duckdb")], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    leases = tmp_path / "w.artifacts" / "leases"
    try:
        deadline = time.monotonic() + 240
        while not list(leases.glob("*.lease")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the run is recorded inside the flow: the temporary server is up by then
        time.sleep(3)  # inside the ~50 s of encoder training
        assert proc.poll() is None
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group
        _, err = proc.communicate(timeout=120)
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Error logging to API" not in err
    assert stopped < 30, f"took {stopped:.1f} s"
    import json

    runs = subprocess.run([str(WINNOW), "runs", "--db", str(tmp_path / "w.duckdb"), "--json"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    (attempt,) = json.loads(runs.stdout)
    assert attempt["status"] == "failed" and attempt["error"] == "interrupted (Ctrl-C or SIGINT)"


def test_an_unreachable_dask_scheduler_is_one_line_before_the_run():
    """Exit 2 like an unreachable Prefect server (it was a 30 s wait, then exit 1 with an OSError)."""
    import socket

    from flows.runner import check_reachable

    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(WinnowError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
            check_reachable(f"tcp://127.0.0.1:{port}")
    with pytest.raises(WinnowError, match="is not a Dask scheduler address"):
        check_reachable("scheduler-without-port")
