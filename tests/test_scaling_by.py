"""`winnow fit` for analysis work: `--by` fits one law per curve in one command (each matching its
single fit), `--where` / `--col` are evaluated by DuckDB in the query sandbox (and stored), the JSON
carries everything printed, and impossible hold-outs are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import db_fingerprint


def _curves_csv(path: Path, n_curves: int = 22, seed: int = 0) -> tuple[Path, dict]:
    """``n_curves`` noisy m2 learning curves (model, seed, n, err), each with its own constants."""
    rng = np.random.default_rng(seed)
    n = np.geomspace(100, 1e5, 8)
    lines, truth = ["model,seed,n,err"], {}
    for i in range(n_curves):
        E, B, c = rng.uniform(0.02, 0.2), rng.uniform(1.0, 10.0), rng.uniform(0.2, 0.6)
        model, s = f"m{i // 2}", i % 2
        truth[f"model={model}|seed={s}"] = (E, B, c)
        err = (E + B * n**-c) * np.exp(rng.normal(0, 0.01, n.size))
        lines += [f"{model},{s},{a:.6g},{b:.8g}" for a, b in zip(n, err)]
    path.write_text("\n".join(lines) + "\n")
    return path, truth


def test_by_fits_every_curve_in_one_command_and_matches_single_fits(winnow, tmp_path, db_path):
    import duckdb

    from tasks.scaling.api import fit_report

    csv, truth = _curves_csv(tmp_path / "curves.csv")
    code, out, err = winnow("fit", csv, "--x", "n", "--y", "err", "--by", "model,seed", "--form", "m2",
                            "--holdout-largest", "2", "--bootstrap", "0", "--predict", "1e6", "--db", db_path, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["curves"]) == len(truth) == 22 and res["skipped"] == {}
    assert {r["predictor"] for r in res["per_predictor"]} >= {"m2", "last_value", "best_small"}
    data = np.genfromtxt(csv, delimiter=",", names=True, dtype=None, encoding=None)
    for key in ("model=m0|seed=0", "model=m5|seed=1", "model=m10|seed=1"):
        model, seed = (kv.split("=")[1] for kv in key.split("|"))
        m = (data["model"] == model) & (data["seed"] == int(seed))
        single = fit_report(data["n"][m], data["err"][m], form="m2", holdout_largest=2, predict_at=[1e6])
        got = res["fits"][key]
        for k, v in single.fit.params.items():
            assert got["final_fit"]["params"][k] == pytest.approx(v, rel=1e-6), (key, k)
        assert got["validated_fit"]["params"]["c"] == pytest.approx(single.validation.params["c"], rel=1e-6)
        assert got["validation"]["rmsle"] == pytest.approx(single.validation.rmsle, rel=1e-6)
        assert got["predictions"][0]["y"] == pytest.approx(float(single.predictions[0]), rel=1e-6)
        assert got["predictions"][0]["lo"] <= got["predictions"][0]["y"] <= got["predictions"][0]["hi"]
        assert set(got["validation"]["baseline_rmsle"]) == {"last_value", "best_small"}
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        n_fits = con.execute("SELECT count(*) FROM fits WHERE run_id = ?", [res["run_id"]]).fetchone()[0]
        det = con.execute("SELECT fit_key, predictor, curve, validated_params FROM fit_details WHERE run_id = ? ORDER BY fit_key",
                          [res["run_id"]]).fetchall()
    finally:
        con.close()
    assert n_fits == 22 and len(det) == 22
    assert json.loads(det[0][2]) == {"model": "m0", "seed": "0"} and "c" in json.loads(det[0][3])


def _chinchilla_like(path: Path, seed: int = 0) -> Path:
    """Runs with FLOP instead of D, and a few diverged runs with huge losses to filter out."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(3e9), 40))
    D = N * np.exp(rng.uniform(np.log(5.0), np.log(200.0), 40))
    loss = (1.9 + 900.0 * (6 * N * N) ** -0.17 + 3000.0 * (6 * D * D) ** -0.17) * np.exp(rng.normal(0, 0.01, 40))
    loss[[3, 17, 29]] = [9.0, 11.0, 10.5]  # diverged runs
    path.write_text("run,N,FLOP,loss\n" + "".join(f"r{i},{a:.8g},{6 * a * d:.8g},{b:.8g}\n" for i, (a, d, b) in enumerate(zip(N, D, loss))))
    return path


def test_where_and_col_fit_equals_the_fit_on_a_preprocessed_csv(winnow, tmp_path, db_path):
    import duckdb

    raw = _chinchilla_like(tmp_path / "raw.csv")
    common = ("--x", "N", "--x2", "D", "--y", "loss", "--form", "gadre", "--holdout-largest", "2", "--bootstrap", "0",
              "--predict", "7e9:1.4e11", "--db", db_path, "--json")
    code, out, err = winnow("fit", raw, "--col", "D=FLOP/(6*N)", "--where", "loss < 5", *common)
    assert code == 0, err
    derived = json.loads(out)
    rows = [r.split(",") for r in raw.read_text().splitlines()[1:]]
    pre = tmp_path / "pre.csv"
    pre.write_text("N,D,loss\n" + "".join(f"{n},{float(f) / (6 * float(n))!r},{lo}\n" for _, n, f, lo in rows if float(lo) < 5))
    code, out, err = winnow("fit", pre, *common)
    assert code == 0, err
    plain = json.loads(out)
    kept = sum(float(lo) < 5 for *_, lo in rows)
    assert derived["final_fit"]["n_points"] == plain["final_fit"]["n_points"] == kept < 37  # diverged runs dropped
    for k, v in plain["params"].items():
        assert derived["params"][k] == pytest.approx(v, rel=1e-6), k
    assert derived["predictions"][0]["y"] == pytest.approx(plain["predictions"][0]["y"], rel=1e-6)
    assert "FLOP/(6*N)" in derived["source_sql"] and "loss < 5" in derived["source_sql"]
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        stored = con.execute("SELECT source_sql FROM fit_details WHERE run_id = ?", [derived["run_id"]]).fetchone()[0]
    finally:
        con.close()
    assert stored == derived["source_sql"]


@pytest.mark.parametrize("args, message", [
    (("--where", "1=1) UNION ALL (SELECT * FROM read_csv_auto('/etc/passwd')"), "does not parse"),  # not a condition
    (("--where", "1=1); DROP TABLE data; SELECT (1"), "does not parse"),
    (("--where", "(SELECT count(*) FROM read_csv_auto('/etc/passwd')) > 0"), "cannot touch other files"),  # a condition
    (("--col", "bad name=1"), "must be a plain identifier"),
    (("--where", "no_such_column > 1"), "--where/--col/--sql failed"),
    (("--holdout-largest", "9"), "--holdout-largest 9 needs at least 10 distinct --x values (one left to fit on); the data have 4"),
])
def test_bad_sql_and_impossible_holdout_are_one_line_and_leave_the_db_unchanged(winnow, tmp_path, db_path, args, message):
    csv = tmp_path / "c.csv"
    csv.write_text("n,err\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n")
    code, _, err = winnow("fit", csv, "--x", "n", "--y", "err", "--form", "m1", "--bootstrap", "0", *args, "--db", db_path)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and message in " ".join(err.split()), err
    assert db_fingerprint(db_path) is None  # nothing was created
