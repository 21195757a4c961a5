"""Run configuration: the YAML recipe a user writes, validated by pydantic.

A config with only ``sources`` is an ingest-only run; each further section switches a stage on.
Every model forbids unknown keys, and :func:`load_config` turns any validation failure into one
:class:`~tasks.errors.WinnowError` naming the file and the key path (``prune.fractions.2``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from configs._model import StrictModel
from configs.encoder import EncoderConfig
from configs.mixture import MixtureConfig
from configs.plan import PlanConfig
from configs.prune import PruneConfig
from configs.scaling import ExtrapolateConfig
from tasks.errors import WinnowError

FILE_KINDS = ("parquet", "csv", "jsonl", "npy", "npz", "image_dir")
BUILTIN_KINDS = ("sklearn_digits", "mnist", "bbc_news")
SourceKind = Literal["parquet", "csv", "jsonl", "npy", "npz", "image_dir", "sklearn_digits", "mnist", "bbc_news"]
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
CONFIG_DIR = Path(__file__).resolve().parent


class SourceConfig(StrictModel):
    """One data source to ingest.

    File kinds read ``path``; tabular kinds take the label from ``label`` and the features from
    ``features`` (a list of numeric columns, or one list/array column holding an embedding; default:
    every numeric column except label, split and id). ``split`` names a column with values
    train/test; without it a seeded ``test_fraction`` of rows is held out.
    """

    name: str
    kind: SourceKind
    path: Path | None = None
    label: str | None = None
    features: list[str] | str | None = None
    text: str | None = Field(default=None, description="text column (csv/jsonl/parquet text sources)")
    split: str | None = None
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    max_rows: int | None = Field(default=None, gt=0, description="keep only the first max_rows rows (per split for built-ins)")
    labels_path: Path | None = Field(default=None, description="npy: a second .npy holding the labels")
    features_key: str = "X"
    labels_key: str = "y"
    image_size: tuple[int, int] | None = Field(default=None, description="image_dir: resize every image to (h, w)")
    delimiter: str = ","
    batch_rows: int = Field(default=65_536, gt=0, description="rows per streamed batch")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"source name {v!r} must start with a letter and use only letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _path_matches_kind(self) -> "SourceConfig":
        if self.kind in FILE_KINDS and self.path is None:
            raise ValueError(f"source {self.name!r} of kind {self.kind!r} needs a 'path'")
        if self.kind in BUILTIN_KINDS and self.path is not None:
            raise ValueError(f"source {self.name!r} of built-in kind {self.kind!r} takes no 'path'")
        return self


class TaskRunnerConfig(StrictModel):
    """How Prefect runs tasks: a local thread pool (default) or a Dask cluster."""

    kind: Literal["threads", "dask", "sequential"] = "threads"
    max_workers: int | None = Field(default=None, gt=0)
    address: str | None = Field(default=None, description="dask scheduler, e.g. tcp://10.0.0.5:8786; none = LocalCluster")
    n_workers: int = Field(default=2, gt=0)
    threads_per_worker: int = Field(default=1, gt=0)


class ScheduleConfig(StrictModel):
    """A deployment schedule: exactly one of ``cron`` or ``interval_seconds``."""

    cron: str | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> "ScheduleConfig":
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'interval_seconds'")
        return self


class DeployConfig(StrictModel):
    """Server deployments of this config (see ``winnow deploy``)."""

    name: str = "default"
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    work_pool: str | None = None


class RunConfig(StrictModel):
    """A whole run: sources to ingest plus the stages to run on them."""

    name: str = "run"
    db: Path | None = Field(default=None, description="DuckDB file; --db and WINNOW_DB override it")
    sources: list[SourceConfig] = Field(min_length=1)
    encoder: EncoderConfig | None = None
    prune: PruneConfig | None = None
    mixture: MixtureConfig | None = None
    extrapolate: ExtrapolateConfig | None = None
    plan: PlanConfig | None = None
    task_runner: TaskRunnerConfig = Field(default_factory=TaskRunnerConfig)
    deploy: DeployConfig | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "RunConfig":
        seen: set[str] = set()
        for i, s in enumerate(self.sources):
            if s.name in seen:
                raise ValueError(f"sources.{i}.name: duplicate source name {s.name!r}")
            seen.add(s.name)
        if self.plan is not None and self.mixture is None:
            raise ValueError("plan: the planner needs a 'mixture' section (its pools, target and OT settings)")
        return self

    def identity_json(self) -> str:
        """Canonical JSON of what determines the results: without ``task_runner``, ``deploy`` and ``db``,
        so the same recipe gets the same run id on threads or on Dask, from any deployment."""
        data = self.model_dump(mode="json", exclude={"task_runner", "deploy", "db"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise WinnowError(f"config has no source named {name!r} (have: {', '.join(s.name for s in self.sources)})")


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    got = first.get("input")
    shown = f" (got {got!r})" if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, (dict, list)) else ""
    return f"{origin}: key '{loc}': {msg}{shown}{extra}"


def parse_config(data: Any, origin: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a config mapping; relative source paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise WinnowError(f"{origin}: a config must be a YAML mapping with at least 'sources', got {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise WinnowError(_format_error(err, origin)) from None
    if base_dir is not None:
        for s in cfg.sources:
            for attr in ("path", "labels_path"):
                p = getattr(s, attr)
                if p is not None and not p.is_absolute():
                    setattr(s, attr, (base_dir / p).resolve())
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; every problem is a WinnowError naming the file and key."""
    p = Path(path)
    if not p.exists():
        raise WinnowError(f"config file not found: {p}")
    if p.is_dir():
        raise WinnowError(f"config path is a directory, not a YAML file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise WinnowError(f"{p}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise WinnowError(f"{p}: cannot read config: {err}") from None
    return parse_config(data, origin=str(p), base_dir=p.resolve().parent)


def builtin_config(name: str) -> Path:
    """Path of a config shipped inside the package (``demo`` -> configs/demo.yaml)."""
    p = CONFIG_DIR / f"{name}.yaml"
    if not p.exists():
        shipped = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise WinnowError(f"no shipped config named {name!r} (have: {', '.join(shipped)})")
    return p
