"""Run reports: `winnow report` writes one self-contained HTML file; flows publish markdown artifacts.

Stage results are inserted as rows of the real stage tables for a real ingested run, so the report
is checked against the schema the stages write, independent of how long their flows take.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ingested(winnow, tmp_path, db_path) -> str:
    rng = np.random.default_rng(2)
    rows = ["a,b,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{i % 2}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = write_yaml(tmp_path / "run.yaml", "name: rep\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n"
                     "  - {name: digits, kind: sklearn_digits, max_rows: 200}\n")
    code, out, err = winnow("run", cfg, "--db", db_path, "--json")
    assert code == 0, err
    return json.loads(out)["run_id"]


def _add_stage_rows(store, run_id: str) -> None:
    """Rows like the prune, mixture and extrapolate stages write (2-source mixture, one fitted law)."""
    from datetime import datetime

    now = datetime(2026, 1, 1)
    with store.write() as con:
        sid = con.execute("SELECT source_id FROM sources WHERE name = 'digits'").fetchall()[0][0]
        for metric in ("ssp", "random"):
            for f in (1.0, 0.5, 0.2):
                for seed in (0, 1):
                    con.execute("INSERT INTO pruning_curve VALUES (?, ?, ?, 'auto', 'hard', ?, ?, ?, ?)",
                                [run_id, sid, metric, f, seed, int(200 * f), 0.9 - 0.2 * (1 - f) + 0.01 * seed])
            con.execute("INSERT INTO selections VALUES (?, ?, ?, 'digits', ?, 'auto', 'hard', 'none', 0.5, 'f=0.5', "
                        "200, 100, 'keep hard: large budget', ?)", [run_id, f"{run_id}:digits:{metric}:auto:f=0.5", sid, metric, now])
        ids = (np.int64(sid) << 32) | np.arange(5000, dtype=np.int64)
        con.executemany("INSERT INTO scores VALUES (?, ?, ?, 'ssp', 0, ?, ?)",
                        [[run_id, sid, int(e), float(i % 7), i % 3] for i, e in enumerate(ids)])
        for m, p1 in enumerate(np.linspace(0, 1, 5)):
            p = [float(p1), float(1 - p1)]
            con.execute("INSERT INTO ot_distances VALUES (?, 'weighted', ?, ?, 'sinkhorn', 0.05, NULL, ?, NULL, 0.1, 10)",
                        [run_id, m, p, 1.0 - 0.5 * p1])
            for n in (100, 200):
                for rep in range(2):
                    con.execute("INSERT INTO pilot_results VALUES (?, 'pilot', ?, ?, ?, ?, ?, 'accuracy', ?, 0.1)",
                                [run_id, m, p, n, rep, rep, 0.6 + 0.2 * p1 + n / 2000])
        con.execute(
            "INSERT INTO fits (run_id, fit_key, form, formula, x_col, y_col, space, n_points, n_groups, n_starts, loss, "
            "stable, params, param_ci, bootstrap, level, holdout_largest, created_at) VALUES "
            "(?, 'digits', 'm2', 'E + A x^-alpha', 'n', 'accuracy', 'error', 6, 1, 64, 0.01, true, ?, ?, 200, 0.9, 1, ?)",
            [run_id, json.dumps({"E": 0.05, "A": 1.5, "alpha": 0.5}),
             json.dumps({"E": [0.01, 0.09], "A": [1.2, 1.8], "alpha": [0.4, 0.6]}), now])
        for x, y in ((1000, 0.1), (2000, 0.08), (10000, 0.06)):
            con.execute("INSERT INTO predictions VALUES (?, 'digits', 'target', ?, NULL, ?, ?, ?, ?, 0.9)",
                        [run_id, x, y, y - 0.01, y + 0.01, y + 0.002 if x < 5000 else None])


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_of_a_full_run_has_every_section_with_embedded_plots(winnow, ingested, store, tmp_path):
    _add_stage_rows(store, ingested)
    code, out, err = winnow("report", ingested, "--db", store.path, "--out", tmp_path / "reports", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["sections"] == ["Run", "Sources", "Selections", "Pruning curve", "Mixture surface",
                                  "Fitted laws", "Predictions", "Other tables"]
    path = Path(result["path"])
    assert path == (tmp_path / "reports" / f"{ingested}.html").resolve()
    page = path.read_text()
    images = _images(page)
    assert len(images) == 4 and all(img.startswith(PNG_MAGIC) for img in images)  # sources, curve, surface, predictions
    assert not re.search(r'(src|href)="(https?:|/|file:)', page)  # self-contained: nothing fetched from elsewhere
    assert "A=1.5 [1.2, 1.8]" in page and "alpha=0.5 [0.4, 0.6]" in page  # laws with their intervals
    assert "keep hard: large budget" in page
    # a per-example table is summarised per group, not dumped row by row
    scores = page[page.index("<code>scores</code>"):]
    assert "n_examples" in scores and "mean_score" in scores and scores.count("<tr>") < 20


def test_report_of_an_ingest_only_run_skips_missing_sections(winnow, ingested, store, tmp_path):
    code, out, err = winnow("report", ingested, "--db", store.path, "--out", tmp_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["sections"] == ["Run", "Sources"]
    page = Path(result["path"]).read_text()
    assert len(_images(page)) == 1 and "digits" in page and "tab" in page


def test_report_of_an_unknown_run_is_a_one_line_error(winnow, ingested, store, tmp_path):
    code, _, err = winnow("report", "pipeline-nope", "--db", store.path, "--out", tmp_path)
    assert code == 2 and "no run 'pipeline-nope'" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.html"))


def test_pipeline_publishes_its_summary_as_a_prefect_markdown_artifact(ingested):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.report import artifact_key

    key = artifact_key(ingested)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found and found[0].type == "markdown"
    md = found[0].data
    assert f"`{ingested}`" in md and "| tab |" in md and "| digits |" in md and "winnow report" in md


def test_summary_markdown_strips_rich_markup_and_lists_stage_lines():
    from flows.report import artifact_key, summary_markdown

    md = summary_markdown({"run_id": "prune+mixture-abc", "db": "/x.duckdb", "seconds": 1.0,
                           "sources": [{"name": "a", "rows": 3}],
                           "stages": {"prune": {"seconds": 0.5, "lines": ["[bold]kept[/bold] 30% [red]x|y[/red]"]}}})
    assert "- kept 30% x|y" in md and "[bold]" not in md and "## prune (0.5 s)" in md
    assert artifact_key("prune+mixture-ABC") == "winnow-prune-mixture-abc"
