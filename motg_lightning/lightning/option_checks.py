"""The range check every options group uses, with messages that name the field as a config does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def at_least(group: str, minimum: int, values: Mapping[str, Any], meaning: Mapping[str, str] | None = None) -> None:
    """Refuse the first of ``values`` (None allowed) below ``minimum``, naming ``model.<group>.<field>``."""
    for name, value in values.items():
        if value is not None and value < minimum:
            relation = "at least 1" if minimum == 1 else f">= {minimum}"
            hint = f" ({meaning[name]})" if meaning and name in meaning else ""
            raise ValueError(f"model.{group}.{name}={value}: must be {relation}{hint}.")
