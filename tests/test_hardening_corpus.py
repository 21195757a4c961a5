"""The bad-input corpus, through the installed ``winnow`` console script in a subprocess.

Every case runs against its own copy of a populated DuckDB file (two sources, PCA embeddings, SSP and
random selections) and must end with

* exit code 2,
* exactly one non-empty line on stderr, containing the case's fragment (the file, key or row, and
  usually the fix), and no "Traceback" anywhere,
* every file of the case's folder byte-for-byte as before: the DuckDB file, its artifacts folder (no
  file added, changed or removed, no staged leftovers), the data files and any export/report target,
* and the table fingerprints of the copy unchanged (a second check, readable when bytes differ).

Cases that run a flow talk to one Prefect server started for the module (a configured server, as in
production); :func:`test_one_line_through_the_temporary_server` checks the same with no server
configured. The whole corpus (``CASES``, 140+) is ``slow``; the ``QUICK`` subset (every category, 30+
cases) runs in the default suite. Cases run in parallel threads (each in its own folder).

Add a case by appending a :class:`Case` to ``CASES``: the CLI arguments (``{db}``, ``{tmp}``, ``{cfg}``,
``{run}``, ``{sel}`` are filled in), the fragment of the expected line, and the config text or the
files it needs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers import db_fingerprint

WINNOW = Path(sys.executable).parent / "winnow"
DIGITS = "  - {name: digits, kind: sklearn_digits, max_rows: 400}\n"
TAB = "  - {name: tab, kind: csv, path: good.csv, label: y}\n"
GOOD = "name: corpus\nsources:\n" + DIGITS + TAB + (
    "encoder: {kind: pca, dim: 8, sources: [digits]}\n"
    "prune: {sources: [digits], metrics: [ssp, random], fractions: [0.5]}\n")
PCA = "encoder: {kind: pca, dim: 8, sources: [digits]}\n"


def good_csv(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["a,b,c,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{rng.normal():.4f},{i % 3}" for i in range(120)]
    (tmp / "good.csv").write_text("\n".join(rows) + "\n")


def cfg(body: str = "") -> str:
    return "sources:\n" + DIGITS + TAB + body


def src(line: str, body: str = "") -> str:
    return "sources:\n  - " + line + "\n" + body


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    expect: str
    config: str | None = None
    files: Callable[[Path], object] | None = None
    env: dict[str, str] = field(default_factory=dict)
    flow: bool = False  # runs a Prefect flow: needs the server
    quick: bool = False  # part of the default-suite subset
    db: bool = True  # append --db {db} when the argv has none
    existing_report: bool = False  # an earlier report of the populated run is in {tmp}/rep


# ------------------------------------------------------------------------------------ file makers
def write(name: str, data: str | bytes) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        p = t / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return make


def fifo(name: str) -> Callable[[Path], object]:
    return lambda t: os.mkfifo(t / name)


def unix_socket(name: str) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(t / name))  # the socket file stays after close: a socket on disk, nobody listening
        s.close()
    return make


def link(name: str, target: str) -> Callable[[Path], object]:
    return lambda t: os.symlink(target if target.startswith("/") else t / target, t / name)


def both(*makers: Callable[[Path], object]) -> Callable[[Path], object]:
    return lambda t: [m(t) for m in makers]


def npz(name: str, **arrays: np.ndarray) -> Callable[[Path], object]:
    return lambda t: np.savez(t / name, **arrays)


def npz_lying_header(t: Path) -> None:
    """An npz whose X header declares (10_000_000, 100_000) float64 but holds 80 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (10_000_000, 100_000)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\x00" * 80)
    with zipfile.ZipFile(t / "lie.npz", "w") as zf:
        zf.writestr("X.npy", buf.getvalue())


def png_bomb(t: Path) -> None:
    """A small PNG file whose header says 20000 x 20000 pixels (PIL refuses to decode it)."""
    from PIL import Image

    (t / "im" / "a").mkdir(parents=True)
    (t / "im" / "b").mkdir(parents=True)
    Image.new("L", (20_000, 20_000)).save(t / "im" / "a" / "bomb.png", optimize=True)
    Image.new("L", (8, 8)).save(t / "im" / "b" / "ok.png")


def images(sizes: dict[str, tuple[int, int]]) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        from PIL import Image

        for rel, (w, h) in sizes.items():
            p = t / "im" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (w, h), color=128).save(p)
    return make


def parquet(name: str, columns: dict) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), t / name)
    return make


def big_csv_bad_late(t: Path) -> None:
    """~6 MB of numbers, one bad cell far past pyarrow's 4 MB type-inference block."""
    n = 300_000
    rows = ["a,b,y"] + [f"{i},{i % 97}.5,{i % 3}" for i in range(n)]
    rows[250_001] = "250000,x,1"
    (t / "late.csv").write_text("\n".join(rows) + "\n")


def foreign_duckdb(name: str, sql: str) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        import duckdb

        con = duckdb.connect(str(t / name), config={"storage_compatibility_version": "v1.5.0"})
        con.execute(sql)
        con.close()
    return make


def set_schema_version(value: str) -> Callable[[Path], object]:
    def make(t: Path) -> None:
        import duckdb

        con = duckdb.connect(str(t / "db" / "winnow.duckdb"), config={"storage_compatibility_version": "v1.5.0"})
        con.execute("UPDATE winnow_meta SET value = ? WHERE key = 'schema_version'", [value])
        con.close()
    return make


def bump_schema(t: Path) -> None:
    from storage.schema import SCHEMA_VERSION

    set_schema_version(str(SCHEMA_VERSION + 1))(t)


RUN = ["run", "{cfg}"]
PLAN_MIX = ("mixture:\n  pools: [{name: a, source: digits, n: 120, seed: 1}, {name: b, source: digits, n: 120, seed: 2}]\n"
            "  target: {source: digits, split: test, n_ot: 30, n_eval: 40}\n  features: {image_size: 8, dim: 16}\n")
