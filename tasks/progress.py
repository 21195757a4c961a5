"""Progress of long work: a rich bar on a terminal, periodic log lines off one.

One API for every stage (``with progress_bar(enabled) as bar: t = bar.add_task(desc, total=n);
bar.update(t, advance=k)``, the subset of :class:`rich.progress.Progress` the code uses). When
stdout is not a terminal (a scheduled run, ``winnow serve``, output piped to a file) a bar would
print nothing useful, so each task instead writes a line to stderr at most every
``WINNOW_PROGRESS_INTERVAL`` seconds (default 30) and, if it wrote any, when it finishes:
``[progress] OT sweep: 120/660 (18%), 3.1/s, 38 s elapsed, ~174 s left``. Work shorter than the
interval writes nothing, so a quick command (or a refused one) keeps stderr to its one line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _interval() -> float:
    try:
        return max(float(os.environ.get("WINNOW_PROGRESS_INTERVAL", "30")), 0.0)
    except ValueError:
        return 30.0


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    finished: bool = False
    lines: int = 0


class LogProgress:
    """The off-terminal stand-in for a rich ``Progress``: same calls, periodic lines on stderr."""

    def __init__(self, interval: float | None = None, stream: Any = None) -> None:
        self.interval = _interval() if interval is None else interval
        self.stream = stream
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            for t in self.tasks.values():
                if not t.finished and t.lines:
                    self._line(t)

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = _Task(description, total)
        return tid

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None, **_: Any) -> None:
        t = self.tasks[task_id]
        if total is not None:
            t.total = total
        if description is not None:
            t.description = description
        if completed is not None:
            t.completed = completed
        if advance is not None:
            t.completed += advance
        now = time.monotonic()
        done = t.total is not None and t.completed >= t.total
        due = now - t.last_line >= self.interval
        if due or (done and not t.finished and t.lines):
            t.finished = t.finished or done
            self._line(t)

    def _line(self, t: _Task) -> None:
        now = time.monotonic()
        t.last_line = now
        t.lines += 1
        elapsed = max(now - t.started, 1e-9)
        rate = t.completed / elapsed
        if t.total:
            left = (t.total - t.completed) / rate if rate > 0 else float("nan")
            head = f"{t.completed:,.0f}/{t.total:,.0f} ({100 * t.completed / t.total:.0f}%)"
            tail = "" if t.completed >= t.total or left != left else f", ~{left:,.0f} s left"
        else:
            head, tail = f"{t.completed:,.0f}", ""
        stream = self.stream or sys.stderr
        stream.write(f"[progress] {t.description}: {head}, {rate:,.1f}/s, {elapsed:,.0f} s elapsed{tail}\n")
        stream.flush()


class _Quiet(LogProgress):
    def _line(self, t: _Task) -> None:
        t.last_line = time.monotonic()
        t.lines += 1


def on_terminal() -> bool:
    return sys.stdout.isatty()


def progress_bar(enabled: bool = True, transient: bool = True) -> Any:
    """A progress display: rich bar on a terminal, :class:`LogProgress` lines off one, nothing if disabled."""
    if not enabled:
        return _Quiet()
    if not on_terminal():
        return LogProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=transient)


def track(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` while showing progress (see :func:`progress_bar`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(enabled) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.update(task, advance=1)
