"""The Django backends on real PostgreSQL and MariaDB: migrations, atomic(), a threaded server.

A small Django project (``tests/djangoproject/tether_fw_testapp``: one model,
its migration, two views) runs behind a WSGI server with a fixed pool of
worker threads, hammered by client threads while the database server
restarts. Four databases: PostgreSQL and MariaDB, each through a
``pooled`` and a ``persistent`` tether pool.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest

from tether.harness import DriverTarget
from tether.harness.servers import DatabaseServer

from .conftest import unique_name

ALIASES = ("default", "pg_persistent", "my_pooled", "my_persistent")
KIND = {
    "default": "postgresql",
    "pg_persistent": "postgresql",
    "my_pooled": "mariadb",
    "my_persistent": "mariadb",
}


def _database(
    server: DatabaseServer, engine: str, name: str, tether: dict[str, Any]
) -> dict[str, Any]:
    return {
        "ENGINE": f"tether.frameworks.django.{engine}",
        "NAME": name,
        "USER": server.user,
        "PASSWORD": server.password,
        "HOST": server.host,
        "PORT": server.port,
        "OPTIONS": {"tether": tether},
    }


#: Commands sent by the "my_counted" database's driver connections, by kind.
COMMANDS: list[str] = []


def _count_commands(raw: Any) -> None:
    """tether on_connect: record every command this PyMySQL connection sends from now on."""
    send = raw._execute_command

    def counted(command: int, sql: Any) -> Any:
        text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
        COMMANDS.append(text if isinstance(text, str) else f"command {command}")
        return send(command, sql)

    raw._execute_command = counted


@pytest.fixture(scope="session")
def django_project(
    pg_server: DatabaseServer, mariadb_server: DatabaseServer
) -> Iterator[dict[str, Any]]:
    """Django configured with the four databases, migrated; one per xdist worker."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    sys.path.insert(0, str(Path(__file__).parent / "djangoproject"))
    pg_name, my_name = unique_name("dj"), unique_name("dj")
    pg_server.create_database(pg_name)
    mariadb_server.create_database(my_name)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tether-tests",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["tether_fw_testapp"],
        ROOT_URLCONF="tether_fw_testapp.urls",
        MIDDLEWARE=[],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DATABASES={
            "default": _database(
                pg_server, "postgresql", pg_name, {"pool": "pooled", "maxconnections": 6}
            ),
            "pg_persistent": _database(pg_server, "postgresql", pg_name, {"pool": "persistent"}),
            "my_pooled": _database(
                mariadb_server, "mysql", my_name, {"pool": "pooled", "maxconnections": 6}
            ),
            "my_persistent": _database(mariadb_server, "mysql", my_name, {"pool": "persistent"}),
            # Counts every command PyMySQL sends (see test_no_round_trip_per_request).
            "my_counted": _database(
                mariadb_server, "mysql", my_name, {"pool": "pooled", "on_connect": _count_commands}
            ),
        },
    )
    django.setup()
    call_command("migrate", database="default", verbosity=0)
    call_command("migrate", database="my_pooled", verbosity=0)
    try:
        yield {"postgresql": pg_server, "mariadb": mariadb_server}
    finally:
        from django.db import connections

        from tether.frameworks.django import close_pools

        connections.close_all()
        close_pools()
        pg_server.ensure_running()
        mariadb_server.ensure_running()
        pg_server.admin_execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        mariadb_server.admin_execute(f"DROP DATABASE IF EXISTS `{my_name}`")


def _items(alias: str) -> Any:
    from tether_fw_testapp.models import Item

    return Item.objects.using(alias)


def _target(django_project: dict[str, Any], alias: str) -> DriverTarget:
    server = django_project[KIND[alias]]
    return DriverTarget.build("psycopg" if server.kind == "postgresql" else "pymysql", server)


def _backend_id(alias: str) -> int:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()" if KIND[alias] == "postgresql" else "SELECT CONNECTION_ID()"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def alias(request: pytest.FixtureRequest, django_project: dict[str, Any]) -> Iterator[str]:
    name: str = request.param
    yield name
    from django.db import connections

    django_project[KIND[name]].ensure_running()
    connections[name].close()
    _items(name).all().delete()
    connections[name].close()


