"""Sources and examples: register staged sources (versioned, idempotent) and load them back.

Lineage: a run reads exactly the source versions it registered (``run_sources``). The pipeline pins
them (:func:`pinned`) around its stages, and :func:`load_source` by name returns the pinned version;
outside a pinned block it returns the latest version. Before registration a pin may be the staged
file itself, so preflight checks see the data the run will register without writing anything.
"""

from __future__ import annotations

from collections import OrderedDict

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow.parquet as pq

from storage.db import Store, now, one, rows
from tasks.data import SourceData, example_ids_for
from tasks.errors import WinnowError
from tasks.ingest import StagedSource


@dataclass(frozen=True)
class SourceRecord:
    source_id: int
    name: str
    version: int
    kind: str
    content_hash: str
    n_rows: int
    n_train: int
    n_test: int
    parquet_path: str
    created: bool  # False when an identical source was already registered


def _record(row: tuple, created: bool) -> SourceRecord:
    return SourceRecord(*row, created=created)


_COLS = "source_id, name, version, kind, content_hash, n_rows, n_train, n_test, parquet_path"


def register_source(con: duckdb.DuckDBPyConnection, store: Store, staged: StagedSource) -> SourceRecord:
    """Register one staged source inside the caller's transaction.

    Same name and same content as a registered version: nothing is written and the staged file is
    dropped. Same name, new content: a new version (never an overwrite).
    """
    row = one(con.execute(
        f"SELECT {_COLS} FROM sources WHERE name = ? AND content_hash = ?", [staged.name, staged.content_hash]
    ))
    if row is not None:
        (shape,) = one(con.execute("SELECT image_shape FROM sources WHERE source_id = ?", [row[0]]))
        want = list(staged.image_shape) if staged.image_shape else None
        if (list(shape) if shape else None) != want:  # the content hash covers the bytes, not their shape
            raise WinnowError(
                f"source {staged.name!r}: the same content is registered (version {row[2]}) with image_shape "
                f"{tuple(shape) if shape else None}, now {tuple(want) if want else None}: ingest it under "
                "another name to read the bytes with another shape")
        staged.path.unlink(missing_ok=True)
        return _record(row, created=False)
    if not staged.path.exists():
        raise _staged_gone(staged)
    source_id = one(con.execute("SELECT coalesce(max(source_id), 0) + 1 FROM sources"))[0]
    version = one(con.execute("SELECT coalesce(max(version), 0) + 1 FROM sources WHERE name = ?", [staged.name]))[0]
    rel = store.adopt_file(staged.path, "sources", f"{staged.name}-v{version}-{staged.content_hash[:12]}.parquet")
    try:
        con.execute(
            "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                source_id, staged.name, version, staged.kind, staged.uri, staged.content_hash, staged.n_rows,
                staged.n_train, staged.n_test, staged.n_features, staged.label_column, staged.label_names,
                list(staged.image_shape) if staged.image_shape else None, json.dumps(staged.schema),
                json.dumps(staged.options), rel, now(),
            ],
        )
        con.execute(
            """
            INSERT INTO examples
            SELECT (CAST(? AS BIGINT) << 32) | row_index, ?, row_index,
                   CASE WHEN label IS NULL THEN NULL ELSE list_position(?::VARCHAR[], label) - 1 END,
                   split, row_hash
            FROM read_parquet(?)
            """,
            [source_id, source_id, staged.label_names, str(store.resolve(rel))],
        )
    except BaseException:
        store.resolve(rel).unlink(missing_ok=True)
        raise
    return SourceRecord(source_id, staged.name, version, staged.kind, staged.content_hash, staged.n_rows,
                        staged.n_train, staged.n_test, rel, created=True)


def register_sources(store: Store, staged: list[StagedSource], run_id: str | None = None,
                     attempt_id: str | None = None) -> list[SourceRecord]:
    """Register every staged source in ONE transaction (all or nothing); with ``run_id`` link them to the run."""
    return register_run_sources(store, staged, run_id, attempt_id)[0]


