"""Driver adapters, pure logic: choosing adapters, classifying errors, translating timeouts.

No database server is needed: the drivers' behaviour measured against real
servers (see test_drivers_real.py and the adapter module docstrings) is
replayed here with small fakes, so every rule the pools rely on is pinned
down even where a real server cannot easily produce the case (an old MySQL
without COM_RESET_CONNECTION, a PyMySQL without the expected attributes).
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tether.simple_pool.drivers import (
    DriverAdapter,
    PgClassicAdapter,
    PgdbAdapter,
    PsycopgAdapter,
    PyMySQLAdapter,
    Sqlite3Adapter,
    _postgres,
    _socket,
    adapter_for,
    refine,
)

# -- helpers -------------------------------------------------------------------------------


def fake_module(name: str, **attrs: Any) -> types.ModuleType:
    """A stand-in driver module called ``name`` (nothing is imported)."""
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    if not hasattr(module, "connect"):
        module.connect = lambda *a, **k: None  # type: ignore[attr-defined]
    return module


def driver_function(module_name: str, result: Any = None) -> Any:
    """A connect function that looks as if defined in ``module_name``; records its kwargs."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def connect(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return result(kwargs) if callable(result) else result

    connect.__module__ = module_name
    connect.calls = calls  # type: ignore[attr-defined]
    return connect


def pq_message(kind: bytes, body: bytes) -> bytes:
    """One PostgreSQL backend message: type byte, int32 length (itself included), body."""
    return kind + struct.pack("!i", len(body) + 4) + body


def pq_notice(kind: bytes, severity: str, sqlstate: str, text: str) -> bytes:
    fields = [f"S{severity}", f"V{severity}", f"C{sqlstate}", f"M{text}"]
    body = b"".join(field.encode() + b"\0" for field in fields) + b"\0"
    return pq_message(kind, body)


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the first end plays the driver's socket, the second the server."""
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


# -- choosing the adapter -------------------------------------------------------------------


