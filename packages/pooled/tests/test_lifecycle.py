"""A pool's lifecycle, the ways out of a pool, and manage(): against PostgreSQL and sqlite3.

* ``with PooledDB(...) as pool:`` closes it; ``close(timeout)`` waits for the
  borrowed connections (then returns, as psycopg_pool's does); threads
  blocked in a checkout get PoolClosed at once;
* ``resize()`` at run time: growing serves waiters, shrinking closes idle
  connections now and retires borrowed ones when given back, never under
  their borrower;
* ``invalidate()`` and ``detach()``, as SQLAlchemy's connection proxy has them;
* ``manage(module)``, SQLAlchemy 1.x's ``pool.manage``.

Every test ends with the pool's books balanced (``checkouts == checkins``,
``opened - closed - detached == size``) and, on PostgreSQL, with the server's
session count equal to what the pool says it holds.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tether.pooled import (
    InvalidConnectionError,
    NotSupportedError,
    PoolClosed,
    PooledDB,
    clear_managers,
    manage,
)
from tether.simple_pool import SimplePooledDB

from .conftest import backend_id, execute, make_pool
from .test_checkout import _wait_for

#: The pools tested against real servers: psycopg (DB-API, PostgreSQL),
#: classic pg (PooledPg, PostgreSQL) and sqlite3 (a file).
TARGETS = ["psycopg", "pg", "sqlite3"]


def _balanced(pool: Any, target: Any) -> dict[str, Any]:
    """The pool's stats, checked for balance once it is quiet; the server agrees."""
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"], stats
    assert stats["in_use"] == 0 and stats["waiting"] == 0 and stats["opening"] == 0, stats
    assert stats["opened"] - stats["closed"] - stats["detached"] == stats["size"], stats
    if target.server is not None:
        _wait_for(lambda: target.session_count() == stats["size"], timeout=5)
    return stats


class _Checkouts:
    """Threads blocked in ``pool.connection()``: what each got, and when."""

    def __init__(self, pool: Any, count: int, *, hold: float = 0.0) -> None:
        self.results: list[Any] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(pool, hold), daemon=True) for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()
        _wait_for(lambda: pool.stats()["waiting"] == count)

    def _run(self, pool: Any, hold: float) -> None:
        try:
            db = pool.connection()
        except BaseException as exc:
            result: Any = exc
        else:
            result = "served"
            time.sleep(hold)
            db.close()
        with self._lock:
            self.results.append(result)
            self.times.append(time.monotonic())

    def join(self, timeout: float = 10.0) -> list[Any]:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a checkout hung"
        return self.results


# -- with, close(timeout) -----------------------------------------------------------------------


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_with_closes_the_pool_and_every_connection(driver_target: Any) -> None:
    target = driver_target
    with make_pool(target, mincached=2, maxconnections=3) as pool:
        with pool.connection() as db:
            assert execute(target, db, "SELECT 1") == [(1,)]
        if target.server is not None:
            assert target.session_count() == 2
    stats = _balanced(pool, target)
    assert stats["pool_closed"] and stats["size"] == 0
    with pytest.raises(PoolClosed):
        pool.connection()


def test_with_closes_the_pool_when_the_block_raises() -> None:
    with pytest.raises(ZeroDivisionError), PooledDB(sqlite3, database=":memory:") as pool:
        pool.connection().close()
        1 / 0  # noqa: B018
    assert pool.stats()["pool_closed"] and pool.stats()["size"] == 0


