"""PgBouncer in front of PostgreSQL: both pool modes, every libpq driver, the chaos levers."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import psycopg
import pytest

from tether.harness import HarnessError, ServerStartError, processes
from tether.harness.pgbouncer import PgBouncer
from tether.harness.targets import DriverTarget

pytestmark = pytest.mark.server


def _one(target: DriverTarget) -> Any:
    conn = target.connect()
    try:
        return target.query(conn, "SELECT 41 + 1")[0][0]
    finally:
        conn.close()


def test_every_driver_reaches_postgresql_through_pgbouncer(bouncer_target: DriverTarget) -> None:
    bouncer = bouncer_target.server
    assert isinstance(bouncer, PgBouncer)
    assert bouncer.port not in (0, bouncer.backend.port)
    assert _one(bouncer_target) == 42
    clients = bouncer.show("CLIENTS")
    assert all(row["user"] == bouncer.user for row in clients)


def test_each_mode_is_its_own_pgbouncer(
    pgbouncer_transaction: PgBouncer, pgbouncer_session: PgBouncer
) -> None:
    assert pgbouncer_transaction.config_value("pool_mode") == "transaction"
    assert pgbouncer_session.config_value("pool_mode") == "session"
    assert pgbouncer_transaction.port != pgbouncer_session.port
    assert pgbouncer_transaction.backend is pgbouncer_session.backend
    for bouncer in (pgbouncer_transaction, pgbouncer_session):
        _one(DriverTarget.build("psycopg", bouncer))
        pools = [r for r in bouncer.show("POOLS") if r["database"] == bouncer.database]
        assert [r["pool_mode"] for r in pools] == [bouncer.pool_mode]
    assert "pgbouncer" in repr(pgbouncer_session) and "session" in repr(pgbouncer_session)


def test_transaction_mode_moves_a_client_between_server_sessions(
    pgbouncer_transaction: PgBouncer,
) -> None:
    """Two clients in turn: in transaction mode one server session serves both; what the
    client sees as its backend pid is PgBouncer's, not the server's."""
    target = DriverTarget.build("psycopg", pgbouncer_transaction)
    first, second = target.connect(), target.connect()
    try:
        first.autocommit = second.autocommit = True
        pid = first.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert first.pgconn.backend_pid != pid  # PgBouncer's own cancel key
        assert second.execute("SELECT pg_backend_pid()").fetchone()[0] in _server_pids(target)
    finally:
        first.close()
        second.close()


def _server_pids(target: DriverTarget) -> set[int]:
    server = target.server
    assert server is not None
    rows = server.admin_execute(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s", (server.user,)
    )
    return {int(r[0]) for r in rows}


def test_session_mode_keeps_session_state(pgbouncer_session: PgBouncer) -> None:
    target = DriverTarget.build("psycopg", pgbouncer_session)
    conn = target.connect()
    try:
        conn.autocommit = True
        conn.execute("SET application_name = 'kept'")
        for _ in range(3):
            name = conn.execute("SHOW application_name").fetchone()[0]
            assert name == "kept"
    finally:
        conn.close()


def test_restart_keeps_the_port_and_drops_clients(pgbouncer: PgBouncer) -> None:
    target = DriverTarget.build("psycopg", pgbouncer)
    conn = target.connect()
    port, pid = pgbouncer.port, pgbouncer.pid
    try:
        pgbouncer.restart()
        assert pgbouncer.port == port and pgbouncer.pid not in (None, pid)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.broken
    finally:
        conn.close()
    assert _one(target) == 42


def test_kill_and_ensure_running(pgbouncer_transaction: PgBouncer) -> None:
    pgbouncer_transaction.kill()
    assert not pgbouncer_transaction.is_running()
    pgbouncer_transaction.ensure_running()
    assert _one(DriverTarget.build("pgdb", pgbouncer_transaction)) == 42


def test_pause_holds_queries_until_resume(pgbouncer_transaction: PgBouncer) -> None:
    target = DriverTarget.build("psycopg", pgbouncer_transaction)
    conn = target.connect()
    try:
        conn.autocommit = True
        pgbouncer_transaction.pause()
        resumer = threading.Timer(0.6, pgbouncer_transaction.resume)
        started = time.monotonic()
        resumer.start()
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        waited = time.monotonic() - started
        resumer.join()
        assert waited >= 0.5, f"the query ran during the pause ({waited:.2f}s)"
    finally:
        conn.close()


def test_pause_gives_up_on_an_open_transaction(pgbouncer_transaction: PgBouncer) -> None:
    target = DriverTarget.build("psycopg", pgbouncer_transaction)
    conn = target.connect()
    try:
        conn.execute("SELECT 1")  # a transaction stays open: PAUSE cannot complete
        with pytest.raises(HarnessError, match="did not complete"):
            pgbouncer_transaction.pause(timeout=0.5)
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone()[0] == 2  # resumed
    finally:
        conn.close()


def test_a_paused_bouncer_is_resumed_between_tests(pgbouncer_transaction: PgBouncer) -> None:
    pgbouncer_transaction.pause()
    pgbouncer_transaction.ensure_running()  # what the plugin does after each test
    assert _one(DriverTarget.build("pg", pgbouncer_transaction)) == 42


def test_database_restart_behind_pgbouncer(pgbouncer: PgBouncer) -> None:
    """An idle client survives a database restart in transaction mode (PgBouncer reconnects
    its server sessions); in session mode its session is gone and the next query fails."""
    target = DriverTarget.build("psycopg", pgbouncer)
    conn = target.connect()
    try:
        conn.autocommit = True
        conn.execute("SELECT 1")
        pgbouncer.backend.restart("fast")
        if pgbouncer.pool_mode == "transaction":
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        else:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    finally:
        conn.close()
    assert _one(target) == 42


def test_password_stays_out_of_sight(pgbouncer_session: PgBouncer) -> None:
    assert pgbouncer_session.password not in repr(pgbouncer_session)
    base = pgbouncer_session.base_dir
    assert base is not None
    assert os.stat(base / "userlist.txt").st_mode & 0o077 == 0
    log_path = pgbouncer_session.log_path
    assert log_path is not None
    assert pgbouncer_session.password not in log_path.read_text(errors="replace")


def test_bad_arguments(pg_server: Any) -> None:
    with pytest.raises(ValueError, match="pool_mode"):
        PgBouncer(pg_server, "statement")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend"):
        PgBouncer(object())  # type: ignore[arg-type]


def test_close_is_idempotent_and_removes_its_directory(pg_server: Any) -> None:
    bouncer = PgBouncer(pg_server, "session")
    bouncer.start()
    base = bouncer.base_dir
    assert base is not None and base.is_dir()
    bouncer.close()
    bouncer.close()
    assert not base.exists() and not bouncer.is_running()
    with pytest.raises(HarnessError, match="closed"):
        bouncer.start()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_taken_fixed_port_fails_the_start(pg_server: Any) -> None:
    """PgBouncer only warns when its TCP port is taken and serves its unix socket alone:
    the harness must not call that started (clients on the port would reach the stranger)."""
    with _listening_socket() as stranger:
        bouncer = PgBouncer(pg_server, port=stranger.getsockname()[1])
        try:
            with pytest.raises(ServerStartError, match="port is in use"):
                bouncer.start()
            assert not bouncer.is_running()
        finally:
            bouncer.close()


def test_a_port_taken_before_pgbouncer_bound_it_is_replaced(
    pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-port race: the first port chosen is taken by the time PgBouncer binds it."""
    with _listening_socket() as stranger:
        taken = stranger.getsockname()[1]
        choices = iter([taken])
        real_free_port = processes.free_port
        monkeypatch.setattr(
            processes, "free_port", lambda host: next(choices, None) or real_free_port(host)
        )
        bouncer = PgBouncer(pg_server)
        try:
            bouncer.start()
            assert bouncer.port != taken
            assert _one(DriverTarget.build("psycopg", bouncer)) == 42
        finally:
            bouncer.close()
