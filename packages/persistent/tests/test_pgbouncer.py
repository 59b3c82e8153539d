"""tether.persistent behind a real PgBouncer, in transaction and session mode, 8 threads.

Each thread keeps one client connection to PgBouncer; in transaction mode
PgBouncer lends its transactions whichever server session is free. With
``driver=behind_pgbouncer(mode, driver)`` no request fails and every commit
is there once; psycopg's defaults in transaction mode fail with an error that
says what to set, and are not taken for a lost connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from tether.persistent import PersistentDB, PersistentPg
from tether.simple_pool.drivers import behind_pgbouncer
from tether.simple_pool.drivers.psycopg import PGBOUNCER_HINT

THREADS = 8
REQUESTS = 25  # per thread: psycopg prepares a statement from its 5th run


def _generator(target: Any, **options: Any) -> Any:
    if target.name == "pg":
        return PersistentPg(**options, **target.kwargs)
    return PersistentDB(target.creator, **options, **target.kwargs)


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


def _load(target: Any, persist: Any, table: str) -> list[BaseException]:
    """``THREADS`` threads, ``REQUESTS`` transactions each: an INSERT and a SELECT."""
    errors: list[BaseException] = []
    insert = f"INSERT INTO {table} (thread, n) VALUES ({target.placeholders(2)})"
    count = f"SELECT count(*) FROM {table} WHERE thread = {target.placeholder}"

    def run(thread: int) -> None:
        committed = 0
        for n in range(REQUESTS):
            try:
                with persist.connection() as db:
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
    table = _table(target)
    connects: list[object] = []
    persist = _generator(
        target,
        driver=behind_pgbouncer(target.server.pool_mode, target.name),
        on_connect=connects.append,
    )
    try:
        errors = _load(target, persist, table)
    finally:
        persist.close()
    assert errors == []
    assert _committed(target, table) == THREADS * REQUESTS
    assert len(connects) == THREADS, "a thread's connection was reopened"


@pytest.mark.parametrize("bouncer_target", [("psycopg", "transaction")], indirect=True)
def test_psycopg_defaults_in_transaction_mode_say_what_to_set(
    bouncer_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg prepares on one server session; another client's open transaction holds that
    session (PgBouncer reuses the last one used); the next statement lands on another."""
    target = bouncer_target
    table = _table(target)
    sql = f"SELECT count(*) FROM {table} WHERE thread = %s"
    connects: list[object] = []
    persist = PersistentDB(target.creator, on_connect=connects.append, **target.kwargs)
    other = target.connect()
    try:
        for n in range(6):  # prepared from the 5th run on
            with persist.connection() as db:
                _execute(target, db, sql, (n,))
        other.execute("SELECT 1")  # a transaction: holds the session psycopg prepared on
        with caplog.at_level(logging.WARNING, logger="tether.drivers"):
            with pytest.raises(Exception, match="_pg3_") as failure, persist.connection() as db:
                _execute(target, db, sql, (0,))
            with persist.connection() as db:
                _execute(target, db, "SELECT 1", ())
        assert len(connects) == 1, "taken for a lost connection and reopened"
    finally:
        other.close()
        persist.close()
    assert PGBOUNCER_HINT in getattr(failure.value, "__notes__", ())
    assert [r for r in caplog.records if PGBOUNCER_HINT in r.getMessage()]
