"""Plots never write through a planted symlink, and an explicit ``--plot`` keeps an existing file unless
``--force`` (README, Guarantees). Every plot writer goes through :func:`tasks.files.save_figure`: a fresh
``mkstemp`` file in the destination folder, moved onto the destination with ``os.replace``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import db_fingerprint  # noqa: E402
from tasks.files import current_umask, save_figure  # noqa: E402

WINNOW = Path(sys.executable).parent / "winnow"
PNG = b"\x89PNG\r\n\x1a\n"
CURVE = "n,err\n10,0.5\n20,0.4\n40,0.33\n80,0.29\n160,0.26\n320,0.24\n"


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def _plant(tmp: Path, name: str) -> tuple[Path, Path]:
    """A victim file and a symlink to it at ``name`` (created with its folders)."""
    victim = tmp / "victim.txt"
    victim.write_text("must stay")
    link = tmp / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim, link


# ------------------------------------------------------------------------------- the helper itself
def test_save_figure_replaces_a_planted_link_and_leaves_its_target_alone(tmp_path):
    victim, link = _plant(tmp_path, "plot.png")
    fig = _figure()
    assert save_figure(fig, link) == str(link)
    plt.close(fig)
    assert victim.read_text() == "must stay"
    assert not link.is_symlink() and link.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "victim.txt"]  # no temp file left


def test_save_figure_replaces_a_dangling_link_without_creating_its_target(tmp_path):
    link = tmp_path / "plot.png"
    link.symlink_to(tmp_path / "elsewhere.png")
    fig = _figure()
    save_figure(fig, link)
    plt.close(fig)
    assert not (tmp_path / "elsewhere.png").exists()
    assert not link.is_symlink() and link.read_bytes()[:8] == PNG


def test_save_figure_removes_its_temp_file_when_drawing_fails_and_keeps_the_old_file(tmp_path):
    class Broken:
        def savefig(self, fname, **kwargs):
            fname.write(b"half a picture")
            raise RuntimeError("renderer failed")

    old = tmp_path / "plot.png"
    old.write_bytes(b"the previous plot")
    with pytest.raises(RuntimeError, match="renderer failed"):
        save_figure(Broken(), old)
    assert old.read_bytes() == b"the previous plot"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_save_figure_onto_a_folder_fails_and_leaves_no_temp_file(tmp_path):
    (tmp_path / "plot.png").mkdir()
    fig = _figure()
    with pytest.raises(OSError):
        save_figure(fig, tmp_path / "plot.png")
    plt.close(fig)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"] and not any((tmp_path / "plot.png").iterdir())


def test_save_figure_gives_the_usual_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        fig = _figure()
        save_figure(fig, tmp_path / "plot.png")
        plt.close(fig)
    finally:
        os.umask(old)
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("name, head", [("p.png", PNG), ("p.pdf", b"%PDF"), ("p.svg", b"<?xml"), ("sub/dir/p", PNG)])
def test_save_figure_writes_the_format_its_suffix_names_and_creates_folders(tmp_path, name, head):
    fig = _figure()
    save_figure(fig, tmp_path / name)
    plt.close(fig)
    assert (tmp_path / name).read_bytes()[: len(head)] == head


# ------------------------------------------------------------------- every plot writer uses it
def _fit_report():
    from tasks.scaling.api import fit_report

    x = 100.0 * 2.0 ** np.arange(8)
    return fit_report(x, 0.05 + 2.0 * x ** -0.4, form="m2", holdout_largest=0)


def _write_fit(path: Path) -> None:
    from tasks.scaling.plot import plot_fit

    plot_fit(path, _fit_report())


def _write_curves(path: Path) -> None:
    from tasks.scaling.plot import plot_curves

    rep = _fit_report()
    plot_curves(path, {"a": rep, "b": rep})


def _write_pruning_curve(path: Path) -> None:
    from tasks.prune.evaluate import CurvePoint, PruningCurve, plot_pruning_curve

    pts = [CurvePoint(m, p, p, f, s, 10, acc, "") for (m, p, f, acc) in
           [("random", "random", 0.5, 0.8), ("ssp", "hard", 0.5, 0.85), ("full", "full", 1.0, 0.9)] for s in (0, 1)]
    plot_pruning_curve(PruningCurve(tuple(pts)), str(path))


def _write_perceptron(path: Path) -> None:
    from tasks.prune.perceptron import perceptron_experiment, plot_perceptron

    plot_perceptron(perceptron_experiment(N=10, alphas=(1, 2), fractions=(1.0, 0.5), seeds=(0,)), str(path))


def _write_surface(path: Path) -> None:
    from tasks.mixture.plot import plot_surface

    P = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0, 0.5, 0.5]])
    plot_surface(P, np.arange(len(P), dtype=float), path)


def _write_pred_vs_measured(path: Path) -> None:
    from tasks.mixture.plot import plot_predicted_vs_measured

    plot_predicted_vs_measured({"held out": (np.array([0.5, 0.6, 0.7]), np.array([0.52, 0.58, 0.71]))}, path)


# the artifact-folder names the flows use (flows/fit.py, flows/prune.py, tasks/mixture/plot.py)
WRITERS = [("plots/fit-0123.png", _write_fit), ("plots/fit-0123-by.png", _write_curves),
           ("prune/run-digits-curve.png", _write_pruning_curve), ("perceptron/perceptron-0123.png", _write_perceptron),
           ("mixture/mix-surface.png", _write_surface), ("mixture/mix-pred-vs-measured.png", _write_pred_vs_measured)]


@pytest.mark.parametrize("name, write", WRITERS, ids=[w.__name__[7:] for _, w in WRITERS])
def test_every_plot_writer_replaces_a_link_planted_at_its_path(tmp_path, name, write):
    victim, link = _plant(tmp_path, f"w.artifacts/{name}")
    write(link)
    assert victim.read_text() == "must stay"
    assert not link.is_symlink() and link.read_bytes()[:8] == PNG
    assert sorted(p.name for p in link.parent.iterdir()) == [link.name]


def test_no_plot_writer_calls_savefig_on_a_path_itself():
    """One way to write a figure: a new ``savefig`` on a path would bypass the link check."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("tasks", "flows", "cli", "storage"):
        for py in (root / folder).rglob("*.py"):
            for i, line in enumerate(py.read_text().splitlines(), 1):
                if ".savefig(" in line and "fig.savefig(buf" not in line and "fig.savefig(fh" not in line:
                    offenders.append(f"{py.relative_to(root)}:{i}: {line.strip()}")
    assert offenders == []


