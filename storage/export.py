"""``winnow export``: the kept example ids of a selection (or a plan) as a Parquet or CSV file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage.db import Store
from storage.plan import is_plan, load_plan_members
from storage.prune import load_selection
from tasks.errors import WinnowError


def export_selection(store: Store, selection_id: str, to: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the kept example ids (+ source id, row index) of a selection to ``to`` (.parquet or .csv).

    Refuses to overwrite an existing file unless ``force``; the file is written under a temporary
    name and renamed, so a failure never leaves half a file.
    """
    to = Path(to)
    suffix = to.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise WinnowError(f"--to {to}: the file must end in .parquet or .csv")
    if to.exists() and not force:
        raise WinnowError(f"{to} already exists; pass --force to overwrite it")
    if to.is_dir():
        raise WinnowError(f"{to} is a directory")
    if is_plan(store, selection_id):  # a plan's example ids export like a selection
        plan, members = load_plan_members(store, selection_id)
        head = {"selection_id": selection_id, "metric": "plan", "policy": "plan", "resolved_policy": "plan",
                "fraction": None, "reason": f"plan for N={plan['target_n']}"}
    else:
        head, members = load_selection(store, selection_id)
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.tmp")
    try:
        if suffix == ".parquet":
            pq.write_table(members, tmp)
        else:
            pacsv.write_csv(members, tmp)
        os.replace(tmp, to)
    finally:
        tmp.unlink(missing_ok=True)
    return {"selection_id": head["selection_id"], "path": str(to), "rows": members.num_rows,
            "metric": head["metric"], "policy": head["policy"], "resolved_policy": head["resolved_policy"],
            "fraction": head["fraction"], "reason": head["reason"]}
