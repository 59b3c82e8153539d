"""Persistent connections: each thread keeps one steady connection for its whole life.

Why thread affinity
-------------------
A threaded server (a WSGI server, a worker pool) runs each request on one of
a fixed set of threads. If every thread keeps its own database connection
open, a request needs no connect (milliseconds) and no pool either: no lock
to borrow a connection, no queue to wait in, no connection handed from one
thread to another. Getting "the connection" is a thread-local lookup::

    persist = PersistentDB(psycopg, dbname="app")   # nothing is opened yet

    def handle_request():
        db = persist.connection()   # this thread's connection (opened on first use)
        with db.cursor() as cur:
            cur.execute("SELECT ...")
        db.commit()

A connection only ever used by the thread that opened it cannot be used by
two threads at once, so this works even for drivers whose connections are
not thread-safe. The connections are steady (:mod:`tether.steady`): when the
database restarts between two requests, the next statement runs on a new
connection, as long as no transaction was open.

The rules
---------
* A thread's connection is opened by its first :meth:`~PersistentDB.connection`
  call and reused by every later one; no other thread ever gets it.
* ``db.close()`` is ignored (unless ``closeable``): the connection stays open
  for the thread's next request. It does roll back a transaction left open.
* A request that forgets to commit must not leave its transaction to the
  next one. A transaction left open (by ``begin()``, or implicitly by
  statements without a commit) is rolled back when the thread closes its
  connection, and at the latest when the thread asks for it again while
  nothing else refers to it any more: the previous request is over, so its
  uncommitted work is abandoned. (A nested ``connection()`` call inside a
  request still holding the connection does not roll back: the holder's
  transaction goes on.) DBUtils' ``PersistentDB`` leaves such transactions
  open: the server session stays "idle in transaction", holding its locks,
  and the next request commits the forgotten work with its own.
* The connection is closed when its thread ends, by the ending thread itself
  (the connection lives in a :class:`threading.local`, whose per-thread
  data is released when the thread ends), so a program that starts and ends
  many threads leaves nothing behind.

The limits
----------
One connection per thread: a server with 200 threads holds 200 database
sessions, even when most threads are idle, and a thread that ends takes its
connection with it (short-lived threads connect every time). Use
:class:`tether.pooled.PooledDB` when threads outnumber the connections the
database should see, or when threads come and go. ``maxconnections=`` caps
the sessions a generator may hold; a thread over the cap gets an error, or
waits (at most ``checkout_timeout`` seconds) for another thread to end.

Fork: a child process never uses (nor closes) its parent's connections, it
opens its own; closing an inherited connection would end the parent's
session, since both processes share its socket. Interpreter exit: every
connection that is not in use is closed (:meth:`~PersistentDB.close` runs
for each generator from :mod:`atexit`).

DBUtils compatibility: ``PersistentDB(creator, maxusage, setsession,
failures, ping, closeable, threadlocal, isfatal, *args, **kwargs)`` and
``PersistentPg(maxusage, setsession, closeable, threadlocal, *args, **kwargs)``
keep DBUtils 3.2's signatures, and ``connection()`` returns the steady
connection itself, as DBUtils does. Both are this one implementation;
only how a connection is made differs.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast, overload

from tether.simple_pool import Uncopyable
from tether.simple_pool.dbapi import DBAPIConnection
from tether.simple_pool.deadline import LATE, call_within, remaining
from tether.simple_pool.drivers import DriverAdapter, adapter_for
from tether.simple_pool.errors import (
    ConfigurationError,
    NotSupportedError,
    PoolClosed,
    PoolError,
    PoolTimeout,
)
from tether.steady import (
    PgConnection,
    PingStatementError,
    SteadyDBConnection,
    SteadyOptions,
    SteadyPgConnection,
)
from tether.steady.core import (
    Failures,
    SetSession,
    SteadyBase,
)
from tether.steady.ping import parse_ping

from .options import PersistentOptions

__all__ = [
    "NotSupportedError",
    "PersistentDB",
    "PersistentDBError",
    "PersistentPg",
    "TooManyConnectionsError",
]

try:
    __version__ = version("tether-persistent")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

log = logging.getLogger("tether.persistent")

#: DBUtils' name for the errors of this module (``PoolClosed``, ``PoolTimeout``... derive from it).
PersistentDBError = PoolError


class TooManyConnectionsError(PoolError):
    """``maxconnections`` threads hold a connection already, and ``blocking`` is False."""


C = TypeVar("C", bound=SteadyBase)


# -- the connections --------------------------------------------------------------------------


class _RequestMark:
    """``close()`` or the end of a ``with`` said the request is over.

    The thread's next ``connection()`` then starts a new one, even while a
    variable of the finished request still refers to the connection.
    """

    __slots__ = ("over",)

    def __init__(self) -> None:
        self.over = False


class _Owned(SteadyBase):
    """A steady connection that belongs to one thread of a persistent generator.

    It tells the generator when it is closed (so the cap counts only open
    connections), and it refuses to be closed by a forked child: a child
    shares the connection's socket with its parent, and closing it there
    would end the parent's session.
    """

    # Slots, as the steady connection's own state (see tether.steady.SteadyBase):
    # read at every request.
    __slots__ = ("_tether_pid", "_tether_request", "_tether_shared")

    _tether_shared: _Shared | None
    _tether_pid: int | None  # the process that opened it
    _tether_request: _RequestMark

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tether_shared = self._tether_pid = None
        self._tether_request = _RequestMark()
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        super().close()
        self._tether_request.over = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            super().__exit__(exc_type, exc, tb)  # type: ignore[misc]
        finally:
            self._tether_request.over = True

    def retire(self) -> None:
        pid = self._tether_pid
        if pid is not None and pid != os.getpid():
            _keep_orphan(self)
            return
        shared, self._tether_shared = self._tether_shared, None
        try:
            super().retire()
        finally:
            if shared is not None:
                shared.released()


class _PersistentDBConnection(_Owned, SteadyDBConnection):
    """What :meth:`PersistentDB.connection` returns: a :class:`SteadyDBConnection`."""


class _PersistentPgConnection(_Owned, SteadyPgConnection):
    """What :meth:`PersistentPg.connection` returns: a :class:`SteadyPgConnection`."""


def _released(con: SteadyBase) -> bool:
    """``con.finish_checkout()``; False when setting the settings back failed (see _end_request)."""
    try:
        return con.finish_checkout()
    except Exception:
        return False


# -- per-thread and per-generator state -------------------------------------------------------


class _Shared:
    """What a generator's connections share: the count of open ones, the cap, the slots."""

    __slots__ = ("closed", "cond", "count", "limit", "slots")

    def __init__(self, limit: int) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.count = 0  # open connections (and connects under way)
        self.limit = limit  # 0: no cap
        self.closed = False
        self.slots: weakref.WeakSet[_Slot[Any]] = weakref.WeakSet()

    def add(self, slot: _Slot[Any]) -> bool:
        """Register a thread's slot; False if the generator was closed meanwhile."""
        with self.cond:
            self.slots.add(slot)
            return not self.closed

    def released(self) -> None:
        """One connection was closed (or failed to open): wake one thread waiting for the cap."""
        with self.cond:
            self.count -= 1
            self.cond.notify()

    def forget_after_fork(self) -> None:
        """In a forked child: the slots' connections are the parent's. Keep them, unused."""
        for slot in list(self.slots):
            slot.lock = threading.Lock()  # another thread may have held it at the fork
            con, slot.con = slot.con, None
            if con is not None:
                _keep_orphan(con)
        self.slots = weakref.WeakSet()
        self.cond = threading.Condition(threading.RLock())
        self.count = 0


