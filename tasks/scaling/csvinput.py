"""Read and validate the CSV given to ``winnow fit``.

Columns are picked by name, never by position. Every problem is one :class:`WinnowError` naming
the file, the column and the first bad row (1-based data row; the header is line 1 of the file).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasks.errors import WinnowError
from tasks.files import special_file_kind


@dataclass(frozen=True)
class FitData:
    """Columns of a fit input as arrays: ``x``, ``y`` (n,) float64; ``x2`` (n,) — or (n, 2)
    [tokens seen, unique] with a unique-data column — or None; ``groups`` and ``curves`` (n,) strings
    or None (``curves``: the ``--by`` key of each row). ``source_sql`` is the DuckDB SELECT the rows
    came from, when ``--where``/``--col``/``--sql`` were used."""

    path: str
    x: np.ndarray
    y: np.ndarray
    x2: np.ndarray | None
    groups: np.ndarray | None
    x_col: str
    y_col: str
    x2_col: str | None
    group_col: str | None
    x3_col: str | None = None
    by_cols: tuple[str, ...] = ()
    curves: np.ndarray | None = None
    curve_values: dict | None = None  # curve key -> {by column: value}
    source_sql: str | None = None

    @property
    def n(self) -> int:
        return int(self.x.size)

    def subset(self, mask: np.ndarray) -> "FitData":
        """The rows in ``mask`` (one ``--by`` curve)."""
        pick = (lambda a: None if a is None else a[mask])  # noqa: E731
        return replace(self, x=self.x[mask], y=self.y[mask], x2=pick(self.x2), groups=pick(self.groups), curves=pick(self.curves))


def _numeric(table: pa.Table, col: str, path: Path, *, positive: bool, of: str = "") -> np.ndarray:
    """``col`` as finite float64 (> 0 with ``positive``); rows are numbered from 1 after the header, ``of``
    says of what when they are not the file's."""
    arr = table.column(col)
    if arr.null_count:
        first = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
        raise WinnowError(f"{path}: column {col!r} is empty or NaN in row {first + 1}{of} ({arr.null_count} missing value(s)); drop or fill those rows")
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cells = arr.to_pylist()
            i = next((i for i, c in enumerate(cells) if not _is_number(c)), None)
            where = f"row {i + 1}{of} holds {cells[i]!r}" if i is not None else f"type {arr.type}"
            raise WinnowError(f"{path}: column {col!r} is not numeric: {where}; fix the cell or drop the row") from None
    v = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise WinnowError(f"{path}: column {col!r} has a non-finite value {float(v[i])!r} in row {i + 1}{of}; drop or fix it")
    if positive:
        nonpos = v <= 0
        if nonpos.any():
            i = int(np.argmax(nonpos))
            raise WinnowError(
                f"{path}: column {col!r} must be > 0 (scaling laws are fitted in log space); row {i + 1}{of} has {float(v[i])!r}"
            )
    return v


def _is_number(cell: object) -> bool:
    try:
        float(cell)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _delimiter(p: Path) -> str:
    """The field separator of a CSV file — ``,``, ``;``, tab or ``|`` — read off its first lines, as DuckDB's
    ``read_csv_auto`` does on the ``--where``/``--sql`` path (so both paths read a ``;`` file the same way)."""
    import csv

    with pa.input_stream(str(p), compression="detect") as f:  # a .csv.gz is sniffed decompressed, as it is read
        head = f.read(65536).decode("utf-8", errors="replace")
    lines = head.splitlines()[:50]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or no separator stands out: the default
        return ","


