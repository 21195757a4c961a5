"""``winnow prune CONFIG``, ``winnow selections``, ``winnow export``, ``winnow experiment perceptron``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, console, open_store, plot_path, print_json, print_rows
from cli.run import run_or_fail, stage_command

stage_command("prune", "prune", "YAML run config with 'encoder' and 'prune' sections",
              "Ingest the config's sources, embed them, score and select (and evaluate) — the prune stage.")


@app.command(name="selections")
def selections_cmd(run_id: Optional[str] = typer.Argument(None, help="only this run"),
                   db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """List stored selections (id, metric, policy, fraction, kept, reason)."""
    from storage.prune import list_selections

    print_rows(list_selections(open_store(db), run_id), title="selections", as_json=as_json)


@app.command(name="export")
def export_cmd(selection: str = typer.Argument(..., help="selection id (see `winnow selections`), latest:<source>:<metric>:<policy>:<f=0.3>, a plan's run id, or a prune-sharded run or selection id"),
               to: Path = typer.Option(..., "--to", help="output file, .parquet or .csv"),
               force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
               db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Write the kept example ids (and source row indices) of a selection to Parquet or CSV.

    A prune-sharded run (or its selection id) exports its kept row_index values; a run that holds no
    selection (experiment perceptron, embed, fit) is refused with one line."""
    from storage.export import export_selection
    from storage.plan import is_plan
    from storage.runs import run_flow
    from storage.shards import export_sharded_selection, sharded_selection_id
    from tasks.errors import WinnowError

    store = open_store(db)
    sharded = sharded_selection_id(store, selection)
    if sharded is not None:
        out = export_sharded_selection(store, sharded, to, force=force)
    else:
        flow = run_flow(store, selection)
        if flow is not None and not is_plan(store, selection):
            raise WinnowError(f"{selection} is a {flow} run, not a selection: winnow export takes a selection id "
                              f"(`winnow selections {selection}` lists this run's, if any), a plan's run id, or a "
                              "prune-sharded run or selection id")
        out = export_selection(store, selection, to, force=force)
    if as_json:
        print_json(out)
    else:
        console.print(f"wrote {out['rows']} kept examples of {out['selection_id']} to {out['path']}", markup=False)


experiment = typer.Typer(help="Reproducible experiments.", no_args_is_help=True)
app.add_typer(experiment, name="experiment")


def _floats(s: str, what: str) -> list[float]:
    from tasks.errors import WinnowError

    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise WinnowError(f"--{what} {s!r}: expected comma-separated numbers") from None


@experiment.command(name="perceptron")
def perceptron_cmd(db: Optional[str] = DbOption,
                   n_dim: int = typer.Option(100, "--n", help="input dimension N"),
                   alphas: str = typer.Option("1,2,4,8,16,32,64", help="comma-separated alpha_tot = P/N"),
                   fractions: str = typer.Option("1,0.8,0.6,0.4,0.2,0.1", help="comma-separated keep fractions"),
                   seeds: int = typer.Option(3, min=1, help="number of seeds (0..seeds-1)"),
                   theta: float = typer.Option(0.0, help="probe angle to the teacher, radians"),
                   plot: Optional[Path] = typer.Option(None, "--plot", help="PNG path (default: artifacts folder)"),
                   force: bool = typer.Option(False, "--force", help="overwrite an existing --plot file"),
                   as_json: bool = JsonOption) -> None:
    """Teacher-student perceptron pruning (Sorscher et al. 2022, Fig. 1): keep-hard vs keep-easy vs random."""
    from flows.prune import perceptron_flow
    from tasks.prune.perceptron import check_grid

    a_list, f_list, png = _floats(alphas, "alphas"), _floats(fractions, "fractions"), plot_path(plot, force=force)
    check_grid(n_dim, a_list, f_list, theta)  # before the store is opened: a refused grid writes nothing
    store = open_store(db)
    store.check_usable()  # not a DuckDB file, someone else's, a newer schema: refused before Prefect starts
    out = run_or_fail(lambda: perceptron_flow(db=str(store.path), N=n_dim, alphas=a_list, fractions=f_list,
                                              seeds=list(range(seeds)), theta=theta, plot_path=png, progress=not as_json))
    if as_json:
        print_json(out)
    else:
        print_rows(out["table"], title=f"perceptron test error ({out['run_id']})")
        console.print(f"plot: {out['plot']}; rows in perceptron_results (view perceptron_summary) of {out['db']}", markup=False)