def test_the_simple_pool_closes_on_with_too() -> None:
    with SimplePooledDB(sqlite3, 2, database=":memory:") as pool:
        pool.connection().close()
    with pytest.raises(PoolClosed):
        pool.connection()


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_close_timeout_fails_waiters_at_once_and_waits_for_borrowed_connections(
    driver_target: Any,
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=2, blocking=True, checkout_timeout=20)
    first, second = pool.connection(), pool.connection()
    waiters = _Checkouts(pool, 3)
    start = time.monotonic()
    threading.Timer(0.3, first.close).start()
    threading.Timer(0.5, second.close).start()
    pool.close(timeout=10)
    elapsed = time.monotonic() - start
    # Waited for both borrowed connections, not for the deadline; nothing is left open.
    assert 0.45 <= elapsed < 5, elapsed
    assert all(isinstance(result, PoolClosed) for result in waiters.join()), waiters.results
    assert max(waiters.times) - start < 0.25  # the blocked checkouts failed at once
    stats = _balanced(pool, target)
    assert stats["size"] == 0 and stats["closed"] == stats["opened"] == 2
    if target.server is not None:
        assert target.session_count() == 0  # closed when close() returned, not later


@pytest.mark.parametrize("driver_target", ["psycopg", "sqlite3"], indirect=True)
def test_close_timeout_returns_at_the_deadline_and_never_closes_under_the_borrower(
    driver_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=2, name=f"late-{target.name}")
    held = pool.connection()
    pool.connection().close()  # idle: closed at once
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tether.pooled"):
        pool.close(timeout=0.2)  # returns, does not raise
    assert 0.18 <= time.monotonic() - start < 2
    assert "1 connection(s) still checked out" in caplog.text
    assert pool.stats()["in_use"] == 1 and pool.stats()["size"] == 1
    assert execute(target, held, "SELECT 1") == [(1,)]  # still the borrower's, still open
    held.close()  # given back to a closed pool: closed now
    stats = _balanced(pool, target)
    assert stats["size"] == 0
    pool.close(timeout=0.1)  # twice: harmless, nothing to wait for


def test_close_timeout_is_checked_before_anything_is_closed() -> None:
    pool = PooledDB(sqlite3, database=":memory:")
    with pytest.raises(ValueError, match="^timeout"):
        pool.close(timeout=-1)
    with pytest.raises(TypeError, match="^timeout"):
        pool.close(timeout="5")  # type: ignore[arg-type]
    assert not pool.stats()["pool_closed"]
    pool.close(timeout=0)
    assert pool.stats()["pool_closed"]


# -- resize -------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_growing_serves_blocked_checkouts_at_once(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=1, blocking=True, checkout_timeout=20)
    pools.append(pool)
    held = pool.connection()
    waiters = _Checkouts(pool, 3, hold=0.3)  # each holds its connection: all three at once
    start = time.monotonic()
    pool.resize(maxconnections=4)
    assert pool.stats()["maxconnections"] == 4
    _wait_for(lambda: pool.stats()["in_use"] == 4, timeout=5)
    assert waiters.join() == ["served"] * 3
    assert max(waiters.times) - start < 5  # not the 20 s checkout timeout
    held.close()
    stats = _balanced(pool, target)
    assert stats["size"] == 4 and stats["timeouts"] == 0


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_shrinking_closes_idle_now_and_retires_borrowed_ones_when_given_back(
    driver_target: Any, pools: Any
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=4)
    pools.append(pool)
    held = [pool.connection() for _ in range(4)]
    for db in held[2:]:
        db.close()
    held = held[:2]
    assert pool.stats()["idle"] == 2
    pool.resize(maxconnections=1)
    stats = pool.stats()
    assert stats["maxconnections"] == 1 and stats["idle"] == 0 and stats["size"] == 2
    if target.server is not None:
        _wait_for(lambda: target.session_count() == 2)
    # Over the limit, but neither borrower loses its connection.
    for db in held:
        assert execute(target, db, "SELECT 1") == [(1,)]
    held[0].close()  # retired: the pool fits again
    assert pool.stats()["size"] == 1
    held[1].close()  # kept: the pool is at its limit, not over it
    stats = _balanced(pool, target)
    assert stats["size"] == 1 and stats["idle"] == 1 and stats["closed"] == 3
    with pool.connection() as db:  # the lock-free hot path again, on the one left
        assert execute(target, db, "SELECT 1") == [(1,)]


