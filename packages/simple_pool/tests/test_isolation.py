"""Borrower isolation (issue 11): each borrower starts clean, and nothing of a borrow outlives it.

Against real servers (tether.harness fixtures). The adapter tests change
every driver-level setting a borrower can change on the connection object,
restore the snapshot and check both what the driver reports and what the
server then does. The pool tests use the public API a borrower has.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tether.simple_pool import (
    ConnectionReturned,
    PoolClosed,
    PooledCursor,
    PoolTimeout,
    SimplePooledDB,
    SimplePooledPg,
)
from tether.simple_pool.drivers import adapter_for


def make_pool(target: Any, maxconnections: int, **extra: Any) -> SimplePooledDB:
    if target.name == "pg":
        return SimplePooledPg(maxconnections, *target.args, **target.kwargs, **extra)
    return SimplePooledDB(target.creator, maxconnections, *target.args, **target.kwargs, **extra)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def change_every_setting(name: str, conn: Any) -> None:
    """What a borrower may do to the connection object (not with SQL), per driver."""
    if name == "psycopg":
        from psycopg import ClientCursor, IsolationLevel, RawServerCursor
        from psycopg.rows import dict_row

        conn.autocommit = True
        conn.read_only = True
        conn.isolation_level = IsolationLevel.SERIALIZABLE
        conn.deferrable = True
        conn.row_factory = dict_row
        conn.cursor_factory = ClientCursor
        conn.server_cursor_factory = RawServerCursor
        conn.prepare_threshold = None
        conn.prepared_max = 7
    elif name == "pgdb":
        conn.autocommit = True
        conn.cursor_type = type("MyCursor", (conn.cursor_type,), {})
    elif name == "pg":
        conn.debug = print
        conn.set_cast_hook(lambda value, oid: value)
        conn.set_notice_receiver(lambda notice: None)
        conn.set_non_blocking(True)
    elif name == "pymysql":
        import pymysql.cursors

        conn.autocommit(True)
        conn.set_character_set("latin1", "latin1_bin")
        conn.cursorclass = pymysql.cursors.DictCursor
        cursor = conn.cursor()
        cursor.execute("CREATE DATABASE IF NOT EXISTS tether_other")
        cursor.close()
        conn.select_db("tether_other")
    else:
        conn.isolation_level = None
        conn.row_factory = sqlite3.Row
        conn.text_factory = bytes
        if hasattr(conn, "autocommit"):  # Python 3.12+
            conn.autocommit = True


def autocommit_on(target: Any, db: Any) -> None:
    """Switch autocommit on the way a borrower of this driver would."""
    if target.name == "pymysql":
        db.autocommit(True)
    elif target.name == "sqlite3":
        db.isolation_level = None  # sqlite3's "never BEGIN implicitly"
    else:
        db.autocommit = True


# -- A. the adapters: settings() and restore_settings() ------------------------------------------


def test_restore_settings_puts_back_every_setting_a_borrower_changed(
    driver_target: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = adapter_for(driver_target.creator)
    conn = adapter.connect(*driver_target.args, **driver_target.kwargs)
    try:
        table = driver_target.unique_table("restore")
        driver_target.query(conn, f"CREATE TABLE {table} (x INTEGER)")
        adapter.commit(conn)
        saved = adapter.settings(conn)
        assert saved, "the adapter knows no setting of its driver"

        change_every_setting(driver_target.name, conn)
        changed = adapter.settings(conn)
        assert [k for k in saved if changed[k] == saved[k]] == []  # each one really changed

        assert adapter.restore_settings(conn, saved) is True
        assert adapter.settings(conn) == saved  # the driver reports the saved values
        assert adapter.restore_settings(conn, saved) is False  # nothing left to change

        # ... and the server behaves accordingly.
        if driver_target.name == "pg":  # no autocommit switch; the hooks are gone
            assert conn.query("SELECT 1").getresult() == [(1,)]
            assert not conn.is_non_blocking()
            assert "SELECT 1" not in capsys.readouterr().out  # debug=print is off again
            return
        if driver_target.name == "psycopg":
            assert driver_target.query(conn, "SHOW transaction_read_only") == [("off",)]
            assert driver_target.query(conn, "SHOW transaction_isolation") == [("read committed",)]
            conn.rollback()
        if driver_target.name == "pymysql":
            assert driver_target.query(conn, "SELECT @@autocommit, @@character_set_client") == [
                (0, "utf8mb4")
            ]
        cursor = conn.cursor()
        cursor.execute(f"INSERT INTO {table} VALUES (1)")
        cursor.close()
        conn.rollback()  # undoes the INSERT: autocommit is off again
        assert driver_target.query(conn, f"SELECT COUNT(*) FROM {table}") == [(0,)]
        adapter.rollback(conn)
    finally:
        adapter.close(conn)


def test_restore_settings_sends_nothing_when_nothing_changed(server_target: Any) -> None:
    adapter = adapter_for(server_target.creator)
    conn = adapter.connect(*server_target.args, **server_target.kwargs)
    try:
        backend = server_target.backend_id(conn)
        adapter.rollback(conn)
        saved = adapter.settings(conn)
        assert server_target.kill_backend(backend)
        # A round trip would now fail: the session is gone.
        assert adapter.restore_settings(conn, saved) is False
    finally:
        adapter.close(conn)


# -- B1. every borrower starts clean -------------------------------------------------------------


def test_the_next_borrower_does_not_inherit_autocommit(dbapi_target: Any) -> None:
    table = dbapi_target.unique_table("inherit")
    pool = make_pool(dbapi_target, 1)
    try:
        with pool.connection() as db:
            dbapi_target.query(db, f"CREATE TABLE {table} (x INTEGER)")
            db.commit()
            autocommit_on(dbapi_target, db)  # borrower A, and it forgets to switch back
        with pool.connection() as db:  # borrower B gets the same connection
            cursor = db.cursor()
            cursor.execute(f"INSERT INTO {table} VALUES (1)")
            cursor.close()
            db.rollback()
            assert dbapi_target.query(db, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    finally:
        pool.close()


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_the_next_pg_borrower_does_not_get_the_notices_of_the_last(server_target: Any) -> None:
    pool = make_pool(server_target, 1)
    seen: list[Any] = []
    try:
        with pool.connection() as db:
            db.set_notice_receiver(seen.append)  # borrower A's hook
        with pool.connection() as db:
            db.query("DO $$BEGIN RAISE NOTICE 'for B only'; END$$")
        assert seen == []
    finally:
        pool.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pymysql", "sqlite3"], indirect=True)
def test_the_next_borrower_does_not_get_the_configuration_of_the_last(dbapi_target: Any) -> None:
    """Found by an outside attack on the pools above: configuration kept on the driver
    connection (psycopg's adapters and notice handlers, PyMySQL's encoders, sqlite3's
    trace callback) reached the next borrower, rewriting what it stored or watching it."""
    target = dbapi_target
    pool = make_pool(target, 1)
    seen: list[Any] = []
    try:
        with pool.connection() as db:  # borrower A
            if target.name == "psycopg":
                import psycopg.adapt

                class Tampered(psycopg.adapt.Dumper):
                    oid = 25  # text

                    def dump(self, obj: Any) -> bytes:
                        return b"tampered"

                db.adapters.register_dumper(str, Tampered)
                db.add_notice_handler(lambda diag: seen.append(diag.message_primary))
            elif target.name == "pymysql":
                db.encoders[int] = lambda value, mapping=None: "'tampered'"  # (str: escaped)
            else:
                db.set_trace_callback(seen.append)
        with pool.connection() as db:  # borrower B gets the same connection (or a new one)
            value: Any = 42 if target.name == "pymysql" else "mine"
            mark = "?" if target.name == "sqlite3" else "%s"
            assert target.query(db, f"SELECT {mark}", (value,)) == [(value,)]
            if target.name == "psycopg":
                db.execute("DO $$BEGIN RAISE NOTICE 'for B only'; END$$")
            db.rollback()
        assert seen == []
    finally:
        pool.close()


def test_adapters_put_back_only_what_changed(server_target: Any) -> None:
    """configuration() and restore_configuration(): nothing changed, nothing done."""
    adapter = adapter_for(server_target.creator)
    conn = server_target.connect()
    try:
        saved = adapter.configuration(conn)
        assert adapter.restore_configuration(conn, saved) is False if saved is not None else True
    finally:
        conn.close()


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_a_connection_whose_settings_cannot_be_restored_is_replaced(server_target: Any) -> None:
    pool = make_pool(server_target, 1)
    try:
        db = pool.connection()
        db.autocommit(True)
        first = server_target.backend_id(db)
        assert server_target.kill_backend(first)
        db.close()  # nothing to roll back; SET AUTOCOMMIT = 0 fails: the connection goes
        with pool.connection() as db:
            assert server_target.query(db, "SELECT @@autocommit") == [(0,)]
            assert server_target.backend_id(db) != first
    finally:
        pool.close()


# -- B2. nothing of a borrow outlives it ----------------------------------------------------------


def test_a_kept_cursor_or_method_cannot_run_on_the_next_borrowers_session(
    dbapi_target: Any,
) -> None:
    pool = make_pool(dbapi_target, 1)
    try:
        db = pool.connection()
        cur = db.cursor()
        commit, cursor_factory = db.commit, db.cursor
        kept = [cur.fetchone, commit, cursor_factory, lambda: list(cur)]
        if dbapi_target.name in ("psycopg", "sqlite3"):
            kept.append(db.execute)
        db.close()
        other = pool.connection()
        sql = dbapi_target.backend_id_sql or "SELECT 1"
        with pytest.raises(ConnectionReturned, match="returned to its pool"):
            cur.execute(sql)
        for handle in kept:
            with pytest.raises(ConnectionReturned):
                handle()
        assert isinstance(ConnectionReturned("x"), PoolClosed)
        cur.close()  # closing a kept cursor is harmless and touches nothing
        # Nothing ran on the other borrower's session: no transaction was opened there.
        assert pool.adapter.in_transaction(other._raw) is not True
        assert dbapi_target.query(other, "SELECT 1") == [(1,)]
        other.close()
    finally:
        pool.close()


def test_cursor_idioms_keep_working(dbapi_target: Any) -> None:
    pool = make_pool(dbapi_target, 1)
    try:
        with pool.connection() as db:
            cur = db.cursor()
            assert isinstance(cur, PooledCursor)
            cur.execute("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3")
            assert [tuple(row) for row in cur] == [(1,), (2,), (3,)]
            cur.execute("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3")
            assert tuple(cur.fetchone()) == (1,)
            assert [tuple(r) for r in cur.fetchmany(1)] == [(2,)]
            assert [tuple(r) for r in cur.fetchall()] == [(3,)]
            assert cur.description is not None and cur.rowcount in (-1, 3)
            cur.arraysize = 7
            assert cur.arraysize == 7
            cur.close()
            if dbapi_target.name != "sqlite3":  # sqlite3's cursors are no context managers
                with db.cursor() as cur:
                    cur.execute("SELECT 5")
                    assert tuple(cur.fetchone()) == (5,)
    finally:
        pool.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
def test_psycopg_chains_return_the_proxy(dbapi_target: Any) -> None:
    pool = make_pool(dbapi_target, 1)
    try:
        with pool.connection() as db:
            assert db.cursor().execute("SELECT 1").fetchone() == (1,)
            result = db.execute("SELECT 2")
            assert isinstance(result, PooledCursor) and result.fetchone() == (2,)
            with db.cursor() as cur:
                assert cur.connection is db
                assert [row for row in cur.execute("SELECT generate_series(1, 3)")] == [
                    (1,),
                    (2,),
                    (3,),
                ]
        with pytest.raises(ConnectionReturned):
            result.execute("SELECT 3")
    finally:
        pool.close()


def _kept_handle(db: Any, table: str, kind: str) -> Callable[[], Any]:
    """A driver object taken during a borrow, and how to use it later."""
    if kind == "transaction":
        tx = db.transaction()
        return lambda: tx.__enter__()
    if kind == "pipeline":
        pipeline = db.pipeline()
        return lambda: pipeline.__enter__()
    cur = db.cursor()
    if kind == "copy":
        copy = cur.copy(f"COPY {table} (x) FROM STDIN")
        return lambda: copy.__enter__()
    rows = cur.stream(f"INSERT INTO {table} VALUES (7) RETURNING x")
    return lambda: next(rows)


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
@pytest.mark.parametrize("kind", ["transaction", "pipeline", "copy", "stream"])
def test_a_kept_psycopg_object_never_runs_on_the_next_borrowers_session(
    dbapi_target: Any, kind: str
) -> None:
    """``db.transaction()``, ``db.pipeline()``, ``cur.copy()`` and ``cur.stream()`` hold the
    session: kept past close(), each ran on the next borrower's (fifth outside attack; the
    pooled layers refused them already). During the borrow they work as the driver's."""
    table = dbapi_target.unique_table("kept")
    pool = make_pool(dbapi_target, 1)
    try:
        with pool.connection() as db:
            db.execute(f"CREATE TABLE {table} (x int)")
            with db.transaction() as tx:
                db.execute(f"INSERT INTO {table} VALUES (1)")
                assert tx.connection is db
            with db.cursor().copy(f"COPY {table} (x) FROM STDIN") as copy:
                copy.write_row((2,))
            assert [r for (r,) in db.cursor().stream(f"SELECT x FROM {table} ORDER BY x")] == [1, 2]
        db = pool.connection()
        use = _kept_handle(db, table, kind)
        db.close()
        with pool.connection() as other:
            with pytest.raises(ConnectionReturned):
                use()
            assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
    finally:
        pool.close()


