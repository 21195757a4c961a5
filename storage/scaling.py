"""Scaling-law tables: ``fits`` (one row per fitted curve), ``predictions`` (its predictions) and
``fit_details`` (predictor used, validated fit, per-form table, warnings, the source SQL).

All are keyed by ``run_id``; :func:`save_fits` replaces a run's rows in one transaction
(delete-then-insert), so a rerun of the same config leaves exactly one copy.
:func:`select_fit_rows` evaluates ``winnow fit``'s ``--where`` / ``--col`` / ``--sql`` with DuckDB over
the input file, in the same sandbox as ``winnow query``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pathlib import Path

import duckdb
import pyarrow as pa

from storage.db import Store
from storage.query import check_read_only_sql
from tasks.errors import WinnowError


FIT_COLUMNS = (
    "run_id", "fit_key", "form", "formula", "x_col", "x2_col", "y_col", "space", "n_points", "n_groups",
    "n_starts", "loss", "stable", "warning", "params", "param_ci", "bootstrap", "level", "holdout_largest",
    "holdout_are", "holdout_rmsle", "baseline_are", "beats_baseline", "selection", "plot_path", "created_at",
)
PRED_COLUMNS = ("run_id", "fit_key", "kind", "x", "x2", "y_pred", "y_lo", "y_hi", "y_obs", "level")
DETAIL_COLUMNS = (
    "run_id", "fit_key", "predictor", "curve", "source_sql", "x3_col", "validated_params", "validated_n_train",
    "baseline_rmsle", "candidates", "interval_method", "warnings", "notes", "targets",
)
_DETAIL_JSON = {"curve", "validated_params", "baseline_rmsle", "candidates", "warnings", "notes", "targets"}


@dataclass(frozen=True)
class PredictionRow:
    kind: str
    x: float
    x2: float | None
    y_pred: float | None
    y_lo: float | None = None
    y_hi: float | None = None
    y_obs: float | None = None


@dataclass(frozen=True)
class FitRecord:
    """One fitted curve as stored (built by the flow from a ``tasks.scaling.api.FitReport``)."""

    fit_key: str
    form: str
    formula: str
    x_col: str
    x2_col: str | None
    y_col: str
    space: str
    n_points: int
    n_groups: int
    n_starts: int
    loss: float
    stable: bool
    warning: str | None
    params: dict[str, float]
    param_ci: dict[str, tuple[float, float]]
    bootstrap: int
    level: float
    holdout_largest: int
    holdout_are: float | None = None
    holdout_rmsle: float | None = None
    baseline_are: dict[str, float] | None = None
    beats_baseline: bool | None = None
    selection: str | None = None
    plot_path: str | None = None
    predictions: list[PredictionRow] = field(default_factory=list)
    details: dict | None = None  # fit_details columns (predictor, curve, source_sql, validated_params, ...)


def _num(v: float | None) -> float | None:
    """NaN/inf -> NULL (and JSON null); plain float otherwise."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _json(obj: object) -> str:
    def clean(o: object) -> object:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, float):
            return _num(o)
        return o

    return json.dumps(clean(obj), sort_keys=True)


def save_fits(store: Store, run_id: str, records: list[FitRecord]) -> None:
    """Replace the run's rows in ``fits`` and ``predictions`` with ``records`` (one transaction)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    keys = [r.fit_key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate fit_key in one run: {keys}")
    fit_rows = [
        [
            run_id, r.fit_key, r.form, r.formula, r.x_col, r.x2_col, r.y_col, r.space, int(r.n_points),
            int(r.n_groups), int(r.n_starts), float(r.loss), bool(r.stable), r.warning, _json(r.params),
            _json({k: list(v) for k, v in r.param_ci.items()}), int(r.bootstrap), float(r.level),
            int(r.holdout_largest), _num(r.holdout_are), _num(r.holdout_rmsle),
            None if r.baseline_are is None else _json(r.baseline_are),
            None if r.beats_baseline is None else bool(r.beats_baseline), r.selection, r.plot_path, now,
        ]
        for r in records
    ]
    pred_rows = [
        [run_id, r.fit_key, p.kind, float(p.x), _num(p.x2), _num(p.y_pred), _num(p.y_lo), _num(p.y_hi), _num(p.y_obs), float(r.level)]
        for r in records
        for p in r.predictions
    ]
    det_rows = [
        [run_id, r.fit_key, d.get("predictor") or r.form] + [
            (_json(d.get(c)) if d.get(c) is not None else None) if c in _DETAIL_JSON else d.get(c)
            for c in DETAIL_COLUMNS[3:]
        ]
        for r in records
        for d in [r.details or {}]
    ]
    with store.write() as con:
        con.execute("DELETE FROM fit_details WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM predictions WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM fits WHERE run_id = ?", [run_id])
        if det_rows:
            con.executemany(
                f"INSERT INTO fit_details ({', '.join(DETAIL_COLUMNS)}) VALUES ({', '.join('?' * len(DETAIL_COLUMNS))})", det_rows
            )
        if fit_rows:
            con.executemany(f"INSERT INTO fits ({', '.join(FIT_COLUMNS)}) VALUES ({', '.join('?' * len(FIT_COLUMNS))})", fit_rows)
        if pred_rows:
            con.executemany(
                f"INSERT INTO predictions ({', '.join(PRED_COLUMNS)}) VALUES ({', '.join('?' * len(PRED_COLUMNS))})", pred_rows
            )


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def load_fits(store: Store, run_id: str) -> list[dict]:
    """The run's fits, JSON columns decoded, ordered by fit_key."""
    with store.read() as con:
        rows = _dicts(con.execute("SELECT * FROM fits WHERE run_id = ? ORDER BY fit_key", [run_id]))
    for r in rows:
        for c in ("params", "param_ci", "baseline_are"):
            if r[c] is not None:
                r[c] = json.loads(r[c])
    return rows


