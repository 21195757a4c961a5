"""``winnow plan CONFIG`` (the joint planner stage) and ``winnow plans [RUN_ID]`` (read-only)."""

from __future__ import annotations

from typing import Any, Optional

import typer

from cli.app import DbOption, JsonOption, app, open_store, print_json, print_rows
from cli.run import stage_command

stage_command("plan", "plan", "YAML run config with 'mixture' (pools, target) and 'plan' sections",
              "Choose per-source pruning and the mixture for plan.target_n examples, with a predicted interval.")


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


@app.command(name="plans")
def plans_cmd(
    run_id: Optional[str] = typer.Argument(None, help="one plan: its sources and alternatives"),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """List stored plans (newest first), or show one plan's sources and alternatives."""
    from storage.plan import list_plans, load_plan
    from tasks.plan.describe import describe_mixture

    store = open_store(db)
    if run_id is None:
        rows = list_plans(store)
        if not as_json:
            rows = [{"plan": r["run_id"], "N": r["target_n"], "predicted": f"{_pct(r['predicted'])} [{_pct(r['lo'])}, {_pct(r['hi'])}]",
                     "measured": _pct(r["measured"]), "candidates": r["n_candidates"]} for r in rows]
        print_rows(rows, title="plans", as_json=as_json)
        return
    info = load_plan(store, run_id)
    if as_json:
        print_json(info)
        return
    print_rows([{"pool": s["pool"], "policy": s["policy"], "keep": s["keep_fraction"], "available": s["n_available"],
                 "taken": s["n_taken"], "p": round(s["p"], 3)} for s in info["sources"]],
               title=f"plan {run_id}: N={info['plan']['target_n']}")
    print_rows([{"role": a["role"], "name": a["name"], "mixture": describe_mixture(a["options"], a["p"], info["plan"]["pools"]),
                 "predicted": f"{_pct(a['predicted'])} [{_pct(a['lo'])}, {_pct(a['hi'])}]", "measured": _pct(a["measured"]),
                 "inside": a["contained"]} for a in info["alternatives"]], title="alternatives (accuracy at N, points)")