def test_a_kept_sqlite3_blob_never_writes_after_its_borrow(tmp_path: Any) -> None:
    """sqlite3's ``blobopen()`` kept past close() wrote into the file (fifth outside attack).
    Before Python 3.11 sqlite3 has no ``blobopen()``: the driver's AttributeError passes."""
    path = tmp_path / "blob.sqlite3"
    pool = SimplePooledDB(sqlite3, 1, str(path))
    try:
        if sys.version_info < (3, 11):
            with pool.connection() as db, pytest.raises(AttributeError):
                db.blobopen  # noqa: B018
            return
        with pool.connection() as db:
            db.execute("CREATE TABLE b (data BLOB)")
            db.execute("INSERT INTO b VALUES (zeroblob(4))")
            db.commit()
            with db.blobopen("b", "data", 1) as blob:
                assert len(blob) == 4
        db = pool.connection()
        blob = db.blobopen("b", "data", 1)
        db.close()
        with pytest.raises(ConnectionReturned):
            blob.write(b"evil")
        with pool.connection() as db:
            assert db.execute("SELECT data FROM b").fetchone() == (b"\x00" * 4,)
    finally:
        pool.close()


# -- B3. a constructor that fails half-way --------------------------------------------------------


@pytest.mark.parametrize("server_target", ["psycopg", "pgdb", "pg"], indirect=True)
def test_a_constructor_that_fails_half_way_closes_what_it_opened(server_target: Any) -> None:
    server = server_target.server
    role = f"limited_{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    server.admin_execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' CONNECTION LIMIT 3")
    try:
        kwargs = dict(server_target.kwargs, user=role)
        kwargs["passwd" if server_target.name == "pg" else "password"] = password
        error = adapter_for(server_target.creator).base_error
        with pytest.raises(error, match="too many connections") as failed:
            if server_target.name == "pg":
                SimplePooledPg(6, **kwargs)
            else:
                SimplePooledDB(server_target.creator, 6, **kwargs)
        assert password not in str(failed.value)
        # Checked while the traceback (and any half-made pool in it) is still alive.
        assert eventually(lambda: server_target.session_count(user=role) == 0), (
            f"{server_target.session_count(user=role)} sessions left open"
        )
    finally:
        server.admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        eventually(lambda: server_target.session_count(user=role) == 0)
        server.admin_execute(f"DROP ROLE {role}")