def test_package_imports_without_any_driver_installed() -> None:
    """The adapter modules import their drivers lazily: tether works with only sqlite3."""
    code = textwrap.dedent(
        """
        import sys
        for name in ("psycopg", "pg", "pgdb", "pymysql"):
            sys.modules[name] = None  # makes "import name" raise ImportError
        from tether.simple_pool import drivers
        names = sorted({cls.name for cls in drivers._REGISTRY.values()})
        assert names == ["pg", "pgdb", "psycopg", "pymysql", "sqlite3"], names
        fake = type(sys)("psycopg")
        fake.connect = lambda: None
        assert type(drivers.adapter_for(fake)).__name__ == "PsycopgAdapter"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("module_name", "adapter_class"),
    [
        ("psycopg", PsycopgAdapter),
        ("pgdb", PgdbAdapter),
        ("pymysql", PyMySQLAdapter),
        ("sqlite3", Sqlite3Adapter),
    ],
)
def test_adapter_for_a_driver_module(module_name: str, adapter_class: type[DriverAdapter]) -> None:
    adapter = adapter_for(fake_module(module_name))
    assert type(adapter) is adapter_class
    assert adapter.creator_is_driver
    assert not adapter.refinable


def test_adapter_for_driver_functions_partials_and_classes() -> None:
    assert type(adapter_for(sqlite3.connect)) is Sqlite3Adapter  # defined in _sqlite3
    connect = driver_function("psycopg.connection")
    partial = functools.partial(connect, "dbname=x")
    adapter = adapter_for(partial)
    assert type(adapter) is PsycopgAdapter
    assert adapter.creator_is_driver


def test_pg_module_creator_means_pg_DB() -> None:
    """For the pg module, connecting means pg.DB(...), not pg.connect (a raw connection)."""
    made: list[Any] = []

    class DB:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append((args, kwargs))

    DB.__module__ = "pg.db"
    module = fake_module("pg", DB=DB)
    adapter = adapter_for(module)
    assert type(adapter) is PgClassicAdapter
    assert adapter.creator is module
    assert not adapter.dbapi2
    assert adapter.threadsafety == 1
    adapter.connect("db", "host")
    assert made == [(("db", "host"), {})]


def test_unknown_creator_gets_the_generic_refinable_adapter() -> None:
    adapter = adapter_for(lambda: None)
    assert type(adapter) is DriverAdapter
    assert adapter.refinable
    assert not adapter.creator_is_driver
    assert adapter.set_timeouts({"a": 1}, 5) == {"a": 1}


def test_refine_swaps_in_the_driver_of_the_first_connection() -> None:
    class Connection:  # looks like psycopg's
        pass

    Connection.__module__ = "psycopg.connection"

    def creator() -> Any:
        return Connection()

    generic = adapter_for(creator)
    refined = refine(generic, creator())
    assert type(refined) is PsycopgAdapter
    assert refined.creator is creator
    assert not refined.refinable
    # The user's function accepts no driver keywords: none are added.
    assert not refined.creator_is_driver
    assert refined.set_timeouts({}, 3) == {}
    assert refine(refined, creator()) is refined


def test_refine_looks_through_subclasses_defined_elsewhere() -> None:
    class MyConnection(sqlite3.Connection):
        pass

    def creator() -> Any:
        return sqlite3.connect(":memory:", factory=MyConnection)

    conn = creator()
    try:
        refined = refine(adapter_for(creator), conn)
        assert type(refined) is Sqlite3Adapter
        assert refined.module is sqlite3
    finally:
        conn.close()


def test_refine_keeps_chosen_adapters_and_unknown_drivers() -> None:
    chosen = adapter_for(lambda: None, driver=DriverAdapter)
    assert refine(chosen, sqlite3.connect(":memory:")) is chosen
    named = adapter_for(lambda: None, driver="psycopg")
    assert refine(named, sqlite3.connect(":memory:")) is named
    generic = adapter_for(lambda: None)
    assert refine(generic, object()) is generic


# -- PostgreSQL rules shared by psycopg, pgdb and pg ----------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(0, False), (1, True), (2, True), (3, True), (4, None), ("bad", None), (None, None)],
)
def test_libpq_transaction_states(status: Any, expected: bool | None) -> None:
    assert _postgres.transaction_state(status) is expected


@pytest.mark.parametrize(
    ("sqlstate", "lost"),
    [
        ("08006", True),  # connection_failure
        ("08P01", True),  # protocol_violation
        ("57P01", True),  # admin_shutdown: pg_terminate_backend, -m fast
        ("57P02", True),
        ("57P03", True),
        ("25P03", True),  # idle_in_transaction_session_timeout
        ("57014", False),  # query_canceled: the session survives
        ("42601", False),  # syntax_error
        ("23505", False),  # unique_violation
        ("25P02", False),  # in_failed_sql_transaction
        (None, False),
    ],
)
def test_sqlstates_that_mean_lost(sqlstate: str | None, lost: bool) -> None:
    assert _postgres.sqlstate_means_lost(sqlstate) is lost


@pytest.mark.parametrize(
    ("seconds", "current", "expected"),
    [
        (0.3, None, 2),  # libpq's minimum
        (-1, None, 2),  # deadline passed: still a finite timeout
        (2.2, None, 3),  # whole seconds, rounded up
        (30, 5, 5),  # the user's smaller value stays
        (30, "5", 5),
        (3, 10, 3),
        (30, 0, 30),  # 0 means "forever" to libpq: replaced
        (30, "junk", 30),
    ],
)
def test_libpq_connect_timeout(seconds: float, current: Any, expected: int) -> None:
    assert _postgres.connect_timeout(seconds, current) == expected


@pytest.mark.parametrize(
    ("dbname", "expected"),
    [
        (None, "connect_timeout=4"),
        ("", "connect_timeout=4"),
        ("app", "dbname='app' connect_timeout=4"),
        ("it's", "dbname='it\\'s' connect_timeout=4"),
        ("dbname=app user=u", "dbname=app user=u connect_timeout=4"),
        ("dbname=app connect_timeout=2", "dbname=app connect_timeout=2"),
        ("dbname=app connect_timeout=9", "dbname=app connect_timeout=9 connect_timeout=4"),
        ("postgresql://h/app", "postgresql://h/app?connect_timeout=4"),
        ("postgresql://h/app?sslmode=off", "postgresql://h/app?sslmode=off&connect_timeout=4"),
        ("postgresql://h/app?", "postgresql://h/app?connect_timeout=4"),
        ("postgresql://h/app?sslmode=off&", "postgresql://h/app?sslmode=off&connect_timeout=4"),
    ],
)
def test_conninfo_timeout_for_classic_pg(dbname: str | None, expected: str) -> None:
    assert _postgres.with_conninfo_timeout(dbname, 4) == expected


def test_pygresql_presend_errors() -> None:
    lookup = LookupError("unknown encoding: ")
    assert _postgres.pygresql_presend_error(lookup)
    wrapped = RuntimeError("Internal error in 'select 1': unknown encoding: ")
    wrapped.__cause__ = lookup
    assert _postgres.pygresql_presend_error(wrapped)
    assert _postgres.pygresql_presend_error(RuntimeError("Connection has been closed"))
    assert _postgres.pygresql_presend_error(RuntimeError("Connection already closed"))
    assert _postgres.pygresql_presend_error(TypeError("Connection is not valid"))
    assert not _postgres.pygresql_presend_error(
        RuntimeError("server closed the connection unexpectedly")
    )
    assert not _postgres.pygresql_presend_error(LookupError("no such key"))


@pytest.mark.parametrize(
    ("data", "closed"),
    [
        (pq_notice(b"E", "FATAL", "57P01", "terminating connection"), True),
        # -m immediate: a WARNING notice with 57P01, then EOF
        (pq_notice(b"N", "WARNING", "57P01", "immediate shutdown"), True),
        (pq_notice(b"N", "NOTICE", "00000", "just saying"), False),
        (pq_message(b"A", struct.pack("!i", 42) + b"chan\0hello\0"), False),  # NOTIFY
        (pq_message(b"S", b"TimeZone\0UTC\0"), False),  # ParameterStatus
        (b"E\x00", True),  # an error's first bytes are enough
        (pq_notice(b"N", "WARNING", "57P01", "x")[:9], False),  # incomplete: wait for more
        (
            pq_message(b"S", b"a\0b\0") + pq_notice(b"E", "FATAL", "57P05", "idle timeout"),
            True,
        ),
    ],
)
def test_postgres_farewell_messages(
    socket_pair: tuple[socket.socket, socket.socket], data: bytes, closed: bool
) -> None:
    ours, theirs = socket_pair
    assert not _postgres.peer_closed(ours.fileno(), ssl=False)
    theirs.sendall(data)
    assert _postgres.peer_closed(ours.fileno(), ssl=False) is closed
    # Peeking consumed nothing: the driver still reads every byte.
    ours.settimeout(1)
    assert ours.recv(len(data) + 10) == data


def test_postgres_eof_is_closed_even_over_tls(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = socket_pair
    theirs.sendall(b"\x17\x03\x03encrypted")
    assert not _postgres.peer_closed(ours.fileno(), ssl=True)  # cannot parse TLS records
    ours.recv(100)
    theirs.close()
    assert _postgres.peer_closed(ours.fileno(), ssl=True)


def test_peek_never_consumes_or_closes(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = socket_pair
    assert _socket.peek(ours.fileno()) is None
    theirs.sendall(b"abc")
    assert _socket.peek(ours.fileno()) == b"abc"
    assert _socket.peek(ours.fileno()) == b"abc"
    assert ours.recv(10) == b"abc"
    theirs.close()
    assert _socket.peek(ours.fileno()) == b""
    ours.fileno()  # still open: the fd was only borrowed
    assert ours.fileno() >= 0


# -- psycopg --------------------------------------------------------------------------------


class FakePsycopgConn:
    """psycopg's connection as the adapter reads it: libpq's state lives on ``pgconn``."""

    def __init__(self, status: int = 0, autocommit: bool = False, fd: int = -1) -> None:
        self._broken = False
        self.autocommit = autocommit
        self.info = types.SimpleNamespace(transaction_status=status)
        self.pgconn = types.SimpleNamespace(
            socket=fd, ssl_in_use=False, status=0, transaction_status=status
        )

    @property
    def broken(self) -> bool:  # as psycopg 3.3: closed, and not by close()
        return self._broken

    @broken.setter
    def broken(self, value: bool) -> None:
        self._broken = value
        if value:
            self.closed = True  # a broken connection is always closed (libpq: BAD)

    @property
    def closed(self) -> bool:  # as psycopg: libpq's status is CONNECTION_BAD
        return bool(self.pgconn.status)

    @closed.setter
    def closed(self, value: bool) -> None:
        self.pgconn.status = 1 if value else 0
        if value:
            self.pgconn.transaction_status = 4  # PQTRANS_UNKNOWN


class FakeSqlstateError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.fixture
def psycopg_adapter() -> PsycopgAdapter:
    adapter = adapter_for(importlib.import_module("psycopg"))
    assert isinstance(adapter, PsycopgAdapter)
    return adapter


@pytest.mark.parametrize(("status", "expected"), [(0, False), (1, True), (2, True), (3, True)])
def test_psycopg_in_transaction(
    psycopg_adapter: PsycopgAdapter, status: int, expected: bool
) -> None:
    assert psycopg_adapter.in_transaction(FakePsycopgConn(status)) is expected


def test_psycopg_closed_or_broken(psycopg_adapter: PsycopgAdapter) -> None:
    conn = FakePsycopgConn()
    assert not psycopg_adapter.is_closed(conn)
    conn.broken = True
    assert psycopg_adapter.is_closed(conn)
    assert psycopg_adapter.in_transaction(conn) is None
    assert not psycopg_adapter.ping(conn)


def test_psycopg_error_classification(psycopg_adapter: PsycopgAdapter) -> None:
    psycopg = importlib.import_module("psycopg")
    conn = FakePsycopgConn(status=3)
    cancel = psycopg.errors.QueryCanceled("canceling statement due to user request")
    assert not psycopg_adapter.is_connection_lost(conn, cancel)
    assert psycopg_adapter.is_connection_lost(conn, FakeSqlstateError("bye", "57P01"))
    assert not psycopg_adapter.is_connection_lost(conn, FakeSqlstateError("syntax", "42601"))
    # An OperationalError with no SQLSTATE is lost only when psycopg marked the connection.
    failure = psycopg.OperationalError("consuming input failed: server closed the connection")
    assert not psycopg_adapter.is_connection_lost(conn, failure)
    conn.broken = conn.closed = True
    assert psycopg_adapter.is_connection_lost(conn, failure)
    assert not psycopg_adapter.never_sent(conn, failure)
    assert psycopg_adapter.never_sent(conn, psycopg.OperationalError("the connection is closed"))
    assert psycopg_adapter.never_sent(conn, psycopg.OperationalError("the connection is lost"))
    assert not psycopg_adapter.never_sent(conn, FakeSqlstateError("the connection is closed", "x"))


def test_psycopg_timeouts(psycopg_adapter: PsycopgAdapter) -> None:
    assert psycopg_adapter.set_timeouts({}, 0.5) == {"connect_timeout": 2}
    assert psycopg_adapter.set_timeouts({"connect_timeout": 3}, 20) == {"connect_timeout": 3}
    assert psycopg_adapter.set_timeouts({"connect_timeout": 30}, 7.5) == {"connect_timeout": 8}


def test_psycopg_dsn_timeout_wins_when_smaller() -> None:
    importlib.import_module("psycopg")
    connect = driver_function("psycopg.connection")
    adapter = adapter_for(connect)
    adapter.connect("host=h connect_timeout=3", connect_timeout=10)
    adapter.connect("host=h connect_timeout=30", connect_timeout=10)
    adapter.connect("host=h", connect_timeout=10)
    timeouts = [kwargs["connect_timeout"] for _, kwargs in connect.calls]
    assert timeouts == [3, 10, 10]


def test_psycopg_peer_closed_reads_the_socket(
    psycopg_adapter: PsycopgAdapter, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, theirs = socket_pair
    conn = FakePsycopgConn(fd=ours.fileno())
    assert not psycopg_adapter.peer_closed(conn)
    theirs.sendall(pq_message(b"A", struct.pack("!i", 1) + b"c\0p\0"))
    assert not psycopg_adapter.peer_closed(conn)  # a NOTIFY is no farewell
    theirs.sendall(pq_notice(b"E", "FATAL", "57P01", "terminating connection"))
    assert psycopg_adapter.peer_closed(conn)


# -- PyMySQL --------------------------------------------------------------------------------


class FakeMySQLConn:
    """Records what an adapter sends; answers like PyMySQL would."""

    def __init__(self, server_status: int = 0, open: bool = True) -> None:
        self.server_status = server_status
        self.open = open
        self.sent: list[Any] = []
        self.reset_error: BaseException | None = None
        self.charset = "utf8mb4"
        self.collation = None
        self.sql_mode: str | None = None
        self.init_command: str | None = None
        self._result = None

    def get_autocommit(self) -> bool:
        return bool(self.server_status & 2)

    def _execute_command(self, command: int, sql: bytes) -> None:
        self.sent.append(("command", command, sql))

    def _read_ok_packet(self) -> None:
        if self.reset_error is not None:
            raise self.reset_error
        self.server_status = 2  # the server's default after a reset: autocommit on

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        self.sent.append(("charset", charset, collation))

    def autocommit(self, value: bool) -> None:
        self.sent.append(("autocommit", value))

    def rollback(self) -> None:
        self.sent.append(("rollback",))

    def cursor(self) -> Any:
        conn = self

        class Cursor:
            def execute(self, sql: str, args: Any = None) -> None:
                conn.sent.append(("sql", sql, args))

            def close(self) -> None:
                pass

        return Cursor()


@pytest.fixture
def pymysql_adapter() -> PyMySQLAdapter:
    adapter = adapter_for(importlib.import_module("pymysql"))
    assert isinstance(adapter, PyMySQLAdapter)
    return adapter


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x0001, True),  # IN_TRANS
        (0x0003, True),  # IN_TRANS in autocommit mode (BEGIN)
        (0x0002, False),  # autocommit, no transaction
        # autocommit off, flag unset: a SELECT may hold a snapshot the flag does not show
        (0x0000, None),
    ],
)
def test_pymysql_in_transaction(
    pymysql_adapter: PyMySQLAdapter, status: int, expected: bool | None
) -> None:
    assert pymysql_adapter.in_transaction(FakeMySQLConn(status)) is expected


def test_pymysql_closed_connection_has_no_transaction_state(
    pymysql_adapter: PyMySQLAdapter,
) -> None:
    conn = FakeMySQLConn(0x0001, open=False)  # the last status before the loss is stale
    assert pymysql_adapter.is_closed(conn)
    assert pymysql_adapter.in_transaction(conn) is None


@pytest.mark.parametrize(
    ("errno", "lost"),
    [
        (2013, True),  # lost during query: restart, KILL, SIGKILL
        (2006, True),  # gone away
        (2003, True),  # cannot connect
        (2055, True),
        (1927, True),  # MariaDB ER_CONNECTION_KILLED
        (4031, True),  # MySQL 8 ER_CLIENT_INTERACTION_TIMEOUT
        (1053, True),  # ER_SERVER_SHUTDOWN
        (1317, False),  # KILL QUERY: interrupted, connection usable
        (1969, False),  # MariaDB max_statement_time
        (3024, False),  # MySQL max_execution_time
        (1064, False),  # syntax error
        (1062, False),  # duplicate key
        (1047, False),  # unknown command (SQLSTATE 08S01 notwithstanding)
    ],
)
def test_pymysql_error_numbers(pymysql_adapter: PyMySQLAdapter, errno: int, lost: bool) -> None:
    pymysql = importlib.import_module("pymysql")
    exc = pymysql.err.OperationalError(errno, "message")
    assert pymysql_adapter.is_connection_lost(FakeMySQLConn(), exc) is lost


def test_pymysql_closed_connection_errors(pymysql_adapter: PyMySQLAdapter) -> None:
    pymysql = importlib.import_module("pymysql")
    conn = FakeMySQLConn(open=False)
    refused = pymysql.err.InterfaceError(0, "")
    assert pymysql_adapter.is_connection_lost(conn, refused)
    assert pymysql_adapter.is_connection_lost(None, refused)
    assert pymysql_adapter.never_sent(conn, refused)
    assert pymysql_adapter.never_sent(conn, pymysql.err.Error("Already closed"))
    lost = pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
    assert not pymysql_adapter.never_sent(conn, lost)  # it may have run
    assert not pymysql_adapter.never_sent(FakeMySQLConn(), refused)  # open: not that case


def test_pymysql_timeouts(pymysql_adapter: PyMySQLAdapter) -> None:
    assert pymysql_adapter.set_timeouts({}, 3.5) == {"connect_timeout": 3.5}
    assert pymysql_adapter.set_timeouts({}, 60) == {"connect_timeout": 10.0}  # PyMySQL default
    assert pymysql_adapter.set_timeouts({"connect_timeout": 2}, 5) == {"connect_timeout": 2.0}
    assert pymysql_adapter.set_timeouts({}, -1) == {"connect_timeout": 0.1}


def test_pymysql_connect_bounds_the_handshake_only() -> None:
    """read/write timeouts are limited during connect, then the user's own come back."""

    def make(kwargs: dict[str, Any]) -> Any:
        conn = types.SimpleNamespace()
        conn._read_timeout = kwargs.get("read_timeout")
        conn._write_timeout = kwargs.get("write_timeout")
        return conn

    connect = driver_function("pymysql.connections", make)
    adapter = adapter_for(connect)
    conn = adapter.connect(host="h", connect_timeout=3)
    assert connect.calls[-1][1] == {
        "host": "h",
        "connect_timeout": 3,
        "read_timeout": 3,
        "write_timeout": 3,
    }
    assert conn._read_timeout is None and conn._write_timeout is None
    conn = adapter.connect(read_timeout=1.5, write_timeout=60)
    assert connect.calls[-1][1] == {"read_timeout": 1.5, "write_timeout": 10.0}
    assert (conn._read_timeout, conn._write_timeout) == (1.5, 60)


def test_pymysql_connect_without_known_attributes_reconnects_unbounded() -> None:
    closed: list[Any] = []

    class Conn:
        def close(self) -> None:
            closed.append(self)

    connect = driver_function("pymysql.connections", lambda kwargs: Conn())
    adapter_for(connect).connect(host="h")
    assert [kwargs for _, kwargs in connect.calls] == [
        {"host": "h", "read_timeout": 10.0, "write_timeout": 10.0},
        {"host": "h"},
    ]
    assert len(closed) == 1


def test_pymysql_reset_resends_connect_settings(pymysql_adapter: PyMySQLAdapter) -> None:
    conn = FakeMySQLConn(server_status=0x0001)  # autocommit off, in a transaction
    conn.sql_mode = "ANSI"
    conn.init_command = "SET @app = 1"
    pymysql_adapter.reset_session(conn)
    assert conn.sent == [
        ("command", 0x1F, b""),
        ("charset", "utf8mb4", None),
        ("sql", "SET sql_mode=%s", ("ANSI",)),
        ("sql", "SET @app = 1", None),
        ("autocommit", False),  # the server turned it on; the user had it off
    ]


def test_pymysql_reset_on_an_old_server_only_rolls_back(pymysql_adapter: PyMySQLAdapter) -> None:
    pymysql = importlib.import_module("pymysql")
    conn = FakeMySQLConn()
    conn.reset_error = pymysql.err.OperationalError(1047, "Unknown command")
    pymysql_adapter.reset_session(conn)
    assert conn.sent == [("command", 0x1F, b""), ("rollback",)]
    conn = FakeMySQLConn()
    conn.reset_error = pymysql.err.OperationalError(2013, "Lost connection")
    with pytest.raises(pymysql.err.OperationalError):
        pymysql_adapter.reset_session(conn)


def test_pymysql_peer_closed(
    pymysql_adapter: PyMySQLAdapter, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, theirs = socket_pair
    conn = FakeMySQLConn()
    conn._sock = ours  # type: ignore[attr-defined]
    assert not pymysql_adapter.peer_closed(conn)
    theirs.close()
    assert pymysql_adapter.peer_closed(conn)
    conn._result = types.SimpleNamespace(unbuffered_active=True)  # type: ignore[assignment]
    assert not pymysql_adapter.peer_closed(conn)  # rows of an SSCursor are expected


# -- PyGreSQL -------------------------------------------------------------------------------


def test_classic_pg_connect_moves_the_timeout_into_the_conninfo() -> None:
    connect = driver_function("pg.db")
    adapter = adapter_for(connect)
    assert type(adapter) is PgClassicAdapter
    adapter.connect("app", "h", 5432, connect_timeout=4)
    adapter.connect(dbname="app", host="h", **adapter.set_timeouts({}, 2.5))
    adapter.connect(host="h", connect_timeout=4)
    adapter.connect(db=object(), connect_timeout=4)  # wraps a connection: nothing to time
    args, kwargs = zip(*connect.calls)
    assert args[0] == ("dbname='app' connect_timeout=4", "h", 5432)
    assert kwargs[0] == {}
    assert kwargs[1] == {"dbname": "dbname='app' connect_timeout=3", "host": "h"}
    assert kwargs[2] == {"host": "h", "dbname": "connect_timeout=4"}
    assert set(kwargs[3]) == {"db"}


def test_classic_pg_user_function_keeps_its_keywords() -> None:
    calls: list[dict[str, Any]] = []

    def my_connect(**kwargs: Any) -> None:
        calls.append(kwargs)

    adapter = adapter_for(my_connect, driver="pg")
    adapter.connect(connect_timeout=4)
    assert calls == [{"connect_timeout": 4}]
    assert adapter.set_timeouts({}, 3) == {}


class FakeRawPg:
    """A raw ``pg.Connection``: status 1 good / 0 bad, transaction() from libpq."""

    def __init__(self, status: int = 1, transaction: int = 0) -> None:
        self.status = status
        self._transaction = transaction
        self.queries: list[str] = []

    def transaction(self) -> int:
        return self._transaction

    def query(self, sql: str) -> None:
        self.queries.append(sql)


def test_classic_pg_skips_rollback_and_commit_when_idle() -> None:
    adapter = adapter_for(driver_function("pg.db"))
    raw = FakeRawPg(transaction=0)
    adapter.rollback(raw)
    adapter.commit(raw)
    assert raw.queries == []  # the server would log "there is no transaction in progress"
    assert adapter.autocommit(raw)
    raw._transaction = 2
    assert adapter.in_transaction(raw)
    assert not adapter.autocommit(raw)
    adapter.rollback(raw)
    adapter.begin(raw)
    adapter.commit(raw)
    assert raw.queries == ["ROLLBACK", "BEGIN", "COMMIT"]


def test_classic_pg_bad_status_is_closed_and_lost() -> None:
    adapter = adapter_for(driver_function("pg.db"))
    raw = FakeRawPg(status=0, transaction=4)
    assert adapter.is_closed(raw)
    assert adapter.in_transaction(raw) is None
    assert not adapter.autocommit(raw)
    encoding = LookupError("unknown encoding: ")
    assert adapter.is_connection_lost(raw, encoding)
    assert adapter.never_sent(raw, encoding)
    assert not adapter.ping(raw)
    good = FakeRawPg()
    cancel = FakeSqlstateError("canceling statement due to user request", "57014")
    assert not adapter.is_connection_lost(good, cancel)
    assert not adapter.never_sent(good, encoding)


def test_pgdb_state_and_timeouts() -> None:
    adapter = adapter_for(fake_module("pgdb"))
    assert isinstance(adapter, PgdbAdapter)
    conn = types.SimpleNamespace(_cnx=FakeRawPg(transaction=3), closed=False, autocommit=False)
    assert adapter.in_transaction(conn)
    conn._cnx.status = 0
    conn.closed = True
    assert adapter.in_transaction(conn) is None
    lost = RuntimeError("server closed the connection unexpectedly")  # pgdb: ProgrammingError
    assert adapter.is_connection_lost(conn, lost)
    assert not adapter.never_sent(conn, lost)
    assert adapter.set_timeouts({"connect_timeout": 1}, 9) == {"connect_timeout": 1}


# -- sqlite3 --------------------------------------------------------------------------------


def test_sqlite_threadsafety_is_one_whatever_the_library_says() -> None:
    adapter = adapter_for(sqlite3)
    assert adapter.threadsafety == 1
    assert sqlite3.threadsafety in (0, 1, 3)  # the module's own value is about SQLite's build


def test_sqlite_connections_may_move_between_threads() -> None:
    adapter = adapter_for(sqlite3)
    conn = adapter.connect(":memory:")
    errors: list[BaseException] = []

    def use() -> None:
        try:
            conn.execute("SELECT 1").fetchall()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    conn.close()
    assert errors == []


def test_sqlite_keeps_an_explicit_check_same_thread() -> None:
    conn = adapter_for(sqlite3).connect(":memory:", check_same_thread=True)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: errors.extend(_try(conn.execute, "SELECT 1")))
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)
    adapter = adapter_for(sqlite3)
    assert not adapter.is_connection_lost(conn, errors[0])  # misuse, not a lost connection
    assert adapter.never_sent(conn, errors[0])
    conn.close()