def register_run_sources(store: Store, staged: list[StagedSource], run_id: str | None = None,
                         attempt_id: str | None = None, requested: Mapping[str, "int | str"] | None = None,
                         ) -> tuple[list[SourceRecord], dict[str, int]]:
    """Register every staged source in ONE transaction (all or nothing) and pin the run's versions.

    Returns the records and the pins ``{name: source_id}``: the registered version of each staged
    source, or for names in ``requested`` (a config's ``version:``) that version, ``'latest'`` meaning
    the newest of that name at this moment. With ``run_id`` the run's ``run_sources`` become exactly
    the pinned versions (a rerun whose file changed reads the new version, never both); with
    ``attempt_id`` the attempt records them.
    """
    try:
        with store.write() as con:
            records = [register_source(con, store, s) for s in staged]
            pins = {r.name: r.source_id for r in records}
            for name, version in (requested or {}).items():
                pins[name] = int(source_row(con, name, None if version == "latest" else int(version))["source_id"])
            if run_id is not None:
                con.execute("DELETE FROM run_sources WHERE run_id = ?", [run_id])
                for sid in sorted(set(pins.values())):
                    con.execute("INSERT INTO run_sources VALUES (?, ?)", [run_id, sid])
            if attempt_id is not None:
                described = rows(con.execute(
                    "SELECT name, version, source_id FROM sources WHERE list_contains(?, source_id) ORDER BY name",
                    [sorted(set(pins.values()))]))
                con.execute("UPDATE run_attempts SET source_ids = ?, sources = ? WHERE attempt_id = ?",
                            [sorted(set(pins.values())), json.dumps(described), attempt_id])
            return records, pins
    except BaseException:
        for s in staged:
            s.path.unlink(missing_ok=True)
        raise


def source_records(store: Store, source_ids: list[int]) -> dict[int, SourceRecord]:
    """The registered versions with these ids, by id (``created`` False: they are read, not registered here).

    The pipeline's summary describes the versions a run reads with them: with a config's ``version:`` that
    can be another version than the one its file produced."""
    ids = sorted(set(int(i) for i in source_ids))
    if not ids:
        return {}
    with store.read() as con:
        found = con.execute(f"SELECT {_COLS} FROM sources WHERE list_contains(?, source_id)", [ids]).fetchall()
    return {int(r[0]): _record(r, created=False) for r in found}


def list_sources(store: Store) -> list[dict]:
    """Every registered source version, newest first per name."""
    with store.read() as con:
        cur = con.execute(
            "SELECT source_id, name, version, kind, n_rows, n_train, n_test, n_features, label_names, "
            "image_shape, content_hash, uri, ingested_at FROM sources ORDER BY name, version DESC"
        )
        return rows(cur)


def source_row(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None) -> dict:
    q = "SELECT * FROM sources WHERE name = ?" + (" AND version = ?" if version is not None else "") + " ORDER BY version DESC LIMIT 1"
    cur = con.execute(q, [name] if version is None else [name, version])
    row = one(cur)
    if row is None:
        have = [r[0] for r in con.execute("SELECT DISTINCT name FROM sources ORDER BY 1").fetchall()]
        v = f" version {version}" if version is not None else ""
        raise WinnowError(f"no source named {name!r}{v} in the database (have: {', '.join(have) or 'none'}); ingest it first")
    return dict(zip([d[0] for d in cur.description], row))


#: the source versions the current run reads, set by :func:`pinned`: (database path, {name: pin}) where a
#: pin is a registered ``source_id`` or a :class:`StagedSource` not registered yet (preflight checks).
_PINS: ContextVar[tuple[str, dict[str, "int | StagedSource"]] | None] = ContextVar("winnow_source_pins", default=None)


@contextmanager
def pinned(store: Store, pins: Mapping[str, "int | StagedSource"]) -> Iterator[None]:
    """Within the block, :func:`load_source` of a pinned name (in ``store``) returns the pinned version."""
    token = _PINS.set((str(store.path), dict(pins)))
    try:
        yield
    finally:
        _PINS.reset(token)


def current_pin(store: Store, name: str) -> "int | StagedSource | None":
    """The version of ``name`` pinned for the current run in ``store`` (None when not pinned)."""
    active = _PINS.get()
    if active is None or active[0] != str(store.path):
        return None
    return active[1].get(name)


def resolve_version(store: Store, name: str, version: "int | str") -> int:
    """The source_id of version ``version`` of ``name`` (``'latest'``: the newest registered one)."""
    with store.read() as con:
        row = source_row(con, name, None if version == "latest" else int(version))
    return int(row["source_id"])


def registered_id(store: Store, name: str, content_hash: str) -> int | None:
    """The source_id of an already registered version with this content (None if new or no database)."""
    return _registered_int(store, "SELECT source_id FROM sources WHERE name = ? AND content_hash = ?", [name, content_hash])


def _registered_int(store: Store, sql: str, params: list) -> int | None:
    """The one integer ``sql`` selects from the sources table (None when no row matches or no database)."""
    if not store.exists:
        return None
    with store.read() as con:
        row = one(con.execute(sql, params))
    return None if row is None else int(row[0])


