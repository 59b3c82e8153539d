"""Code written for the driver runs unchanged on a pooled connection (real servers).

The README's promises: one ``with`` rule (commit on success, roll back on
error), the driver's type checks pass, a creator tether does not know gets
its driver's adapter from the first connection, and a timeout is raised to
the caller without a log line of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tether.harness.targets import DriverTarget
from tether.pooled import PooledDB, PoolExhausted

from .conftest import execute, make_pool


@pytest.fixture
def pg_target(pg_server: Any, tmp_path: Any) -> Any:
    target = DriverTarget.build("psycopg", pg_server, workdir=tmp_path)
    target.ignore_existing_sessions()
    yield target
    target.cleanup()


def _begin(target: Any, db: Any) -> None:
    if target.name == "pg":
        db.begin()  # classic pg autocommits unless a transaction is begun


def test_with_commits_when_the_block_succeeds(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=1)
    pools.append(pool)
    table = target.unique_table("with")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    with pool.connection() as db:
        _begin(target, db)
        execute(target, db, f"INSERT INTO {table} VALUES (1)")  # no commit(): `with` does it
    with pytest.raises(ZeroDivisionError), pool.connection() as db:
        _begin(target, db)
        execute(target, db, f"INSERT INTO {table} VALUES (2)")
        1 / 0  # noqa: B018
    with pool.connection() as db:
        assert execute(target, db, f"SELECT x FROM {table}") == [(1,)]


def test_uncommitted_work_given_back_without_with_is_logged_once_per_place(
    pg_target: Any, pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with caplog.at_level(logging.WARNING, logger="tether"):
        for _ in range(5):
            db = pool.connection()
            execute(pg_target, db, "SELECT 1")  # opens a transaction (autocommit off)
            db.close()  # uncommitted: rolled back, and said so
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "transaction open" in warnings[0] and "test_idioms.py" in warnings[0]


def test_the_proxy_passes_the_drivers_type_checks(pg_target: Any, pools: Any) -> None:
    import psycopg
    from psycopg.types import TypeInfo

    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        assert isinstance(db, psycopg.Connection)
        info = TypeInfo.fetch(db, "int4")  # raised TypeError before: not a Connection
        assert info is not None and info.oid == 23
        cur = db.cursor()
        assert isinstance(cur, psycopg.Cursor)
        assert cur.execute("SELECT 41 + 1").fetchone() == (42,)


def test_a_lambda_creator_gets_its_drivers_adapter(
    pg_target: Any, pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """reset_session with a wrapper creator resets the session, as with the module itself."""
    import psycopg

    args, kwargs = pg_target.args, pg_target.kwargs
    with caplog.at_level(logging.INFO, logger="tether"):
        pool = PooledDB(
            lambda: psycopg.connect(*args, **kwargs), maxconnections=1, reset_session=True
        )
        pools.append(pool)
        with pool.connection() as db:
            execute(pg_target, db, "SET work_mem = '7MB'")
    with pool.connection() as db:
        assert execute(pg_target, db, "SHOW work_mem") == [("4MB",)]
    assert any("psycopg" in r.getMessage() and "adapter" in r.getMessage() for r in caplog.records)
    assert pool.stats()["discarded"] == 0


def test_a_timeout_is_raised_not_logged(
    pg_target: Any, pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pg_target, maxconnections=1, blocking=True, checkout_timeout=0.2)
    pools.append(pool)
    held = pool.connection()
    with caplog.at_level(logging.WARNING, logger="tether"):
        for _ in range(3):
            with pytest.raises(PoolExhausted):
                pool.connection()
    held.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_leaks_from_one_place_are_logged_once_not_per_leak(
    pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """300 leaks in a loop: one log line, all counted (a flood helps nobody)."""
    import gc
    import sqlite3

    pool = PooledDB(sqlite3, database=":memory:", name="leaky-loop")
    pools.append(pool)
    gc.collect()  # an earlier test's leaked proxies log under their own pool's name
    with caplog.at_level(logging.WARNING, logger="tether"):
        for _ in range(300):
            db = pool.connection()
            db.cursor().execute("SELECT 1")
            del db  # freed by its reference count: given back as a leak at once
        gc.collect()  # (one collection: each takes long in a big test process, past the
        # log's 60 s window under load, so one per leak made this test flaky)
    lines = [
        r
        for r in caplog.records
        if "garbage-collected" in r.getMessage() and "leaky-loop" in r.getMessage()
    ]
    assert len(lines) == 1
    assert pool.stats()["leaks"] == 300 and pool.stats()["in_use"] == 0
