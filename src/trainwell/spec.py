"""The base of every config object: strict, immutable pydantic models.

Specs are validated where they are built (unknown keys, wrong types and out-of-range values are errors that
name the key path); builders turn them into plain torch objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A validated piece of config: unknown keys are errors, values cannot change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def name_or_table(value: Any) -> Any:
    """Accept the Keras shorthand ``"he_normal"`` for ``{ name = "he_normal" }``."""
    if isinstance(value, str):
        return {"name": value}
    return value
