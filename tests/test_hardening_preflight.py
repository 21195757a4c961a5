"""Checks that must run before the first write (the pipeline's preflights) and the messages they give.

The stage-level refusals of the corpus (tests/test_hardening_corpus.py) go through the installed
command; these tests pin the functions the preflights share with their stages: one check, one place.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from configs.base import parse_config
from tasks.errors import WinnowError
from tasks.mixture.pools import draw_mixture_rows, prepare_mixture_data

from helpers import mixture_config as _cfg
from helpers import mixture_source as _source
from helpers import mixture_sources as _sources


def test_the_mixture_rows_are_drawn_without_features_and_are_the_ones_the_stage_uses():
    sources = _sources()
    rows = draw_mixture_rows({n: replace(s, X=None) for n, s in sources.items()}, _cfg())  # text: not embedded yet
    data = prepare_mixture_data(sources, _cfg())
    assert rows.pool_sizes.tolist() == data.pool_sizes.tolist() == [60, 60]
    for ids, r, name in zip(data.pools_ids, rows.pool_rows, "AB"):
        assert np.array_equal(ids, sources[name].example_ids[r])
    assert [y.tolist() for y in rows.pool_y] == [y.tolist() for y in data.pools_y]


@pytest.mark.parametrize("sources, cfg, match", [
    (_sources(B=_source(2, "B", 200, ["7", "8"], seed=1)), _cfg(), r"pool 'b': source 'B' has labels \['7', '8'\]"),
    (_sources(), _cfg(pools=[dict(name="a", source="A", n=5000), dict(name="b", source="B")]),
     "pool 'a' wants .* rows of class"),
    (_sources(T=_source(3, "T", 400, ["only"], seed=2)), _cfg(), "target source 'T' has one class \\('only'\\)"),
])
def test_pool_and_target_refusals_need_no_features(sources, cfg, match):
    with pytest.raises(WinnowError, match=match):
        draw_mixture_rows({n: replace(s, X=None) for n, s in sources.items()}, cfg)


PLAN = ("sources:\n  - {name: digits, kind: sklearn_digits}\n"
        "mixture:\n  pools: [{name: a, source: digits, n: 120}, {name: b, source: digits, n: 120}]\n"
        "  target: {source: digits, split: test, n_ot: 30, n_eval: 40}\n")


def test_a_plan_nothing_can_satisfy_is_refused_from_pool_sizes_alone():
    from flows.plan import check_feasible

    bad = parse_config(__import__("yaml").safe_load(PLAN + "plan: {target_n: 200, pilot_sizes: [20, 40], budget: 10}\n"))
    with pytest.raises(WinnowError, match=r"no \(pruning, mixture\) candidate is feasible for target_n=200"):
        check_feasible(bad, np.array([120, 120]))
    ok = parse_config(__import__("yaml").safe_load(PLAN + "plan: {target_n: 200, pilot_sizes: [20, 40]}\n"))
    check_feasible(ok, np.array([120, 120]))  # 120 + 80 rows fit
    with pytest.raises(WinnowError, match="candidate is feasible"):
        check_feasible(ok, np.array([60, 60]))


def test_every_stage_that_can_refuse_input_declares_its_preflight():
    from flows.stages import STAGES

    assert {s.name for s in STAGES if s.preflight} >= {"embed", "prune", "mixture", "plan"}
    for s in STAGES:
        if s.preflight:
            assert callable(s.load_preflight())


def test_fit_input_that_is_a_fifo_is_named_as_one(tmp_path):
    from tasks.scaling.csvinput import read_table

    os.mkfifo(tmp_path / "curve.csv")
    with pytest.raises(WinnowError, match=r"curve.csv is a FIFO \(named pipe\), not a CSV"):
        read_table(tmp_path / "curve.csv")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(WinnowError, match="is a directory"):
        read_table(tmp_path / "d.csv")
    with pytest.raises(WinnowError, match="CSV file not found"):
        read_table(tmp_path / "none.csv")


def test_fit_reads_semicolon_tab_and_pipe_files_like_the_duckdb_path(tmp_path):
    """The plain path sniffs the separator as DuckDB's read_csv_auto (the --where/--sql path) does; a quoted
    field holding a separator stays one field."""
    from storage.scaling import select_fit_rows
    from tasks.scaling.csvinput import read_table

    for name, sep in (("semi", ";"), ("tab", "\t"), ("pipe", "|"), ("comma", ",")):
        f = tmp_path / f"{name}.csv"
        f.write_text("\n".join([sep.join(["n", "err", "note"])] +
                               [sep.join([str(n), str(e), '"a;b|c,d"']) for n, e in ((1, 0.5), (2, 0.4), (4, 0.3))]) + "\n")
        t = read_table(f)
        assert t.column_names == ["n", "err", "note"] and t.column("err").to_pylist() == [0.5, 0.4, 0.3], name
        assert t.column("note").to_pylist() == ["a;b|c,d"] * 3
        via_duckdb, _ = select_fit_rows(f, where="n > 0")
        assert via_duckdb.column_names == t.column_names and via_duckdb.column("err").to_pylist() == [0.5, 0.4, 0.3]
    import gzip  # a .csv.gz is sniffed decompressed (its raw bytes once looked '|'-separated)

    gz = tmp_path / "curve.csv.gz"
    gz.write_bytes(gzip.compress("N,loss\n1,0.5\n2,0.4\n4,0.3\n".encode()))
    assert read_table(gz).column_names == ["N", "loss"] and select_fit_rows(gz)[0].column_names == ["N", "loss"]


def test_a_relative_fit_plot_path_is_stored_absolute(tmp_path, monkeypatch, winnow):
    """``winnow fit --plot rel.png`` run from one folder: fits.plot_path still names the file from anywhere."""
    import duckdb

    monkeypatch.chdir(tmp_path)
    n = np.array([1e3, 2e3, 4e3, 8e3, 1.6e4, 3.2e4, 6.4e4, 1.28e5])
    (tmp_path / "curve.csv").write_text("n,err\n" + "".join(f"{x:g},{0.1 + 3 * x ** -0.3:.6f}\n" for x in n))
    code, _, err = winnow("fit", "curve.csv", "--x", "n", "--y", "err", "--form", "m2", "--bootstrap", "20",
                          "--plot", "plots/rel.png", "--db", "w.duckdb")
    assert code == 0, err
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        paths = {r[0] for r in con.execute("SELECT plot_path FROM fits").fetchall()}
    finally:
        con.close()
    assert paths == {str((tmp_path / "plots" / "rel.png").resolve())}
    assert (tmp_path / "plots" / "rel.png").read_bytes()[:4] == b"\x89PNG"