class _Slot(Generic[C]):
    """One thread's connection, stored in the generator's thread-local data.

    The thread-local data of a thread is released when the thread ends, and
    this object with it: ``__del__`` then closes the connection, in the
    ending thread itself. Nothing else holds a slot strongly (the generator
    keeps weak references), and a slot holds nothing that refers back to it,
    so it is freed at once, without waiting for the garbage collector.
    """

    __slots__ = ("__weakref__", "con", "ident", "lock", "owner", "seen_at")

    def __init__(self, con: C | None, owner: object = None) -> None:
        self.con = con
        # The generator, weakly: gone when the slot is freed because the
        # generator was dropped, not because the thread ended.
        self.owner: Callable[[], object] = weakref.ref(owner) if owner is not None else _none
        # When the thread last asked for its connection: a liveness check is
        # due only after it sat unused longer than ping_after.
        self.seen_at = time.monotonic()
        self.ident = threading.get_ident()
        # Guards `con` against close() from another thread; the owner holds
        # it while it hands the connection out.
        self.lock = threading.Lock()

    def __del__(self) -> None:
        # No logging here: a log record would create a threading._DummyThread
        # for the ending thread, which is never freed (a leak per thread).
        try:
            con = self.con
            if (
                con is not None
                and threading.get_ident() == self.ident
                and (self.owner() is not None or _unused(self))
            ):
                # The ending thread closes its own connection, whoever else
                # still refers to it (a traceback, a cycle), so that it closes
                # now. Not so when the generator itself was dropped while its
                # caller holds the connection (``PersistentDB(...).connection()``
                # on one line). Then, and anywhere else (the generator was
                # dropped by another thread), dropping our reference is enough:
                # the connection closes itself when its last user lets go of
                # it (SteadyBase.__del__).
                self.con = None
                con.retire()
            self.con = None
        except Exception:
            pass


