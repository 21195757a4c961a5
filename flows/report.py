"""Run reports: a self-contained HTML page per run (``winnow report``) and Prefect markdown artifacts.

The HTML report reads everything through :func:`storage.report.load_report_data` (whatever tables hold
rows for the run; missing or empty ones are skipped) and renders it with :func:`tasks.report.render_report`
(PNG plots embedded as base64, so the single file can be mailed or archived).

:func:`publish_summary` turns a flow's summary dict into a markdown artifact, so the Prefect UI
(Artifacts tab of the flow run) shows the same numbers as the CLI.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from tasks.errors import WinnowError


# ------------------------------------------------------------------------------ markdown artifacts
def _plain(line: str) -> str:
    try:
        return Text.from_markup(line).plain
    except Exception:  # noqa: BLE001 - not valid rich markup: show it as written
        return line


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out) + "\n"


def summary_markdown(summary: dict[str, Any], title: str | None = None) -> str:
    """Markdown of a pipeline (or stage) summary: sources table, then each stage's lines."""
    run_id = summary.get("run_id", "")
    parts = [f"# {title or 'winnow run'} `{run_id}`\n"]
    if "db" in summary:
        parts.append(f"Database: `{summary['db']}` — total {summary.get('seconds', 0):.1f} s\n")
    if summary.get("sources"):
        parts.append("## Sources\n" + _md_table(summary["sources"]))
    for stage, result in summary.get("stages", {}).items():
        parts.append(f"## {stage} ({result.get('seconds', 0):.1f} s)\n")
        parts.extend(f"- {_plain(line)}" for line in result.get("lines", []))
        parts.append("")
    if summary.get("lines"):
        parts.extend(f"- {_plain(line)}" for line in summary["lines"])
    if run_id:
        db = shlex.quote(str(summary["db"])) if "db" in summary else "DB"
        parts.append(f"\nFull report: `winnow report {shlex.quote(run_id)} --db {db}`\n")
    return "\n".join(parts)


def artifact_key(run_id: str, prefix: str = "winnow") -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a run id."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"{prefix}-{run_id}".lower())).strip("-")


def publish_summary(summary: dict[str, Any], title: str | None = None, prefix: str = "winnow") -> str | None:
    """Publish ``summary`` as a markdown artifact of the current flow run; returns the artifact key.

    Stage flows can call it with their own summary dict (``prefix=<stage>``). A failure to publish
    (the API went away) is logged, never fatal: the run's results are already in DuckDB.
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.logging import get_logger

    key = artifact_key(summary.get("run_id", "run"), prefix)
    try:
        create_markdown_artifact(markdown=summary_markdown(summary, title), key=key,
                                 description=f"winnow summary of {summary.get('run_id', '')}")
    except Exception as err:  # noqa: BLE001 - reporting must not fail a finished run
        get_logger("winnow.report").warning("could not publish the summary artifact %s: %s", key, err)
        return None
    return key


# ------------------------------------------------------------------------------------ HTML report
@dataclass(frozen=True)
class ReportResult:
    """Where the report went and which sections it has (in page order)."""

    path: Path
    sections: list[str]


def write_report(store: Any, run_id: str, out_dir: Path, progress: bool = False, force: bool = False) -> ReportResult:
    """Read the run from ``store`` and write ``<out_dir>/<run_id>.html``; return where.

    An existing report is kept unless ``force``; the page goes through :func:`storage.db.safe_write`
    (fresh temporary name, fsync, rename: a planted symlink is never followed)."""
    from storage.db import check_target, safe_write
    from storage.report import load_report_data
    from tasks.report import render_report

    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\x00" in run_id:
        raise WinnowError(f"run id {run_id!r} is not a winnow run id (see `winnow runs`)")
    path = Path(out_dir) / f"{run_id}.html"
    check_target(path, force=force, what="report", option="--out")
    data = load_report_data(store, run_id)
    page, sections = render_report(data, progress)
    safe_write(path, lambda fh: fh.write(page.encode("utf-8")), force=force, what="report", option="--out")
    return ReportResult(path=path.resolve(), sections=sections)
