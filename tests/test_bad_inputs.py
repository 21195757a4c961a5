"""The bad-input corpus: each case runs the real CLI against a populated DuckDB file and must end with
exit code 2, one message naming what and where, and every table of the file unchanged.

Add a case by appending a :class:`Case` to ``CASES``: the files it needs, the CLI arguments
(``{db}``, ``{tmp}`` and ``{cfg}`` are filled in) and a fragment of the expected message.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers import db_fingerprint, write_yaml

DIGITS = "  - {name: digits, kind: sklearn_digits, max_rows: 400}\n"
TAB = "  - {name: tab, kind: csv, path: good.csv, label: y}\n"


def _good_csv(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["a,b,c,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{rng.normal():.4f},{i % 3}" for i in range(120)]
    (tmp / "good.csv").write_text("\n".join(rows) + "\n")


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str
    config: str | None = None
    files: Callable[[Path], object] | None = None
    extra: dict = field(default_factory=dict)


def cfg(body: str) -> str:
    return "sources:\n" + DIGITS + TAB + body


CASES: list[Case] = [
    # ---- config
    Case("unknown top-level key", ["run", "{cfg}"], "key 'colour': unknown key", cfg("colour: red\n")),
    Case("unknown nested key", ["run", "{cfg}"], "key 'sources.0.lables': unknown key",
         "sources:\n  - {name: digits, kind: sklearn_digits, lables: y}\n"),
    Case("wrong value type", ["run", "{cfg}"], "key 'sources.0.max_rows'", "sources:\n  - {name: d, kind: sklearn_digits, max_rows: many}\n"),
    Case("unknown source kind", ["run", "{cfg}"], "key 'sources.0.kind'", "sources:\n  - {name: d, kind: hdf5, path: x.h5}\n"),
    Case("config is a directory", ["run", "{tmp}"], "is a directory"),
    Case("config missing", ["run", "{tmp}/none.yaml"], "config file not found"),
    Case("config not yaml", ["run", "{cfg}"], "not valid YAML", "sources: [\n"),
    Case("stage not in config", ["run", "{cfg}", "--only", "mixture"], "no 'mixture' section", cfg("")),
    # ---- ingestion
    Case("missing data file", ["run", "{cfg}"], "file not found", "sources:\n  - {name: x, kind: csv, path: none.csv, label: y}\n"),
    Case("empty file", ["run", "{cfg}"], "file is empty", "sources:\n  - {name: x, kind: csv, path: e.csv, label: y}\n",
         lambda t: (t / "e.csv").write_text("")),
    Case("header-only csv", ["run", "{cfg}"], "no data rows", "sources:\n  - {name: x, kind: csv, path: h.csv, label: y}\n",
         lambda t: (t / "h.csv").write_text("a,y\n")),
    Case("label column missing", ["run", "{cfg}"], "label column 'target' not found",
         "sources:\n  - {name: x, kind: csv, path: good.csv, label: target}\n"),
    Case("label column all null", ["run", "{cfg}"], "is null at row 0", "sources:\n  - {name: x, kind: csv, path: n.csv, label: y}\n",
         lambda t: (t / "n.csv").write_text("a,y\n1,\n2,\n")),
    Case("non-numeric feature", ["run", "{cfg}"], "not numeric",
         "sources:\n  - {name: x, kind: csv, path: s.csv, label: y, features: [a, b]}\n", lambda t: (t / "s.csv").write_text("a,b,y\n1,x,0\n")),
    Case("inf feature", ["run", "{cfg}"], "NaN/inf at row 1", "sources:\n  - {name: x, kind: csv, path: f.csv, label: y}\n",
         lambda t: (t / "f.csv").write_text("a,y\n1,0\ninf,1\n")),
    Case("corrupt parquet", ["run", "{cfg}"], "not a readable Parquet", "sources:\n  - {name: x, kind: parquet, path: c.parquet}\n",
         lambda t: (t / "c.parquet").write_bytes(b"PAR1\x00\x01garbage")),
    Case("truncated npz", ["run", "{cfg}"], "truncated", "sources:\n  - {name: x, kind: npz, path: t.npz}\n",
         lambda t: (t / "t.npz").write_bytes(b"PK\x03\x04\x14\x00")),
    Case("ragged npy", ["run", "{cfg}"], "Python objects", "sources:\n  - {name: x, kind: npy, path: r.npy}\n",
         lambda t: np.save(t / "r.npy", np.array([[1.0], [1.0, 2.0]], dtype=object), allow_pickle=True)),
    Case("image that is not an image", ["run", "{cfg}"], "not a readable image", "sources:\n  - {name: x, kind: image_dir, path: im}\n",
         lambda t: ((t / "im" / "cat").mkdir(parents=True), (t / "im" / "cat" / "a.png").write_bytes(b"not a png"))),
    Case("duplicate source names", ["run", "{cfg}"], "duplicate source name 'digits'", "sources:\n" + DIGITS + DIGITS),
    Case("data path is a directory", ["run", "{cfg}"], "is a directory", "sources:\n  - {name: x, kind: csv, path: adir, label: y}\n",
         lambda t: (t / "adir").mkdir()),
    # ---- CLI and database
    Case("query that writes", ["query", "DELETE FROM sources"], "read-only"),
    Case("query that reads a file", ["query", "SELECT * FROM read_csv('/etc/hostname')"], "cannot touch files"),
    Case("query with attach", ["query", "ATTACH '{tmp}/x.duckdb' AS x"], "read-only"),
    Case("unknown run", ["show", "pipeline-000000000000"], "no run 'pipeline-000000000000'"),
    Case("db path is a directory", ["run", "{cfg}", "--db", "{tmp}"], "is a directory", cfg("")),
]


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


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_with_one_clear_message_and_the_db_unchanged(case, populated, tmp_path, winnow):
    db = tmp_path / "db" / "winnow.duckdb"
    shutil.copytree(populated.parent, db.parent)
    _good_csv(tmp_path)
    if case.files:
        case.files(tmp_path)
    cfg_path = write_yaml(tmp_path / "case.yaml", case.config) if case.config is not None else tmp_path / "case.yaml"
    argv = [a.format(db=db, tmp=tmp_path, cfg=cfg_path) for a in case.argv]
    if "--db" not in argv:
        argv += ["--db", str(db)]
    before = db_fingerprint(db)
    code, out, err = winnow(*argv)
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert case.expect in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert db_fingerprint(db) == before