@pytest.mark.parametrize("driver_target", ["psycopg", "sqlite3"], indirect=True)
def test_shrinking_while_threads_wait_hands_them_connections_within_the_new_limit(
    driver_target: Any, pools: Any
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=3, blocking=True, checkout_timeout=20)
    pools.append(pool)
    held = [pool.connection() for _ in range(3)]
    waiters = _Checkouts(pool, 4, hold=0.05)
    pool.resize(maxconnections=1)
    assert pool.stats()["waiting"] == 4  # nothing to hand out: all three are borrowed
    held[0].close()  # retired: 2 left, still over the limit, the waiters keep waiting
    held[1].close()  # retired: the pool fits
    assert pool.stats()["size"] == 1 and pool.stats()["waiting"] == 4
    held[2].close()  # kept, and handed from waiter to waiter
    seen: list[int] = []
    while len(waiters.results) < 4 and len(seen) < 2000:
        seen.append(pool.stats()["size"])
        time.sleep(0.002)
    assert waiters.join() == ["served"] * 4
    assert max(seen) == 1  # the pool never grew past its new limit again
    stats = _balanced(pool, target)
    assert stats["size"] == 1 and stats["timeouts"] == 0 and stats["closed"] == 2
    assert stats["opened"] == 3  # served by a connection given back, none opened


@pytest.mark.parametrize("driver_target", ["psycopg", "sqlite3"], indirect=True)
def test_resizing_mincached_fills_and_stats_show_the_new_limits(
    driver_target: Any, pools: Any
) -> None:
    target = driver_target
    pool = make_pool(target, maxcached=1, maxconnections=5)
    pools.append(pool)
    pool.resize(mincached=3)
    stats = pool.stats()
    assert stats["mincached"] == 3 and stats["maxcached"] == 3  # raised as the constructor does
    _wait_for(lambda: pool.stats()["size"] == 3, timeout=10)
    pool.resize(mincached=0, maxconnections=0)
    stats = pool.stats()
    assert (stats["mincached"], stats["maxcached"], stats["maxconnections"]) == (0, 1, 0)
    _wait_for(lambda: pool.stats()["idle"] == 1, timeout=10)  # back to maxcached=1
    _balanced(pool, target)


def test_resize_checks_its_arguments_as_the_constructor_does() -> None:
    pool = PooledDB(sqlite3, maxconnections=2, database=":memory:")
    with pytest.raises(ValueError, match="^maxconnections"):
        pool.resize(maxconnections=-1)
    with pytest.raises(TypeError, match="^maxconnections"):
        pool.resize(maxconnections=True)
    with pytest.raises(TypeError, match="^mincached"):
        pool.resize(mincached="2")
    with pytest.raises(TypeError):
        pool.resize(3)  # type: ignore[misc]  # keyword-only
    assert pool.stats()["maxconnections"] == 2  # nothing changed by a bad call
    pool.resize(maxconnections=None)  # None is 0, no limit, as in the constructor
    assert pool.stats()["maxconnections"] == 0
    pool.close()
    with pytest.raises(PoolClosed):
        pool.resize(maxconnections=3)


# -- invalidate, detach -------------------------------------------------------------------------


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_invalidate_closes_the_session_and_frees_the_slot(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=1, blocking=True, checkout_timeout=20)
    pools.append(pool)
    db = pool.connection()
    old = backend_id(target, db) if target.server is not None else None
    waiters = _Checkouts(pool, 1)
    db.invalidate()
    assert waiters.join() == ["served"]  # the slot went to the waiter, as a new connection
    with pytest.raises(InvalidConnectionError):
        db.cursor() if target.name != "pg" else db.query("SELECT 1")
    db.invalidate()  # idempotent
    with pool.connection() as fresh:
        if old is not None:
            assert backend_id(target, fresh) != old
    stats = _balanced(pool, target)
    assert stats["opened"] == 2 and stats["closed"] == 1 and stats["discarded"] == 0
    pool.connection().discard()  # the older name: the same
    assert pool.stats()["closed"] == 2


