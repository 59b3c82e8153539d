"""Driver targets: every driver connects and round-trips; backends are found, killed, counted."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tether.harness.targets import (
    ALL_TARGETS,
    DBAPI_TARGETS,
    SERVER_TARGETS,
    DriverTarget,
    NoServerError,
    all_target_names,
)


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition``: sessions leave the server asynchronously after a client closes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _commit(target: DriverTarget, conn: Any) -> None:
    if target.dbapi2:
        conn.commit()


def test_target_names() -> None:
    assert all_target_names() == ("psycopg", "pgdb", "pg", "pymysql", "sqlite3")
    assert set(DBAPI_TARGETS) == set(ALL_TARGETS) - {"pg"}
    assert set(SERVER_TARGETS) == set(ALL_TARGETS) - {"sqlite3"}
    with pytest.raises(ValueError, match="unknown driver target"):
        DriverTarget.build("oracle")


def test_round_trip(driver_target: DriverTarget, request: pytest.FixtureRequest) -> None:
    assert request.node.callspec.id == driver_target.name
    table = driver_target.unique_table("round_trip")
    conn = driver_target.connect()
    try:
        driver_target.query(conn, f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(40))")
        marks = driver_target.placeholders(2)
        driver_target.query(conn, f"INSERT INTO {table} VALUES ({marks})", (1, "één"))
        _commit(driver_target, conn)
        rows = driver_target.query(
            conn, f"SELECT id, name FROM {table} WHERE id = {driver_target.placeholder}", (1,)
        )
        assert rows == [(1, "één")]
    finally:
        conn.close()
    # A second connection sees the committed row.
    other = driver_target.connect()
    try:
        assert driver_target.query(other, f"SELECT count(*) FROM {table}") == [(1,)]
    finally:
        other.close()


def test_creator_and_interface(driver_target: DriverTarget) -> None:
    assert driver_target.dbapi2 == (driver_target.name != "pg")
    if driver_target.name == "pg":
        assert driver_target.creator is driver_target.module.DB
    else:
        assert driver_target.creator is driver_target.module
        assert callable(driver_target.creator.connect)
    if driver_target.server is not None:
        assert driver_target.server.password not in repr(driver_target)
        assert driver_target.backend_id_sql is not None
    else:
        assert driver_target.backend_id_sql is None


def test_sqlite3_has_no_server() -> None:
    target = DriverTarget.build("sqlite3")
    conn = target.connect()
    try:
        with pytest.raises(NoServerError):
            target.backend_id(conn)
        with pytest.raises(NoServerError):
            target.session_count()
        assert target.placeholder == "?"
    finally:
        conn.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
def test_indirect_parametrization_narrows_the_drivers(
    driver_target: DriverTarget, request: pytest.FixtureRequest
) -> None:
    assert driver_target.name == "psycopg"
    assert request.node.callspec.id == "psycopg"


def test_dbapi_target_is_dbapi(dbapi_target: DriverTarget) -> None:
    assert dbapi_target.name in DBAPI_TARGETS
    assert dbapi_target.dbapi2


def test_backend_id_identifies_the_session(server_target: DriverTarget) -> None:
    one, two = server_target.connect(), server_target.connect()
    try:
        id_one, id_two = server_target.backend_id(one), server_target.backend_id(two)
        assert id_one != id_two
        assert server_target.backend_id(one) == id_one
    finally:
        one.close()
        two.close()


def test_kill_backend_terminates_exactly_that_session(server_target: DriverTarget) -> None:
    victim, bystander = server_target.connect(), server_target.connect()
    try:
        victim_id = server_target.backend_id(victim)
        bystander_id = server_target.backend_id(bystander)
        assert server_target.kill_backend(victim_id) is True
        with pytest.raises(Exception):  # noqa: B017 - each driver raises its own class
            server_target.query(victim, "SELECT 1")
        # The other session is untouched...
        assert server_target.backend_id(bystander) == bystander_id
        # ...and a new connection works.
        fresh = server_target.connect()
        try:
            assert server_target.query(fresh, "SELECT 1") == [(1,)]
        finally:
            fresh.close()
        assert server_target.kill_backend(victim_id) is False  # already gone
    finally:
        for conn in (victim, bystander):
            try:
                conn.close()
            except Exception:
                pass


def test_session_count_counts_this_tests_sessions(server_target: DriverTarget) -> None:
    assert server_target.session_count() == 0
    conns = [server_target.connect() for _ in range(3)]
    try:
        assert server_target.session_count() == 3
        conns.pop().close()
        assert _eventually(lambda: server_target.session_count() == 2)
        # Sessions that existed before are ignored once asked to.
        assert server_target.ignore_existing_sessions() >= 2
        assert server_target.session_count() == 0
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("server_target", ["psycopg"], indirect=True)
def test_session_count_by_application_name(server_target: DriverTarget) -> None:
    conn = server_target.module.connect(**server_target.kwargs, application_name="tether-app-x")
    try:
        assert server_target.session_count("tether-app-x") == 1
        assert server_target.session_count("tether-app-y") == 0
    finally:
        conn.close()


@pytest.mark.parametrize("server_target", ["psycopg", "pymysql"], indirect=True)
def test_cancel_backend_cancels_the_query_only(server_target: DriverTarget) -> None:
    sleep = "SELECT pg_sleep(20)" if server_target.kind == "postgresql" else "SELECT SLEEP(20)"
    conn = server_target.connect()
    backend = server_target.backend_id(conn)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(server_target.query(conn, sleep))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    started = time.monotonic()
    worker.start()
    try:
        # Wait until the sleep is running, then cancel it.
        server = server_target.server
        assert server is not None
        if server.kind == "postgresql":
            running = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
        else:
            running = (
                "SELECT 1 FROM information_schema.processlist"
                " WHERE id = %s AND info LIKE 'SELECT SLEEP%%'"
            )
        assert _eventually(lambda: bool(server.admin_execute(running, (backend,))))
        assert server_target.cancel_backend(backend) is True
        worker.join(10)
        assert not worker.is_alive()
        assert time.monotonic() - started < 10
        # psycopg: QueryCanceled (57014); PyMySQL: OperationalError 1317.
        assert isinstance(outcome[0], Exception), outcome
        conn.rollback()
        assert server_target.query(conn, "SELECT 1") == [(1,)]  # the session survived
        assert server_target.backend_id(conn) == backend
    finally:
        worker.join(10)
        conn.close()


def test_unique_tables_are_dropped_by_cleanup(server_target: DriverTarget) -> None:
    assert server_target.server is not None
    table = server_target.unique_table()
    assert table != server_target.unique_table()
    conn = server_target.connect()
    try:
        server_target.query(conn, f"CREATE TABLE {table} (i int)")
        _commit(server_target, conn)
    finally:
        conn.close()
    exists = "SELECT 1 FROM information_schema.tables WHERE table_name = %s"
    assert server_target.server.admin_execute(exists, (table,))
    server_target.cleanup()
    assert not server_target.server.admin_execute(exists, (table,))
    assert server_target.tables == []
    with pytest.raises(ValueError, match="prefix"):
        server_target.unique_table("Bad-Name")


def test_placeholders() -> None:
    expected = {"psycopg": "%s, %s", "pgdb": "%s, %s", "pymysql": "%s, %s", "sqlite3": "?, ?"}
    expected["pg"] = "$1, $2"
    for name, marks in expected.items():
        target = DriverTarget(name, importlib.import_module(name), None)
        assert target.placeholders(2) == marks
        assert target.placeholder == marks.split(",")[0]
