"""storage.prune.load_selection: members come back sorted by example_id however they were stored."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from storage.prune import SelectionHeader, load_selection, save_prune_results
from tasks.errors import WinnowError


def _tables(n: int, keep: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    eid = (1 << 32) + np.arange(n, dtype=np.int64)
    scores = pa.table({"source_id": np.ones(n, np.int32), "example_id": eid, "metric": pa.array(["ssp"] * n, pa.string()),
                       "seed": np.zeros(n, np.int32), "score": rng.random(n), "group_key": np.zeros(n, np.int32)})
    kept = np.sort(rng.choice(n, keep, replace=False))
    members = pa.table({"selection_id": ["sel-1"] * keep, "example_id": eid[kept], "source_id": np.ones(keep, np.int32),
                        "row_index": kept.astype(np.int64)})
    head = SelectionHeader(selection_id="sel-1", source_id=1, source_name="s", metric="ssp", policy="hard",
                           resolved_policy="hard", balance="global", fraction=keep / n, budget_spec=f"n={keep}",
                           n_pool=n, n_kept=keep, reason="test")
    return scores, members, head


@pytest.mark.parametrize("shuffled", [False, True])
def test_members_are_read_back_sorted_by_example_id(store, shuffled):
    scores, members, head = _tables(2000, 600)
    stored = members.take(np.random.default_rng(1).permutation(members.num_rows)) if shuffled else members
    save_prune_results(store, "prune-test", scores=scores, selections=[head], members=stored)
    got_head, got = load_selection(store, "sel-1")
    assert got_head["n_kept"] == 600
    assert got.column_names == ["example_id", "source_id", "row_index"]
    assert got.column("example_id").to_pylist() == members.column("example_id").to_pylist()
    assert got.column("row_index").to_pylist() == members.column("row_index").to_pylist()


def test_unknown_selection_names_the_id(store):
    scores, members, head = _tables(100, 10)
    save_prune_results(store, "prune-test", scores=scores, selections=[head], members=members)
    with pytest.raises(WinnowError, match="no selection 'nope'"):
        load_selection(store, "nope")
