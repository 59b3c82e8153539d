"""The pool: one implementation behind both PooledDB and PooledPg.

What a pool holds
-----------------
Every connection the pool owns is a *steady* connection (tether.steady),
which reopens itself when that is safe, wrapped in an :class:`_Entry` that
holds what the pool knows about it (when it expires, when it was last
used, who took it). An entry is always in exactly one place:

* the **idle list**, a stack: connections are taken from and returned to
  its end, so the most recently used connection is reused first (its
  session is warm, and the cold ones at the bottom can age out);
* **checked out** (``in_use``), by one proxy, or by several proxies when it
  is *shared* (``maxshared``, drivers with threadsafety > 1);
* **busy with the pool itself** for a moment: being opened, validated in
  the background, or closed.

``size`` counts them all; ``maxconnections`` caps it.

The lock rule
-------------
One ``threading.Lock`` guards the waiter queue, the slot accounting and every
decision that needs more than one step, and it is held only for a few list
operations. Nothing that can block -- opening a connection, a ping, a
rollback, closing -- ever happens under it: one slow or hanging connect never
stops another thread from taking an idle connection. A thread that needs a
new connection *reserves* a slot under the lock (``size += 1``), the
connect runs without it, and the slot is given back if that fails.

The hot path
------------
A checkout that finds an idle connection pops it from the idle deque and
hands it out in a new proxy; a checkin pushes it back. Neither takes the
lock: ``deque.pop()``/``append()`` and ``next(itertools.count())`` are atomic
in CPython, and every multi-step decision (serving waiters, closing) is
taken under the lock by whoever sees it is needed -- a checkin appends and
*then* looks for waiters, a new waiter queues and *then* looks at the idle
deque, so one of the two always sees the other. No round trip either: the
connection is validated with a ping only when it sat idle longer than
``ping_after`` seconds (default 1 s, as HikariCP does) -- the maintenance
thread clears its ``fresh`` flag then, so a checkout does not even read the
clock -- and it is rolled back only when the driver's own state says a
transaction is open. That costs under two microseconds per
checkout+checkin; DBUtils' PooledDB costs 3-4.

Waiting, fairly
---------------
When nothing is idle and ``maxconnections`` is reached, a blocking checkout
queues a :class:`_Waiter` (FIFO). A connection given back goes *directly* to
the longest waiter, never through the idle list, so a newcomer cannot
barge ahead of threads that waited longer; a newcomer also queues whenever
anyone is waiting. A slot freed by a discarded connection is handed to the
longest waiter as a *grant* to open a new one. Each checkout has one hard
deadline, ``checkout_timeout`` (default 30 s), covering the wait, the
connect (the driver's connect timeout is set from what is left of it through
the driver adapter) and the health check; when it passes the checkout fails
with :class:`~tether.pooled.errors.PoolExhausted` or
:class:`~tether.pooled.errors.UnreachableTimeout`, whose message says which.

A blocking checkout that reserved a slot (or was granted one) does not
connect itself: a short-lived thread of the pool's does, and the checkout
waits in line, at the head. A connection given back before the connect is
done serves it at once -- a connect takes tens of milliseconds, a request
a few -- and the new connection goes to the next waiter or the idle list
(HikariCP's spike test: 50 threads at once, 150 ms connects: the burst is
over in 26 ms instead of 170). At most ``max_connecting`` connects run at
once. The connect's own errors still reach the checkout that asked for it
(see :meth:`Pool._open_reserved`); a non-blocking checkout connects itself,
as in DBUtils.

When the database is down
-------------------------
A failed connect marks the pool *unreachable*: from then on, a checkout that
would need a new connection does not try to connect itself (non-blocking
ones fail fast with :class:`~tether.pooled.errors.DatabaseUnreachable`,
blocking ones wait), while the maintenance thread
(:mod:`tether.pooled.maintenance`) reconnects with capped exponential
backoff and jitter. Its first success serves the longest waiter and lets
the others connect again.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tether.simple_pool import Uncopyable
from tether.simple_pool.checks import check_count, check_seconds
from tether.simple_pool.deadline import LATE, call_within
from tether.simple_pool.drivers import DriverAdapter
from tether.simple_pool.errors import ConfigurationError, TetherError
from tether.steady import PingStatementError, SteadyBase, forwarding_class

from . import fork
from .errors import (
    DatabaseUnreachable,
    PoolClosed,
    PoolExhausted,
    TooManyConnectionsError,
    UnreachableTimeout,
)
from .events import EventKind, emit
from .leaks import Stack, capture_stack, format_stack
from .options import PoolOptions
from .proxies import PooledConnection
from .reset import ResetPolicy, RollbackTimeout
from .stats import PoolStats

if TYPE_CHECKING:
    from .maintenance import Maintenance

__all__ = ["Pool"]

log = logging.getLogger("tether.pooled")

_INF = float("inf")
_new = object.__new__
_Counter = itertools.count
_ref = weakref.ref
_names = iter(range(1, 1 << 62))

#: Seconds between two log lines about connections leaked from the same place.
_LEAK_LOG_INTERVAL = 60.0
#: Reasons for closing a connection that mean it was broken (counted as ``discarded``).
_BROKEN = frozenset({"reset failed", "ping failed", "lost"})
#: resize()'s "not given".
_UNSET: Any = object()
_P = TypeVar("_P", bound="Pool")


class _Entry:
    """One connection of the pool and the pool's bookkeeping about it."""

    __slots__ = (
        "__weakref__",  # the on_lost callback's (see _lost_callback)
        "born",
        "con",
        "expires_at",
        "fresh",
        "gen",
        "idle_since",
        "on_lost",
        "ref",
        "reported",
        "shares",
        "stack",
        "taken_at",
        "validated_at",
    )

    def __init__(self, con: SteadyBase, now: float, expires_at: float, gen: int) -> None:
        self.con = con
        self.born = now  # when it was opened: a checkout since then does not ping it
        #: Handed out without a look (ping, expiry) while True; cleared by the
        #: maintenance thread once idle for ``ping_after`` or past its lifetime.
        self.fresh = True
        self.expires_at = expires_at
        self.gen = gen  # the fork generation it belongs to
        self.idle_since = now
        self.validated_at = now
        #: A weak reference to the proxy of the current dedicated checkout, whose
        #: callback (``on_lost``) takes the connection back if the proxy is
        #: garbage-collected without having been closed.
        self.ref: weakref.ref[PooledConnection] | None = None
        self.on_lost: Callable[[weakref.ref[PooledConnection]], None] | None = None
        self.shares = 0  # proxies sharing it, if it is shared
        # Leak detection (only kept up to date when leak_threshold or on_event is set):
        self.taken_at = -1.0  # checked out iff taken_at >= idle_since
        self.reported = -1.0  # taken_at of the checkout last reported as a leak
        self.stack: Stack | None = None


#: _validate's verdict for a connection whose ping failed.
_PING_FAILED = "ping failed"


class _Held:
    """The entry a checkout holds and has not handed back or out yet (see _unattached).

    Kept outside the checkout's frame so that its caller, too, can give the
    entry back when an exception interrupts the checkout before its first
    line runs. ``checking``: the entry is being pinged (half-read, if so).
    ``waiter``: the checkout's place in line, with what it may have been
    served or the slot reserved for its connect; ``reserved``: a slot granted
    to it, not yet handed to a connect. Each is set and cleared by plain
    stores next to what it records, with no call (no signal) in between.
    """

    __slots__ = ("checking", "entry", "reserved", "waiter")

    def __init__(self, entry: _Entry | None) -> None:
        self.entry = entry
        self.checking = False
        self.waiter: _Waiter | None = None
        self.reserved = False


class _Waiter:
    """A blocked checkout, queued FIFO.

    Served by whoever pops it from the queue, under the pool lock: it sets
    ``entry`` (a connection handed over), ``grant`` (a slot reserved to open
    one), ``failed`` (the connect made for it could not reach the database)
    or ``error`` (to raise), then releases ``lock``, on which the waiter
    blocks. ``connecting``: a connect made for it is under way.
    """

    __slots__ = (
        "abandoned", "claimed", "connecting", "entry", "error", "failed", "grant", "lock", "slot"
    )  # fmt: skip

    def __init__(self, connecting: bool = False) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.entry: _Entry | None = None
        self.grant = False
        self.error: BaseException | None = None
        self.failed: BaseException | None = None
        self.connecting = connecting
        #: A slot reserved for the connect made for it; ``claimed`` once that
        #: connect's thread runs, ``abandoned`` if its checkout gave it back first
        #: (both under the pool lock: exactly one of them owns the slot).
        self.slot = False
        self.claimed = False
        self.abandoned = False