def _try(function: Any, *args: Any) -> list[BaseException]:
    try:
        function(*args)
    except BaseException as exc:
        return [exc]
    return []


def test_sqlite_state() -> None:
    adapter = adapter_for(sqlite3)
    conn = adapter.connect(":memory:")
    assert not adapter.is_closed(conn)
    assert not adapter.autocommit(conn)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    assert adapter.in_transaction(conn) is False
    conn.execute("INSERT INTO t VALUES (1)")
    assert adapter.in_transaction(conn) is True
    adapter.commit(conn)
    assert adapter.in_transaction(conn) is False
    with pytest.raises(sqlite3.IntegrityError) as integrity:
        conn.execute("INSERT INTO t VALUES (1)")
    assert not adapter.is_connection_lost(conn, integrity.value)
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEC 1")
    assert not adapter.is_connection_lost(conn, syntax.value)
    assert adapter.ping(conn)
    conn.close()
    assert adapter.is_closed(conn)
    assert adapter.in_transaction(conn) is None
    assert not adapter.ping(conn)
    with pytest.raises(sqlite3.ProgrammingError) as closed:
        conn.execute("SELECT 1")
    assert adapter.is_connection_lost(conn, closed.value)
    assert adapter.never_sent(conn, closed.value)
    adapter.close(conn)  # closing twice never raises


