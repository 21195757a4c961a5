"""`winnow fit` end to end: tables in DuckDB, the PNG, idempotent reruns, and bad CSVs that exit 2
with one clear line and leave the database unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import db_fingerprint

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

DATA = Path(__file__).parent / "data" / "gadre_overtrain_104models.csv"


@pytest.fixture
def rpj_csv(tmp_path: Path) -> Path:
    """The RedPajama runs of Gadre et al. 2024: model, N, D, C4 validation loss."""
    rows = [r for r in csv.DictReader(DATA.open()) if r["dataset"] == "rpj"]
    out = tmp_path / "rpj.csv"
    out.write_text("model,N,D,loss\n" + "".join(f"{r['model']},{r['N']},{r['D']},{r['loss_c4_val']}\n" for r in rows))
    return out


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


def test_fit_cli_stores_fit_predictions_and_plot_and_rerun_replaces(winnow, rpj_csv, db_path, tmp_path):
    import duckdb

    png = tmp_path / "fit.png"
    args = ("fit", rpj_csv, "--x", "N", "--x2", "D", "--y", "loss", "--form", "gadre", "--group", "model",
            "--holdout-largest", "2", "--predict", "1.4e9:8.96e11", "--predict", "6.9e9:1.38e11",
            "--bootstrap", "60", "--plot", png, "--db", db_path, "--json")
    code, out, err = winnow(*args)
    assert code == 0, err
    res = json.loads(out)
    assert res["form"] == "gadre" and set(res["params"]) == {"E", "a", "b", "eta"}
    assert res["validation"]["beats_baseline"] is True and res["validation"]["are"] < 0.01
    assert len(res["predictions"]) == 2
    for p in res["predictions"]:
        assert p["lo"] <= p["y"] <= p["hi"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        fits = con.execute("SELECT run_id, fit_key, form, n_points, n_groups, holdout_are, beats_baseline, params, plot_path FROM fits").fetchall()
        preds = con.execute("SELECT kind, count(*) FROM predictions GROUP BY kind ORDER BY kind").fetchall()
        status = con.execute("SELECT status FROM runs WHERE run_id = ?", [res["run_id"]]).fetchall()
    finally:
        con.close()
    assert len(fits) == 1
    run_id, key, form, n, groups, h_are, beats, params, plot_path = fits[0]
    assert (run_id, key, form, n, groups) == (res["run_id"], "loss", "gadre", 35, 6)
    assert h_are == pytest.approx(res["validation"]["are"]) and beats is True
    assert json.loads(params)["eta"] == pytest.approx(res["params"]["eta"])
    assert plot_path == str(png)
    assert preds == [("holdout", 3), ("target", 2)]
    assert status == [("completed",)]

    def fingerprint():  # run_attempts logs every attempt, so a rerun adds a row there by design
        fp = db_fingerprint(db_path, ignore=("started_at", "finished_at", "created_at", "summary"))
        fp.pop("run_attempts", None)
        return fp

    before = fingerprint()
    code, out2, err = winnow(*args, "--force")  # the explicit --plot file exists now
    assert code == 0, err and json.loads(out2)["run_id"] == res["run_id"]
    assert fingerprint() == before


def test_fit_cli_prints_baselines_and_says_when_no_form_beats_them(winnow, tmp_path, db_path):
    x = np.geomspace(10, 1e6, 16)
    y = 5.0 * x ** -0.3
    y[-4:] = y[-5]  # the curve flattens at the largest scales
    f = _write(tmp_path / "flat.csv", "n,err\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y)))
    code, out, err = winnow("fit", f, "--x", "n", "--y", "err", "--form", "auto", "--holdout-largest", "3",
                            "--bootstrap", "0", "--predict", "1e7", "--db", db_path)
    assert code == 0, err
    text = " ".join(out.split())
    assert "baseline: last value" in text and "baseline: best small" in text
    assert "no form beats the naive baseline" in text
    assert "auto: candidates ranked by held-out RMSLE" in text
    assert "predictions from: last_value" in text  # the naive forecast won the held-out check and is used
    assert "parameters of the FINAL fit on all 16 points" in text
    assert "held-out error band (1.96 x [held-out RMSLE" in text  # printed as text: rich took [...] for markup


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory) -> Path:
    """A store that already holds one fit (written through storage, no Prefect needed)."""
    from storage.db import Store
    from storage.scaling import FitRecord, PredictionRow, save_fits

    path = tmp_path_factory.mktemp("db") / "winnow.duckdb"
    rec = FitRecord("err", "m2", "y = E + B * x^-c", "n", None, "err", "as given", 8, 8, 162, 1e-6, True, None,
                    {"E": 0.1, "B": 2.0, "c": 0.5}, {"E": (0.05, 0.2), "B": (1.0, 3.0), "c": (0.4, 0.6)}, 100, 0.95, 1,
                    predictions=[PredictionRow("target", 1e6, None, 0.102, 0.1, 0.11)])
    save_fits(Store(path), "fit-000000000000", [rec])
    return path


def test_save_fits_is_idempotent_and_loads_back(existing_db):
    from storage.db import Store
    from storage.scaling import load_fits, load_predictions, save_fits

    store = Store(existing_db)
    fits = load_fits(store, "fit-000000000000")
    assert len(fits) == 1 and fits[0]["params"] == {"B": 2.0, "E": 0.1, "c": 0.5}
    assert fits[0]["param_ci"]["c"] == [0.4, 0.6]
    preds = load_predictions(store, "fit-000000000000")
    assert [(p["kind"], p["x"], p["y_pred"], p["y_obs"]) for p in preds] == [("target", 1e6, 0.102, None)]
    before = db_fingerprint(existing_db, ignore=("created_at",))
    save_fits(store, "fit-000000000000", [])  # replacing with nothing removes the run's rows ...
    assert load_fits(store, "fit-000000000000") == [] and load_predictions(store, "fit-000000000000") == []
    from storage.scaling import FitRecord, PredictionRow

    rec = FitRecord("err", "m2", "y = E + B * x^-c", "n", None, "err", "as given", 8, 8, 162, 1e-6, True, None,
                    {"E": 0.1, "B": 2.0, "c": 0.5}, {"E": (0.05, 0.2), "B": (1.0, 3.0), "c": (0.4, 0.6)}, 100, 0.95, 1,
                    predictions=[PredictionRow("target", 1e6, None, 0.102, 0.1, 0.11)])
    save_fits(store, "fit-000000000000", [rec])
    save_fits(store, "fit-000000000000", [rec])  # ... and a rerun leaves exactly one copy
    assert db_fingerprint(existing_db, ignore=("created_at",)) == before


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "size", "--y", "err"), "no column 'size' (given as --x); columns are: n, err"),
        ("n,err\n1,0.5\n0,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err"), "column 'n' must be > 0 (scaling laws are fitted in log space); row 2 has 0.0"),
        ("n,err\n1,0.5\n2,\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err"), "column 'err' is empty or NaN in row 2"),
        ("n,err\n1,0.5\n2,nan\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err"), "column 'err' is empty or NaN in row 2"),
        ("n,err\n1,0.5\n2,-0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err"), "column 'err' must be > 0"),
        ("n,err\n1,0.5\n2,abc\n3,0.3\n", ("--x", "n", "--y", "err"), "column 'err' is not numeric: row 2 holds 'abc'"),
        ("n,err\n1,0.5\n2,0.4\n", ("--x", "n", "--y", "err", "--form", "m2"), "form 'm2' has 3 parameters (E, B, c) but only 2 data point(s)"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--form", "m7"), "unknown scaling-law form 'm7'"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--form", "gadre"), "takes two variables"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--form", "m2", "--predict", "1e9:5"), "one-variable form"),
        ("n,n,err\n1,1,0.5\n2,2,0.4\n3,3,0.3\n4,4,0.25\n", ("--x", "n", "--y", "err"), "the header names column 'n' 2 times"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--x2", "n", "--y", "err", "--form", "chinchilla"),
         "--x2 and --x name the same column 'n'"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--by", ","), "--by ',': give column names"),
        ("t,n,err\na,1,0.5\na,2,0.4\nb,3,0.3\nb,4,0.25\n", ("--x", "n", "--y", "err", "--by", "t,t"), "names 't' twice"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--seed", "-1"), "Invalid value for '--seed'"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--where", " "), "--where ' ' is empty"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--where", "err <"), "--where 'err <' does not parse"),
        (b"n\xe9,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err"), "the header is not UTF-8 text"),
        (b"g,n,err\na,1,0.5\n\xe9,2,0.4\na,3,0.3\na,4,0.25\n", ("--x", "n", "--y", "err", "--by", "g"),
         "column 'g' is not UTF-8 text (row 2)"),
        ("n,err\n1,0.5\n2,0.4\n3,0\n4,0.25\n", ("--x", "n", "--y", "err", "--where", "n > 2"),
         "row 1 of the --where/--col/--sql result has 0.0"),
        ("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n", ("--x", "n", "--y", "err", "--form", "m1", "--plot", "fit.txt"), "cannot write '.txt' plots"),
    ],
)
def test_bad_csv_exits_2_with_one_clear_line_and_leaves_the_db_unchanged(winnow, tmp_path, existing_db, content, args, message):
    before = db_fingerprint(existing_db)
    bad = _write(tmp_path / "bad.csv", content)
    code, out, err = winnow("fit", bad, *args, "--bootstrap", "0", "--holdout-largest", "0", "--db", existing_db)
    assert code == 2
    text = " ".join(err.split())
    assert text.startswith("error:") and message in text, err
    assert db_fingerprint(existing_db) == before


def test_a_db_that_cannot_take_the_fit_is_refused_before_the_work(winnow, tmp_path):
    import duckdb

    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE t (a INT)")
    curve = _write(tmp_path / "c.csv", "n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n")
    code, out, err = winnow("fit", curve, "--x", "n", "--y", "err", "--form", "m1", "--db", other)
    assert code == 2 and "not a usable winnow database" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "other.artifacts").exists()  # no plot was drawn for a fit that cannot be stored


def test_a_binary_file_named_csv_is_one_printable_line(winnow, tmp_path, existing_db):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "really_parquet.csv"
    pq.write_table(pa.table({"n": [1.0, 2.0, 3.0], "err": [0.5, 0.4, 0.3]}), f)
    code, _, err = winnow("fit", f, "--x", "n", "--y", "err", "--db", existing_db)
    assert code == 2 and "cannot parse as CSV" in err and len(err.strip().splitlines()) == 1
    assert all(c.isprintable() for c in err.strip()), repr(err)


def test_missing_csv_is_a_clear_error(winnow, tmp_path, existing_db):
    code, _, err = winnow("fit", tmp_path / "nope.csv", "--x", "n", "--y", "err", "--db", existing_db)
    assert code == 2 and "CSV file not found" in err


def test_extrapolated_error_rates_stay_at_most_one():
    from configs.scaling import ExtrapolateConfig
    from tasks.scaling.pilots import extrapolate_pilots

    err = np.array([0.95, 0.9, 0.97, 0.85, 0.9, 0.96, 0.88, 0.93])  # noisy, high: the log-space band passes 1
    rows = {"mixture": ["m"] * 8, "size": [10.0, 20, 40, 80] * 2, "accuracy": list(1 - err), "seed": [0] * 4 + [1] * 4}
    rep = extrapolate_pilots(rows, ExtrapolateConfig(form="m2", target_sizes=[5.0, 1e4], bootstrap=50, holdout_largest=1))[0].report
    assert np.all(rep.pred_hi <= 1.0) and np.all(rep.predictions <= 1.0) and np.all(rep.pred_lo <= rep.predictions)
    assert rep.interval_method.endswith("clipped at error 1")


def test_extrapolate_pilots_fits_each_mixture_in_error_space_and_stores_it(tmp_path):
    from configs.scaling import ExtrapolateConfig
    from flows.fit import save_pilot_fits
    from tasks.scaling.pilots import extrapolate_pilots
    from storage.db import Store
    from storage.scaling import load_fits, load_predictions

    rng = np.random.default_rng(0)
    sizes = np.array([500, 1000, 2000, 4000, 8000, 16000], dtype=float)
    rows = {"mixture": [], "size": [], "accuracy": [], "seed": []}
    for name, (E, B, c) in {"a": (0.05, 2.0, 0.4), "b": (0.1, 1.5, 0.3)}.items():
        for seed in range(3):
            err = (E + B * sizes ** -c) * np.exp(rng.normal(0, 0.01, sizes.size))
            rows["mixture"] += [name] * sizes.size
            rows["size"] += sizes.tolist()
            rows["accuracy"] += (1 - err).tolist()
            rows["seed"] += [seed] * sizes.size
    rows["mixture"] += ["perfect", "perfect", "perfect"]
    rows["size"] += [10.0, 20.0, 40.0]
    rows["accuracy"] += [0.9, 0.99, 1.0]
    rows["seed"] += [0, 0, 0]
    cfg = ExtrapolateConfig(form="m2", target_sizes=[60000, 1e6], bootstrap=50, holdout_largest=1)
    fits = {f.key: f for f in extrapolate_pilots(rows, cfg)}
    assert fits["perfect"].report is None and "accuracy 1" in fits["perfect"].note
    a = fits["a"].report
    assert a.fit.params["c"] == pytest.approx(0.4, rel=0.1) and a.fit.n_groups == 3
    true_err = 0.05 + 2.0 * 60000 ** -0.4
    assert a.fit.pred_lo[0] < true_err * 1.05 and a.fit.pred_hi[0] > true_err * 0.95
    assert a.validation is not None and a.validation.beats_baseline

    store = Store(tmp_path / "w.duckdb")
    lines = save_pilot_fits(store, "pipeline-abc", list(fits.values()))
    assert any(line.startswith("perfect: skipped") for line in lines)
    stored = load_fits(store, "pipeline-abc")
    assert [f["fit_key"] for f in stored] == ["a", "b"] and {f["space"] for f in stored} == {"error"}
    preds = load_predictions(store, "pipeline-abc", "b")
    assert sorted(p["kind"] for p in preds) == ["holdout"] * 3 + ["target"] * 2


def test_pilot_rows_from_the_mixture_tables_become_curves():
    from tasks.scaling.pilots import pilots_from_rows

    rows = [{"mixture_id": m, "n": n, "rep": r, "metric": "accuracy", "value": 0.9 - 1 / n} for m in (0, 3) for n in (100, 200) for r in (0, 1)]
    cols = pilots_from_rows(rows)
    assert sorted(set(cols["mixture"])) == ["mixture-0", "mixture-3"]
    assert cols["size"].tolist()[:2] == [100.0, 100.0]
    # every pilot is its own run for the bootstrap: rep 0 at n=100 and at n=200 are independent trainings
    assert cols["seed"].tolist()[:4] == ["100-0", "100-1", "200-0", "200-1"]
    assert len(set(cols["seed"][cols["mixture"] == "mixture-0"].tolist())) == 4
    assert cols["accuracy"][0] == pytest.approx(0.89)
