"""Caching, resume and retries for heavy Prefect tasks: one decorator, :func:`heavy_task`.

A flow killed half-way (crash, SIGKILL, a lost machine) is simply started again: every heavy task
whose cache key is unchanged returns its persisted result instead of recomputing, so only unfinished
work runs, and the flow's idempotent writes (delete-then-insert by ``run_id``) end with the same
tables as an uninterrupted run.

Cache key (see Prefect's *Caching* docs)::

    key = hash(inputs - excluded args) + hash(task source) + compute-code version + hash(stat of input files)

* :class:`DigestInputs` — the task's arguments (``progress`` and other display-only arguments
  excluded), arrays by a content digest computed once per array and process (:func:`input_digest`);
* ``TASK_SOURCE`` — editing the task body invalidates its cache;
* :class:`CodeVersion` — winnow's version and a hash of the ``tasks/`` sources, so a change in the
  compute code a task calls invalidates it too;
* :class:`InputFiles` — (path, size, mtime) of every file or folder an argument points at
  (``Path`` arguments and ``Path`` fields of pydantic/dataclass arguments), so a source file edited
  in place is read again rather than served stale.

There is no ``RUN_ID`` in the key (Prefect's default has one, which only caches within one run).

Where results live: inside a pipeline run's stages, next to the run's artifacts,
``<db folder>/<db name>.artifacts/cache`` (:func:`results_in`, set by :mod:`flows.pipeline`; a
:class:`HeavyTask` picks the folder at call time); elsewhere (ingest staging, a flow called on its
own) Prefect's result storage, ``$PREFECT_HOME/storage``. An explicit
``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` wins everywhere. Results are *pickled*. Hence the rule:
**a heavy task returns paths or small values** (a staged Parquet path, a score vector of a few MB,
metrics), never a 1 GB array. A task that returns a path must be ready for the file to have moved
on since (its caller checks ``path.exists()`` and reruns with ``refresh_cache=True``).
Ingest staging stays in ``$PREFECT_HOME/storage`` so that a refused run leaves the database's
folder as it was (its key holds that database's staging folder).

Retries: up to :data:`RETRIES` times with exponential backoff and jitter, only for transient I/O
errors (:func:`is_transient`): a bad input (``WinnowError``), a missing file or a bug fails at once.
The DuckDB lock has its own bounded wait in :mod:`storage.db`; tasks never open the database.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prefect import Task
from prefect.cache_policies import TASK_SOURCE, CachePolicy
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


#: digests of arrays already hashed in this process: id -> (weak reference, shape, strides, digest). A pool
#: of 100 MB handed to 30 training chunks is hashed once, not 30 times.
_ARRAY_DIGESTS: dict[int, tuple[Any, tuple, tuple, str]] = {}


def array_digest(a: np.ndarray) -> str:
    """blake2b of an array's bytes, dtype and shape; memoised per live array object (arrays handed to
    heavy tasks are inputs: changing one in place between two calls is not supported)."""
    key = id(a)
    hit = _ARRAY_DIGESTS.get(key)
    if hit is not None and hit[0]() is a and hit[1] == a.shape and hit[2] == a.strides:
        return hit[3]
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.dtype.hasobject:
        h.update(repr(a.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    digest = h.hexdigest()
    try:
        ref = weakref.ref(a, lambda _r, k=key: _ARRAY_DIGESTS.pop(k, None))
    except TypeError:  # a view of a buffer that takes no weak references: not memoised
        return digest
    _ARRAY_DIGESTS[key] = (ref, a.shape, a.strides, digest)
    return digest


def input_digest(value: Any) -> Any:
    """A small, JSON-able stand-in for an argument: arrays by content digest, pydantic models by their
    JSON, dataclasses field by field, containers item by item (so large inputs hash fast)."""
    if isinstance(value, np.ndarray):
        return ["ndarray", array_digest(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return ["path", str(value)]
    if isinstance(value, BaseModel):
        return [type(value).__qualname__, value.model_dump_json()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__qualname__, {f.name: input_digest(getattr(value, f.name)) for f in dataclasses.fields(value)}]
    if isinstance(value, (list, tuple)):
        return [input_digest(v) for v in value]
    if isinstance(value, dict):
        return [[str(k), input_digest(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    return ["object", hash_objects(value, raise_on_failure=True)]


@dataclasses.dataclass
class DigestInputs(CachePolicy):
    """Cache-key component like Prefect's ``INPUTS``, but arrays are hashed by content once per process
    (Prefect's would pickle a 100 MB pool for every task that receives it)."""

    exclude: list[str] = dataclasses.field(default_factory=list)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        kept = {k: input_digest(v) for k, v in sorted((inputs or {}).items()) if k not in self.exclude}
        return hash_objects(kept, raise_on_failure=True)


_COMPUTE_CODE: list[str] = []


def compute_code_version() -> str:
    """winnow's version plus a hash of every source file of ``tasks/`` (the compute code heavy tasks call),
    computed once per process. Unlike a git commit it changes only when compute code changes."""
    if not _COMPUTE_CODE:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("winnow")
        except PackageNotFoundError:
            v = "0+unknown"
        h = hashlib.blake2b(v.encode(), digest_size=12)
        root = Path(__file__).resolve().parents[1] / "tasks"
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _COMPUTE_CODE.append(f"{v}+{h.hexdigest()}")
    return _COMPUTE_CODE[0]


@dataclasses.dataclass
class CodeVersion(CachePolicy):
    """Cache-key component: :func:`compute_code_version`, so results of older compute code are not reused
    (``TASK_SOURCE`` alone misses changes in the functions a task calls)."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return compute_code_version()


def cache_policy(exclude: Iterable[str] = DISPLAY_ONLY_ARGS, scratch: Iterable[str] = ()) -> CachePolicy:
    """``inputs - exclude + TASK_SOURCE + code version + InputFiles``: what :func:`heavy_task` keys results on.

    Inputs are digested by :func:`input_digest` (arrays by content). ``scratch`` names arguments that
    are output/scratch locations: part of the key (a different folder is a different result) but
    their files are not stamped.
    """
    return DigestInputs(exclude=list(exclude)) + TASK_SOURCE + CodeVersion() + InputFiles(exclude=[*exclude, *scratch])


# ------------------------------------------------------------------------------- where results live
#: folder for heavy-task results of the current pipeline run (``<db>.artifacts/cache``), see :func:`results_in`.
_RESULTS_DIR: ContextVar[Path | None] = ContextVar("winnow_results_dir", default=None)


@contextmanager
def results_in(folder: Path) -> Iterator[None]:
    """Within the block, heavy tasks persist their results under ``folder`` (the pipeline uses the
    database's artifacts folder), unless ``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` is set explicitly."""
    token = _RESULTS_DIR.set(None if os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH") else Path(folder))
    try:
        yield
    finally:
        _RESULTS_DIR.reset(token)


class HeavyTask(Task):
    """A Prefect task whose persisted results go where :func:`results_in` says at call time."""

    def _placed(self) -> Task:
        folder = _RESULTS_DIR.get()
        if folder is None or self.result_storage is not None:
            return self
        cache = self.__dict__.setdefault("_winnow_placed", {})
        if folder not in cache:
            cache[folder] = self.with_options(result_storage=Path(folder))  # a Path: a local folder, no block to save
        return cache[folder]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        placed = self._placed()
        return Task.__call__(placed, *args, **kwargs) if placed is not self else super().__call__(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        placed = self._placed()
        return Task.submit(placed, *args, **kwargs) if placed is not self else super().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        placed = self._placed()
        return Task.map(placed, *args, **kwargs) if placed is not self else super().map(*args, **kwargs)


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
        return lambda f: HeavyTask(fn=f, **options)
    return HeavyTask(fn=fn, **options)
