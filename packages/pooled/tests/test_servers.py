"""Every driver against a real server (sqlite3 in a file): limits, stress, resets, restarts."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tether.pooled import (
    DatabaseUnreachable,
    PooledSharedDBConnection,
    PoolExhausted,
    TooManyConnectionsError,
    UnreachableTimeout,
)

from .conftest import backend_id, execute, make_pool
from .test_checkout import _wait_for


def _begin(target: Any, db: Any) -> None:
    """Start a transaction (classic pg autocommits unless begin() is called)."""
    if target.name == "pg":
        db.begin()


def _commit(db: Any) -> None:
    db.commit()


def _stress(target: Any, pool: Any, threads: int, rounds: int) -> dict[str, Any]:
    """Many threads checking out, querying and returning; checks one owner per connection."""
    owners: dict[int, int] = {}
    guard = threading.Lock()
    errors: list[BaseException] = []
    peak = [0]
    start = threading.Barrier(threads)

    def work() -> None:
        me = threading.get_ident()
        try:
            start.wait()
            for i in range(rounds):
                db = pool.connection()
                key = id(db._con)
                with guard:
                    if key in owners:
                        raise AssertionError(f"connection used by two threads: {owners[key]}, {me}")
                    owners[key] = me
                    peak[0] = max(peak[0], len(owners))
                try:
                    if i % 4 == 0:
                        assert execute(target, db, "SELECT 1") == [(1,)]
                finally:
                    with guard:
                        del owners[key]
                    db.close()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not errors, errors[:3]
    return {"peak": peak[0]}


# -- limits, blocking, ownership --------------------------------------------------------------


def test_stress_one_owner_per_connection_and_consistent_stats(
    driver_target: Any, pools: Any
) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=5, blocking=True, checkout_timeout=30)
    pools.append(pool)
    result = _stress(target, pool, threads=32, rounds=75)  # 2400 checkouts
    assert result["peak"] <= 5
    # A connect the pool started for a waiter that was served by a returned
    # connection meanwhile may still be running (on a loaded machine: its
    # server session existed, stats showed opening 1): the counts are compared
    # once it has ended, within a bound.
    deadline = time.monotonic() + 10
    while pool.stats()["opening"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = pool.stats()
    assert stats["opening"] == 0
    assert stats["checkouts"] == stats["checkins"] == 2400
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["opened"] - stats["closed"] == stats["size"] <= 5
    assert stats["timeouts"] == 0
    if target.server is not None:
        assert target.session_count() == stats["size"]


def test_nonblocking_limit_under_threads(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=2)
    pools.append(pool)
    outcomes: Counter[str] = Counter()
    barrier = threading.Barrier(8)
    hold = threading.Event()
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        try:
            db = pool.connection()
        except TooManyConnectionsError:
            with lock:
                outcomes["refused"] += 1
            return
        with lock:
            outcomes["got"] += 1
        hold.wait(5)
        db.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: outcomes["got"] + outcomes["refused"] == 8)
    hold.set()
    for thread in threads:
        thread.join(5)
    assert outcomes == {"got": 2, "refused": 6}
    assert pool.stats()["opened"] == 2


def test_blocking_with_timeout_reports_pool_exhausted(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(
        target, maxconnections=2, blocking=True, checkout_timeout=0.2, name=f"x-{target.name}"
    )
    pools.append(pool)
    held = [pool.connection(), pool.connection()]
    results: list[BaseException] = []

    def work() -> None:
        try:
            pool.connection()
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - start < 2
    assert len(results) == 4 and all(isinstance(exc, PoolExhausted) for exc in results)
    message = str(results[0])
    assert f"x-{target.name}" in message and "pool exhausted" in message and "size 2/2" in message
    for db in held:
        db.close()
    assert pool.stats()["timeouts"] == 4


@pytest.mark.parametrize("server_target", ["psycopg"], indirect=True)
def test_shared_connections_with_a_threadsafe_driver(server_target: Any, pools: Any) -> None:
    target = server_target
    pool = make_pool(target, maxshared=2, maxconnections=4)
    pools.append(pool)
    dbs = [pool.connection() for _ in range(6)]
    assert all(isinstance(db, PooledSharedDBConnection) for db in dbs)
    assert len({backend_id(target, db) for db in dbs}) == 2
    errors: list[BaseException] = []

    def query(db: Any) -> None:
        try:
            for _ in range(20):
                assert execute(target, db, "SELECT 1") == [(1,)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=query, args=(db,)) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    # one share starts a transaction: that connection is not shared any more
    dbs[0].begin()
    execute(target, dbs[0], "SELECT 1")
    newcomer = pool.connection()
    assert newcomer._con is not dbs[0]._con
    dbs[0].rollback()
    for db in [*dbs, newcomer]:
        db.close()
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["checkouts"] == stats["checkins"] == 7
    assert target.session_count() == stats["size"]


# -- lifetimes ----------------------------------------------------------------------------------


def test_lifetime_and_idle_expiry(server_target: Any, pools: Any) -> None:
    target = server_target
    pool = make_pool(target, max_lifetime=0.3, max_idle=0.15)
    pools.append(pool)
    dbs = [pool.connection() for _ in range(3)]
    first = backend_id(target, dbs[0])
    assert target.session_count() == 3
    for db in dbs:
        db.close()
    _wait_for(lambda: pool.stats()["size"] == 0, timeout=5)  # idle too long: closed
    _wait_for(lambda: target.session_count() == 0, timeout=5)
    db = pool.connection()
    assert backend_id(target, db) != first
    second = backend_id(target, db)
    time.sleep(0.35)
    db.close()  # past its lifetime: closed on return
    db = pool.connection()
    assert backend_id(target, db) != second
    db.close()
    stats = pool.stats()
    assert stats["opened"] - stats["closed"] == stats["size"] and stats["discarded"] == 0


# -- resets -------------------------------------------------------------------------------------


def test_open_transaction_is_rolled_back_on_return(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=1)
    pools.append(pool)
    table = target.unique_table("r")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
        _commit(db)
    db = pool.connection()
    _begin(target, db)
    execute(target, db, f"INSERT INTO {table} VALUES (1)")  # never committed
    db.close()  # given back without `with` (which would commit): rolled back
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]


def test_reset_callback_and_failing_reset(driver_target: Any, pools: Any) -> None:
    target = driver_target
    calls: list[Any] = []
    fail = [False]

    def reset(raw: Any) -> None:
        calls.append(raw)
        if fail[0]:
            raise RuntimeError("reset refused")

    pool = make_pool(target, reset=reset)
    pools.append(pool)
    db = pool.connection()
    raw = db._con._raw
    db.close()
    assert calls == [raw]
    fail[0] = True
    db = pool.connection()
    db.close()  # the reset fails: discarded, closed
    fail[0] = False
    stats = pool.stats()
    assert stats["discarded"] == 1 and stats["size"] == 0
    db = pool.connection()
    assert db._con._raw is not raw
    db.close()


_PG_DIRTY = [
    "SET work_mem = '7MB'",
    "SELECT set_config('tether.user', 'alice', false)",
    "CREATE TEMP TABLE tether_tmp (x INTEGER)",
    "PREPARE tether_stmt AS SELECT 1",
    "SELECT pg_advisory_lock(424242)",
    "LISTEN tether_channel",
]
_PG_CHECKS = {
    "SHOW work_mem": "4MB",
    "SELECT coalesce(current_setting('tether.user', true), '')": "",
    "SELECT to_regclass('pg_temp.tether_tmp') IS NULL": True,
    "SELECT count(*) FROM pg_prepared_statements WHERE name = 'tether_stmt'": 0,
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()": 0,
    "SELECT count(*) FROM pg_listening_channels()": 0,
    "SHOW application_name": "tether-pooled-test",
}
_MARIADB_DIRTY = [
    "SET @tether_user = 'alice'",
    "SET SESSION sort_buffer_size = 1048576",
    "CREATE TEMPORARY TABLE tether_tmp (x INTEGER)",
    "SELECT GET_LOCK('tether_lock', 1)",
]
_MARIADB_CHECKS = {
    "SELECT @tether_user IS NULL": 1,
    "SELECT @@session.sort_buffer_size = @@global.sort_buffer_size": 1,
    # gone if it can be created again (information_schema.temporary_tables is MariaDB 11.2+)
    "CREATE TEMPORARY TABLE tether_tmp (y INTEGER)": None,
    "SELECT coalesce(IS_USED_LOCK('tether_lock'), 0)": 0,
    "SELECT @@session.time_zone": "+01:00",
}


def test_session_state_does_not_leak_with_reset_session(server_target: Any, pools: Any) -> None:
    target = server_target
    postgres = target.kind == "postgresql"
    setsession = (
        ["SET application_name = 'tether-pooled-test'"]
        if postgres
        else ["SET time_zone = '+01:00'"]
    )
    pool = make_pool(target, maxconnections=1, reset_session=True, setsession=setsession)
    pools.append(pool)
    db = pool.connection()
    session = backend_id(target, db)
    for sql in _PG_DIRTY if postgres else _MARIADB_DIRTY:
        execute(target, db, sql)
    if target.name != "pg":
        _commit(db)
    db.close()
    db = pool.connection()
    assert backend_id(target, db) == session  # the same session, cleaned
    for sql, expected in (_PG_CHECKS if postgres else _MARIADB_CHECKS).items():
        rows = execute(target, db, sql)
        assert (rows[0][0] if rows else None) == expected, sql
    db.close()
    assert pool.stats()["discarded"] == 0


def test_on_connect_setup_survives_reset_session(server_target: Any, pools: Any) -> None:
    """The reset undoes what ``on_connect`` set on the server; it is run again, as on a new
    connection (eighth outside attack: an engine-wide SERIALIZABLE became REPEATABLE READ
    for every borrower after the first, behind SQLAlchemy's TetherPool)."""
    target = server_target
    postgres = target.kind == "postgresql"
    sql = "SET statement_timeout = '5s'" if postgres else "SET SESSION max_join_size = 12345"
    check = "SHOW statement_timeout" if postgres else "SELECT @@session.max_join_size"
    expected = "5s" if postgres else 12345
    calls: list[Any] = []

    def on_connect(raw: Any) -> None:
        calls.append(raw)
        if target.name == "pg":
            raw.query(sql)
        else:
            cursor = raw.cursor()
            cursor.execute(sql)
            cursor.close()
            if not postgres or not getattr(raw, "autocommit", False):
                raw.commit()

    pool = make_pool(target, maxconnections=1, reset_session=True, on_connect=on_connect)
    pools.append(pool)
    seen = []
    for _ in range(3):
        db = pool.connection()
        seen.append(execute(target, db, check)[0][0])
        if target.name != "pg":
            _commit(db)
        db.close()
    assert seen == [expected] * 3
    assert len({id(raw) for raw in calls}) == 1, "one driver connection, prepared again"
    assert pool.stats()["discarded"] == 0


@pytest.mark.parametrize("driver_target", ["psycopg", "pgdb"], indirect=True)
def test_sql_an_on_connect_runs_is_committed_before_a_borrower_gets_the_session(
    driver_target: Any, pools: Any
) -> None:
    """Outside autocommit, an ``on_connect`` that runs SQL opened a transaction that the
    borrower joined: an old snapshot, and its rollback() undid the setup (found by an
    outside attack; with reset_session on every checkout)."""
    target = driver_target

    def on_connect(raw: Any) -> None:
        cursor = raw.cursor()
        cursor.execute("SELECT set_config('app.oc', 'yes', false)")
        cursor.close()

    pool = make_pool(target, maxconnections=1, reset_session=True, on_connect=on_connect)
    pools.append(pool)
    for _ in range(2):
        db = pool.connection()
        db.rollback()  # would undo on_connect's setting if its transaction were still open
        assert execute(target, db, "SELECT current_setting('app.oc')") == [("yes",)]
        db.rollback()
        db.close()


def test_session_state_stays_without_reset_session(server_target: Any, pools: Any) -> None:
    """The default reset is a rollback only: say so, by showing what survives it."""
    target = server_target
    pool = make_pool(target, maxconnections=1)
    pools.append(pool)
    db = pool.connection()
    postgres = target.kind == "postgresql"
    execute(target, db, "SET work_mem = '7MB'" if postgres else "SET @tether_user = 'bob'")
    if target.name != "pg":
        _commit(db)
    db.close()
    db = pool.connection()
    sql = "SHOW work_mem" if postgres else "SELECT @tether_user = 'bob'"
    assert execute(target, db, sql)[0][0] == ("7MB" if postgres else 1)
    db.close()


# -- leaks --------------------------------------------------------------------------------------


def test_leak_detection(driver_target: Any, pools: Any, caplog: pytest.LogCaptureFixture) -> None:
    target = driver_target
    pool = make_pool(target, leak_threshold=0.05, name=f"leaks-{target.name}")
    pools.append(pool)
    with caplog.at_level(logging.WARNING, logger="tether.pooled"):
        held = pool.connection()
        _wait_for(lambda: pool.stats()["leaks"] == 1, timeout=3)
        dropped = pool.connection()
        execute(target, dropped, "SELECT 1")
        del dropped
        gc.collect()
    text = caplog.text
    assert "checked out for" in text and "garbage-collected" in text
    assert "test_servers.py" in text and "held = pool.connection()" in text
    stats = pool.stats()
    assert stats["in_use"] == 1 and stats["leaks"] == 2
    held.close()


# -- the server goes away -----------------------------------------------------------------------


@pytest.mark.restart
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_pool_keeps_serving_after_a_server_restart(
    server_target: Any, pools: Any, mode: str
) -> None:
    target = server_target
    pool = make_pool(target, mincached=3, maxconnections=4, blocking=True, checkout_timeout=10)
    pools.append(pool)
    dbs = [pool.connection() for _ in range(3)]
    before = {backend_id(target, db) for db in dbs}
    for db in dbs:
        db.close()
    target.server.restart(mode)
    for _ in range(6):
        with pool.connection() as db:
            assert execute(target, db, "SELECT 1") == [(1,)]
            assert backend_id(target, db) not in before
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"] and stats["timeouts"] == 0


@pytest.mark.restart
def test_unreachable_database_fails_fast_and_recovers(server_target: Any, pools: Any) -> None:
    target = server_target
    pool = make_pool(target, reconnect_backoff=(0.05, 0.2), checkout_timeout=5)
    pools.append(pool)
    target.server.kill()
    with pytest.raises(Exception) as first:
        pool.connection()
    assert not isinstance(first.value, DatabaseUnreachable)  # the driver's own error first
    start = time.monotonic()
    with pytest.raises(DatabaseUnreachable):
        pool.connection()  # then at once, without a connect attempt
    assert time.monotonic() - start < 0.05
    target.server.start()
    _wait_for(lambda: not pool.stats()["unreachable"], timeout=10)
    with pool.connection() as db:
        assert execute(target, db, "SELECT 1") == [(1,)]


@pytest.mark.restart
def test_blocked_checkouts_are_served_when_the_database_is_back(
    server_target: Any, pools: Any
) -> None:
    target = server_target
    pool = make_pool(
        target, blocking=True, checkout_timeout=15, reconnect_backoff=(0.05, 0.2), name="back"
    )
    pools.append(pool)
    target.server.kill()
    results: list[Any] = []

    def work() -> None:
        try:
            with pool.connection() as db:
                results.append(execute(target, db, "SELECT 1"))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: pool.stats()["unreachable"], timeout=10)
    time.sleep(0.1)
    assert not results
    target.server.start()
    for thread in threads:
        thread.join(15)
    assert results == [[(1,)]] * 3


