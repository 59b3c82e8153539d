"""One small adapter class per pool under test, and the registry of them.

Every adapter gives the same four operations over its pool's own API:
``open(target, size=..., min_idle=...)``, ``checkout() -> handle``,
``checkin(handle)`` and ``close()``; ``connection(handle)`` is the DB-API
connection to run a query on. The phases only ever call these, so a pool is
added to every phase by adding one class here.

An adapter that cannot run somewhere says why (:meth:`PoolAdapter.unsupported`):
the package is not installed yet, the pool is PostgreSQL-only, it forces
autocommit, it cannot grow... The phases print that reason in the table
instead of a number.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from targets import Target

__all__ = ["ADAPTERS", "PoolAdapter", "adapters"]

TIMEOUT = 30.0  # seconds a checkout may wait; every pool gets the same


class PoolAdapter:
    """The benchmark's view of one pool. Subclasses set the class attributes."""

    #: Row name in the tables ("tether.pooled").
    key: ClassVar[str]
    #: "tether", "peer" or "baseline".
    family: ClassVar[str]
    #: Importable distribution the pool comes from (for the "not installed" reason).
    requires: ClassVar[str] = ""
    #: Databases it runs on.
    kinds: ClassVar[frozenset[str]] = frozenset({"sqlite", "postgresql"})
    #: Shares at most ``size`` connections among all threads (a "pool of 8").
    capped: ClassVar[bool] = True
    #: One connection per thread, kept for the thread's life.
    thread_affine: ClassVar[bool] = False
    #: Can start with ``min_idle`` connections and grow to ``size`` (the spike test).
    grows: ClassVar[bool] = True
    #: Works with autocommit off (some pools force autocommit on).
    autocommit_off: ClassVar[bool] = True
    #: Has a validation option; ``validated=True`` turns it on.
    can_validate: ClassVar[bool] = False
    #: What "validated" means for this pool (shown in the report).
    validation: ClassVar[str] = ""
    #: Always checks its connections on checkout, even with default settings.
    note: ClassVar[str] = ""

    def __init__(self, validated: bool = False) -> None:
        self.validated = validated
        self.target: Target | None = None

    @property
    def name(self) -> str:
        return f"{self.key} [{self.validation}]" if self.validated else self.key

    def import_error(self) -> str | None:
        """Why the pool cannot be imported, or None."""
        try:
            self._import()
        except ImportError as exc:
            return f"{self.requires or self.key} not importable ({exc})"
        return None

    def _import(self) -> None:
        """Import the pool's module (raises ImportError when it is not there yet)."""

    def unsupported(self, kind: str, *, autocommit: bool = True, spike: bool = False) -> str | None:
        """Why this adapter cannot run with these settings, or None when it can."""
        error = self.import_error()
        if error:
            return error
        if kind not in self.kinds:
            return f"{kind} not supported"
        if not autocommit and not self.autocommit_off:
            return "forces autocommit on"
        if spike and not self.grows:
            return "cannot start at 5 and grow to 50"
        return None

    # -- the four operations --------------------------------------------------------------

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        raise NotImplementedError

    # Most pools under test share DBUtils' shape: connection() to check out,
    # close() on the connection to check in, close() on the pool.
    pool: Any

    def checkout(self) -> Any:
        return self.pool.connection()

    def checkin(self, handle: Any) -> None:
        handle.close()

    def connection(self, handle: Any) -> Any:
        """The DB-API connection behind a handle (to run a query on)."""
        return handle

    def close(self) -> None:
        self.pool.close()

    def prewarm(self) -> None:
        """Make sure the initial connections exist before a measurement (default: nothing)."""


# -- baselines ------------------------------------------------------------------------------


class RawHeld(PoolAdapter):
    """No pool: each thread keeps one raw connection for its whole life (cost 0)."""

    key = "baseline: raw held"
    family = "baseline"
    capped = False
    thread_affine = True
    grows = False

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        self.target = target
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._rollback = not target.autocommit

    def checkout(self) -> Any:
        try:
            return self._local.conn
        except AttributeError:
            assert self.target is not None
            conn = self._local.conn = self.target.connect()
            with self._lock:
                self._all.append(conn)
            return conn

    def checkin(self, handle: Any) -> None:
        # With autocommit off, ending the transaction is the application's job here.
        if self._rollback:
            handle.rollback()

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()


