"""Every borrower starts clean, and nothing of an ended checkout still works (real servers).

Written from the README's promises, as a user sees them: a borrower never
inherits the previous borrower's driver settings (its ``rollback()`` must
undo its work), and a cursor, proxy or method kept past ``close()`` can never
reach the connection's next borrower.
"""

from __future__ import annotations

import copy
import datetime
import gc
import logging
import pickle
import signal
import sqlite3
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from tether.harness.targets import DriverTarget
from tether.pooled import InvalidConnectionError, PooledDB
from tether.simple_pool.errors import TetherError
from tether.steady import InvalidCursorError, PingStatementError

from .conftest import backend_id, execute, make_pool


@pytest.fixture
def pg_target(pg_server: Any, tmp_path: Any) -> Any:
    """psycopg against the harness's PostgreSQL."""
    target = DriverTarget.build("psycopg", pg_server, workdir=tmp_path)
    target.ignore_existing_sessions()
    yield target
    target.cleanup()


def _set_autocommit(target: Any, db: Any, value: bool) -> None:
    """Switch the driver's autocommit as a user of that driver would."""
    if target.name == "pymysql":
        db.autocommit(value)  # PyMySQL: a method
    elif target.name == "sqlite3":
        db.isolation_level = None if value else ""  # sqlite3 before 3.12's autocommit
    else:
        db.autocommit = value


def _autocommit(target: Any, db: Any) -> bool:
    if target.name == "pymysql":
        return bool(db.get_autocommit())
    if target.name == "sqlite3":
        return db.isolation_level is None
    return bool(db.autocommit)


@pytest.mark.parametrize(
    ("dbapi_target", "reset_session"),
    [(name, False) for name in ("psycopg", "pgdb", "pymysql", "sqlite3")]
    + [(name, True) for name in ("psycopg", "pgdb", "pymysql")],  # sqlite3 has no session
    indirect=["dbapi_target"],
)
def test_a_borrower_does_not_inherit_autocommit(
    dbapi_target: Any, pools: Any, reset_session: bool
) -> None:
    """Borrower A switches autocommit on; B's rollback() must still undo B's INSERT."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, reset_session=reset_session)
    pools.append(pool)
    table = target.unique_table("inherit")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
        db.commit()
    configured = None
    with pool.connection() as db:  # borrower A
        configured = _autocommit(target, db)
        _set_autocommit(target, db, not configured)
    with pool.connection() as db:  # borrower B
        assert _autocommit(target, db) == configured
        execute(target, db, f"INSERT INTO {table} VALUES (1)")
        db.rollback()
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]
    stats = pool.stats()
    assert stats["discarded"] == 0 and stats["opened"] == 1


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_autocommit_configured_on_stays_on(dbapi_target: Any, pools: Any) -> None:
    """The pool's configured state is what the connection was opened with, not a default."""
    pool = make_pool(
        dbapi_target, maxconnections=1, on_connect=lambda raw: setattr(raw, "autocommit", True)
    )
    pools.append(pool)
    with pool.connection() as db:
        db.autocommit = False  # a borrower of a pool configured with autocommit on
    with pool.connection() as db:
        assert db.autocommit is True


def test_psycopg_session_characteristics_are_given_back(pg_target: Any, pools: Any) -> None:
    import psycopg

    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        before = (db.read_only, db.isolation_level, db.deferrable, db.row_factory)
        db.read_only = True
        db.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        db.deferrable = True
        db.row_factory = psycopg.rows.dict_row
    with pool.connection() as db:
        assert (db.read_only, db.isolation_level, db.deferrable, db.row_factory) == before
        rows = execute(pg_target, db, "SHOW transaction_read_only")
        assert rows == [("off",)]  # a tuple row, and a read-write transaction
        db.rollback()


def test_settings_restored_without_round_trip_when_nothing_changed(
    pg_target: Any, pools: Any
) -> None:
    """Setting autocommit back does not replace the session."""
    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        db.autocommit = True
    with pool.connection() as db:
        raw = db.dbapi_connection
        assert raw.autocommit is False
        session = backend_id(pg_target, db)
    with pool.connection() as db:
        assert backend_id(pg_target, db) == session  # the same session: set back, not replaced


def test_a_reopen_replays_the_pools_settings_not_the_last_borrowers(
    pg_target: Any, pools: Any
) -> None:
    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        db.autocommit = True
        session = backend_id(pg_target, db)
    pg_target.server.admin_execute("SELECT pg_terminate_backend(%s, 5000)", (session,))
    with pool.connection() as db:  # reopened transparently: with the pool's settings
        assert backend_id(pg_target, db) != session
        assert db.autocommit is False


# -- handles of an ended checkout -------------------------------------------------------------


def test_a_kept_cursor_never_runs_on_the_next_borrowers_session(
    dbapi_target: Any, pools: Any
) -> None:
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("kept")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
        db.commit()
    db = pool.connection()
    cur = db.cursor()
    cur.execute(f"SELECT count(*) FROM {table}")
    db.close()
    other = pool.connection()
    with pytest.raises(InvalidCursorError, match="checkout that has ended"):
        cur.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(InvalidCursorError):
        cur.fetchall()
    with pytest.raises(InvalidCursorError):
        cur.executemany(f"INSERT INTO {table} VALUES (%s)", [(2,)])
    other.commit()
    assert execute(target, other, f"SELECT count(*) FROM {table}") == [(0,)]
    other.close()


def test_kept_methods_and_proxy_never_reach_the_next_borrower(pg_target: Any, pools: Any) -> None:
    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = pg_target.unique_table("kept")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")  # psycopg's Connection.execute
        db.commit()
    db = pool.connection()
    commit, run, begin = db.commit, db.execute, db.begin
    db.close()
    other = pool.connection()
    other.execute(f"INSERT INTO {table} VALUES (1)")  # other's uncommitted work
    for kept in (commit, begin, lambda: run("SELECT 1")):
        with pytest.raises(InvalidConnectionError):
            kept()
    with pytest.raises(InvalidConnectionError):
        db.cursor()
    other.rollback()  # nothing of it was committed by the kept commit
    assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    other.close()


# -- reset_session under psycopg's automatic prepared statements ------------------------------


def test_reset_session_survives_psycopg_prepared_statements(
    pg_target: Any, pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg prepares a statement after 5 runs, DISCARD ALL included: resets must not break."""
    pool = make_pool(
        pg_target,
        maxconnections=1,
        reset_session=True,
        setsession=["SET application_name = 'tether-prepared'"],
    )
    pools.append(pool)
    with caplog.at_level(logging.WARNING, logger="tether"):
        for i in range(20):
            with pool.connection() as db:
                cur = db.cursor()
                cur.execute("select %s::int", (i,))
                assert cur.fetchone() == (i,)
                assert execute(pg_target, db, "SHOW application_name") == [("tether-prepared",)]
                db.commit()  # (a checkin after a rollback made psycopg forget by chance)
    stats = pool.stats()
    assert stats["opened"] == 1 and stats["discarded"] == 0, stats
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_psycopg_chained_execute_on_a_pooled_connection(pg_target: Any, pools: Any) -> None:
    """psycopg's idiom ``cur.execute(...).fetchone()`` goes on through tether's cursor."""
    pool = make_pool(pg_target, maxconnections=1)
    pools.append(pool)
    with pool.connection() as db:
        assert db.cursor().execute("SELECT 1").fetchone() == (1,)
        with db.cursor() as cur:
            assert cur.execute("SELECT %s::int", (2,)) is cur
            assert cur.fetchone() == (2,)


def test_kept_cursor_methods_and_cursor_connection_never_reach_the_next_borrower(
    pg_target: Any, pools: Any
) -> None:
    """Found from the outside: psycopg's copy()/stream() taken off a cursor, and cur.connection."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = pg_target.unique_table("keptm")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    cur = db.cursor()
    copy, stream, via = cur.copy, cur.stream, cur.connection
    assert via is db  # the connection as the borrower holds it, not the driver's
    db.close()
    other = pool.connection()
    with pytest.raises(InvalidCursorError), copy(f"COPY {table} FROM STDIN") as cp:
        cp.write_row((42,))
    with pytest.raises(InvalidCursorError):
        list(stream("SELECT 1"))
    with pytest.raises(InvalidConnectionError):
        via.execute(f"INSERT INTO {table} VALUES (1)")
    assert not other.dbapi_connection.info.transaction_status  # IDLE: nothing ran on it
    assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    other.close()


# -- found by an outside attack after the hot-path rework -------------------------------------


@pytest.mark.parametrize("dbapi_target", ["psycopg", "sqlite3"], indirect=True)
def test_the_cursor_of_connection_execute_ends_with_the_checkout(
    dbapi_target: Any, pools: Any
) -> None:
    """``db.execute()`` (psycopg, sqlite3) returned the driver's own cursor: kept, it ran on
    the next borrower's session and could write into the next borrower's transaction."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("cx")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    kept = db.execute("SELECT 1")
    assert tuple(kept.fetchone()) == (1,)
    db.close()
    other = pool.connection()
    other.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(InvalidCursorError):
        kept.execute(f"INSERT INTO {table} VALUES (2)")
    other.rollback()
    assert tuple(other.execute(f"SELECT count(*) FROM {table}").fetchone()) == (0,)
    other.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
def test_connection_execute_follows_the_reopen_rule(dbapi_target: Any, pools: Any) -> None:
    """``db.execute()`` outside a transaction is reopened transparently after a kill, as
    ``db.cursor().execute()`` is; inside one it fails and is never re-run elsewhere."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("cxr")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    with pool.connection() as db:
        pid = backend_id(target, db)
        db.rollback()
        target.kill_backend(pid)
        assert tuple(db.execute("SELECT 1").fetchone()) == (1,)  # a new session, transparently
        assert backend_id(target, db) != pid
    db = pool.connection()
    db.execute(f"INSERT INTO {table} VALUES (1)")  # opens a transaction
    target.kill_backend(backend_id(target, db))
    with pytest.raises(Exception) as lost:
        db.execute(f"INSERT INTO {table} VALUES (2)")
    assert not isinstance(lost.value, InvalidCursorError)  # the driver's error
    db.rollback()
    assert tuple(db.execute(f"SELECT count(*) FROM {table}").fetchone()) == (0,)
    db.close()


def _two_rows(target: Any, pools: Any) -> tuple[Any, Any, Any]:
    """A one-connection pool, a checkout of it and a cursor that selected the rows 1 and 2."""
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    db = pool.connection()
    cur = db.cursor()
    cur.execute("SELECT 1 UNION ALL SELECT 2")
    return pool, db, cur


def test_an_iterator_over_a_cursor_ends_with_the_checkout(dbapi_target: Any, pools: Any) -> None:
    """``iter(cursor)`` returned the driver cursor itself (pgdb, sqlite3): kept, its
    ``execute()`` ran on the next borrower's session (and psycopg's server-side cursors
    FETCH while they iterate)."""
    pool, db, cur = _two_rows(dbapi_target, pools)
    rows = iter(cur)
    assert tuple(next(rows)) == (1,)
    db.close()
    other = pool.connection()
    assert not callable(getattr(rows, "execute", None))
    with pytest.raises(InvalidCursorError):
        next(rows)
    other.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "sqlite3"], indirect=True)
