"""Run configuration: the YAML recipe a user writes, validated by pydantic.

A config with only ``sources`` is an ingest-only run; each further section switches a stage on.
Every model forbids unknown keys, and :func:`load_config` turns any validation failure into one
:class:`~tasks.errors.WinnowError` naming the file and the key path (``prune.fractions.2``).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

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
MAX_SEED = 2**32 - 1
MAX_IMAGE_SIDE = 4096
MAX_CONFIG_BYTES = 1 << 20


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
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    max_rows: int | None = Field(default=None, gt=0, description=(
        "keep at most max_rows rows: the first ones of a file; for built-ins a class-stratified sample "
        "(per split), so every class keeps its share"))
    labels_path: Path | None = Field(default=None, description="npy: a second .npy holding the labels")
    features_key: str = "X"
    labels_key: str = "y"
    image_size: tuple[int, int] | None = Field(default=None, description=f"image_dir: resize every image to (h, w), 1..{MAX_IMAGE_SIDE}")
    delimiter: str = Field(default=",", description="csv: one character, not a quote, newline or NUL")
    bad_cells: Literal["error", "drop_column"] = Field(default="error", description=(
        "csv/jsonl: a numeric-looking column with non-numeric cells is an error naming the column and row, "
        "or (drop_column) left out of the features with a warning"))
    batch_rows: int = Field(default=65_536, gt=0, le=10_000_000, description="rows per streamed batch")
    version: int | Literal["latest"] | None = Field(default=None, description=(
        "the registered version the run reads: default the one this file produces now; 'latest' = the "
        "newest registered version of this name (whoever ingested it); N = version N"))

    @field_validator("version")
    @classmethod
    def _version_positive(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("version must be >= 1 or 'latest'")
        return v

    @field_validator("image_size")
    @classmethod
    def _image_size_ok(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not all(1 <= side <= MAX_IMAGE_SIDE for side in v):
            raise ValueError(f"image_size sides must be between 1 and {MAX_IMAGE_SIDE} pixels, got {list(v)}")
        return v

    @field_validator("features")
    @classmethod
    def _features_ok(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("features is an empty list: name at least one column, or leave 'features' out")
            dup = sorted({f for f in v if v.count(f) > 1})
            if dup:
                raise ValueError(f"features names {dup[0]!r} twice")
        if v is not None and any(not f.strip() for f in ([v] if isinstance(v, str) else v)):
            raise ValueError("features holds an empty column name")
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter_ok(cls, v: str) -> str:
        if len(v) != 1 or v in "\"\r\n\x00":
            raise ValueError(f"delimiter must be exactly one character other than a quote, newline or NUL, got {v!r}")
        return v

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
        feats = [self.features] if isinstance(self.features, str) else list(self.features or [])
        roles = [("label", self.label), ("split", self.split), ("text", self.text)]
        for role, col in roles:
            if col is not None and col in feats:  # the label as a feature makes every probe trivially perfect
                raise ValueError(f"source {self.name!r}: features name the {role} column {col!r}; leave it out of 'features'")
        named = [(r, c) for r, c in roles if c is not None]
        for i, (r1, c1) in enumerate(named):
            for r2, c2 in named[i + 1:]:
                if c1 == c2:
                    raise ValueError(f"source {self.name!r}: {r1} and {r2} name the same column {c1!r}")
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

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as 'UTC' or 'Europe/Berlin')") from None
        return v


class DeployConfig(StrictModel):
    """Server deployments of this config (see ``winnow deploy``)."""

    name: str = "default"
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    work_pool: str | None = None

    @field_validator("name")
    @classmethod
    def _prefect_name(cls, v: str) -> str:
        bad = sorted({c for c in v if c in "/%&<>"})
        if not v.strip() or bad:
            raise ValueError(f"deployment name {v!r} " + (f"contains {' '.join(bad)}, which Prefect does not allow in a name"
                                                          if bad else "is empty"))
        return v


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

    @field_validator("db", mode="before")
    @classmethod
    def _db_not_blank(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("db is empty: give a DuckDB file path, or leave 'db' out")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> "RunConfig":
        seen: set[str] = set()
        for i, s in enumerate(self.sources):
            if s.name in seen:
                raise ValueError(f"sources.{i}.name: duplicate source name {s.name!r}")
            seen.add(s.name)
        if self.plan is not None and self.mixture is None:
            raise ValueError("plan: the planner needs a 'mixture' section (its pools, target and OT settings)")
        if self.prune is not None and self.encoder is None:
            raise ValueError("prune: the prune stage needs an 'encoder' section (e.g. encoder: {kind: pca, dim: 32})")
        have = ", ".join(seen)
        refs: list[tuple[str, str]] = []  # (key, source name) of every reference to a source
        for section in ("encoder", "prune"):
            names = getattr(getattr(self, section), "sources", None)
            refs += [(f"{section}.sources.{i}", n) for i, n in enumerate(names or [])]
        if self.mixture is not None:
            refs += [(f"mixture.pools.{i}.source", p.source) for i, p in enumerate(self.mixture.pools)]
            refs.append(("mixture.target.source", self.mixture.target.source))
        for key, name in refs:
            if name not in seen:
                raise ValueError(f"{key}: {name!r} is not a source of this config (have: {have})")
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
    msg = first["msg"].removeprefix("Value error, ")
    key = re.match(r"^([A-Za-z_][\w.]*): ", msg)
    if loc == "(top level)" and key:  # a whole-config check names the key it is about: "prune.k: ..."
        loc, msg = key.group(1), msg[key.end():]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    got = first.get("input")
    shown = f" (got {got!r})" if (first["type"] not in ("extra_forbidden", "missing") and first["type"] != "value_error"
                                  and not isinstance(got, (dict, list))) else ""
    return f"{origin}: key '{loc}': {msg}{shown}{extra}"


MAX_CONFIG_NODES = 200_000


def _count_nodes(data: Any, origin: str) -> None:
    """Refuse a config that expands (through YAML aliases) to more values than any run config has."""
    todo, seen = [data], 0
    while todo:
        item = todo.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise WinnowError(f"{origin}: the config expands to more than {MAX_CONFIG_NODES:,} values "
                              "(YAML aliases of aliases?); write it out plainly")
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)


def _check_values(data: Any, origin: str, path: str = "") -> None:
    """Checks on the raw mapping that hold for every section: finite numbers, seeds in range."""
    if not path:
        _count_nodes(data, origin)
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and (k == "seed" or k == "seeds"):
                for s in v if isinstance(v, list) else [v]:
                    if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
                        raise WinnowError(f"{origin}: key '{key}': a seed must be a whole number from 0 to {MAX_SEED} (got {s!r})")
            _check_values(v, origin, key)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_values(v, origin, f"{path}.{i}")
    elif isinstance(data, float) and not math.isfinite(data):
        raise WinnowError(f"{origin}: key '{path}': numbers must be finite (got {data!r}); write a finite value")


def parse_config(data: Any, origin: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a config mapping; relative source paths and ``db`` resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise WinnowError(f"{origin}: a config must be a YAML mapping with at least 'sources', got {type(data).__name__}")
    _check_values(data, origin)
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
        if cfg.db is not None:
            if not str(cfg.db).strip():
                raise WinnowError(f"{origin}: key 'db' is empty: give a DuckDB file path or leave 'db' out")
            db = cfg.db.expanduser()
            cfg.db = db if db.is_absolute() else (base_dir / db).resolve()
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same mapping (first at line {seen[key].line + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _read_config_text(p: Path) -> str:
    """The config's text; refuses a missing path, a folder or a special file (FIFO, device, socket) by type,
    before opening it (a FIFO would block forever, /dev/zero never end)."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise WinnowError(f"config file not found: {p}") from None
    except OSError as err:
        raise WinnowError(f"{p}: cannot read config: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise WinnowError(f"config path is a directory, not a YAML file: {p}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise WinnowError(f"config path {p} is {kind}, not a YAML file; save the config to a file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise WinnowError(f"{p}: {st.st_size:,} bytes is too large for a run config (at most {MAX_CONFIG_BYTES:,}); is it the right file?")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise WinnowError(f"{p}: not a UTF-8 text file (byte {err.start}); save the config as UTF-8 YAML") from None
    except OSError as err:
        raise WinnowError(f"{p}: cannot read config: {err.strerror or err}") from None


M = TypeVar("M", bound=BaseModel)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; every problem is a WinnowError naming the file and key."""
    p = Path(path)
    return parse_config(_load_yaml(p), origin=str(p), base_dir=p.resolve().parent)


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into another config ``model`` (e.g. the sharded job's) with the run config's
    checks and messages: a mapping, no repeated or unknown keys, one WinnowError naming file and key."""
    p = Path(path)
    data = _load_yaml(p)
    if not isinstance(data, dict):
        raise WinnowError(f"{p}: a config must be a YAML mapping, got {type(data).__name__}")
    _check_values(data, str(p))
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise WinnowError(_format_error(err, str(p))) from None


def _load_yaml(p: Path) -> Any:
    text = _read_config_text(p)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise WinnowError(f"{p}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise WinnowError(f"{p}: the YAML is nested too deeply to be a config") from None


def builtin_config(name: str) -> Path:
    """Path of a config shipped inside the package (``demo`` -> configs/demo.yaml)."""
    p = CONFIG_DIR / f"{name}.yaml"
    if not p.exists():
        shipped = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise WinnowError(f"no shipped config named {name!r} (have: {', '.join(shipped)})")
    return p