class ConnectPerRequest(PoolAdapter):
    """No pool: a new connection for every request, closed after it."""

    key = "baseline: connect per request"
    family = "baseline"
    capped = False

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        self.target = target

    def checkout(self) -> Any:
        assert self.target is not None
        return self.target.connect()

    def checkin(self, handle: Any) -> None:
        handle.close()

    def close(self) -> None:
        pass


class FairHandoff(PoolAdapter):
    """A fair pool with nothing checked: the ceiling of any fair pool's hand-off in CPython.

    A deque of connections and a FIFO of waiters, each served directly by the
    checkin (no barging), as tether.pooled and psycopg_pool serve theirs. It
    checks nothing, wraps nothing and never reconnects. Above the pool size
    every checkout waits, and the wait costs the same for every fair pool: a
    blocked thread, a futex wake, one more context switch per request.
    Measured 2026-12-07 (client on one CPU, 16 threads on 8): 1.9 voluntary
    context switches per request against raw-held's 0.8, 16 µs of system CPU
    against 11.5; this baseline 1.06-1.16x psycopg_pool, tether.pooled
    0.97-1.05x. A pool's throughput above its size, relative to this row,
    is what the pool's own per-request work costs.
    """

    key = "baseline: fair hand-off, nothing checked"
    family = "baseline"
    grows = False

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from collections import deque

        self.target = target
        self._all = [target.connect() for _ in range(size)]
        self._idle = deque(self._all)
        self._waiters: deque[list[Any]] = deque()
        self._lock = threading.Lock()
        self._rollback = not target.autocommit

    def checkout(self) -> Any:
        with self._lock:
            if self._idle and not self._waiters:
                return self._idle.pop()
            waiter: list[Any] = [threading.Lock(), None]
            waiter[0].acquire()
            self._waiters.append(waiter)
        if not waiter[0].acquire(True, TIMEOUT):
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise TimeoutError(f"no connection within {TIMEOUT} s")
        return waiter[1]  # served, perhaps while timing out

    def checkin(self, handle: Any) -> None:
        # As for raw-held: with autocommit off, ending the transaction is the application's job.
        if self._rollback:
            handle.rollback()
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter[1] = handle
                waiter[0].release()
            else:
                self._idle.append(handle)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()


# -- tether ---------------------------------------------------------------------------------


class TetherSimplePool(PoolAdapter):
    """tether.simple_pool.SimplePooledDB: a fixed set of connections."""

    key = "tether.simple_pool"
    family = "tether"
    requires = "tether-simple-pool"
    grows = False

    def _import(self) -> None:
        import tether.simple_pool  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from tether.simple_pool import SimplePooledDB

        self.target = target
        self.pool = SimplePooledDB(target.creator(), size, timeout=TIMEOUT)


class TetherPersistent(PoolAdapter):
    """tether.persistent.PersistentDB: one steady connection per thread."""

    key = "tether.persistent"
    family = "tether"
    requires = "tether-persistent"
    capped = False
    thread_affine = True
    grows = False
    can_validate = True
    validation = "ping=7"

    def _import(self) -> None:
        from tether.persistent import PersistentDB  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from tether.persistent import PersistentDB

        self.target = target
        kwargs: dict[str, Any] = {"ping": 7} if self.validated else {}
        self.pool = PersistentDB(target.creator(), **kwargs)

    def checkout(self) -> Any:
        return self.pool.connection()

    def checkin(self, handle: Any) -> None:
        handle.close()

    def close(self) -> None:
        close = getattr(self.pool, "close", None)
        if close is not None:
            close()