@pytest.mark.parametrize("driver_target", TARGETS, indirect=True)
def test_detach_hands_the_connection_over_and_the_pool_forgets_it(
    driver_target: Any, pools: Any
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=1, blocking=True, checkout_timeout=20)
    pools.append(pool)
    db = pool.connection()
    session = backend_id(target, db) if target.server is not None else None
    waiters = _Checkouts(pool, 1)
    db.detach()
    assert waiters.join() == ["served"]  # its slot is free at once
    db.detach()  # twice: nothing
    stats = pool.stats()
    assert stats["detached"] == 1 and stats["size"] == 1 and stats["in_use"] == 0
    assert stats["checkouts"] == stats["checkins"] == 2
    assert stats["opened"] - stats["closed"] - stats["detached"] == stats["size"]
    if target.server is not None:
        assert target.session_count() == 2  # the pool's one, and the detached one
    # Closing the pool does not touch it: it is the caller's now.
    pool.close()
    assert execute(target, db, "SELECT 1") == [(1,)]
    if session is not None:
        assert backend_id(target, db) == session
        assert target.session_count() == 1
    db.close()  # really closes
    with pytest.raises(InvalidConnectionError):
        execute(target, db, "SELECT 1")
    if target.server is not None:
        _wait_for(lambda: target.session_count() == 0)
    assert pool.stats()["detached"] == 1 and pool.stats()["size"] == 0


