"""Read-only commands start fast: they never import Prefect, torch or POT (checked in a subprocess
that runs the real entry point), and their CPU time stays small (a generous bound; the measured
figures are in the README)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

PROBE = """
import json, sys
from cli.main import main
sys.argv = ["winnow", *{args!r}]
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("prefect", "torch", "ot", "sklearn", "matplotlib") if m in sys.modules)
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""


def _probe(args: list[str], env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, env=env,
                         timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("PROBE ")][-1]
    res = json.loads(line[len("PROBE "):])
    res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory) -> Path:
    """A winnow file made by the store itself (no flow, no Prefect)."""
    from storage.db import Store

    path = tmp_path_factory.mktemp("startup") / "w.duckdb"
    with Store(path).write():
        pass
    return path


@pytest.mark.parametrize("args", [["--help"], ["runs"], ["sources"], ["selections"], ["plans"], ["embeddings"],
                                  ["query", "select count(*) from runs"]])
def test_read_only_commands_import_no_heavy_library_and_start_fast(args, tiny_db):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    argv = args if args == ["--help"] else [*args, "--db", str(tiny_db)]
    res = _probe(argv, env)
    assert res["code"] in (0, None), res
    assert res["heavy"] == [], f"{args} imported {res['heavy']}"
    assert res["cpu"] < 5.0, f"{args} took {res['cpu']:.2f} s of CPU"  # ~0.2-1 s measured; generous for a busy CI
    assert duckdb.connect(str(tiny_db), read_only=True).execute("select count(*) from runs").fetchall() == [(0,)]