# -- B4. the pool never shrinks --------------------------------------------------------------------


def open_transaction(target: Any, db: Any) -> None:
    if target.name == "pg":
        db.query("BEGIN")
    elif target.name == "pymysql":
        db.begin()
    else:  # psycopg, pgdb: the first statement opens a transaction
        target.query(db, "SELECT 1")


@pytest.mark.restart
def test_a_connection_lost_with_the_server_keeps_its_slot_and_wakes_a_waiter(
    server_target: Any,
) -> None:
    pool = make_pool(server_target, 1, timeout=10)
    outcome: list[tuple[BaseException, float]] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            pool.connection(timeout=8).close()
        except BaseException as exc:
            outcome.append((exc, time.monotonic() - started))

    try:
        db = pool.connection()
        open_transaction(server_target, db)
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.1)
        server_target.server.stop("fast")
        db.close()  # rollback fails, and no new connection is possible: close() still works
        waiter.join(10)
        # The waiter was woken and tried the free slot: the driver's connect error, at once.
        assert outcome, "the waiter was not woken"
        exc, waited = outcome[0]
        assert not isinstance(exc, (PoolTimeout, PoolClosed)), repr(exc)
        assert waited < 4
        server_target.server.start()
        with pool.connection(timeout=10) as db:  # the slot is still there
            assert server_target.query(db, "SELECT 1") == [(1,)]
        assert "1/1 idle" in repr(pool)
    finally:
        pool.close()