@pytest.mark.parametrize("driver_target", ["psycopg", "sqlite3"], indirect=True)
def test_a_detached_connection_in_with_commits_then_closes(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=2)
    pools.append(pool)
    table = target.unique_table()
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    with pool.connection() as db:
        db.detach()
        execute(target, db, f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(InvalidConnectionError):
        db.cursor()
    with pool.connection() as other:
        assert execute(target, other, f"SELECT x FROM {table}") == [(1,)]
    stats = _balanced(pool, target)
    assert stats["detached"] == 1 and stats["leaks"] == 0


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
def test_shared_connections_refuse_detach_and_invalidate(dbapi_target: Any) -> None:
    target = dbapi_target
    with PooledDB(target.module, maxshared=2, **target.kwargs) as pool:
        db = pool.connection()  # psycopg's threadsafety is 2: a share
        with pytest.raises(NotSupportedError, match="^detach"):
            db.detach()
        with pytest.raises(NotSupportedError):
            db.invalidate()
        assert execute(target, db, "SELECT 1") == [(1,)]
        db.close()
        assert pool.stats()["detached"] == 0


# -- manage() -----------------------------------------------------------------------------------


@pytest.fixture
def managers() -> Iterator[None]:
    yield
    clear_managers()


def test_manage_pools_per_set_of_connect_arguments(tmp_path: Any, managers: None) -> None:
    db_file = str(tmp_path / "app.db")
    proxy = manage(sqlite3, maxconnections=2)
    assert manage(sqlite3, maxconnections=2) is proxy  # the same module and options
    assert manage(sqlite3, maxconnections=3) is not proxy
    # Other names are the module's.
    assert proxy.Error is sqlite3.Error and proxy.paramstyle == "qmark"
    assert proxy.sqlite_version == sqlite3.sqlite_version
    one = proxy.connect(db_file, check_same_thread=False, timeout=2)
    one.cursor().execute("CREATE TABLE t (x)")
    one.commit()
    one.close()
    two = proxy.connect(db_file, timeout=2, check_same_thread=False)  # keyword order: no matter
    assert len(proxy.pools()) == 1
    two.close()
    proxy.connect(":memory:", check_same_thread=False).close()
    assert len(proxy.pools()) == 2
    pool = proxy.get_pool(db_file, check_same_thread=False, timeout=2)
    assert pool.stats()["checkouts"] == 2 and pool.stats()["opened"] == 1
    assert pool.stats()["maxconnections"] == 2
    proxy.dispose(":memory:", check_same_thread=False)
    assert proxy.pools() == [pool]
    proxy.close()
    assert proxy.pools() == [] and pool.stats()["pool_closed"]
    with proxy.connect(db_file, check_same_thread=False, timeout=2) as db:  # a new pool
        cursor = db.cursor()
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchall() == [(0,)]


def test_manage_keys_unhashable_arguments(tmp_path: Any, managers: None) -> None:
    def connect(database: str, tags: list[str], options: dict[str, Any], **more: Any) -> Any:
        return sqlite3.connect(database, check_same_thread=False)

    module = types.ModuleType("tagged")
    module.connect = connect  # type: ignore[attr-defined]
    module.threadsafety = 1  # type: ignore[attr-defined]
    module.Error = sqlite3.Error  # type: ignore[attr-defined]
    proxy = manage(module)
    path = str(tmp_path / "x.db")
    proxy.connect(path, tags=["a"], options={"k": 1}).close()
    proxy.connect(path, options={"k": 1}, tags=["a"]).close()
    assert len(proxy.pools()) == 1
    proxy.connect(path, tags=["b"], options={"k": 1}).close()
    assert len(proxy.pools()) == 2


def test_manage_makes_one_pool_per_key_under_a_burst(tmp_path: Any, managers: None) -> None:
    proxy = manage(sqlite3, mincached=2, maxconnections=4, blocking=True)
    path = str(tmp_path / "burst.db")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(5)
            with proxy.connect(path, check_same_thread=False) as db:
                db.cursor().execute("SELECT 1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    (pool,) = proxy.pools()
    _wait_for(lambda: pool.stats()["size"] >= 2, timeout=10)  # mincached, in the background
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"] == 8 and stats["mincached"] == 2


def test_manage_checks_its_options_when_called(managers: None) -> None:
    with pytest.raises(TypeError, match="maxconnection'"):
        manage(sqlite3, maxconnection=3)
    with pytest.raises(ValueError, match="^maxconnections"):
        manage(sqlite3, maxconnections=-1)
    with pytest.raises(TypeError, match="^mincached"):
        manage(sqlite3, mincached="2")
    with pytest.raises(TypeError, match="^module"):
        manage(object())


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
def test_manage_on_postgresql_and_clear_managers(dbapi_target: Any, managers: None) -> None:
    import psycopg

    target = dbapi_target
    password = target.kwargs["password"]
    proxy = manage(psycopg, maxconnections=3, name="app")
    db = proxy.connect(**target.kwargs)
    session = backend_id(target, db)
    db.close()
    with proxy.connect(**dict(reversed(list(target.kwargs.items())))) as again:
        assert backend_id(target, again) == session  # the same pool, the same connection
    proxy.connect(**target.kwargs, application_name="reports").close()  # another pool
    assert [pool.name for pool in proxy.pools()] == ["app-1", "app-2"]
    assert target.session_count() == 2
    assert proxy.OperationalError is psycopg.OperationalError
    for text in (repr(proxy), *(repr(pool) for pool in proxy.pools())):
        assert password not in text
    assert not any(
        password in str(value) for pool in proxy.pools() for value in pool.stats().values()
    )
    db = proxy.connect(**target.kwargs)
    with pytest.raises(proxy.Error):  # the driver's errors, through the proxy's names
        execute(target, db, "SELECT * FROM no_such_table")
    db.close()
    clear_managers()
    assert proxy.pools() == []
    _wait_for(lambda: target.session_count() == 0)
    assert manage(psycopg, maxconnections=3, name="app") is not proxy  # forgotten