@pytest.mark.restart
def test_unreachable_timeout_message(server_target: Any, pools: Any) -> None:
    target = server_target
    pool = make_pool(target, blocking=True, checkout_timeout=0.3, name="gone")
    pools.append(pool)
    target.server.kill()
    start = time.monotonic()
    with pytest.raises(UnreachableTimeout) as info:
        pool.connection()
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert "gone" in message and "database unreachable" in message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_pooled_pg_dbutils_api(server_target: Any, pools: Any) -> None:
    from tether.pooled import RESET_COMPLETELY, PooledPg, PooledPgConnection
    from tether.steady import SteadyPgConnection

    target = server_target
    pool = PooledPg(
        1, 2, 3, False, None, ["SET work_mem = '5MB'"], RESET_COMPLETELY, **target.kwargs
    )
    pools.append(pool)
    con = pool.pooled_connection()  # the steady connection itself, without a proxy
    assert isinstance(con, SteadyPgConnection)
    con.query("SET work_mem = '9MB'")
    pool.cache(con)  # given back: the session is reset, setsession applied again
    db = pool.connection()
    assert isinstance(db, PooledPgConnection)
    assert db.query("SHOW work_mem").getresult() == [("5MB",)]
    db.close()
    db.reopen()  # a closed proxy takes another connection from the pool
    assert db.query("SELECT 1").getresult() == [(1,)]
    session = backend_id(target, db)
    db.reopen()  # an open one reopens its connection
    assert backend_id(target, db) != session
    db.close()
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"] == 3 and stats["in_use"] == 0


def test_a_with_block_commits_on_success_and_rolls_back_when_it_raises(
    driver_target: Any, pools: Any
) -> None:
    """README: ``with pool.connection() as db:`` commits when the block succeeds and rolls
    back when it raises, on every driver. Classic ``pg`` commits each statement by itself
    unless a transaction was begun: PooledPg's block kept the work of a block that raised
    (found by an outside attack; it was tested on a fake driver only)."""
    target = driver_target
    table = target.unique_table("with")
    pool = make_pool(target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (k INTEGER)")
    with pool.connection() as db:
        execute(target, db, f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(RuntimeError), pool.connection() as db:
        execute(target, db, f"INSERT INTO {table} VALUES (2)")
        raise RuntimeError("the block failed")
    with pool.connection() as db:
        assert execute(target, db, f"SELECT k FROM {table} ORDER BY k") == [(1,)]
        execute(target, db, f"DROP TABLE {table}")
    assert pool.stats()["in_use"] == 0
