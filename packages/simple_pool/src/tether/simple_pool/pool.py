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

    with pool.connection() as db:   # the same, returned even on an exception
        ...

Three rules make this safe with threads:

1. A connection is lent to one borrower at a time, so two threads never
   talk over one connection at once (most drivers' connections are not
   thread-safe: DB-API ``threadsafety`` 1). DBUtils' simple pool shares
   connections between threads when the driver claims level 2; tether's does
   not, because a shared connection also shares its transaction.
2. A borrower that finds the pool empty waits on a condition variable, and
   only for ``timeout`` seconds: a pool that can block forever turns a slow
   database into a hung program.
3. A connection comes back clean: an open transaction is rolled back on
   return, so one borrower's uncommitted work cannot leak into the next.

What this pool deliberately does not do (the layers above add it):
no reconnect when the database restarts (``tether.steady``), no connection
per thread (``tether.persistent``), no growing and shrinking, lifetimes,
health checks or statistics (``tether.pooled``). Its connections are opened
when the pool is made, as in DBUtils.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

from ._checks import check_int, check_seconds
from .drivers import DriverAdapter, adapter_for, refine
from .errors import NotSupportedError, PoolClosed, PoolTimeout

__all__ = ["PooledConnection", "SimplePooledDB", "SimplePooledPg"]


class SimplePooledDB:
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
        # The idle connections. A condition variable (a lock plus a way to
        # sleep until notified) lets a borrower wait for the next return.
        self._idle: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        for _ in range(maxconnections):
            self._idle.append(adapter.open(*args, **kwargs))
        # A creator tether could not place (a lambda) gets its driver's adapter now.
        self._adapter = refine(adapter, self._idle[0])

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
        :class:`PoolClosed` once the pool is closed.
        """
        wait = self._timeout if timeout is None else check_seconds("timeout", timeout)
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            # Loop, because a notified waiter can lose the race to another borrower.
            while not self._idle:
                if self._closed:
                    raise PoolClosed(f"{self!r} is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PoolTimeout(
                        f"no free connection in {self!r} after {wait:g} s"
                        f" ({self._maxconnections} in use)"
                    )
                self._cond.wait(remaining)
            if self._closed:
                raise PoolClosed(f"{self!r} is closed")
            raw = self._idle.pop()  # the most recently returned: its server caches are warm
        return PooledConnection(self, raw)

    def _return(self, raw: Any) -> None:
        """Take a connection back, clean. Called by :meth:`PooledConnection.close`."""
        adapter = self._adapter
        # Roll back outside the lock: it is a round trip, and other threads
        # must not wait for our network I/O to borrow or return.
        try:
            if adapter.in_transaction(raw) is not False:
                adapter.rollback(raw)
        except Exception:
            # The connection is broken. This pool does not reconnect on use
            # (tether.steady does), but it must not hand out a dead
            # connection either: replace it now, still outside the lock.
            adapter.close(raw)
            try:
                raw = adapter.open(*self._args, **self._kwargs)
            except Exception:
                with self._cond:  # the pool shrinks by one; wake a waiter to time out
                    self._maxconnections -= 1
                raise
        with self._cond:
            if self._closed:
                adapter.close(raw)
                return
            self._idle.append(raw)
            self._cond.notify()  # wake one waiting borrower, not all of them

    def close(self) -> None:
        """Close the idle connections now; borrowed ones are closed when returned."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
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


class PooledConnection:
    """A borrowed connection: the driver's connection, plus a ``close()`` that gives it back.

    Everything but ``close()`` and the context manager goes straight to the
    driver's connection, so the proxy behaves like the connection it wraps.
    """

    __slots__ = ("_pool", "_raw")

    def __init__(self, pool: SimplePooledDB, raw: Any) -> None:
        self._pool: SimplePooledDB | None = pool
        self._raw = raw

    def close(self) -> None:
        """Give the connection back to the pool. Closing twice is harmless."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._return(self._raw)

    def __getattr__(self, name: str) -> Any:
        if self._pool is None:
            raise PoolClosed("this pooled connection was closed (returned to its pool)")
        return getattr(self._raw, name)

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A borrower that forgets close() must not shrink the pool for good.
        try:
            self.close()
        except Exception:
            pass