S = "{name: x, kind: csv, path: d.csv, label: y}"

CASES: list[Case] = [
    # ================================================================= configs (no flow starts)
    Case("unknown top-level key", RUN, "key 'colour': unknown key", cfg("colour: red\n"), quick=True),
    Case("unknown nested key", RUN, "key 'sources.0.lables': unknown key", src("{name: digits, kind: sklearn_digits, lables: y}")),
    Case("wrong value type", RUN, "key 'sources.0.max_rows'", src("{name: d, kind: sklearn_digits, max_rows: many}")),
    Case("unknown source kind", RUN, "key 'sources.0.kind'", src("{name: d, kind: hdf5, path: x.h5}")),
    Case("config is a directory", ["run", "{tmp}"], "is a directory"),
    Case("config missing", ["run", "{tmp}/none.yaml"], "config file not found", quick=True),
    Case("config not yaml", RUN, "not valid YAML at line", "sources: [\n"),
    Case("config is a list", RUN, "must be a YAML mapping", "- a\n- b\n"),
    Case("config is a scalar", RUN, "must be a YAML mapping", "hello\n"),
    Case("config is empty", RUN, "must be a YAML mapping", ""),
    Case("config not UTF-8", RUN, "not a UTF-8 text file", files=write("case.yaml", b"sources: \xff\xfe\x00\n")),
    Case("config python tag", RUN, "not valid YAML", "sources: !!python/object/apply:os.system ['true']\n"),
    Case("config alias bomb", RUN, "expands to more than", "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
         "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
         "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
         "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n" + "sources:\n" + DIGITS),
    Case("config too large", RUN, "too large for a run config", files=write("case.yaml", "# pad\n" * 300_000)),
    Case("config is a FIFO", RUN, "is a FIFO", files=fifo("case.yaml"), quick=True),
    Case("config is a device", ["run", "/dev/zero"], "is a device", quick=True),
    Case("config is a socket", RUN, "is a socket", files=unix_socket("case.yaml")),
    Case("config symlink to a FIFO", RUN, "is a FIFO", files=both(fifo("pipe"), link("case.yaml", "pipe"))),
    Case("duplicate top-level key", RUN, "key 'sources' appears twice", "sources:\n" + DIGITS + "sources:\n" + TAB, quick=True),
    Case("duplicate nested key", RUN, "key 'max_rows' appears twice", src("{name: d, kind: sklearn_digits, max_rows: 5, max_rows: 9}")),
    Case("empty sources", RUN, "key 'sources'", "sources: []\n"),
    Case("no sources key", RUN, "key 'sources'", "name: x\n"),
    Case("bad source name", RUN, "key 'sources.0.name'", src("{name: 1bad, kind: sklearn_digits}")),
    Case("file kind without path", RUN, "needs a 'path'", src("{name: x, kind: csv, label: y}")),
    Case("built-in kind with path", RUN, "takes no 'path'", src("{name: x, kind: sklearn_digits, path: a.csv}")),
    Case("duplicate source names", RUN, "duplicate source name 'digits'", "sources:\n" + DIGITS + DIGITS),
    Case("test fraction above 1", RUN, "key 'sources.0.test_fraction'", src("{name: d, kind: sklearn_digits, test_fraction: 1.5}")),
    Case("max_rows zero", RUN, "key 'sources.0.max_rows'", src("{name: d, kind: sklearn_digits, max_rows: 0}")),
    Case("batch_rows zero", RUN, "key 'sources.0.batch_rows'", src("{name: d, kind: sklearn_digits, batch_rows: 0}")),
    Case("negative seed", RUN, "key 'sources.0.seed': a seed must be a whole number", src("{name: d, kind: csv, path: good.csv, label: y, seed: -1}"), quick=True),
    Case("seed 2**64", RUN, "key 'sources.0.seed'", src("{name: d, kind: csv, path: good.csv, label: y, seed: 18446744073709551616}")),
    Case("fractional seed", RUN, "key 'sources.0.seed'", src("{name: d, kind: sklearn_digits, seed: 1.5}")),
    Case("negative prune seed", RUN, "key 'prune.seed'", cfg(PCA + "prune: {metrics: [ssp], seed: -3}\n")),
    Case("image_size zero", RUN, "key 'sources.0.image_size'", src("{name: x, kind: image_dir, path: im, image_size: [0, 0]}"), quick=True),
    Case("image_size huge", RUN, "between 1 and 4096", src("{name: x, kind: image_dir, path: im, image_size: [100000, 100000]}")),
    Case("delimiter two characters", RUN, "key 'sources.0.delimiter'", src("{name: x, kind: csv, path: good.csv, label: y, delimiter: ';;'}"), quick=True),
    Case("delimiter empty", RUN, "key 'sources.0.delimiter'", src("{name: x, kind: csv, path: good.csv, label: y, delimiter: ''}")),
    Case("delimiter newline", RUN, "key 'sources.0.delimiter'", src('{name: x, kind: csv, path: good.csv, label: y, delimiter: "\\n"}')),
    Case("features empty list", RUN, "features is an empty list", src("{name: x, kind: csv, path: good.csv, label: y, features: []}"), quick=True),
    Case("features twice", RUN, "names 'a' twice", src("{name: x, kind: csv, path: good.csv, label: y, features: [a, a]}")),
    Case("bad_cells unknown", RUN, "key 'sources.0.bad_cells'", src("{name: x, kind: csv, path: good.csv, label: y, bad_cells: ignore}")),
    Case("infinite OT reg", RUN, "key 'mixture.ot.reg': numbers must be finite", cfg(
        "mixture:\n  pools: [{name: a, source: digits}, {name: b, source: tab}]\n  target: {source: digits}\n  ot: {reg: .inf}\n"), quick=True),
    Case("NaN class proportion", RUN, "numbers must be finite", cfg(
        "mixture:\n  pools: [{name: a, source: digits, class_proportions: {'0': .nan}}, {name: b, source: digits}]\n  target: {source: digits}\n")),
    Case("negative infinite target size", RUN, "key 'extrapolate.target_sizes.0'", cfg("extrapolate: {target_sizes: [-.inf]}\n")),
    Case("NaN huber delta", RUN, "numbers must be finite", cfg("extrapolate: {huber_delta: .nan}\n")),
    Case("bootstrap too large", RUN, "key 'extrapolate.bootstrap'", cfg("extrapolate: {bootstrap: 1000000000}\n")),
    Case("config db empty", RUN, "key 'db': db is empty", "db: ''\nsources:\n" + DIGITS, db=False),
    Case("config db under a file", RUN, "is a file, not a folder", "db: good.csv/x.duckdb\nsources:\n" + DIGITS, db=False),
    Case("stage not in config", ["run", "{cfg}", "--only", "mixture"], "no 'mixture' section", cfg(""), quick=True),
    Case("unknown stage in --only", ["run", "{cfg}", "--only", "bogus"], "bogus", cfg("")),
    Case("task runner kind", RUN, "key 'task_runner.kind'", cfg("task_runner: {kind: ray}\n")),
    Case("schedule with both", RUN, "exactly one of 'cron' or 'interval_seconds'", cfg("deploy: {schedules: [{cron: '* * * * *', interval_seconds: 60}]}\n")),
    Case("encoder dim not positive", RUN, "key 'encoder.dim'", cfg("encoder: {kind: pca, dim: 0}\n")),
    Case("encoder kind unknown", RUN, "key 'encoder.kind'", cfg("encoder: {kind: bert}\n")),
    Case("fraction outside (0, 1]", RUN, "fraction=1.5 must be in (0, 1]", cfg(PCA + "prune: {metrics: [ssp], fractions: [1.5]}\n"), quick=True),
    Case("zero budget", RUN, "must be in (0, 1]", cfg(PCA + "prune: {metrics: [ssp], fractions: [0]}\n")),
    Case("negative count", RUN, "key 'prune.counts", cfg(PCA + "prune: {metrics: [ssp], counts: [-5]}\n")),
    Case("unknown metric", RUN, "key 'prune.metrics.0'", cfg(PCA + "prune: {metrics: [entropy]}\n")),
    Case("unknown device", RUN, "prune.device", cfg(PCA + "prune: {metrics: [ssp], device: tpu}\n")),
    Case("min_cluster_share without balance none", RUN, "applies only with balance: none",
         cfg(PCA + "prune: {metrics: [ssp], min_cluster_share: 0.5}\n"), quick=True),
    Case("class proportions off the simplex", RUN, "must be >= 0 and sum to at most 1", cfg(
        "mixture:\n  pools: [{name: a, source: digits, class_proportions: {'0': 0.9, '1': 0.9}}, {name: b, source: digits}]\n  target: {source: digits}\n")),
    Case("pilot sizes not increasing", RUN, "must be strictly increasing", cfg(
        "mixture:\n  pools: [{name: a, source: digits}, {name: b, source: digits}]\n  target: {source: digits}\n  pilot_sizes: [400, 200]\n")),
    Case("plan without a mixture section", ["plan", "{cfg}"], "needs a 'mixture' section", cfg("plan: {target_n: 5000}\n")),
    # ========================================================= data files (the flow starts, then refuses)
    Case("missing data file", RUN, "file not found", src(S), flow=True, quick=True),
    Case("empty file", RUN, "file is empty", src(S), write("d.csv", ""), flow=True),
    Case("header-only csv", RUN, "no data rows", src(S), write("d.csv", "a,y\n"), flow=True),
    Case("label column missing", RUN, "label column 'target' not found", src("{name: x, kind: csv, path: good.csv, label: target}"), flow=True),
    Case("label column all null", RUN, "is null at row 1", src(S), write("d.csv", "a,y\n1,\n2,\n"), flow=True),
    Case("non-numeric feature listed", RUN, "feature column 'b' is not numeric",
         src("{name: x, kind: csv, path: d.csv, label: y, features: [a, b]}"), write("d.csv", "a,b,y\n1,x,0\n"), flow=True),
    Case("numeric-looking column with a bad cell", RUN, "column 'b' looks numeric but row 2 holds 'x'", src(S),
         write("d.csv", "a,b,y\n1,2,0\n3,x,1\n4,5,0\n6,7,1\n"), flow=True, quick=True),
    Case("bad cell past the first block", RUN, "row 250001 holds 'x'",
         src("{name: x, kind: csv, path: late.csv, label: y}"), big_csv_bad_late, flow=True),
    Case("inf feature", RUN, "NaN/inf at row 2", src(S), write("d.csv", "a,y\n1,0\ninf,1\n"), flow=True),
    Case("duplicate column names", RUN, "column name 'a' appears 2 times", src(S), write("d.csv", "a,a,y\n1,2,0\n3,4,1\n"), flow=True, quick=True),
    Case("text on a numeric column", RUN, "text column 'a' holds double", src("{name: x, kind: csv, path: good.csv, label: y, text: a}"), flow=True),
    Case("wrong delimiter", RUN, "wrong delimiter", src("{name: x, kind: csv, path: d.csv, label: y}"),
         write("d.csv", "a;b;y\n1;2;0\n3;4;1\n"), flow=True),
    Case("split values", RUN, "must hold 'train' or 'test', got 'dev' at row 2",
         src("{name: x, kind: csv, path: d.csv, label: y, split: s}"), write("d.csv", "a,s,y\n1,train,0\n2,dev,1\n"), flow=True),
    Case("all rows in the test split", RUN, "no training rows",
         src("{name: x, kind: csv, path: d.csv, label: y, split: s}"), write("d.csv", "a,s,y\n1,test,0\n2,test,1\n"), flow=True),
    Case("csv is a FIFO", RUN, "is a FIFO", src(S), fifo("d.csv"), flow=True, quick=True),
    Case("csv is a device", RUN, "is a device", src("{name: x, kind: csv, path: /dev/zero, label: y}"), flow=True),
    Case("csv is a socket", RUN, "is a socket", src(S), unix_socket("d.csv"), flow=True),
    Case("csv symlink to a FIFO", RUN, "is a FIFO", src(S), both(fifo("p"), link("d.csv", "p")), flow=True),
    Case("data path is a directory", RUN, "is a directory", src(S), lambda t: (t / "d.csv").mkdir(), flow=True),
    Case("csv invalid UTF-8 text", RUN, "source 'x'", src("{name: x, kind: csv, path: d.csv, label: y, text: t}"),
         write("d.csv", b"t,y\nok,0\n\xff\xfe bad,1\n"), flow=True),
    Case("corrupt parquet", RUN, "not a readable Parquet", src("{name: x, kind: parquet, path: c.parquet}"),
         write("c.parquet", b"PAR1\x00\x01garbage"), flow=True, quick=True),
    Case("parquet list label", RUN, "label column 'y' has type list", src("{name: x, kind: parquet, path: l.parquet, label: y}"),
         parquet("l.parquet", {"a": [1.0, 2.0], "y": [[1, 2], [3]]}), flow=True),
    Case("parquet ragged embedding", RUN, "ragged features: row 2", src("{name: x, kind: parquet, path: e.parquet, label: y, features: v}"),
         parquet("e.parquet", {"v": [[1.0, 2.0], [3.0]], "y": [0, 1]}), flow=True),
    Case("parquet null embedding", RUN, "embedding column 'v' is null at row 2", src("{name: x, kind: parquet, path: e.parquet, label: y, features: v}"),
         parquet("e.parquet", {"v": [[1.0, 2.0], None], "y": [0, 1]}), flow=True),
    Case("parquet NaN label", RUN, "label column 'y' is null at row 2", src("{name: x, kind: parquet, path: n.parquet, label: y}"),
         parquet("n.parquet", {"a": [1.0, 2.0], "y": [0.0, float("nan")]}), flow=True),
    Case("truncated npz", RUN, "truncated", src("{name: x, kind: npz, path: t.npz}"), write("t.npz", b"PK\x03\x04\x14\x00"), flow=True),
    Case("npz scalar X", RUN, "must be (n, d) or (n, h, w), got shape ()", src("{name: x, kind: npz, path: s.npz}"),
         npz("s.npz", X=np.array(3.0)), flow=True, quick=True),
    Case("npz header declares too much", RUN, "declares shape (10000000, 100000)", src("{name: x, kind: npz, path: lie.npz}"),
         npz_lying_header, flow=True, quick=True),
    Case("npz without X", RUN, "npz has no array 'X'", src("{name: x, kind: npz, path: k.npz}"), npz("k.npz", Z=np.zeros((4, 2))), flow=True),
    Case("npz labels length", RUN, "features have 4 rows but labels have 3", src("{name: x, kind: npz, path: k.npz}"),
         npz("k.npz", X=np.zeros((4, 2)), y=np.zeros(3)), flow=True),
    Case("npz labels 2-D", RUN, "labels must be 1-D", src("{name: x, kind: npz, path: k.npz}"),
         npz("k.npz", X=np.zeros((4, 2)), y=np.zeros((4, 2))), flow=True),
    Case("npz string features", RUN, "features must be numeric", src("{name: x, kind: npz, path: k.npz}"),
         npz("k.npz", X=np.array([["a", "b"], ["c", "d"]])), flow=True),
    Case("ragged npy", RUN, "Python objects", src("{name: x, kind: npy, path: r.npy}"),
         lambda t: np.save(t / "r.npy", np.array([[1.0], [1.0, 2.0]], dtype=object), allow_pickle=True), flow=True),
    Case("npy 1-D features", RUN, "must be (n, d) or (n, h, w)", src("{name: x, kind: npy, path: v.npy}"),
         lambda t: np.save(t / "v.npy", np.zeros(5)), flow=True),
    Case("npy labels missing", RUN, "file not found", src("{name: x, kind: npy, path: v.npy, labels_path: none.npy}"),
         lambda t: np.save(t / "v.npy", np.zeros((5, 2))), flow=True),
    Case("npy truncated", RUN, "not a valid .npy file", src("{name: x, kind: npy, path: v.npy}"),
         write("v.npy", b"\x93NUMPY\x01\x00"), flow=True),
    Case("jsonl malformed", RUN, "cannot parse JSON lines", src("{name: x, kind: jsonl, path: d.jsonl, label: y}"),
         write("d.jsonl", '{"a": 1, "y": 0}\n{"a": 2, "y": \n'), flow=True),
    Case("jsonl null text", RUN, "text is empty (null) at row 2", src("{name: x, kind: jsonl, path: d.jsonl, label: y, text: t}"),
         write("d.jsonl", '{"t": "hi", "y": 0}\n{"t": null, "y": 1}\n'), flow=True),
    Case("image that is not an image", RUN, "not a readable image", src("{name: x, kind: image_dir, path: im}"),
         write("im/cat/a.png", b"not a png"), flow=True),
    Case("image decompression bomb", RUN, "too large to decode safely", src("{name: x, kind: image_dir, path: im}"), png_bomb, flow=True, quick=True),
    Case("image FIFO", RUN, "is a FIFO (named pipe), not an image", src("{name: x, kind: image_dir, path: im}"),
         both(images({"a/ok.png": (8, 8)}), lambda t: os.mkfifo(t / "im" / "a" / "pipe.png")), flow=True),
    Case("image sizes differ", RUN, "set image_size to resize", src("{name: x, kind: image_dir, path: im}"),
         images({"a/1.png": (8, 8), "b/2.png": (9, 9)}), flow=True),
    Case("image_dir without classes", RUN, "has no class subfolders", src("{name: x, kind: image_dir, path: im}"),
         lambda t: (t / "im").mkdir(), flow=True),
    Case("image_dir without images", RUN, "images under", src("{name: x, kind: image_dir, path: im}"),
         write("im/a/readme.txt", "x"), flow=True),
    Case("image_dir is a file", RUN, "must be a folder", src("{name: x, kind: image_dir, path: good.csv}"), flow=True),
    # ============================================== stage checks (refused before the stage writes)
    Case("text encoder on an image source", RUN, "digits", cfg("encoder: {kind: minilm, sources: [digits]}\n"), flow=True),
    Case("encoder names an unknown source", RUN, "key 'encoder.sources.0': 'nope' is not a source", cfg("encoder: {kind: pca, dim: 8, sources: [nope]}\n")),
    Case("count larger than the pool", RUN, "count=100000 exceeds",
         cfg("encoder: {kind: pca, dim: 2, sources: [digits]}\nprune: {sources: [digits], metrics: [ssp], fractions: [], counts: [100000]}\n"), flow=True),
    Case("k larger than n", RUN, "k=5000 clusters exceeds",
         cfg("encoder: {kind: pca, dim: 2, sources: [digits]}\nprune: {sources: [digits], metrics: [ssp], k: 5000}\n"), flow=True),
    Case("labels required but absent", RUN, "needs labels",
         "sources:\n  - {name: unl, kind: csv, path: good.csv, features: [a, b, c]}\nencoder: {kind: pca, dim: 2}\nprune: {metrics: [el2n]}\n", flow=True),
    Case("prune without an encoder", RUN, "key 'prune': the prune stage needs an 'encoder' section", cfg("prune: {metrics: [ssp]}\n")),
    Case("pool from an unknown source", RUN, "key 'mixture.pools.0.source': 'nope' is not a source",
         cfg("mixture:\n  pools: [{name: a, source: nope}, {name: b, source: digits}]\n  target: {source: digits}\n")),
    Case("pool labels missing from the target", RUN, "label",
         cfg("  - {name: other, kind: csv, path: other.csv, label: y}\nmixture:\n  pools: [{name: a, source: tab}, {name: b, source: other}]\n"
             "  target: {source: tab, split: all, n_ot: 20, n_eval: 20}\n  pilot_sizes: [20, 40]\n"),
         write("other.csv", "a,b,c,y\n" + "".join(f"{i},{i % 7},{i % 5},{'xy'[i % 2]}\n" for i in range(80))), flow=True),
    Case("pool empty after filtering", RUN, "pool",
         cfg("mixture:\n  pools: [{name: a, source: digits, class_proportions: {'0': 1.0}, n: 5000}, {name: b, source: digits}]\n"
             "  target: {source: digits, n_ot: 20, n_eval: 20}\n  pilot_sizes: [20, 40]\n"), flow=True),
    Case("one-class mixture target", RUN, "target source 'one' has one class ('k')",
         cfg("  - {name: one, kind: csv, path: one.csv, label: y}\nmixture:\n  pools: [{name: a, source: tab}, {name: b, source: tab}]\n"
             "  target: {source: one, split: all, n_ot: 20, n_eval: 20}\n  pilot_sizes: [20, 40]\n"),
         write("one.csv", "a,b,y\n" + "".join(f"{i},{i % 7},k\n" for i in range(60))), flow=True),
    Case("one-class source for a supervised metric", RUN, "metric 'el2n' trains a classifier but source 'one' has 1 class",
         "sources:\n  - {name: one, kind: csv, path: one.csv, label: y}\nencoder: {kind: pca, dim: 2}\nprune: {metrics: [el2n]}\n",
         write("one.csv", "a,b,y\n" + "".join(f"{i},{i % 7},k\n" for i in range(60))), flow=True),
    Case("plan keep fraction of 1", ["plan", "{cfg}"], "key 'plan.fractions'", cfg(PLAN_MIX + "plan: {target_n: 300, fractions: [1.0]}\n")),
    Case("plan unknown policy metric", ["plan", "{cfg}"], "unknown metric 'entropy'",
         cfg(PLAN_MIX + "plan: {target_n: 300, policies: ['entropy:hard']}\n"), flow=True),
    Case("plan pilot sizes not below N", ["plan", "{cfg}"], "must stay below target_n=100",
         cfg(PLAN_MIX + "plan: {target_n: 100, pilot_sizes: [50, 100]}\n"), flow=True),
    Case("plan source budget for an unknown pool", ["plan", "{cfg}"], "pool 'nope'",
         cfg(PLAN_MIX + "plan: {target_n: 300, pilot_sizes: [20, 40], source_budget: {nope: 5}}\n"), flow=True),
    Case("plan budget nothing fits", ["plan", "{cfg}"], "no (pruning, mixture) candidate is feasible",
         cfg(PLAN_MIX + "plan: {target_n: 200, pilot_sizes: [20, 40], budget: 10}\n"), flow=True),
    # ================================================================= database files
    Case("db path is a directory", ["run", "{cfg}", "--db", "{tmp}"], "is a directory", cfg(""), quick=True),
    Case("db from a newer schema", RUN, "newer than this winnow", cfg(""), bump_schema, flow=True, quick=True),
    Case("db newer schema, read", ["runs"], "newer than this winnow", files=bump_schema),
    Case("db schema_version not a number", ["runs"], "winnow_meta.schema_version is 'abc'", files=set_schema_version("abc"), quick=True),
    Case("db schema_version not a number, write", RUN, "not a version number", cfg(""), set_schema_version("abc"), flow=True),
    Case("db is a FIFO, read", ["runs", "--db", "{tmp}/f.duckdb"], "is a FIFO", files=fifo("f.duckdb"), quick=True),
    Case("db is a FIFO, write", ["run", "{cfg}", "--db", "{tmp}/f.duckdb"], "is a FIFO", cfg(""), fifo("f.duckdb")),
    Case("db is a device", ["sources", "--db", "/dev/zero"], "is a device"),
    Case("db is a socket", ["runs", "--db", "{tmp}/s.duckdb"], "is a socket", files=unix_socket("s.duckdb")),
    Case("db symlink to a FIFO", ["runs", "--db", "{tmp}/l.duckdb"], "is a FIFO", files=both(fifo("p"), link("l.duckdb", "p"))),
    Case("db not a DuckDB file, read", ["runs", "--db", "{tmp}/g.duckdb"], "cannot open database", files=write("g.duckdb", b"not a database" * 100)),
    Case("db not a DuckDB file, write", ["run", "{cfg}", "--db", "{tmp}/g.duckdb"], "cannot open database", cfg(""),
         write("g.duckdb", b"not a database" * 100), flow=True, quick=True),
    Case("foreign DuckDB with a runs table, write", ["run", "{cfg}", "--db", "{tmp}/f.duckdb"], "not a usable winnow database", cfg(""),
         foreign_duckdb("f.duckdb", "CREATE TABLE runs (id INTEGER, note VARCHAR); INSERT INTO runs VALUES (1, 'mine')"), flow=True, quick=True),
    Case("foreign DuckDB, read", ["runs", "--db", "{tmp}/f.duckdb"], "holds other tables (runs)",
         files=foreign_duckdb("f.duckdb", "CREATE TABLE runs (id INTEGER)")),
    Case("db under a file", ["runs", "--db", "{tmp}/good.csv/x.duckdb"], "is a file, not a folder"),
    Case("db under a file, write", ["run", "{cfg}", "--db", "{tmp}/good.csv/x.duckdb"], "is a file, not a folder", cfg("")),
    Case("no database yet", ["runs", "--db", "{tmp}/none.duckdb"], "no winnow database at"),
    Case("empty --db", ["runs", "--db", ""], "--db is empty", quick=True),
    Case("blank --db", ["run", "{cfg}", "--db", "  "], "--db is empty", cfg("")),
    # ============================================================ command options and usage
    Case("unknown command", ["nosuchcmd"], "No such command 'nosuchcmd'", db=False, quick=True),
    Case("query without SQL", ["query"], "Missing argument 'sql'", quick=True),
    Case("runs --limit 0", ["runs", "--limit", "0"], "Invalid value for '--limit'", quick=True),
    Case("runs --limit abc", ["runs", "--limit", "abc"], "Invalid value for '--limit'"),
    Case("unknown option", ["runs", "--colour"], "No such option: --colour"),
    Case("show without run id", ["show"], "Missing argument"),
    Case("fit --bootstrap -1", ["fit", "{tmp}/good.csv", "--x", "a", "--y", "b", "--bootstrap", "-1"], "Invalid value for '--bootstrap'", quick=True),
    Case("query that writes", ["query", "DELETE FROM sources"], "read-only", quick=True),
    Case("query that reads a file", ["query", "SELECT * FROM read_csv('/etc/hostname')"], "cannot touch files"),
    Case("query with attach", ["query", "ATTACH '{tmp}/x.duckdb' AS x"], "read-only"),
    Case("query with set", ["query", "SET threads = 1"], "read-only"),
    Case("query that installs", ["query", "INSTALL httpfs"], "read-only"),
    Case("query empty", ["query", "  "], "query is empty"),
    Case("query syntax error", ["query", "SELEC 1"], "query does not parse"),
    Case("query unknown table", ["query", "SELECT * FROM nope"], "query failed"),
    Case("query --timeout 0", ["query", "SELECT 1", "--timeout", "0"], "Invalid value for '--timeout'"),
    Case("query --limit 0", ["query", "SELECT 1", "--limit", "0"], "Invalid value for '--limit'"),
    Case("query endless with a short timeout", ["query", "SELECT count(*) FROM range(100000000000) a, range(1000) b", "--timeout", "1"],
         "query stopped after --timeout 1 s", quick=True),
    Case("show unknown run", ["show", "pipeline-000000000000"], "no run 'pipeline-000000000000'"),
    Case("export unknown selection", ["export", "nope:digits:ssp:auto:f=0.5", "--to", "{tmp}/out.csv"], "nope"),
    Case("export to an existing file", ["export", "{sel}", "--to", "{tmp}/good.csv"], "already exists; pass --force", quick=True),
    Case("export bad suffix", ["export", "{sel}", "--to", "{tmp}/out.txt"], "must end in .parquet or .csv"),
    Case("export under a file", ["export", "{sel}", "--to", "{tmp}/good.csv/out.csv"], "is a file, not a folder", quick=True),
    Case("export to a directory", ["export", "{sel}", "--to", "{tmp}/adir.csv"], "is a directory", files=lambda t: (t / "adir.csv").mkdir()),
    Case("export to a FIFO", ["export", "{sel}", "--to", "{tmp}/p.csv", "--force"], "is a FIFO", files=fifo("p.csv")),
    Case("export over a symlink", ["export", "{sel}", "--to", "{tmp}/l.csv"], "already exists", files=link("l.csv", "good.csv")),
    Case("export missing --to", ["export", "{sel}"], "Missing option '--to'"),
    Case("report unknown run", ["report", "pipeline-000000000000", "--out", "{tmp}/rep"], "pipeline-000000000000"),
    Case("report --out a file", ["report", "{run}", "--out", "{tmp}/good.csv"], "is a file, not a folder", quick=True),
    Case("report exists without --force", ["report", "{run}", "--out", "{tmp}/rep"], "already exists; pass --force",
         existing_report=True, quick=True),
    Case("report run id with a slash", ["report", "../../x", "--out", "{tmp}/rep"], "is not a winnow run id"),
    Case("plans unknown run", ["plans", "pipeline-000000000000"], "pipeline-000000000000"),
    Case("fit missing file", ["fit", "{tmp}/none.csv", "--x", "n", "--y", "err"], "none.csv"),
    Case("fit missing column", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "loss"], "loss",
         files=write("curve.csv", "n,err\n100,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit non-positive size", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "m2"], "n",
         files=write("curve.csv", "n,err\n0,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit NaN", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "m2"], "err",
         files=write("curve.csv", "n,err\n100,nan\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit unknown form", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err", "--form", "cubic"], "cubic",
         files=write("curve.csv", "n,err\n100,0.5\n200,0.4\n400,0.3\n800,0.25\n")),
    Case("fit csv is a FIFO", ["fit", "{tmp}/curve.csv", "--x", "n", "--y", "err"], "curve.csv is a FIFO", files=fifo("curve.csv")),
    Case("perceptron bad alphas", ["experiment", "perceptron", "--alphas", "1,x"], "--alphas '1,x'"),
    Case("trigger without a server", ["trigger", "nightly"], "no Prefect server configured", db=False),
    Case("deploy without a server", ["deploy"], "no Prefect server configured"),
    # ================================================================= environment variables
    Case("WINNOW_LOCK_TIMEOUT not a number", ["runs"], "WINNOW_LOCK_TIMEOUT='abc'", env={"WINNOW_LOCK_TIMEOUT": "abc"}, quick=True),
    Case("WINNOW_LOCK_TIMEOUT negative", ["sources"], "WINNOW_LOCK_TIMEOUT='-1'", env={"WINNOW_LOCK_TIMEOUT": "-1"}),
    Case("WINNOW_LOCK_TIMEOUT nan", ["runs"], "WINNOW_LOCK_TIMEOUT='nan'", env={"WINNOW_LOCK_TIMEOUT": "nan"}),
    Case("WINNOW_LOCK_TIMEOUT on run", RUN, "WINNOW_LOCK_TIMEOUT='abc'", cfg(""), env={"WINNOW_LOCK_TIMEOUT": "abc"}),
    Case("WINNOW_DB a directory", ["runs"], "is a directory", env={"WINNOW_DB": "{tmp}"}, db=False),
    Case("WINNOW_DB blank", ["runs"], "WINNOW_DB is blank", env={"WINNOW_DB": "   "}, db=False),
    Case("WINNOW_DB a FIFO", ["sources"], "is a FIFO", files=fifo("f.duckdb"), env={"WINNOW_DB": "{tmp}/f.duckdb"}, db=False),
    Case("PREFECT_API_URL unreachable", RUN, "cannot reach the Prefect server at http://127.0.0.1:9/api", cfg(""),
         env={"PREFECT_API_URL": "http://127.0.0.1:9/api"}, flow=True),
]

