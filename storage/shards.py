"""Shard files of the sharded path and their registration in DuckDB.

Files (all Parquet, written under a temporary name, fsynced and renamed, so a crash or a reader
never sees half a file; content-derived folders, so a rerun rewrites the same files):

* ``<artifacts>/shards/<set_id>/shard-NNNNN.parquet`` — one shard of vectors: ``row_index BIGINT``,
  ``vector`` (float32 bytes, :func:`vectors_table`), uncompressed;
* ``<artifacts>/sharded/<run_id>/scores/shard-NNNNN.parquet`` — ``row_index, cluster, cos, score``;
* ``.../parts/p-PPPP/shard-NNNNN.parquet`` — the shard's rows of cluster group ``cluster % P``
  with their vectors (the Parquet partitioned by cluster id that the SemDeDup tasks read);
* ``.../dedup/p-PPPP.parquet`` (``eps, row_index, cluster``) and ``.../members/shard-NNNNN.parquet``.

Tasks write and read these files (never the database); the flow process registers them in
``shard_files`` and exposes each set as ONE DuckDB view (``shard_vectors_<set_id>``,
``shard_scores_<run>``) over ``read_parquet([...])``, and writes members and removed ids into
their tables in bounded batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.db import Store, check_target, insert_arrow, now, rows, safe_write
from tasks.errors import WinnowError
from tasks.shards.plan import Shard

__all__ = [
    "ShardFile",
    "content_hash",
    "export_sharded_selection",
    "load_sharded_run",
    "read_columns",
    "read_vectors",
    "register_shards",
    "run_dir",
    "save_sharded_run",
    "set_dir",
    "shard_name",
    "sharded_selection_id",
    "vector_dim",
    "vectors_table",
    "write_atomic",
]

ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class ShardFile(Shard):
    """A shard on disk: rows ``[start, stop)`` of its set, in ``path`` (absolute, as a str so that
    task cache keys use ``content_hash`` rather than the file's mtime)."""

    path: str
    content_hash: str


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def set_dir(store: Store, set_id: str) -> Path:
    """Folder of a vectors shard set."""
    return store.artifacts_dir / "shards" / set_id


def run_dir(store: Store, run_id: str) -> Path:
    """Folder of a sharded run's scores, cluster groups, removals and members."""
    return store.artifacts_dir / "sharded" / run_id


def content_hash(*arrays: np.ndarray) -> str:
    """blake2b of the arrays' bytes (dtype and shape included): a shard's identity in cache keys."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def vectors_table(row_index: np.ndarray, vectors: np.ndarray, **columns: np.ndarray) -> pa.Table:
    """``row_index BIGINT`` + extra columns + ``vector`` as FIXED_LEN_BYTE_ARRAY(4 d) (float32, little-endian).

    Not ``FLOAT[d]`` as in the embed stage's files: a flat fixed-size binary column decodes 5-10x
    faster than a nested list column (no repetition levels), and every k-means pass reads every
    shard. DuckDB shows the column as BLOB; the other columns are plain.
    """
    n, d = vectors.shape
    X = np.ascontiguousarray(vectors, dtype="<f4")
    data: dict[str, Any] = {"row_index": pa.array(np.asarray(row_index, dtype=np.int64))}
    data.update({k: pa.array(v) for k, v in columns.items()})
    data["vector"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * d), n, [None, pa.py_buffer(X)])
    return pa.table(data)


def write_atomic(table: pa.Table, path: str | Path, *, compression: str = "zstd") -> str:
    """Write ``table`` to ``path`` (temp name, fsync, rename); returns the path as a str."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression, use_dictionary=False, row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def read_vectors(path: str | Path, columns: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(row_index (m,) int64, vectors (m, d) float32, {column: array})`` of one shard file.

    The vectors are a read-only view of the Arrow buffer (one copy of the shard in memory)."""
    table = pq.read_table(path, columns=["row_index", *columns, "vector"])
    col = table.column("vector").combine_chunks()
    if pa.types.is_fixed_size_binary(col.type):
        d = col.type.byte_width // 4
        X = np.frombuffer(col.buffers()[1], dtype="<f4", count=len(col) * d, offset=col.offset * 4 * d).reshape(len(col), d)
    else:  # FLOAT[d] (the embed stage's layout)
        X = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
    extra = {c: table.column(c).to_numpy() for c in columns}
    return table.column("row_index").to_numpy(), X, extra


def vector_dim(path: str | Path) -> int:
    """Dimension of the ``vector`` column of a shard file, from its schema (reads no rows)."""
    t = pq.read_schema(path).field("vector").type
    return t.byte_width // 4 if pa.types.is_fixed_size_binary(t) else t.list_size


def read_columns(path: str | Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Some scalar columns of a shard file as numpy arrays."""
    table = pq.read_table(path, columns=list(columns))
    return {c: table.column(c).to_numpy() for c in columns}


def _view_name(prefix: str, ident: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', ident)}"


def register_shards(store: Store, set_id: str, kind: str, files: Sequence[ShardFile]) -> str:
    """Record a shard set in ``shard_files`` (replacing it) and (re)create its view; returns the view name.

    The view reads the files by absolute path, so it works from any working directory."""
    view = _view_name(f"shard_{kind}", set_id)
    created = now()
    paths = [str(Path(f.path).resolve()) for f in sorted(files, key=lambda f: f.index)]
    with store.write() as con:
        con.execute("DELETE FROM shard_files WHERE set_id = ? AND kind = ?", [set_id, kind])
        insert_arrow(con, "shard_files", pa.table({
            "set_id": [set_id] * len(files), "kind": [kind] * len(files),
            "shard": pa.array([f.index for f in files], pa.int32()),
            "row_start": pa.array([f.start for f in files], pa.int64()),
            "row_stop": pa.array([f.stop for f in files], pa.int64()),
            "content_hash": [f.content_hash for f in files],
            "parquet_path": [store.relative(Path(f.path)) for f in files],
            "created_at": [created] * len(files),
        }))
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        con.execute(f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM read_parquet([{listing}])')
    return view


def _batches(paths: Iterable[str], columns: Sequence[str], batch_rows: int) -> Iterable[pa.RecordBatch]:
    for path in paths:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=list(columns))


def save_sharded_run(
    store: Store,
    *,
    run: dict[str, Any],
    selection: dict[str, Any],
    member_files: Sequence[str],
    dedup: Sequence[dict[str, Any]],
    dedup_files: Sequence[str],
    batch_rows: int = 1_000_000,
) -> dict[str, int]:
    """Write a sharded run's tables in one transaction (delete-then-insert by ``run_id``).

    Members and removed ids are read back from the per-shard / per-group files and inserted in
    batches of at most ``batch_rows`` rows, so the flow never holds them all. Returns rows written.
    """
    run_id = run["run_id"]
    created = now()
    written = {"sharded_members": 0, "sharded_dedup_removed": 0}
    with store.write() as con:
        for table in ("sharded_runs", "sharded_selections", "sharded_members", "sharded_dedup", "sharded_dedup_removed"):
            con.execute(f'DELETE FROM "{table}" WHERE run_id = ?', [run_id])
        con.execute(
            "INSERT INTO sharded_runs (run_id, set_id, n_rows, dim, n_shards, k, n_iter, converged, objective, "
            "centroids_path, settings, timings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, run["set_id"], run["n_rows"], run["dim"], run["n_shards"], run["k"], run["n_iter"],
             run["converged"], run["objective"], store.relative(Path(run["centroids_path"])),
             json.dumps(run["settings"], sort_keys=True), json.dumps(run["timings"], sort_keys=True), created],
        )
        con.execute(
            "INSERT INTO sharded_selections (run_id, selection_id, metric, policy, resolved_policy, balance, fraction, "
            "n_pool, n_kept, histogram_passes, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, selection["selection_id"], selection["metric"], selection["policy"], selection["resolved_policy"],
             selection["balance"], selection["fraction"], selection["n_pool"], selection["n_kept"],
             selection["histogram_passes"], selection["reason"], created],
        )
        for d in dedup:
            con.execute("INSERT INTO sharded_dedup (run_id, eps, n_pool, n_removed) VALUES (?, ?, ?, ?)",
                        [run_id, d["eps"], d["n_pool"], d["n_removed"]])
        for batch in _batches(member_files, ["row_index"], batch_rows):
            insert_arrow(con, "sharded_members", pa.table({
                "run_id": pa.array([run_id] * batch.num_rows, pa.string()),
                "selection_id": pa.array([selection["selection_id"]] * batch.num_rows, pa.string()),
                "row_index": batch.column(0)}))
            written["sharded_members"] += batch.num_rows
        for batch in _batches(dedup_files, ["eps", "row_index", "cluster"], batch_rows):
            insert_arrow(con, "sharded_dedup_removed", pa.table({
                "run_id": pa.array([run_id] * batch.num_rows, pa.string()),
                "eps": batch.column(0), "row_index": batch.column(1), "cluster": batch.column(2)}))
            written["sharded_dedup_removed"] += batch.num_rows
    return written


