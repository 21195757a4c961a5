"""Progress off a terminal: periodic lines with done/total and rate; nothing when disabled."""

from __future__ import annotations

import io

from tasks.progress import LogProgress, progress_bar, track


def test_log_progress_writes_done_total_and_rate_at_the_interval_and_at_the_end():
    out = io.StringIO()
    with LogProgress(interval=0.0, stream=out) as bar:
        t = bar.add_task("OT sweep", total=4)
        for _ in range(4):
            bar.update(t, advance=1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[progress] OT sweep: 1/4 (25%)") and "/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("[progress] OT sweep: 4/4 (100%)") and "left" not in lines[-1]
    assert len(lines) == 4


def test_work_shorter_than_the_interval_writes_nothing():
    out = io.StringIO()
    with LogProgress(interval=3600.0, stream=out) as bar:
        t = bar.add_task("pilots", total=1000)
        for _ in range(1000):
            bar.advance(t)
        u = bar.add_task("rows", total=None)
        bar.update(u, completed=50)
    assert out.getvalue() == ""


def test_off_a_terminal_progress_bar_is_the_log_form_and_disabled_prints_nothing(capsys):
    assert isinstance(progress_bar(True), LogProgress)  # pytest's stdout is not a TTY
    assert list(track(range(3), "quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