QUICK = [c for c in CASES if c.quick]


# -------------------------------------------------------------------------------------- harness
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINNOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", WINNOW_LOCK_TIMEOUT="5",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", COLUMNS="200")
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Prefect server for the module's flow-running cases (started like docs/operations.md says)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = _base_env(home)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    import urllib.request

    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Prefect server did not start")
            time.sleep(0.5)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Populated:
    folder: Path  # holds db/winnow.duckdb (+ artifacts) and good.csv
    run_id: str
    selection_id: str
    fingerprint: dict


@pytest.fixture(scope="module")
def populated(server, tmp_path_factory) -> Populated:
    """The DB every case copies: digits + a small CSV, PCA embeddings, SSP and random selections."""
    folder = tmp_path_factory.mktemp("populated")
    good_csv(folder)
    (folder / "good.yaml").write_text(GOOD)
    db = folder / "db" / "winnow.duckdb"
    p = subprocess.run([str(WINNOW), "run", "good.yaml", "--db", str(db), "--json"], cwd=folder, env=server,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id = con.execute("SELECT run_id FROM runs WHERE status = 'completed' LIMIT 1").fetchall()[0][0]
        sel = con.execute("SELECT selection_id FROM selections ORDER BY selection_id LIMIT 1").fetchall()[0][0]
    finally:
        con.close()
    (folder / "good.yaml").unlink()
    return Populated(folder, run_id, sel, db_fingerprint(db))


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder``: a regular file's sha256, else its type (directories, links, FIFOs)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = f"link->{os.readlink(p)}"
            continue
        mode = os.lstat(p).st_mode
        if stat.S_ISREG(mode):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if stat.S_ISDIR(mode) else "special"
    return out


@dataclass
class Outcome:
    case: Case
    code: int | None
    out: str
    err: str
    seconds: float
    problems: list[str]


def run_case(case: Case, pop: Populated, tmp: Path, env: dict[str, str]) -> Outcome:
    """Set the case up in ``tmp`` (a copy of the populated DB), run the console script, check everything."""
    shutil.copytree(pop.folder, tmp, dirs_exist_ok=True)
    db = tmp / "db" / "winnow.duckdb"
    if case.existing_report:
        (tmp / "rep").mkdir()
        (tmp / "rep" / f"{pop.run_id}.html").write_text("<p>an earlier report</p>")
    if case.files:
        case.files(tmp)
    cfg_path = tmp / "case.yaml"
    if case.config is not None:
        cfg_path.write_text(case.config)
    fill = dict(db=db, tmp=tmp, cfg=cfg_path, run=pop.run_id, sel=pop.selection_id)
    argv = [a.format(**fill) for a in case.argv]
    if case.db and "--db" not in argv:
        argv += ["--db", str(db)]
    if not case.flow:  # commands that start no flow see no server (trigger/deploy must say so)
        env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    env = {**env, **{k: v.format(**fill) for k, v in case.env.items()}}
    before = snapshot(tmp)
    tables_before = db_fingerprint(db) if db.is_file() else None
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(WINNOW), *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = None, str(e.stdout or ""), f"TIMEOUT {e.stderr or ''}"
    seconds = time.monotonic() - t0
    problems = []
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code != 2:
        problems.append(f"exit {code}")
    if len(lines) != 1 or err.count("\n") > 1:
        problems.append(f"{len(lines)} stderr lines")
    if case.expect not in err:
        problems.append(f"missing {case.expect!r}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback")
    after = snapshot(tmp)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problems.append(f"files changed: {changed[:6]}")
    if tables_before is not None and db_fingerprint(db) != tables_before:
        problems.append("tables changed")
    return Outcome(case, code, out, err, seconds, problems)


def run_corpus(cases: list[Case], pop: Populated, server_env: dict, tmp_path: Path, workers: int = 3) -> list[Outcome]:
    def one(i_case: tuple[int, Case]) -> Outcome:
        i, case = i_case
        return run_case(case, pop, tmp_path / f"case{i:03d}", server_env)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, enumerate(cases)))