class Pool(Uncopyable):
    """The pool both fronts share; see the module docstring. Not instantiated directly.

    A front (:class:`~tether.pooled.PooledDB`, :class:`~tether.pooled.PooledPg`)
    checks its DBUtils arguments, then calls :meth:`_setup` and implements
    :meth:`_new_connection`.
    """

    #: The proxy class handed out for dedicated checkouts.
    _proxy: type[PooledConnection] = PooledConnection
    #: The proxy class for shares of a shared connection.
    _shared_proxy: type[PooledConnection] = PooledConnection

    name: str
    _adapter: DriverAdapter
    _kwargs: dict[str, Any]
    _constructing = False  # True while the constructor opens mincached connections

    # -- setup ------------------------------------------------------------------------------

    def _setup(
        self,
        adapter: DriverAdapter,
        kwargs: dict[str, Any],
        options: PoolOptions,
        *,
        reset: ResetPolicy,
        maxshared: int,
        ping_flags: int,
    ) -> None:
        """Set up the state from the checked ``options``, open ``mincached`` connections.

        The front checked every argument by making ``options`` (options.py),
        before anything is opened; ``reset``, ``maxshared`` and ``ping_flags``
        are what the front made of its options for its driver. The hot path
        reads the pool's own attributes, copied from the options here.
        """
        self._closed = True  # until set up: __del__ and close() must work whatever fails
        self._maintenance: Maintenance | None = None
        self._options = options
        name = options.name
        self.name = name if name is not None else f"{type(self).__name__}-{next(_names)}"
        logger = options.steady.logger
        self._log = logger if logger is not None else log
        self._on_event = on_event = options.on_event
        self._adapter = adapter
        self._kwargs = kwargs

        mincached, maxcached = options.mincached, options.maxcached
        maxconnections = options.maxconnections
        self._maxcached_asked = maxcached  # resize() applies the rule below again
        if maxcached:  # as DBUtils: the limits never contradict each other
            maxcached = max(maxcached, mincached)
        if maxconnections:
            maxconnections = max(maxconnections, maxcached, maxshared)
        self._mincached, self._maxcached = mincached, maxcached
        self._maxshared, self._maxconnections = maxshared, maxconnections
        self._blocking = options.blocking
        self._reset = reset

        self._timeout = options.checkout_timeout
        self._max_lifetime = options.max_lifetime
        self._max_idle = options.max_idle
        self._max_waiting = options.max_waiting
        # At most this many connects run at once for blocking checkouts; the
        # other threads wait for a returned connection or their turn. A burst
        # of requests is then served by connections coming back (milliseconds)
        # instead of opening one per thread (HikariCP's spike test: a pool
        # that opens 45 connections for 50 short requests).
        self._max_connecting = options.max_connecting
        self._leak_threshold = options.leak_threshold
        self._validate_interval = options.validate_interval
        # Without the "on checkout" bit of `ping`, a checkout never pings.
        self._ping_after = options.ping_after if ping_flags & 1 else _INF
        self._fresh_on_checkin = self._ping_after > 0  # ping_after=0: ping every checkout
        self._backoff = options.reconnect_backoff
        # Anything to do on checkout or checkin besides the list operations?
        self._observed = on_event is not None or self._leak_threshold is not None
        self._checkin_work = self._observed or reset.always

        # -- state, guarded by _lock ------------------------------------------------------
        self._lock = threading.Lock()
        #: A stack: the right end is the most recently returned. Changed without the
        #: lock only by single deque operations (atomic); scanned as list(deque).
        self._idle: deque[_Entry] = deque()
        #: How many idle connections may be kept (0 once closed: everything goes).
        self._idle_cap = maxcached or sys.maxsize
        self._shared: list[_Entry] = []
        self._waiters: deque[_Waiter] = deque()
        #: Plain waiters served a connection, kept for the next wait: their lock
        #: is held again after the wait, as a new one's is (a new _Waiter and its
        #: Lock cost ~1,000 instructions a waiting checkout, measured).
        self._spare_waiters: list[_Waiter] = []
        self._entries: dict[int, _Entry] = {}  # every live entry, by id(con)
        self._orphans: deque[_Entry] = deque()  # given back by the garbage collector
        self._size = 0  # idle + in use + opening + being validated
        self._opening = 0
        self._checking = 0
        #: Of ``_opening``: connections the pool opens for its idle list (mincached,
        #: a reconnect attempt), which a checkout may wait for instead of being refused.
        self._coming = 0
        #: Connections forgotten (out of ``_size``) whose driver close is still running.
        self._closing = 0
        #: Set once a closed pool has nothing open and nothing closing (``close(timeout)``).
        self._drained: threading.Event | None = None
        #: resize() left more connections than maxconnections: every checkin takes
        #: the slow path, which retires returned connections until the pool fits.
        self._over_limit = False
        self._gen = 0  # bumped in a forked child
        self._unreachable = False
        self._last_error: BaseException | None = None
        #: The database refused the login, or the arguments cannot work (ConfigurationError):
        #: no background connects until a checkout's own connect succeeds again.
        self._config_error: BaseException | None = None
        self._reconnect_attempts = 0
        self._reconnect_at = 0.0
        self._reconnect_tried_at = 0.0  # when the last reconnect attempt ended
        self._reset_counters()
        #: Where connections came back with an open transaction (warned once each).
        self._warned_sites: set[str] = set()
        #: (id(code), instruction offset) of call sites already seen -> their code object
        #: (kept, so the id cannot be reused): a repeated site is known without a line lookup.
        self._warned_calls: dict[tuple[int, int], Any] = {}
        #: Leaks logged, by checkout site: when last logged, how many not logged since.
        self._leak_log: dict[str, tuple[float, int]] = {}
        self._closed = False
        fork.register(self)

        # As DBUtils: the first mincached connections are opened now, and a
        # failure to do so is the constructor's. A constructor that fails
        # leaves nothing behind: what it opened is closed, and no maintenance
        # thread was started (it would keep reconnecting for a pool nobody
        # holds, kept alive by the error's traceback until the next gc).
        self._constructing = True
        try:
            for _ in range(mincached):
                if not self._reserve_if_room():
                    break
                self._open_reserved(self._timeout, checkout=False)
        except BaseException:
            self._constructing = False
            self.close()
            self._last_error = self._config_error = None  # no cycle through the traceback
            raise
        self._constructing = False
        if self._needs_maintenance():
            self._wake()

    def _reset_counters(self) -> None:
        # Counted without the lock: next() on an itertools.count is atomic.
        self._checkouts = _Counter()
        self._checkins = _Counter()
        # in_use is not counted: it is checkouts - checkins - extra_shares - undone.
        self._n_undone = self._extra_shares = 0  # under the lock
        self._n_timeouts = self._n_opened = self._n_closed = self._n_discarded = 0
        self._n_connect_errors = self._n_leaks = self._n_waits = self._n_detached = 0
        self._wait_total = self._wait_max = 0.0

    def _forward_to(self, con: SteadyBase) -> None:
        """Hand out proxies that pass ``con``'s attributes through (a forwarding subclass).

        Properties, not ``__getattr__``: see :func:`tether.steady.forwarding_class`
        (measured: a ``__getattr__`` on the proxy made every access on it cost
        ~285 instructions more on CPython 3.11, ~3,000 per request).
        """
        cls = type(self)
        self._proxy = forwarding_class(cls._proxy, con)
        self._shared_proxy = forwarding_class(cls._shared_proxy, con)

    def _new_connection(self, kwargs: dict[str, Any]) -> SteadyBase:
        """A new steady connection opened with ``kwargs`` (the front knows which kind)."""
        raise NotImplementedError

    # -- checkout: the hot path ---------------------------------------------------------------

    def connection(self, shareable: bool = True) -> Any:
        """A pooled connection: a proxy that gives it back to the pool on ``close()``.

        With ``shareable`` (and ``maxshared`` set, and a driver whose
        threadsafety allows it) the connection may be shared with other
        threads, as in DBUtils; never one inside a transaction.
        """
        if shareable and self._maxshared:
            return self._checkout_shared()
        # The hot path: pop the most recently returned idle connection and hand
        # it out if it is fresh. Everything else is in _checkout_slow.
        # Queue behind waiters (no barging). An empty idle list is looked at
        # first: an IndexError costs ~2,000 instructions, and above its size a
        # pool finds it empty on most checkouts (the one it gave back went
        # straight to a waiter).
        held = None
        if not self._waiters and self._idle:
            try:
                entry = self._idle.pop()
            except IndexError:
                pass
            else:
                try:  # (free until it raises: an exception table, no instruction)
                    next(self._checkouts)
                    if entry.fresh:  # recently used, not expired: no ping
                        proxy = _new(self._proxy)
                        proxy._pool = self
                        proxy._entry = entry
                        proxy._con = entry.con
                        entry.ref = _ref(proxy, entry.on_lost)
                        if self._observed:
                            self._observe_checkout(entry)
                        return proxy
                    held = _Held(entry)
                except BaseException as exc:
                    self._unattached(_Held(entry), exc)
                    raise
        if held is None:
            held = _Held(None)
        try:
            return self._dedicated(self._checkout_slow(held.entry, monotonic(), held))
        except BaseException as exc:
            self._unattached(held, exc)
            raise

    def _unattached(self, held: _Held, exc: BaseException) -> None:
        """A checkout interrupted before its proxy held its entry: the entry goes back.

        An exception a signal handler raises (a request's time budget,
        Ctrl-C) can come at any call, also at a function's first line. Once
        the proxy holds the entry, its weak reference gives the connection
        back when the proxy is dropped; before that nobody would (found by an
        outside attack: a pool of one was dead after one interrupt just after
        the hand-over). Given back once: ``held`` is emptied.
        """
        waiter, held.waiter = held.waiter, None
        if waiter is not None:
            self._leave_line(waiter)
        if held.reserved:
            held.reserved = False
            self._unreserve()
        entry, held.entry = held.entry, None
        if entry is None or entry.ref is not None:
            return
        if held.checking and not isinstance(exc, PingStatementError):
            # Interrupted mid-ping: the connection may be half-read.
            self._remove(entry, "ping failed", checked_out=True)
        else:
            # Healthy (a ping statement the server rejects answered too: the
            # connection goes back, so every checkout that pings raises the
            # error and none costs a connect).
            self._checkin(entry)

    def dedicated_connection(self) -> Any:
        """A connection used by this checkout alone (``connection(shareable=False)``)."""
        return self.connection(False)

    def _dedicated(self, entry: _Entry) -> PooledConnection:
        """A new proxy for a dedicated checkout of ``entry``."""
        proxy = _new(self._proxy)
        proxy._pool = self
        proxy._entry = entry  # as _attach does (one call less on the waiting path)
        proxy._con = entry.con
        entry.ref = _ref(proxy, entry.on_lost)
        return proxy

    def _attach(self, proxy: PooledConnection, entry: _Entry) -> None:
        """Make ``proxy`` the holder of ``entry`` (taken back if it is collected)."""
        proxy._entry = entry
        proxy._con = entry.con
        entry.ref = _ref(proxy, entry.on_lost)

    def _checkout_entry(self) -> _Entry:
        """A checked-out entry without a proxy (for PooledPg's ``pooled_connection``)."""
        return self._checkout_slow(None, monotonic())

    def _checkout_slow(self, entry: _Entry | None, now: float, held: _Held | None = None) -> _Entry:
        """Everything but the fresh idle connection: validate, open, wait, time out.

        ``entry`` is an idle connection already taken (and counted) that must
        be looked at first. Returns a checked-out entry.
        """
        deadline = now + self._timeout
        start = now
        waited = False
        failed: BaseException | None = None  # this checkout's own connect error
        # A blocking checkout that reserved a slot does not open the connection
        # itself: a thread of the pool's does, for whoever waits longest, and
        # this checkout waits in line. A connection given back meanwhile serves
        # it at once instead of after a whole connect (HikariCP's spike test:
        # 50 threads, 150 ms connects, 2 ms queries: the burst is over long
        # before the new connections are).
        unanswered = False
        if self._orphans:
            self._drain_orphans()
        # The entry this checkout holds and has not handed back or out: given
        # back if an exception (a signal handler's) interrupts it (see _unattached).
        if held is None:
            held = _Held(entry)
        just_opened_failed = False  # a ping failed on a connection opened for this checkout
        try:
            lock = self._lock
            while True:
                if entry is not None:
                    # Handed over by a checkin (fresh) and not expired: nothing to validate.
                    if not entry.fresh or now >= entry.expires_at:
                        held.checking = True
                        verdict = self._validate(entry, now, deadline)
                        held.checking = False
                        if verdict is not None:
                            # (held cleared first: an interruption inside _remove must
                            # not count it out twice; a lost slot is the lesser harm)
                            held.entry = None
                            self._remove(entry, verdict, checked_out=True)
                            if (
                                verdict is _PING_FAILED
                                and entry.born >= start
                                and monotonic() < deadline
                            ):
                                if just_opened_failed:
                                    raise PingStatementError(
                                        f"ping: the check failed on two connections just"
                                        f" opened (pool {self.name}): it takes every new"
                                        " connection for dead (a statement that fails"
                                        " while it runs, or a callable that returns False)"
                                    )
                                # Once: a session killed right after its connect (a
                                # failover) is no configuration error.
                                just_opened_failed = True
                            entry = None
                    if entry is not None:
                        if waited:  # (inline: a pool above its size comes here every checkout)
                            seconds = now - start
                            lock.acquire()
                            try:
                                self._n_waits += 1
                                self._wait_total += seconds
                                self._wait_max = max(self._wait_max, seconds)
                            finally:
                                lock.release()
                        if self._observed:
                            self._observe_checkout(entry, start)
                        return entry
                    now = monotonic()  # the ping took some of the deadline
                    unanswered = now >= deadline  # all of it: the database did not answer
                if now >= deadline:
                    if held.reserved:
                        self._unreserve()
                        held.reserved = False
                    self._raise_timeout(failed, connecting=unanswered)
                waiter: _Waiter | None = None
                connect_for: _Waiter | None = None
                wake = False
                lock.acquire()
                try:
                    if self._closed:
                        if held.reserved:
                            self._size -= 1
                            self._opening -= 1
                            held.reserved = False
                            self._size_dropped()
                        raise PoolClosed(f"pool {self.name} is closed")
                    if held.reserved:
                        # Our slot, granted after waiting: back to the head of the line,
                        # the slot now the connect's (moved by stores alone, see _Held).
                        waiter = connect_for = _Waiter(connecting=True)
                        waiter.slot = True
                        held.waiter = waiter
                        held.reserved = False
                        self._waiters.appendleft(waiter)
                        if self._idle:
                            self._serve_waiters()
                    elif self._idle and not self._waiters:
                        entry = held.entry = (
                            self._pop_idle()
                        )  # None if a lock-free checkout was faster
                        continue
                    elif (
                        self._waiters
                        or self._unreachable
                        or (self._maxconnections and self._size >= self._maxconnections)  # no room
                        or (self._blocking and self._opening >= self._max_connecting)
                    ):
                        if not self._blocking and (self._unreachable or not self._arriving()):
                            raise self._refusal(failed)
                        if self._max_waiting and len(self._waiters) >= self._max_waiting:
                            raise TooManyConnectionsError(
                                f"pool {self.name}: {len(self._waiters)} threads are waiting"
                                f" already (max_waiting={self._max_waiting}); {self._describe()}"
                            )
                        spare = self._spare_waiters
                        waiter = spare.pop() if spare else _Waiter()
                        held.waiter = waiter
                        if failed is not None:  # it had its turn already: keep it
                            self._waiters.appendleft(waiter)
                        else:
                            self._waiters.append(waiter)
                        # The maintenance thread reconnects sooner while checkouts wait.
                        wake = self._unreachable
                        # A checkin may have pushed a connection after we looked and
                        # before we queued, and not seen us: look again.
                        if self._idle:
                            self._serve_waiters()
                    elif self._blocking:
                        # The waiter first, then the slot, by stores alone (see _Held).
                        waiter = connect_for = _Waiter(connecting=True)
                        self._size += 1  # (_reserve(), inline)
                        self._opening += 1
                        waiter.slot = True
                        held.waiter = waiter
                        self._waiters.append(waiter)  # nobody waits (checked above)
                    else:
                        self._size += 1  # (_reserve(), inline)
                        self._opening += 1
                        held.reserved = True
                finally:
                    lock.release()
                if wake:
                    self._wake()
                if connect_for is not None:
                    self._connect_in_background(connect_for, deadline - now)
                if waiter is not None:
                    # Waiting for the connect made for us is not counted as a wait
                    # for a busy pool (stats()["waits"]), as when we connected ourselves.
                    waited = waited or connect_for is None
                    # Interrupted while it waits (a signal handler's exception: a
                    # request timeout, Ctrl-C), the checkout leaves the line and gives
                    # back what was handed over meanwhile (_unattached, held.waiter),
                    # or the connection (or the slot) was lost for good (found by an
                    # outside attack: a pool of one stalled).
                    remaining = deadline - monotonic()
                    served = remaining > 0 and waiter.lock.acquire(True, remaining)
                    if not served:
                        self._wait_ran_out(waiter, failed)  # raises unless served meanwhile
                    if waiter.error is not None:
                        raise waiter.error
                    entry = held.entry = waiter.entry  # None for a grant
                    if entry is not None:
                        held.waiter = None  # (the entry is held.entry's now)
                    if served and entry is not None and connect_for is None:
                        # Handed a connection: nobody else holds this waiter now (a
                        # connect made for a waiter keeps it, so those are never kept).
                        waiter.entry = None
                        self._spare_waiters.append(waiter)
                    if waiter.grant:  # a slot granted to us: see the top of the loop
                        waiter.grant = False
                        held.reserved = True
                        held.waiter = None
                    now = monotonic()
                    if waiter.failed is not None:
                        # Our connect's error (its slot given back by it): back in
                        # line, at the head.
                        held.waiter = None
                        failed = waiter.failed
                        continue
                    if not held.reserved:
                        held.waiter = None  # (served an entry, or woken for nothing)
                        continue
                    if now >= deadline:  # granted too late to use it
                        self._unreserve()
                        held.reserved = False
                        self._raise_timeout(failed)
                    continue
                # A non-blocking checkout opens the connection in its reserved slot
                # itself: the slot is the connect's from here (a window: an interrupt
                # before its thread starts loses the slot).
                held.reserved = False
                try:
                    entry = held.entry = self._open_within(deadline, now)
                except Exception as exc:
                    if not self._blocking or not self._is_connect_error(exc):
                        raise  # the driver's error, as DBUtils raises it
                    failed = exc
                    entry = None
                now = monotonic()
        except BaseException as exc:
            self._unattached(held, exc)
            raise

    def _open_within(self, deadline: float, now: float) -> _Entry:
        """A non-blocking checkout's own connect, given up at ``deadline``.

        The driver's connect timeout is set from what is left, but drivers
        count coarsely (libpq: whole seconds, at least 2), so the connect runs
        on a short-lived thread and the checkout stops waiting at the
        deadline (:class:`UnreachableTimeout`); a connection that arrives
        later is put into the idle list for the next checkout. The driver's
        own errors are raised here, as if the checkout had connected itself.
        """
        seconds = deadline - now
        result = call_within(
            lambda: self._open_reserved(seconds, checkout=True),
            seconds,
            self._undo_checkout,
            f"tether-connect-{self.name}",
        )
        if result is LATE:
            self._raise_timeout(None, connecting=True)
        assert isinstance(result, _Entry)
        return result

    def _undo_checkout(self, entry: _Entry) -> None:
        """Take back an entry counted as checked out that nobody took (a late connect)."""
        keep = False
        lock = self._lock
        lock.acquire()
        try:
            self._n_undone += 1
            if not self._closed and entry.gen == self._gen and len(self._idle) < self._idle_cap:
                entry.idle_since = monotonic()
                entry.fresh = self._fresh_on_checkin
                self._idle.append(entry)
                self._serve_waiters()
                keep = True
        finally:
            lock.release()
        if not keep:
            self._remove(entry, "pool closed" if self._closed else "maxcached")

    def _connect_in_background(self, waiter: _Waiter, seconds: float) -> None:
        """Open a connection in a reserved slot on a thread of its own, for the longest waiter.

        ``waiter`` is the checkout that reserved the slot: an error that is
        not the database's (a bad argument, a failing ``setsession``) is
        raised to it, as if it had connected itself.
        """
        thread = threading.Thread(
            target=self._connect_for_waiters,
            args=(waiter, seconds),
            name=f"tether-connect-{self.name}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no more threads (interpreter exit, a thread limit): here then
            self._connect_for_waiters(waiter, seconds)

    def _connect_for_waiters(self, waiter: _Waiter, seconds: float) -> None:
        """The body of a background connect: the new connection goes to the longest waiter."""
        # (`with`: no signal handler can run between the acquire and the block)
        with self._lock:
            if waiter.abandoned:
                return  # its checkout was interrupted before this ran: the slot went back
            waiter.claimed = True
        try:
            self._open_reserved(seconds, checkout=False, for_waiter=waiter)
        except PoolClosed:
            pass
        except BaseException as exc:
            told = waiter.error is exc or waiter.failed is exc
            if not told and not (isinstance(exc, Exception) and self._is_connect_error(exc)):
                # Served by a returned connection meanwhile: nobody to raise it to.
                self._log.warning(
                    "tether: pool %s: opening a connection failed: %s",
                    self.name,
                    self._error_text(exc),
                )

    def _pop_idle(self) -> _Entry | None:
        """The most recently returned idle entry, counted as checked out, or None."""
        try:
            entry = self._idle.pop()
        except IndexError:  # taken by a lock-free checkout since we looked
            return None
        next(self._checkouts)
        return entry

    def _validate(self, entry: _Entry, now: float, deadline: float) -> str | None:
        """Why ``entry`` may not be handed out (to be discarded), or None if it may.

        The ping may wait for the server until ``deadline`` at most (a
        blackholed server never answers); one that runs out of time discards
        the connection, and the checkout goes on with what is left. It
        raises what the check raises (:class:`~tether.steady.PingStatementError`,
        an interruption): the caller, which holds the entry, answers for it.
        """
        if now >= entry.expires_at:
            return "max_lifetime"
        last_seen_alive = max(entry.idle_since, entry.validated_at)
        if not entry.fresh and now - last_seen_alive >= self._ping_after:
            if entry.con.check(timeout=max(deadline - now, 0.0)) is False:
                return _PING_FAILED
            entry.validated_at = monotonic()
        return None

    def _reserve_if_room(
        self, *, reconnecting: bool = False, below_mincached: bool = False
    ) -> bool:
        """Reserve a slot if the pool is open, reachable and below maxconnections.

        ``reconnecting``: even though the pool is unreachable (the attempt to
        reach it again); ``below_mincached``: only while the pool has fewer
        than mincached connections (open or being opened).
        """
        lock = self._lock
        lock.acquire()
        try:
            ok = (
                not self._closed
                and (reconnecting or not self._unreachable)
                and self._has_room()
                and (not below_mincached or self._size < self._mincached)
            )
            if ok:
                self._reserve()
                self._coming += 1  # for the idle list (see _open_reserved)
            return ok
        finally:
            lock.release()

    def _arriving(self) -> bool:
        """Whether a connection nobody waits for is on its way to the idle list (under the lock).

        One the pool opens (mincached, a reconnect attempt) or validates: a
        non-blocking checkout of a pool that is full only of those waits for
        one (within ``checkout_timeout``) instead of being told that
        ``maxconnections`` connections are in use (found by the model test:
        size 1/1, in use 0, idle 0 while the maintenance thread refilled
        mincached after a discard).
        """
        return self._coming + self._checking > len(self._waiters)

    def _has_room(self) -> bool:
        """Whether one more connection may be opened (under the lock)."""
        return not self._maxconnections or self._size < self._maxconnections

    def _reserve(self) -> None:
        """Reserve a slot for a connection about to be opened (under the lock)."""
        self._size += 1
        self._opening += 1

    def _unreserve(self) -> None:
        """Give back a reserved slot that will not be used."""
        lock = self._lock
        lock.acquire()
        try:
            self._size -= 1
            self._opening -= 1
            self._size_dropped()
            self._serve_waiters()
        finally:
            lock.release()

    def _in_use(self) -> int:
        """Connections checked out (a shared one counts once). Under the lock."""
        checkouts = _count(self._checkouts) - self._n_undone
        return checkouts - _count(self._checkins) - self._extra_shares

    def _refusal(self, failed: BaseException | None) -> Exception:
        """The error for a non-blocking checkout that cannot be served now (under the lock)."""
        if self._unreachable or failed is not None:
            error = DatabaseUnreachable(
                f"pool {self.name}: database unreachable; not trying to connect while the pool"
                f" reconnects in the background (last error: {self._error_text(failed)})"
            )
            error.__cause__ = failed or self._last_error
            return error
        return TooManyConnectionsError(
            f"pool {self.name}: maxconnections ({self._maxconnections}) reached; {self._describe()}"
        )

    def _describe(self) -> str:
        """The pool's occupation, for error messages (under the lock)."""
        limit = self._maxconnections or "unlimited"
        return (
            f"size {self._size}/{limit}, in use {self._in_use()}, idle {len(self._idle)},"
            f" waiting {len(self._waiters)}"
        )

    def _error_text(self, failed: BaseException | None) -> str:
        error = failed or self._last_error
        return "none" if error is None else f"{type(error).__name__}: {error}".strip()

    def _dequeue(self, waiter: _Waiter) -> bool:
        """Take ``waiter`` out of the line; False if it was served already."""
        lock = self._lock
        lock.acquire()
        try:
            queued = waiter in self._waiters
            if queued:
                self._waiters.remove(waiter)
            return queued
        finally:
            lock.release()

    def _leave_line(self, waiter: _Waiter) -> None:
        """A waiter gives up its place, interrupted; what it was served goes back.

        A connection handed over, a slot granted to open one in, and the slot
        reserved for a connect made for it that has not begun (the connect
        then does nothing: ``abandoned``).
        """
        # (`with`: no signal handler can run between the acquire and the block)
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            entry, waiter.entry = waiter.entry, None
            freed = 0
            if waiter.grant:
                waiter.grant = False
                freed += 1
            if waiter.slot and not waiter.claimed and not waiter.abandoned:
                waiter.abandoned = True
                freed += 1
            if freed:
                self._size -= freed
                self._opening -= freed
                self._size_dropped()
                self._serve_waiters()
        if entry is not None:
            self._checkin(entry)  # served a connection nobody will use: give it back

    def _wait_ran_out(self, waiter: _Waiter, failed: BaseException | None) -> None:
        """A waiter's deadline passed: raise the timeout, unless it was served meanwhile."""
        if self._dequeue(waiter):
            # A connect made for us and still under way: the database did
            # not answer in time, whatever the connect will say later.
            self._raise_timeout(failed, connecting=waiter.connecting)
        # Served while timing out: the caller takes what was given.

    def _raise_timeout(self, failed: BaseException | None, connecting: bool = False) -> NoReturn:
        lock = self._lock
        lock.acquire()
        try:
            self._n_timeouts += 1
            unreachable = self._unreachable or failed is not None or connecting
            cause = failed or self._last_error
            described = self._describe()
        finally:
            lock.release()
        timeout = self._timeout
        error: Exception
        if unreachable:
            reason = "database unreachable"
            last = (
                "the database did not answer in time (a connect or ping did not finish in time)"
                if connecting and cause is None
                else f"last connect error: {self._error_text(failed)}"
            )
            error = UnreachableTimeout(
                f"pool {self.name}: database unreachable: no connection within {timeout:g} s"
                f" (checkout_timeout); {last}",
                pool=self.name,
                timeout=timeout,
            )
        else:
            reason = "pool exhausted"
            error = PoolExhausted(
                f"pool {self.name}: pool exhausted: no connection within {timeout:g} s"
                f" (checkout_timeout); {described}",
                pool=self.name,
                timeout=timeout,
            )
        # Not logged: the caller gets the error (a log line per timeout floods under load).
        if self._on_event is not None:
            emit(self._on_event, self._log, "timeout", self.name, None, reason)
        if unreachable:
            raise error from cause
        raise error

    def _observe_checkout(self, entry: _Entry, start: float | None = None) -> None:
        """Note when (and where) ``entry`` was taken; ``start``: when its checkout began."""
        now = entry.taken_at = monotonic()
        if self._leak_threshold is not None:
            entry.stack = capture_stack()
        if self._on_event is not None:
            waited = 0.0 if start is None else now - start  # None: the lock-free hot path
            emit(self._on_event, self._log, "checkout", self.name, entry.con, "", waited)

    # -- opening ----------------------------------------------------------------------------

    def _connect(self, seconds: float) -> SteadyBase:
        """A new steady connection whose connect may take at most ``seconds``."""
        kwargs = self._adapter.set_timeouts(dict(self._kwargs), max(seconds, 0.001))
        con = self._new_connection(kwargs)
        # Later reopens of this steady connection use the user's own arguments.
        con.connect_kwargs = self._kwargs
        return con

    def _expiry(self, now: float) -> float:
        """When a connection opened ``now`` reaches its lifetime (with up to 10 % jitter)."""
        if self._max_lifetime is None:
            return _INF
        return now + self._max_lifetime * (1.0 - 0.1 * random.random())

    def _is_connect_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be reached (not a programming error).

        Never one of tether's own errors: a ``ConfigurationError`` (a refused
        login) is not an outage, and the generic adapter's ``base_error``
        (any ``Exception``, for a creator whose driver is not known yet, such
        as SQLAlchemy's) matched it: found by an outside attack, a wrong
        password behind ``TetherPool`` was retried in the background.
        """
        return isinstance(exc, (self._adapter.base_error, OSError)) and not isinstance(
            exc, TetherError
        )

    def _open_reserved(
        self, seconds: float, *, checkout: bool, for_waiter: _Waiter | None = None
    ) -> _Entry:
        """Open a connection in a slot reserved before; give the slot back if that fails.

        The connect may take at most ``seconds``. With ``checkout`` the new
        entry is counted as checked out, else it is put into the idle list
        (where a waiter may take it at once). ``for_waiter``: the checkout
        this connect is made for (see _connect_in_background); told of a
        failure before anybody else is served, so the freed slot is not
        granted back to it.
        """
        started = monotonic()  # for the connect event's duration
        try:
            con = self._connect(seconds)
        except BaseException as exc:
            lock = self._lock
            lock.acquire()
            try:
                self._size -= 1
                self._opening -= 1
                if not checkout and for_waiter is None:
                    self._coming -= 1
                self._size_dropped()
                newly = refused = False
                connect_error = isinstance(exc, Exception) and self._is_connect_error(exc)
                if connect_error:
                    self._n_connect_errors += 1
                    newly = self._set_unreachable(exc)
                elif isinstance(exc, ConfigurationError):
                    # Not an outage: the server answered. Whoever waits for a
                    # new connection tries (and is told) now, nothing retries
                    # in the background.
                    self._n_connect_errors += 1
                    refused = self._config_error is None
                    self._config_error = self._last_error = exc
                    self._unreachable = False
                if for_waiter is not None:
                    for_waiter.connecting = False
                    if for_waiter in self._waiters:
                        # As if it had connected itself: the database's error
                        # puts it back in line (the pool is unreachable now);
                        # any other error is raised to it.
                        self._waiters.remove(for_waiter)
                        if connect_error:
                            for_waiter.failed = exc
                        else:
                            for_waiter.error = exc
                        for_waiter.lock.release()
                self._serve_waiters()
            finally:
                lock.release()
            if refused:
                self._log.error(
                    "tether: pool %s: %s; not retrying in the background", self.name, exc
                )
            if newly:
                self._log.warning(
                    "tether: pool %s cannot connect (%s); reconnecting in the background",
                    self.name,
                    self._error_text(exc),
                )
                if self._on_event is not None:
                    emit(self._on_event, self._log, "unreachable", self.name, None, str(exc))
                self._wake()
            raise
        if self._adapter.refinable and con.adapter is not self._adapter:
            self._refine(con.adapter)
        if self._proxy._forwards is not type(con):
            self._forward_to(con)
        now = monotonic()
        entry = _Entry(con, now, self._expiry(now), self._gen)
        entry.fresh = self._fresh_on_checkin
        entry.on_lost = _lost_callback(self, entry)
        lock = self._lock
        lock.acquire()
        try:
            recovered = False
            closed = self._closed or entry.gen != self._gen
            ours = entry.gen == self._gen
            if ours and not checkout and for_waiter is None:
                self._coming -= 1
            if closed:
                if ours:
                    self._size -= 1
                    self._opening -= 1
                    self._closing += 1  # close(timeout) waits for the close below
            else:
                if for_waiter is not None:
                    for_waiter.connecting = False
                self._opening -= 1
                self._n_opened += 1
                self._entries[id(con)] = entry
                recovered = self._unreachable
                self._unreachable = False
                self._reconnect_attempts = 0
                self._config_error = None
                if checkout:
                    next(self._checkouts)
                else:
                    self._idle.append(entry)
                self._serve_waiters()
        finally:
            lock.release()
        if closed:
            try:
                con.retire()
            finally:
                if ours:
                    self._closed_one()
            raise PoolClosed(f"pool {self.name} was closed while connecting")
        if recovered:
            self._log.warning("tether: pool %s can connect again", self.name)
        if self._on_event is not None:
            emit(self._on_event, self._log, "connect", self.name, con, "", now - started)
            if recovered:
                emit(self._on_event, self._log, "reachable", self.name, con)
        return entry

    def _refine(self, adapter: DriverAdapter) -> None:
        """Use the adapter of the driver the creator's connections turned out to belong to.

        A creator tether could not place (a lambda, a wrapper) starts with the
        generic adapter; steady refines it from the first connection, and the
        pool follows, so its transaction reads and session resets are the
        driver's own (a generic reset_session only rolls back).
        """
        if not adapter.refinable:
            self._adapter = adapter
            self._log.info(
                "tether: pool %s: the creator's connections are %s's: using its driver adapter",
                self.name,
                adapter.name,
            )

    def _set_unreachable(self, exc: BaseException) -> bool:
        """Enter (or stay in) the unreachable state; True when newly entered. Under the lock."""
        self._last_error = exc
        if self._unreachable:
            return False
        self._unreachable = True
        self._reconnect_attempts = 0
        self._reconnect_at = monotonic()
        return True

    # -- checkin ----------------------------------------------------------------------------

    def _checkin(self, entry: _Entry) -> None:
        """Take a connection back: reset it if need be, then keep it for the next checkout."""
        entry.ref = None  # closed properly: its proxy's death means nothing now
        if self._checkin_work:
            self._checkin_slow(entry)
            return
        con = entry.con
        # Idle: the borrower's cursors stop working and settings it changed are
        # set back, in one call (no driver read when its last statement left it
        # idle in autocommit mode, no round trip when it changed no setting).
        try:
            released = con.finish_checkout()
        except Exception as exc:
            self._checkin_slow(entry, clean=True, reason=self._restore_failed(con, exc))
            return
        if not released:
            if not con.connected:
                self._checkin_slow(entry)
                return
            # Every request on a non-autocommit connection that did not
            # commit ends here. The rollback is a round trip, made with no
            # lock held; after it the connection goes back the lock-free way.
            # (A session lost inside the transaction lost its work already,
            # and the borrower got the driver's error: nothing to warn about.
            # Nor about a rollback made only because the driver cannot tell
            # and the borrower went past tether: needs_rollback(), a maybe.)
            known = con.transaction_open()  # read once: the warning and the reset's
            if known and not con.session_lost:
                self._warn_rollback()
            reason = self._reset_connection(con, known)
            if reason is not None:
                self._checkin_slow(entry, clean=True, reason=reason)
                return
            try:
                con.end_checkout()
            except Exception as exc:
                self._checkin_slow(entry, clean=True, reason=self._restore_failed(con, exc))
                return
        now = monotonic()
        # Without maxcached there is no need to count: a close() racing with
        # this checkin is caught right after the append.
        maxcached = self._maxcached
        if now < entry.expires_at and (not maxcached or len(self._idle) < self._idle_cap):
            if self._waiters and self._hand_over(entry, now):
                return
            entry.idle_since = now
            entry.fresh = self._fresh_on_checkin
            next(self._checkins)
            self._idle.append(entry)
            # Appended first, looked second: a waiter that queued meanwhile is
            # seen here, or sees the connection itself (see _checkout_slow).
            if self._waiters or self._closed:
                self._after_checkin()
            return
        self._checkin_slow(entry, clean=True)

    def _hand_over(self, entry: _Entry, now: float) -> bool:
        """Give a checked-in ``entry`` straight to the longest waiter; False if none is left.

        A checkin that sees waiters takes the lock anyway (to serve them), so
        it hands the connection over itself instead of putting it in the idle
        list for ``_serve_waiters`` to take out again: a pool above its size
        does this on every checkin.
        """
        lock = self._lock
        lock.acquire()
        try:
            if not self._waiters or self._closed:
                return False
            self._give_to_waiter(entry, now)
            return True
        finally:
            lock.release()

    def _give_to_waiter(self, entry: _Entry, now: float) -> None:
        """Hand a just-returned ``entry`` to the longest waiter (under the lock; one waits)."""
        next(self._checkins)
        next(self._checkouts)
        entry.idle_since = entry.validated_at = now
        entry.fresh = self._fresh_on_checkin  # as any checkin (ping_after=0: pinged)
        waiter = self._waiters.popleft()
        waiter.entry = entry
        waiter.lock.release()

    def _after_checkin(self) -> None:
        """A checkin saw waiters, or a closed pool: settle it under the lock."""
        closing: list[_Entry] = []
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                closing = self._drain_idle()
            else:
                self._serve_waiters()
        finally:
            lock.release()
        for entry in closing:
            self._remove(entry, "pool closed")

    def _drain_idle(self) -> list[_Entry]:
        """Take every idle entry out, one atomic pop at a time (safe against lock-free pops)."""
        taken = []
        while True:
            try:
                taken.append(self._idle.popleft())
            except IndexError:
                return taken

    def _checkin_slow(self, entry: _Entry, clean: bool = False, reason: str | None = None) -> None:
        """The checkin with everything: hook, reset, hand-off to a waiter, retirement.

        ``clean``: the connection needs no reset (any was done); ``reason``:
        why it must not be reused.
        """
        con = entry.con
        if self._observed:
            self._observe_checkin(entry)
        if not clean:
            known = con.transaction_open()
            if (known or con.needs_rollback()) and not con.session_lost:
                if known:  # (not for a maybe, see _checkin)
                    self._warn_rollback()
                reason = self._reset_connection(con, known)
            elif self._reset.always:
                reason = self._reset_connection(con)
            elif not con.connected:
                reason = "lost"
        # Shrunk by resize() below what is open: the first connections to come
        # back are closed until the pool fits (checkins come here meanwhile,
        # see _size_dropped); never one still held by its borrower.
        if (
            reason is None
            and self._over_limit
            and self._remove(entry, "resized", checked_out=True, checkin=True, if_over_limit=True)
        ):
            return
        if reason is None:
            try:
                con.end_checkout()
            except Exception as exc:
                reason = self._restore_failed(con, exc)
        now = monotonic()
        lock = self._lock
        lock.acquire()
        try:
            if reason is None and now < entry.expires_at and not self._closed:
                if self._waiters:  # straight to the longest waiter: nobody can barge in
                    self._give_to_waiter(entry, now)
                    return
                entry.idle_since = entry.validated_at = now
                if len(self._idle) < self._idle_cap:
                    next(self._checkins)
                    entry.fresh = self._fresh_on_checkin
                    self._idle.append(entry)
                    return
                reason = "maxcached"
        finally:
            lock.release()
        if reason is None:
            reason = "max_lifetime" if now >= entry.expires_at else "pool closed"
        self._remove(entry, reason, checked_out=True, checkin=True)

    def _discard(self, entry: _Entry) -> None:
        """Take back a checked-out connection and close it (``PooledConnection.discard``).

        Its slot is freed at once (the longest waiter may open a new
        connection in it); the driver connection is never handed out again.
        """
        entry.ref = None  # given back properly: its proxy's death means nothing now
        if self._observed:
            self._observe_checkin(entry)
        self._remove(entry, "discarded", checked_out=True, checkin=True)

    def _detach(self, entry: _Entry) -> None:
        """Let a checked-out connection go for good (``PooledConnection.detach``).

        The pool forgets it: its slot is free at once (the longest waiter may
        open a new connection in it), it counts as given back (``checkins``)
        and as ``detached``, never as closed, and the maintenance thread does
        not look at it again. From now on its borrower owns it: its
        ``close()`` really closes it.
        """
        entry.ref = None  # its proxy's death no longer concerns the pool
        entry.stack = None
        con = entry.con
        refill = False
        lock = self._lock
        lock.acquire()
        try:
            ours = entry.gen == self._gen
            if ours:
                next(self._checkins)
                self._size -= 1
                self._entries.pop(id(con), None)
                self._n_detached += 1
                self._size_dropped()
                self._serve_waiters()
                refill = not self._closed and self._size < self._mincached
        finally:
            lock.release()
        object.__setattr__(con, "_closeable", True)  # a plain steady connection now
        if ours and self._on_event is not None:
            emit(self._on_event, self._log, "detach", self.name, con)
        if refill:
            self._wake()

    def _reset_connection(self, con: SteadyBase, known: bool | None = None) -> str | None:
        """Reset ``con`` per the policy; None if it may be reused, else why not.

        ``known``: ``con.transaction_open()``, when the caller read it already.
        """
        try:
            # The adapter its driver turned out to need; the rollback bounded as a checkout is.
            self._reset.run(con, con.adapter, self._timeout, known)
        except RollbackTimeout as exc:
            self._log.warning(
                "tether: pool %s: a returned %s connection: %s", self.name, self._adapter.name, exc
            )
            return "lost"
        except Exception as exc:
            if not con.connected:
                return "lost"
            self._log.warning(
                "tether: pool %s: resetting a returned %s connection failed (%s); discarding it",
                self.name,
                self._adapter.name,
                self._error_text(exc),
            )
            return "reset failed"
        return None

    def _warn_rollback(self) -> None:
        """Say that a connection came back with its transaction open: its work is lost.

        ``with pool.connection() as db:`` commits on success, so this is a
        connection closed (or collected) with uncommitted work: silent loss, as
        psycopg_pool warns too. Once per place in the program that gave it back,
        so a loop does not flood the log.
        """
        try:
            # Where close() was called from, in the usual case (this method, the
            # checkin, the proxy's close): a call site seen before is known by its
            # code object and offset alone, before any module name is looked at
            # (measured: that look cost ~5,000 instructions a checkin of the bench's
            # autocommit-off request).
            frame: Any = sys._getframe(3)
        except ValueError:
            frame = None
        if frame is not None:
            code = frame.f_code
            if self._warned_calls.get((id(code), frame.f_lasti)) is code:
                return
        frame = _caller_frame(3)  # past this method and the checkin that called it
        if frame is not None:
            code = frame.f_code
            key = (id(code), frame.f_lasti)
            if self._warned_calls.get(key) is code:
                return  # this very call site warned (or was found to) before
            if len(self._warned_calls) < 1000:
                self._warned_calls[key] = code
            site = f"{code.co_filename}:{frame.f_lineno}"
        else:
            site = "an unknown place"
        if site in self._warned_sites:
            return
        if len(self._warned_sites) < 1000:
            self._warned_sites.add(site)
        self._log.warning(
            "tether: pool %s: a connection was given back with its transaction open, at %s;"
            " rolling it back (commit first, or use 'with pool.connection() as db:', which"
            " commits). Logged once for this place.",
            self.name,
            site,
        )

    def _restore_failed(self, con: SteadyBase, exc: Exception) -> str:
        """Why a connection whose driver settings could not be set back is not reused."""
        if not con.connected:
            return "lost"
        self._log.warning(
            "tether: pool %s: setting back the driver settings of a returned %s connection"
            " failed (%s); discarding it",
            self.name,
            self._adapter.name,
            self._error_text(exc),
        )
        return "reset failed"

    def _observe_checkin(self, entry: _Entry) -> None:
        entry.stack = None
        if self._on_event is not None:
            held = monotonic() - entry.taken_at if entry.taken_at >= 0 else 0.0
            emit(self._on_event, self._log, "checkin", self.name, entry.con, "", held)

    def _remove(
        self,
        entry: _Entry,
        reason: str,
        *,
        checked_out: bool = False,
        checkin: bool = False,
        if_over_limit: bool = False,
    ) -> bool:
        """Close a connection the pool gives up (for ``reason``) and free its slot.

        ``checked_out``: it was counted as checked out; ``checkin``: this is
        its checkin (else a checkout being undone, which is not counted).
        ``if_over_limit``: only if the pool has more connections than
        ``maxconnections`` (after a :meth:`resize`); returns whether it was removed.
        """
        lock = self._lock
        lock.acquire()
        try:
            if if_over_limit and entry.gen == self._gen and not self._over():
                return False
            ours, refill = self._forget(entry, reason, checked_out, checkin)
        finally:
            lock.release()
        self._close_forgotten(entry, reason, ours, refill)
        return True

    def _forget(
        self, entry: _Entry, reason: str, checked_out: bool = False, checkin: bool = False
    ) -> tuple[bool, bool]:
        """The bookkeeping half of :meth:`_remove`, under the lock: (ours, refill).

        The slot is free as soon as this returns; the caller closes the driver
        connection afterwards, without the lock (:meth:`_close_forgotten`).
        """
        ours = entry.gen == self._gen  # else inherited from the parent: not ours to count
        if not ours:
            return False, False
        if checked_out:
            if checkin:
                next(self._checkins)
            else:
                self._n_undone += 1
        self._size -= 1
        self._closing += 1  # until the driver connection is closed: close(timeout) waits
        self._entries.pop(id(entry.con), None)
        self._n_closed += 1
        if reason in _BROKEN:
            self._n_discarded += 1
        self._size_dropped()
        self._serve_waiters()
        return True, not self._closed and self._size < self._mincached

    def _close_forgotten(self, entry: _Entry, reason: str, ours: bool, refill: bool) -> None:
        """The closing half of :meth:`_remove`: the driver's close, logs, events; no lock."""
        con = entry.con
        try:
            con.retire()
        finally:
            if ours:
                self._closed_one()
        if not ours:
            return
        broken = reason in _BROKEN
        if broken:
            self._log.info("tether: pool %s discarded a connection: %s", self.name, reason)
        if self._on_event is not None:
            kind: EventKind = "discard" if broken else "close"
            emit(self._on_event, self._log, kind, self.name, con, reason)
        if refill or (broken and self._unreachable):
            self._wake()

    def _closed_one(self) -> None:
        """A driver connection the pool forgot is closed now (see ``_closing``)."""
        lock = self._lock
        lock.acquire()
        try:
            self._closing -= 1
            self._size_dropped()
        finally:
            lock.release()

    def _over(self) -> bool:
        """Whether the pool holds more connections than ``maxconnections`` (under the lock)."""
        return bool(0 < self._maxconnections < self._size)

    def _size_dropped(self) -> None:
        """After ``_size`` or ``_closing`` went down (under the lock).

        Ends a shrink once the pool fits its new limit (checkins take the hot
        path again), and wakes a ``close(timeout)`` once a closed pool has
        nothing open, opening or closing.
        """
        if self._over_limit and not self._over():
            self._over_limit = False
            self._checkin_work = self._observed or self._reset.always
        drained = self._drained
        if drained is not None and self._size == 0 and self._closing == 0:
            drained.set()

    def _serve_waiters(self) -> None:
        """Give idle connections, or grants to open one, to waiters, oldest first.

        Called under the lock after every change that may let a waiter go on.
        """
        waiters = self._waiters
        while waiters:
            entry = self._pop_idle() if self._idle else None
            if entry is not None:
                waiter = waiters.popleft()
                waiter.entry = entry  # its own fresh flag says whether the waiter pings it
            elif (
                not self._unreachable
                and not self._closed
                and self._has_room()
                and self._opening < self._max_connecting
            ):
                waiter = waiters.popleft()
                self._reserve()
                waiter.grant = True
            else:
                return
            waiter.lock.release()

    # -- shared connections ---------------------------------------------------------------

    def _checkout_shared(self) -> PooledConnection:
        """A share of the least shared connection not in a transaction, or a new shared one."""
        best: _Entry | None = None
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise PoolClosed(f"pool {self.name} is closed")
            shared = self._shared
            if len(shared) >= self._maxshared or not (
                (self._idle or self._has_room()) and not self._waiters and not self._unreachable
            ):
                for candidate in shared:
                    if (best is None or candidate.shares < best.shares) and not (
                        candidate.con.transaction_open()
                    ):
                        best = candidate
                if best is not None:
                    best.shares += 1
                    next(self._checkouts)
                    self._extra_shares += 1
        finally:
            lock.release()
        if best is not None:
            return self._share(best)
        entry = self._checkout_slow(None, monotonic())
        lock.acquire()
        try:
            share = (
                not self._closed
                and len(self._shared) < self._maxshared
                and not entry.con.transaction_open()
            )
            if share:
                entry.shares = 1
                self._shared.append(entry)
        finally:
            lock.release()
        return self._share(entry) if share else self._dedicated(entry)

    def _share(self, entry: _Entry) -> PooledConnection:
        proxy = _new(self._shared_proxy)
        proxy._pool = self
        proxy._entry = entry
        proxy._con = entry.con
        return proxy

    def _unshare(self, entry: _Entry) -> None:
        """Give back one share; the last one gives the connection back to the pool."""
        lock = self._lock
        lock.acquire()
        try:
            if entry.gen != self._gen:  # inherited from the parent process
                return
            entry.shares -= 1
            last = entry.shares <= 0
            if last:
                self._shared.remove(entry)
            else:
                next(self._checkins)
                self._extra_shares -= 1
        finally:
            lock.release()
        if last:
            self._checkin(entry)

    # -- connections given back by the garbage collector -----------------------------------

    def _orphaned(self, entry: _Entry) -> None:
        """A proxy was garbage-collected still holding ``entry``: log it and take it back."""
        if entry.gen != self._gen:
            return  # inherited from the parent process
        self._n_leaks += 1
        # One line per leaking place (its checkout stack, when leak_threshold keeps
        # it) and minute, not per leak: a leak in a request handler would flood the
        # log. stats()["leaks"] counts them all.
        site = format_stack(entry.stack)
        now = monotonic()
        last, hidden = self._leak_log.get(site, (-_INF, 0))
        if now - last < _LEAK_LOG_INTERVAL:
            self._leak_log[site] = (last, hidden + 1)
        else:
            if len(self._leak_log) < 1000 or site in self._leak_log:
                self._leak_log[site] = (now, 0)
            self._log.warning(
                "tether: pool %s: a pooled connection was garbage-collected without being"
                " closed; it is given back to the pool. Close it, or use 'with pool.connection()"
                " as db:'.%s It was checked out at:\n%s",
                self.name,
                f" ({hidden} more from here since the last such line.)" if hidden else "",
                site,
            )
        if self._on_event is not None:
            emit(self._on_event, self._log, "leak", self.name, entry.con, "garbage-collected")
        # The collector may run in a thread that holds our lock (any allocation
        # can trigger it): never block on the lock here.
        if self._lock.acquire(False):
            self._lock.release()
            self._give_back(entry)
        else:
            self._orphans.append(entry)
            self._wake()

    def _give_back(self, entry: _Entry) -> None:
        if entry.shares:
            self._unshare(entry)
        else:
            self._checkin(entry)

    def _drain_orphans(self) -> None:
        while True:
            try:
                entry = self._orphans.popleft()
            except IndexError:
                return
            self._give_back(entry)

    # -- maintenance ------------------------------------------------------------------------

    def _needs_maintenance(self) -> bool:
        return bool(
            self._mincached
            or 0 < self._ping_after < _INF  # fresh flags to clear
            or self._max_lifetime
            or self._max_idle
            or self._leak_threshold
            or self._validate_interval
        )

    def _wake(self) -> None:
        """Start the maintenance thread if need be, and make it run a round now."""
        maintenance = self._maintenance
        if self._closed or self._constructing:
            if maintenance is not None:
                maintenance.wake()
            return
        if maintenance is None or not maintenance.alive():
            from .maintenance import Maintenance

            maintenance = self._maintenance = Maintenance(self)
            maintenance.start()
        maintenance.wake()

    # -- closing ----------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Close the pool: idle connections now, those in use when they are given back.

        Blocked checkouts fail with :class:`~tether.pooled.errors.PoolClosed`
        at once, and so does every later one. A borrowed connection is never
        closed under its borrower: it is closed when given back.

        ``timeout`` (seconds, or None: do not wait): also wait up to that long
        for the borrowed connections to come back and be closed, as
        psycopg_pool's ``close(timeout)`` does. It returns, never raises,
        when the time is up: whatever is still out is logged at WARNING and
        closed when given back, and ``stats()["in_use"]`` says how many. So a
        shutdown can give requests in flight a few seconds to finish. Closing
        twice is harmless; a second ``close(timeout)`` waits as the first.
        """
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        deadline = monotonic() + timeout if timeout is not None else _INF
        idle: list[_Entry] = []
        drained: threading.Event | None = None
        first = False
        lock = self._lock
        lock.acquire()
        try:
            if not self._closed:
                first = True
                self._closed = True
                self._idle_cap = 0
                idle = self._drain_idle()
                for waiter in self._waiters:
                    waiter.error = PoolClosed(f"pool {self.name} was closed")
                    waiter.lock.release()
                self._waiters.clear()
            if timeout is not None and (self._size or self._closing):
                # Set by _size_dropped once nothing is open, opening or closing.
                drained = self._drained
                if drained is None:
                    drained = self._drained = threading.Event()
        finally:
            lock.release()
        for entry in idle:
            self._remove(entry, "pool closed")
        if first:
            self._wake()  # the maintenance thread sees the pool closed and ends
        if drained is not None and not drained.wait(max(deadline - monotonic(), 0.0)):
            self._log.warning(
                "tether: pool %s closed with %d connection(s) still checked out after"
                " %g s (close timeout); they are closed when given back",
                self.name,
                self.stats()["in_use"],
                timeout,
            )

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with PooledDB(...) as pool:`` closes the pool when the block ends."""
        self.close()

    def resize(self, *, maxconnections: Any = _UNSET, mincached: Any = _UNSET) -> None:
        """Change ``maxconnections`` and/or ``mincached`` while the pool runs.

        Checked as the constructor checks them (an int >= 0, None for 0; 0
        for maxconnections: no limit); as in the constructor a ``maxcached``
        below the new ``mincached`` is raised to it. ``stats()`` shows the
        new limits at once.

        Growing serves threads blocked in a checkout at once (each gets a
        slot to open a connection in, ``max_connecting`` at a time), and a
        larger ``mincached`` is filled by the maintenance thread. Shrinking
        ``maxconnections`` closes idle connections above the new limit now,
        coldest first, and retires connections in use as they are given back
        until the pool fits; a borrowed connection is never closed under its
        borrower. Meanwhile no new connection is opened, so waiters are
        served by connections given back once the pool fits. A smaller
        ``mincached`` only lets more idle connections go (``max_idle``).
        Raises :class:`~tether.pooled.errors.PoolClosed` on a closed pool.
        """
        new_max = (
            self._maxconnections
            if maxconnections is _UNSET
            else check_count("maxconnections", maxconnections)
        )
        new_min = self._mincached if mincached is _UNSET else check_count("mincached", mincached)
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise PoolClosed(f"pool {self.name} is closed")
            self._maxconnections, self._mincached = new_max, new_min
            asked_now: dict[str, int] = {}
            if maxconnections is not _UNSET:
                asked_now["maxconnections"] = new_max
            if mincached is not _UNSET:
                asked_now["mincached"] = new_min
            self._options = self._options.replace(**asked_now)
            asked = self._maxcached_asked
            self._maxcached = max(asked, new_min) if asked else 0
            self._idle_cap = self._maxcached or sys.maxsize
            if self._over():
                self._over_limit = True
                self._checkin_work = True  # every checkin looks: see _checkin_slow
            else:
                self._size_dropped()  # grown back before a shrink was done: ends it
            self._serve_waiters()
            wake = bool(new_min) or self._over_limit or bool(self._maxcached)
        finally:
            lock.release()
        self._shed_idle()
        if wake:  # refill mincached, retire idle above maxcached or the new limit
            self._wake()

    def _shed_idle(self) -> None:
        """Close idle connections, coldest first, while the pool is over ``maxconnections``.

        Each is taken out and its slot freed under the lock, one decision at a
        time, so concurrent checkins retiring themselves never overshoot;
        the closes run after it.
        """
        shed: list[tuple[_Entry, bool, bool]] = []
        lock = self._lock
        lock.acquire()
        try:
            while self._over():
                try:
                    entry = self._idle.popleft()  # atomic against lock-free checkouts
                except IndexError:
                    break
                shed.append((entry, *self._forget(entry, "resized")))
        finally:
            lock.release()
        for entry, ours, refill in shed:
            self._close_forgotten(entry, "resized", ours, refill)

    def close_idle(self) -> int:
        """Close every idle connection now and return how many; those in use are untouched.

        For an application that knows its idle sessions are no longer wanted
        (after a burst, before the database is taken down for maintenance).
        The pool stays open: the next checkout opens a new connection, and
        the maintenance thread refills ``mincached``. Each connection is
        closed outside the lock, like every close.
        """
        idle = self._drain_idle()
        for entry in idle:
            self._remove(entry, "close_idle")
        return len(idle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- introspection ----------------------------------------------------------------------

    @property
    def options(self) -> PoolOptions:
        """The pool's settings, checked, as one read-only :class:`PoolOptions`.

        As given (``maxconnections``... as asked, before DBUtils' rule raises
        one limit to another); :meth:`resize` changes the limits it is given
        here too. ``PooledDB.from_options(creator, pool.options, ...)`` makes a
        pool like it, the constructor's rule applied again (a ``maxconnections``
        resized below ``maxcached`` is raised to it there, as in the constructor).
        """
        return self._options

    def stats(self) -> PoolStats:
        """A snapshot of the pool's state and counters, as a plain dict (typed: PoolStats).

        ``size`` is the number of open connections (``idle + in_use`` plus
        any the maintenance thread is validating); ``opening`` those being
        opened. Once the pool is quiet, ``checkouts == checkins`` and
        ``opened - closed - detached == size``; ``closed`` counts every
        connection the pool closed, ``discarded`` those of them that were
        broken, ``detached`` those given away by ``detach()``. The limits
        (``maxconnections``, ``mincached``, ``maxcached``) are the current
        ones (see :meth:`resize`). Each share
        of a shared connection counts as a checkout. ``waits`` counts the
        checkouts that had to queue and were then served, and the wait
        times are theirs, in seconds; one that ran out of time counts in
        ``timeouts`` instead.
        """
        lock = self._lock
        lock.acquire()
        try:
            return {
                "name": self.name,
                "pool_closed": self._closed,
                "size": self._size - self._opening,
                "idle": len(self._idle),
                "in_use": self._in_use(),
                "shared": len(self._shared),
                "opening": self._opening,
                "waiting": len(self._waiters),
                "maxconnections": self._maxconnections,
                "mincached": self._mincached,
                "maxcached": self._maxcached,
                "unreachable": self._unreachable,
                "checkouts": _count(self._checkouts) - self._n_undone,
                "checkins": _count(self._checkins),
                "timeouts": self._n_timeouts,
                "opened": self._n_opened,
                "closed": self._n_closed,
                "discarded": self._n_discarded,
                "detached": self._n_detached,
                "connect_errors": self._n_connect_errors,
                "leaks": self._n_leaks,
                "waits": self._n_waits,
                "wait_time_total": self._wait_total,
                "wait_time_max": self._wait_max,
            }
        finally:
            lock.release()

    def cache(self, con: Any) -> None:
        """Give back a steady connection taken with ``pooled_connection()`` (as DBUtils)."""
        entry = self._entries.get(id(con))
        if entry is None or entry.con is not con:
            if isinstance(con, PooledConnection):
                con.close()
                return
            raise ValueError("cache: this connection does not belong to the pool")
        self._checkin(entry)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._size} connections"
        return f"<{type(self).__name__} {self.name!r} {self._adapter.name}, {state}>"

    # -- fork -------------------------------------------------------------------------------

    def _after_fork_in_child(self, abandon: Callable[[SteadyBase], None]) -> None:
        """In a forked child: forget every inherited connection without touching its socket.

        Called by :mod:`tether.pooled.fork` with the pool lock held by the
        forking thread (so the lists are consistent); a new lock replaces it.
        Inherited connections still checked out are dropped when given back.
        """
        for entry in self._entries.values():
            abandon(entry.con)
            entry.expires_at = -_INF  # off the checkin hot path, to _remove, which drops it
        self._gen += 1
        self._lock = threading.Lock()
        self._idle = deque()
        self._shared = []
        self._waiters = deque()
        self._spare_waiters = []
        self._entries = {}
        self._orphans = deque()
        self._size = self._opening = self._checking = self._closing = self._coming = 0
        self._drained = None
        self._over_limit = False
        self._checkin_work = self._observed or self._reset.always
        self._unreachable = False
        self._last_error = self._config_error = None
        self._maintenance = None
        self._reset_counters()
        if self._needs_maintenance() and not self._closed:
            self._wake()


def _lost_callback(pool: Pool, entry: _Entry) -> Callable[[weakref.ref[PooledConnection]], None]:
    """The weakref callback that takes ``entry`` back when its proxy is collected unclosed.

    It holds the pool and the entry weakly: the entry keeps it (``on_lost``),
    and a strong reference back would be a cycle that leaves every connection
    the pool lets go of, and its driver objects, to the garbage collector
    (found by an outside attack). The pool's table of entries holds each one
    while it is the pool's; a collected proxy calls this before its own
    reference to the entry goes.
    """
    pool_ref = _ref(pool)
    entry_ref = _ref(entry)

    def lost(proxy_ref: weakref.ref[PooledConnection]) -> None:
        pool = pool_ref()
        entry = entry_ref()
        if pool is not None and entry is not None and entry.ref is proxy_ref:
            entry.ref = None
            try:
                pool._orphaned(entry)
            except Exception:  # at interpreter exit anything may be gone already
                pass

    return lost


def _caller_frame(depth: int = 1) -> Any:
    """The innermost frame outside tether (where a connection was given back), or None.

    ``depth``: how many frames up to start looking (1: the caller's), past frames
    known to be tether's; the frames from there are still checked one by one.
    """
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:  # a shallower stack than expected: start at the caller
        frame = sys._getframe(1)
    while frame is not None:
        if not str(frame.f_globals.get("__name__", "")).startswith("tether."):
            return frame
        frame = frame.f_back
    return None


def _count(counter: itertools.count[int]) -> int:
    """How many times ``next()`` was called on ``counter`` (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])
