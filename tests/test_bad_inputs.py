"""Bad inputs refused before any write, checked in-process.

The bad-input corpus itself (every case through the installed console script, one line on stderr,
exit 2, files and tables unchanged) is tests/test_hardening_corpus.py; this module keeps the checks
that need this process's view of the hardware.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import db_fingerprint, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

DIGITS = "  - {name: digits, kind: sklearn_digits, max_rows: 400}\n"
TAB = "  - {name: tab, kind: csv, path: good.csv, label: y}\n"


def _good_csv(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["a,b,c,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{rng.normal():.4f},{i % 3}" for i in range(120)]
    (tmp / "good.csv").write_text("\n".join(rows) + "\n")


def cfg(body: str) -> str:
    return "sources:\n" + DIGITS + TAB + body


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    """A DuckDB file with the two good sources already ingested (so 'unchanged' is a real check)."""
    from configs.base import load_config
    from flows.pipeline import pipeline_flow

    tmp = tmp_path_factory.mktemp("populated")
    _good_csv(tmp)
    path = write_yaml(tmp / "good.yaml", "sources:\n" + DIGITS + TAB)
    db = tmp / "db" / "winnow.duckdb"
    pipeline_flow(config=load_config(path), db=str(db), only=[], progress=False)
    return db


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_asking_for_a_gpu_on_a_cpu_machine_fails_before_any_write(populated, tmp_path, winnow):
    db = tmp_path / "db" / "winnow.duckdb"
    shutil.copytree(populated.parent, db.parent)
    _good_csv(tmp_path)
    path = write_yaml(tmp_path / "gpu.yaml", cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [ssp], device: cuda}\n"))
    before = db_fingerprint(db)
    code, _, err = winnow("run", str(path), "--db", str(db))
    assert code == 2 and "torch sees no CUDA device" in err and "Traceback" not in err
    assert db_fingerprint(db) == before
    bad = write_yaml(tmp_path / "bad.yaml", cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [ssp], device: tpu}\n"))
    code, _, err = winnow("run", str(bad), "--db", str(db))
    assert code == 2 and "prune.device" in err
