"""pytest plugin: real database servers and driver targets as fixtures.

Installed with ``tether-harness`` (entry point ``pytest11``), or loaded with
``-p tether.harness.pytest_plugin``. It gives every tether package the same
servers and the same five drivers to test against:

``pg_server``, ``mariadb_server`` (session scope)
    A started :class:`~tether.harness.servers.DatabaseServer`, created on first
    use, one per pytest-xdist worker (each worker is its own process), so a
    test that restarts or kills its server disturbs no other worker.
    Closed when the session ends.

``driver_target`` (all five drivers), ``dbapi_target`` (the four DB-API
drivers), ``server_target`` (the four drivers with a server)
    A :class:`~tether.harness.targets.DriverTarget` per test, parametrized with
    ids equal to the driver names. Narrow it with
    ``@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)``.
    Tables named by ``target.unique_table()`` are dropped after the test, and
    sessions open before the test are left out of ``target.session_count()``.

After each test, every server this process started that is down (the test
stopped or killed it) is started again, on the same port.

A server that cannot be provided is an error, never a skip: tether's CI
provisions its servers, and a developer gets the install command.

``replication_pair`` (session), ``failover_pair`` (function)
    A :class:`~tether.harness.replication.ReplicationPair` of this worker: a
    primary and a synchronous streaming standby of its own (always local
    servers, whatever ``TETHER_PG_DSN`` says), reached through
    ``pair.conninfo()`` / ``pair.target(driver)``, a libpq multi-host DSN.
    ``failover_pair`` is the same pair made healthy again first (after an
    earlier test's failover) and its tables dropped afterwards. Tests using
    either are marked ``server`` and ``restart``.
``pgbouncer_transaction``, ``pgbouncer_session`` (session scope)
    A started :class:`~tether.harness.servers.PgBouncer` in that pool mode in
    front of this worker's ``pg_server`` (one per worker and mode); the
    per-test guard starts it again (and resumes it) when a test left it down
    or paused. ``pgbouncer`` is either, parametrized with ids
    ``transaction`` and ``session``.

``bouncer_target``
    A :class:`~tether.harness.targets.DriverTarget` for each PostgreSQL driver
    (psycopg, pgdb, pg) aimed at PgBouncer in each mode, ids such as
    ``psycopg-transaction``; ``target.server`` is the :class:`PgBouncer`.

Markers: ``server`` (added automatically to tests that use a server) and
``restart`` (put it on tests that restart or kill a server; with external
servers, run ``-m "not restart"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .replication import ReplicationPair
from .servers import (
    POOL_MODES,
    DatabaseServer,
    PgBouncer,
    ServerKind,
    ServerUnavailableError,
    provide_mariadb,
    provide_postgres,
)
from .targets import ALL_TARGETS, DBAPI_TARGETS, SERVER_TARGETS, DriverTarget, server_kind

__all__ = [
    "bouncer_target",
    "dbapi_target",
    "driver_target",
    "failover_pair",
    "mariadb_server",
    "pg_server",
    "pgbouncer",
    "pgbouncer_session",
    "pgbouncer_transaction",
    "replication_pair",
    "server_target",
]

log = logging.getLogger("tether.harness.pytest_plugin")

_SERVER_FIXTURES = {"postgresql": "pg_server", "mariadb": "mariadb_server"}
_BOUNCER_FIXTURES = ("pgbouncer", "pgbouncer_transaction", "pgbouncer_session", "bouncer_target")

#: Servers this process started, which the per-test guard keeps running.
_started: list[DatabaseServer] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "server: the test needs a real database server from tether.harness"
    )
    config.addinivalue_line("markers", "restart: the test restarts or kills a database server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a database server with ``server``."""
    for item in items:
        if _uses_server(item):
            item.add_marker(pytest.mark.server)
        if set(getattr(item, "fixturenames", ())) & _PAIR_FIXTURES:
            item.add_marker(pytest.mark.restart)  # it kills and promotes servers


_PAIR_FIXTURES = frozenset({"replication_pair", "failover_pair"})


def _uses_server(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if names & {
        "pg_server",
        "mariadb_server",
        "server_target",
        *_BOUNCER_FIXTURES,
        *_PAIR_FIXTURES,
    }:
        return True
    callspec = getattr(item, "callspec", None)
    for fixture in ("driver_target", "dbapi_target"):
        if fixture in names:
            param = callspec.params.get(fixture) if callspec is not None else None
            if param != "sqlite3":
                return True
    return False


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _provide(
    kind: ServerKind, request: pytest.FixtureRequest, factory: pytest.TempPathFactory
) -> DatabaseServer:
    worker = _worker_id(request.config)
    workdir = factory.mktemp(f"{kind}-{worker}", numbered=True)
    try:
        server = provide_postgres(workdir) if kind == "postgresql" else provide_mariadb(workdir)
    except ServerUnavailableError as exc:
        where = "CI=true: tether's CI must provision this server. " if _in_ci() else ""
        pytest.fail(f"{where}No {kind} server for the tests: {exc}", pytrace=False)
    log.info("worker %s: %s server %r", worker, kind, server)
    _started.append(server)
    return server


def _close(server: DatabaseServer) -> None:
    if server in _started:
        _started.remove(server)
    server.close()


@pytest.fixture(scope="session")
def pg_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseServer]:
    """This worker's PostgreSQL server (started on first use, closed at session end)."""
    server = _provide("postgresql", request, tmp_path_factory)
    try:
        yield server
    finally:
        _close(server)