def read_table(path: str | Path) -> pa.Table:
    """A CSV (or ``.parquet``) file as an Arrow table; one :class:`WinnowError` if it cannot be read."""
    p = Path(path)
    kind = special_file_kind(p)  # by type, before opening: a FIFO or device would block or never end
    if kind is not None:
        raise WinnowError(f"{p} is {kind}, not a CSV or Parquet file; give the path of a regular file")
    if p.is_dir():
        raise WinnowError(f"{p} is a directory, not a CSV or Parquet file")
    if not p.is_file():
        raise WinnowError(f"CSV file not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(p)
        table = pacsv.read_csv(p, parse_options=pacsv.ParseOptions(delimiter=_delimiter(p)),
                               convert_options=pacsv.ConvertOptions(null_values=["", "NA", "NaN", "nan", "null"], strings_can_be_null=True))
        return _utf8_checked(table, p)
    except (pa.ArrowInvalid, OSError) as err:
        text = "".join(c if c.isprintable() else "?" for c in str(err))  # a binary file's bytes stay off the terminal
        raise WinnowError(f"{p}: cannot parse as CSV: {text[:300]}") from None


def _utf8_checked(table: pa.Table, p: Path) -> pa.Table:
    """A CSV is text: a header or a cell that is not UTF-8 (e.g. a Latin-1 export; Arrow reads such a column as
    bytes) is one clear error naming it, not a decoding crash later."""
    save = "; save the file as UTF-8"
    try:
        names = table.column_names
    except UnicodeDecodeError:
        raise WinnowError(f"{p}: the header is not UTF-8 text{save}") from None
    for name, col in zip(names, table.columns):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            cells = col.to_pylist()
            row = next((i for i, c in enumerate(cells) if c is not None and not _decodes(c)), 0)
            raise WinnowError(f"{p}: column {name!r} is not UTF-8 text (row {row + 1}){save}")
    return table


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def read_fit_csv(
    path: str | Path, *, x: str, y: str, x2: str | None = None, group: str | None = None, unique: str | None = None,
    epochs: str | None = None, by: tuple[str, ...] | list[str] = (), table: pa.Table | None = None, source_sql: str | None = None,
) -> FitData:
    """Load the named columns of ``path`` (or of ``table``, rows already selected by DuckDB);
    ``x``, ``x2``, ``unique``, ``epochs`` and ``y`` must be numeric, finite and > 0.

    ``unique`` (unique tokens or examples) makes three-variable data for the data-constrained forms:
    ``x2`` is then tokens seen; with ``epochs`` instead of ``x2``, tokens seen = ``epochs * unique``.
    ``by`` columns split the rows into curves (one fit each).
    """
    p = Path(path)
    if table is None:
        table = read_table(p)
    have = table.column_names
    if epochs is not None and unique is None:
        raise WinnowError("--epochs needs --unique (tokens seen = epochs x unique)")
    if epochs is not None and x2 is not None:
        raise WinnowError("give either --x2 (tokens seen) or --epochs (seen = epochs x unique), not both")
    if unique is not None and x2 is None and epochs is None:
        raise WinnowError("--unique needs the tokens seen: --x2 COL, or --epochs COL (seen = epochs x unique)")
    for role, col in (("--x", x), ("--y", y), ("--x2", x2), ("--group", group), ("--unique", unique), ("--epochs", epochs),
                      *(("--by", b) for b in by)):
        if col is not None and col not in have:
            raise WinnowError(f"{p}: no column {col!r} (given as {role}); columns are: {', '.join(have)}")
        if col is not None and have.count(col) > 1:
            raise WinnowError(f"{p}: the header names column {col!r} {have.count(col)} times (given as {role}); "
                              "rename the copies")
    roles = [("--x", x), ("--y", y), ("--x2", x2), ("--unique", unique), ("--epochs", epochs)]
    for i, (role, col) in enumerate(roles):
        for other, col2 in roles[:i]:
            # --unique may equal --x2 (U = D: every example seen once); every other pair is one variable twice
            if col is not None and col == col2 and {role, other} != {"--x2", "--unique"}:
                raise WinnowError(f"{role} and {other} name the same column {col!r}: each variable needs its own column")
    if table.num_rows == 0:
        raise WinnowError(f"{p}: no data rows" + (" after --where/--col/--sql" if source_sql else ""))
    of = " of the --where/--col/--sql result" if source_sql else ""
    xv = _numeric(table, x, p, positive=True, of=of)
    yv = _numeric(table, y, p, positive=True, of=of)
    x2v = None if x2 is None else _numeric(table, x2, p, positive=True, of=of)
    x2_col = x2
    if unique is not None:
        uv = _numeric(table, unique, p, positive=True, of=of)
        if epochs is not None:
            x2v, x2_col = _numeric(table, epochs, p, positive=True, of=of) * uv, f"{epochs}*{unique}"
        x2v = np.column_stack([x2v, uv])
    gv = None if group is None else _labels(table, group, p, "group")
    curves = values = None
    if by:
        parts = [_labels(table, b, p, "--by") for b in by]
        curves = np.array(["|".join(f"{b}={v}" for b, v in zip(by, row)) for row in zip(*parts)], dtype=object)
        values = {}
        for row in zip(curves, *parts):
            values.setdefault(row[0], dict(zip(by, row[1:])))
    return FitData(str(p), xv, yv, x2v, gv, x, y, x2_col, group, unique, tuple(by), curves, values, source_sql)


def _labels(table: pa.Table, col: str, path: Path, role: str) -> np.ndarray:
    g = table.column(col)
    if pa.types.is_nested(g.type):
        raise WinnowError(f"{path}: {role} column {col!r} holds {g.type} values; curves and runs are named by plain values")
    if g.null_count:
        first = int(np.flatnonzero(pc.is_null(g).to_numpy(zero_copy_only=False))[0])
        raise WinnowError(f"{path}: {role} column {col!r} is empty in row {first + 1}")
    return np.asarray(pc.cast(g, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
