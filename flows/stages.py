"""The one declared list of pipeline stages: name, config section, flow and preflight.

The pipeline (:mod:`flows.pipeline`) runs them in this order. Flows and preflights are named by
``module:function`` and imported only when a stage runs, so listing or validating stages costs no
heavy import. Adding a stage = its flow, its CLI module (cli/), one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.errors import WinnowError


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: runs when the config has ``section``; ``preflight(config, db)`` runs before any
    stage writes (input checks that can fail), ``flow(config=, db=, run_id=, progress=)`` does the work;
    ``needs``: stages whose results of the same run it reads (they must run in that run too)."""

    name: str
    section: str
    flow: str
    preflight: str | None = None
    needs: tuple[str, ...] = ()

    def load_flow(self) -> Any:
        return _load(self.flow)

    def load_preflight(self) -> Callable[..., None] | None:
        return None if self.preflight is None else _load(self.preflight)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage("embed", "encoder", "flows.embed:embed_flow", "flows.embed:preflight"),
    Stage("prune", "prune", "flows.prune:prune_flow", "flows.prune:preflight"),
    Stage("mixture", "mixture", "flows.mixture:mixture_flow", "flows.mixture:preflight"),
    Stage("extrapolate", "extrapolate", "flows.fit:extrapolate_flow", needs=("mixture",)),
    Stage("plan", "plan", "flows.plan:plan_flow", "flows.plan:preflight"),
)
BY_NAME = {s.name: s for s in STAGES}


def enabled_stages(config: Any, only: list[str] | None = None) -> list[Stage]:
    """Stages the config switches on, restricted to ``only`` when given (in pipeline order)."""
    if only is not None:
        for name in only:
            if name not in BY_NAME:
                raise WinnowError(f"unknown stage {name!r} (stages: {', '.join(BY_NAME)})")
            if getattr(config, BY_NAME[name].section) is None:
                raise WinnowError(f"the config has no '{BY_NAME[name].section}' section, so the {name} stage cannot run")
    stages = [s for s in STAGES if getattr(config, s.section) is not None and (only is None or s.name in only)]
    names = {s.name for s in stages}
    for s in stages:
        for need in s.needs:
            if need not in names:
                how = (f"add a '{BY_NAME[need].section}' section" if getattr(config, BY_NAME[need].section) is None
                       else f"run both: --only {need} --only {s.name}")
                raise WinnowError(f"the {s.name} stage reads the {need} stage's results of the same run: {how}")
    return stages