def test_a_temporary_connections_execute_keeps_the_checkout_until_the_fetch(
    dbapi_target: Any, pools: Any
) -> None:
    """``pool.connection().execute(...).fetchall()``: nothing refers to the proxy after
    ``execute()`` but its cursor, which must keep the checkout (and its rows) alive."""
    pool = make_pool(dbapi_target, maxconnections=1, blocking=True)
    pools.append(pool)
    rows = pool.connection().execute("SELECT 1 UNION ALL SELECT 2").fetchall()
    assert [tuple(r) for r in rows] == [(1,), (2,)]
    assert pool.stats()["in_use"] == 0  # given back once the cursor went


@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
@pytest.mark.parametrize("configured", [False, True])
def test_a_borrower_does_not_inherit_autocommit_set_in_sql(
    dbapi_target: Any, pools: Any, configured: bool
) -> None:
    """MySQL's ``SET autocommit = ...`` is SQL, not a driver call: the next borrower must
    still start in the pool's mode (its ``rollback()`` must undo its INSERT)."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, autocommit=configured)
    pools.append(pool)
    table = target.unique_table("inheritsql")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
        db.commit()
    with pool.connection() as db:  # borrower A
        execute(target, db, f"SET autocommit = {0 if configured else 1}")
    with pool.connection() as db:  # borrower B
        assert bool(db.get_autocommit()) is configured
        db.begin()
        execute(target, db, f"INSERT INTO {table} VALUES (1)")
        db.rollback()
        if not configured:
            execute(target, db, f"INSERT INTO {table} VALUES (2)")
            db.rollback()
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql", "sqlite3"], indirect=True)
def test_a_cursor_attribute_assigned_reaches_the_driver_cursor(
    dbapi_target: Any, pools: Any
) -> None:
    """``cur.arraysize = 3`` was set on tether's cursor and silently ignored by the driver
    (``fetchmany()`` went on returning one row, psycopg's ``row_factory`` was not used);
    it is the driver cursor's, also on the driver cursor made anew after a reopen."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    rows = " UNION ALL ".join(f"SELECT {n}" for n in range(1, 11))
    with pool.connection() as db:
        cur = db.cursor()
        cur.arraysize = 3
        assert cur.arraysize == 3
        cur.execute(rows)
        assert len(cur.fetchmany()) == 3
        if target.name != "sqlite3":
            pid = backend_id(target, db)
            db.rollback()  # no transaction open: the reopen is transparent
            target.kill_backend(pid)
            time.sleep(0.01)  # past ALIVE_BYPASS: the socket is looked at (steady README)
            cur.execute(rows)  # outside a transaction: on a new session, transparently
            assert len(cur.fetchmany()) == 3  # on the new driver cursor too
        if target.name == "psycopg":  # the driver's own cursor class, as psycopg's
            with pytest.raises(AttributeError):
                cur.request_tag = "a"
        else:
            cur.request_tag = "a"  # a name of the caller's own: kept on tether's cursor
            assert cur.request_tag == "a"
        db.request_tag = "b"  # and on the proxy, for this checkout only
        assert db.request_tag == "b"
    with pool.connection() as db:
        assert not hasattr(db, "request_tag")  # the next borrower does not see it


def test_psycopg_row_factory_assigned_on_a_cursor(pg_target: Any, pools: Any) -> None:
    """psycopg's idiom ``cur.row_factory = dict_row`` gives dicts through every layer."""
    from psycopg.rows import dict_row

    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    with pool.connection() as db:
        cur = db.cursor()
        cur.row_factory = dict_row
        assert cur.execute("SELECT 1 AS x").fetchone() == {"x": 1}


@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
def test_assigning_over_a_driver_method_is_refused(dbapi_target: Any, pools: Any) -> None:
    """PyMySQL's ``db.autocommit = True`` (a slip for ``db.autocommit(True)``) hid the
    method on the driver connection: every later borrower's ``db.autocommit(False)``
    raised ``TypeError: 'bool' object is not callable``. tether refuses the assignment."""
    pool = make_pool(dbapi_target, maxconnections=1, blocking=True)
    pools.append(pool)
    with pool.connection() as db, pytest.raises(TypeError, match="autocommit is a method"):
        db.autocommit = True
    with pool.connection() as db:
        db.autocommit(False)  # still the driver's method
        assert db.get_autocommit() is False


def test_next_on_a_cursor_and_after_the_checkout(dbapi_target: Any, pools: Any) -> None:
    """PEP 249's optional ``next(cursor)``: rows, StopIteration at the end; refused once
    the checkout ended."""
    _, db, cur = _two_rows(dbapi_target, pools)
    assert [tuple(next(cur)), tuple(next(cur))] == [(1,), (2,)]
    with pytest.raises(StopIteration):
        next(cur)
    cur.execute("SELECT 3")
    db.close()
    with pytest.raises(InvalidCursorError):
        next(cur)


def _autocommit_on(target: Any) -> Any:
    """``on_connect`` that configures a pool's connections in autocommit mode, per driver."""
    if target.name == "pymysql":
        return lambda raw: raw.autocommit(True)
    if target.name == "sqlite3":
        return lambda raw: setattr(raw, "isolation_level", None)
    return lambda raw: setattr(raw, "autocommit", True)


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pymysql", "sqlite3"], indirect=True)
def test_a_begin_in_sql_on_an_autocommit_pool_is_rolled_back_at_checkin(
    dbapi_target: Any, pools: Any
) -> None:
    """In autocommit mode SQL can still open a transaction (``BEGIN``). tether knows an
    autocommit session as idle without asking the driver (after a statement, and after
    a checkin that found it idle); a BEGIN must end that, so the checkin rolls the
    transaction back and the next borrower neither sees the rows nor runs inside it."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, on_connect=_autocommit_on(target))
    pools.append(pool)
    table = target.unique_table("abg")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    pool.connection().close()  # a checkout with no statement: found idle, known idle after
    db = pool.connection()
    execute(target, db, "BEGIN")
    execute(target, db, f"INSERT INTO {table} VALUES (1)")
    db.close()  # given back inside the transaction (no with): rolled back
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]
        execute(target, db, f"INSERT INTO {table} VALUES (2)")  # autocommit: committed alone
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(1,)]


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pymysql"], indirect=True)
def test_a_begin_in_sql_keeps_a_lost_session_from_being_replaced(
    dbapi_target: Any, pools: Any
) -> None:
    """After a BEGIN in SQL on an autocommit connection, a kill must reach the caller:
    re-running the next statement on a new session would commit the rest of the
    transaction without its beginning (the steady rule)."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, on_connect=_autocommit_on(target))
    pools.append(pool)
    table = target.unique_table("abk")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    execute(target, db, "BEGIN")
    execute(target, db, f"INSERT INTO {table} VALUES (1)")
    target.kill_backend(backend_id(target, db))
    time.sleep(0.01)
    with pytest.raises(Exception) as lost:
        execute(target, db, f"INSERT INTO {table} VALUES (2)")
    assert not isinstance(lost.value, InvalidCursorError)  # the driver's error
    db.rollback()
    db.close()
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pymysql"], indirect=True)
def test_a_kept_cursor_of_a_connection_lost_in_a_transaction_stops_working(
    dbapi_target: Any, pools: Any
) -> None:
    """The connection is discarded, not given back (found by an outside attack: its
    kept cursor still read and set driver attributes, as no checkout had ended)."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    db = pool.connection()
    cur = db.cursor()
    cur.execute("SELECT 1")
    target.kill_backend(backend_id(target, db))
    time.sleep(0.01)
    with pytest.raises(Exception) as lost:  # inside a transaction: the driver's error
        cur.execute("SELECT 2")
    assert not isinstance(lost.value, InvalidCursorError)
    db.close()  # rolled back; the lost session is not kept
    with pytest.raises(InvalidCursorError, match="connection is closed"):
        cur.rowcount  # noqa: B018
    with pytest.raises(InvalidCursorError, match="connection is closed"):
        cur.fetchall()
    if target.name != "psycopg":  # a native cursor (steady README): its arraysize is its own
        with pytest.raises(InvalidCursorError):  # (the adapter's native_cursor_unguarded)
            cur.arraysize = 5
    with pytest.raises(InvalidCursorError):
        cur.execute("SELECT 3")
    with pool.connection() as db:
        assert execute(target, db, "SELECT 4") == [(4,)]


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"]
)
def test_a_proxy_a_cursor_and_the_pool_cannot_be_copied(
    pg_target: Any, pools: Any, duplicate: Any
) -> None:
    """Found by an outside attack: ``copy.copy(db)`` made a second proxy around the same
    session that outlived the checkout and committed the next borrower's transaction."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    db = pool.connection()
    cur = db.cursor()
    for obj in (db, cur, pool):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            duplicate(obj)
    db.close()
    with pool.connection() as db:  # nothing was left half-made
        assert execute(pg_target, db, "SELECT 1") == [(1,)]
    assert pool.stats()["in_use"] == 0


@pytest.mark.parametrize("reset_session", [False, True])
@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
def test_a_borrowers_select_db_does_not_reach_the_next_borrower(
    dbapi_target: Any, pools: Any, reset_session: bool
) -> None:
    """Found by an outside attack: PyMySQL's select_db() (which PyMySQL does not
    record) stayed on the session for the next borrower, with reset_session too."""
    target = dbapi_target
    target.server.admin_execute("CREATE DATABASE IF NOT EXISTS tether_other")
    pool = make_pool(target, maxconnections=1, blocking=True, reset_session=reset_session)
    pools.append(pool)
    with pool.connection() as db:
        home = execute(target, db, "SELECT DATABASE()")
        session = backend_id(target, db)
    db = pool.connection()
    select = db.select_db
    select("tether_other")
    assert execute(target, db, "SELECT DATABASE()") == [("tether_other",)]
    db.close()
    with pytest.raises(InvalidConnectionError):
        select("tether_other")  # kept past close(): refused
    with pool.connection() as db:
        assert backend_id(target, db) == session  # the same session, set back
        assert execute(target, db, "SELECT DATABASE()") == home


def test_a_closed_cursors_results_stay_readable_until_the_checkout_ends(
    dbapi_target: Any, pools: Any
) -> None:
    """As on the driver's own closed cursor (found by an outside attack: PyMySQL code that
    reads ``cur.lastrowid`` after ``with conn.cursor() as cur:`` raised)."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("closedres")
    with pool.connection() as db:  # what the driver's own closed cursor answers
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
        raw = db.dbapi_connection.cursor()
        raw.execute(f"INSERT INTO {table} VALUES (1), (2)")
        raw.close()
        expected = (raw.rowcount, raw.description)
    db = pool.connection()
    cur = db.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1), (2)")
    assert cur.rowcount == 2
    cur.close()
    assert (cur.rowcount, cur.description) == expected
    db.commit()
    db.close()
    with pytest.raises(InvalidCursorError):
        cur.rowcount  # noqa: B018  (the checkout ended)


def test_a_connection_the_pool_lets_go_of_is_freed_without_the_collector(
    pg_target: Any, pools: Any
) -> None:
    """Found by an outside attack: every entry was in a cycle with its own weakref
    callback, so each connection the pool closed (lost, invalidated, expired, at
    close()) and its driver objects waited for the garbage collector."""
    pool = make_pool(pg_target, maxconnections=2, blocking=True)
    pools.append(pool)
    gc.collect()
    gc.disable()
    try:
        db = pool.connection()
        driver = weakref.ref(db.dbapi_connection)
        db.invalidate()
        del db
        assert driver() is None
        db = pool.connection()
        driver = weakref.ref(db.dbapi_connection)
        db.close()
        del db
        pool.close()
        assert driver() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
def test_ping_reconnect_through_a_proxy_never_reconnects_behind_the_pool(
    dbapi_target: Any, pools: Any
) -> None:
    """PyMySQL's ``db.ping(reconnect=True)`` through a proxy (found by an outside attack):
    inside a lost transaction it committed the transaction's second half alone; outside
    one it gave the next borrower a session without the pool's setsession."""
    target = dbapi_target
    pool = make_pool(
        target, maxconnections=1, blocking=True, setsession=["SET time_zone = '+05:00'"]
    )
    pools.append(pool)
    table = target.unique_table("pingr")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    execute(target, db, f"INSERT INTO {table} VALUES (1)")  # autocommit off: in a transaction
    target.kill_backend(backend_id(target, db))
    with pytest.raises(target.module.OperationalError):
        db.ping(reconnect=True)
    with pytest.raises(target.module.Error):
        execute(target, db, f"INSERT INTO {table} VALUES (2)")
    db.rollback()
    db.close()
    with pool.connection() as db:
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]
        before = backend_id(target, db)
    target.kill_backend(before)
    time.sleep(0.2)
    with pool.connection() as db:
        db.ping(reconnect=True)
    with pool.connection() as db:
        assert backend_id(target, db) != before
        assert execute(target, db, "SELECT @@session.time_zone") == [("+05:00",)]