def _none() -> None:
    return None


# -- who else uses a connection ---------------------------------------------------------------

_getrefcount: Callable[[object], int] | None = getattr(sys, "getrefcount", None)


def _references(slot: _Slot[Any]) -> int:
    assert _getrefcount is not None
    return _getrefcount(slot.con)


def _calibrate() -> int | None:
    """References to a slot's connection held by the slot and by its caller's one local variable.

    Measured rather than assumed: the count ``sys.getrefcount`` reports for
    the same code differs between Python versions.
    """
    if _getrefcount is None:  # not CPython: nobody can tell, so assume "in use"
        return None
    probe: _Slot[Any] = _Slot(None)
    probe.con = con = object()  # `con`: the local variable callers hold
    count = _references(probe)
    probe.con = None
    del con
    return count


_BASELINE = _calibrate()


def _unused(slot: _Slot[Any]) -> bool:
    """Whether nothing refers to the slot's connection but the slot and one caller local.

    Then no request of the owning thread is using it: no variable, cursor or
    bound method of it is alive. Call with exactly one local variable bound
    to the connection.
    """
    return _BASELINE is not None and _references(slot) <= _BASELINE


# -- fork and exit --------------------------------------------------------------------------------

#: Every generator, to reset them in a forked child and close them at exit.
_generators: weakref.WeakSet[_Persistent[Any]] = weakref.WeakSet()
#: Connections inherited from the parent process: kept, never closed, never used.
_orphans: list[SteadyBase] = []


def _keep_orphan(con: SteadyBase) -> None:
    """Keep an inherited connection alive and make this process's copy of its socket inert.

    Its socket is the parent's too. Closing the connection (or letting the
    driver close it when the object is freed at exit) would send the
    protocol's goodbye on it and end the parent's session. So the object is
    kept for good, and the child's copy of the socket descriptor is pointed
    at /dev/null: whatever this process writes to it reaches no server.
    """
    if any(kept is con for kept in _orphans):
        return
    _orphans.append(con)
    if isinstance(con, _Owned):
        con._tether_shared = None
    con.abandon()


def _after_fork_in_child() -> None:
    for generator in list(_generators):
        generator._shared.forget_after_fork()


def _close_all_at_exit() -> None:
    for generator in list(_generators):
        try:
            generator.close()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


# -- the generator ------------------------------------------------------------------------------


_P = TypeVar("_P", bound="_Persistent[Any]")


