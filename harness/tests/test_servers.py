"""The servers: addressing, administration, restarts on the same port, kills, external DSNs."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tether.harness import processes
from tether.harness.servers import (
    DatabaseServer,
    ExternalServer,
    LocalMariaDB,
    LocalPostgres,
    ServerNotControllableError,
    docker_available,
    provide_mariadb,
    provide_postgres,
)
from tether.harness.targets import DriverTarget

pytestmark = pytest.mark.server


def _controllable(server: DatabaseServer) -> DatabaseServer:
    if not server.controllable:
        pytest.skip(f"{server!r} is external: the harness cannot restart it")
    return server


def _connect(server: DatabaseServer) -> Any:
    return _target(server).connect()


def _select_one(conn: Any) -> Any:
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]
    finally:
        cursor.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> DatabaseServer:
    fixture = "pg_server" if request.param == "postgresql" else "mariadb_server"
    result: DatabaseServer = request.getfixturevalue(fixture)
    return result


def _target(server: DatabaseServer) -> DriverTarget:
    return DriverTarget.build("psycopg" if server.kind == "postgresql" else "pymysql", server)


def test_repr_and_errors_hide_the_password(server: DatabaseServer) -> None:
    assert server.password
    for text in (repr(server), str(server), server.redacted_url(), repr(_target(server))):
        assert server.password not in text
    assert f":{server.port}/" in server.redacted_url()
    with pytest.raises(ValueError) as excinfo:
        ExternalServer.from_dsn(f"oracle://u:{server.password}@h:1/db", source="TEST_DSN")
    assert server.password not in str(excinfo.value)
    assert "TEST_DSN" in str(excinfo.value)


def test_url_connects_with_the_password(server: DatabaseServer) -> None:
    url = server.url()
    assert url.startswith("postgresql://" if server.kind == "postgresql" else "mysql://")
    external = ExternalServer.from_dsn(url)
    assert (external.kind, external.host, external.port) == (server.kind, server.host, server.port)
    assert (external.user, external.password, external.database) == (
        server.user,
        server.password,
        server.database,
    )
    if server.kind == "postgresql":
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (server.user,)


def test_admin_execute_returns_rows(server: DatabaseServer) -> None:
    assert server.admin_execute("SELECT 1") == [(1,)]
    assert server.admin_execute("SELECT %s, %s", (2, "x")) == [(2, "x")]
    target = _target(server)
    table = target.unique_table("admin")
    try:
        assert server.admin_execute(f"CREATE TABLE {table} (i int)") == []
        server.admin_execute(f"INSERT INTO {table} VALUES (%s)", (7,))
        assert server.admin_execute(f"SELECT i FROM {table}") == [(7,)]
    finally:
        target.cleanup()
    assert not server.admin_execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = %s", (table,)
    )
    assert server.server_version()


def test_create_database_is_idempotent(server: DatabaseServer) -> None:
    name = f"extra_{os.getpid()}"
    server.create_database(name)
    server.create_database(name)
    assert server.admin_execute("SELECT 1", database=name) == [(1,)]


@pytest.mark.restart
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_keeps_the_port_and_drops_sessions(server: DatabaseServer, mode: str) -> None:
    _controllable(server)
    port = server.port
    old = _connect(server)
    assert _select_one(old) == 1
    started = time.monotonic()
    server.restart(mode)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert server.port == port
    assert server.is_running()
    with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
        _select_one(old)
    new = _connect(server)
    try:
        assert _select_one(new) == 1
    finally:
        new.close()
        old.close()
    assert elapsed < 10


@pytest.mark.restart
def test_kill_leaves_the_server_down_until_started(server: DatabaseServer) -> None:
    _controllable(server)
    port = server.port
    server.kill()
    assert not server.is_running()
    with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
        _connect(server)
    server.start()
    assert server.port == port
    assert server.admin_execute("SELECT 1") == [(1,)]


@pytest.mark.restart
def test_a_start_right_after_a_kill_waits_for_what_the_killed_server_left(
    pg_server: DatabaseServer,
) -> None:
    """PostgreSQL's backends outlive a kill of the postmaster's process group a moment (each
    runs in a session of its own): a start at once failed with "pre-existing shared memory
    block is still in use" (found in CI). The start waits for them, within its timeout.
    A backend busy computing notices last: it looks for the postmaster only when it waits."""
    _controllable(pg_server)
    busy = _connect(pg_server)
    started = threading.Event()

    def compute() -> None:
        with contextlib.suppress(psycopg.Error):
            cursor = busy.cursor()
            started.set()
            cursor.execute("SELECT count(*) FROM generate_series(1, 20000000)")

    worker = threading.Thread(target=compute)
    worker.start()
    try:
        started.wait(5)
        time.sleep(0.3)  # the query is running
        pg_server.kill()
        pg_server.start()
        assert pg_server.admin_execute("SELECT 1") == [(1,)]
    finally:
        worker.join(30)
        busy.close()


def test_restart_rejects_unknown_modes(server: DatabaseServer) -> None:
    with pytest.raises(ValueError, match="mode"):
        server.restart("smart")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_external_server_from_the_environment(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local: DatabaseServer = request.getfixturevalue(
        "pg_server" if kind == "postgresql" else "mariadb_server"
    )
    env = "TETHER_PG_DSN" if kind == "postgresql" else "TETHER_MARIADB_DSN"
    monkeypatch.setenv(env, local.url())
    provide = provide_postgres if kind == "postgresql" else provide_mariadb
    external = provide(tmp_path)
    assert isinstance(external, ExternalServer)
    assert not external.controllable
    assert (external.host, external.port) == (local.host, local.port)
    assert local.password not in repr(external)
    assert external.is_running()
    assert external.admin_execute("SELECT 1") == [(1,)]
    with pytest.raises(ServerNotControllableError):
        external.restart("fast")
    with pytest.raises(ServerNotControllableError):
        external.kill()
    external.close()  # not ours: nothing happens
    assert local.is_running()
    target = _target(external)
    conn = target.connect()
    try:
        assert target.backend_id(conn) > 0
    finally:
        conn.close()


def test_a_local_server_leaves_nothing_behind(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path)
    started = time.monotonic()
    server.start()
    startup = time.monotonic() - started
    pid, base = server.pid, server.base_dir
    assert pid is not None
    assert base is not None
    assert base.is_dir()
    assert server.password not in repr(server)
    server.close()
    server.close()  # idempotent
    assert not server.is_running()
    assert not base.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie
    assert startup < 30


@pytest.mark.parametrize("cls", [LocalPostgres, LocalMariaDB], ids=["postgresql", "mariadb"])
def test_a_port_taken_before_the_first_start_is_replaced(
    cls: type[LocalPostgres | LocalMariaDB], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        offered = [taken]
        real_free_port = processes.free_port

        def free_port(host: str = "127.0.0.1") -> int:
            return offered.pop() if offered else real_free_port(host)

        monkeypatch.setattr(processes, "free_port", free_port)
        server = cls(tmp_path)
        try:
            server.start()
            assert server.port != taken
            assert server.admin_execute("SELECT 1") == [(1,)]
        finally:
            server.close()
    assert not offered


def test_docker_detection_answers_quickly() -> None:
    started = time.monotonic()
    assert docker_available() in (True, False)
    assert time.monotonic() - started < 5
