"""Issue 11 for PersistentDB: checkout_timeout bounds the first connect; a refused login."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.harness.deadlines import within
from tether.harness.toxiproxy import Proxy, ToxiproxyServer, provide_toxiproxy, proxied_target
from tether.harness.toxiproxy import proxy_for as make_proxy
from tether.persistent import PersistentDB, PersistentPg
from tether.simple_pool.errors import AuthenticationError, ConfigurationError, PoolTimeout
from tether.steady import PingStatementError


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    server = provide_toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
@pytest.mark.parametrize("timeout", [2.0, 0.5])
def test_the_first_connect_is_bounded_by_checkout_timeout_under_a_blackhole(
    dbapi_target: Any, toxiproxy: ToxiproxyServer, timeout: float
) -> None:
    proxy: Proxy = make_proxy(
        toxiproxy.client, dbapi_target.server, f"h2p-{dbapi_target.name}-{os.getpid()}-{timeout}"
    )
    target = proxied_target(dbapi_target, proxy)
    persist = PersistentDB(target.creator, checkout_timeout=timeout, **target.kwargs)
    toxic = proxy.add_toxic("timeout", {"timeout": 0})
    lift = threading.Timer(8, proxy.remove_toxic, (toxic.name,))  # never hang the test
    lift.start()
    try:
        start = time.monotonic()
        # PoolTimeout at the deadline, or the driver's own connect timeout just before it
        with pytest.raises((PoolTimeout, target.module.Error)):
            persist.connection()
        elapsed = time.monotonic() - start
    finally:
        lift.cancel()
        with contextlib.suppress(Exception):
            proxy.delete()
        persist.close()
    assert elapsed <= within(timeout), f"took {elapsed:.2f} s with checkout_timeout={timeout}"


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
def test_a_wrong_password_raises_an_authentication_error(dbapi_target: Any) -> None:
    kwargs = dict(dbapi_target.kwargs)
    key = next(k for k, v in kwargs.items() if v == dbapi_target.server.password)
    kwargs[key] = "not-the-password-h2"
    persist = PersistentDB(dbapi_target.creator, **kwargs)
    try:
        with pytest.raises(AuthenticationError) as info:
            persist.connection()
    finally:
        persist.close()
    assert dbapi_target.server.user in str(info.value)
    assert "not-the-password-h2" not in str(info.value)
    assert isinstance(info.value.__cause__, dbapi_target.module.Error)
    assert persist.open_connections == 0


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_connect_arguments_that_cannot_work_raise_at_once_without_the_password(
    dbapi_target: Any,
) -> None:
    """libpq echoes a URL's bad token, here the password (fourth outside attack, M3)."""
    server = dbapi_target.server
    url = f"postgresql://{server.user}:pw%ZZ-m3@{server.host}:{server.port}/{server.database}"
    key = "conninfo" if dbapi_target.name == "psycopg" else "database"
    persist = PersistentDB(dbapi_target.creator, checkout_timeout=5, **{key: url})
    start = time.monotonic()
    try:
        with pytest.raises(ConfigurationError) as info:
            persist.connection()
    finally:
        persist.close()
    assert time.monotonic() - start < 1.5
    assert "invalid percent-encoded token" in str(info.value)
    assert "pw%ZZ" not in str(info.value) and info.value.__cause__ is None
    assert persist.open_connections == 0


# -- the ping and the rollback at connection(), under a blackhole -------------------------------


@contextlib.contextmanager
def _proxied(toxiproxy: ToxiproxyServer, target: Any, label: str) -> Iterator[tuple[Proxy, Any]]:
    proxy: Proxy = make_proxy(
        toxiproxy.client, target.server, f"h11-{label}-{target.name}-{os.getpid()}"
    )
    try:
        yield proxy, proxied_target(target, proxy)
    finally:
        with contextlib.suppress(Exception):
            proxy.delete()


@contextlib.contextmanager
def _blackhole(proxy: Proxy) -> Iterator[None]:
    toxic = proxy.add_toxic("timeout", {"timeout": 0})
    lift = threading.Timer(8, proxy.remove_toxic, (toxic.name,))  # never hang the test
    lift.start()
    try:
        yield
    finally:
        lift.cancel()
        with contextlib.suppress(Exception):
            proxy.remove_toxic(toxic.name)


