"""tether.pooled behind a real PgBouncer, in transaction and session mode, 8 threads.

With the documented configuration (``driver=behind_pgbouncer(mode, driver)``;
``reset_session=True`` in session mode) no request fails and every commit is
there once. psycopg's defaults in transaction mode fail, as measured, but with
an error that says what to set, and never as a "lost connection".
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from tether.pooled import PooledDB, PooledPg
from tether.simple_pool.drivers import behind_pgbouncer
from tether.simple_pool.drivers.psycopg import PGBOUNCER_HINT

THREADS = 8
REQUESTS = 25  # per thread: psycopg prepares a statement from its 5th run


def _pool(target: Any, **options: Any) -> Any:
    if target.name == "pg":
        return PooledPg(**options, **target.kwargs)
    return PooledDB(target.creator, **options, **target.kwargs)


def _execute(target: Any, db: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    if target.name == "pg":
        result = db.query(sql, list(params))
        return [] if isinstance(result, (str, int, type(None))) else list(result.getresult())
    cursor = db.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []
    finally:
        cursor.close()


def _table(target: Any) -> str:
    table = target.unique_table("bouncer")
    target.server.admin_execute(
        f"CREATE TABLE {table} (thread int, n int, PRIMARY KEY (thread, n))"
    )
    return table


def _load(target: Any, pool: Any, table: str) -> list[BaseException]:
    """``THREADS`` threads, ``REQUESTS`` transactions each: an INSERT and a SELECT."""
    errors: list[BaseException] = []
    insert = f"INSERT INTO {table} (thread, n) VALUES ({target.placeholders(2)})"
    count = f"SELECT count(*) FROM {table} WHERE thread = {target.placeholder}"

    def run(thread: int) -> None:
        committed = 0
        for n in range(REQUESTS):
            try:
                with pool.connection() as db:
                    _execute(target, db, insert, (thread, n))
                    seen = _execute(target, db, count, (thread,))[0][0]
            except Exception as exc:
                errors.append(exc)
            else:
                committed += 1
                if seen != committed:
                    errors.append(AssertionError(f"thread {thread} saw {seen} of its rows"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return errors


def _committed(target: Any, table: str) -> int:
    return int(target.server.admin_execute(f"SELECT count(*) FROM {table}")[0][0])


def test_documented_configuration_has_no_errors(bouncer_target: Any) -> None:
    target = bouncer_target
    mode = target.server.pool_mode
    table = _table(target)
    pool = _pool(
        target,
        maxconnections=4,
        blocking=True,
        reset_session=mode == "session",  # works in session mode; pointless in transaction mode
        driver=behind_pgbouncer(mode, target.name),
    )
    try:
        errors = _load(target, pool, table)
        stats = pool.stats()
    finally:
        pool.close()
    assert errors == []
    assert _committed(target, table) == THREADS * REQUESTS
    assert stats["opened"] <= 4, f"connections were reopened: {stats}"


@pytest.mark.parametrize("bouncer_target", [("psycopg", "transaction")], indirect=True)
def test_psycopg_defaults_in_transaction_mode_say_what_to_set(
    bouncer_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Deterministically: psycopg prepares on one server session, another client's open
    transaction holds that session (PgBouncer reuses the last one used), and the pool's
    next statement runs on a new server session without the prepared statement."""
    target = bouncer_target
    table = _table(target)
    sql = f"SELECT count(*) FROM {table} WHERE thread = %s"
    pool = PooledDB(target.creator, maxconnections=1, **target.kwargs)
    other = target.connect()
    try:
        for n in range(6):  # prepared from the 5th run on
            with pool.connection() as db:
                _execute(target, db, sql, (n,))
        other.execute("SELECT 1")  # a transaction: holds the session psycopg prepared on
        with caplog.at_level(logging.WARNING, logger="tether.drivers"):
            with pytest.raises(Exception, match="_pg3_") as failure, pool.connection() as db:
                _execute(target, db, sql, (0,))
            with pool.connection() as db:  # the same connection, still usable
                _execute(target, db, "SELECT 1", ())
        stats = pool.stats()
    finally:
        other.close()
        pool.close()
    assert PGBOUNCER_HINT in getattr(failure.value, "__notes__", ())
    assert "behind_pgbouncer('transaction')" in PGBOUNCER_HINT
    assert [r for r in caplog.records if PGBOUNCER_HINT in r.getMessage()]
    assert stats["opened"] == 1 and stats["discarded"] == 0, stats  # not taken for "lost"


@pytest.mark.parametrize("bouncer_target", [("psycopg", "transaction")], indirect=True)
def test_psycopg_defaults_under_load_fail_only_with_the_hint(
    bouncer_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    target = bouncer_target
    table = _table(target)
    pool = PooledDB(target.creator, maxconnections=4, blocking=True, **target.kwargs)
    try:
        with caplog.at_level(logging.WARNING, logger="tether.drivers"):
            errors = _load(target, pool, table)
        stats = pool.stats()
    finally:
        pool.close()
    assert all(PGBOUNCER_HINT in getattr(e, "__notes__", ()) for e in errors), errors[:3]
    hints = [r for r in caplog.records if PGBOUNCER_HINT in r.getMessage()]
    assert len(hints) == (1 if errors else 0), "the hint is logged once per pool"
    assert stats["opened"] <= 4 and stats["discarded"] == 0, stats


@pytest.mark.parametrize("bouncer_target", [("psycopg", "transaction")], indirect=True)
def test_reset_session_in_transaction_mode_only_rolls_back_and_says_so(
    bouncer_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    target = bouncer_target
    pool = PooledDB(
        target.creator,
        maxconnections=1,
        reset_session=True,
        driver=behind_pgbouncer("transaction"),
        **target.kwargs,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="tether.drivers"):
            for _ in range(3):
                with pool.connection() as db:
                    cursor = db.cursor()
                    cursor.execute("SELECT 1")
                    cursor.close()
        assert pool.stats()["opened"] == 1
    finally:
        pool.close()
    warnings = [r for r in caplog.records if "reset_session=True only rolls back" in r.getMessage()]
    assert len(warnings) == 1