class _Persistent(Uncopyable, Generic[C]):
    """The one implementation behind :class:`PersistentDB` and :class:`PersistentPg`."""

    #: The version of tether-persistent (DBUtils has this attribute too).
    version: ClassVar[str] = __version__

    _adapter: DriverAdapter

    def __init__(self, adapter: DriverAdapter, options: PersistentOptions) -> None:
        # Every argument was checked by the front making ``options``
        # (options.py, with the checks every layer uses), before the first
        # connection; the steady layer would check some only when a thread
        # first connects. connection() reads the attributes copied here.
        self._adapter = adapter
        self._options = options
        parse_ping(options.steady.ping, adapter)  # a ping the driver cannot do, now
        self._ping_after = options.ping_after
        logger = options.steady.logger
        self._log = logger if logger is not None else log
        self._blocking = options.blocking
        self._checkout_timeout = options.checkout_timeout
        threadlocal = options.threadlocal
        if threadlocal is None:
            threadlocal = threading.local
        self._local = threadlocal()
        # Rollbacks of transactions a request left open, and when that was last logged.
        self._leftovers = 0
        self._leftover_logged_at = -float("inf")
        self._shared = _Shared(options.maxconnections)
        _generators.add(self)

    @property
    def options(self) -> PersistentOptions:
        """The generator's settings, checked, as one read-only :class:`PersistentOptions`."""
        return self._options

    def _create(self, kwargs: dict[str, Any]) -> C:
        """A new steady connection of the right kind (an :class:`_Owned` one), with ``kwargs``."""
        raise NotImplementedError

    def steady_connection(self) -> C:
        """A new steady connection, not persistent: not tied to this thread, not counted."""
        raise NotImplementedError

    # -- getting the thread's connection ----------------------------------------------------

    def connection(self, shareable: bool = False) -> C:
        """This thread's steady connection: opened on the first call, the same one afterwards.

        ``shareable`` exists for compatibility with ``PooledDB.connection()``
        and is ignored: a persistent connection is never shared between
        threads. A transaction a finished request left open is rolled back
        first; the connection is checked first if ``ping`` says so (1:
        whenever it is requested). Raises :class:`PoolClosed` after
        :meth:`close`, :class:`TooManyConnectionsError` or
        :class:`~tether.simple_pool.PoolTimeout` when the cap is reached.
        """
        # Not getattr(self._local, "slot", None): before Python 3.11, that miss in a
        # _threading_local.local raises through contextlib, whose frame and the
        # exception form a cycle keeping the thread, and its connection after it
        # ends, alive until the garbage collector runs.
        slot: _Slot[C] | None = vars(self._local).get("slot")
        if slot is not None:
            with slot.lock:
                con = slot.con
                if con is not None and not con.retired and not self._shared.closed:
                    # The previous request is over: this one starts afresh. (No
                    # local alias of `con` here: _unused() counts its references.)
                    mark = con._tether_request  # type: ignore[attr-defined]
                    if mark.over:
                        # close() or `with` ended it, and its transaction with it.
                        mark.over = False
                        # Idle: its cursors stop working, settings it changed are set
                        # back (one call); else the transaction is rolled back first.
                        if not _released(con):
                            self._end_request(con)
                    elif con.needs_reset() and _unused(slot):
                        self._end_request(con)
                    if con.pings_on_request:
                        # A round trip, so only after the connection sat unused
                        # for ping_after seconds (HikariCP's rule): a busy thread
                        # pays nothing, and a dead session is still found before
                        # a statement by steady's look at the socket.
                        now = time.monotonic()
                        if now - slot.seen_at >= self._ping_after:
                            self._check(con, now + self._checkout_timeout)
                        slot.seen_at = now
                    return con
        return self._new_connection(slot)

    def dedicated_connection(self) -> C:
        """Alias for ``connection(shareable=False)``, as in DBUtils."""
        return self.connection()

    def _end_request(self, con: C) -> None:
        """The thread's previous request is over: end its transaction, give back its settings.

        Driver settings the request changed (``db.autocommit = True``...) are
        set back to those the connection was opened with, as a pool does at
        checkin (see :meth:`tether.steady.SteadyBase.end_checkout`).
        """
        known = con.transaction_open()  # (the warning's: not for a maybe, see needs_rollback)
        if known or con.needs_rollback():
            self._roll_back_leftover(con, warn=known and not con.session_lost)
        try:
            con.end_checkout()
        except Exception as exc:  # cannot be set back: a new connection for the next request
            if not con.connected:
                return  # closed by steady (configured past undoing): the next use opens one
            self._log.warning(
                "tether: setting back the driver settings of this thread's %s connection"
                " failed (%s: %s); reopening it",
                self._adapter.name,
                type(exc).__name__,
                str(exc),
            )
            con.replace_driver_connection("its driver settings could not be set back")

    def _check(self, con: C, deadline: float) -> None:
        """The ping at ``connection()``, and the reopen after a failed one, within ``deadline``.

        The ping waits for the server at most until the deadline (a
        blackholed server never answers); a connection whose ping failed or
        ran out of time is closed (it may be half-read) and reopened with
        what is left of the deadline, or :class:`PoolTimeout` is raised.
        A reopen that fails otherwise leaves the connection to be reopened
        by its next statement, as steady connections do; a refused login is
        raised.
        """
        if con.check(timeout=remaining(deadline)):
            return
        if con.transaction_open():
            return  # never replaced inside a transaction; its next statement fails
        self._reopen_within(con, deadline, "the ping check failed")

    def _reopen_within(self, con: C, deadline: float, reason: str) -> None:
        """Reopen ``con`` (no transaction open) by ``deadline``, else :class:`PoolTimeout`.

        Bounded as the first connect is (:meth:`_connect_within`): libpq's
        connect timeout is whole seconds, at least 2, so the connect runs on
        a helper thread and a connection that comes late is closed there.
        It is made with :meth:`SteadyBase.new_driver_connection`, which changes
        nothing on ``con``: only a connection that came in time is installed.
        """
        seconds = remaining(deadline)
        adapter = con.adapter
        kwargs = adapter.set_timeouts(dict(con.connect_kwargs), seconds)
        try:
            if adapter.local or adapter.refinable:
                # Made on this thread, as in _connect_within (thread-bound connections).
                result: Any = con.new_driver_connection(kwargs)
            elif seconds <= 0:
                result = LATE
            else:
                result = call_within(
                    lambda: con.new_driver_connection(kwargs),
                    seconds,
                    adapter.close,
                    "tether-persistent-reopen",
                )
        except ConfigurationError:
            raise
        except Exception as exc:
            self._log.warning(
                "tether: reopening %s connection failed: %s: %s",
                adapter.name,
                type(exc).__name__,
                exc,
            )
            return
        if result is LATE:
            raise PoolTimeout(
                f"{self!r}: no connection within {self._checkout_timeout:g} s"
                f" (checkout_timeout): {reason}, and the database did not answer the"
                f" {adapter.name} reconnect in time"
            )
        con.replace_driver_connection(reason, result)

    def _roll_back_leftover(self, con: C, warn: bool = True) -> None:
        """Roll back what the previous request left open, within ``checkout_timeout``.

        A rollback that cannot finish in time (a server that does not
        answer) abandons the connection: the server rolls back a session
        that ends, so it is closed and a new one opened with what is left
        of the deadline (or :class:`PoolTimeout`). A connection whose
        rollback did not complete is never handed out.
        """
        now = time.monotonic()
        # Once a minute per generator, with a count: every request of a handler
        # that forgets to commit ends here, and a line per request floods the log.
        if warn:
            self._leftovers += 1
        if warn and now - self._leftover_logged_at >= 60.0:
            self._log.warning(
                "tether: rolling back a transaction the previous request on this thread left"
                " open on its %s connection (commit before the request ends, or use"
                " `with persist.connection() as db:`); %d such rollbacks so far",
                self._adapter.name,
                self._leftovers,
            )
            self._leftover_logged_at = now
        deadline = now + self._checkout_timeout
        try:
            done = con.roll_back_within(self._checkout_timeout)
        except Exception as exc:  # a session that could not be rolled back is not reused
            # text, not the exception: a kept record must not keep the connection alive
            self._log.warning(
                "tether: could not roll back: %s: %s; reopening the connection",
                type(exc).__name__,
                str(exc),
            )
            # Replaced, as a pool discards it: its transaction ends with the old session.
            self._reopen_within(con, deadline, "its rollback failed")
            return
        if not done:
            # Failed (a session the server ended) or out of time: either way closed.
            late = time.monotonic() >= deadline
            self._log.warning(
                "tether: the rollback on this thread's %s connection %s; the connection"
                " was closed (the server rolls back with it)",
                self._adapter.name,
                f"did not finish within {self._checkout_timeout:g} s (checkout_timeout)"
                if late
                else "failed",
            )
            self._reopen_within(
                con,
                deadline,
                "its rollback did not finish in time" if late else "its rollback failed",
            )

    def _new_connection(self, slot: _Slot[C] | None) -> C:
        """The cold path: a thread's first connection, or one after its last was closed."""
        shared = self._shared
        if shared.closed:
            if slot is not None:
                _discard(slot)
            raise PoolClosed(f"{self!r} is closed")
        # One deadline for the wait for the cap and the connect.
        deadline = time.monotonic() + self._checkout_timeout
        self._reserve(deadline)
        try:
            con = self._connect_within(deadline)
        except BaseException:
            shared.released()
            raise
        owned = cast(_Owned, con)
        owned._tether_pid = os.getpid()
        owned._tether_shared = shared
        # The rollback that ends a request (close() with a transaction open) waits for
        # the server at most checkout_timeout, as the next request's own would.
        owned.close_timeout = self._checkout_timeout
        if slot is None:
            slot = _Slot(con, self)
            self._local.slot = slot
        else:
            with slot.lock:
                old, slot.con = slot.con, con
            if old is not None:
                old.retire()  # already closed, unless close() raced with us
        if not shared.add(slot):  # close() ran while this thread was connecting
            _discard(slot)
            raise PoolClosed(f"{self!r} is closed")
        # ping_after=0: every call pings, a thread's first too, as a pool's checkout
        # served a new connection does: a ping that cannot work is told at once (an
        # outside attack found the first call unpinged). Failed, it is tried once
        # more on a new session (one the server ended right after the connect is no
        # configuration error); failed twice, it takes every new connection for dead.
        if self._ping_after == 0 and con.pings_on_request:
            for attempt in range(2):
                if con.check(timeout=remaining(deadline)) is not False:
                    break
                if attempt:
                    raise PingStatementError(
                        "ping: the check failed on two connections just opened: it takes"
                        " every new connection for dead (a statement that fails while it"
                        " runs, or a callable that returns False)"
                    )
                self._reopen_within(con, deadline, "the ping check failed")
        return con

    def _connect_within(self, deadline: float) -> C:
        """A new connection, or :class:`PoolTimeout` when it is not open by ``deadline``.

        The driver's connect timeout is set from what is left, but drivers
        count coarsely (libpq: whole seconds, at least 2), so the connect
        runs on a short-lived thread and this thread stops waiting at the
        deadline; a connection that is made after it is closed at once.
        """
        seconds = remaining(deadline)
        kwargs = self._adapter.set_timeouts(self._connect_kwargs(), seconds)
        adapter = self._adapter
        if adapter.local or adapter.refinable:
            # Made by the thread that will use it, as the rule of this module
            # says: an embedded database has no network to wait for, and a
            # creator tether does not know may make thread-bound connections
            # (sqlite3's refuse other threads by default). Bounded then by the
            # driver's own connect timeout, where the adapter could set one.
            result: Any = self._create(kwargs)
        else:
            result = call_within(
                lambda: self._create(kwargs), seconds, self._close_late, "tether-persistent-connect"
            )
        if result is LATE:
            wait = self._checkout_timeout
            raise PoolTimeout(
                f"{self!r}: no connection within {wait:g} s (checkout_timeout): the database"
                f" did not answer the {self._adapter.name} connect in time"
            )
        con = cast(C, result)
        con.connect_kwargs = self._connect_kwargs()  # later reopens: the user's own arguments
        if adapter.refinable and not con.adapter.refinable:
            # A creator tether could not place: its connections showed the driver.
            # The threads' next connections start with that driver's adapter.
            self._adapter = con.adapter
            self._log.info(
                "tether: %r: the creator's connections are %s's: using its driver adapter",
                self,
                con.adapter.name,
            )
        return con

    def _close_late(self, con: C) -> None:
        """A connect that finished after its caller gave up: close it, free its count."""
        try:
            con.retire()
        finally:
            self._shared.released()

    def _connect_kwargs(self) -> dict[str, Any]:
        """The connect keyword arguments (the front knows them)."""
        raise NotImplementedError

    def _reserve(self, deadline: float) -> None:
        """Count one more open connection, within ``maxconnections``."""
        shared = self._shared
        with shared.cond:
            if shared.limit and shared.count >= shared.limit:
                if not self._blocking:
                    raise TooManyConnectionsError(
                        f"{self!r}: all {shared.limit} connections (maxconnections) are held"
                        " by other threads; a connection is freed when its thread ends"
                    )
                wait = self._checkout_timeout
                while shared.count >= shared.limit:
                    if shared.closed:
                        raise PoolClosed(f"{self!r} is closed")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolTimeout(
                            f"{self!r}: no connection became free within {wait:g} s"
                            f" (checkout_timeout); all {shared.limit} are held by other threads"
                        )
                    shared.cond.wait(remaining)
            if shared.closed:
                raise PoolClosed(f"{self!r} is closed")
            shared.count += 1

    # -- the generator as a whole -------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """How many threads hold an open connection of this generator now."""
        return self._shared.count

    def close(self) -> None:
        """Close the generator: no new connections; close every connection not in use.

        The calling thread's connection and every connection no request is
        using are closed now. One another thread is using at this moment is
        closed by that thread, at its next :meth:`connection` call (which
        raises :class:`PoolClosed`) or when it ends. Runs by itself for every
        generator at interpreter exit. Closing twice is harmless.
        """
        shared = self._shared
        with shared.cond:
            shared.closed = True
            slots = list(shared.slots)
            shared.cond.notify_all()  # waiters for the cap must learn it
        me = threading.get_ident()
        for slot in slots:
            with slot.lock:
                con = slot.con
                if con is None or (slot.ident != me and not _unused(slot)):
                    continue
                slot.con = None
            con.retire()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the connect arguments: they may hold a password.
        shared = self._shared
        cap = f"/{shared.limit}" if shared.limit else ""
        state = " closed" if shared.closed else ""
        return f"<{type(self).__name__} {self._adapter.name} {shared.count}{cap} open{state}>"