def _one(db: Any) -> Any:
    cursor = db.cursor()
    try:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]
    finally:
        cursor.close()


@pytest.mark.parametrize("how", ["close()", "with block raising"])
@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
def test_close_with_a_transaction_open_is_bounded_by_the_deadline_under_a_blackhole(
    dbapi_target: Any, toxiproxy: ToxiproxyServer, how: str
) -> None:
    """``db.close()`` ends the request with a rollback: behind a stopped server it hung
    (fourth outside attack, M2). Out of time, that session is closed; the next request
    gets a new one, and nothing of the rolled-back transaction was committed."""
    with _proxied(toxiproxy, dbapi_target, "close") as (proxy, target):
        persist = PersistentDB(target.creator, checkout_timeout=1, **target.kwargs)
        try:
            table = dbapi_target.unique_table("m2p")
            db = persist.connection()
            cursor = db.cursor()
            cursor.execute(f"CREATE TABLE {table} (x int)")
            db.commit()
            cursor.execute(f"INSERT INTO {table} VALUES (1)")
            cursor.close()
            with _blackhole(proxy):
                start = time.monotonic()
                if how == "close()":
                    db.close()
                else:  # sixth outside attack: the with block's rollback hung
                    with pytest.raises(ZeroDivisionError), db:
                        1 / 0  # noqa: B018
                elapsed = time.monotonic() - start
            assert elapsed <= within(1), f"close() took {elapsed:.2f} s, checkout_timeout=1"
            db = persist.connection()
            cursor = db.cursor()
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone()[0] == 0
            cursor.close()
            db.close()
        finally:
            persist.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_a_backend_killed_while_idle_is_reopened_by_the_connection_ping(
    dbapi_target: Any,
) -> None:
    persist = PersistentDB(dbapi_target.creator, ping_after=0, **dbapi_target.kwargs)
    try:
        db = persist.connection()
        cursor = db.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        cursor.close()
        db.rollback()
        db.close()
        del db, cursor
        assert dbapi_target.kill_backend(pid)
        # The ping finds the session gone (its FATAL answer) and reopens,
        # whatever state the failed ping left libpq in.
        assert _one(persist.connection()) == 1
    finally:
        persist.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_a_ping_statement_the_server_rejects_is_raised_not_reopened_for(
    dbapi_target: Any,
) -> None:
    """Taken for a dead session, it reopened the thread's connection at every request.
    With ``ping_after=0`` a thread's first call pings too, as a pool's checkout served a
    new connection does (an outside attack found the first call unpinged: it returned)."""
    opened: list[int] = []

    def connect(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return dbapi_target.module.connect(*args, **kwargs)

    persist = PersistentDB(
        connect, ping="SELECT * FROM no_such_table", ping_after=0, **dbapi_target.kwargs
    )
    try:
        for _ in range(4):  # the first call too
            with pytest.raises(PingStatementError, match="no_such_table"):
                persist.connection()
        assert len(opened) == 1, f"{len(opened)} connections opened: taken for dead"
    finally:
        persist.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg"], indirect=True)
def test_a_session_killed_right_after_its_connect_is_reopened_not_a_configuration_error(
    dbapi_target: Any,
) -> None:
    """``ping_after=0`` pings a thread's first call: a session the server ended right
    after the connect fails that ping once, and is reopened (an outside attack found the
    pool's equivalent raising PingStatementError, a configuration error)."""
    admin = dbapi_target.module.connect(**dbapi_target.kwargs, autocommit=True)
    killed: list[int] = []

    def kill_the_first(raw: Any) -> None:
        if not killed:
            killed.append(raw.info.backend_pid)
            admin.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
            time.sleep(0.05)

    persist = PersistentDB(
        dbapi_target.module.connect, ping_after=0, on_connect=kill_the_first,
        **dbapi_target.kwargs,
    )  # fmt: skip
    try:
        db = persist.connection()
        assert killed and _one(db) == 1
        cur = db.cursor()
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] != killed[0]
    finally:
        persist.close()
        admin.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_a_ping_out_of_time_closes_the_connection_and_raises_pool_timeout(
    dbapi_target: Any, toxiproxy: ToxiproxyServer
) -> None:
    with _proxied(toxiproxy, dbapi_target, "ping") as (proxy, target):
        persist = PersistentDB(target.creator, checkout_timeout=0.5, ping_after=0, **target.kwargs)
        try:
            db = persist.connection()
            assert _one(db) == 1
            db.commit()
            raw = db._raw
            del db
            with _blackhole(proxy):
                start = time.monotonic()
                with pytest.raises(PoolTimeout):
                    persist.connection()
                elapsed = time.monotonic() - start
            assert elapsed <= within(0.5), f"took {elapsed:.2f} s"
            # The timed-out connection (maybe half-read) is closed, never handed out again.
            assert persist._adapter.is_closed(raw)
            db = persist.connection()
            assert db._raw is not raw
            assert _one(db) == 1
        finally:
            persist.close()


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
@pytest.mark.parametrize("timeout", [0.3, 1.0])
def test_persistent_pg_ping_under_a_blackhole_raises_pool_timeout_at_the_deadline(
    server_target: Any, toxiproxy: ToxiproxyServer, timeout: float
) -> None:
    with _proxied(toxiproxy, server_target, f"pg{timeout}") as (proxy, target):
        # ping=1 is PersistentPg's default (it never pinged: fifth outside attack)
        persist = PersistentPg(checkout_timeout=timeout, ping_after=0, **target.kwargs)
        try:
            con = persist.connection()
            con.query("select 1")
            raw = con._raw
            del con
            with _blackhole(proxy):
                start = time.monotonic()
                with pytest.raises(PoolTimeout):
                    persist.connection()
                elapsed = time.monotonic() - start
            assert elapsed <= within(timeout), f"took {elapsed:.2f} s with {timeout}"
            con = persist.connection()
            assert con._raw is not raw
            assert con.query("select 1").getresult() == [(1,)]
        finally:
            persist.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_rolling_back_a_forgotten_transaction_is_bounded_by_checkout_timeout(
    dbapi_target: Any, toxiproxy: ToxiproxyServer
) -> None:
    with _proxied(toxiproxy, dbapi_target, "rollback") as (proxy, target):
        persist = PersistentDB(target.creator, checkout_timeout=0.5, **target.kwargs)
        try:
            db = persist.connection()
            assert _one(db) == 1  # leaves a transaction open
            raw = db._raw
            del db
            with _blackhole(proxy):
                start = time.monotonic()
                with pytest.raises(PoolTimeout):
                    persist.connection()
                elapsed = time.monotonic() - start
            assert elapsed <= within(0.5), f"took {elapsed:.2f} s"
            # its rollback never completed: closed, never handed out
            assert persist._adapter.is_closed(raw)
            db = persist.connection()
            assert db._raw is not raw
            assert not db.transaction_open()
            assert _one(db) == 1
        finally:
            persist.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