@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
def test_an_autocommit_mode_set_in_sql_survives_a_reopen_and_ends_with_the_checkout(
    dbapi_target: Any, pools: Any
) -> None:
    """PyMySQL: a borrower's ``SET autocommit = 0`` on an autocommit pool holds across a
    transparent reopen after an idle kill (found by an outside attack: its rollback()
    then undid nothing), and the next borrower gets the pool's mode back."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, on_connect=_autocommit_on(target))
    pools.append(pool)
    table = target.unique_table("acsql")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    before = backend_id(target, db)
    execute(target, db, "SET autocommit = 0")
    target.kill_backend(before)
    time.sleep(0.2)
    execute(target, db, f"INSERT INTO {table} VALUES (1)")  # reopened: nothing was open
    assert backend_id(target, db) != before
    assert db.get_autocommit() is False
    db.rollback()
    db.close()
    with pool.connection() as db:
        assert db.get_autocommit() is True
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]


@pytest.mark.parametrize("dbapi_target", ["pymysql"], indirect=True)
def test_set_charset_reopens_after_an_idle_kill_is_replayed_and_given_back(
    dbapi_target: Any, pools: Any
) -> None:
    """PyMySQL's ``set_charset()`` (the older name of ``set_character_set()``) is a
    session setter like it (found by an outside attack: after an idle kill it raised
    2013 where set_character_set() reopened): made on a reopened session, replayed at
    the next reopen, and the next borrower gets the pool's character set back."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True, on_connect=_autocommit_on(target))
    pools.append(pool)
    charset = "SELECT @@character_set_client"
    with pool.connection() as db:
        configured = execute(target, db, charset)
        assert configured != [("latin1",)]
        before = backend_id(target, db)
        target.kill_backend(before)  # idle, in autocommit mode
        time.sleep(0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            db.set_charset("latin1")
        assert backend_id(target, db) != before
        assert execute(target, db, charset) == [("latin1",)]
        before = backend_id(target, db)
        target.kill_backend(before)
        time.sleep(0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # replayed by its current name
            assert execute(target, db, charset) == [("latin1",)]  # replayed on the new session
        assert backend_id(target, db) != before
    with pool.connection() as db:
        assert execute(target, db, charset) == configured


# -- session-bound driver objects of an ended checkout (found by an outside attack) ----------


def _kept_past_checkin(pg_target: Any, pools: Any, keep: Any) -> tuple[Any, Any, str]:
    """A one-connection pool, ``keep(db, cur)`` made during a checkout that then ended,
    and the next borrower's checkout (nothing run on it yet) with a table to write to."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = pg_target.unique_table("bound")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    db = pool.connection()
    kept = keep(db, db.cursor(), table)
    db.close()
    return kept, pool.connection(), table


def _untouched(other: Any, table: str) -> None:
    """Nothing of the kept object reached the next borrower's session."""
    assert not other.dbapi_connection.info.transaction_status  # IDLE: nothing ran on it
    assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    other.close()


def test_a_kept_psycopg_transaction_never_runs_on_the_next_borrowers_session(
    pg_target: Any, pools: Any
) -> None:
    """``tx = db.transaction()`` kept past close(): ``with tx:`` sent BEGIN on the next
    borrower's session and COMMIT at its end, committing the next borrower's work."""
    tx, other, table = _kept_past_checkin(pg_target, pools, lambda db, cur, t: db.transaction())
    with pytest.raises(InvalidCursorError, match="checkout that has ended"), tx:
        other.execute(f"INSERT INTO {table} VALUES (1)")
    other.rollback()
    _untouched(other, table)


def test_a_psycopg_transaction_block_works_during_its_checkout(pg_target: Any, pools: Any) -> None:
    """The guard is invisible while the checkout lasts: psycopg's own idiom commits, and
    what it hands out is what psycopg's type hints say (``isinstance`` holds)."""
    import psycopg

    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = pg_target.unique_table("txok")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    with pool.connection() as db:
        with db.transaction() as tx:
            assert isinstance(tx, psycopg.Transaction)
            db.execute(f"INSERT INTO {table} VALUES (1)")
            assert tx.connection.info.transaction_status  # in the transaction block
        with db.transaction(), db.transaction() as inner:
            db.execute(f"INSERT INTO {table} VALUES (2)")
            assert inner.savepoint_name  # nested: a savepoint
        db.rollback()  # nothing open: the blocks committed
    with pool.connection() as db:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)


def test_a_kept_psycopg_pipeline_never_runs_on_the_next_borrowers_session(
    pg_target: Any, pools: Any
) -> None:
    pipeline, other, table = _kept_past_checkin(pg_target, pools, lambda db, c, t: db.pipeline())
    with pytest.raises(InvalidCursorError), pipeline:
        other.execute(f"INSERT INTO {table} VALUES (1)")
    other.rollback()
    _untouched(other, table)


def test_a_kept_psycopg_copy_never_runs_on_the_next_borrowers_session(
    pg_target: Any, pools: Any
) -> None:
    """``cur.copy(...)`` made (not entered) during the checkout, entered after it."""
    copy, other, table = _kept_past_checkin(
        pg_target, pools, lambda db, cur, t: cur.copy(f"COPY {t} FROM STDIN")
    )
    with pytest.raises(InvalidCursorError), copy as cp:
        cp.write_row((42,))
    other.commit()
    _untouched(other, table)


def test_a_kept_psycopg_stream_never_runs_on_the_next_borrowers_session(
    pg_target: Any, pools: Any
) -> None:
    """``cur.stream(...)`` is a generator: nothing is sent until its first ``next()``."""
    rows, other, table = _kept_past_checkin(
        pg_target, pools, lambda db, cur, t: cur.stream(f"INSERT INTO {t} VALUES (7) RETURNING x")
    )
    with pytest.raises(InvalidCursorError):
        next(rows)
    _untouched(other, table)


def test_a_kept_psycopg_notifies_never_listens_on_the_next_borrowers_session(
    pg_target: Any, pools: Any
) -> None:
    """``db.notifies()`` kept past close() took the next borrower's notifications."""
    pool = make_pool(
        pg_target, maxconnections=1, blocking=True, on_connect=_autocommit_on(pg_target)
    )
    pools.append(pool)
    db = pool.connection()
    notifies = db.notifies(timeout=0.5, stop_after=1)
    db.close()
    other = pool.connection()
    other.execute("LISTEN tether_bound")
    other.execute("NOTIFY tether_bound, 'for the next borrower'")
    with pytest.raises(InvalidCursorError):
        next(notifies)
    assert [n.payload for n in other.notifies(timeout=0.5, stop_after=1)] == [
        "for the next borrower"
    ]
    other.execute("UNLISTEN *")
    other.close()


def test_a_kept_server_side_cursor_never_fetches_or_closes_on_the_next_session(
    pg_target: Any, pools: Any
) -> None:
    """A named cursor's FETCH is refused once its checkout ended, and its close() sends
    nothing: psycopg's would CLOSE the cursor of that name, the next borrower's own."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True)
    pools.append(pool)
    db = pool.connection()
    kept = db.cursor(name="tether_named")
    kept.execute("SELECT generate_series(1, 3)")
    assert kept.fetchone() == (1,)
    db.close()  # rolled back: the portal is gone with the transaction
    other = pool.connection()
    mine = other.cursor(name="tether_named")
    mine.execute("SELECT generate_series(11, 13)")
    assert mine.fetchone() == (11,)
    for use in (kept.fetchone, kept.fetchall, lambda: kept.scroll(0, mode="absolute")):
        with pytest.raises(InvalidCursorError):
            use()
    kept.close()
    assert mine.fetchone() == (12,)  # the next borrower's cursor is still open
    mine.close()
    other.rollback()
    other.close()


@pytest.mark.parametrize("dbapi_target", ["sqlite3"], indirect=True)
def test_a_kept_sqlite3_iterdump_never_reads_the_next_borrowers_data(
    dbapi_target: Any, pools: Any
) -> None:
    """``db.iterdump()`` is a generator over the connection: kept past close(), it
    dumped the next borrower's uncommitted rows."""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("dump")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x TEXT)")
    db = pool.connection()
    dump = db.iterdump()
    db.close()
    other = pool.connection()
    other.execute(f"INSERT INTO {table} VALUES ('the next borrower''s secret')")
    with pytest.raises(InvalidCursorError):
        next(dump)
    other.rollback()
    other.close()


def test_a_checkin_after_an_unfinished_stream_does_not_hang(pg_target: Any, pools: Any) -> None:
    """A stream() left half-read keeps psycopg's connection lock and the query running:
    the checkin's rollback waited for that lock forever. It is bounded by
    checkout_timeout, and a session it could not roll back is never lent again."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True, checkout_timeout=2.0)
    pools.append(pool)
    db = pool.connection()
    rows = db.cursor().stream("SELECT generate_series(1, 10000000)")
    assert next(rows) == (1,)
    checkin = threading.Thread(target=db.close, daemon=True)
    started = time.monotonic()
    checkin.start()
    checkin.join(10.0)
    assert not checkin.is_alive(), "the checkin hung"
    assert time.monotonic() - started < 2.5
    with pool.connection() as other:
        assert other.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(InvalidCursorError):
        next(rows)


# -- driver configuration a borrower adds (found by an outside attack) ------------------------


def test_a_psycopg_dumper_a_borrower_registers_never_reaches_the_next_one(
    pg_target: Any, pools: Any
) -> None:
    """``db.adapters.register_dumper()`` lives on psycopg's connection: one borrower's
    dumper rewrote what the next one stored. The pool's own (``on_connect``) stays, and
    the session is kept: nothing is reconnected for it."""
    import psycopg.adapt

    class Tampered(psycopg.adapt.Dumper):
        oid = 25  # text

        def dump(self, obj: Any) -> bytes:
            return b"tampered"

    class Pooled(psycopg.adapt.Dumper):
        oid = 25

        def dump(self, obj: Any) -> bytes:
            return b"pool:" + str(obj).encode()

    class Marker(float):
        """A type the pool's on_connect configures."""

    pool = make_pool(
        pg_target,
        maxconnections=1,
        blocking=True,
        on_connect=lambda raw: raw.adapters.register_dumper(Marker, Pooled),
    )
    pools.append(pool)
    with pool.connection() as db:
        session = backend_id(pg_target, db)
        db.adapters.register_dumper(str, Tampered)
        assert db.execute("SELECT %s::text", ("mine",)).fetchone() == ("tampered",)
    with pool.connection() as db:
        assert db.execute("SELECT %s::text", ("real",)).fetchone() == ("real",)
        assert db.execute("SELECT %s::text", (Marker(1.5),)).fetchone() == ("pool:1.5",)
        assert backend_id(pg_target, db) == session


def test_psycopg_notice_and_notify_handlers_of_a_borrower_never_see_the_next_ones(
    pg_target: Any, pools: Any
) -> None:
    """``add_notice_handler()``/``add_notify_handler()`` callbacks are kept by psycopg's
    connection: one borrower's received the next borrower's notices."""
    seen: list[str] = []
    configured: list[str] = []
    pool = make_pool(
        pg_target,
        maxconnections=1,
        blocking=True,
        on_connect=lambda raw: raw.add_notice_handler(
            lambda d: configured.append(d.message_primary)
        ),
    )
    pools.append(pool)
    with pool.connection() as db:
        db.add_notice_handler(lambda d: seen.append(d.message_primary))
        db.add_notify_handler(lambda n: seen.append(n.payload))
        db.execute("DO $$BEGIN RAISE NOTICE 'first'; END$$")
        db.commit()
    assert seen == configured == ["first"]
    with pool.connection() as db:
        db.execute("LISTEN tether_handlers")
        db.commit()
        db.execute("DO $$BEGIN RAISE NOTICE 'second'; END$$")
        db.execute("NOTIFY tether_handlers, 'private'")
        db.commit()
        db.execute("SELECT 1")  # delivers the notification, if anyone listened for it
        db.execute("UNLISTEN *")
        db.commit()
    assert seen == ["first"]  # neither the notice nor the notification
    assert configured == ["first", "second"]  # the pool's handler is still there


def test_reset_session_forgets_the_notifications_a_borrower_received(
    pg_target: Any, pools: Any
) -> None:
    """psycopg keeps the notifications a statement delivered for the next ``notifies()``:
    with ``reset_session=True`` the next borrower got the last one's (fourth outside attack,
    H3). DISCARD ALL ends the LISTEN; the client-side backlog goes with it."""
    pool = make_pool(
        pg_target,
        maxconnections=1,
        blocking=True,
        reset_session=True,
        on_connect=_autocommit_on(pg_target),
    )
    pools.append(pool)
    with pool.connection() as db:
        db.execute("LISTEN tether_backlog")
        db.execute("NOTIFY tether_backlog, 'private'")
        db.execute("SELECT 1")  # the notification is now in the client
    with pool.connection() as db:
        db.execute("LISTEN tether_backlog")
        db.execute("NOTIFY tether_backlog, 'for the next borrower'")
        received = [n.payload for n in db.notifies(timeout=0.5, stop_after=1)]
        db.execute("UNLISTEN *")
    assert received == ["for the next borrower"]


def _kept_attribute(target: Any, pools: Any, name: str) -> tuple[Any, Any]:
    """A pool of one, and the driver object ``db.<name>`` a borrower kept past its close()."""
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    db = pool.connection()
    kept = getattr(db, name)
    db.close()
    return pool, kept


def test_psycopg_adapters_kept_past_checkin_never_reach_the_next_borrower(
    pg_target: Any, pools: Any
) -> None:
    """A borrower kept ``db.adapters`` and registered a dumper on it after close(): it
    rewrote the next borrower's parameters (fifth outside attack)."""
    import psycopg.adapt

    class Tampered(psycopg.adapt.Dumper):
        oid = 25  # text

        def dump(self, obj: Any) -> bytes:
            return b"tampered"

    pool, kept = _kept_attribute(pg_target, pools, "adapters")
    with pool.connection() as db:
        kept.register_dumper(str, Tampered)
        assert db.execute("SELECT %s::text", ("real",)).fetchone() == ("real",)


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_pymysql_decoders_kept_past_checkin_never_reach_the_next_borrower(
    server_target: Any, pools: Any
) -> None:
    """A borrower kept ``db.decoders`` and changed it after close() (fifth outside attack)."""
    pool, kept = _kept_attribute(server_target, pools, "decoders")
    with pool.connection() as db:
        kept.clear()
        kept.update({k: (lambda value: "EVIL") for k in range(256)})
        assert execute(server_target, db, "SELECT 7") == [(7,)]


@pytest.mark.parametrize("server_target", ["pgdb", "pg"], indirect=True)
def test_pygresql_typecasts_a_borrower_sets_never_reach_the_next_one(
    server_target: Any, pools: Any
) -> None:
    """PyGreSQL converts every fetched value with the connection's typecasts: one
    borrower's ``set_typecast()`` converted the next borrower's rows (fourth outside attack,
    H4). The pool's own, set in ``on_connect``, stays; the session is kept."""
    target = server_target

    def cache(db: Any) -> Any:
        return db.type_cache if target.name == "pgdb" else db.dbtypes

    def typed(db: Any) -> Any:
        if target.name == "pgdb":
            cursor = db.cursor()
            cursor.execute(f"SELECT {values}")
            row = cursor.fetchone()
            cursor.close()
            return tuple(row)
        return tuple(db.query(f"SELECT {values}").getresult()[0])

    values = "'2020-01-02'::date, '2020-01-02 03:04'::timestamp"
    stamp = datetime.datetime(2020, 1, 2, 3, 4)

    pool = make_pool(
        target,
        maxconnections=1,
        blocking=True,
        on_connect=lambda raw: cache(raw).set_typecast("date", lambda v: f"pool:{v}"),
    )
    pools.append(pool)
    with pool.connection() as db:
        session = backend_id(target, db)
        assert typed(db) == ("pool:2020-01-02", stamp)
        cache(db).set_typecast("date", lambda v: "tampered")
        cache(db).set_typecast("timestamp", lambda v: "tampered")
        assert typed(db) == ("tampered", "tampered")
    with pool.connection() as db:
        assert typed(db) == ("pool:2020-01-02", stamp)
        assert backend_id(target, db) == session
        if target.name == "pg":
            db.use_regtypes(True)
    if target.name == "pg":
        with pool.connection() as db:
            assert db.use_regtypes() is False


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_pymysql_encoders_a_borrower_changes_never_reach_the_next_one(
    server_target: Any, pools: Any
) -> None:
    """PyMySQL escapes every parameter with its connection's ``encoders``: one borrower's
    entry rewrote the next borrower's parameters. The session is kept."""
    pool = make_pool(server_target, maxconnections=1, blocking=True)
    pools.append(pool)
    with pool.connection() as db:
        session = backend_id(server_target, db)
        db.encoders[int] = lambda value, mapping=None: "'tampered'"
        db.decoders.clear()
        assert execute(server_target, db, "SELECT %s", (42,)) == [("tampered",)]
    with pool.connection() as db:
        assert execute(server_target, db, "SELECT %s + 1", (41,)) == [(42,)]
        assert backend_id(server_target, db) == session


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_pymysql_query_attributes_a_borrower_changes_never_reach_the_next_one(
    server_target: Any, pools: Any
) -> None:
    """Found by an outside attack: ``db.encoding = "cp1252"`` and ``max_allowed_packet``,
    which PyMySQL reads on every query, reached the next borrower (its UTF-8 text was
    refused, or with a lax sql_mode stored mangled)."""
    pool = make_pool(server_target, maxconnections=1, blocking=True)
    pools.append(pool)
    with pool.connection() as db:
        encoding, packet = db.encoding, db.max_allowed_packet
        db.encoding = "cp1252"
        db.max_allowed_packet = 64
    with pool.connection() as db:
        assert (db.encoding, db.max_allowed_packet) == (encoding, packet)
        assert execute(server_target, db, "SELECT %s", ("naïve",)) == [("naïve",)]


@pytest.mark.parametrize("dbapi_target", ["sqlite3"], indirect=True)
def test_a_sqlite3_trace_callback_ends_with_its_checkout(dbapi_target: Any, pools: Any) -> None:
    """sqlite3 cannot say which trace callback (authorizer, progress handler, function...)
    is installed, so a checkout that set one ends with its connection closed: one
    borrower's callback saw every statement of the next. The database (a file) stays, and
    the pool's own configuration comes with the new connection."""
    target = dbapi_target
    pool = make_pool(
        target,
        maxconnections=1,
        blocking=True,
        on_connect=lambda raw: raw.create_function("pooled", 0, lambda: "pool's"),
    )
    pools.append(pool)
    table = target.unique_table("trace")
    seen: list[str] = []
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x TEXT)")
        db.set_trace_callback(seen.append)
        db.execute(f"INSERT INTO {table} VALUES ('mine')")
    assert any("mine" in sql for sql in seen)  # it worked while its checkout lasted
    seen.clear()
    with pool.connection() as db:
        db.execute(f"INSERT INTO {table} VALUES ('the next borrower''s secret')")
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(2,)]
        assert execute(target, db, "SELECT pooled()") == [("pool's",)]
    assert seen == []
    assert pool.stats()["opened"] == 2  # the first connection went with its checkout


