"""Argument checks shared by every layer, so bad input fails the same way everywhere.

A public module of ``tether-simple-pool``: the layers above (steady,
persistent, pooled) import it, and so may a pool of your own that wants
tether's messages.

Every public constructor of tether (the simple pool, steady connections, the
persistent generators, the pools) checks its arguments with these functions
before it opens anything, so a mistake is reported at once, where it was
made, and not by the first checkout or the first reopen hours later. The
same parameter gets the same check, with the same message, in every layer:
``TypeError`` for a value of the wrong kind, ``ValueError`` for one out of
range, and the message starts with the parameter's name. A message shows a
bad number, never any other value (a connect argument may be a password).

The rules, in short:

* counts (``maxusage``, ``maxconnections``...) are ints, never bools,
  floats or strings; where DBUtils says "0 or None means no limit", None
  is taken as 0;
* flags (``blocking``, ``closeable``, ``reset_session``) are bools;
* seconds are ints or floats, finite, positive (or >= 0 where 0 means
  "every time"), and at most :data:`MAX_SECONDS`;
* hooks are callables, ``logger`` a :class:`logging.Logger`, ``setsession``
  a list of SQL strings, ``failures`` an exception class or a tuple of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, overload

#: The longest duration any seconds parameter accepts: 30 days. Every wait in
#: tether is a lock or condition timeout, and those raise OverflowError above
#: ``threading.TIMEOUT_MAX`` (about 49.7 days on Windows, the smallest of the
#: platforms); a value that large is a mistake, not a setting. Use None where
#: a parameter allows it, for "no limit".
MAX_SECONDS = 30 * 24 * 3600.0

#: What ``failures`` accepts: an exception class or a tuple of them.
FailuresSpec = Union[type[BaseException], tuple[type[BaseException], ...]]

_F = TypeVar("_F", bound=Callable[..., Any])


def check_int(name: str, value: Any, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (or None, if allowed); never a bool, float or str."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):  # in this order mypy 1.x narrows it
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_count(name: str, value: Any) -> int:
    """A DBUtils count or limit: an int >= 0, where None means 0 ("none" or "no limit")."""
    if value is None:
        return 0
    checked = check_int(name, value)
    assert checked is not None
    return checked


def check_bool(name: str, value: Any) -> bool:
    """A flag: True or False, nothing else (a string like ``"no"`` would count as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__}")
    return value


@overload
def check_seconds(
    name: str, value: Any, *, allow_none: Literal[False], allow_zero: bool = ...
) -> float: ...
@overload
def check_seconds(
    name: str, value: Any, *, allow_none: bool = ..., allow_zero: bool = ...
) -> float | None: ...
def check_seconds(
    name: str, value: Any, *, allow_none: bool = True, allow_zero: bool = False
) -> float | None:
    """A duration: a finite number of seconds, > 0 (>= 0 with ``allow_zero``), <= MAX_SECONDS.

    None ("no limit") only with ``allow_none``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected seconds as a number, got {type(value).__name__}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and math.isfinite(value) and value <= MAX_SECONDS):
        low = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"{name}: must be a number of seconds {low} and <= {MAX_SECONDS:g}"
            f" (30 days), got {value!r}"
        )
    return float(value)


def check_seconds_pair(name: str, value: Any) -> tuple[float, float]:
    """A tuple ``(first, maximum)`` of seconds with ``0 < first <= maximum <= MAX_SECONDS``."""
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name}: expected a tuple (first delay, maximum delay) of seconds")
    first = check_seconds(name, value[0], allow_none=False)
    cap = check_seconds(name, value[1], allow_none=False)
    if first > cap:
        raise ValueError(f"{name}: the first delay must be <= the maximum, got {value!r}")
    return first, cap


def check_callable(name: str, value: _F | None) -> _F | None:
    """A hook: a callable, or None for none."""
    if value is not None and not callable(value):
        raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")
    return value


def check_logger(value: Any) -> logging.Logger | None:
    """``logger``: a :class:`logging.Logger`, or None for tether's own."""
    if value is not None and not isinstance(value, logging.Logger):
        raise TypeError(f"logger: expected a logging.Logger or None, got {type(value).__name__}")
    return value


def check_str(name: str, value: Any, *, allow_none: bool = True) -> str | None:
    """A name: a str (or None, if allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
    return value


def check_setsession(value: Any) -> tuple[str, ...]:
    """``setsession``: SQL statements (strings) run on every new connection; None for none."""
    if value is None:
        return ()
    if isinstance(value, str):  # a lone string would be run letter by letter
        raise TypeError("setsession: expected a list of SQL statements, got a str")
    if not isinstance(value, (list, tuple)):  # a dict or set would run in no stated order
        raise TypeError(
            f"setsession: expected a list of SQL statements, got {type(value).__name__}"
        )
    statements = tuple(value)
    for sql in statements:
        if not isinstance(sql, str):
            raise TypeError(f"setsession: expected SQL strings, got a {type(sql).__name__}")
    return statements


def check_failures(value: Any) -> FailuresSpec | None:
    """``failures``: an exception class or a tuple of them (what means "connection lost")."""
    if value is None:
        return None
    items = value if isinstance(value, tuple) else (value,)
    if not items:
        raise ValueError("failures: an empty tuple would mean no error is a lost connection")
    if not all(isinstance(v, type) and issubclass(v, BaseException) for v in items):
        raise TypeError(
            f"failures: expected an exception class or a tuple of them, got {type(value).__name__}"
        )
    return value  # type: ignore[no-any-return]
