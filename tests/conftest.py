"""Test fixtures: an isolated Prefect (temp PREFECT_HOME + test harness), temp DuckDB files, CLI runner.

Only test modules that run flows start the Prefect harness (``pytestmark =
pytest.mark.usefixtures("prefect_harness")``); pure-function tests never import Prefect.

PREFECT_HOME must point into a temp dir *before* prefect is imported, or persisted task caches leak
between test sessions (see shared/design/prefect-duckdb-notes.md).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="winnow-test-prefect-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("WINNOW_DB", None)
os.environ.setdefault("WINNOW_LOCK_TIMEOUT", "30")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def prefect_harness():
    """One isolated Prefect API for the whole session (flows run against it)."""
    import prefect.main  # noqa: F401  (Prefect configures logging on first import: do it outside any test's capture)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "winnow.duckdb"


@pytest.fixture
def store(db_path: Path):
    from storage.db import Store

    return Store(db_path)


@pytest.fixture
def winnow(capsys, monkeypatch, prefect_harness):
    """Run the CLI in-process like the console script: returns (exit_code, stdout, stderr)."""
    from cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["winnow", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