class TetherPooled(PoolAdapter):
    """tether.pooled.PooledDB: a shared pool of steady connections."""

    key = "tether.pooled"
    family = "tether"
    requires = "tether-pooled"
    can_validate = True
    # ping=7 alone pings at checkout only after 1 s idle (ping_after): force every checkout
    validation = "ping=7, ping_after=0"

    def _import(self) -> None:
        from tether.pooled import PooledDB  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from tether.pooled import PooledDB

        self.target = target
        kwargs: dict[str, Any] = {"ping": 7, "ping_after": 0} if self.validated else {}
        self.pool = PooledDB(
            target.creator(),
            mincached=size if min_idle is None else min_idle,
            maxcached=size,
            maxconnections=size,
            blocking=True,
            **kwargs,
        )


# -- peers ----------------------------------------------------------------------------------


class DBUtilsPooled(PoolAdapter):
    """DBUtils 3.2 dbutils.pooled_db.PooledDB."""

    key = "DBUtils PooledDB"
    family = "peer"
    requires = "DBUtils==3.2.0"
    can_validate = True
    validation = "ping=7"

    def _import(self) -> None:
        import dbutils.pooled_db  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from dbutils.pooled_db import PooledDB

        self.target = target
        self.pool = PooledDB(
            target.creator(),
            mincached=size if min_idle is None else min_idle,
            maxcached=size,
            maxconnections=size,
            blocking=True,
            ping=7 if self.validated else 1,
        )


class DBUtilsPersistent(PoolAdapter):
    """DBUtils 3.2 dbutils.persistent_db.PersistentDB."""

    key = "DBUtils PersistentDB"
    family = "peer"
    requires = "DBUtils==3.2.0"
    capped = False
    thread_affine = True
    grows = False
    can_validate = True
    validation = "ping=7"

    def _import(self) -> None:
        import dbutils.persistent_db  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from dbutils.persistent_db import PersistentDB

        self.target = target
        self.pool = PersistentDB(target.creator(), ping=7 if self.validated else 1)
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def checkout(self) -> Any:
        return self.pool.connection()

    def checkin(self, handle: Any) -> None:
        handle.close()  # a no-op: DBUtils keeps the thread's connection (closeable=False)

    def close(self) -> None:
        # PersistentDB has no close(); its connections close when their threads end.
        self.pool = None


class PsycopgPool(PoolAdapter):
    """psycopg_pool.ConnectionPool with getconn() / putconn()."""

    key = "psycopg_pool getconn/putconn"
    family = "peer"
    requires = "psycopg-pool"
    kinds = frozenset({"postgresql"})
    can_validate = True
    validation = "check=check_connection"

    def _import(self) -> None:
        import psycopg_pool  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        import logging

        import psycopg
        from psycopg.conninfo import make_conninfo
        from psycopg_pool import ConnectionPool

        # It logs a warning for every connection returned inside a transaction.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self.target = target

        class Counted(psycopg.Connection):
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                target.before_connect()
                return super().connect(*args, **kwargs)

        params = dict(target.params)
        kwargs = {"autocommit": target.autocommit}
        if "application_name" in params:
            kwargs["application_name"] = params.pop("application_name")
        self.pool = ConnectionPool(
            make_conninfo(**params),
            min_size=size if min_idle is None else min_idle,
            max_size=size,
            kwargs=kwargs,
            connection_class=Counted,
            check=ConnectionPool.check_connection if self.validated else None,
            timeout=TIMEOUT,
            open=True,
        )

    def prewarm(self) -> None:
        self.pool.wait(TIMEOUT)

    def checkout(self) -> Any:
        return self.pool.getconn()

    def checkin(self, handle: Any) -> None:
        self.pool.putconn(handle)

    def close(self) -> None:
        self.pool.close()


class PsycopgPoolContext(PsycopgPool):
    """psycopg_pool.ConnectionPool with its ``with pool.connection()`` context manager."""

    key = "psycopg_pool with connection()"

    def checkout(self) -> Any:
        manager = self.pool.connection()
        return manager, manager.__enter__()

    def checkin(self, handle: Any) -> None:
        handle[0].__exit__(None, None, None)  # commits an open transaction, as `with` does

    def connection(self, handle: Any) -> Any:
        return handle[1]