@pytest.mark.parametrize("dbapi_target", ["sqlite3"], indirect=True)
def test_a_sqlite3_deserialize_ends_with_its_checkout(dbapi_target: Any, pools: Any) -> None:
    """Found by an outside attack: a borrower's deserialize() left the connection on an
    in-memory image, and the next borrower's commits never reached the database file.
    (Before Python 3.11 sqlite3 has no deserialize(): the driver's AttributeError passes.)"""
    target = dbapi_target
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("image")
    with pool.connection() as db:
        db.execute(f"CREATE TABLE {table} (x TEXT)")
    if sys.version_info < (3, 11):
        with pool.connection() as db, pytest.raises(AttributeError):
            db.deserialize(b"")
        return
    image = sqlite3.connect(":memory:")
    image.execute(f"CREATE TABLE {table} (x TEXT)")
    with pool.connection() as db:
        db.deserialize(image.serialize())
    image.close()
    with pool.connection() as db:
        db.execute(f"INSERT INTO {table} VALUES ('kept')")
    check = sqlite3.connect(target.args[0])
    try:
        assert check.execute(f"SELECT x FROM {table}").fetchall() == [("kept",)]
    finally:
        check.close()


def test_a_borrowers_dumper_survives_a_transparent_reopen_in_its_checkout(
    pg_target: Any, pools: Any
) -> None:
    """Found by the model test: the session killed while idle, the borrower's next statement
    ran on a new session without the dumper it had registered ("cannot adapt type"). Kept
    for the rest of the checkout, as its settings are; the next borrower still has none."""
    import psycopg
    import psycopg.adapt

    class Marker:
        pass

    class MarkerDumper(psycopg.adapt.Dumper):
        oid = 25  # text

        def dump(self, obj: Any) -> bytes:
            return b"marker"

    pool = make_pool(
        pg_target, maxconnections=1, blocking=True, on_connect=_autocommit_on(pg_target)
    )
    pools.append(pool)
    with pool.connection() as db:
        db.adapters.register_dumper(Marker, MarkerDumper)
        pid = backend_id(pg_target, db)
        pg_target.kill_backend(pid)
        time.sleep(0.05)  # past ALIVE_BYPASS: the socket is looked at before the statement
        assert db.execute("SELECT %s::text", (Marker(),)).fetchone() == ("marker",)
        assert backend_id(pg_target, db) != pid  # it was reopened
    with pool.connection() as db, pytest.raises(psycopg.ProgrammingError):
        db.execute("SELECT %s::text", (Marker(),))


