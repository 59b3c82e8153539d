"""When and how a steady connection checks that it is still alive (the ``ping`` setting).

The setting is DBUtils 3.2's: an int bitmask saying *when* (0 never,
1 when asked, e.g. by a pool at checkout, 2 when a cursor is created, 4 when
a statement is executed, 7 always), or *how* (an SQL statement or a callable
``check(raw_connection)`` that returns False or raises when the connection
is dead; None counts as alive), or a tuple ``(when, how)``. Without a "how",
the driver adapter's own liveness check is used.

Every check is a round trip, so the default is 1: checks happen only where
a pool asks for them, and a lost connection is otherwise noticed when a
statement fails (and then reopened, when that is safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from tether.simple_pool.drivers import DriverAdapter

from .errors import PingStatementError

Pinger = Callable[[Any], bool]

#: What ``ping`` accepts: a bitmask (None: 0), an SQL statement, a check
#: callable, or ``(bitmask, statement or check)``.
PingSpec = Union[int, str, Callable[[Any], Any], tuple[int, Union[str, Callable[[Any], Any]]], None]

_PING_ERROR = (
    "ping: expected an int bitmask (0-7), an SQL statement, a callable,"
    " or a tuple (bitmask, statement or callable)"
)


def check_ping(ping: Any) -> Any:
    """``ping`` unchanged, once it is a valid setting; ``TypeError``/``ValueError`` naming it.

    The check of :func:`parse_ping` without the driver: what an options
    object runs before any driver is known.
    """
    _split(ping)
    return ping


def parse_ping(ping: Any, adapter: DriverAdapter) -> tuple[int, Pinger]:
    """Split ``ping`` into the bitmask of moments and the check function."""
    flags, how = _split(ping)
    if how is None:
        return flags, adapter.ping
    if isinstance(how, str):
        return flags, _sql_check(how, adapter)
    return flags, _callable_check(how)


def _split(ping: Any) -> tuple[int, Any]:
    """``(bitmask, how)`` of a valid ``ping``: how is None, an SQL string or a callable."""
    how: Any = None
    if isinstance(ping, tuple):
        if len(ping) != 2:
            raise TypeError(_PING_ERROR)
        ping, how = ping
    elif isinstance(ping, str) or callable(ping):
        ping, how = 1, ping
    if ping is None:
        ping = 0
    if isinstance(ping, bool) or not isinstance(ping, int):
        raise TypeError(_PING_ERROR)
    if not 0 <= ping <= 7:
        raise ValueError(f"ping: the bitmask must be between 0 and 7, got {ping}")
    if how is None or callable(how):
        return ping, how
    if isinstance(how, str):
        if not how.strip():
            raise ValueError("ping: the SQL statement is empty")
        return ping, how
    raise TypeError(_PING_ERROR)


def _sql_check(sql: str, adapter: DriverAdapter) -> Pinger:
    """The check that runs ``sql``: False when it fails because the session is gone.

    A statement the server itself rejects (the driver's ``ProgrammingError``
    that is no lost connection: PyGreSQL reports losses with that class too)
    raises :class:`PingStatementError`: it would fail on every session, so
    taking it for a dead one only opens connection after connection.
    """
    rejected = adapter.error_class("ProgrammingError")

    def check(raw: Any) -> bool:
        try:
            adapter.execute(raw, sql)
        except Exception as exc:
            if (
                rejected is not None
                and isinstance(exc, rejected)
                and not adapter.is_connection_lost(raw, exc)
            ):
                raise PingStatementError(
                    f"ping: the statement {sql!r} failed on a session that answered"
                    f" ({type(exc).__name__}: {exc}); it can never succeed"
                ) from exc
            return False
        return True

    return check


def _callable_check(function: Callable[[Any], Any]) -> Pinger:
    def check(raw: Any) -> bool:
        try:
            alive = function(raw)
        except Exception:
            return False
        return alive is None or bool(alive)

    return check
