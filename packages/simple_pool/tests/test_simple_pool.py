"""The simple pool: a fixed set of connections, one borrower each, on every driver."""

from __future__ import annotations

import sqlite3
import threading
import time
import types
from typing import Any

import pytest

from tether.simple_pool import (
    NotSupportedError,
    PoolClosed,
    PooledDB,
    PooledPg,
    PoolTimeout,
    SimplePooledDB,
    SimplePooledPg,
    __version__,
)


def make_pool(target: Any, maxconnections: int, **extra: Any) -> SimplePooledDB:
    if target.name == "pg":
        return SimplePooledPg(maxconnections, *target.args, **target.kwargs, **extra)
    return SimplePooledDB(target.creator, maxconnections, *target.args, **target.kwargs, **extra)


def query_one(target: Any, db: Any, sql: str) -> Any:
    if target.name == "pg":
        return db.query(sql).getresult()[0][0]
    cursor = db.cursor()
    cursor.execute(sql)
    value = cursor.fetchone()[0]
    cursor.close()
    return value


def test_version_comes_from_package_metadata() -> None:
    assert __version__ == "0.1.0"


def test_dbutils_names_are_aliases() -> None:
    assert PooledDB is SimplePooledDB
    assert PooledPg is SimplePooledPg


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_maxconnections_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="maxconnections"):
        SimplePooledDB(sqlite3, value, ":memory:")


@pytest.mark.parametrize("value", ["3", 2.0, None, True])
def test_non_int_maxconnections_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="maxconnections"):
        SimplePooledDB(sqlite3, value, ":memory:")


@pytest.mark.parametrize("creator", [42, "sqlite3", None])
def test_creator_must_be_a_module_or_callable(creator: Any) -> None:
    with pytest.raises(TypeError, match="creator"):
        SimplePooledDB(creator, 1)


def test_module_without_connect_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="creator.*connect"):
        SimplePooledDB(types.ModuleType("nodb"), 1)


def test_threadsafety_zero_is_refused() -> None:
    fake = types.ModuleType("fakedb")
    fake.threadsafety = 0  # type: ignore[attr-defined]
    fake.connect = lambda: object()  # type: ignore[attr-defined]
    with pytest.raises(NotSupportedError, match="creator.*threadsafety 0"):
        SimplePooledDB(fake, 1)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_bad_timeout_is_a_value_error(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        SimplePooledDB(sqlite3, 1, ":memory:", timeout=timeout)


def test_repr_never_shows_connect_arguments() -> None:
    pool = SimplePooledDB(lambda **kw: sqlite3.connect(":memory:"), 1, password="hunter2")
    assert "hunter2" not in repr(pool)
    assert "1/1 idle" in repr(pool)


# -- behaviour on every driver --------------------------------------------------------------


def test_connections_are_reused_and_opened_up_front(driver_target: Any) -> None:
    pool = make_pool(driver_target, 2)
    try:
        seen = set()
        for _ in range(6):
            with pool.connection() as db:
                seen.add(id(db._raw))
                assert query_one(driver_target, db, "SELECT 1") == 1
        assert len(seen) <= 2
    finally:
        pool.close()


def test_a_connection_is_never_lent_to_two_threads(driver_target: Any) -> None:
    pool = make_pool(driver_target, 3, timeout=20)
    owners: dict[int, int] = {}
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                with pool.connection() as db:
                    key = id(db._raw)
                    with guard:
                        assert key not in owners, "connection lent twice"
                        owners[key] = threading.get_ident()
                    query_one(driver_target, db, "SELECT 1")
                    with guard:
                        del owners[key]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pool.close()
    assert not errors
    assert not any(t.is_alive() for t in threads)


def test_open_transaction_is_rolled_back_on_return(dbapi_target: Any) -> None:
    table = dbapi_target.unique_table("simple_rb")
    pool = make_pool(dbapi_target, 1)
    try:
        db = pool.connection()
        cur = db.cursor()
        cur.execute(f"CREATE TABLE {table} (x INTEGER)")
        db.commit()
        cur.execute(f"INSERT INTO {table} VALUES (1)")
        cur.close()
        db.close()  # returned without commit (and without `with`, which would commit)
        with pool.connection() as db:
            assert query_one(dbapi_target, db, f"SELECT COUNT(*) FROM {table}") == 0
            cur = db.cursor()
            cur.execute(f"DROP TABLE {table}")
            db.commit()
    finally:
        pool.close()


def test_exhausted_pool_times_out_with_a_clear_error() -> None:
    pool = SimplePooledDB(sqlite3, 1, ":memory:", timeout=0.05)
    held = pool.connection()
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="no free connection"):
        pool.connection()
    assert time.monotonic() - started < 2
    held.close()
    pool.connection().close()  # free again
    pool.close()


def test_a_waiter_gets_the_returned_connection() -> None:
    pool = SimplePooledDB(sqlite3, 1, ":memory:", check_same_thread=False, timeout=10)
    held = pool.connection()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.connection()))
    waiter.start()
    time.sleep(0.05)
    assert not got
    held.close()
    waiter.join(5)
    assert got and got[0]._raw is held._raw
    got[0].close()
    pool.close()


def test_closed_pool_says_so_and_closes_returned_connections() -> None:
    pool = SimplePooledDB(sqlite3, 2, ":memory:", check_same_thread=False)
    held = pool.connection()
    raw = held._raw
    pool.close()
    with pytest.raises(PoolClosed, match="closed"):
        pool.connection()
    held.close()
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")


def test_closing_the_pool_wakes_waiters() -> None:
    pool = SimplePooledDB(sqlite3, 1, ":memory:", check_same_thread=False, timeout=30)
    held = pool.connection()
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            pool.connection()
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    pool.close()
    waiter.join(5)
    assert outcome and isinstance(outcome[0], PoolClosed)
    held.close()


def test_a_returned_proxy_cannot_be_used() -> None:
    pool = SimplePooledDB(sqlite3, 1, ":memory:")
    db = pool.connection()
    db.close()
    db.close()  # twice is harmless
    with pytest.raises(PoolClosed, match="returned"):
        db.cursor()
    pool.close()


def test_a_forgotten_proxy_returns_its_connection() -> None:
    pool = SimplePooledDB(sqlite3, 1, ":memory:", timeout=1)
    pool.connection()  # dropped at once: garbage collected
    pool.connection().close()
    pool.close()


def test_a_connection_that_cannot_roll_back_is_replaced_on_return(server_target: Any) -> None:
    pool = make_pool(server_target, 1)
    try:
        db = pool.connection()
        if server_target.name == "pg":
            db.query("BEGIN")
        elif server_target.name == "pymysql":
            db.begin()
        else:  # psycopg, pgdb: the first statement opens a transaction
            query_one(server_target, db, "SELECT 1")
        server_target.kill_backend(server_target.backend_id(db._raw))
        time.sleep(0.2)
        db.close()  # the rollback fails: the pool must not keep the dead connection
        with pool.connection() as db:
            assert query_one(server_target, db, "SELECT 1") == 1
    finally:
        pool.close()