@pytest.fixture(scope="session")
def mariadb_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseServer]:
    """This worker's MariaDB server (started on first use, closed at session end)."""
    server = _provide("mariadb", request, tmp_path_factory)
    try:
        yield server
    finally:
        _close(server)


@pytest.fixture(scope="session")
def replication_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicationPair]:
    """This worker's primary and synchronous standby (started on first use, closed at the end).

    Its servers are not kept running by the per-test guard: starting a
    killed primary again behind a promoted standby would make two primaries.
    """
    worker = _worker_id(request.config)
    pair = ReplicationPair(tmp_path_factory.mktemp(f"replication-{worker}", numbered=True))
    try:
        pair.start()
    except ServerUnavailableError as exc:
        pair.close()
        where = "CI=true: tether's CI must provision this server. " if _in_ci() else ""
        pytest.fail(f"{where}No PostgreSQL pair for the tests: {exc}", pytrace=False)
    except BaseException:
        pair.close()
        raise
    log.info("worker %s: %r", worker, pair)
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture
def failover_pair(replication_pair: ReplicationPair) -> Iterator[ReplicationPair]:
    """This worker's pair, healthy at the start of the test; its tables dropped afterwards."""
    replication_pair.restore()
    try:
        yield replication_pair
    finally:
        replication_pair.cleanup()


def _bouncer(mode: str, request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    backend: DatabaseServer = request.getfixturevalue("pg_server")
    try:
        bouncer = PgBouncer(backend, "transaction" if mode == "transaction" else "session")
        bouncer.start()
    except ServerUnavailableError as exc:
        where = "CI=true: tether's CI must provision PgBouncer. " if _in_ci() else ""
        pytest.fail(f"{where}No PgBouncer for the tests: {exc}", pytrace=False)
    log.info("worker %s: %r", _worker_id(request.config), bouncer)
    _started.append(bouncer)
    try:
        yield bouncer
    finally:
        _close(bouncer)


@pytest.fixture(scope="session")
def pgbouncer_transaction(request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """This worker's PgBouncer in transaction mode in front of ``pg_server``."""
    yield from _bouncer("transaction", request)


@pytest.fixture(scope="session")
def pgbouncer_session(request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """This worker's PgBouncer in session mode in front of ``pg_server``."""
    yield from _bouncer("session", request)


@pytest.fixture(params=POOL_MODES, ids=list(POOL_MODES))
def pgbouncer(request: pytest.FixtureRequest) -> PgBouncer:
    """This worker's PgBouncer in each pool mode (``transaction``, ``session``)."""
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{request.param}")
    return bouncer


_BOUNCER_TARGETS = [(d, m) for d in ("psycopg", "pgdb", "pg") for m in POOL_MODES]


@pytest.fixture(params=_BOUNCER_TARGETS, ids=[f"{d}-{m}" for d, m in _BOUNCER_TARGETS])
def bouncer_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverTarget]:
    """Each PostgreSQL driver aimed at this worker's PgBouncer in each pool mode."""
    name, mode = request.param
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{mode}")
    target = DriverTarget.build(name, bouncer, workdir=tmp_path)
    target.ignore_existing_sessions()
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture(autouse=True)
def _tether_keep_servers_running() -> Iterator[None]:
    """After each test, start again any server of this process that the test left down."""
    yield
    for server in list(_started):
        server.ensure_running()


def _target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverTarget]:
    name = str(request.param)
    kind = server_kind(name)
    server = request.getfixturevalue(_SERVER_FIXTURES[kind]) if kind is not None else None
    target = DriverTarget.build(name, server, workdir=tmp_path)
    if server is not None:
        target.ignore_existing_sessions()
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture(params=ALL_TARGETS, ids=list(ALL_TARGETS))
def driver_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverTarget]:
    """Each of the five drivers (psycopg, pgdb, pg, pymysql, sqlite3) aimed at its server."""
    yield from _target(request, tmp_path)


@pytest.fixture(params=DBAPI_TARGETS, ids=list(DBAPI_TARGETS))
def dbapi_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverTarget]:
    """Each DB-API 2 driver (psycopg, pgdb, pymysql, sqlite3) aimed at its server."""
    yield from _target(request, tmp_path)


@pytest.fixture(params=SERVER_TARGETS, ids=list(SERVER_TARGETS))
def server_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverTarget]:
    """Each driver with a database server (psycopg, pgdb, pg, pymysql)."""
    yield from _target(request, tmp_path)