# -- B5. a proxy collected while the pool's lock is held -------------------------------------------


def test_a_proxy_collected_while_the_pool_lock_is_held_does_not_deadlock(tmp_path: Any) -> None:
    pool = SimplePooledDB(sqlite3, 1, str(tmp_path / "gc.sqlite3"), timeout=5)
    finished = threading.Event()

    def collect_under_the_lock() -> None:
        db = pool.connection()
        db.execute("SELECT 1")
        # As if the garbage collector ran inside a pool operation of this thread:
        # the last reference goes while the thread holds the pool's lock.
        with pool._cond:
            del db
        finished.set()

    thread = threading.Thread(target=collect_under_the_lock, daemon=True)
    thread.start()
    thread.join(5)
    assert finished.is_set(), "the finalizer blocked on the pool's lock: deadlock"
    with pool.connection(timeout=5) as db:  # and the connection came back
        assert db.execute("SELECT 1").fetchone() == (1,)
    pool.close()


def test_the_proxies_pass_the_drivers_type_checks(pg_server: Any) -> None:
    """As the other layers: ``isinstance(db, psycopg.Connection)`` and TypeInfo.fetch work."""
    import psycopg
    from psycopg.types import TypeInfo

    from tether.harness import DriverTarget
    from tether.simple_pool import SimplePooledDB

    target = DriverTarget.build("psycopg", pg_server)
    pool = SimplePooledDB(psycopg, 1, *target.args, **target.kwargs)
    try:
        with pool.connection() as db:
            assert isinstance(db, psycopg.Connection)
            assert TypeInfo.fetch(db, "int4").oid == 23
            assert isinstance(db.cursor(), psycopg.Cursor)
    finally:
        pool.close()
