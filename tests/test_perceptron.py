"""Teacher-student perceptron (Sorscher et al. 2022, Fig. 1): the keep-hard / keep-easy pattern."""

from __future__ import annotations

import pytest

from tasks.errors import WinnowError
from tasks.prune.perceptron import perceptron_experiment, summarize_perceptron

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows


@pytest.fixture(scope="module")
def grid():
    # small and fast: N=100, two data regimes, 3 seeds (the spec's reference cells)
    return perceptron_experiment(N=100, alphas=(1, 16), fractions=(0.4, 0.2), seeds=(0, 1, 2))


def test_keep_easy_beats_random_with_scarce_data(grid):
    # alpha_tot = 1: keeping the easiest examples wins, keeping the hardest loses
    rnd, easy, hard = (grid.mean_error(1, 0.4, p) for p in ("random", "easy", "hard"))
    assert easy < rnd - 0.05 and hard > rnd
    assert easy == pytest.approx(0.256, abs=0.04) and hard == pytest.approx(0.451, abs=0.04)


def test_keep_hard_beats_random_with_abundant_data(grid):
    # alpha_tot = 16: keeping the hardest examples wins by a wide margin
    rnd, easy, hard = (grid.mean_error(16, 0.2, p) for p in ("random", "easy", "hard"))
    assert hard < 0.5 * rnd and hard < easy
    assert hard == pytest.approx(0.031, abs=0.01) and rnd == pytest.approx(0.130, abs=0.03)


def test_summary_and_rows(grid):
    rows = summarize_perceptron(grid)
    assert len(rows) == 2 * 2 * 3 and all(r["n"] == 3 for r in rows)
    r = next(r for r in grid.rows if r.alpha_tot == 16 and r.fraction == 0.2)
    assert r.P == 1600 and r.n_kept == 320 and 0 <= r.test_error <= 1


def test_perceptron_flow_stores_rows_and_plot(tmp_path, winnow):
    db = tmp_path / "p.duckdb"
    plot = tmp_path / "p.png"
    code, out, err = winnow("experiment", "perceptron", "--db", db, "--n", "20", "--alphas", "1,4",
                            "--fractions", "1,0.5", "--seeds", "2", "--plot", plot)
    assert code == 0, err
    assert plot.stat().st_size > 5_000
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM perceptron_results").fetchone()[0] == 2 * 2 * 2 * 3
        assert con.execute("SELECT count(*) FROM perceptron_summary").fetchone()[0] == 2 * 2 * 3
    finally:
        con.close()
    # rerun: same run id, rows replaced not duplicated
    assert winnow("experiment", "perceptron", "--db", db, "--n", "20", "--alphas", "1,4",
                  "--fractions", "1,0.5", "--seeds", "2", "--plot", plot, "--force")[0] == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM perceptron_results").fetchone()[0] == 24
    finally:
        con.close()


@pytest.mark.parametrize("kw, match", [({"N": 1}, "N=1"), ({"alphas": (0,)}, "alpha_tot=0"),
                                       ({"fractions": (1.5,)}, "fraction=1.5"), ({"policies": ("best",)}, "best"),
                                       ({"theta": 3.0}, "theta=3.0"), ({"alphas": (float("inf"),)}, "finite"),
                                       ({"alphas": ()}, "no alpha_tot"), ({"alphas": (1, 1)}, "repeat"),
                                       ({"N": 100_000, "alphas": (64,)}, "6,400,000 x 100,000")])
def test_perceptron_rejects_bad_settings(kw, match):
    with pytest.raises(WinnowError, match=match):
        perceptron_experiment(**kw)


@pytest.mark.parametrize("args, message", [
    (("--alphas", "inf"), "alpha_tot=inf must be a finite number > 0"),
    (("--alphas", "1,1"), "repeat a value"),
    (("--alphas", ""), "no alpha_tot values"),
    (("--theta", "100"), "theta=100.0 must be in [0, pi/2]"),
    (("--theta", "nan"), "theta=nan must be in [0, pi/2]"),
    (("--plot", "{tmp}/p.txt"), "cannot write '.txt' plots"),
    (("--plot", "{tmp}"), "is a folder"),
])
def test_perceptron_cli_refuses_a_bad_grid_or_plot_in_one_line_before_writing(tmp_path, winnow, args, message):
    db = tmp_path / "p.duckdb"
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, out, err = winnow("experiment", "perceptron", "--db", db, "--n", "20", "--fractions", "1", "--seeds", "1", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not db.exists()

