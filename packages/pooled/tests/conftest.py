"""Shared helpers: a fake DB-API driver for pure pool logic, and pool builders for real drivers."""

from __future__ import annotations

import gc
import itertools
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tether.pooled import PooledDB, PooledPg

# -- a fake DB-API 2 driver that counts round trips -------------------------------------------


class FakeError(Exception):
    pass


class FakeOperationalError(FakeError):
    pass


class FakeConnection:
    """Knows whether a transaction is open and counts what reaches the 'server'."""

    ids = itertools.count(1)

    def __init__(self, driver: FakeDriver, **kwargs: Any) -> None:
        self.driver = driver
        self.kwargs = kwargs
        self.id = next(self.ids)
        self.closed = False
        self.in_transaction = False
        self.autocommit = False
        self.round_trips = 0
        self.rollbacks = 0
        self.alive = True
        self.session: dict[str, Any] = {}
        self.owner: int | None = None  # the thread using it, for ownership checks

    def _trip(self) -> None:
        if self.closed:
            raise FakeError("connection closed")
        if not self.alive:
            raise FakeOperationalError("server closed the connection unexpectedly")
        self.round_trips += 1
        self.driver.round_trips += 1

    def cursor(self) -> FakeCursor:
        if self.closed:
            raise FakeError("connection closed")
        return FakeCursor(self)

    def commit(self) -> None:
        self._trip()
        self.in_transaction = False

    def rollback(self) -> None:
        self._trip()
        self.rollbacks += 1
        self.in_transaction = False
        if self.driver.rollback_fails:
            raise FakeError("rollback failed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.driver.closed += 1

    def fake_feature(self) -> str:
        return f"feature of {self.id}"


class FakeCursor:
    def __init__(self, con: FakeConnection) -> None:
        self.con = con
        self.rows: list[tuple[Any, ...]] = []
        self.description: Any = None

    def execute(self, sql: str, params: Any = None) -> None:
        self.con._trip()
        self.con.driver.statements.append(sql)
        if sql.upper().startswith("SET "):
            name, value = sql[4:].split("=")
            self.con.session[name.strip()] = value.strip()
        elif not sql.upper().startswith("SELECT") and not self.con.autocommit:
            self.con.in_transaction = True
        self.rows = [(1,)]
        self.description = (("x",),)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def close(self) -> None:
        pass


class FakeDriver(types.ModuleType):
    """A DB-API 2 'module' (so that DBUtils-style creator checks see a module)."""

    def __init__(self, threadsafety: int = 2) -> None:
        super().__init__("fakedb")
        self.threadsafety = threadsafety
        self.apilevel = "2.0"
        self.Error = FakeError
        self.OperationalError = FakeOperationalError
        self.opened = 0
        self.closed = 0
        self.round_trips = 0
        self.statements: list[str] = []
        self.connect_delay = 0.0
        self.down = False
        self.connect_error: BaseException | None = None
        self.rollback_fails = False
        self.connections: list[FakeConnection] = []
        self.connect_kwargs: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def connect(self, **kwargs: Any) -> FakeConnection:
        self.connect_kwargs.append(kwargs)
        if self.connect_delay:
            time.sleep(self.connect_delay)
        if self.down:
            raise FakeOperationalError("connection refused")
        if self.connect_error is not None:
            raise self.connect_error
        con = FakeConnection(self, **kwargs)
        with self.lock:
            self.opened += 1
            self.connections.append(con)
        return con

    def kill_all(self) -> None:
        for con in self.connections:
            con.alive = False


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def fake_pool(fake: FakeDriver) -> Iterator[Any]:
    """A factory of PooledDB pools on the fake driver, closed after the test."""
    pools: list[PooledDB] = []

    def make(*args: Any, **kwargs: Any) -> PooledDB:
        pool = PooledDB(fake, *args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


# -- real drivers -------------------------------------------------------------------------------


def make_pool(target: Any, **options: Any) -> Any:
    """A pool for a harness target: PooledPg for classic ``pg``, else PooledDB.

    ``options`` are the pool's (by keyword); the target's connect arguments follow.
    """
    kwargs = dict(target.kwargs)
    if target.name == "sqlite3":
        kwargs["database"] = target.args[0]  # PooledDB's positionals come before *args
    if target.name == "pg":
        return PooledPg(**options, **kwargs)
    return PooledDB(target.creator, **options, **kwargs)


def execute(target: Any, db: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run ``sql`` on a pooled connection (either API); rows, or [] when there are none."""
    if target.name == "pg":
        result = db.query(sql, list(params)) if params else db.query(sql)
        if result is None or isinstance(result, (str, int)):
            return []
        return [tuple(row) for row in result.getresult()]
    cursor = db.cursor()
    try:
        cursor.execute(sql, params) if params else cursor.execute(sql)
        if cursor.description is None:
            return []
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def backend_id(target: Any, db: Any) -> int:
    """The server session id of a pooled connection."""
    return int(execute(target, db, target.backend_id_sql)[0][0])


@pytest.fixture
def pools() -> Iterator[list[Any]]:
    """Pools to close after the test (append to it)."""
    made: list[Any] = []
    yield made
    for pool in made:
        pool.close()
    gc.collect()