def _discard(slot: _Slot[Any]) -> None:
    """Close the slot's connection (the owning thread calls this)."""
    with slot.lock:
        con, slot.con = slot.con, None
    if con is not None:
        con.retire()


# -- the two fronts ---------------------------------------------------------------------------


#: The type of the creator's connections: what ``PersistentDB.connection()`` is typed as.
CT = TypeVar("CT")


class PersistentDB(_Persistent[SteadyDBConnection], Generic[CT]):
    """Generator of persistent DB-API 2 connections: one steady connection per thread.

    DBUtils 3.2's parameters, in its order: ``creator`` (a DB-API 2 module
    or a function returning a connection), ``maxusage`` (statements before a
    connection is reopened; 0/None: no limit), ``setsession`` (SQL run on
    every new connection), ``failures`` and ``isfatal`` (what counts as a
    lost connection), ``ping`` (when to check liveness; 1: at a
    ``connection()`` call after the connection sat unused ``ping_after``
    seconds, a round trip; 0: never, a dead connection is then noticed
    before or when a statement fails, and replaced outside transactions),
    ``closeable`` (whether ``close()`` really closes), ``threadlocal`` (the
    class of the thread-local store; default :class:`threading.local`),
    ``args``/``kwargs`` for the creator.

    Keyword-only extras: ``maxconnections`` (at most this many threads hold
    a connection at once; 0/None: no cap), ``blocking`` (at the cap, wait
    for a connection to be freed instead of raising
    :class:`TooManyConnectionsError`), ``checkout_timeout`` (how long to
    wait, seconds, default 30: then :class:`PoolTimeout`), ``ping_after``
    (seconds a connection must have sat unused before ``ping`` 1 checks it
    at ``connection()``; default 1, as pooled; 0: every time), and, passed to
    the steady layer, ``driver``, ``max_lifetime``, ``on_connect``, ``logger``.

    Typed as ``PersistentDB[CT]``: ``connection()`` is a ``CT``, the type the
    creator returns (``PersistentDB(sqlite3.connect, ...)`` gives
    ``sqlite3.Connection``); a module creator gives a
    :class:`~tether.simple_pool.dbapi.DBAPIConnection`.
    """

    @overload
    def __init__(
        self: PersistentDB[CT],
        creator: Callable[..., CT],
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        failures: Failures | None = None,
        ping: Any = 1,
        closeable: bool = False,
        threadlocal: Callable[[], Any] | None = None,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        maxconnections: int | None = 0,
        blocking: bool = False,
        checkout_timeout: float = 30.0,
        ping_after: float = 1.0,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: PersistentDB[DBAPIConnection],
        creator: ModuleType,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        failures: Failures | None = None,
        ping: Any = 1,
        closeable: bool = False,
        threadlocal: Callable[[], Any] | None = None,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        maxconnections: int | None = 0,
        blocking: bool = False,
        checkout_timeout: float = 30.0,
        ping_after: float = 1.0,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None: ...

    def __init__(
        self,
        creator: ModuleType | Callable[..., Any],
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        failures: Failures | None = None,
        ping: Any = 1,
        closeable: bool = False,
        threadlocal: Callable[[], Any] | None = None,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        maxconnections: int | None = 0,
        blocking: bool = False,
        checkout_timeout: float = 30.0,
        ping_after: float = 1.0,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        # Every argument is checked here, by the options object (options.py).
        options = PersistentOptions(
            maxconnections=maxconnections,
            blocking=blocking,
            checkout_timeout=checkout_timeout,
            ping_after=ping_after,
            threadlocal=threadlocal,
            steady=SteadyOptions(
                maxusage=maxusage,
                setsession=setsession,
                failures=failures,
                ping=ping,
                closeable=closeable,
                isfatal=isfatal,
                max_lifetime=max_lifetime,
                on_connect=on_connect,
                logger=logger,
            ),
        )
        adapter = adapter_for(creator, driver)
        if adapter.threadsafety == 0:
            raise NotSupportedError(
                f"creator: {adapter.name} has DB-API threadsafety 0:"
                " threads may not share the module, not even with a connection each"
            )
        super().__init__(adapter, options)
        self._creator = creator
        self._args, self._kwargs = args, kwargs

    @overload
    @classmethod
    def from_options(
        cls,
        creator: Callable[..., CT],
        options: PersistentOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PersistentDB[CT]: ...

    @overload
    @classmethod
    def from_options(
        cls,
        creator: ModuleType,
        options: PersistentOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PersistentDB[DBAPIConnection]: ...

    @classmethod
    def from_options(
        cls,
        creator: ModuleType | Callable[..., Any],
        options: PersistentOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PersistentDB[Any]:
        """A generator with the settings of ``options``; ``args``/``kwargs`` go to the creator.

        ``PersistentDB.from_options(creator, gen.options)`` makes a generator like ``gen``.
        """
        if not isinstance(options, PersistentOptions):
            raise TypeError(f"options: expected PersistentOptions, got {type(options).__name__}")
        o, s = options, options.steady
        make: Any = cls  # the overloads above type the result
        generator: PersistentDB[Any] = make(
            creator,
            s.maxusage,
            s.setsession,
            s.failures,
            s.ping,
            s.closeable,
            o.threadlocal,
            s.isfatal,
            *args,
            driver=driver,
            **o.extras(),
            **kwargs,
        )
        return generator

    if TYPE_CHECKING:  # the types only: at run time these are _Persistent's
        # Typed as the creator's connection, though they return a steady one:
        # it passes every attribute it does not define to the driver's
        # connection, and isinstance(con, type(driver connection)) holds (its
        # __class__ is the driver's), so what CT promises is there. (Hence the
        # override of _Persistent's SteadyDBConnection return type.)
        def connection(self, shareable: bool = False) -> CT: ...  # type: ignore[override]

        def dedicated_connection(self) -> CT: ...  # type: ignore[override]

    def _steady(
        self, cls: type[SteadyDBConnection], kwargs: dict[str, Any] | None = None
    ) -> SteadyDBConnection:
        return cls.from_options(
            self._creator,
            self._options.steady,
            *self._args,
            driver=self._adapter,
            **(self._kwargs if kwargs is None else kwargs),
        )

    def _connect_kwargs(self) -> dict[str, Any]:
        return self._kwargs

    def _create(self, kwargs: dict[str, Any]) -> SteadyDBConnection:
        return self._steady(_PersistentDBConnection, kwargs)

    def steady_connection(self) -> SteadyDBConnection:
        """A new steady DB-API 2 connection, not persistent: tied to no thread, not counted."""
        return self._steady(SteadyDBConnection)


class PersistentPg(_Persistent[SteadyPgConnection]):
    """Generator of persistent classic PyGreSQL (``pg.DB``) connections: one per thread.

    DBUtils 3.2's parameters: ``maxusage``, ``setsession``, ``closeable``,
    ``threadlocal`` as for :class:`PersistentDB`; ``args``/``kwargs`` go to
    ``pg.DB()`` (and ``ping=`` among them to the steady connection). The
    keyword-only extras of :class:`PersistentDB` apply too.

    ``connection()`` is typed as :class:`tether.steady.PgConnection`:
    ``pg.DB``'s methods with PyGreSQL's own signatures.
    """

    def __init__(
        self,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        closeable: bool = False,
        threadlocal: Callable[[], Any] | None = None,
        *args: Any,
        maxconnections: int | None = 0,
        blocking: bool = False,
        checkout_timeout: float = 30.0,
        ping_after: float = 1.0,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        import pg  # PyGreSQL, imported only by those who use the classic API

        # ping: SteadyPgConnection's own keyword (DBUtils' PersistentPg passes it
        # on in **kwargs), kept apart from the connect arguments, which later
        # reopens are given again. 1 unless given, as PersistentDB's and
        # PooledPg's default (DBUtils' PersistentPg has none): with SteadyPg's
        # 0, ping_after never pinged, and a stopped server hung the next query
        # (fifth outside attack).
        options = PersistentOptions(
            maxconnections=maxconnections,
            blocking=blocking,
            checkout_timeout=checkout_timeout,
            ping_after=ping_after,
            threadlocal=threadlocal,
            steady=SteadyOptions(
                maxusage=maxusage,
                setsession=setsession,
                ping=kwargs.pop("ping", 1),
                closeable=closeable,
                max_lifetime=max_lifetime,
                on_connect=on_connect,
                logger=logger,
            ),
        )

        adapter = adapter_for(pg.DB, driver if driver is not None else "pg")
        super().__init__(adapter, options)
        self._args, self._kwargs = args, kwargs

    @classmethod
    def from_options(
        cls,
        options: PersistentOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PersistentPg:
        """A generator with the settings of ``options``; ``args``/``kwargs`` go to ``pg.DB()``.

        ``steady.failures`` and ``steady.isfatal`` must be unset (PyGreSQL's
        classic errors are tether.steady's classic.py's).
        """
        if not isinstance(options, PersistentOptions):
            raise TypeError(f"options: expected PersistentOptions, got {type(options).__name__}")
        o, s = options, options.steady
        if s.failures is not None or s.isfatal is not None:
            raise ValueError("options: PersistentPg takes no failures or isfatal")
        return cls(
            s.maxusage,
            s.setsession,
            s.closeable,
            o.threadlocal,
            *args,
            driver=driver,
            ping=s.ping,
            **o.extras(),
            **kwargs,
        )

    if TYPE_CHECKING:  # the types only: at run time these are _Persistent's
        # Typed as pg.DB's API (PgConnection, PyGreSQL's own signatures), not
        # as SteadyPgConnection: that class passes unknown attributes on (a
        # __getattr__), so to mypy every attribute of it would exist. The
        # steady extras (check(), probe()...) are there: cast to call them.
        def connection(self, shareable: bool = False) -> PgConnection: ...  # type: ignore[override]

        def dedicated_connection(self) -> PgConnection: ...  # type: ignore[override]

    def _steady(
        self, cls: type[SteadyPgConnection], kwargs: dict[str, Any] | None = None
    ) -> SteadyPgConnection:
        return cls.from_options(
            self._options.steady,
            *self._args,
            driver=self._adapter,
            **(self._kwargs if kwargs is None else kwargs),
        )

    def _connect_kwargs(self) -> dict[str, Any]:
        return self._kwargs

    def _create(self, kwargs: dict[str, Any]) -> SteadyPgConnection:
        return self._steady(_PersistentPgConnection, kwargs)

    def steady_connection(self) -> SteadyPgConnection:
        """A new steady PyGreSQL connection, not persistent: tied to no thread, not counted."""
        return self._steady(SteadyPgConnection)