def load_fit_details(store: Store, run_id: str) -> list[dict]:
    """The run's ``fit_details`` rows, JSON columns decoded, ordered by fit_key."""
    with store.read() as con:
        rows = _dicts(con.execute("SELECT * FROM fit_details WHERE run_id = ? ORDER BY fit_key", [run_id]))
    for r in rows:
        for c in _DETAIL_JSON:
            if r[c] is not None:
                r[c] = json.loads(r[c])
    return rows


def _ident(name: str) -> str:
    if not name or not (name[0].isalpha() or name[0] == "_") or not all(ch.isalnum() or ch == "_" for ch in name):
        raise WinnowError(f"--col name {name!r} must be a plain identifier (letters, digits, _), e.g. --col D=FLOP/(6*N)")
    return f'"{name}"'


def _checked(con: duckdb.DuckDBPyConnection, query: str) -> list:
    """:func:`storage.query.check_read_only_sql`, its message cut to one line."""
    try:
        return check_read_only_sql(con, query)
    except WinnowError as err:
        raise WinnowError(str(err).splitlines()[0].replace("winnow query is", "winnow fit's SQL is")) from None


def select_fit_rows(
    path: str | Path, *, where: str | None = None, cols: list[tuple[str, str]] | None = None, sql: str | None = None
) -> tuple[pa.Table, str]:
    """The rows of a CSV (``read_csv_auto``) or Parquet file after ``--sql`` / ``--col`` / ``--where``.

    The file is loaded into an in-memory DuckDB table ``data``; then file access is disabled and the
    configuration locked (the sandbox of ``winnow query``), and the composed statement must be a
    single read-only SELECT (:func:`storage.query.check_read_only_sql`). ``cols`` are ``(name, SQL
    expression)`` pairs evaluated in order (each may use the previous ones; an existing column of
    that name is replaced); ``where`` filters after them; ``sql`` (a SELECT over ``data``) replaces
    the file as the starting rows. Returns the rows and the SQL that produced them (stored with the fit).
    """
    p = Path(path)
    if not p.is_file():
        raise WinnowError(f"file not found: {p}")
    reader = "read_parquet" if p.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
    con = duckdb.connect(":memory:")
    try:
        try:
            con.execute(f"CREATE TABLE data AS SELECT * FROM {reader}(?)", [str(p)])
        except duckdb.Error as err:
            raise WinnowError(f"{p}: cannot read with {reader}: {str(err).splitlines()[0]}") from None
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        have = [r[0] for r in con.execute("DESCRIBE data").fetchall()]
        query = "SELECT * FROM data" if sql is None else sql.strip().rstrip(";")
        if sql is not None:
            _checked(con, query)
            try:
                have = [d[0] for d in con.execute(f"SELECT * FROM ({query}) LIMIT 0").description]
            except duckdb.Error as err:
                raise WinnowError(f"--sql failed: {str(err).splitlines()[0]}") from None
        for name, expr in cols or []:
            _parses(con, f"--col {name}={expr}", expr, "SELECT {} FROM data")
            q = _ident(name)
            if name in have:
                query = f"SELECT * REPLACE (({expr}) AS {q}) FROM ({query})"
            else:
                query = f"SELECT *, ({expr}) AS {q} FROM ({query})"
                have.append(name)
        if where is not None:
            _parses(con, f"--where {where!r}", where, "SELECT * FROM data WHERE {}")
            query = f"SELECT * FROM ({query}) WHERE ({where})"
        statements = _checked(con, query)
        if len(statements) != 1:
            raise WinnowError("query refused: --where/--col/--sql must form a single SELECT statement")
        try:
            table = con.sql(query).to_arrow_table()
        except duckdb.PermissionException as err:
            raise WinnowError(f"query refused: {str(err).splitlines()[0]} (winnow fit's SQL cannot touch other files)") from None
        except duckdb.Error as err:
            raise WinnowError(f"--where/--col/--sql failed: {str(err).splitlines()[0]}") from None
        return table, query
    finally:
        con.close()


def _parses(con: duckdb.DuckDBPyConnection, option: str, text: str, template: str) -> None:
    """One SQL piece of the command line, checked on its own, so that an error names the option that holds
    it (composed, a broken --where reads as a syntax error "near ')'" of a statement the user never wrote)."""
    if not text.strip():
        raise WinnowError(f"{option} is empty: give an SQL expression, e.g. --where \"loss < 3.5\" or --col D=FLOP/(6*N)")
    try:
        con.extract_statements(template.format(text))
    except duckdb.Error as err:
        raise WinnowError(f"{option} does not parse: {str(err).splitlines()[0]}") from None


def load_predictions(store: Store, run_id: str, fit_key: str | None = None) -> list[dict]:
    """The run's predictions (optionally of one fit), ordered by fit_key, kind, x, x2."""
    sql = "SELECT * FROM predictions WHERE run_id = ?"
    args: list = [run_id]
    if fit_key is not None:
        sql += " AND fit_key = ?"
        args.append(fit_key)
    with store.read() as con:
        return _dicts(con.execute(sql + " ORDER BY fit_key, kind, x, x2", args))
