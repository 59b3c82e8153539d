"""Pools that are broken on purpose, to show the invariants catch real bugs.

A checker that never fails proves nothing. These doubles each break one
invariant the way real pools do, and the chaos suite asserts that running a
scenario with them reports exactly that violation:

``dbutils_implicit_tx`` (breaks *atomicity*)
    DBUtils 3.2's own ``PooledDB``, used the way much code uses it: without
    calling ``begin()`` (here ``begin()`` is swallowed). DBUtils then treats
    the open transaction as "no transaction": when the connection is lost
    between the two INSERTs it reopens it and re-runs the second INSERT on
    the new session, which commits alone. Half a transaction is committed
    and acknowledged.
``never_timeout`` (breaks *hang* / *timeouts*)
    DBUtils' ``PooledDB`` with ``blocking=True`` (waits for a free connection
    without any limit) and the driver's timeouts removed: a blackholed
    connection blocks its thread for ever, and every other thread waits for
    that connection for ever.
``slot_leak`` (breaks *hang*)
    A simple blocking pool that waits for a free connection without any
    limit, and loses the slot of every connection whose transaction failed
    (a classic error-path bug). After a few failures every checkout waits
    for ever; its ``close()`` releases the waiters (with an error), so the
    test process does not keep stuck threads.
``leaky`` (breaks *leaks*)
    A simple pool that forgets one connection in ten when it is given back:
    never reused, never closed, not even when the pool is closed.
``sticky_dead`` (breaks *sustained*)
    A simple pool that replaces connections found dead when given back,
    except the first one: that one it keeps and lends out again for ever
    (what tether did with PyGreSQL's ``pgdb`` before issue 11). The pool
    commits again soon after the fault (*recovery* holds), but one checkout
    in three keeps failing until the end of the run.

They are registered in :data:`tether.harness.chaos.pools.POOLS` by name.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any

from ..targets import DriverTarget
from .pools import PoolHandle, PoolSettings, register_pool, target_kwargs

__all__ = [
    "DBUtilsPoolHandle",
    "LeakyPoolHandle",
    "SlotLeakPoolHandle",
    "StickyDeadPoolHandle",
    "dbutils_implicit_tx",
    "leaky",
    "never_timeout",
    "slot_leak",
    "sticky_dead",
]

_TIMEOUT_KEYS = ("connect_timeout", "read_timeout", "write_timeout")


class _BeginIgnored:
    """A DBUtils pooled connection whose ``begin()`` does nothing (the caller "forgot" it)."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def begin(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class DBUtilsPoolHandle(PoolHandle):
    """DBUtils' ``PooledDB``; with ``ignore_begin`` its connections' ``begin()`` is a no-op."""

    name = "dbutils"

    def __init__(
        self, pool: Any, *, max_sessions: int, checkout_timeout: float | None, ignore_begin: bool
    ) -> None:
        super().__init__(pool, max_sessions=max_sessions, checkout_timeout=checkout_timeout)
        self.ignore_begin = ignore_begin

    def connection(self) -> Any:
        con = self.pool.connection()
        return _BeginIgnored(con) if self.ignore_begin else con

    def open_connections(self) -> int | None:
        return int(getattr(self.pool, "_connections", 0))


def _dbutils_pool(target: DriverTarget, maxconnections: int, kwargs: dict[str, Any]) -> Any:
    from dbutils.pooled_db import PooledDB

    if target.name == "pg":
        raise ValueError("the DBUtils doubles need a DB-API driver (psycopg, pgdb, pymysql)")
    return PooledDB(
        target.creator,
        mincached=0,
        maxcached=maxconnections,
        maxshared=0,
        maxconnections=maxconnections,
        blocking=True,
        **kwargs,
    )