def _pool_and_table(target: Any, pools: Any) -> tuple[Any, str]:
    """A pool of one connection and a new table of text values ``x``."""
    pool = make_pool(target, maxconnections=1, blocking=True)
    pools.append(pool)
    table = target.unique_table("tpc")
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x TEXT)")
    return pool, table


@pytest.mark.parametrize("end", ["db.close()", "invalidate()", "pool.close()"])
def test_a_prepared_two_phase_transaction_never_outlives_its_checkout(
    pg_target: Any, pools: Any, end: str
) -> None:
    """A prepared transaction outlives its session on the server, holding its locks, and
    anyone can commit it by its id: one a borrower left survived ``invalidate()`` and a
    closing pool (fifth outside attack). It is rolled back however the checkout ends."""
    pool, table = _pool_and_table(pg_target, pools)
    db = pool.connection()
    gid = f"tether-prepared-{table}"
    db.tpc_begin(db.xid(1, gid, "branch"))
    execute(pg_target, db, f"INSERT INTO {table} VALUES ('A')")
    db.tpc_prepare()
    if end == "invalidate()":
        db.invalidate()
    elif end == "pool.close()":
        pool.close()
        db.close()
    else:
        db.close()
    server = pg_target.server
    deadline = time.monotonic() + 5
    # (The only prepared transaction of this worker's server: psycopg encodes the id.)
    while server.admin_execute("SELECT count(*) FROM pg_prepared_xacts") != [(0,)]:
        assert time.monotonic() < deadline, "the prepared transaction is still on the server"
        time.sleep(0.05)
    assert server.admin_execute(f"SELECT count(*) FROM {table}") == [(0,)]


