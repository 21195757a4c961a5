"""Shared test helpers: DuckDB fingerprints (to prove a failed command changed nothing) and data makers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import duckdb
import numpy as np


VOLATILE = ("started_at", "finished_at", "ingested_at", "created_at", "prefect_flow_run_id", "seconds", "summary", "code_version")


HISTORY = ("run_attempts",)  # every attempt is a row by design: a rerun adds one there and nowhere else


def results_fingerprint(path: Path, ignore: tuple[str, ...] = VOLATILE) -> dict | None:
    """:func:`db_fingerprint` of the results only (the attempt history left out): what a rerun must not change."""
    fp = db_fingerprint(path, ignore)
    return None if fp is None else {t: v for t, v in fp.items() if t not in HISTORY}


def db_fingerprint(path: Path, ignore: tuple[str, ...] = ()) -> dict | None:
    """Row count and an order-independent hash of every table, or None when the file does not exist.

    ``ignore`` names columns left out of the hash (timestamps when comparing two separate runs).
    """
    path = Path(path)
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        out = {}
        for t in tables:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [t]).fetchall()]
            keep = [f'"{c}"' for c in cols if c not in ignore] or ["1"]
            out[t] = con.execute(
                f'SELECT count(*), coalesce(bit_xor(hash(row({", ".join(keep)}))), 0) FROM "{t}"').fetchall()[0]
        return out
    finally:
        con.close()


def referenced_files_exist(path: Path) -> bool:
    """Every Parquet/weights path recorded in any *_path column exists on disk."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE column_name LIKE '%_path' AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type='BASE TABLE')"
        ).fetchall()
        for t, c in cols:
            for (p,) in con.execute(f'SELECT DISTINCT "{c}" FROM "{t}" WHERE "{c}" IS NOT NULL').fetchall():
                q = Path(p)
                if not (q if q.is_absolute() else path.parent / q).exists():
                    return False
        return True
    finally:
        con.close()


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def blobs(n: int = 300, d: int = 8, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs: features (n, d) float32 and labels (n,)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, size=(k, d))
    y = rng.integers(0, k, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, d))).astype(np.float32), y


def db_contents(path: Path, ignore: set[str] | frozenset[str] = frozenset()) -> dict[str, list[tuple]]:
    """Every base table's rows (sorted), without TIMESTAMP columns, the columns named in ``ignore`` and
    the attempt history (:data:`HISTORY`: who ran when, not what was computed).

    For comparing two runs that should have produced the same results at different times.
    """
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols: dict[str, list[str]] = {}
        for table, col, typ in con.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_name) WHERE t.table_type = 'BASE TABLE' "
            "ORDER BY c.table_name, c.ordinal_position"
        ).fetchall():
            if not typ.upper().startswith("TIMESTAMP") and col not in ignore and table not in HISTORY:
                cols.setdefault(table, []).append(col)
        return {t: con.execute(f'SELECT {", ".join(f"{chr(34)}{c}{chr(34)}" for c in cs)} FROM "{t}" ORDER BY ALL').fetchall()
                for t, cs in cols.items()}
    finally:
        con.close()


#: ``python driver.py CONFIG --db ...`` runs ``winnow run`` and appends one line "pilot" to the file named by
#: ``$WINNOW_CHUNKS_LOG`` per finished pilot chunk: the resume test and benchmark kill a run after most of them.
PILOT_COUNTING_DRIVER = textwrap.dedent('''
    import os, sys
    import flows._env
    import flows.mixture as mixture

    log = os.environ["WINNOW_CHUNKS_LOG"]
    real = mixture.run_trials

    def counted(trials, *args, **kwargs):
        out = real(trials, *args, **kwargs)
        if trials and trials[0].stage == "pilot":
            with open(log, "a") as fh:
                fh.write("pilot\\n")
        return out

    mixture.run_trials = counted
    from cli.main import main
    sys.argv = ["winnow", "run", *sys.argv[1:]]
    main()
''')


def mixture_source(sid: int, name: str, n: int, labels: list[str], d: int = 16, shape=(4, 4), seed: int = 0):
    """A labelled image-like :class:`SourceData` of n random rows (every 4th row in the test split)."""
    from tasks.data import SourceData, example_ids_for

    rng = np.random.default_rng(seed)
    ri = np.arange(n)
    y = rng.integers(0, len(labels), size=n)
    return SourceData(sid, name, 1, "npy", f"h{sid}", example_ids_for(sid, ri), ri, rng.random((n, d)).astype(np.float32),
                      None, y, labels, np.where(ri % 4 == 0, "test", "train"), shape)


def mixture_config(**over):
    """A small two-pool :class:`MixtureConfig` over sources A, B and target T (``over`` replaces keys)."""
    from configs.mixture import MixtureConfig

    base = dict(pools=[dict(name="a", source="A", n=60), dict(name="b", source="B", n=60)],
                target=dict(source="T", n_ot=30, n_eval=40), features=dict(image_size=4, dim=8))
    base.update(over)
    return MixtureConfig.model_validate(base)


def mixture_sources(**over) -> dict:
    """Sources A, B (200 rows) and T (400 rows) with labels 0, 1, 2 for :func:`mixture_config`."""
    s = {"A": mixture_source(1, "A", 200, ["0", "1", "2"]), "B": mixture_source(2, "B", 200, ["0", "1", "2"], seed=1),
         "T": mixture_source(3, "T", 400, ["0", "1", "2"], seed=2)}
    s.update(over)
    return s


def flipped_blobs(seed: int = 0, n: int = 1000, n_test: int = 300, rate: float = 0.2):
    """Two classes in 4 dims (means -1/+1 on the first axis, unit noise) with ``rate`` of the pool's labels
    flipped: ``(E, y_noisy, flip, E_test, y_test)`` — keep-hard by distance to the class mean keeps the
    mislabelled rows."""
    rng = np.random.default_rng(seed)

    def draw(m):
        y = rng.integers(0, 2, m)
        return (np.c_[y * 2.0 - 1.0, np.zeros((m, 3))] + rng.normal(size=(m, 4))).astype(np.float32), y

    E, y = draw(n)
    Et, yt = draw(n_test)
    flip = rng.random(n) < rate
    return E, np.where(flip, 1 - y, y), flip, Et, yt