# -- the backend in one thread -------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES, indirect=True)
def test_connections_are_tethers(alias: str) -> None:
    from django.db import connections

    from tether.frameworks.django import pools

    connection = connections[alias]
    _items(alias).create(token="first")
    assert _items(alias).get(token="first").label == "new"
    con = connection.connection
    assert con.dbapi_connection is not None  # a tether connection with the driver's under it
    mode = "persistent" if alias.endswith("persistent") else "pooled"
    generator = pools()[alias]
    assert type(generator).__name__ == ("PersistentDB" if mode == "persistent" else "PooledDB")
    connection.close()  # Django's close: give back
    assert connection.connection is None
    if mode == "pooled":
        assert generator.stats()["in_use"] == 0  # type: ignore[union-attr]


@pytest.mark.restart
@pytest.mark.parametrize("alias", ALIASES, indirect=True)
def test_atomic_never_reopens_and_rolls_back(alias: str, django_project: dict[str, Any]) -> None:
    from django.db import OperationalError, transaction

    target = _target(django_project, alias)
    with pytest.raises(OperationalError), transaction.atomic(using=alias):
        _items(alias).create(token="in-atomic")
        target.kill_backend(_backend_id(alias))
        _items(alias).create(token="after-kill")  # never on a new session
    assert _items(alias).count() == 0  # reopened after the block; nothing committed
    _items(alias).create(token="later")
    assert list(_items(alias).values_list("token", flat=True)) == ["later"]


@pytest.mark.restart
@pytest.mark.parametrize("alias", ALIASES, indirect=True)
def test_reopen_at_the_start_of_atomic_keeps_the_block_atomic(
    alias: str, django_project: dict[str, Any]
) -> None:
    """The server ends the session between requests; the next atomic() opens a new one,
    in the block's (non-autocommit) mode, so the block still commits or rolls back whole."""
    from django.db import transaction

    target = _target(django_project, alias)
    _items(alias).create(token="before")
    target.kill_backend(_backend_id(alias))
    with pytest.raises(LookupError), transaction.atomic(using=alias):
        _items(alias).create(token="one")
        _items(alias).create(token="two")
        raise LookupError
    assert sorted(_items(alias).values_list("token", flat=True)) == ["before"]
    target.kill_backend(_backend_id(alias))
    _items(alias).create(token="autocommit")  # outside atomic: reopened, committed
    assert _items(alias).count() == 2


