"""A simple connection pool: the idea of pooling, and nothing else.

Opening a database connection costs a TCP handshake, authentication and the
server starting a session: milliseconds, where a query on an open connection
takes microseconds. A threaded program that opens a connection per request
spends most of its time connecting. A *pool* opens a fixed set of
connections once and lends them out:

    pool = SimplePooledDB(psycopg, 5, "dbname=app")   # opens 5 connections
    db = pool.connection()      # borrow one (waits if all 5 are lent out)
    ...                         # use it like the driver's own connection
    db.close()                  # give it back; the real connection stays open

    with pool.connection() as db:   # the same; commits if the block succeeds,
        ...                         # rolls back if it raises, and always gives it back

Three rules make this safe with threads:

1. A connection is lent to one borrower at a time, so two threads never
   talk over one connection at once (most drivers' connections are not
   thread-safe: DB-API ``threadsafety`` 1). DBUtils' simple pool shares
   connections between threads when the driver claims level 2; tether's does
   not, because a shared connection also shares its transaction. A borrow
   ends with ``close()``, and so does everything taken from it: a cursor
   (``cur = db.cursor()``) or a bound method (``ex = db.execute``) kept
   after ``close()`` raises :class:`ConnectionReturned` instead of running
   on the session of the connection's next borrower.
2. A borrower that finds the pool empty waits on a condition variable, and
   only for ``timeout`` seconds: a pool that can block forever turns a slow
   database into a hung program. Nothing slow happens while the pool's lock
   is held (no connect, rollback or close: those are network round trips),
   and every lock is taken with ``with``, which releases it in a ``finally``.
3. A connection comes back clean: an open transaction is rolled back on
   return, so one borrower's uncommitted work cannot leak into the next, and
   the driver settings a borrower can switch on the connection object
   (``db.autocommit = True``, psycopg's ``read_only``, PyMySQL's
   ``autocommit(True)``...) are set back to what they were when the
   connection was opened (:meth:`DriverAdapter.restore_settings`; it costs
   no round trip when nothing was changed). Otherwise the next borrower's
   ``rollback()`` could find autocommit on and undo nothing. So is the
   configuration kept on the connection object (psycopg's type adapters and
   notice handlers, PyMySQL's ``encoders``:
   :meth:`DriverAdapter.restore_configuration`), and a connection on which a
   method no read can undo was called (sqlite3's ``set_trace_callback()``:
   :attr:`DriverAdapter.unrestorable`) is closed instead of kept.

What the pool promises besides:

* A connection that cannot be cleaned (the rollback or the restore fails:
  the server went away) is closed, and its place stays in the pool: the
  next borrower that finds no idle connection opens a new one, outside the
  lock and within its own timeout, and a waiting borrower is woken for it.
  The pool never shrinks.
* A constructor that fails half-way (the server refuses the fourth of six
  connections) closes the ones it opened before it raises.
* A borrower that forgets ``close()`` gets its connection returned when the
  proxy is garbage-collected, without ever blocking the collector on the
  pool's lock (see :meth:`PooledConnection.__del__`).

What this pool deliberately does not do (the layers above add it):
no reconnect when the database restarts (``tether.steady``), no connection
per thread (``tether.persistent``), no growing and shrinking, lifetimes,
health checks or statistics (``tether.pooled``). Its connections are opened
when the pool is made, as in DBUtils.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any, NamedTuple, NoReturn

from .checks import check_int, check_seconds
from .deadline import LATE, call_within
from .drivers import DriverAdapter, adapter_for, refine
from .errors import ConnectionReturned, NotSupportedError, PoolClosed, PoolTimeout
from .lending import METHODS, Lent, holds_session
from .live import Uncopyable

__all__ = ["PooledConnection", "PooledCursor", "SimplePooledDB", "SimplePooledPg"]

log = logging.getLogger("tether.simple_pool")


class SimplePooledDB(Uncopyable):
    """A fixed set of ``maxconnections`` connections, lent to one thread at a time.

    ``creator`` is a DB-API 2 module (``psycopg``, ``pymysql``, ``sqlite3``...)
    or a function returning a new connection; ``args`` and ``kwargs`` are
    passed to its ``connect()``. Keyword-only extras: ``timeout``, how long
    :meth:`connection` waits for a free connection (None waits forever, as
    DBUtils does); ``driver``, to name the driver adapter explicitly.
    """

    def __init__(
        self,
        creator: ModuleType | Callable[..., Any],
        maxconnections: int,
        *args: Any,
        timeout: float | None = 30.0,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked before anything is opened (tether.simple_pool.checks: the
        # same checks, with the same messages, as every layer above).
        check_int("maxconnections", maxconnections, minimum=1)
        self._timeout = check_seconds("timeout", timeout)
        self._adapter = adapter = adapter_for(creator, driver)
        if adapter.threadsafety == 0:
            raise NotSupportedError(
                f"creator: {adapter.name} has threadsafety 0:"
                " its connections cannot be used from any thread but the one that opened them"
            )
        self._args, self._kwargs = args, kwargs
        self._maxconnections = maxconnections
        # The idle connections, each with the settings it had when it was
        # opened (rule 3). A condition variable (a lock plus a way to sleep
        # until notified) lets a borrower wait for the next return.
        self._idle: deque[tuple[Any, _Baseline]] = deque()
        # Connections that exist or are being opened: idle, lent out, or
        # connecting. A slot freed by a broken connection is filled again by
        # the next borrower that needs it.
        self._open = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        opened: list[Any] = []
        try:
            for _ in range(maxconnections):
                opened.append(adapter.open(*args, **kwargs))
            # A creator tether could not place (a lambda) gets its driver's adapter now.
            self._adapter = adapter = refine(adapter, opened[0])
            self._idle.extend((raw, _baseline(adapter, raw)) for raw in opened)
        except BaseException:
            # A constructor that raises leaves the caller no pool to close, and
            # the traceback keeps this half-made one alive: without this, the
            # sessions opened so far would stay on the server (counting against
            # its connection limits) until the garbage collector ran.
            for raw in opened:
                adapter.close(raw)
            raise
        self._open = maxconnections

    def __repr__(self) -> str:
        # Never show args/kwargs: they may hold a password.
        state = "closed" if self._closed else f"{len(self._idle)}/{self._maxconnections} idle"
        return f"<{type(self).__name__} {self._adapter.name} {state}>"

    @property
    def adapter(self) -> DriverAdapter:
        """The driver adapter in use."""
        return self._adapter

    def connection(self, timeout: float | None = None) -> PooledConnection:
        """Borrow a connection; wait up to ``timeout`` seconds (default: the pool's) for one.

        Raises :class:`PoolTimeout` when none came free in time and
        :class:`PoolClosed` once the pool is closed. When the pool has room
        for a connection that was discarded, it is opened here, within what is
        left of ``timeout`` (:class:`PoolTimeout` when it is not open in time),
        and a failed connect raises the driver's error.
        """
        wait = self._timeout if timeout is None else check_seconds("timeout", timeout)
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            # Loop, because a notified waiter can lose the race to another borrower.
            while True:
                if self._closed:
                    raise PoolClosed(f"{self!r} is closed")
                if self._idle:
                    raw, saved = self._idle.pop()  # the most recently returned: warm caches
                    return PooledConnection(self, raw, saved)
                if self._open < self._maxconnections:
                    self._open += 1  # take the free slot now; connect after the lock
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PoolTimeout(
                        f"no free connection in {self!r} after {wait:g} s"
                        f" ({self._maxconnections} in use)"
                    )
                self._cond.wait(remaining)
        return self._open_connection(deadline)

    def _open_connection(self, deadline: float | None) -> PooledConnection:
        """Connect for the slot :meth:`connection` reserved (outside the lock)."""
        adapter, kwargs = self._adapter, self._kwargs
        seconds = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        if seconds is not None:  # the connect must not outlast the borrower's timeout
            kwargs = adapter.set_timeouts(dict(kwargs), seconds)
        raw = None
        try:
            if seconds is None or adapter.local or adapter.refinable:
                # No deadline; or an embedded database (no network to wait for)
                # or a creator tether does not know, whose connections may be
                # bound to the thread that made them (sqlite3's are).
                raw = adapter.open(*self._args, **kwargs)
            else:
                # The driver's own connect timeout is coarse (libpq: whole
                # seconds, at least 2), so the connect runs on a helper
                # thread and the borrower stops waiting at its deadline; a
                # connection made after that is closed on that thread.
                args = self._args
                result = call_within(
                    lambda: adapter.open(*args, **kwargs),
                    seconds,
                    adapter.close,
                    "tether-simple-pool-connect",
                )
                if result is LATE:
                    raise PoolTimeout(
                        f"{self!r}: the {adapter.name} connect for a discarded connection's"
                        f" place did not finish within the {seconds:g} s left of the timeout"
                    )
                raw = result
            saved = _baseline(adapter, raw)
            with self._cond:
                closed = self._closed
            if closed:
                raise PoolClosed(f"{self!r} is closed")
        except BaseException:
            if raw is not None:
                adapter.close(raw)
            self._free_slot()
            raise
        return PooledConnection(self, raw, saved)

    def _free_slot(self) -> None:
        """A connection is gone for good: make room for a new one and wake a waiter for it."""
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def _return(self, raw: Any, saved: _Baseline, spoiled: bool = False) -> None:
        """Take a connection back, clean. Called by :meth:`PooledConnection.close`."""
        adapter = self._adapter
        clean = False
        # Clean up outside the lock: a rollback is a round trip, and other
        # threads must not wait for our network I/O to borrow or return.
        try:
            if adapter.in_transaction(raw) is not False:
                adapter.rollback(raw)
            adapter.restore_settings(raw, saved.settings)  # after the rollback: no transaction
            if saved.configuration is not None:
                adapter.restore_configuration(raw, saved.configuration)
            clean = not spoiled and not adapter.is_closed(raw)
        except Exception as exc:
            # The connection is broken. This pool does not reconnect on use
            # (tether.steady does), but it must not hand out a dead connection
            # either: close it and let the next borrower open a new one.
            log.debug("discarding a %s connection that could not be cleaned: %r", adapter.name, exc)
        finally:  # even on KeyboardInterrupt the connection's slot must not be lost
            with self._cond:
                keep = clean and not self._closed
                if keep:
                    self._idle.append((raw, saved))
                else:
                    self._open -= 1
                self._cond.notify()  # wake one waiting borrower, not all of them
            if not keep:
                adapter.close(raw)  # after the lock: closing talks to the server

    def close(self) -> None:
        """Close the idle connections now; borrowed ones are closed when returned."""
        with self._cond:
            self._closed = True
            idle = [raw for raw, _ in self._idle]
            self._idle.clear()
            self._open -= len(idle)
            self._cond.notify_all()  # waiters must learn the pool is closed
        for raw in idle:
            self._adapter.close(raw)

    def __enter__(self) -> SimplePooledDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def SimplePooledPg(maxconnections: int, *args: Any, **kwargs: Any) -> SimplePooledDB:
    """A simple pool of PyGreSQL classic ``pg.DB`` connections (DBUtils' simple ``PooledPg``).

    The same pool as :class:`SimplePooledDB`; only the driver adapter differs.
    """
    import pg  # PyGreSQL, imported only by those who ask for it

    kwargs.setdefault("driver", "pg")
    return SimplePooledDB(pg.DB, maxconnections, *args, **kwargs)


_CONNECTION_SLOTS = ("_pool", "_raw", "_saved", "_spoiled")


class _Baseline(NamedTuple):
    """A connection as it was opened: what a borrower's changes are set back to."""

    settings: dict[str, Any]
    configuration: Any


def _baseline(adapter: DriverAdapter, raw: Any) -> _Baseline:
    return _Baseline(adapter.settings(raw), adapter.configuration(raw))


_CURSOR_SLOTS = ("_checkout", "_cursor")
_END = object()
_set_slot = object.__setattr__


class PooledConnection(Uncopyable):
    """A borrowed connection: the driver's connection, plus a ``close()`` that gives it back.

    Everything but ``close()`` and the context manager goes to the driver's
    connection, so the proxy behaves like the connection it wraps, with one
    difference: what you take from it stays bound to this borrow. Methods
    (``db.commit``, ``db.execute``) and the cursors they return are wrapped
    so that, once the connection was returned, they raise
    :class:`ConnectionReturned` instead of acting on a session that now
    belongs to someone else. Plain attributes are the driver's own objects.
    """

    __slots__ = _CONNECTION_SLOTS

    def __init__(self, pool: SimplePooledDB, raw: Any, saved: _Baseline) -> None:
        # Past our own __setattr__ (which forwards to the driver): it is the hot path.
        _set_slot(self, "_pool", pool)
        _set_slot(self, "_raw", raw)
        _set_slot(self, "_saved", saved)
        _set_slot(self, "_spoiled", False)

    _pool: SimplePooledDB | None
    _raw: Any
    _saved: _Baseline
    #: A method of the adapter's ``unrestorable`` was taken: closed when returned.
    _spoiled: bool

    def _live(self) -> Any:
        """The driver's connection, while this borrow lasts."""
        if self._pool is None:
            _returned()
        return self._raw

    def cursor(self, *args: Any, **kwargs: Any) -> PooledCursor:
        """The driver's ``cursor()``, bound to this borrow (the hot path: not via __getattr__)."""
        return PooledCursor(self, self._live().cursor(*args, **kwargs))

    def close(self) -> None:
        """Give the connection back to the pool. Closing twice is harmless."""
        pool = self._pool
        if pool is not None:
            _set_slot(self, "_pool", None)
            pool._return(self._raw, self._saved, self._spoiled)

    def __getattr__(self, name: str) -> Any:
        if name in _CONNECTION_SLOTS:  # not set yet (a failed __init__): no recursion
            raise AttributeError(name)
        raw = self._live()
        if name in self._pool._adapter.unrestorable:  # type: ignore[union-attr]  # (_live)
            _set_slot(self, "_spoiled", True)
        return _bound(self, self, raw, getattr(raw, name))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CONNECTION_SLOTS:
            object.__setattr__(self, name, value)
        else:  # db.autocommit = True: the driver's setting (put back on return)
            setattr(self._live(), name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The driver connection's class, so ``isinstance(db, psycopg.Connection)`` holds.

        Frameworks check the type of the connection they are given; ``type(db)``
        still says it is this proxy (as wrapt's ObjectProxy does).
        """
        return type(self._raw)

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # As psycopg's and sqlite3's own ``with conn:``, and every tether layer:
        # commit when the block succeeds, roll back when it raises; then give
        # the connection back.
        pool = self._pool
        try:
            if pool is not None and pool._adapter.in_transaction(self._raw) is not False:
                if exc_type is None:
                    pool._adapter.commit(self._raw)
                else:
                    pool._adapter.rollback(self._raw)
        finally:
            self.close()

    def __del__(self) -> None:
        """A borrower that forgot ``close()``: return the connection without blocking.

        The garbage collector runs finalizers in whatever thread is
        allocating, at any point of its code, possibly while that thread
        holds the pool's lock (which is not reentrant): waiting for the lock
        here would make the thread wait for itself, forever. So the lock is
        only tried. If it is free, this thread does not hold it, and the
        connection is returned as ``close()`` does. If it is taken, a short
        thread does the return, waiting for the lock like any borrower.
        """
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        try:
            if pool._cond.acquire(blocking=False):
                pool._cond.release()
                self.close()
            else:
                _set_slot(self, "_pool", None)
                threading.Thread(
                    target=pool._return, args=(self._raw, self._saved, self._spoiled), daemon=True,
                    name="tether-simple-pool-return",
                ).start()  # fmt: skip
        except Exception:
            pass  # an exception in a finalizer is only printed; at shutdown threads may fail


class PooledCursor(Uncopyable):
    """A driver cursor bound to the borrow it came from.

    It runs nothing once that borrow ended (:class:`ConnectionReturned`):
    ``execute()``, ``fetch*()``, iteration and the driver's other methods
    check first, since a server-side cursor fetches over the session, and a
    new statement would run in the next borrower's transaction. ``execute()``
    returns this proxy where the driver returns its cursor (psycopg's
    ``db.cursor().execute(...).fetchone()``). Closing it after the borrow is
    a no-op: the session is no longer this borrower's to talk to.
    """

    __slots__ = _CURSOR_SLOTS

    def __init__(self, checkout: PooledConnection, cursor: Any) -> None:
        _set_slot(self, "_checkout", checkout)
        _set_slot(self, "_cursor", cursor)

    _checkout: PooledConnection
    _cursor: Any

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The driver cursor's class, for ``isinstance`` checks."""
        return type(self._cursor)

    def _live(self) -> Any:
        if self._checkout._pool is None:  # the borrow is over
            _returned()
        return self._cursor

    # The DB-API methods are written out (each checks the borrow inline): they
    # are the hot path, and __getattr__ plus a wrapper per call would double their cost.

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self._checkout._pool is None:
            _returned()
        cursor = self._cursor
        result = cursor.execute(*args, **kwargs)
        return self if result is cursor else result

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        if self._checkout._pool is None:
            _returned()
        cursor = self._cursor
        result = cursor.executemany(*args, **kwargs)
        return self if result is cursor else result

    def fetchone(self) -> Any:
        if self._checkout._pool is None:
            _returned()
        return self._cursor.fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        if self._checkout._pool is None:
            _returned()
        return self._cursor.fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        if self._checkout._pool is None:
            _returned()
        return self._cursor.fetchall()

    def close(self) -> None:
        if self._checkout._pool is not None:
            self._cursor.close()

    def __iter__(self) -> Iterator[Any]:
        rows = iter(self._live())
        while True:
            self._live()  # before each row: fetching may read from the session
            row = next(rows, _END)
            if row is _END:
                return
            yield row

    def __enter__(self) -> PooledCursor:
        cursor = self._live()
        enter = getattr(type(cursor), "__enter__", None)
        if enter is None:  # sqlite3's cursors, for one: say so as Python would
            raise TypeError(
                f"{type(cursor).__name__!r} object does not support the context manager protocol"
            )
        enter(cursor)
        return self

    def __exit__(self, *exc: Any) -> Any:
        if self._checkout._pool is None:
            return None  # returned inside the with block: leave the session alone
        return type(self._cursor).__exit__(self._cursor, *exc)

    def __getattr__(self, name: str) -> Any:
        if name in _CURSOR_SLOTS:
            raise AttributeError(name)
        value = getattr(self._cursor, name)
        if value is self._checkout._raw:  # psycopg's cur.connection: the proxy, not the raw one
            return self._checkout
        return _bound(self._checkout, self, self._cursor, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CURSOR_SLOTS:
            object.__setattr__(self, name, value)
        else:  # cur.arraysize = 100
            setattr(self._cursor, name, value)


def _returned() -> NoReturn:
    raise ConnectionReturned("this pooled connection was returned to its pool")


def _bound(checkout: PooledConnection, proxy: Any, owner: Any, value: Any) -> Any:
    """``value`` (an attribute of ``owner``), bound to ``checkout`` if it is a method.

    A method of the driver's object keeps that object alive and usable after
    the borrow; the wrapper checks the borrow first, and wraps a cursor it
    returns (``db.cursor()``, psycopg's ``db.execute()``) the same way.
    Functions and classes stored as attributes (``row_factory``) are
    settings, not methods, and are returned as they are.
    """
    target = getattr(value, "__self__", None)
    if target is None or isinstance(target, (type, ModuleType)):
        return value

    def call(*args: Any, **kwargs: Any) -> Any:
        checkout._live()
        return _lend(checkout, proxy, owner, value(*args, **kwargs))

    return call


def _lend(checkout: PooledConnection, proxy: Any, owner: Any, result: Any) -> Any:
    """``result`` of a driver method as the borrower gets it: bound to the borrow if need be.

    The driver's own object back as its proxy, a cursor as a :class:`PooledCursor`,
    and any other object that holds the session (``db.transaction()``, ``cur.copy()``,
    ``cur.stream()``, sqlite3's ``blobopen()``; see :mod:`tether.simple_pool.lending`)
    lent for this borrow: found by an outside attack, kept past ``close()`` they ran
    on the next borrower's session.
    """
    if result is owner:
        return proxy
    if result is None:
        return None
    if hasattr(result, "execute") and hasattr(result, "fetchone"):
        return PooledCursor(checkout, result)
    if holds_session(type(result)):
        return _Borrowed(result, checkout)
    return result


class _Borrowed(Lent):
    """A driver object that holds the session, refused (``ConnectionReturned``) after the borrow."""

    __slots__ = ("_lent_checkout",)

    _lent_checkout: PooledConnection

    def __init__(self, obj: Any, checkout: PooledConnection) -> None:
        _set_slot(self, "_lent_object", obj)
        _set_slot(self, "_lent_checkout", checkout)

    def _lent_use(self) -> Any:
        self._lent_checkout._live()
        return self._lent_object

    def _lent_value(self, value: Any) -> Any:
        if value is self._lent_object:
            return self  # a fluent method or __enter__ returning the object itself
        if value is self._lent_checkout._raw:
            return self._lent_checkout  # psycopg's tx.connection: the proxy
        if isinstance(value, METHODS):
            return _bound(self._lent_checkout, self, self._lent_object, value)
        return _lend(self._lent_checkout, self, self._lent_object, value)
