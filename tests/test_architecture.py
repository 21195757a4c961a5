"""The house rules, checked from the code's own imports (no Prefect, nothing executed).

Direction: ``cli → flows → {tasks, storage, configs}``; ``storage → tasks`` only for outcome and data
types and errors; nothing imports ``cli``; typer only in ``cli``; rich only in ``cli`` and the one
progress module; DuckDB only in ``storage``; no import cycle between files (function-level imports
included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "flows", "tasks", "storage", "configs")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an import names (the longest known prefix), or None for third-party code."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


def _imports(module: str) -> dict[str, set[str]]:
    """Project modules and third-party top-level packages imported anywhere in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    project, external = set(), set()
    is_pkg = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if base else [a.name for a in node.names]
            if _resolve(base) is None and base:
                external.add(base.split(".")[0])
                continue
        for n in names:
            target = _resolve(n)
            if target is None:
                external.add(n.split(".")[0])
            elif target != module:
                project.add(target)
    return {"project": project, "external": external}


GRAPH = {m: _imports(m) for m in MODULES}


def _edges(src_prefix: str, dst_prefix: str) -> list[str]:
    return sorted(f"{m} -> {t}" for m, imp in GRAPH.items() if m.split(".")[0] == src_prefix
                  for t in imp["project"] if t.split(".")[0] == dst_prefix)


def test_no_import_cycles_between_files():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]["project"]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    # a package's __init__ that imports its own submodule (and back) is one file pair: still a cycle
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("src", ["flows", "tasks", "storage", "configs"])
def test_nothing_imports_cli(src):
    assert _edges(src, "cli") == []


@pytest.mark.parametrize("src,dst", [("tasks", "flows"), ("tasks", "storage"), ("storage", "flows"), ("configs", "flows"),
                                     ("configs", "storage")])
def test_layers_point_one_way(src, dst):
    assert _edges(src, dst) == []


def test_storage_uses_tasks_only_for_outcome_and_data_types():
    allowed = ("tasks.errors", "tasks.data", "tasks.files", "tasks.ingest", "tasks.report", "tasks.shards.plan")  # data types
    bad = [e for e in _edges("storage", "tasks")
           if not (e.split(" -> ")[1] in allowed or e.split(" -> ")[1].endswith(".outcome"))]
    assert bad == []


# flows.report only parses rich markup of summary lines into plain text for Prefect artifacts (prints nothing)
@pytest.mark.parametrize("lib,homes", [("typer", ("cli",)), ("rich", ("cli", "tasks.progress", "flows.report")),
                                       ("duckdb", ("storage",))])
def test_a_library_lives_in_one_room(lib, homes):
    users = sorted(m for m, imp in GRAPH.items()
                   if lib in imp["external"] and not any(m == h or m.startswith(h + ".") for h in homes))
    assert users == [], f"{lib} imported outside {homes}: {users}"


def test_flows_only_orchestrate_no_function_over_60_lines():
    """A flow calls tasks and hands their results to storage: a long function in flows/ is an algorithm
    (or a storage layer) that belongs in tasks/ or storage/."""
    long = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