def test_a_two_phase_transaction_given_back_open_is_rolled_back(pg_target: Any, pools: Any) -> None:
    """Found by an outside attack: psycopg keeps a tpc_begin()'s state (``_tpc``) on the
    connection; given back open, every later borrower's commit() raised "commit() cannot
    be used during a two-phase transaction". It is rolled back at checkin, as any open
    transaction is, and the next borrower commits."""
    pool, table = _pool_and_table(pg_target, pools)
    db = pool.connection()
    db.tpc_begin(db.xid(1, "tether-tpc", "branch"))
    execute(pg_target, db, f"INSERT INTO {table} VALUES ('A')")
    db.close()
    for who in ("B", "C"):
        db = pool.connection()
        execute(pg_target, db, f"INSERT INTO {table} VALUES (%s)", (who,))
        db.commit()
        db.close()
    with pool.connection() as db:
        assert execute(pg_target, db, f"SELECT x FROM {table} ORDER BY x") == [("B",), ("C",)]


def test_a_pipeline_kept_open_past_checkin_never_reaches_the_next_borrower(
    pg_target: Any, pools: Any
) -> None:
    """A pipeline entered by hand and kept (``p = db.pipeline(); p.__enter__()``) left the
    connection in pipeline mode for every later borrower: errors deferred, autocommit
    statements uncommitted (found by an outside attack). The connection is dropped."""
    pool = make_pool(pg_target, maxconnections=1, blocking=True, autocommit=True)
    pools.append(pool)
    db = pool.connection()
    kept = db.pipeline()
    kept.__enter__()
    db.cursor().execute("SELECT 1")
    db.close()
    with pool.connection() as db:
        with pytest.raises(Exception) as info:  # at execute(), as outside a pipeline
            db.cursor().execute("SELECT 1/0")
        assert "division by zero" in str(info.value)
    assert pool.stats()["discarded"] == 1


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
@pytest.mark.parametrize("how", ["query", "dbapi_connection"])
def test_a_read_past_tether_does_not_leave_its_transaction_to_the_next_borrower(
    server_target: Any, pools: list[Any], how: str
) -> None:
    """PyMySQL, autocommit off: a SELECT ... FOR UPDATE run past tether holds row locks in
    an InnoDB transaction the server does not flag (PyMySQL's adapter answers "maybe").
    It was not rolled back at checkin: the locks stayed, idle in the pool, and the next
    borrower ran inside that transaction (found by an outside attack)."""
    target = server_target
    table = target.unique_table()
    admin = target.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO {table} VALUES (1, 0)")
        admin.commit()
        pool = PooledDB(target.creator, maxconnections=1, maxcached=1, blocking=True,
                        **target.kwargs)  # fmt: skip
        pools.append(pool)
        db = pool.connection()
        sql = f"SELECT * FROM {table} WHERE id = 1 FOR UPDATE"
        if how == "query":
            db.query(sql)  # PyMySQL's own Connection.query(), through the proxy
        else:
            with db.dbapi_connection.cursor() as raw_cursor:
                raw_cursor.execute(sql)
                raw_cursor.fetchall()
        db.close()
        # The row lock is gone: another session can update the row at once.
        with admin.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
            cur.execute(f"UPDATE {table} SET n = 1 WHERE id = 1")
        admin.commit()
        # And the next borrower starts a transaction of its own: it sees that commit.
        with pool.connection() as db2:
            cursor = db2.cursor()
            cursor.execute(f"SELECT n FROM {table} WHERE id = 1")
            assert cursor.fetchone() == (1,)  # inside the old snapshot it was 0
    finally:
        admin.close()


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_a_database_chosen_in_sql_is_undone_by_reset_session(
    server_target: Any, pools: list[Any]
) -> None:
    """COM_RESET_CONNECTION keeps the current database, also one chosen with SQL USE,
    which no PyMySQL attribute shows: the next borrower's unqualified queries went to the
    other schema (found by an outside attack)."""
    target = server_target
    pool = PooledDB(target.creator, maxconnections=1, maxcached=1, blocking=True,
                    reset_session=True, **target.kwargs)  # fmt: skip
    pools.append(pool)
    with pool.connection() as db:
        cursor = db.cursor()
        cursor.execute("SELECT DATABASE()")
        (configured,) = cursor.fetchone()
        cursor.execute("USE information_schema")
    with pool.connection() as db:
        cursor = db.cursor()
        cursor.execute("SELECT DATABASE()")
        assert cursor.fetchone() == (configured,)


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_pygresql_objects_that_hold_the_session_end_with_the_checkout(server_target: Any) -> None:
    """PooledPg: ``db.source()``, ``db.locreate()`` and ``db.notification_handler()`` return
    objects that go on using the session. Kept past ``close()``, a Source read the next
    borrower's uncommitted row and wrote into its transaction, which then committed it
    (found by an outside attack). They work during the checkout, and raise after it."""
    import pg

    pool = make_pool(server_target, maxconnections=1)
    try:
        table = server_target.unique_table("kept")
        db = pool.connection()
        db.query(f"CREATE TABLE {table} (who TEXT)")
        source = db.source()
        source.execute("SELECT 1")
        assert source.fetch(1) == [("1",)]  # usable while the checkout lasts (as text)
        db.begin()
        large = db.locreate(pg.INV_READ | pg.INV_WRITE)
        large.open(pg.INV_WRITE)
        large.write(b"a")
        large.close()
        db.commit()
        handler = db.notification_handler("tether_kept", lambda *event: None)
        db.close()
        other = pool.connection()  # the same driver connection, the next borrower
        other.begin()
        other.query(f"INSERT INTO {table} VALUES ('B, not yet committed')")
        with pytest.raises(InvalidCursorError):
            source.execute(f"INSERT INTO {table} VALUES ('A, after checkin')")
        with pytest.raises(InvalidCursorError):
            large.open(pg.INV_WRITE)
        with pytest.raises(InvalidCursorError):
            handler.listen()
        other.commit()
        assert execute(server_target, other, f"SELECT who FROM {table}") == [
            ("B, not yet committed",)
        ]
        other.query(f"DROP TABLE {table}")
        other.close()
    finally:
        pool.close()


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_a_pygresql_notice_receiver_ends_with_the_checkout(server_target: Any, capfd: Any) -> None:
    """A notice receiver one borrower set neither hears the next borrower's notices nor
    silences them: PyGreSQL cannot give libpq's own notice printing back once a receiver
    was set, so the session ends with the checkout (found by an outside attack: the next
    borrower's NOTICE printed nothing)."""
    pool = make_pool(server_target, maxconnections=1)
    try:
        heard: list[str] = []
        db = pool.connection()
        db.set_notice_receiver(lambda notice: heard.append(notice.message))
        db.query("DO $$ BEGIN RAISE NOTICE 'for A'; END $$")
        db.close()
        db = pool.connection()
        db.query("DO $$ BEGIN RAISE NOTICE 'for B'; END $$")
        db.close()
        assert heard == ["NOTICE:  for A\n"]
        assert "for B" in capfd.readouterr().err, "the next borrower's notice vanished"
    finally:
        pool.close()


@pytest.mark.parametrize("bad", ["rejected", "fails-while-running"])
@pytest.mark.parametrize("blocking", [False, True], ids=["nonblocking", "blocking"])
@pytest.mark.parametrize("server_target", ["psycopg", "pymysql"], indirect=True)
def test_a_ping_that_cannot_work_is_raised_at_once_not_taken_for_an_outage(
    server_target: Any, blocking: bool, bad: str
) -> None:
    """Two pings that can never succeed, with ``ping_after=0`` (every checkout pings).

    *rejected*, a statement the server rejects (a typo): found by an outside attack, the
    checkout opened 512 connections in 3 s, then raised "the database did not answer in
    time"; a second attack found a blocking pool closing the healthy connection on every
    other checkout and handing out its unpinged replacement in between. Now every
    checkout raises PingStatementError at once, on the one connection, given back.

    *fails-while-running* (a division by zero; on MySQL, where that is NULL, a subquery
    of two rows) means "dead", so the connection it ran on is replaced: found by an
    outside attack, the replacement was pinged too, and one checkout opened ~150
    connections a second until its deadline. A ping failing on two connections just
    opened raises PingStatementError at once instead.
    """
    target = server_target
    if bad == "rejected":
        ping, says = "SELECT * FROM no_such_table", "no_such_table"
    else:
        ping = "SELECT 1/0" if target.name == "psycopg" else "SELECT (SELECT 1 UNION SELECT 2)"
        says = "just opened"
    pool = make_pool(
        target, maxconnections=2, ping=ping, ping_after=0, checkout_timeout=3,
        blocking=blocking,
    )  # fmt: skip
    try:
        for _ in range(4):
            started = time.monotonic()
            with pytest.raises(PingStatementError, match=says):
                pool.connection()
            assert time.monotonic() - started < 1, "raised at once, not at the deadline"
        s = pool.stats()
        assert s["timeouts"] == 0 and s["connect_errors"] == 0 and s["in_use"] == 0, s
        if bad == "rejected":  # the healthy connection is kept
            assert s["opened"] == 1 and s["closed"] == 0 and s["size"] == s["idle"] == 1, s
        else:  # two connects per checkout at most
            assert s["opened"] <= 8 and s["size"] == s["opened"] - s["closed"] == 0, s
        good = make_pool(target, maxconnections=2, ping="SELECT 1", ping_after=0)
        try:
            db = good.connection()  # the same server is fine: it was the setting
            assert execute(target, db, "SELECT 1") == [(1,)]
            db.close()
        finally:
            good.close()
    finally:
        pool.close()


