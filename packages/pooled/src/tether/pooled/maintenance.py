"""Background maintenance: the work no checkout should wait for, in one daemon thread per pool.

The thread is started the first time a pool needs it -- at creation with the
default ``ping=1`` (see step 0), or when ``mincached``, ``max_lifetime``,
``max_idle``, ``validate_interval`` or ``leak_threshold`` is set, otherwise at
the first failed connect or leaked proxy -- and each round it:

0. **marks stale** the idle connections that have been idle for
   ``ping_after`` seconds or are past their lifetime, by clearing their
   ``fresh`` flag: the next checkout of one pings it (or replaces it) first.
   This is what lets the checkout hot path skip reading the clock;
1. **reconnects** while the database is unreachable: one connect attempt at
   a time, with capped exponential backoff and jitter
   (``reconnect_backoff=(first, maximum)`` seconds; each delay is drawn
   between half and all of ``first * 2**attempt``, capped at ``maximum``).
   While checkouts wait, an attempt follows the last one after at most
   ``WAITING_RETRY`` (0.25 s) whatever the backoff says, so a database that
   comes back serves them at once. The first success clears the unreachable
   state, so waiters are served and checkouts connect again. A refused login
   (:class:`~tether.simple_pool.errors.AuthenticationError`), or arguments
   that cannot work (its base ``ConfigurationError``), is no outage:
   it is never retried here (nor by step 4); the next checkout's own connect
   tries again and raises it;
2. **retires** idle connections past their lifetime (``max_lifetime``, with
   up to 10 % jitter so connections opened together do not all expire
   together) or idle for longer than ``max_idle`` (the latter only while
   the pool has more than ``mincached``), and, after a
   :meth:`~tether.pooled.pool.Pool.resize` below what is open, those above
   the new ``maxconnections`` (every round until the pool fits). Connections
   in use are retired when they are given back;
3. **validates** connections idle for ``validate_interval`` seconds with a
   ping, discarding the dead ones, so a checkout rarely finds one;
4. **refills** the pool up to ``mincached`` connections (idle or in use),
   replacing those retired or discarded, so the pool stays warm;
5. **reports** connections held longer than ``leak_threshold`` (see
   :mod:`tether.pooled.leaks`), and takes back connections that the garbage
   collector returned at a moment the pool lock could not be taken.

It follows the pool's lock rule: entries are taken out of the idle deque one
atomic ``remove()`` at a time (an entry a checkout took meanwhile is simply
not there any more), and pinged, opened or closed without the lock, so a
checkout never waits for maintenance. The thread holds only a weak reference to the
pool between rounds, and ends when the pool is closed or collected.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from time import monotonic
from typing import TYPE_CHECKING

from .events import emit
from .leaks import format_stack

if TYPE_CHECKING:
    from .pool import Pool, _Entry

__all__ = ["Maintenance", "backoff_delay", "run_round"]

log = logging.getLogger("tether.pooled")

_INF = float("inf")
_MIN_TICK = 0.005
_MAX_TICK = 1.0
#: While checkouts wait for an unreachable database, reconnect at least this
#: often (seconds between the end of one attempt and the next), whatever the
#: backoff has grown to: a checkout waiting when the database comes back is
#: then served within about this long, not after a backoff of seconds.
WAITING_RETRY = 0.25


class Maintenance:
    """The daemon thread of one pool (it ends when it is no longer ``pool._maintenance``)."""

    def __init__(self, pool: Pool) -> None:
        self._ref = weakref.ref(pool)
        self._event = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"tether-pooled-{pool.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """Run a round now (or end, if the pool was closed)."""
        self._event.set()

    def _run(self) -> None:
        event = self._event
        while True:
            event.clear()
            pool = self._ref()
            if pool is None or pool._maintenance is not self:
                return
            try:
                delay = run_round(pool)
            except Exception:
                pool._log.exception("tether: maintenance of pool %s failed", pool.name)
                delay = _MAX_TICK
            del pool
            if delay is None:
                return
            event.wait(None if delay == _INF else delay)


def backoff_delay(attempt: int, first: float, maximum: float) -> float:
    """The delay before reconnect attempt ``attempt + 1``: exponential, capped, jittered."""
    delay = min(maximum, first * 2.0 ** min(attempt, 62))
    return delay / 2 + random.random() * delay / 2


def run_round(pool: Pool) -> float | None:
    """One round of maintenance; the seconds until the next (None: the pool is closed)."""
    pool._drain_orphans()
    if pool._closed:
        return None
    delay = _tick(pool)
    if pool._unreachable:
        delay = min(delay, _reconnect(pool))
    if pool._over_limit:
        # Shrunk by resize(): an idle connection that a lock-free checkin put
        # back while the limit changed is closed here; checkins retire the rest.
        pool._shed_idle()
        delay = min(delay, _MAX_TICK)
    now = monotonic()
    _mark_stale(pool, now)
    _retire_idle(pool, now)
    if pool._validate_interval is not None:
        _validate_idle(pool, now, pool._validate_interval)
    if not pool._unreachable:
        _refill(pool)
    if pool._leak_threshold is not None:
        _report_leaks(pool, now, pool._leak_threshold)
    return delay


def _tick(pool: Pool) -> float:
    """How often a round must run for the configured limits to be kept in time."""
    candidates = [
        value / divisor
        for value, divisor in (
            (pool._ping_after if 0 < pool._ping_after < _INF else None, 2),
            (pool._max_idle, 4),
            (pool._max_lifetime, 10),
            (pool._validate_interval, 2),
            (pool._leak_threshold, 4),
        )
        if value is not None
    ]
    if not candidates:
        return _MAX_TICK if pool._mincached else _INF
    return max(_MIN_TICK, min(_MAX_TICK, *candidates))


def _reconnect(pool: Pool) -> float:
    """Try to connect if an attempt is due; the seconds until the next attempt."""
    now = monotonic()
    due = pool._reconnect_at
    if pool._waiters:  # a checkout waits: do not let it wait out the backoff
        due = min(due, pool._reconnect_tried_at + WAITING_RETRY)
    if now < due:
        return min(due - now, WAITING_RETRY) if pool._waiters else due - now
    first, maximum = pool._backoff
    if pool._config_error is not None:
        return maximum  # the login was refused: retrying cannot help (a checkout may)
    if not pool._reserve_if_room(reconnecting=True):
        return maximum  # every slot is in use: a discard will wake us
    try:
        pool._open_reserved(pool._timeout, checkout=False)
    except Exception:
        pool._reconnect_tried_at = monotonic()
        if not pool._unreachable:  # ConfigurationError: no outage, no more attempts
            return maximum
        attempt = pool._reconnect_attempts
        pool._reconnect_attempts = attempt + 1
        delay = backoff_delay(attempt, first, maximum)
        pool._reconnect_at = monotonic() + delay
        pool._log.info(
            "tether: pool %s: reconnect attempt %d failed (%s); next in %.3g s"
            " (every %g s while checkouts wait)",
            pool.name,
            attempt + 1,
            pool._error_text(None),
            delay,
            WAITING_RETRY,
        )
        return min(delay, WAITING_RETRY) if pool._waiters else delay
    return 0.0  # connected: run the rest of the round right away


def _mark_stale(pool: Pool, now: float) -> None:
    """Clear ``fresh`` on idle entries idle for ``ping_after`` or past their lifetime."""
    ping_after = pool._ping_after
    for entry in list(pool._idle):  # list(deque) is one atomic C call
        if entry.fresh and (now - entry.idle_since >= ping_after or now >= entry.expires_at):
            entry.fresh = False


def _take(pool: Pool, entries: list[_Entry]) -> list[_Entry]:
    """Remove ``entries`` from the idle deque; those a checkout took meanwhile are left out."""
    taken = []
    lock = pool._lock
    lock.acquire()
    try:
        for entry in entries:
            try:
                pool._idle.remove(entry)
            except ValueError:
                continue
            taken.append(entry)
    finally:
        lock.release()
    return taken


def _retire_idle(pool: Pool, now: float) -> None:
    """Close idle connections past their lifetime, idle longer than max_idle, or beyond
    maxcached (which concurrent lock-free checkins can overshoot by a few)."""
    max_idle = pool._max_idle
    idle = list(pool._idle)  # coldest first
    spare = pool._size - pool._mincached  # how many may go for being idle
    excess = len(idle) - pool._maxcached if pool._maxcached else 0
    chosen: dict[int, str] = {}
    for entry in idle:
        if now >= entry.expires_at:
            chosen[id(entry)] = "max_lifetime"
        elif excess > 0:
            chosen[id(entry)] = "maxcached"
        elif max_idle is not None and spare > 0 and now - entry.idle_since >= max_idle:
            chosen[id(entry)] = "max_idle"
        else:
            continue
        spare -= 1
        excess -= 1
    if not chosen:
        return
    for entry in _take(pool, [entry for entry in idle if id(entry) in chosen]):
        pool._remove(entry, chosen[id(entry)])


def _validate_idle(pool: Pool, now: float, interval: float) -> None:
    """Ping connections idle for ``interval``; put the live ones back at the cold end."""
    due = _take(
        pool,
        [e for e in list(pool._idle) if now - max(e.idle_since, e.validated_at) >= interval],
    )
    if not due:
        return
    lock = pool._lock
    lock.acquire()
    try:
        pool._checking += len(due)
    finally:
        lock.release()
    alive: list[_Entry] = []
    removed: list[tuple[_Entry, str]] = []
    for entry in due:
        if entry.con.probe(pool._timeout):  # bounded: a blackholed server never answers
            alive.append(entry)
        else:
            removed.append((entry, "ping failed"))
    checked = monotonic()
    lock.acquire()
    try:
        pool._checking -= len(due)
        for entry in alive:
            entry.validated_at = checked
            entry.fresh = pool._fresh_on_checkin and checked < entry.expires_at
        if pool._closed or any(entry.gen != pool._gen for entry in alive):
            removed.extend((entry, "pool closed") for entry in alive)
        else:
            pool._idle.extendleft(reversed(alive))  # the cold end: the hot ones stay on top
            pool._serve_waiters()
    finally:
        lock.release()
    for entry, reason in removed:
        pool._remove(entry, reason)


def _refill(pool: Pool) -> None:
    """Open connections until the pool has ``mincached`` (idle, in use or opening)."""
    if pool._config_error is not None:
        return  # the login was refused: a background connect would only repeat that
    while pool._mincached and pool._reserve_if_room(below_mincached=True):
        try:
            pool._open_reserved(pool._timeout, checkout=False)
        except Exception:
            return  # the pool is unreachable now; _reconnect takes over


def _report_leaks(pool: Pool, now: float, threshold: float) -> None:
    """Log each checkout held longer than ``threshold``, once."""
    found = []
    lock = pool._lock
    lock.acquire()
    try:
        for entry in pool._entries.values():
            taken = entry.taken_at
            if taken >= entry.idle_since and entry.reported != taken and now - taken >= threshold:
                entry.reported = taken
                pool._n_leaks += 1
                found.append((entry, now - taken, entry.stack))
    finally:
        lock.release()
    for entry, held, stack in found:
        pool._log.warning(
            "tether: pool %s: a connection has been checked out for %.3g s"
            " (leak_threshold=%g s); it was checked out at:\n%s",
            pool.name,
            held,
            threshold,
            format_stack(stack),
        )
        if pool._on_event is not None:
            emit(pool._on_event, pool._log, "leak", pool.name, entry.con, f"held {held:.3g} s")
