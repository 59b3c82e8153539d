"""Driver adapters against real servers: what every tether layer relies on them to say.

Uses tether.harness's fixtures (``server_target``: psycopg, pgdb, pg,
pymysql; ``driver_target`` adds sqlite3; ``dbapi_target`` leaves out
classic pg). Each test opens raw driver connections with
``target.connect()``, makes something happen to the session (a terminated
backend, a restart, a cancelled query, bad SQL), and checks the adapter's
verdict: a pool reopens a connection only when the adapter says "lost",
retries a statement only when it says "never sent", and rolls back only when
it says a transaction may be open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.simple_pool.drivers import DriverAdapter, adapter_for, refine


def adapter_of(target: Any) -> DriverAdapter:
    adapter = adapter_for(target.creator)
    assert adapter.name == target.name  # chosen from the creator alone
    return adapter


@contextlib.contextmanager
def opened(target: Any, adapter: DriverAdapter | None = None) -> Iterator[Any]:
    """A raw connection of ``target``'s driver, closed afterwards whatever happened to it."""
    adapter = adapter or adapter_of(target)
    conn = adapter.connect(*target.args, **target.kwargs)
    try:
        yield conn
    finally:
        adapter.close(conn)


def failure(target: Any, conn: Any, sql: str = "SELECT 1") -> BaseException:
    """The exception ``sql`` raises on ``conn`` (the test fails if it raises none)."""
    try:
        target.query(conn, sql)
    except Exception as exc:
        return exc
    pytest.fail(f"{sql!r} did not fail on {target!r}")


def sleep_sql(target: Any, seconds: int) -> str:
    if target.kind == "postgresql":
        return f"SELECT pg_sleep({seconds})"
    return f"SELECT SLEEP({seconds})"


def wait_until_running(target: Any, backend_id: int, timeout: float = 10.0) -> None:
    """Wait until the server shows session ``backend_id`` running a sleep."""
    if target.kind == "postgresql":
        sql = (
            "SELECT 1 FROM pg_stat_activity"
            " WHERE pid = %s AND lower(query) LIKE %s AND state = 'active'"
        )
    else:
        sql = (
            "SELECT 1 FROM information_schema.processlist"
            " WHERE id = %s AND lower(info) LIKE %s AND command = 'Query'"
        )
    deadline = time.monotonic() + timeout
    while not target.server.admin_execute(sql, (backend_id, "%sleep(%")):
        if time.monotonic() > deadline:
            pytest.fail(f"session {backend_id} never started its sleep")
        time.sleep(0.01)


