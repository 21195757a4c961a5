"""QA findings on ingest and run, as the user sees them: text that is not UTF-8, a pinned version in the run
summary, ``--db`` naming a CSV file, commands printed for copy-paste, and a closed stdout pipe."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import db_fingerprint, write_yaml

WINNOW = Path(sys.executable).parent / "winnow"


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINNOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _cli(tmp: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(WINNOW), *map(str, args)], env=_env(tmp), cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)


def _stage(tmp: Path, data: bytes, suffix: str = "csv", **spec):
    from configs.base import SourceConfig
    from tasks.ingest import stage_source

    (tmp / f"s.{suffix}").write_bytes(data)
    return stage_source(SourceConfig(name="s", kind=suffix, path=tmp / f"s.{suffix}", **spec), tmp / "staging")


ROWS = b"1,2,a,train\n2,3,b,train\n3,1,a,train\n4,2,b,train\n5,1,a,train\n6,2,b,train\n"


# ----------------------------------------------------------------------------- 1. text that is not UTF-8
@pytest.mark.parametrize("data, spec, where", [
    (b"f\xe9,f2,y,sp\n" + ROWS, {"label": "y"}, "byte 0xe9 in the header, column 1"),
    (b"f1,f2,y,sp\n" + ROWS.replace(b"5,1,a,train", b"5,1,a,t\xe9st"), {"label": "y", "split": "sp"}, "column 'sp', row 5"),
    (b"f1,f2,y,sp\n" + ROWS.replace(b"2,3,b", b"2,3,\xff"), {"label": "y"}, "byte 0xff in column 'y', row 2"),
    (b"t,y\nhello,a\nw\xe9rld,b\nfoo,a\n", {"label": "y", "text": "t"}, "column 't', row 2"),
    (b"f1,f2,y\n1,2,a\n2,t\xe9,b\n", {"label": "y", "features": ["f1", "f2"]}, "column 'f2', row 2"),
])
def test_a_csv_cell_or_header_that_is_not_utf8_is_named(tmp_path, data, spec, where):
    from tasks.errors import WinnowError

    with pytest.raises(WinnowError, match="not UTF-8 text") as err:
        _stage(tmp_path, data, **spec)
    assert where in str(err.value) and "s.csv" in str(err.value) and "save the file as UTF-8" in str(err.value)
    assert list((tmp_path / "staging").glob("*")) == []


def test_a_bad_byte_after_the_first_block_names_its_row(tmp_path):
    """pyarrow types a column from its first block: a later bad byte is a conversion error, named by row too."""
    from tasks.errors import WinnowError

    big = b"f1,y,sp\n" + b"".join(b"%d,a,train\n" % i for i in range(600_000)) + b"1,b,t\xe9st\n"
    with pytest.raises(WinnowError, match=r"not UTF-8 text \(byte 0xe9 in column 'sp', row 600001\)"):
        _stage(tmp_path, big, label="y", split="sp")


@pytest.mark.parametrize("data, where", [
    (b'{"f": 1, "y": "a"}\n{"f": 2, "y": "t\xe9st"}\n', "column 'y', row 2"),
    (b'{"f": 1, "y\xe9": "a", "y": "a"}\n{"f": 2, "y\xe9": "b", "y": "b"}\n', "in the header, column 2"),
])
def test_a_json_lines_string_that_is_not_utf8_is_named(tmp_path, data, where):
    from tasks.errors import WinnowError

    with pytest.raises(WinnowError, match="not UTF-8 text") as err:
        _stage(tmp_path, data, suffix="jsonl", label="y")
    assert where in str(err.value)


def test_an_unused_column_that_is_not_utf8_does_not_stop_ingest(tmp_path):
    staged = _stage(tmp_path, b"f1,f2,y,note\n1,2,a,caf\xe9\n2,3,b,ok\n3,1,a,ok\n", label="y")
    assert staged.n_rows == 3 and staged.n_features == 2


def test_ingest_of_a_latin1_csv_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"f\xe9,f2,y\n1,2,a\n2,3,b\n3,1,a\n4,2,b\n5,1,a\n6,2,b\n")
    write_yaml(tmp_path / "s.yaml", "name: l1\nsources:\n  - {name: s, kind: csv, path: s.csv, label: y}\n")
    p = _cli(tmp_path, "ingest", "s.yaml", "--db", tmp_path / "w.duckdb")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "source 's'" in p.stderr and "s.csv" in p.stderr and "not UTF-8 text (byte 0xe9 in the header" in p.stderr
    assert not (tmp_path / "w.duckdb").exists() and not (tmp_path / "w.artifacts").exists()


# ------------------------------------------------------------------- 1b. "its row in winnow runs" only when true
def _csv(path: Path, n: int) -> None:
    path.write_text("a,b,y\n" + "".join(f"{i * 0.5},{(i * 7) % 11},{i % 2}\n" for i in range(n)))


def test_a_crash_before_the_run_row_does_not_point_at_winnow_runs(tmp_path, winnow, monkeypatch):
    import flows.ingest

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(flows.ingest, "stage_source", broken)
    _csv(tmp_path / "t.csv", 20)
    cfg = write_yaml(tmp_path / "c.yaml", "name: c\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n")
    db = tmp_path / "w.duckdb"
    code, _, err = winnow("ingest", cfg, "--db", db)
    assert code == 1 and err.count("\n") == 1
    assert "disk on fire" in err and "before it was recorded" in err and "winnow runs" not in err
    assert not db.exists() and not (tmp_path / "w.artifacts").exists()


def test_a_failure_after_the_run_row_names_the_run_that_keeps_the_error(tmp_path, winnow, monkeypatch):
    import flows.pipeline

    _csv(tmp_path / "t.csv", 20)
    cfg = write_yaml(tmp_path / "c.yaml", "name: c\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n")
    db = tmp_path / "w.duckdb"

    def broken(*args, **kwargs):
        raise RuntimeError("summary on fire")

    monkeypatch.setattr(flows.pipeline, "_source_lines", broken)
    code, _, err = winnow("ingest", cfg, "--db", db)
    assert code == 1 and err.count("\n") == 1 and "summary on fire" in err
    code, out, _ = winnow("runs", "--db", db, "--json")
    (row,) = json.loads(out)
    assert row["status"] == "failed" and f"run {row['run_id']} in `winnow runs` keeps the error" in err


# ------------------------------------------------------------------------ 2. the version a run reads
def test_the_summary_shows_the_pinned_version_not_the_files(tmp_path, winnow):
    db = tmp_path / "w.duckdb"
    _csv(tmp_path / "t.csv", 40)
    ingest = write_yaml(tmp_path / "i.yaml", "name: i\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n")
    assert winnow("ingest", ingest, "--db", db)[0] == 0
    _csv(tmp_path / "t.csv", 41)  # one more row: version 2
    assert winnow("ingest", ingest, "--db", db)[0] == 0
    pin = write_yaml(tmp_path / "p.yaml", "name: p\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y, version: 1}\n")
    code, out, err = winnow("ingest", pin, "--db", db, "--json")
    assert code == 0, err
    (line,) = json.loads(out)["sources"]
    assert (line["version"], line["rows"], line["file_version"], line["new"]) == (1, 40, 2, False)
    assert line["train"] + line["test"] == 40 and "reads_source_id" not in line
    code, out, _ = winnow("sources", "--db", db, "--json")
    assert {(s["version"], s["source_id"]) for s in json.loads(out)} >= {(1, line["source_id"])}


# ------------------------------------------------------------------------------ 3. --db naming a CSV file
@pytest.mark.parametrize("name, body", [("one.csv", b"a,b\n1,2\n"), ("one.parquet", b"PAR1 not really"),
                                        ("one.txt", b"hello")])
def test_db_naming_a_data_file_is_refused_with_the_same_clear_line(tmp_path, name, body):
    (tmp_path / name).write_bytes(body)
    for args in (["runs"], ["sources", "--json"]):
        p = _cli(tmp_path, *args, "--db", tmp_path / name, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "not a valid DuckDB database file" in p.stderr and "Catalog Error" not in p.stderr
    assert (tmp_path / name).read_bytes() == body


def test_store_check_usable_refuses_a_csv_before_duckdb_opens_it(tmp_path):
    from storage.db import Store
    from tasks.errors import WinnowError

    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    with pytest.raises(WinnowError, match="not a valid DuckDB database file"):
        Store(tmp_path / "one.csv").check_usable()
    with pytest.raises(WinnowError, match="not a valid DuckDB database file"):
        with Store(tmp_path / "one.csv").write():
            pass
    assert (tmp_path / "one.csv").read_text() == "a,b\n1,2\n"


# -------------------------------------------------------------------------- 4. commands that paste back
def test_printed_commands_quote_a_path_with_a_space_or_non_ascii(capsys):
    from cli.run import print_summary

    db = "/tmp/my data/é [x]/w.duckdb"
    print_summary({"run_id": "pipeline-abc", "db": db, "sources": [], "stages": {}, "seconds": 1.0})
    out = capsys.readouterr().out
    lines = [ln.strip() for ln in out.splitlines() if "duckdb -readonly" in ln or "winnow show" in ln]
    assert len(lines) == 2
    duck = shlex.split(lines[0].removeprefix("try:").strip())
    show = shlex.split(lines[1])
    assert duck[:3] == ["duckdb", "-readonly", db] and show == ["winnow", "show", "pipeline-abc", "--db", db]


def test_the_report_markdown_quotes_the_database_path():
    from flows.report import summary_markdown

    md = summary_markdown({"run_id": "pipeline-abc", "db": "/tmp/a b/w.duckdb"})
    cmd = next(ln for ln in md.splitlines() if "winnow report" in ln).split("`")[1]
    assert shlex.split(cmd) == ["winnow", "report", "pipeline-abc", "--db", "/tmp/a b/w.duckdb"]


# -------------------------------------------------------------------------------- 5. a closed stdout pipe
@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, fmt):
    from storage.db import Store

    empty_db = tmp_path / "w.duckdb"
    with Store(empty_db).write():  # a winnow file with no rows (a blank DuckDB file is no winnow database)
        pass
    cmd = " ".join(shlex.quote(str(a)) for a in [WINNOW, "query", "select range from range(100000)", "--limit", "100000",
                                                  "--db", empty_db, *fmt])
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1 >/dev/null; echo $? >&2"], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.stderr.strip() == "141", p.stderr  # 128 + SIGPIPE, as for cat or seq; nothing else on stderr


# ----------------------------------------------------------- 6. a late refusal on a path the run created
def test_a_late_refusal_on_a_new_path_leaves_no_database_file(tmp_path):
    """Bad input found only after the run started (PCA asked for more dimensions than the source has) is
    refused with exit 2 and, on a path the run created, leaves no file behind; on an existing database the
    file stays as it was."""
    (tmp_path / "t.csv").write_text("a,b,y\n" + "".join(f"{i * 0.37 % 1:.3f},{i * 0.61 % 1:.3f},{i % 2}\n" for i in range(8)))
    bad = write_yaml(tmp_path / "bad.yaml", "sources:\n  - {name: t, kind: csv, path: t.csv, label: y}\n"
                                            "encoder: {kind: pca, dim: 32}\nprune: {sources: [t], metrics: [ssp], fractions: [0.5]}\n")
    db = tmp_path / "new" / "w.duckdb"
    p = _cli(tmp_path, "run", bad, "--db", db)
    assert p.returncode == 2 and "lower encoder.dim" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not db.exists() and not Path(f"{db}.wal").exists() and not (tmp_path / "new" / "w.artifacts").exists()

    good = write_yaml(tmp_path / "good.yaml", "sources:\n  - {name: t, kind: csv, path: t.csv, label: y}\n")
    assert _cli(tmp_path, "ingest", good, "--db", db).returncode == 0
    before = db_fingerprint(db)
    p = _cli(tmp_path, "run", bad, "--db", db)
    assert p.returncode == 2 and db_fingerprint(db) == before


# ------------------------------------------------------------------- 7. control characters in stored text
def test_stored_text_cannot_drive_the_terminal(tmp_path):
    """A run name (or any stored string) with ESC sequences or a bidi override is printed with those
    characters made visible, in `show` and in `query` tables (they reached the terminal raw)."""
    (tmp_path / "t.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    name = "x\x1b[31mred\x07\u202eevil"
    cfg = write_yaml(tmp_path / "c.yaml", f'name: "{name.encode("unicode_escape").decode()}"\n'
                                          "sources:\n  - {name: t, kind: csv, path: t.csv, label: y}\n")
    db = tmp_path / "w.duckdb"
    assert _cli(tmp_path, "ingest", cfg, "--db", db).returncode == 0
    run_id = json.loads(_cli(tmp_path, "runs", "--db", db, "--json").stdout)[0]["run_id"]
    for p in (_cli(tmp_path, "show", run_id, "--db", db), _cli(tmp_path, "query", "select name from runs", "--db", db)):
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "\u202e" not in p.stdout
        assert "\\x1b[31mred\\x07\\u202eevil" in p.stdout