@pytest.mark.parametrize("blocking", [False, True], ids=["nonblocking", "blocking"])
@pytest.mark.parametrize("server_target", ["psycopg", "pgdb"], indirect=True)
def test_a_session_killed_right_after_its_connect_is_no_configuration_error(
    server_target: Any, pools: list[Any], blocking: bool
) -> None:
    """With ``ping_after=0`` the new connection's ping fails when the server ended the
    session right after the connect (an administrator, a failover). Found by an outside
    attack: that one failure raised PingStatementError, a configuration error (and on
    pgdb, whose next step of preparing the session failed first, SetSessionError). A
    ping that fails on a new connection is retried once on another: only a second
    failure in a row says the ping itself takes every new connection for dead; a
    session lost while it is prepared is a failed connect, retried as one."""
    pg_target = server_target
    admin = pg_target.connect()
    admin.autocommit = True
    killed: list[int] = []

    def kill_the_first(raw: Any) -> None:
        if not killed:
            if pg_target.name == "psycopg":
                pid = raw.info.backend_pid
            else:  # a statement: pgdb's BEGIN opens a transaction tether must end next
                cur = raw.cursor()
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
                cur.close()
            killed.append(pid)
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
            time.sleep(0.05)  # the backend is gone before the ping

    try:
        pool = make_pool(
            pg_target, maxconnections=2, blocking=blocking, ping_after=0,
            checkout_timeout=5, on_connect=kill_the_first,
        )  # fmt: skip
        pools.append(pool)
        if pg_target.name == "pgdb" and not blocking:
            # Killed while being prepared: the connect failed, and a non-blocking
            # checkout raises its own connect's error, as DBUtils does: the driver's,
            # an outage's, never a configuration error. The next one connects.
            with pytest.raises(pg_target.module.Error) as failure:
                pool.connection()
            assert not isinstance(failure.value, TetherError), repr(failure.value)
            deadline = time.monotonic() + 5  # an outage's course: reconnected in the background
            while pool.stats()["unreachable"] and time.monotonic() < deadline:
                time.sleep(0.02)
        with pool.connection() as db:
            pid = execute(pg_target, db, "SELECT pg_backend_pid()")[0][0]
        assert killed and pid != killed[0], (killed, pid)
        s = pool.stats()
        assert s["in_use"] == 0 and s["size"] == s["idle"] == 1, s
    finally:
        admin.close()


def _admin_with_table(target: Any, prefix: str) -> tuple[Any, Any, str]:
    """A driver connection of the test's own, its cursor, and a new table ``(x INTEGER)``."""
    table = target.unique_table(prefix)
    admin = target.connect()
    cur = admin.cursor()
    cur.execute(f"CREATE TABLE {table} (x INTEGER)")
    admin.commit()
    return admin, cur, table


