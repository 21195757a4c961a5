"""Read and validate the CSV given to ``winnow fit``.

Columns are picked by name, never by position. Every problem is one :class:`WinnowError` naming
the file, the column and the first bad row (1-based data row; the header is line 1 of the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasks.errors import WinnowError


@dataclass(frozen=True)
class FitData:
    """Columns of a fit CSV as arrays: ``x``, ``y`` (n,) float64; ``x2`` (n,) or None; ``groups``
    (n,) strings or None."""

    path: str
    x: np.ndarray
    y: np.ndarray
    x2: np.ndarray | None
    groups: np.ndarray | None
    x_col: str
    y_col: str
    x2_col: str | None
    group_col: str | None

    @property
    def n(self) -> int:
        return int(self.x.size)


def _numeric(table: pa.Table, col: str, path: Path, *, positive: bool) -> np.ndarray:
    arr = table.column(col)
    if arr.null_count:
        first = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
        raise WinnowError(f"{path}: column {col!r} is empty or NaN in row {first + 1} ({arr.null_count} missing value(s)); drop or fill those rows")
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            sample = arr.slice(0, 3).to_pylist()
            raise WinnowError(f"{path}: column {col!r} is not numeric (type {arr.type}, first values {sample})") from None
    v = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise WinnowError(f"{path}: column {col!r} has a non-finite value {float(v[i])!r} in row {i + 1}; drop or fix it")
    if positive:
        nonpos = v <= 0
        if nonpos.any():
            i = int(np.argmax(nonpos))
            raise WinnowError(
                f"{path}: column {col!r} must be > 0 (scaling laws are fitted in log space); row {i + 1} has {float(v[i])!r}"
            )
    return v


def read_fit_csv(path: str | Path, *, x: str, y: str, x2: str | None = None, group: str | None = None) -> FitData:
    """Load the named columns of ``path``; ``x``, ``x2`` and ``y`` must be numeric, finite and > 0."""
    p = Path(path)
    if not p.is_file():
        raise WinnowError(f"CSV file not found: {p}")
    try:
        table = pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(null_values=["", "NA", "NaN", "nan", "null"], strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as err:
        raise WinnowError(f"{p}: cannot parse as CSV: {err}") from None
    have = table.column_names
    for role, col in (("--x", x), ("--y", y), ("--x2", x2), ("--group", group)):
        if col is not None and col not in have:
            raise WinnowError(f"{p}: no column {col!r} (given as {role}); columns are: {', '.join(have)}")
    if table.num_rows == 0:
        raise WinnowError(f"{p}: no data rows")
    xv = _numeric(table, x, p, positive=True)
    yv = _numeric(table, y, p, positive=True)
    x2v = None if x2 is None else _numeric(table, x2, p, positive=True)
    gv = None
    if group is not None:
        g = table.column(group)
        if g.null_count:
            first = int(np.flatnonzero(pc.is_null(g).to_numpy(zero_copy_only=False))[0])
            raise WinnowError(f"{p}: group column {group!r} is empty in row {first + 1}")
        gv = np.asarray(pc.cast(g, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    return FitData(str(p), xv, yv, x2v, gv, x, y, x2, group)