def load_sharded_run(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every table row of one sharded run (members and removals sorted), for reports and tests."""
    out = {}
    with store.read() as con:
        for table, order in (("sharded_runs", "run_id"), ("sharded_selections", "selection_id"),
                             ("sharded_dedup", "eps"), ("sharded_members", "selection_id, row_index"),
                             ("sharded_dedup_removed", "eps, row_index")):
            out[table] = rows(con.execute(f'SELECT * FROM "{table}" WHERE run_id = ? ORDER BY {order}', [run_id]))
    return out


def sharded_selection_id(store: Store, ident: str) -> str | None:
    """The selection id of a sharded run named by its run id or its selection id; None when ``ident``
    names neither (or there is no database, or a file from before the sharded path)."""
    if not store.exists:
        return None
    with store.read() as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'sharded_selections' "
                           "AND table_schema = 'main'").fetchall()[0][0]:
            return None
        found = con.execute("SELECT selection_id FROM sharded_selections WHERE run_id = ? OR selection_id = ? "
                            "ORDER BY selection_id LIMIT 1", [ident, ident]).fetchall()
    return found[0][0] if found else None


def export_sharded_selection(store: Store, selection_id: str, to: Path, *, force: bool = False) -> dict[str, Any]:
    """``winnow export`` of a sharded selection: its kept ``row_index`` values (ascending) to ``to``
    (.parquet or .csv), through :func:`storage.db.safe_write` (never overwrites without ``force``)."""
    import pyarrow.csv as pacsv

    to = Path(to)
    suffix = to.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise WinnowError(f"--to {to}: the file must end in .parquet or .csv")
    check_target(to, force=force, what="export", option="--to")
    with store.read() as con:
        head = rows(con.execute("SELECT * FROM sharded_selections WHERE selection_id = ?", [selection_id]))[0]
        members = con.sql("SELECT row_index FROM sharded_members WHERE run_id = ? AND selection_id = ? ORDER BY row_index",
                          params=[head["run_id"], selection_id]).to_arrow_table()
    if suffix == ".parquet":
        safe_write(to, lambda fh: pq.write_table(members, fh), force=force, what="export", option="--to")
    else:
        safe_write(to, lambda fh: pacsv.write_csv(members, fh), force=force, what="export", option="--to")
    return {"selection_id": selection_id, "path": str(to), "rows": members.num_rows, "metric": head["metric"],
            "policy": head["policy"], "resolved_policy": head["resolved_policy"], "fraction": head["fraction"],
            "reason": head["reason"]}