def make_table(target: Any, conn: Any) -> str:
    table: str = target.unique_table("drv")
    target.query(conn, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    adapter_of(target).commit(conn)
    return table


# -- lost or not lost ---------------------------------------------------------------------------


def test_terminated_session_is_lost_and_next_use_never_sent(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        backend = server_target.backend_id(conn)
        adapter.commit(conn)  # end the transaction backend_id() opened (no-op where none)
        assert adapter.ping(conn)
        assert not adapter.peer_closed(conn)
        assert not adapter.is_gone(conn)
        assert server_target.kill_backend(backend)
        # The server closed the idle session: seen on the socket, before anything is sent.
        deadline = time.monotonic() + 5
        while not adapter.peer_closed(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert adapter.peer_closed(conn)
        assert adapter.is_gone(conn)
        first = failure(server_target, conn)
        assert adapter.is_connection_lost(conn, first)
        assert adapter.is_closed(conn)
        assert adapter.is_gone(conn)
        assert adapter.in_transaction(conn) is None
        second = failure(server_target, conn)
        assert adapter.is_connection_lost(conn, second)
        assert adapter.never_sent(conn, second)
        assert not adapter.ping(conn)


@pytest.mark.restart
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_is_lost(server_target: Any, mode: str) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        assert adapter.ping(conn)
        server_target.server.restart(mode=mode)
        exc = failure(server_target, conn)
        assert adapter.is_connection_lost(conn, exc), repr(exc)
        assert not adapter.ping(conn)
    with opened(server_target, adapter) as fresh:  # the server is back
        assert adapter.ping(fresh)


@pytest.mark.restart
def test_server_killed_is_lost_and_down_at_connect_is_a_driver_error(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        server_target.server.kill()
        # PostgreSQL backends run in sessions of their own (setsid), so killing the
        # postmaster's process group leaves them to notice its death and exit a moment
        # later; a query sent in between still succeeds. Wait for the socket to close.
        deadline = time.monotonic() + 10
        while not adapter.peer_closed(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        exc = failure(server_target, conn)
        assert adapter.is_connection_lost(conn, exc), repr(exc)
        with pytest.raises(adapter.base_error):  # so pools can catch it as a connect error
            adapter.connect(*server_target.args, **server_target.kwargs)
    server_target.server.start()


def test_syntax_error_is_not_lost(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        exc = failure(server_target, conn, "SELEC 1")
        assert not adapter.is_connection_lost(conn, exc)
        assert not adapter.never_sent(conn, exc)
        assert not adapter.is_closed(conn)
        adapter.rollback(conn)
        assert server_target.query(conn, "SELECT 1") == [(1,)]


def test_constraint_violation_is_not_lost(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        table = make_table(server_target, conn)
        server_target.query(conn, f"INSERT INTO {table} VALUES (1)")
        exc = failure(server_target, conn, f"INSERT INTO {table} VALUES (1)")
        assert not adapter.is_connection_lost(conn, exc)
        assert not adapter.is_closed(conn)
        adapter.rollback(conn)
        assert server_target.query(conn, "SELECT 1") == [(1,)]


def test_cancelled_query_is_not_lost(server_target: Any) -> None:
    """pg_cancel_backend / KILL QUERY end the statement, not the session."""
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        backend = server_target.backend_id(conn)
        adapter.rollback(conn)

        def cancel() -> None:
            wait_until_running(server_target, backend)
            server_target.cancel_backend(backend)

        canceller = threading.Thread(target=cancel)
        canceller.start()
        try:
            exc = failure(server_target, conn, sleep_sql(server_target, 30))
        finally:
            canceller.join()
        assert not adapter.is_connection_lost(conn, exc), repr(exc)
        assert not adapter.is_closed(conn)
        adapter.rollback(conn)
        assert adapter.ping(conn)
        assert server_target.query(conn, "SELECT 1") == [(1,)]


# -- transaction state ----------------------------------------------------------------------


def test_in_transaction_follows_writes_and_commits(driver_target: Any) -> None:
    adapter = adapter_of(driver_target)
    with opened(driver_target, adapter) as conn:
        table = make_table(driver_target, conn)
        assert adapter.in_transaction(conn) is not True
        if not adapter.dbapi2:
            adapter.begin(conn)  # classic pg: autocommit until begin()
            assert not adapter.autocommit(conn)
        driver_target.query(conn, f"INSERT INTO {table} VALUES (1)")
        assert adapter.in_transaction(conn) is True
        adapter.commit(conn)
        if driver_target.name == "pymysql":
            # With autocommit off the server flags no transaction after a commit, but
            # not after a later SELECT either (which holds a snapshot): "maybe".
            assert adapter.in_transaction(conn) is None
        else:
            assert adapter.in_transaction(conn) is False


def test_a_select_outside_autocommit_is_never_reported_idle(dbapi_target: Any) -> None:
    """A plain SELECT opens a transaction (PostgreSQL) or snapshot (InnoDB): not 'idle'."""
    adapter = adapter_of(dbapi_target)
    with opened(dbapi_target, adapter) as conn:
        table = make_table(dbapi_target, conn)
        dbapi_target.query(conn, f"SELECT * FROM {table}")
        state = adapter.in_transaction(conn)
        if dbapi_target.name == "sqlite3":
            assert state is False  # sqlite3 only begins before writes
        else:
            assert state is not False


def test_ping_keeps_the_transaction_state(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        adapter.rollback(conn)
        before = adapter.in_transaction(conn)
        assert adapter.ping(conn)
        assert adapter.in_transaction(conn) is before
        if server_target.kind == "postgresql":
            adapter.begin(conn)
            failure(server_target, conn, "SELEC 1")  # a failed transaction block
            assert adapter.in_transaction(conn) is True
            assert adapter.ping(conn)  # the connection is alive, just in a failed transaction
            assert adapter.in_transaction(conn) is True
            adapter.rollback(conn)
            assert adapter.in_transaction(conn) is False


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
def test_psycopg_ping_leaves_autocommit_switchable(driver_target: Any) -> None:
    """psycopg refuses to switch autocommit inside a transaction: ping must not open one."""
    adapter = adapter_of(driver_target)
    with opened(driver_target, adapter) as conn:
        assert adapter.ping(conn)
        conn.autocommit = True  # would raise had the ping left a transaction open
        assert adapter.autocommit(conn)


# -- session reset --------------------------------------------------------------------------


@pytest.mark.parametrize("server_target", ["psycopg", "pgdb", "pg"], indirect=True)
def test_reset_session_on_postgresql(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        autocommit = adapter.autocommit(conn)
        backend = server_target.backend_id(conn)
        server_target.query(conn, "SET work_mem = '7MB'")
        server_target.query(conn, "CREATE TEMP TABLE scratch (x int)")
        server_target.query(conn, "SELECT pg_advisory_lock(4242)")
        adapter.commit(conn)
        if adapter.dbapi2:
            server_target.query(conn, "SELECT 1")  # leave a transaction open
        adapter.reset_session(conn)
        assert adapter.in_transaction(conn) is False
        assert adapter.autocommit(conn) is autocommit
        assert server_target.query(conn, "SHOW work_mem") != [("7MB",)]
        exc = failure(server_target, conn, "SELECT * FROM scratch")
        assert not adapter.is_connection_lost(conn, exc)
        adapter.rollback(conn)
        locks = server_target.server.admin_execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (backend,)
        )
        assert locks == [(0,)]


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_reset_session_forgets_classic_pg_table_metadata(server_target: Any) -> None:
    """The next user's temp table of the same name must not meet the last one's columns."""
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as db:
        db.query("CREATE TEMP TABLE scratch (a int)")
        db.insert("scratch", a=1)  # pg.DB caches scratch's columns
        adapter.reset_session(db)
        db.query("CREATE TEMP TABLE scratch (b int)")
        assert db.insert("scratch", b=2) == {"b": 2}


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_reset_session_on_mariadb(server_target: Any) -> None:
    adapter = adapter_of(server_target)
    with opened(server_target, adapter) as conn:
        table = make_table(server_target, conn)
        backend = server_target.backend_id(conn)
        session = "SELECT @uv, @@session.sql_mode, @@character_set_client, @@autocommit"
        fresh = server_target.query(conn, session)
        server_target.query(conn, "SET @uv = 42")
        server_target.query(conn, "SET SESSION sql_mode = 'ANSI'")
        server_target.query(conn, "SET NAMES latin1")
        server_target.query(conn, "CREATE TEMPORARY TABLE scratch (x int)")
        server_target.query(conn, f"INSERT INTO {table} VALUES (1)")
        assert adapter.in_transaction(conn) is True
        adapter.reset_session(conn)
        assert server_target.backend_id(conn) == backend  # same session, no reconnect
        assert server_target.query(conn, session) == fresh  # autocommit 0 again, utf8mb4
        assert not adapter.autocommit(conn)
        exc = failure(server_target, conn, "SELECT * FROM scratch")
        assert not adapter.is_connection_lost(conn, exc)
        assert server_target.query(conn, f"SELECT count(*) FROM {table}") == [(0,)]
        assert server_target.query(conn, "SELECT %s", ["\u00e9\u2603"]) == [("\u00e9\u2603",)]


# -- timeouts and creators ------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_set_timeouts_bounds_a_connect_to_a_silent_server(
    server_target: Any, silent_server: int
) -> None:
    adapter = adapter_of(server_target)
    kwargs = dict(server_target.kwargs)
    if server_target.name == "pgdb":
        kwargs["host"] = f"127.0.0.1:{silent_server}"
    else:
        kwargs["host"], kwargs["port"] = "127.0.0.1", silent_server
    started = time.monotonic()
    with pytest.raises(adapter.base_error):
        adapter.connect(*server_target.args, **adapter.set_timeouts(kwargs, 1.0))
    # libpq's minimum is 2 s; PyMySQL honours fractions.
    assert time.monotonic() - started < 4.5


def test_refine_gives_a_user_function_its_driver(driver_target: Any) -> None:
    def my_connect() -> Any:
        return driver_target.connect()

    generic = adapter_for(my_connect)
    assert type(generic) is DriverAdapter
    conn = generic.connect()
    try:
        adapter = refine(generic, conn)
        assert adapter.name == driver_target.name
        assert adapter.creator is my_connect
        assert adapter.ping(conn)
        exc = failure(driver_target, conn, "SELEC 1")
        assert not adapter.is_connection_lost(conn, exc)
    finally:
        generic.close(conn)
