"""Base class for every config model: unknown keys are errors, values are validated on assignment."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys (a typo in a config must never be ignored)."""

    # allow_inf_nan=False: a non-finite number (YAML .inf/.nan) is refused in every float field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    def canonical_json(self) -> str:
        """Stable JSON of the validated values (sorted keys), the input of :meth:`hash`."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self, n: int = 16) -> str:
        """First ``n`` hex digits of the sha256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:n]