def test_after_a_leftover_rollback_the_next_statements_run_in_a_transaction_again(
    dbapi_target: Any,
) -> None:
    persist = PersistentDB(dbapi_target.creator, **dbapi_target.kwargs)
    try:
        db = persist.connection()
        assert _one(db) == 1  # leaves a transaction open
        raw = db._raw
        del db
        db = persist.connection()  # rolled back, on the same session
        assert db._raw is raw
        assert persist._adapter.in_transaction(raw) is False
        assert _one(db) == 1
        # pgdb must send BEGIN again: its own flag was cleared with the rollback
        assert persist._adapter.in_transaction(raw) is True
        db.rollback()
    finally:
        persist.close()


@pytest.mark.parametrize("server_target", ["pg"], indirect=True)
def test_persistent_pg_rollback_of_a_forgotten_begin_is_bounded_by_checkout_timeout(
    server_target: Any, toxiproxy: ToxiproxyServer
) -> None:
    with _proxied(toxiproxy, server_target, "pgrollback") as (proxy, target):
        persist = PersistentPg(checkout_timeout=0.5, **target.kwargs)
        try:
            con = persist.connection()
            con.begin()
            con.query("select 1")
            raw = con._raw
            del con
            with _blackhole(proxy):
                start = time.monotonic()
                with pytest.raises(PoolTimeout):
                    persist.connection()
                elapsed = time.monotonic() - start
            assert elapsed <= within(0.5), f"took {elapsed:.2f} s"
            assert persist._adapter.is_closed(raw)
            con = persist.connection()
            assert con._raw is not raw
            assert not con.transaction_open()
            assert con.query("select 1").getresult() == [(1,)]
        finally:
            persist.close()
