"""Event hooks: let the application see what the pool does, without slowing it down when unused.

Pass ``on_event=callable`` to a pool and it is called with one
:class:`PoolEvent` for each of these ``kind`` values:

=============  ===============================================================
``connect``    a new connection was opened (``connection`` is it)
``checkout``   a connection was handed out (a shared one: at its first share only,
               though ``stats()["checkouts"]`` counts every share)
``checkin``    a connection was given back (before it is reset; a shared one: at
               its last share)
``close``      the pool closed a healthy connection (``reason``: ``max_lifetime``,
               ``max_idle``, ``maxcached``, ``pool closed``, ``resized``,
               ``discarded``: given back by ``invalidate()``/``discard()``)
``detach``     a borrower took its connection out of the pool (``detach()``)
``discard``    the pool dropped a broken one (``reason``: ``reset failed``, ``ping
               failed``, ``lost``...) -- it is never handed out again
``timeout``    a checkout timed out (``reason``: ``pool exhausted`` or
               ``database unreachable``; ``connection`` is None)
``leak``       a connection is held longer than ``leak_threshold``, or was
               garbage-collected without being returned
``unreachable``/``reachable``
               a connect failed and the pool started reconnecting in the
               background / a background reconnect succeeded
=============  ===============================================================

Timings ride along in ``duration`` (seconds, 0.0 where there is none): for
``checkout`` the time from the call to the connection handed out (waiting,
connecting and validating included; 0.0 when an idle connection was handed
out at once: the lock-free path does not time itself), for ``checkin`` how
long it was held (for a shared connection, from its first share to its
last), for ``connect`` how long the connect took. :mod:`tether.pooled.metrics` turns
them into histograms.

The hook runs in the thread that caused the event, never while the pool's
lock is held, so it may use the pool; it should be quick, since ``checkout``
and ``checkin`` events happen on every request. An exception raised by the
hook is logged and otherwise ignored. Without a hook the pool pays one
``is None`` test per checkout and checkin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

__all__ = ["EventHook", "EventKind", "PoolEvent", "emit"]

#: What happened: the ``kind`` of a :class:`PoolEvent` (see the table above).
EventKind = Literal[
    "connect",
    "checkout",
    "checkin",
    "close",
    "detach",
    "discard",
    "timeout",
    "leak",
    "unreachable",
    "reachable",
]


class PoolEvent(NamedTuple):
    """One thing that happened in a pool."""

    #: ``connect``, ``checkout``, ``checkin``, ``close``, ``discard``, ``detach``, ``timeout``,
    #: ``leak``, ``unreachable`` or ``reachable``.
    kind: EventKind
    #: The name of the pool.
    pool: str
    #: The steady connection concerned, or None.
    connection: Any = None
    #: Why (for ``close``, ``discard``, ``timeout``, ``leak``...), else "".
    reason: str = ""
    #: Seconds: the checkout's wait, the checkin's time held, the connect's time; else 0.0.
    duration: float = 0.0


EventHook = Callable[[PoolEvent], object]


def emit(
    hook: EventHook,
    log: logging.Logger,
    kind: EventKind,
    pool: str,
    connection: Any = None,
    reason: str = "",
    duration: float = 0.0,
) -> None:
    """Call ``hook`` with one event; an error in the hook is logged, never raised."""
    try:
        hook(PoolEvent(kind, pool, connection, reason, duration))
    except Exception:
        log.exception("tether: the on_event hook of pool %s failed on %r", pool, kind)
