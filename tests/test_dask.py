"""Scale-out: the same pipeline on prefect-dask's DaskTaskRunner (a LocalCluster) gives the same tables.

One LocalCluster (2 worker processes) is shared by every subflow of the run; the tasks must not need
the DuckDB file (they return staged files / values, the flow process writes).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import db_contents, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

pytest.importorskip("prefect_dask")

VOLATILE = {"prefect_flow_run_id", "summary", "config", "config_hash", "run_id", "info"}


def _config(tmp_path: Path, runner: str) -> Path:
    rng = np.random.default_rng(5)
    rows = ["x1,x2,x3,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{rng.normal():.5f},{i % 2}" for i in range(300)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return write_yaml(tmp_path / f"{runner}.yaml", textwrap.dedent(f"""
        name: scale
        task_runner: {runner}
        sources:
          - {{name: tab, kind: csv, path: t.csv, label: y}}
          - {{name: digits, kind: sklearn_digits, max_rows: 500}}
    """))


def test_dask_local_cluster_gives_the_same_tables_as_the_sequential_run(tmp_path, monkeypatch):
    from prefect_dask import DaskTaskRunner

    from flows.pipeline import run_config

    submitted: list[str] = []
    submit = DaskTaskRunner.submit

    def spy(self, task, *args, **kwargs):
        submitted.append(task.name)
        return submit(self, task, *args, **kwargs)

    monkeypatch.setattr(DaskTaskRunner, "submit", spy)
    seq_db, dask_db = tmp_path / "seq" / "w.duckdb", tmp_path / "dask" / "w.duckdb"
    seq = run_config(_config(tmp_path, "{kind: sequential}"), str(seq_db), None, progress=False)
    assert submitted == []
    # (a different database folder is a different staging folder: no cache hits from the first run)
    dask = run_config(_config(tmp_path, "{kind: dask, n_workers: 2, threads_per_worker: 1}"), str(dask_db),
                      None, progress=False)
    assert submitted.count("stage-source") == 2  # the tasks went to the cluster
    assert [s["rows"] for s in dask["sources"]] == [s["rows"] for s in seq["sources"]] == [300, 500]
    # the configs differ only in task_runner, hence the run ids; everything else must be equal
    assert db_contents(dask_db, VOLATILE) == db_contents(seq_db, VOLATILE)


def _normalised(db: Path, run_id: str) -> dict[str, list[tuple]]:
    """Table contents with the run id (which hashes the config, task_runner included) replaced by 'RUN'."""
    def norm(v):
        return v.replace(run_id, "RUN") if isinstance(v, str) else v

    return {t: sorted((tuple(norm(v) for v in row) for row in rows), key=repr)
            for t, rows in db_contents(db, VOLATILE - {"run_id"}).items()}


@pytest.mark.slow
def test_dask_runs_the_stages_too_with_the_same_results(tmp_path):
    """Ingest + embed + prune (whatever stages exist) on a LocalCluster vs sequentially."""
    from flows.pipeline import run_config

    stages = textwrap.dedent("""
        encoder: {kind: pca, dim: 8, seed: 0, sources: [digits]}
        prune:
          sources: [digits]
          metrics: [ssp, random]
          fractions: [0.5]
          evaluate: {fractions: [1.0, 0.5], seeds: [0]}
    """)
    out = {}
    for kind in ("{kind: sequential}", "{kind: dask, n_workers: 2, threads_per_worker: 1}"):
        cfg = _config(tmp_path, kind)
        cfg.write_text(cfg.read_text().replace("max_rows: 500", "max_rows: 600") + stages)
        db = tmp_path / kind.split(",")[0].split()[-1].strip("}") / "w.duckdb"
        summary = run_config(cfg, str(db), None, progress=False)
        assert set(summary["stages"]) == {"embed", "prune"}
        out[kind] = _normalised(db, summary["run_id"])
    seq, dask = out.values()
    assert seq["selection_members"] and dask == seq


def test_workers_winnow_starts_are_never_paused_and_get_their_memory_limit():
    """A paused worker whose memory the allocator holds never resumes (dask/distributed#5235): the run would
    hang. The LocalCluster of flows.runner starts workers with the memory limit asked for and no pause."""
    from distributed import Client

    from configs.base import TaskRunnerConfig
    from flows.runner import task_runner_scope

    with task_runner_scope(TaskRunnerConfig(kind="dask", n_workers=1, threads_per_worker=1), memory_limit="2GiB") as runner:
        with Client(runner.address) as client:
            seen = client.run(lambda dask_worker: (dask_worker.memory_manager.memory_pause_fraction,
                                                   dask_worker.memory_manager.memory_limit))
    assert list(seen.values()) == [(False, 2 * 2**30)]