def load_source(store: Store, name: str, version: int | None = None) -> SourceData:
    """Load a source with its features/texts, labels and split: version ``version``; without one the
    version pinned for the current run (:func:`pinned`), else the latest."""
    if version is None:
        pin = current_pin(store, name)
        if isinstance(pin, int):
            return load_source_by_id(store, pin)
        if pin is not None:
            return load_staged(store, pin)
    with store.read() as con:
        row = source_row(con, name, version)
    return _load_row(store, row)


def _staged_gone(staged: StagedSource) -> WinnowError:
    return WinnowError(f"source {staged.name!r}: its staged file is gone ({staged.path}): another winnow run on this "
                       "database used or removed it at the same time (it was refused, or registers other content); "
                       "nothing was written: run again")


def load_staged(store: Store, staged: StagedSource) -> SourceData:
    """A staged (validated, not yet registered) source as :class:`SourceData`, for checks before any write.

    It has no source_id yet: ``source_id`` and ``version`` are 0, so its example ids are provisional.
    Staging is cached across processes, so a second run on the same database may hold the same staged
    file as a first one that has registered it since (moved into the artifacts) or was refused (removed
    it): the registered version is the same content; with none, one clear line."""
    if not Path(staged.path).exists():
        sid = registered_id(store, staged.name, staged.content_hash)
        if sid is not None:
            return load_source_by_id(store, sid)
        raise _staged_gone(staged)
    row = {"source_id": 0, "name": staged.name, "version": 0, "kind": staged.kind, "content_hash": staged.content_hash,
           "label_names": staged.label_names, "image_shape": list(staged.image_shape) if staged.image_shape else None,
           "parquet_path": str(staged.path)}
    return _load_row(store, row)


def registered_rows(store: Store, source_id: int, content_hash: str) -> int | None:
    """Row count of a registered source version (None when that version is not in the file)."""
    return _registered_int(store, "SELECT n_rows FROM sources WHERE source_id = ? AND content_hash = ?", [source_id, content_hash])


def load_source_by_id(store: Store, source_id: int) -> SourceData:
    with store.read() as con:
        cur = con.execute("SELECT * FROM sources WHERE source_id = ?", [source_id])
        r = one(cur)
        if r is None:
            raise WinnowError(f"no source with id {source_id}")
        row = dict(zip([d[0] for d in cur.description], r))
    return _load_row(store, row)


#: sources read in this process, newest last: a pipeline's stages (embed, prune, mixture, plan) each load
#: the same source; a source version's file never changes (new content = new version), so one read serves all.
_CACHE: "OrderedDict[tuple[str, str, int], SourceData]" = OrderedDict()
CACHE_SIZE = 4


def _load_row(store: Store, row: dict) -> SourceData:
    path = store.resolve(row["parquet_path"])
    if not path.exists():
        raise WinnowError(f"source {row['name']!r} v{row['version']}: data file missing: {path}")
    key = (str(path), row["content_hash"], path.stat().st_mtime_ns)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    data = _read_row(path, row)
    for arr in (data.X, data.y, data.split, data.example_ids, data.row_index):
        if arr is not None:
            arr.flags.writeable = False  # shared between stages: nobody may change it in place
    _CACHE[key] = data
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def _read_row(path, row: dict) -> SourceData:
    table = pq.read_table(path)
    row_index = table.column("row_index").to_numpy()
    label_names = list(row["label_names"]) if row["label_names"] is not None else None
    y = None
    if label_names is not None:
        raw = np.asarray(table.column("label").to_numpy(zero_copy_only=False)).astype(str)
        order = np.argsort(np.asarray(label_names))
        sorted_names = np.asarray(label_names)[order]
        y = order[np.searchsorted(sorted_names, raw)].astype(np.int64)
    X = texts = None
    if "features" in table.column_names:
        col = table.column("features").combine_chunks()
        X = col.flatten().to_numpy().reshape(len(col), col.type.list_size).astype(np.float32, copy=False)
    else:
        texts = table.column("text").to_pylist()
    return SourceData(
        source_id=int(row["source_id"]),
        name=row["name"],
        version=int(row["version"]),
        kind=row["kind"],
        content_hash=row["content_hash"],
        example_ids=example_ids_for(int(row["source_id"]), row_index),
        row_index=row_index.astype(np.int64),
        X=X,
        texts=texts,
        y=y,
        label_names=label_names,
        split=np.asarray(table.column("split").to_numpy(zero_copy_only=False)).astype(str),
        image_shape=tuple(row["image_shape"]) if row["image_shape"] is not None else None,
    )