@pytest.mark.parametrize("alias", ["default", "pg_persistent"], indirect=True)
def test_psycopg_type_info_paths(alias: str, django_project: dict[str, Any]) -> None:
    """What django.contrib.postgres (and PostGIS) do with ``connection.connection``.

    Their ``connection_created`` receivers register hstore/citext with
    ``psycopg.types.TypeInfo(...).register(connection.connection)`` and PostGIS
    calls ``TypeInfo.fetch(connection.connection, ...)``, which takes only a
    ``psycopg.Connection``: tether's connection must pass for one and carry
    the registration to the driver connection the queries run on.
    """
    import psycopg
    from django.contrib.postgres.signals import get_hstore_oids, register_type_handlers
    from django.db import connections
    from psycopg.types import TypeInfo

    connection = connections[alias]
    server = django_project["postgresql"]
    server.admin_execute(
        "CREATE EXTENSION IF NOT EXISTS hstore", database=connection.settings_dict["NAME"]
    )
    get_hstore_oids.cache_clear()
    connection.ensure_connection()
    con = connection.connection
    assert isinstance(con, psycopg.Connection)
    assert type(con).__module__.startswith("tether.")
    info = TypeInfo.fetch(con, "hstore")
    assert info is not None and info.oid == get_hstore_oids(alias)[0][0]
    register_type_handlers(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'a=>1'::hstore")
        assert cursor.fetchone()[0] == {"a": "1"}
    connection.close()  # the next request: a new checkout, then connection_created again
    connection.ensure_connection()
    register_type_handlers(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'b=>2'::hstore")
        assert cursor.fetchone()[0] == {"b": "2"}


# -- the threaded server ---------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadPoolServer(WSGIServer):
    """A WSGI server with a fixed pool of worker threads, like a production thread server."""

    def __init__(self, workers: int) -> None:
        super().__init__(("127.0.0.1", 0), _Quiet)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="wsgi")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.executor.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


WORKERS = 6


@pytest.fixture(scope="session")
def wsgi_server(django_project: dict[str, Any]) -> Iterator[tuple[str, int]]:
    from django.core.wsgi import get_wsgi_application

    server = _ThreadPoolServer(WORKERS)
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[0], server.server_address[1]
    finally:
        server.shutdown()
        server.executor.shutdown(wait=True)
        server.server_close()
        thread.join(10)


def _request(address: tuple[str, int], path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("POST" if path.startswith("/add/") else "GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.restart
@pytest.mark.parametrize("alias", ALIASES, indirect=True)
def test_threaded_server_survives_a_restart(
    alias: str, django_project: dict[str, Any], wsgi_server: tuple[str, int]
) -> None:
    clients, per_client, restart_after = 8, 24, 60
    server = django_project[KIND[alias]]
    lock = threading.Lock()
    sent = [0]
    results: dict[str, tuple[int, float]] = {}  # token -> (status, start time)
    restarted = threading.Event()
    restart_done = [float("inf")]

    def client(number: int) -> None:
        for i in range(per_client):
            token = f"c{number}-{i}"
            with lock:
                sent[0] += 1
                restart_now = sent[0] == restart_after
            if restart_now:
                server.restart("fast")
                restart_done[0] = time.monotonic()
                restarted.set()
            started = time.monotonic()
            status, _ = _request(wsgi_server, f"/add/{alias}/{token}")
            with lock:
                results[token] = (status, started)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert restarted.is_set()
    assert len(results) == clients * per_client

    succeeded = {token for token, (status, _) in results.items() if status == 200}
    failed = {token for token, (status, _) in results.items() if status != 200}
    assert {status for status, _ in results.values()} <= {200, 500}
    # Every request that started after the server was back succeeded: no stale
    # connection was handed to Django.
    late_failures = {t for t in failed if results[t][1] > restart_done[0]}
    assert late_failures == set()
    # Failures are the requests in flight at the restart or sent while the
    # server was down; many succeeded after it.
    assert sum(1 for t in succeeded if results[t][1] > restart_done[0]) >= clients

    rows = dict(_items(alias).values_list("token", "label"))
    assert succeeded <= rows.keys() <= results.keys()
    # A failed request's transaction was rolled back whole (a commit in flight
    # at the restart may have landed: at most one per worker thread).
    assert len(rows.keys() - succeeded) <= WORKERS
    assert set(rows.values()) == {"done"}  # never half a transaction
    status, body = _request(wsgi_server, f"/count/{alias}")
    assert (status, int(body)) == (200, len(rows))

    from django.db import connections

    from tether.frameworks.django import pools

    connections[alias].close()  # this thread's (it counted the rows above)
    generator = pools()[alias]
    if alias in ("default", "my_pooled"):
        # Every checkout was given back (Django gives it back at request_finished,
        # which the server thread sends just after the response went out).
        deadline = time.monotonic() + 5
        while generator.stats()["in_use"] and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        assert generator.stats()["in_use"] == 0  # type: ignore[union-attr]
    else:
        # One connection per server thread (plus this test's own), at most.
        assert generator.open_connections <= WORKERS + 1  # type: ignore[union-attr]


def test_no_round_trip_per_request(
    django_project: dict[str, Any], wsgi_server: tuple[str, int]
) -> None:
    """A request that runs one query sends one command: no ping, no autocommit, no rollback."""
    assert _request(wsgi_server, "/count/my_counted") == (200, "0")  # opens the connection
    COMMANDS.clear()
    for _ in range(10):
        assert _request(wsgi_server, "/count/my_counted") == (200, "0")
    assert len(COMMANDS) == 10, COMMANDS
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in COMMANDS)