@pytest.mark.parametrize("sql", ["COMMIT", "ROLLBACK"])
@pytest.mark.parametrize("server_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
def test_a_borrower_that_ended_its_transaction_by_sql_leaves_the_next_one_a_transaction(
    server_target: Any, sql: str
) -> None:
    """Borrower 1 ends its transaction with SQL through ``execute()`` and gives the
    connection back; borrower 2's ``with`` block raises, so its INSERT is rolled back.
    Found by an outside attack on pgdb: the row stayed, since pgdb's own flag still said
    "in a transaction" and it sent no BEGIN for borrower 2's statement."""
    target = server_target
    admin, cur, table = _admin_with_table(target, "sqlend")
    try:
        pool = make_pool(target, maxconnections=1)
        try:
            with pool.connection() as db:
                execute(target, db, f"INSERT INTO {table} VALUES (1)")
                execute(target, db, sql)
            with pytest.raises(RuntimeError), pool.connection() as db:
                execute(target, db, f"INSERT INTO {table} VALUES (2)")
                raise RuntimeError("the block fails: its INSERT must not stay")
            cur.execute(f"SELECT x FROM {table}")
            rows = sorted(r[0] for r in cur.fetchall())
            admin.commit()
            assert rows == ([1] if sql == "COMMIT" else []), rows
        finally:
            pool.close()
    finally:
        admin.close()


@pytest.mark.parametrize("server_target", ["psycopg"], indirect=True)
def test_with_ping_after_0_a_connection_handed_to_a_waiter_is_pinged_too(
    server_target: Any,
) -> None:
    """``ping_after=0`` means every checkout pings: also one served by a checkin that
    found it waiting, or by a connection opened for it (found by an outside attack: 8
    threads on 2 connections with a ping that cannot succeed all got a connection, since
    only the idle list's were pinged). A ping that counts in a sequence shows it: one
    ping per checkout, whichever way the checkout was served."""
    target = server_target
    seq = target.unique_table("pings")
    admin = target.connect()
    try:
        admin.autocommit = True
        admin.cursor().execute(f"CREATE SEQUENCE {seq}")
        pool = make_pool(
            target, maxconnections=2, blocking=True, ping_after=0, checkout_timeout=10,
            ping=f"SELECT nextval('{seq}')",
        )  # fmt: skip
        try:
            served = []
            lock = threading.Lock()

            def borrow() -> None:
                for _ in range(5):
                    db = pool.connection()
                    try:
                        execute(target, db, "SELECT pg_sleep(0.01)")
                    finally:
                        db.close()
                    with lock:
                        served.append(1)

            threads = [threading.Thread(target=borrow) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            s = pool.stats()
            assert len(served) == 40 and s["checkouts"] == 40 and s["waits"] > 0, s
            cur = admin.cursor()
            cur.execute(f"SELECT last_value FROM {seq}")
            pings = cur.fetchone()[0]
            assert pings == 40, f"{pings} pings for 40 checkouts ({s})"
        finally:
            pool.close()
    finally:
        admin.close()


@pytest.mark.parametrize("server_target", ["psycopg", "pymysql"], indirect=True)
def test_a_ping_statement_outside_autocommit_leaves_no_transaction_open(
    server_target: Any,
) -> None:
    """``ping`` as an SQL statement, autocommit off: the pool's validation of an idle
    connection ran it and left the session idle in a transaction (an InnoDB snapshot on
    MariaDB), so the next borrower read that old snapshot (found by an outside attack)."""
    target = server_target
    admin, cur, table = _admin_with_table(target, "ping")
    try:
        setsession = (
            ["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ"]
            if target.name == "psycopg"
            else []  # InnoDB's default is REPEATABLE READ
        )
        pool = make_pool(
            target,
            maxconnections=1,
            ping=f"SELECT COUNT(*) FROM {table}",
            validate_interval=0.2,
            setsession=setsession,
        )
        try:
            db = pool.connection()
            execute(target, db, "SELECT 1")
            db.commit()
            db.close()
            time.sleep(0.6)  # the maintenance thread validates the idle connection
            cur.execute(f"INSERT INTO {table} VALUES (1)")  # committed before the checkout
            admin.commit()
            db = pool.connection()
            assert execute(target, db, f"SELECT COUNT(*) FROM {table}") == [(1,)], "old snapshot"
            db.commit()
            db.close()
        finally:
            pool.close()
        cur.execute(f"DROP TABLE {table}")
        admin.commit()
    finally:
        admin.close()


def test_above_its_size_a_session_is_never_held_twice_and_every_thread_is_served(
    pg_target: Any, pools: list[Any]
) -> None:
    """12 threads on 3 connections: every checkin hands its connection to the longest waiter.

    No server session is used by two borrowers at once, every thread gets
    its share, the counts add up, every wait stays inside checkout_timeout,
    and after every session was killed meanwhile the pool serves all threads
    again with no error.
    """
    threads, size, rounds = 12, 3, 40
    pool = make_pool(
        pg_target, mincached=size, maxcached=size, maxconnections=size, blocking=True,
        checkout_timeout=5,
    )  # fmt: skip
    pools.append(pool)
    in_use: set[int] = set()
    seen: set[int] = set()
    guard = threading.Lock()
    problems: list[str] = []
    counts = [0] * threads

    def requests(index: int) -> None:
        for _ in range(rounds):
            try:
                with pool.connection() as db:
                    pid = backend_id(pg_target, db)
                    with guard:
                        if pid in in_use:
                            problems.append(f"session {pid} held by two borrowers")
                        in_use.add(pid)
                        seen.add(pid)
                    time.sleep(0.0005)
                    with guard:
                        in_use.discard(pid)
                counts[index] += 1
            except Exception as exc:  # reported below
                problems.append(f"{type(exc).__name__}: {exc}")

    def run_all() -> None:
        workers = [threading.Thread(target=requests, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        for worker in workers:
            worker.join(max(deadline - time.monotonic(), 0))
        assert not any(worker.is_alive() for worker in workers), "a thread was never served"

    run_all()
    assert problems == []
    assert counts == [rounds] * threads
    # Every session dies while the connections are idle in the pool; nothing is open.
    seen_before = set(seen)
    for pid in seen_before:
        pg_target.kill_backend(pid)
    seen.clear()
    counts[:] = [0] * threads
    run_all()
    assert problems == []  # healthy afterwards: every request of every thread worked
    assert counts == [rounds] * threads
    assert seen and not seen & seen_before  # on new sessions only
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["checkouts"] == stats["checkins"]
    assert stats["waits"] > 0 and 0 < stats["wait_time_max"] < 5
    assert stats["wait_time_total"] >= stats["wait_time_max"]


class Budget(Exception):
    """What a request's time budget raises from its SIGALRM handler."""


def checkout_interrupted_after(pool: Any, seconds: float) -> None:
    """``pool.connection()``, interrupted by a SIGALRM handler's Budget after ``seconds``."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Budget("request budget spent")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        with pytest.raises(Budget):
            pool.connection()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_checkout_interrupted_while_waiting_gives_back_what_it_was_served(
    pg_target: Any, pools: list[Any]
) -> None:
    """A signal handler's exception (a request's time budget) interrupts a waiting checkout.

    Its place in line is given up, and a connection handed to it meanwhile goes
    back to the pool: found by an outside attack, the connection went to the
    interrupted waiter, and a pool of one stalled for good.
    """

    pool = make_pool(pg_target, maxconnections=1, blocking=True, checkout_timeout=3)
    pools.append(pool)
    held = pool.connection()
    giver = threading.Timer(0.4, held.close)
    giver.start()
    try:
        checkout_interrupted_after(pool, 0.1)
    finally:
        giver.join()
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == 1 and stats["waiting"] == 0
    with pool.connection() as db:
        assert execute(pg_target, db, "SELECT 1") == [(1,)]


def test_a_checkout_interrupted_during_its_own_connect_keeps_the_connection(
    pg_target: Any, pools: list[Any]
) -> None:
    """A non-blocking pool's checkout connects itself, on a helper thread it waits for.
    Found by an outside attack: a signal handler's exception during that wait left the
    connection, made after, counted as in use by nobody (a pool of one answered "in use
    1" for good). Now the late connection goes to the idle list, as one that comes
    after the deadline does."""

    pool = make_pool(
        pg_target, maxconnections=1, checkout_timeout=3,
        on_connect=lambda raw: time.sleep(0.3),  # a slow connect, on the connect's thread
    )  # fmt: skip
    pools.append(pool)
    checkout_interrupted_after(pool, 0.1)
    deadline = time.monotonic() + 5
    while pool.stats()["idle"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # the connect finishes on its thread
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == stats["size"] == 1, stats
    with pool.connection() as db:
        assert execute(pg_target, db, "SELECT 1") == [(1,)]


class Interrupt(BaseException):
    """A signal handler's exception, as KeyboardInterrupt: no ``except Exception`` takes it."""


def interrupting_tracer(
    n: int, landed: list[str], armed: threading.Event | None = None
) -> Callable[..., Any]:
    """A ``sys.settrace`` function that raises Interrupt at the n-th call into tether
    (counted once ``armed`` is set), where CPython also checks for signals."""
    calls = [0]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        counted = armed is None or armed.is_set()
        if event == "call" and counted and "tether" in frame.f_code.co_filename:
            calls[0] += 1
            if calls[0] == n:
                landed.append(frame.f_code.co_name)
                raise Interrupt
        return None

    return tracer


@pytest.mark.parametrize("waits", [True, False], ids=["handed-over", "idle"])
def test_a_checkout_interrupted_anywhere_after_it_got_a_connection_gives_it_back(
    pg_target: Any, pools: list[Any], waits: bool
) -> None:
    """The exception of a signal handler can come at any call. Here it is raised at
    every function entry of the checkout, one after the other, from the moment a waiting
    checkout is woken with a connection handed over (or an idle one is taken) until
    ``connection()`` returns. Found by an outside attack: raised just after the
    hand-over, or while the proxy was made, it lost the connection for good (a pool of
    one answered PoolExhausted from then on). Each time the pool must be whole."""

    pool = make_pool(
        pg_target, maxconnections=1, blocking=True, checkout_timeout=3, ping_after=0
    )  # ping_after=0: the connection is pinged too, more calls to interrupt
    pools.append(pool)
    pool.connection().close()  # one idle connection
    landed: list[str] = []

    def attempt(n: int) -> bool:
        """Raise at the n-th call into tether after the checkout got its connection."""
        armed = threading.Event()
        tracer = interrupting_tracer(n, landed, armed)
        giver = None
        if waits:
            held = pool.connection()

            def give_back() -> None:
                time.sleep(0.05)
                armed.set()  # the checkout is blocked in its wait: nothing traced before
                held.close()

            giver = threading.Thread(target=give_back)
            giver.start()
        else:
            armed.set()
        sys.settrace(tracer)
        try:
            db = pool.connection()
        except Interrupt:
            return True
        finally:
            sys.settrace(None)
            if giver is not None:
                giver.join()
        db.close()
        return False

    n = 0
    while True:
        n += 1
        interrupted = attempt(n)
        gc.collect()  # a proxy made before the interrupt gives its connection back
        stats = pool.stats()
        # Whole: nothing held by nobody (a connection interrupted mid-ping is closed).
        assert stats["in_use"] == 0 and stats["idle"] == stats["size"], (n, landed[-1:], stats)
        with pool.connection() as check:
            assert execute(pg_target, check, "SELECT 1") == [(1,)]
        if not interrupted:  # no call left to interrupt: every one was
            break
    assert n > 10 and len(landed) == n - 1, landed  # every call of the checkout, in turn


@pytest.mark.parametrize("start", ["queued", "connect-made-for-it"])
def test_a_checkout_interrupted_anywhere_from_its_start_holds_nothing_afterwards(
    pg_target: Any, pools: list[Any], start: str
) -> None:
    """As above, from the checkout's first call: a checkout that must queue (a pool of
    one, held) and one of an empty blocking pool, for which the pool opens a connection
    on a thread of its own. Found at the end of the outside attacks: interrupted between
    reserving the slot and starting that connect, the slot was lost for good (`opening`
    1, no connection ever again). Each time the pool must settle whole: no waiter left,
    no connect pending, nothing in use."""

    def new_pool() -> Any:
        pool = make_pool(
            pg_target, maxconnections=1, blocking=True, checkout_timeout=3, ping_after=0
        )
        pools.append(pool)
        if start == "queued":
            pool.connection().close()
        return pool

    pool = new_pool()
    landed: list[str] = []
    n = 0
    while True:
        n += 1
        tracer = interrupting_tracer(n, landed)
        giver = None
        if start == "queued":
            giver = threading.Timer(0.05, pool.connection().close)
            giver.start()
        sys.settrace(tracer)
        try:
            db = pool.connection()
        except Interrupt:
            db = None
        finally:
            sys.settrace(None)
            if giver is not None:
                giver.join()
        if db is not None:
            db.close()
        gc.collect()
        deadline = time.monotonic() + 5  # a connect made for it settles on its thread
        while time.monotonic() < deadline:
            s = pool.stats()
            if not (s["opening"] or s["waiting"] or s["in_use"]) and s["idle"] == s["size"]:
                break
            time.sleep(0.02)
        s = pool.stats()
        assert not (s["opening"] or s["waiting"] or s["in_use"]), (n, landed[-1:], s)
        assert s["idle"] == s["size"], (n, landed[-1:], s)
        with pool.connection() as check:
            assert execute(pg_target, check, "SELECT 1") == [(1,)]
        if db is not None:  # no call left to interrupt: every one was
            break
        if start == "connect-made-for-it":
            pool.close()
            pool = new_pool()  # empty again
    assert n > 10 and len(landed) == n - 1, landed


def test_a_pipeline_left_open_in_autocommit_mode_is_discarded_not_committed(
    pg_target: Any, pools: list[Any]
) -> None:
    """A psycopg pipeline entered by hand and still open at checkin, in autocommit mode.

    psycopg's rollback() syncs a pipeline first, and the sync commits what it
    queued: found by an outside attack, the checkin's "rollback" committed the
    statements of a `with` block that raised, and of a plain close(). Unsynced
    they die with the session: the connection is dropped, nothing committed.
    """
    pool = make_pool(pg_target, maxconnections=1, autocommit=True)
    pools.append(pool)
    table = pg_target.unique_table("pipe")
    raw = pg_target.connect()
    execute(pg_target, raw, f"CREATE TABLE {table} (x int)")
    raw.commit()
    with pool.connection() as db:  # the table is there for the pool's sessions
        db.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(ValueError), pool.connection() as db:
        opened = db.pipeline()
        opened.__enter__()
        db.execute(f"INSERT INTO {table} VALUES (10)")
        raise ValueError("the request failed")
    db = pool.connection()
    opened = db.pipeline()
    opened.__enter__()
    db.execute(f"INSERT INTO {table} VALUES (20)")
    db.close()
    assert execute(pg_target, raw, f"SELECT x FROM {table}") == [(1,)]
    with pool.connection() as db:  # the pool goes on, on a new session
        assert execute(pg_target, db, "SELECT 1") == [(1,)]
    raw.close()
