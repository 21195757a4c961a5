"""DuckDB storage throughput against a plain pyarrow Parquet write/read of the same data.

Ours: the prune stage's storage path, :func:`storage.prune.save_prune_results` (one transaction:
delete the run's rows, insert 1M score rows and one selection with its members from registered
Arrow tables) and :func:`storage.prune.load_selection` (header + members back as Arrow).
Reference: ``pyarrow.parquet.write_table`` of the same two tables (default settings) and
``read_table`` of the members file. Each repeat writes into a fresh database whose schema already
exists (schema creation is a one-off, reported separately).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Context, Row, Section, time_call, timings

SIZES = {"full": dict(n=1_000_000, keep=0.3), "quick": dict(n=100_000, keep=0.3)}
RUN_ID = "bench-storage"


def make_tables(n: int, keep: float, seed: int = 0) -> tuple[pa.Table, pa.Table, int]:
    """1M-row ``scores`` table (prune schema, without run_id), the members of a keep-``keep``
    selection, and the number kept."""
    rng = np.random.default_rng(seed)
    source_id = np.ones(n, dtype=np.int32)
    row_index = np.arange(n, dtype=np.int64)
    example_id = (source_id.astype(np.int64) << 32) | row_index
    score = rng.random(n)
    scores = pa.table({
        "source_id": source_id, "example_id": example_id, "metric": pa.array(["ssp"] * n, pa.string()),
        "seed": np.zeros(n, dtype=np.int32), "score": score, "group_key": rng.integers(0, 1000, n, dtype=np.int32),
    })
    kept = np.sort(np.argsort(-score, kind="stable")[: int(keep * n)])
    sel_id = f"{RUN_ID}:bench:ssp:hard:f={keep}"
    members = pa.table({
        "selection_id": pa.array([sel_id] * kept.size, pa.string()), "example_id": example_id[kept],
        "source_id": source_id[kept], "row_index": row_index[kept],
    })
    return scores, members, int(kept.size)


def run(ctx: Context) -> Section:
    from storage.db import Store
    from storage.prune import SelectionHeader, load_selection, save_prune_results

    s = ctx.sizes("storage", SIZES)
    n, keep = s["n"], s["keep"]
    scores, members, n_kept = make_tables(n, keep)
    sel_id = members.column("selection_id")[0].as_py()
    header = SelectionHeader(selection_id=sel_id, source_id=1, source_name="bench", metric="ssp", policy="hard",
                             resolved_policy="hard", balance="global", fraction=n_kept / n, budget_spec=f"f={keep}",
                             n_pool=n, n_kept=n_kept, reason="benchmark")
    sec = Section("storage")
    with tempfile.TemporaryDirectory(prefix="winnow-bench-storage-") as tmp:
        tmpdir = Path(tmp)
        stores: list[Store] = []
        schema_s = []

        def fresh_store() -> Store:
            st = Store(tmpdir / f"db{len(stores)}" / "w.duckdb")
            st.path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            with st.write():
                pass  # creates the schema
            schema_s.append(time.perf_counter() - t0)
            stores.append(st)
            return st

        write_runs = []
        for _ in range(ctx.repeats):
            st = fresh_store()
            t0 = time.perf_counter()
            save_prune_results(st, RUN_ID, scores=scores, selections=[header], members=members)
            write_runs.append(time.perf_counter() - t0)
        t_write = timings(write_runs)
        # a rerun of the same run_id (delete-then-insert) — what a user's second run costs
        t_rewrite, _ = time_call(lambda: save_prune_results(stores[-1], RUN_ID, scores=scores, selections=[header],
                                                             members=members), repeats=ctx.repeats)

        pq_dir = tmpdir / "parquet"
        pq_dir.mkdir()

        def pq_write() -> None:
            pq.write_table(scores, pq_dir / "scores.parquet")
            pq.write_table(members, pq_dir / "members.parquet")

        t_pq, _ = time_call(pq_write, repeats=ctx.repeats)

        t_read, (_, got) = time_call(lambda: load_selection(stores[-1], sel_id), repeats=ctx.repeats, warmup=1)
        t_pq_read, ref = time_call(lambda: pq.read_table(pq_dir / "members.parquet"), repeats=ctx.repeats, warmup=1)
        if got.num_rows != n_kept or ref.num_rows != n_kept:
            raise RuntimeError(f"read back {got.num_rows} / {ref.num_rows} members, expected {n_kept}")
        db_bytes = stores[-1].path.stat().st_size
        pq_bytes = sum(f.stat().st_size for f in pq_dir.iterdir())

    label = f"{n // 1000}k scores + {n_kept // 1000}k members"
    sec.rows.append(Row("storage", f"DuckDB write ({label}) vs pyarrow Parquet", t_write.median, t_pq.median,
                        t_write.median / t_pq.median, "<= 2", t_write.median / t_pq.median <= 2,
                        note=f"one transaction into a fresh DB; rerun (delete+insert) {t_rewrite.median:.3f} s = "
                             f"{t_rewrite.median / t_pq.median:.2f}x; schema creation {np.median(schema_s):.3f} s (not counted); "
                             f"DB {db_bytes / 2**20:.0f} MiB vs Parquet {pq_bytes / 2**20:.0f} MiB"))
    sec.rows.append(Row("storage", f"read selection back ({n_kept // 1000}k members) vs pyarrow Parquet read",
                        t_read.median, t_pq_read.median, t_read.median / t_pq_read.median, "<= 2",
                        t_read.median / t_pq_read.median <= 2, note="storage.prune.load_selection (sorted by example_id)"))
    sec.details = {"n": n, "n_kept": n_kept, "write": t_write.__dict__, "rewrite": t_rewrite.__dict__,
                   "parquet_write": t_pq.__dict__, "read": t_read.__dict__, "parquet_read": t_pq_read.__dict__,
                   "schema_create_s": schema_s, "db_bytes": db_bytes, "parquet_bytes": pq_bytes}
    return sec