def _report(outcomes: list[Outcome]) -> str:
    bad = [o for o in outcomes if o.problems]
    lines = [f"{len(outcomes) - len(bad)}/{len(outcomes)} cases passed"]
    for o in bad:
        lines.append(f"- {o.case.name}: {'; '.join(o.problems)}\n    stderr: {o.err.strip()[-600:]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- tests
def test_the_corpus_is_large_and_covers_every_category():
    assert len(CASES) >= 120 and len(QUICK) >= 30
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    argv0 = {c.argv[0] for c in CASES}
    assert {"run", "plan", "query", "export", "report", "fit", "runs", "show", "sources", "plans", "trigger", "deploy",
            "experiment"} <= argv0
    assert any(c.env for c in QUICK) and any(c.flow for c in QUICK) and any(not c.flow for c in QUICK)


def test_quick_corpus_through_the_console_script(populated, server, tmp_path):
    outcomes = run_corpus(QUICK, populated, server, tmp_path)
    assert all(not o.problems for o in outcomes), _report(outcomes)


@pytest.mark.slow
def test_full_corpus_through_the_console_script(populated, server, tmp_path):
    """``WINNOW_CORPUS_CASES='name|name'`` runs only those cases (by exact name); ``WINNOW_CORPUS_WORKERS``
    sets the threads (default 3); ``WINNOW_CORPUS_REPORT=FILE`` writes the summary and each case's time."""
    cases = CASES
    if os.environ.get("WINNOW_CORPUS_CASES"):
        wanted = [n.strip() for n in os.environ["WINNOW_CORPUS_CASES"].split("|") if n.strip()]
        unknown = sorted(set(wanted) - {c.name for c in CASES})
        assert not unknown, f"no such corpus case: {unknown}"
        cases = [c for c in CASES if c.name in wanted]
    outcomes = run_corpus(cases, populated, server, tmp_path, workers=int(os.environ.get("WINNOW_CORPUS_WORKERS", "3")))
    summary = _report(outcomes)
    out = os.environ.get("WINNOW_CORPUS_REPORT")
    if out:
        Path(out).write_text(summary + "\n" + "\n".join(f"{o.seconds:6.1f} s  {o.case.name}" for o in outcomes) + "\n")
    assert all(not o.problems for o in outcomes), summary


def test_one_line_through_the_temporary_server(populated, tmp_path):
    """No server configured: Prefect starts its temporary one, and its console logging still stays quiet."""
    env = _base_env(tmp_path / "prefect-home")
    case = next(c for c in CASES if c.name == "numeric-looking column with a bad cell")
    outcome = run_case(case, populated, tmp_path / "case", env)
    assert not outcome.problems, _report([outcome])


def test_export_and_report_never_write_through_a_planted_symlink(populated, server, tmp_path):
    """Symlinks at every fixed temp name older versions used, and at the targets themselves (with --force):
    the files they point to stay untouched, and the outputs are written as new regular files.
    (mkstemp's O_EXCL is why no random temp name can be hijacked: tests/test_hardening_io.py plants one.)"""
    shutil.copytree(populated.folder, tmp_path, dirs_exist_ok=True)
    db = tmp_path / "db" / "winnow.duckdb"
    victim = tmp_path / "victim.txt"
    victim.write_text("must stay")
    (tmp_path / "rep").mkdir()
    for name in (".out.csv.tmp", ".out.parquet.tmp", "out.csv", f"rep/.{populated.run_id}.html.tmp", f"rep/{populated.run_id}.html"):
        (tmp_path / name).symlink_to(victim)
    env = {k: v for k, v in server.items() if k != "PREFECT_API_URL"}

    def winnow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(WINNOW), *args, "--db", str(db)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    refused = winnow("export", populated.selection_id, "--to", str(tmp_path / "out.csv"))
    assert refused.returncode == 2 and "already exists; pass --force" in refused.stderr
    for args in (["export", populated.selection_id, "--to", str(tmp_path / "out.csv"), "--force"],
                 ["export", populated.selection_id, "--to", str(tmp_path / "out.parquet")],
                 ["report", populated.run_id, "--out", str(tmp_path / "rep"), "--force"]):
        p = winnow(*args)
        assert p.returncode == 0, p.stderr
    assert victim.read_text() == "must stay"
    for name in ("out.csv", "out.parquet", f"rep/{populated.run_id}.html"):
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).stat().st_size > 0
    assert (tmp_path / ".out.csv.tmp").is_symlink()  # planted links are left alone, never followed
