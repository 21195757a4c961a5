"""The versioned schema: the frozen migrations of :mod:`storage.migrations`, applied in order, version
stored in the file. A file whose version is higher than :data:`SCHEMA_VERSION` was written by a newer
winnow and is refused untouched.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from storage.migrations import MIGRATIONS
from tasks.errors import SchemaTooNewError

SCHEMA_VERSION = max(MIGRATIONS)

_META = "CREATE TABLE IF NOT EXISTS winnow_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"


def file_version(con: duckdb.DuckDBPyConnection) -> int:
    """Schema version recorded in an open file (0 for a new, empty file)."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'winnow_meta'"
    ).fetchall()[0][0]
    if not has_meta:
        return 0
    rows = con.execute("SELECT value FROM winnow_meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def _too_new(found: int, path: Path) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{path} has schema version {found}, newer than this winnow's {SCHEMA_VERSION}: "
        "upgrade winnow to read it (the file was left untouched)"
    )


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Bring a writable file up to :data:`SCHEMA_VERSION` in one transaction."""
    found = file_version(con)
    if found > SCHEMA_VERSION:
        raise _too_new(found, path)
    if found == SCHEMA_VERSION:
        return
    con.begin()
    try:
        con.execute(_META)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                con.execute(statement)
        con.execute(
            "INSERT OR REPLACE INTO winnow_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def check_readable(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse to read a file written by a newer schema."""
    found = file_version(con)
    if found > SCHEMA_VERSION:
        raise _too_new(found, path)
