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

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

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


PLAN_MIX = ("mixture:\n  pools: [{name: a, source: digits, n: 120, seed: 1}, {name: b, source: digits, n: 120, seed: 2}]\n"
            "  target: {source: digits, split: test, n_ot: 30, n_eval: 40}\n  features: {image_size: 8, dim: 16}\n")

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
    # ---- embeddings
    Case("text encoder on an image source", ["run", "{cfg}"], "digits",
         cfg("encoder: {kind: minilm, sources: [digits]}\n")),
    Case("encoder names an unknown source", ["run", "{cfg}"], "nope", cfg("encoder: {kind: pca, dim: 8, sources: [nope]}\n")),
    Case("encoder dim not positive", ["run", "{cfg}"], "key 'encoder.dim'", cfg("encoder: {kind: pca, dim: 0}\n")),
    # ---- metrics and selection
    Case("fraction outside (0, 1]", ["run", "{cfg}"], "fraction=1.5 must be in (0, 1]",
         cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [ssp], fractions: [1.5]}\n")),
    Case("zero budget", ["run", "{cfg}"], "must be in (0, 1]", cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [ssp], fractions: [0]}\n")),
    Case("negative count", ["run", "{cfg}"], "key 'prune.counts", cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [ssp], counts: [-5]}\n")),
    Case("count larger than the pool", ["run", "{cfg}"], "count=100000 exceeds",
         cfg("encoder: {kind: pca, dim: 2, sources: [digits]}\nprune: {sources: [digits], metrics: [ssp], fractions: [], counts: [100000]}\n")),
    Case("k larger than n", ["run", "{cfg}"], "k=5000 clusters exceeds",
         cfg("encoder: {kind: pca, dim: 2, sources: [digits]}\nprune: {sources: [digits], metrics: [ssp], k: 5000}\n")),
    Case("unknown metric", ["run", "{cfg}"], "key 'prune.metrics.0'", cfg("encoder: {kind: pca, dim: 8}\nprune: {metrics: [entropy]}\n")),
    Case("labels required but absent", ["run", "{cfg}"], "needs labels",
         "sources:\n  - {name: unl, kind: csv, path: good.csv, features: [a, b, c]}\nencoder: {kind: pca, dim: 2}\nprune: {metrics: [el2n]}\n"),
    Case("prune without an encoder", ["run", "{cfg}"], "encoder", cfg("prune: {metrics: [ssp]}\n")),
    # ---- mixture
    Case("class proportions off the simplex", ["run", "{cfg}"], "must be >= 0 and sum to at most 1",
         cfg("mixture:\n  pools: [{name: a, source: digits, class_proportions: {'0': 0.9, '1': 0.9}}, {name: b, source: digits}]\n  target: {source: digits}\n")),
    Case("pilot sizes not increasing", ["run", "{cfg}"], "must be strictly increasing",
         cfg("mixture:\n  pools: [{name: a, source: digits}, {name: b, source: digits}]\n  target: {source: digits}\n  pilot_sizes: [400, 200]\n")),
    Case("pool from an unknown source", ["run", "{cfg}"], "nope",
         cfg("mixture:\n  pools: [{name: a, source: nope}, {name: b, source: digits}]\n  target: {source: digits}\n")),
    Case("pool labels missing from the target", ["run", "{cfg}"], "label",
         cfg("  - {name: other, kind: csv, path: other.csv, label: y}\nmixture:\n  pools: [{name: a, source: tab}, {name: b, source: other}]\n"
             "  target: {source: tab, split: all, n_ot: 20, n_eval: 20}\n  pilot_sizes: [20, 40]\n"),
         lambda t: (t / "other.csv").write_text("a,b,c,y\n" + "".join(f"{i},{i % 7},{i % 5},{'xy'[i % 2]}\n" for i in range(80)))),
    Case("pool empty after filtering", ["run", "{cfg}"], "pool",
         cfg("mixture:\n  pools: [{name: a, source: digits, class_proportions: {'0': 1.0}, n: 5000}, {name: b, source: digits}]\n  target: {source: digits, n_ot: 20, n_eval: 20}\n  pilot_sizes: [20, 40]\n")),
    # ---- planner
    Case("plan without a mixture section", ["plan", "{cfg}"], "needs a 'mixture' section", cfg("plan: {target_n: 5000}\n")),
    Case("plan keep fraction of 1", ["plan", "{cfg}"], "key 'plan.fractions'",
         cfg(PLAN_MIX + "plan: {target_n: 300, fractions: [1.0]}\n")),
    Case("plan unknown policy metric", ["plan", "{cfg}"], "unknown metric 'entropy'",
         cfg(PLAN_MIX + "plan: {target_n: 300, policies: ['entropy:hard']}\n")),
    Case("plan pilot sizes not below N", ["plan", "{cfg}"], "must stay below target_n=100",
         cfg(PLAN_MIX + "plan: {target_n: 100, pilot_sizes: [50, 100]}\n")),
    Case("plan source budget for an unknown pool", ["plan", "{cfg}"], "pool 'nope'",
         cfg(PLAN_MIX + "plan: {target_n: 300, pilot_sizes: [20, 40], source_budget: {nope: 5}}\n")),
    Case("plan budget nothing fits", ["plan", "{cfg}"], "no (pruning, mixture) candidate is feasible",
         cfg(PLAN_MIX + "plan: {target_n: 200, pilot_sizes: [20, 40], budget: 10}\n")),
    # ---- fitting
    Case("fit csv missing column", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "loss"], "loss",
         files=lambda t: (t / "curve.csv").write_text("n,err\n100,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit csv non-positive size", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "m2"], "n",
         files=lambda t: (t / "curve.csv").write_text("n,err\n0,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit csv NaN", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "m2"], "err",
         files=lambda t: (t / "curve.csv").write_text("n,err\n100,nan\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit with fewer points than parameters", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "pow4", "--holdout-largest", "0"], "points",
         files=lambda t: (t / "curve.csv").write_text("n,err\n100,0.5\n200,0.4\n")),
    Case("unknown fit form", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "cubic"], "cubic",
         files=lambda t: (t / "curve.csv").write_text("n,err\n100,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    # ---- CLI and database
    Case("query that writes", ["query", "DELETE FROM sources"], "read-only"),
    Case("query that reads a file", ["query", "SELECT * FROM read_csv('/etc/hostname')"], "cannot touch files"),
    Case("query with attach", ["query", "ATTACH '{tmp}/x.duckdb' AS x"], "read-only"),
    Case("unknown run", ["show", "pipeline-000000000000"], "no run 'pipeline-000000000000'"),
    Case("db path is a directory", ["run", "{cfg}", "--db", "{tmp}"], "is a directory", cfg("")),
    Case("db from a newer schema", ["run", "{cfg}"], "newer than this winnow", cfg(""), files=lambda t: _bump_schema(t / "db" / "winnow.duckdb")),
    Case("export to an existing file", ["export", "nope:digits:ssp:auto:f=0.5", "--to", "{tmp}/good.csv"], "good.csv"),
]


def _bump_schema(db: Path) -> None:
    import duckdb

    from storage.schema import SCHEMA_VERSION

    con = duckdb.connect(str(db), config={"storage_compatibility_version": "v1.5.0"})
    con.execute("UPDATE winnow_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()


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
