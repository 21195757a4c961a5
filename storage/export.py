"""``winnow export``: the kept example ids of a selection (or a plan) as a Parquet or CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage.db import Store, check_target, safe_write
from storage.plan import is_plan, load_plan_members
from storage.prune import load_selection
from tasks.errors import WinnowError


def export_selection(store: Store, selection_id: str, to: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the kept example ids (+ source id, row index) of a selection to ``to`` (.parquet or .csv).

    Refuses to overwrite an existing file unless ``force``; the file goes through
    :func:`storage.db.safe_write` (fresh temporary name, fsync, rename), so a failure never leaves half a
    file and a planted symlink is never followed.
    """
    to = Path(to)
    suffix = to.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise WinnowError(f"--to {to}: the file must end in .parquet or .csv")
    if store.owns(to):
        raise WinnowError(f"--to {to}: that is inside the database's own files ({store.artifacts_dir}); "
                          "write the export somewhere else")
    check_target(to, force=force, what="export", option="--to")
    if is_plan(store, selection_id):  # a plan's example ids export like a selection
        plan, members = load_plan_members(store, selection_id)
        head = {"selection_id": selection_id, "metric": "plan", "policy": "plan", "resolved_policy": "plan",
                "fraction": None, "reason": f"plan for N={plan['target_n']}"}
    else:
        head, members = load_selection(store, selection_id)
    if suffix == ".parquet":
        safe_write(to, lambda fh: pq.write_table(members, fh), force=force, what="export", option="--to")
    else:
        safe_write(to, lambda fh: pacsv.write_csv(members, fh), force=force, what="export", option="--to")
    return {"selection_id": head["selection_id"], "path": str(to), "rows": members.num_rows,
            "metric": head["metric"], "policy": head["policy"], "resolved_policy": head["resolved_policy"],
            "fraction": head["fraction"], "reason": head["reason"]}