# ------------------------------------------------------------- through the installed console script
def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINNOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", COLUMNS="200")
    return env


def _winnow(tmp: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(WINNOW), *map(str, args)], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def fit_dir(tmp_path) -> Path:
    """A curve and a database that already holds a fit (written through storage, no Prefect needed)."""
    from storage.db import Store
    from storage.scaling import FitRecord, save_fits

    (tmp_path / "one.csv").write_text(CURVE)
    rec = FitRecord("err", "m2", "y = E + B * x^-c", "n", None, "err", "as given", 6, 6, 162, 1e-6, True, None,
                    {"E": 0.1, "B": 2.0, "c": 0.5}, {}, 0, 0.95, 1)
    save_fits(Store(tmp_path / "w.duckdb"), "fit-000000000000", [rec])
    return tmp_path


FIT = ("fit", "one.csv", "--x", "n", "--y", "err", "--form", "m2", "--bootstrap", "0", "--db", "w.duckdb")


def _refused_once(p: subprocess.CompletedProcess, text: str) -> None:
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and text in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("planted", ["file", "link", "dangling link"])
def test_fit_refuses_an_existing_plot_path_before_any_work(fit_dir, planted):
    victim = fit_dir / "victim.png"
    victim.write_text("hello")
    target = fit_dir / "myplot.png"
    if planted == "file":
        target.write_text("hello")
    else:
        target.symlink_to(victim if planted == "link" else fit_dir / "nowhere.png")
    before = db_fingerprint(fit_dir / "w.duckdb")
    p = _winnow(fit_dir, *FIT, "--plot", "myplot.png")
    _refused_once(p, "--plot myplot.png already exists; pass --force to overwrite it")
    assert victim.read_text() == "hello" and target.is_symlink() == (planted != "file")
    assert planted != "file" or target.read_text() == "hello"
    assert not (fit_dir / "nowhere.png").exists()
    assert db_fingerprint(fit_dir / "w.duckdb") == before
    assert not (fit_dir / "w.artifacts").exists()


def test_perceptron_refuses_an_existing_plot_path_before_any_work(tmp_path):
    (tmp_path / "p.png").write_text("hello")
    p = _winnow(tmp_path, "experiment", "perceptron", "--n", "10", "--alphas", "1", "--fractions", "1", "--seeds", "1",
                "--plot", "p.png", "--db", "p.duckdb")
    _refused_once(p, "--plot p.png already exists; pass --force to overwrite it")
    assert (tmp_path / "p.png").read_text() == "hello" and not (tmp_path / "p.duckdb").exists()


def test_fit_with_force_replaces_an_existing_plot_file(fit_dir):
    (fit_dir / "myplot.png").write_text("hello")
    p = _winnow(fit_dir, *FIT, "--plot", "myplot.png", "--force", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["plot"] == str((fit_dir / "myplot.png").resolve())
    assert (fit_dir / "myplot.png").read_bytes()[:8] == PNG
    assert (fit_dir / "myplot.png").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_fit_with_force_replaces_a_linked_plot_path_as_a_link(fit_dir):
    victim = fit_dir / "victim.png"
    victim.write_text("hello")
    (fit_dir / "myplot.png").symlink_to(victim)
    p = _winnow(fit_dir, *FIT, "--plot", "myplot.png", "--force")
    assert p.returncode == 0, p.stderr
    assert victim.read_bytes() == b"hello"
    assert not (fit_dir / "myplot.png").is_symlink() and (fit_dir / "myplot.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_fit_rerun_replaces_a_link_planted_at_its_default_plot_path(fit_dir):
    first = _winnow(fit_dir, *FIT, "--json")
    assert first.returncode == 0, first.stderr
    png = Path(json.loads(first.stdout)["plot"])
    assert png.parent == (fit_dir / "w.artifacts" / "plots").resolve() and png.read_bytes()[:8] == PNG
    png.unlink()
    victim = fit_dir / "victim.png"
    victim.write_text("hello")
    png.symlink_to(victim)
    again = _winnow(fit_dir, *FIT, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["plot"] == str(png)
    assert victim.read_bytes() == b"hello"
    assert not png.is_symlink() and png.read_bytes()[:8] == PNG
