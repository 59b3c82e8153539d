"""What ``stats()`` returns, key by key: a ``TypedDict``, so a type checker knows each value.

``pool.stats()`` is still a plain ``dict`` at run time (print it, compare it,
serialise it); :class:`PoolStats` only tells mypy and editors which keys it
has and what each holds, so ``stats["in_use"] + 1`` is an ``int`` and
``stats["in_uses"]`` is an error before it is a ``KeyError``.

Gauges (the state now) and counters (since the pool was made, or since a
``fork()`` in the child) are told apart below; the exporters in
:mod:`tether.pooled.metrics` export them as such. Once the pool is quiet,
``checkouts == checkins`` and ``opened - closed - detached == size``.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["PoolStats"]


class PoolStats(TypedDict):
    """A snapshot of one pool; see :meth:`tether.pooled.Pool.stats`. Times are in seconds."""

    #: The pool's name (``name=``, else ``PooledDB-<n>``): the label its metrics carry.
    name: str
    #: True once ``close()`` was called.
    pool_closed: bool
    # -- gauges: the state now ---------------------------------------------------------------
    #: Open connections: idle, in use, and any being validated by the maintenance thread.
    size: int
    #: Open and waiting in the pool for a checkout.
    idle: int
    #: Checked out (a shared connection counts once).
    in_use: int
    #: Checked out and shared (``maxshared``).
    shared: int
    #: Being opened right now (not in ``size`` yet).
    opening: int
    #: Checkouts blocked, waiting for a connection.
    waiting: int
    #: The limits in force (``resize()`` changes the first two); 0: no limit.
    maxconnections: int
    mincached: int
    maxcached: int
    #: A connect failed and the pool reconnects in the background.
    unreachable: bool
    # -- counters ------------------------------------------------------------------------
    #: Connections handed out (each share of a shared one counts).
    checkouts: int
    #: Connections given back.
    checkins: int
    #: Checkouts that failed after ``checkout_timeout``.
    timeouts: int
    #: Connections opened.
    opened: int
    #: Connections closed by the pool (``discarded`` included).
    closed: int
    #: Closed because they were broken.
    discarded: int
    #: Taken out of the pool by ``detach()``.
    detached: int
    #: Connects that failed (unreachable database or refused login).
    connect_errors: int
    #: Connections held past ``leak_threshold`` or garbage-collected unclosed.
    leaks: int
    #: Checkouts that had to queue for a busy pool.
    waits: int
    #: The time those queued checkouts waited, in all and at most.
    wait_time_total: float
    wait_time_max: float
