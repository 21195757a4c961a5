"""Run the benchmark suite: ``python -m bench [--quick] [--only NAME ...] [--device cpu|cuda]``.

Prints one table of ratios against references measured in the same run (medians over repeats) and
writes everything — rows, scaling curves, raw timings, the machine description — to
``bench/out/results.json`` (``--out`` to change). ``make bench`` / ``make bench-gpu`` call this.
Benchmarks are never part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.common import OUT_DIR, BenchError, Context, Row, Section, fmt_bytes, machine_description, resolve_device


#: name -> (module, function): each benchmark is imported only when it runs.
BENCHES: dict[str, tuple[str, str]] = {
    "ssp": ("bench.bench_ssp", "run"),
    "ot_sweep": ("bench.external", "run_ot_sweep"),
    "scaling_fit": ("bench.external", "run_scaling"),
    "e2e": ("bench.bench_e2e", "run"),
    "storage": ("bench.bench_storage", "run"),
    "pruning_quality": ("bench.bench_pruning_quality", "run"),
    "decisions": ("bench.bench_decisions", "run"),
    "scale": ("bench.bench_scale", "run"),
}


def run_bench(name: str, ctx: Context) -> Section:
    module, function = BENCHES[name]
    return getattr(importlib.import_module(module), function)(ctx)

# run only when asked for with --only (the full scale benchmark takes about an hour on 2 cores)
OPT_IN = ("scale",)


DEVICE_BENCHES = ("ssp", "ot_sweep")


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        return fmt_bytes(v)
    if unit == "s":
        return f"{v:.3f} s" if v < 100 else f"{v:.0f} s"
    return f"{v:.4g} {unit}".strip()


def print_table(sections: list[Section], failures: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="winnow benchmarks (ratios against references measured in this run)", show_lines=False)
    for col in ("benchmark", "measured", "ours", "reference", "ratio", "target", "status"):
        table.add_column(col, overflow="fold")
    for sec in sections:
        for r in sec.rows:
            status = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[dim]info[/]"}[r.ok]
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f} ({r.ratio_label})"
            table.add_row(r.bench, r.what, _fmt_value(r.value, r.unit), _fmt_value(r.reference, r.unit), ratio, r.target, status)
    for name, err in failures.items():
        table.add_row(name, f"[red]failed: {err.splitlines()[-1][:120]}[/]", "-", "-", "-", "-", "[red]ERROR[/]")
    console = Console(width=max(160, Console().width))
    console.print(table)
    for sec in sections:
        notes = [f"  {r.what}: {r.note}" for r in sec.rows if r.note]
        if notes:
            console.print(f"[bold]{sec.name}[/]", highlight=False)
            for n in notes:
                console.print(n, highlight=False, markup=False)


def render_markdown(results: dict) -> str:
    """The table, curves and machine of a results.json, as Markdown (for bench/RESULTS.md)."""
    m = results["machine"]
    lines = ["| benchmark | measured | ours | reference | ratio | target | status |", "|---|---|---|---|---|---|---|"]
    for sec in results["sections"]:
        for r in sec["rows"]:
            status = {True: "met", False: "**MISSED**", None: "info"}[r["ok"]]
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f} ({r['ratio_label']})"
            lines.append(f"| {r['bench']} | {r['what']} | {_fmt_value(r['value'], r['unit'])} | "
                         f"{_fmt_value(r['reference'], r['unit'])} | {ratio} | {r['target']} | {status} |")
    for name, err in results.get("failures", {}).items():
        lines.append(f"| {name} | failed: {err.strip().splitlines()[-1][:150]} | - | - | - | - | ERROR |")
    notes = [f"- *{r['what']}*: {r['note']}" for sec in results["sections"] for r in sec["rows"] if r["note"]]
    curves = []
    for sec in results["sections"]:
        for name, c in sec.get("curves", {}).items():
            xs = c.get("n", [])
            ys = c.get("seconds", [])
            curves.append(f"- `{name}`: " + ", ".join(f"n={x:,} → {y:.3g} s" for x, y in zip(xs, ys))
                          + (f" ({sec['details'].get('curve_note', '')})" if sec.get("details") else ""))
    runs = sorted({(s["run"]["command"], s["run"]["date_utc"], round(s["run"].get("load_avg_1m", 0), 1))
                   for s in results["sections"] if "run" in s})
    machine = (f"- {m['nproc']} CPUs ({m.get('affinity')} usable), {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
               f"{m['platform']}, Python {m['python']}, torch threads {m['torch_threads']}, device {m['device']}\n"
               "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    out = ["### Machine", machine, "", "### Runs", *[f"- `{c}` at {d} UTC (1-min load average {la})" for c, d, la in runs],
           "", "### Table", *lines, "", "### Notes per row", *notes, "", "### Scaling curves", *curves]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes (minutes, not the headline sizes)")
    ap.add_argument("--only", action="append", choices=list(BENCHES), help="run only this benchmark (repeatable)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for the torch code paths")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per timing (medians are reported)")
    ap.add_argument("--set", action="append", default=[], metavar="BENCH.KEY=VALUE",
                    help="override a size, e.g. --set ssp.iters=5 (recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "results.json", help="JSON output path")
    ap.add_argument("--markdown", action="store_true", help="print the Markdown report of --out and exit (runs nothing)")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                    help="combine the sections of these results files (later files win) into --out and exit")
    args = ap.parse_args(argv)
    if args.merge:
        merged: dict = {}
        for path in args.merge:
            part = json.loads(path.read_text())
            if not merged:
                merged = {**part, "sections": [], "failures": {}, "command": "merged: " + " ".join(map(str, args.merge))}
            names_ = {sec["name"] for sec in part["sections"]}
            merged["sections"] = [sec for sec in merged["sections"] if sec["name"] not in names_] + part["sections"]
            merged["failures"] = {k: v for k, v in merged["failures"].items() if k not in names_} | part.get("failures", {})
        order = list(BENCHES)
        merged["sections"].sort(key=lambda sec: order.index(sec["name"]) if sec["name"] in order else len(order))
        args.out.write_text(json.dumps(merged, indent=2))
        print(f"merged {len(merged['sections'])} sections into {args.out}")
        return 0
    if args.markdown:
        print(render_markdown(json.loads(args.out.read_text())))
        return 0
    if args.repeats < 1:
        ap.error(f"--repeats={args.repeats} must be >= 1")
    try:
        device = resolve_device(args.device)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            ap.error(f"--set {item!r} must look like BENCH.KEY=VALUE, e.g. ssp.iters=5")
        overrides[key] = value
    ctx = Context(quick=args.quick, device=device, repeats=args.repeats, out_dir=args.out.parent, overrides=overrides)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    # storage, e2e and the scaling fit run numpy/DuckDB/Prefect code with no device path: a GPU run
    # measures the torch code paths only, unless asked otherwise with --only
    names = args.only or [n for n in BENCHES if n not in OPT_IN and (device == "cpu" or n in DEVICE_BENCHES)]
    machine = machine_description(device)
    sections: list[Section] = []
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    for name in names:
        print(f"[bench] {name} ({ctx.scale}, {device}) ...", file=sys.stderr, flush=True)
        ts = time.perf_counter()
        try:
            sec = run_bench(name, ctx)
        except BenchError as err:
            failures[name] = str(err)
            print(f"[bench] {name} FAILED: {err}", file=sys.stderr, flush=True)
            continue
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            failures[name] = traceback.format_exc()
            print(f"[bench] {name} FAILED:\n{failures[name]}", file=sys.stderr, flush=True)
            continue
        sec.details["wall_s"] = round(time.perf_counter() - ts, 2)
        print(f"[bench] {name} done in {sec.details['wall_s']:.0f} s", file=sys.stderr, flush=True)
        sections.append(sec)
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    stamp = {"command": command, "date_utc": machine["date_utc"], "mode": ctx.scale, "device": device,
             "overrides": overrides, "load_avg_1m": os.getloadavg()[0]}
    new = [{**s.to_json(), "run": stamp} for s in sections]
    out = {"command": command, "mode": ctx.scale, "repeats": ctx.repeats, "machine": machine,
           "wall_s": round(time.perf_counter() - t0, 1), "sections": new, "failures": failures}
    if args.only and args.out.exists():
        # --only refreshes those sections and keeps the others from earlier runs of the same mode/device
        try:
            old = json.loads(args.out.read_text())
        except ValueError:
            old = {}
        if old.get("mode") == ctx.scale and old.get("machine", {}).get("device") == device:
            done = {s["name"] for s in new}
            kept = [s for s in old.get("sections", []) if s["name"] not in done]
            out["sections"] = kept + new
            out["failures"] = {k: v for k, v in old.get("failures", {}).items() if k not in names} | failures
            order = list(BENCHES)
            out["sections"].sort(key=lambda s: order.index(s["name"]) if s["name"] in order else len(order))
    args.out.write_text(json.dumps(out, indent=2, default=float))
    print_table(sections, failures)
    print(f"results: {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
