"""Base class for every config model: unknown keys are errors, values are validated on assignment."""

from __future__ import annotations

import hashlib
import json

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


def _numeric(annotation: object) -> bool:
    """int or float, alone or in an Optional/Union (never a bool field)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(a in (int, float) for a in args)
    return False


def listed_once(values: list, key=lambda x: x) -> list:
    """``values`` when no two items have the same ``key``; else a ValueError naming the first repeat
    (a config key's path is added by the loader)."""
    seen = set()
    for x in values:
        k = key(x)
        if k in seen:
            raise ValueError(f"{x!r} is listed twice")
        seen.add(k)
    return values


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys (a typo in a config must never be ignored)."""

    # allow_inf_nan=False: a non-finite number (YAML .inf/.nan) is refused in every float field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_true_false_numbers(cls, data: object) -> object:
        """YAML's true/false are Python bools, which pydantic takes as 1/0 for a number: ``max_rows: true``
        read one row. A number field given true or false is refused."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(field.alias or name)
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{name}: {str(value).lower()} is not a number")
        return data

    def canonical_json(self) -> str:
        """Stable JSON of the validated values (sorted keys), the input of :meth:`hash`."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self, n: int = 16) -> str:
        """First ``n`` hex digits of the sha256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:n]