def test_sqlite_autocommit_flags() -> None:
    adapter = adapter_for(sqlite3)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert adapter.autocommit(conn)
    conn.close()
    # Python 3.12's attribute wins when it is a real bool ...
    assert adapter.autocommit(types.SimpleNamespace(autocommit=True, isolation_level=""))
    assert not adapter.autocommit(types.SimpleNamespace(autocommit=False, isolation_level=None))
    # ... and LEGACY_TRANSACTION_CONTROL (-1) falls back to isolation_level.
    assert adapter.autocommit(types.SimpleNamespace(autocommit=-1, isolation_level=None))


def test_abandon_points_the_childs_socket_at_dev_null_and_keeps_the_object() -> None:
    """After fork, the child's copy of the socket is redirected, never closed."""
    import socket

    from tether.simple_pool.drivers import base

    left, right = socket.socketpair()
    parents_copy = os.dup(left.fileno())  # after a fork the parent holds the socket too

    class Adapter(DriverAdapter):
        def socket_fd(self, conn: Any) -> int | None:
            return left.fileno()

    raw = object()
    Adapter(lambda: raw).abandon(raw)
    assert any(kept is raw for kept in base._ABANDONED), "kept: no finalizer may run"
    os.write(left.fileno(), b"x")  # goes to /dev/null now: nothing reaches the peer
    right.setblocking(False)
    with pytest.raises(BlockingIOError):  # no data, and not closed (that would be EOF)
        right.recv(1)
    os.write(parents_copy, b"y")  # the parent's descriptor still reaches it
    assert right.recv(1) == b"y"
    os.close(parents_copy)
    left.close()
    right.close()
