"""Caching, resume and retries for heavy Prefect tasks: one decorator, :func:`heavy_task`.

A flow killed half-way (crash, SIGKILL, a lost machine) is simply started again: every heavy task
whose cache key is unchanged returns its persisted result instead of recomputing, so only unfinished
work runs, and the flow's idempotent writes (delete-then-insert by ``run_id``) end with the same
tables as an uninterrupted run.

Cache key (see Prefect's *Caching* docs)::

    key = hash(explicit inputs  -  excluded args)  +  hash(task source)  +  hash(stat of input files)

* ``INPUTS`` — the task's arguments (``progress`` and other display-only arguments excluded);
* ``TASK_SOURCE`` — editing the task body invalidates its cache (not the code it calls: bump an
  argument such as ``version`` when a called function changes meaning);
* :class:`InputFiles` — (path, size, mtime) of every file or folder an argument points at
  (``Path`` arguments and ``Path`` fields of pydantic/dataclass arguments), so a source file edited
  in place is read again rather than served stale.

There is no ``RUN_ID`` in the key (Prefect's default has one, which only caches within one run).

Results are *pickled* into Prefect's result storage, ``$PREFECT_HOME/storage`` unless
``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` (or a default storage block) says otherwise. Hence the rule:
**a heavy task returns paths or small values** (a staged Parquet path, a score vector of a few MB,
metrics), never a 1 GB array. A task that returns a path must be ready for the file to have moved
on since (its caller checks ``path.exists()`` and reruns with ``refresh_cache=True``).
Why not a folder next to the DuckDB file: served deployments, workers and Dask workers load the flow
from its entrypoint, so a per-database storage set on the flow object would be lost; where a result
belongs to one database (staged files), the key already holds that database's staging folder.

Retries: up to :data:`RETRIES` times with exponential backoff and jitter, only for transient I/O
errors (:func:`is_transient`): a bad input (``WinnowError``), a missing file or a bug fails at once.
The DuckDB lock has its own bounded wait in :mod:`storage.db`; tasks never open the database.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.tasks import exponential_backoff
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from tasks.errors import WinnowError

R = TypeVar("R")

RETRIES = 3
RETRY_DELAYS: list[float] = exponential_backoff(backoff_factor=1.0)(RETRIES)  # 1 s, 2 s, 4 s
RETRY_JITTER = 0.5
DISPLAY_ONLY_ARGS = ("progress",)

# OSErrors that retrying cannot fix: the input is wrong, not the moment.
_TERMINAL_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
_TERMINAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG}


# ---------------------------------------------------------------------------------- cache policy
def _paths_in(value: Any, depth: int = 0) -> Iterator[Path]:
    """Every ``Path`` in an argument: the value itself, list items, pydantic/dataclass fields (2 levels)."""
    if isinstance(value, Path):
        yield value
    elif depth >= 2:
        return
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _paths_in(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _paths_in(v, depth + 1)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _paths_in(getattr(value, name), depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _paths_in(getattr(value, f.name), depth + 1)


def file_stamp(path: Path) -> list:
    """(path, size, mtime_ns) of a file, of every file under a folder, or ``[path, None]`` if absent."""
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    if not path.is_dir():
        return [str(path), st.st_size, st.st_mtime_ns]
    out: list = [str(path), "dir"]
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            try:
                s = os.stat(p)
            except OSError:
                continue
            out.append((os.path.relpath(p, path), s.st_size, s.st_mtime_ns))
    return out


@dataclasses.dataclass
class InputFiles(CachePolicy):
    """Cache-key component: the size and modification time of every file an input points at.

    ``exclude`` names arguments whose paths are outputs or scratch folders (not read as input).
    """

    exclude: list[str] = dataclasses.field(default_factory=list)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        stamps = [
            file_stamp(p)
            for name, value in sorted((inputs or {}).items())
            if name not in self.exclude
            for p in _paths_in(value)
        ]
        return hash_objects(stamps, raise_on_failure=True) if stamps else None


def cache_policy(exclude: Iterable[str] = DISPLAY_ONLY_ARGS, scratch: Iterable[str] = ()) -> CachePolicy:
    """``INPUTS - exclude + TASK_SOURCE + InputFiles``: what :func:`heavy_task` keys results on.

    ``scratch`` names arguments that are output/scratch locations: part of the key (a different
    folder is a different result) but their files are not stamped.
    """
    inputs: CachePolicy = INPUTS
    for name in exclude:
        inputs = inputs - name
    return inputs + TASK_SOURCE + InputFiles(exclude=[*exclude, *scratch])


# ----------------------------------------------------------------------------------------- retries
def is_transient(exc: BaseException) -> bool:
    """True for I/O hiccups worth retrying (timeouts, connection resets, EIO, EAGAIN, stale NFS handles).

    Bad input (:class:`WinnowError`), a missing/forbidden path, a full or read-only disk, and any
    non-I/O exception are terminal.
    """
    if isinstance(exc, WinnowError):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, _TERMINAL_OS_ERRORS):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in _TERMINAL_ERRNOS
    return False


def retry_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is :func:`is_transient`."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as err:  # noqa: BLE001 - the state holds no readable exception: the raise is it
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)


# --------------------------------------------------------------------------------------- decorator
def heavy_task_options(
    *,
    name: str | None = None,
    exclude: Iterable[str] = DISPLAY_ONLY_ARGS,
    scratch: Iterable[str] = (),
    retries: int = RETRIES,
) -> dict[str, Any]:
    """Keyword arguments for ``prefect.task(...)``: cross-run cache, persisted result, I/O retries.

    Use when you need to combine them with options of your own:
    ``task(**heavy_task_options(name="encode-shard"), timeout_seconds=600)(fn)``.
    """
    opts: dict[str, Any] = {
        "cache_policy": cache_policy(exclude, scratch),
        "persist_result": True,
        "retries": retries,
        "retry_delay_seconds": RETRY_DELAYS[:max(retries, 1)],
        "retry_jitter_factor": RETRY_JITTER,
        "retry_condition_fn": retry_transient,
    }
    if name is not None:
        opts["name"] = name
    return opts


def heavy_task(
    fn: Callable[..., R] | None = None,
    *,
    name: str | None = None,
    exclude: Iterable[str] = DISPLAY_ONLY_ARGS,
    scratch: Iterable[str] = (),
    retries: int = RETRIES,
) -> Any:
    """Decorate a heavy, deterministic task so a rerun (after a crash too) skips it when nothing changed.

    ``@heavy_task`` or ``@heavy_task(name="stage-source", scratch=["staging_dir"])``. The function
    must be deterministic in its arguments (pass ``seed`` explicitly) and return a path or a small
    value (results are pickled). Arguments in ``exclude`` (default: ``progress``) do not affect the
    key. Force a recompute for one call with ``my_task.with_options(refresh_cache=True)(...)``.
    """
    options = heavy_task_options(name=name, exclude=exclude, scratch=scratch, retries=retries)
    if fn is None:
        return lambda f: task(**options)(f)
    return task(**options)(fn)