def dbutils_implicit_tx(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """DBUtils' PooledDB, ``begin()`` never reaching it: retries inside the transaction."""
    cap = settings.workers  # enough for every worker: this double is about atomicity only
    pool = _dbutils_pool(target, cap, target_kwargs(target, settings))
    handle = DBUtilsPoolHandle(pool, max_sessions=cap, checkout_timeout=None, ignore_begin=True)
    handle.name = "dbutils_implicit_tx"
    return handle


def never_timeout(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """DBUtils' PooledDB, blocking without limit, and no driver timeouts at all."""
    kwargs = {k: v for k, v in target.kwargs.items() if k not in _TIMEOUT_KEYS}
    pool = _dbutils_pool(target, settings.cap, kwargs)
    handle = DBUtilsPoolHandle(
        pool, max_sessions=settings.cap, checkout_timeout=None, ignore_begin=False
    )
    handle.name = "never_timeout"
    return handle


class LeakyPoolHandle(PoolHandle):
    """A simple pool that forgets every ``leak_every``-th connection given back: it is
    neither reused nor ever closed (not even by ``close()``)."""

    name = "leaky"

    def __init__(
        self, target: DriverTarget, kwargs: dict[str, Any], max_sessions: int, leak_every: int = 10
    ) -> None:
        super().__init__(None, max_sessions=max_sessions, checkout_timeout=None)
        self._target = target
        self._kwargs = kwargs
        self._leak_every = leak_every
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._returned = 0
        self.leaked: list[Any] = []  # kept referenced, so the garbage collector closes nothing

    def connection(self) -> Any:
        with self._lock:
            raw = self._idle.pop() if self._idle else None
        if raw is None:
            target = self._target
            factory = target.module.DB if target.name == "pg" else target.module.connect
            raw = factory(*target.args, **self._kwargs)
        return _Lease(self, raw)

    def give_back(self, raw: Any) -> None:
        with self._lock:
            self._returned += 1
            if self._returned % self._leak_every == 0:
                self.leaked.append(raw)  # the bug
            else:
                self._idle.append(raw)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for raw in idle:
            with contextlib.suppress(Exception):
                raw.close()

    def really_close(self) -> None:
        """Close what was leaked (for the test's own cleanup)."""
        self.close()
        with self._lock:
            leaked, self.leaked = self.leaked, []
        for raw in leaked:
            with contextlib.suppress(Exception):
                raw.close()


class _Lease:
    """A driver connection lent by :class:`LeakyPoolHandle`; ``close()`` gives it back."""

    def __init__(self, pool: LeakyPoolHandle, raw: Any) -> None:
        self._pool = pool
        self._raw = raw

    def begin(self, *args: Any, **kwargs: Any) -> None:
        begin = getattr(self._raw, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            raw.rollback()
        except Exception:
            with contextlib.suppress(Exception):
                raw.close()
            return
        self._pool.give_back(raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def leaky(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """A "pool" that leaks one server session per transaction."""
    return LeakyPoolHandle(target, target_kwargs(target, settings), settings.cap)


class _PoolClosedError(RuntimeError):
    pass


class SlotLeakPoolHandle(PoolHandle):
    """Blocking without a timeout; a connection given back after a failure loses its slot."""

    name = "slot_leak"

    def __init__(self, target: DriverTarget, kwargs: dict[str, Any], cap: int) -> None:
        super().__init__(None, max_sessions=cap, checkout_timeout=None)
        self._target = target
        self._kwargs = kwargs
        self._cap = cap
        self._cond = threading.Condition()
        self._idle: list[Any] = []
        self._used = 0  # slots taken (in use, or lost)
        self._closed = False
        self.lost = 0

    def connection(self) -> Any:
        with self._cond:
            while not self._idle and self._used >= self._cap:
                if self._closed:
                    raise _PoolClosedError("the pool was closed while waiting")
                self._cond.wait()  # the bug: no timeout
            if self._closed:
                raise _PoolClosedError("the pool is closed")
            raw = self._idle.pop() if self._idle else None
            self._used += 1
        if raw is None:
            target = self._target
            factory = target.module.DB if target.name == "pg" else target.module.connect
            try:
                raw = factory(*target.args, **self._kwargs)
            except BaseException:
                with self._cond:
                    self._used -= 1
                    self._cond.notify()
                raise
        return _SlotLease(self, raw)

    def give_back(self, raw: Any, failed: bool) -> None:
        with contextlib.suppress(Exception):
            raw.rollback()
        if failed:
            self.lost += 1  # the bug: the slot is never freed
            with contextlib.suppress(Exception):
                raw.close()
            return
        with self._cond:
            self._used -= 1
            self._idle.append(raw)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for raw in idle:
            with contextlib.suppress(Exception):
                raw.close()


class _SlotLease:
    def __init__(self, pool: SlotLeakPoolHandle, raw: Any) -> None:
        self._pool = pool
        self._raw = raw
        self._failed = False

    def begin(self, *args: Any, **kwargs: Any) -> None:
        begin = getattr(self._raw, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def rollback(self) -> None:
        self._failed = True  # the workload rolls back only after a failure
        self._raw.rollback()

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            self._pool.give_back(raw, self._failed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def slot_leak(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """A pool that loses a slot per failed transaction and then waits for ever."""
    return SlotLeakPoolHandle(target, target_kwargs(target, settings), settings.cap)


class StickyDeadPoolHandle(PoolHandle):
    """Lends connections in turn (FIFO, after opening up to ``cap``); replaces those found
    dead when given back, except the first one."""

    name = "sticky_dead"

    def __init__(
        self, target: DriverTarget, kwargs: dict[str, Any], cap: int, checkout_timeout: float
    ) -> None:
        from tether.simple_pool.drivers import adapter_for

        super().__init__(None, max_sessions=cap, checkout_timeout=checkout_timeout)
        self._target = target
        self._kwargs = kwargs
        self._cap = cap
        self._adapter = adapter_for(target.creator)
        self._cond = threading.Condition()
        self._idle: collections.deque[Any] = collections.deque()
        self._count = 0  # connections that exist: idle or lent
        self._closed = False
        self.kept: Any = None  # the dead connection it keeps lending (the bug)

    def connection(self) -> Any:
        deadline = time.monotonic() + float(self.checkout_timeout or 0)
        with self._cond:
            while not self._idle and self._count >= self._cap:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise TimeoutError("no free connection")
                self._cond.wait(remaining)
            if self._closed:
                raise _PoolClosedError("the pool is closed")
            # It opens connections up to its cap before it reuses one.
            raw = self._idle.popleft() if self._count >= self._cap else None
            if raw is None:
                self._count += 1
        if raw is None:
            target = self._target
            factory = target.module.DB if target.name == "pg" else target.module.connect
            try:
                raw = factory(*target.args, **self._kwargs)
            except BaseException:
                with self._cond:
                    self._count -= 1
                    self._cond.notify()
                raise
        return _StickyLease(self, raw)

    def give_back(self, raw: Any) -> None:
        with contextlib.suppress(Exception):
            raw.rollback()
        dead = self._adapter.is_closed(raw)
        with self._cond:
            if dead and self.kept is None:
                self.kept = raw  # the bug: this one is never replaced
            keep = not self._closed and (not dead or raw is self.kept)
            if keep:
                self._idle.append(raw)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            with contextlib.suppress(Exception):
                raw.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
            self._count -= len(idle)
            self._cond.notify_all()
        for raw in idle:
            with contextlib.suppress(Exception):
                raw.close()


class _StickyLease:
    def __init__(self, pool: StickyDeadPoolHandle, raw: Any) -> None:
        self._pool = pool
        self._raw = raw

    def begin(self, *args: Any, **kwargs: Any) -> None:
        begin = getattr(self._raw, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            self._pool.give_back(raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def sticky_dead(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """A pool that keeps lending the first connection it found dead."""
    return StickyDeadPoolHandle(
        target, target_kwargs(target, settings), settings.cap, settings.timeouts.checkout
    )


register_pool("dbutils_implicit_tx", dbutils_implicit_tx)
register_pool("slot_leak", slot_leak)
register_pool("never_timeout", never_timeout)
register_pool("leaky", leaky)
register_pool("sticky_dead", sticky_dead)
