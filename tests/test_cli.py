"""The CLI end to end: run a config, list runs and sources, show a run, query; errors exit 2 cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import HISTORY, db_fingerprint, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows


@pytest.fixture
def config(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["a,b,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return write_yaml(tmp_path / "run.yaml", "name: small\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n"
                      "  - {name: digits, kind: sklearn_digits, max_rows: 300}\n")


def test_run_records_a_run_and_rerun_is_idempotent(winnow, config, db_path):
    code, out, err = winnow("run", config, "--db", db_path, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [s["name"] for s in summary["sources"]] == ["tab", "digits"]
    before = db_fingerprint(db_path)
    code, out, _ = winnow("run", config, "--db", db_path, "--json")
    assert code == 0 and json.loads(out)["run_id"] == summary["run_id"]
    after = db_fingerprint(db_path)
    assert {t: v[0] for t, v in after.items() if t not in HISTORY} == {t: v[0] for t, v in before.items() if t not in HISTORY}
    assert after["examples"] == before["examples"] and after["sources"] == before["sources"]

    code, out, _ = winnow("runs", "--db", db_path, "--json")
    runs = json.loads(out)  # one row per attempt, newest first; the results stay one run
    assert [(r["run_id"], r["attempt"], r["status"]) for r in runs] == [(summary["run_id"], 2, "completed"),
                                                                       (summary["run_id"], 1, "completed")]
    code, out, _ = winnow("show", summary["run_id"], "--db", db_path, "--json")
    shown = json.loads(out)
    assert shown["tables"] == {"run_sources": 2} and {s["name"] for s in shown["sources"]} == {"tab", "digits"}
    code, out, _ = winnow("sources", "--db", db_path, "--json")
    assert {s["name"]: s["n_rows"] for s in json.loads(out)} == {"tab": 40, "digits": 300}
    code, out, _ = winnow("query", "select count(*) as n from examples", "--db", db_path, "--json")
    assert json.loads(out) == [{"n": 340}]


def test_user_errors_exit_2_with_one_line_and_leave_the_db_unchanged(winnow, config, db_path, tmp_path):
    assert winnow("ingest", config, "--db", db_path)[0] == 0
    before = db_fingerprint(db_path)
    bad_key = write_yaml(tmp_path / "bad.yaml", "sources:\n  - {name: x, kind: mnist, wrong: 1}\n")
    bad_file = write_yaml(tmp_path / "bad2.yaml", "sources:\n  - {name: x, kind: csv, path: missing.csv, label: y}\n")
    cases = [
        (("run", bad_key), "key 'sources.0.wrong': unknown key"),
        (("run", bad_file), "file not found"),
        (("run", tmp_path / "nope.yaml"), "config file not found"),
        (("show", "no-such-run"), "no run 'no-such-run'"),
        (("query", "drop table runs"), "read-only"),
        (("run", config, "--only", "prune"), "no 'prune' section"),
    ]
    for args, message in cases:
        code, out, err = winnow(*args, "--db", db_path)
        assert code == 2, (args, out, err)
        assert message in err and "Traceback" not in err
        assert db_fingerprint(db_path) == before


def test_console_script_reports_errors_on_stderr(tmp_path):
    exe = Path(sys.executable).parent / "winnow"
    if not exe.exists():
        pytest.skip("package not installed as a console script")
    out = subprocess.run([str(exe), "runs", "--db", str(tmp_path / "none.duckdb")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no winnow database" in out.stderr
