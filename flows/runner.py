"""Build the Prefect task runner named in a config (threads locally, Dask to scale out)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from configs.base import TaskRunnerConfig
from tasks.errors import WinnowError


def make_task_runner(cfg: TaskRunnerConfig) -> Any:
    """ThreadPoolTaskRunner by default; DaskTaskRunner on ``address`` (or a LocalCluster without one)."""
    if cfg.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ModuleNotFoundError:
            raise WinnowError("task_runner.kind 'dask' needs the dask extra: pip install 'winnow[dask]'") from None
        if cfg.address:
            check_reachable(cfg.address)
            return DaskTaskRunner(address=cfg.address)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": cfg.n_workers, "threads_per_worker": cfg.threads_per_worker, "dashboard_address": None,
        })
    from prefect.task_runners import ThreadPoolTaskRunner

    if cfg.kind == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    return ThreadPoolTaskRunner(max_workers=cfg.max_workers)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A Dask scheduler address that nothing answers on is the user's input to fix: one line, exit 2, before
    the run starts (Dask itself retries for 30 s and the run ended 'failed' with an OSError, exit 1)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise WinnowError(f"task_runner.address {address!r} is not a Dask scheduler address (tcp://HOST:PORT)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise WinnowError(f"cannot reach the Dask scheduler at {address} ({err.strerror or err}): start it "
                          "(`dask scheduler`) or remove task_runner.address to run on threads") from None


#: Dask settings for the workers winnow starts. A worker paused at 80 % of its memory limit whose memory
#: is held by the allocator (not by Dask data it could spill) never resumes, and the run hangs with a
#: task assigned (dask/distributed#5235; seen here: a 1-worker sharded run at 1.63 of 2 GiB). winnow's
#: tasks bound their own memory, so workers are never paused; the nanny still restarts a worker that
#: reaches the terminate fraction (95 %) and the task is retried.
WORKER_MEMORY = {"distributed.worker.memory.pause": False}


@contextmanager
def task_runner_scope(cfg: TaskRunnerConfig, memory_limit: str | None = None) -> Iterator[Any]:
    """The runner for every flow of one pipeline run, sharing one Dask cluster among them.

    ``kind: dask`` without ``address`` starts ONE LocalCluster here (15-20 s on 2 cores) and hands out
    runners connected to it, instead of a new cluster per stage flow; it is closed when the block ends.
    ``memory_limit`` (e.g. ``"2GiB"``) caps each of its workers (default: Dask's ``auto`` share).
    """
    if cfg.kind != "dask" or cfg.address:
        yield make_task_runner(cfg)
        return
    try:
        import dask
        from distributed import LocalCluster
    except ModuleNotFoundError:
        raise WinnowError("task_runner.kind 'dask' needs the dask extra: pip install 'winnow[dask]'") from None
    with dask.config.set(WORKER_MEMORY), LocalCluster(
            n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker, dashboard_address=None, processes=True,
            memory_limit=memory_limit or "auto") as cluster:
        yield make_task_runner(cfg.model_copy(update={"address": cluster.scheduler_address}))
