"""Argument checks shared by every layer, so bad input fails the same way everywhere."""

from __future__ import annotations

import math
from typing import Any


def check_int(name: str, value: Any, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """``value`` as an int >= ``minimum``; TypeError/ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_seconds(name: str, value: Any, *, allow_none: bool = True) -> float | None:
    """``value`` as a positive, finite number of seconds (or None for "no limit")."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected seconds as a number, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: must be a positive finite number of seconds, got {value!r}")
    return float(value)
