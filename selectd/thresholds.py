"""Threshold rules over scorer signals: one mechanism for stage filters and for routes.

A rule names a signal (``stage.signal``, or just ``signal`` inside a stage), and passes when the
signal lies in ``[min, max]`` and, for categorical signals, is one of ``in``. Stages reject a
document on the first rule it fails (that rule's ``reason`` becomes the rejection reason); routes
match a document when all of their rules pass.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    signal: str = Field(description="signal name; inside a stage without the stage prefix")
    min: float | None = Field(default=None, description="pass when value >= min")
    max: float | None = Field(default=None, description="pass when value <= max")
    in_: list[str] | None = Field(default=None, alias="in", description="categorical: pass when value is one of these")
    reason: str | None = Field(default=None, description="rejection reason; default '<signal>_<below_min|above_max|not_in>'")

    @model_validator(mode="after")
    def _has_a_bound(self) -> "Rule":
        if self.min is None and self.max is None and self.in_ is None:
            raise ValueError("a rule needs at least one of min, max, in")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def passes(self, values: np.ndarray) -> np.ndarray:
        """Vectorised check over one signal array; NaN fails a numeric bound."""
        ok = np.ones(len(values), dtype=bool)
        if self.in_ is not None:
            allowed = set(self.in_)
            ok &= np.fromiter((v in allowed for v in values), dtype=bool, count=len(values))
        if self.min is not None or self.max is not None:
            numeric = np.asarray(values, dtype=np.float64)
            if self.min is not None:
                ok &= numeric >= self.min
            if self.max is not None:
                ok &= numeric <= self.max
        return ok

    def passes_value(self, value) -> bool:
        """:meth:`passes` for one value (routes check one document at a time; a one-element numpy
        round trip per rule cost more than the rest of routing)."""
        if self.in_ is not None and value not in self.in_:
            return False
        if self.min is not None and not float(value) >= self.min:  # NaN fails, as in passes()
            return False
        return self.max is None or float(value) <= self.max

    def failure_reason(self, values: np.ndarray, index: int) -> str:
        if self.reason:
            return self.reason
        value = values[index]
        if self.in_ is not None and value not in set(self.in_):
            return f"{self.signal}_not_in"
        if self.min is not None and not (float(value) >= self.min):
            return f"{self.signal}_below_min"
        return f"{self.signal}_above_max"


def first_failures(rules: Sequence[Rule], signals: dict[str, np.ndarray], n: int) -> list[str | None]:
    """For each of n documents, the reason of the first rule it fails, or None if it passes all."""
    reasons: list[str | None] = [None] * n
    pending = np.ones(n, dtype=bool)
    for rule in rules:
        if not pending.any():
            break
        values = signals[rule.signal]
        failed = pending & ~rule.passes(values)
        for i in np.flatnonzero(failed):
            reasons[i] = rule.failure_reason(values, int(i))
        pending &= ~failed
    return reasons