class SQLAlchemyQueuePool(PoolAdapter):
    """SQLAlchemy 2 sqlalchemy.pool.QueuePool with a creator function."""

    key = "SQLAlchemy QueuePool"
    family = "peer"
    requires = "SQLAlchemy>=2"
    can_validate = True
    validation = "pre_ping=True"

    def _import(self) -> None:
        import sqlalchemy.pool  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from sqlalchemy.pool import QueuePool

        self.target = target
        base = size if min_idle is None else min_idle
        # The dialect an Engine would give its pool (pre_ping needs one).
        dialect: Any
        if target.kind == "postgresql":
            from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

            dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
        else:
            from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

            dialect = SQLiteDialect_pysqlite()
        self.pool = QueuePool(
            target.creator(),
            pool_size=base,
            max_overflow=size - base,
            timeout=TIMEOUT,
            pre_ping=self.validated,
            dialect=dialect,
        )
        # QueuePool opens lazily: open the base connections now, as the other pools do.
        held = [self.pool.connect() for _ in range(base)]
        for fairy in held:
            fairy.close()

    def checkout(self) -> Any:
        return self.pool.connect()

    def checkin(self, handle: Any) -> None:
        handle.close()

    def close(self) -> None:
        self.pool.dispose()


class PeeweePool(PoolAdapter):
    """peewee's playhouse.pool PooledPostgresqlDatabase / PooledSqliteDatabase."""

    key = "peewee playhouse.pool"
    family = "peer"
    requires = "peewee"
    autocommit_off = False  # peewee sets autocommit=True on every connection it opens
    note = "peewee checks every idle PostgreSQL connection with SELECT 1 at checkout"

    def _import(self) -> None:
        import playhouse.pool  # noqa: F401

    def open(self, target: Target, *, size: int, min_idle: int | None = None) -> None:
        from playhouse import pool as pw_pool

        self.target = target
        base: type[Any]
        if target.kind == "postgresql":
            import peewee

            class CountedPg(peewee.PostgresqlDatabase):
                def _connect(self) -> Any:
                    target.before_connect()
                    return super()._connect()  # type: ignore[misc]

            base = type("Pooled", (pw_pool._PooledPostgresqlDatabase, CountedPg), {})
            params = dict(target.params)
            database = params.pop("dbname")
            self.db = base(database, max_connections=size, timeout=TIMEOUT, **params)
        else:
            import peewee

            class CountedSqlite(peewee.SqliteDatabase):
                def _connect(self) -> Any:
                    target.before_connect()
                    return super()._connect()  # type: ignore[misc]

            base = type("Pooled", (pw_pool._PooledSqliteDatabase, CountedSqlite), {})
            params = dict(target.params)
            self.db = base(
                params.pop("database"),
                max_connections=size,
                timeout=TIMEOUT,
                check_same_thread=False,
                **params,
            )
        # peewee opens lazily and has no minimum: open the initial connections now.
        initial = size if min_idle is None else min_idle
        conns = [self.db._connect() for _ in range(initial)]
        for conn in conns:
            self.db._close(conn)

    def checkout(self) -> Any:
        self.db.connect()
        return self.db.connection()

    def checkin(self, handle: Any) -> None:
        self.db.close()

    def close(self) -> None:
        self.db.close_all()


#: Every adapter class, in table order.
ADAPTERS: list[type[PoolAdapter]] = [
    RawHeld,
    ConnectPerRequest,
    FairHandoff,
    TetherSimplePool,
    TetherPersistent,
    TetherPooled,
    DBUtilsPersistent,
    DBUtilsPooled,
    PsycopgPool,
    PsycopgPoolContext,
    SQLAlchemyQueuePool,
    PeeweePool,
]


def adapters(*, validated: bool = False) -> list[PoolAdapter]:
    """One instance of each adapter; with ``validated``, also each validating variant."""
    out = [cls() for cls in ADAPTERS]
    if validated:
        out += [cls(validated=True) for cls in ADAPTERS if cls.can_validate]
    return out
