"""Issue 11: deadlines under a blackhole, recovery, refused logins, failed constructors, locks.

Real servers (the harness's), with toxiproxy between the pool and the
database for the faults; the lock test uses the fake driver (pure logic).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.harness.deadlines import within
from tether.harness.toxiproxy import Proxy, ToxiproxyServer, provide_toxiproxy, proxied_target
from tether.harness.toxiproxy import proxy_for as make_proxy
from tether.pooled import PooledDB, PooledPg, UnreachableTimeout
from tether.simple_pool.errors import AuthenticationError, ConfigurationError

from .conftest import FakeDriver, execute, make_pool

_names = itertools.count(1)


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    server = provide_toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxied(server_target: Any, toxiproxy: ToxiproxyServer) -> Iterator[tuple[Any, Proxy]]:
    """The target, reached through a proxy of its own (reset and deleted afterwards)."""
    name = f"h2-{server_target.name}-{os.getpid()}-{next(_names)}"
    proxy = make_proxy(toxiproxy.client, server_target.server, name)
    try:
        yield proxied_target(server_target, proxy), proxy
    finally:
        with contextlib.suppress(Exception):
            proxy.reset()
        with contextlib.suppress(Exception):
            proxy.delete()


@contextlib.contextmanager
def _blackhole(proxy: Proxy, lift_after: float = 8.0) -> Iterator[None]:
    """Every byte from the database dropped, no connection closed (toxiproxy's timeout 0).

    Lifted after ``lift_after`` seconds at the latest, so a wait the deadline
    does not bound makes the test fail instead of hanging it.
    """
    toxic = proxy.add_toxic("timeout", {"timeout": 0})
    timer = threading.Timer(lift_after, proxy.remove_toxic, (toxic.name,))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        proxy.remove_toxic(toxic.name)


# -- 1. checkout_timeout bounds every wait ------------------------------------------------------


def test_the_checkout_ping_is_bounded_by_the_deadline_under_a_blackhole(
    proxied: tuple[Any, Proxy], pools: list[Any]
) -> None:
    target, proxy = proxied
    pool = make_pool(
        target, mincached=1, maxconnections=1, blocking=True, checkout_timeout=2, ping_after=0
    )
    pools.append(pool)
    with pool.connection() as db:
        assert execute(target, db, "SELECT 1") == [(1,)]
    with _blackhole(proxy):
        start = time.monotonic()
        with pytest.raises(UnreachableTimeout):
            pool.connection()
        elapsed = time.monotonic() - start
    assert elapsed <= within(2), f"checkout took {elapsed:.2f} s with checkout_timeout=2"
    assert pool.stats()["discarded"] == 1  # the half-read connection is not reused


def _begin(target: Any, db: Any) -> None:
    if target.name == "pg":
        db.begin()  # classic pg autocommits unless a transaction is begun


@pytest.mark.parametrize("how", ["reset_session", "open transaction", "with block raising"])
def test_a_checkin_is_bounded_by_the_deadline_under_a_blackhole(
    proxied: tuple[Any, Proxy], pools: list[Any], how: str
) -> None:
    """The checkin's round trips wait for the server at most ``checkout_timeout``: with
    ``reset_session`` (DISCARD ALL, COM_RESET_CONNECTION), the rollback of a transaction
    given back open (PyMySQL's was not bounded at all) and the ``with`` block's rollback
    when it raises all hung behind a stopped server (fourth outside attack, M2). The
    connection that ran out of time is not reused, and the pool serves again afterwards."""
    target, proxy = proxied
    table = target.unique_table("m2")
    pool = make_pool(
        target,
        maxconnections=1,
        blocking=True,
        checkout_timeout=1,
        reset_session=how == "reset_session",
    )
    pools.append(pool)
    with pool.connection() as db:
        execute(target, db, f"CREATE TABLE {table} (x int)")
    db = pool.connection()
    if how == "reset_session":
        execute(target, db, "SELECT 1")
        db.commit()  # idle: the reset itself meets the blackhole, not a rollback before it
    else:
        _begin(target, db)
        execute(target, db, f"INSERT INTO {table} VALUES (1)")
    with _blackhole(proxy):
        start = time.monotonic()
        if how == "with block raising":
            with pytest.raises(ZeroDivisionError), db:
                1 / 0  # noqa: B018
        else:
            db.close()
        elapsed = time.monotonic() - start
    assert elapsed <= within(1), f"the checkin took {elapsed:.2f} s with checkout_timeout=1"
    with pool.connection() as db:  # a new session: the half-read one was closed
        assert execute(target, db, f"SELECT count(*) FROM {table}") == [(0,)]
    assert pool.stats()["opened"] == 2  # the half-read session was closed, a new one opened


@pytest.mark.parametrize("server_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
def test_a_non_blocking_connect_is_bounded_below_the_drivers_granularity(
    proxied: tuple[Any, Proxy], pools: list[Any]
) -> None:
    target, proxy = proxied
    pool = make_pool(target, checkout_timeout=0.5)
    pools.append(pool)
    with _blackhole(proxy):
        start = time.monotonic()
        with pytest.raises(UnreachableTimeout):
            pool.connection()
        elapsed = time.monotonic() - start
    assert elapsed <= within(0.5), f"took {elapsed:.2f} s with checkout_timeout=0.5"
    # a connect that finishes late is not lost, nor counted as a checkout
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"] == 0


# -- 2. recovery does not wait for the backoff ---------------------------------------------------


class _Attempts(logging.Handler):
    """Collects the backoff delay of every failed reconnect attempt."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.delays: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "reconnect attempt" in record.msg and isinstance(record.args, tuple):
            self.delays.append(float(record.args[3]))


@pytest.mark.parametrize("server_target", ["psycopg", "pymysql"], indirect=True)
def test_a_waiting_checkout_is_served_within_a_second_of_the_database_coming_back(
    proxied: tuple[Any, Proxy], pools: list[Any]
) -> None:
    target, proxy = proxied
    logger = logging.getLogger(f"tether.test.recovery.{next(_names)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    attempts = _Attempts()
    logger.addHandler(attempts)
    pool = make_pool(target, blocking=True, checkout_timeout=2, ping_after=0, logger=logger)
    pools.append(pool)
    with pool.connection() as db:
        assert execute(target, db, "SELECT 1") == [(1,)]
    served: list[float] = []
    stop = threading.Event()

    def checkouts() -> None:  # a client that keeps asking while the database is away
        while not stop.is_set():
            try:
                with pool.connection() as db:
                    execute(target, db, "SELECT 1")
            except Exception:  # UnreachableTimeout, or the driver's error of a dead session
                continue
            served.append(time.monotonic())
            return

    proxy.disable()  # every session cut, every new connect refused
    client = threading.Thread(target=checkouts)
    client.start()
    try:
        deadline = time.monotonic() + 15
        # Until the backoff has grown past 1.5 s: the next attempt it schedules is far off.
        while not (attempts.delays and attempts.delays[-1] >= 1.5):
            assert time.monotonic() < deadline, attempts.delays
            time.sleep(0.01)
        assert not served
        proxy.enable()
        back = time.monotonic()
        client.join(5)
    finally:
        stop.set()
        proxy.enable()
        client.join(5)
    assert served, "no checkout was served after the database came back"
    assert served[0] - back <= 1.0, f"served {served[0] - back:.2f} s after the database was back"


# -- 3. a refused login is a configuration error ---------------------------------------------------


def _wrong_password(target: Any) -> dict[str, Any]:
    kwargs = dict(target.kwargs)
    key = next(k for k, v in kwargs.items() if v == target.server.password)
    kwargs[key] = "not-the-password-h2"
    return kwargs


def _pool(target: Any, kwargs: dict[str, Any], **options: Any) -> Any:
    from tether.pooled import PooledPg

    if target.name == "pg":
        return PooledPg(**options, **kwargs)
    return PooledDB(target.creator, **options, **kwargs)


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(name) and t.is_alive()]


def test_a_wrong_password_is_an_authentication_error_not_an_outage(
    server_target: Any, pools: list[Any]
) -> None:
    target = server_target
    kwargs = _wrong_password(target)
    name = f"auth-{target.name}-{next(_names)}"
    with pytest.raises(AuthenticationError) as info:
        _pool(target, kwargs, mincached=1, name=name)
    message = str(info.value)
    assert target.server.user in message and "not-the-password-h2" not in message
    assert isinstance(info.value.__cause__, target.module.Error)
    assert not _pool_threads(name)  # nothing reconnects for a pool that was never made

    name = f"auth2-{target.name}-{next(_names)}"
    pool = _pool(target, kwargs, blocking=True, checkout_timeout=5, name=name)
    pools.append(pool)
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        pool.connection()  # at once, not after checkout_timeout
    assert time.monotonic() - start < 1.5
    stats = pool.stats()
    assert not stats["unreachable"] and stats["connect_errors"] == 1
    time.sleep(1.2)  # no background retries of a refused login
    assert pool.stats()["connect_errors"] == 1
    pool = _pool(target, kwargs, name=f"nb-{name}")
    pools.append(pool)
    with pytest.raises(AuthenticationError):
        pool.connection()  # non-blocking: the same
    if target.name != "pg":
        # A creator whose driver is not known until it connects (SQLAlchemy's, a lambda):
        # the generic adapter's base error is any Exception, which matched
        # AuthenticationError too (seventh outside attack: an outage, retried).
        connect = target.module.connect
        pool = PooledDB(lambda: connect(**kwargs), blocking=True, checkout_timeout=5)
        pools.append(pool)
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            pool.connection()
        assert time.monotonic() - start < 1.5
        time.sleep(0.5)
        assert not pool.stats()["unreachable"] and pool.stats()["connect_errors"] == 1
        # A partial (Django's creator) carries the arguments: the message names them.
        pool = PooledDB(functools.partial(connect, **kwargs), checkout_timeout=5)
        pools.append(pool)
        with pytest.raises(AuthenticationError) as info:
            pool.connection()
        assert f"user {target.server.user!r}" in str(info.value)
        assert "not-the-password-h2" not in str(info.value)


@pytest.mark.parametrize("server_target", ["psycopg", "pgdb", "pg"], indirect=True)
def test_connect_arguments_that_cannot_work_are_a_configuration_error_without_the_password(
    server_target: Any, pools: list[Any], caplog: Any
) -> None:
    """libpq echoes the bad token of a URL, here the password: it reached the pool's logs
    and ``UnreachableTimeout``, which also called it an outage (fourth outside attack, M3)."""
    target = server_target
    server = target.server
    secret = "s3cr%ZZet-m3"
    url = f"postgresql://{server.user}:{secret}@{server.host}:{server.port}/{server.database}"
    if target.name == "pg":
        pool = PooledPg(dbname=url, blocking=True, checkout_timeout=5)
    elif target.name == "pgdb":
        pool = PooledDB(target.creator, blocking=True, checkout_timeout=5, database=url)
    else:
        pool = PooledDB(target.creator, blocking=True, checkout_timeout=5, conninfo=url)
    pools.append(pool)
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        pool.connection()  # at once, not after checkout_timeout
    assert time.monotonic() - start < 1.5
    assert not isinstance(info.value, AuthenticationError)
    message = str(info.value)
    assert "invalid percent-encoded token" in message and server.user in message
    assert "s3cr" not in message and info.value.__cause__ is None
    stats = pool.stats()
    assert not stats["unreachable"] and stats["connect_errors"] == 1
    time.sleep(1.2)  # nothing retries it in the background
    assert pool.stats()["connect_errors"] == 1
    assert not [r for r in caplog.records if "s3cr" in r.getMessage()]


@pytest.mark.parametrize("server_target", ["psycopg"], indirect=True)
def test_a_malformed_conninfo_is_a_configuration_error_that_shows_no_part_of_the_password(
    server_target: Any, pools: list[Any], caplog: Any
) -> None:
    """``password=my secret`` unquoted: libpq says ``missing "=" after "secret"``. It was
    taken for an outage, retried in the background, and logged with that part of the
    password every time (fifth outside attack)."""
    server = server_target.server
    conninfo = f"host={server.host} port={server.port} user={server.user} password=my sEcr3t-m5"
    pool = PooledDB(server_target.creator, blocking=True, checkout_timeout=5, conninfo=conninfo)
    pools.append(pool)
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        pool.connection()
    assert time.monotonic() - start < 1.5
    assert 'missing "=" after "***"' in str(info.value)
    assert "sEcr3t" not in str(info.value) and info.value.__cause__ is None
    time.sleep(0.5)
    assert pool.stats()["connect_errors"] == 1 and not pool.stats()["unreachable"]
    assert not [r for r in caplog.records if "sEcr3t" in r.getMessage()]


@pytest.mark.parametrize("server_target", ["psycopg", "pgdb"], indirect=True)
def test_uris_libpq_accepts_and_urllib_does_not_keep_their_errors(
    server_target: Any, pools: list[Any]
) -> None:
    """A password with ``#`` or several hosts: urllib's ``.port`` raised ValueError (quoting
    the password) while tether described the target, which replaced every connect error,
    a refused login and an outage alike (sixth outside attack)."""
    server = server_target.server
    key = "conninfo" if server_target.name == "psycopg" else "database"
    wrong = (
        f"postgresql://{server.user}:Zq7S%23cr%23rest@{server.host}:{server.port}/{server.database}"
    )
    wrong = wrong.replace("%23", "#")  # libpq takes '#' in the user info as it is
    pool = PooledDB(server_target.creator, checkout_timeout=2, **{key: wrong})
    pools.append(pool)
    with pytest.raises(AuthenticationError) as info:
        pool.connection()
    assert "Zq7S" not in str(info.value) and server.user in str(info.value)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    down = f"postgresql://{server.user}:pw@127.0.0.1:{dead},127.0.0.1:{dead}/{server.database}"
    pool = PooledDB(server_target.creator, blocking=True, checkout_timeout=1, **{key: down})
    pools.append(pool)
    with pytest.raises(UnreachableTimeout):
        pool.connection()  # an outage, waited for: not a ValueError at once


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
def test_a_missing_pymysql_ssl_file_is_a_configuration_error_not_an_outage(
    server_target: Any, pools: list[Any]
) -> None:
    """PyMySQL raises the missing CA file's FileNotFoundError before it opens a socket: an
    OSError, which the pool took for an outage and waited out (sixth outside attack)."""
    kwargs = dict(server_target.kwargs, ssl={"ca": "/nonexistent/ca.pem"})
    pool = PooledDB(server_target.creator, blocking=True, checkout_timeout=3, **kwargs)
    pools.append(pool)
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        pool.connection()
    assert time.monotonic() - start < 1.5
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert not pool.stats()["unreachable"]


@pytest.mark.parametrize("server_target", ["pymysql"], indirect=True)
@pytest.mark.parametrize(
    ("bad", "cause", "text"),
    [
        ({"charset": "nope"}, LookupError, "charset 'nope': no character set PyMySQL knows"),
        ({"port": "x"}, ValueError, "port should be of type int"),
    ],
)
def test_a_pymysql_argument_it_refuses_is_a_configuration_error(
    server_target: Any, pools: list[Any], bad: dict[str, Any], cause: type, text: str
) -> None:
    """PyMySQL refuses these in Connection() before any socket: an unknown charset came
    through as "AttributeError: 'NoneType' object has no attribute 'encoding'", which a
    pool took for an outage and retried in the background."""
    kwargs = dict(server_target.kwargs, **bad)
    pool = PooledDB(server_target.creator, blocking=True, checkout_timeout=3, **kwargs)
    pools.append(pool)
    start = time.monotonic()
    with pytest.raises(ConfigurationError, match="retrying cannot help") as info:
        pool.connection()
    assert time.monotonic() - start < 1.5
    assert isinstance(info.value.__cause__, cause) and text in str(info.value)
    assert not pool.stats()["unreachable"]
    password = kwargs.get("password")
    assert not password or password not in str(info.value)


@pytest.mark.parametrize("server_target", ["pgdb", "pg"], indirect=True)
def test_a_pygresql_database_uri_connects_with_the_checkout_deadline(
    server_target: Any, pools: list[Any]
) -> None:
    """pgdb writes unknown keywords into a conninfo after ``dbname=<database>``, where libpq
    no longer reads a URI: the ``connect_timeout`` tether adds made ``database=url`` connect
    to the default local socket instead (found writing the M3 test)."""
    target = server_target
    server = target.server
    url = f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{server.database}"
    if target.name == "pg":
        pool = PooledPg(dbname=url, checkout_timeout=5)
    else:
        pool = PooledDB(target.creator, checkout_timeout=5, database=url)
    pools.append(pool)
    with pool.connection() as db:
        assert execute(target, db, "SELECT current_database(), inet_server_port()") == [
            (server.database, server.port)
        ]


# -- 4. a failed constructor leaves nothing behind ------------------------------------------------


@pytest.mark.parametrize("server_target", ["psycopg"], indirect=True)
def test_a_constructor_that_fails_half_way_closes_what_it_opened(server_target: Any) -> None:
    target = server_target
    server = target.server
    role = f"h2_limited_{os.getpid()}_{next(_names)}"
    server.admin_execute(f"CREATE ROLE {role} LOGIN PASSWORD 'h2-pw' CONNECTION LIMIT 3")
    kwargs = dict(target.kwargs, user=role, password="h2-pw")
    name = f"limited-{next(_names)}"
    gc.disable()  # what is left must be closed by the pool, not found by the collector
    try:
        with pytest.raises(target.module.OperationalError):
            PooledDB(target.creator, mincached=6, name=name, **kwargs)
        time.sleep(0.3)  # the server notices closed sessions at once; give it a moment
        assert target.session_count(user=role) == 0
        assert not _pool_threads(name)
    finally:
        gc.enable()
        gc.collect()
        server.admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        server.admin_execute(f"DROP ROLE {role}")


# -- 5. lock sections are exception-safe -----------------------------------------------------------


class _BadState(Exception):
    pass


def test_an_error_inside_a_lock_section_releases_the_pool_lock(fake: FakeDriver) -> None:
    real_connect = fake.connect

    def connect(**kwargs: Any) -> Any:
        con = real_connect(**kwargs)
        type(con).in_transaction = property(_raise)  # type: ignore[assignment]
        return con

    def _raise(self: Any) -> bool:
        raise _BadState("state unreadable")

    fake.connect = connect  # type: ignore[method-assign]
    pool = PooledDB(fake, maxshared=1)
    try:
        with pytest.raises(_BadState):
            pool.connection()  # raises inside the section that decides to share it
    finally:
        from .conftest import FakeConnection

        with contextlib.suppress(AttributeError):
            del FakeConnection.in_transaction
    got = pool._lock.acquire(timeout=1)
    pool._lock.release()  # ours, or the one the section leaked (so the pool can close)
    pool.close()
    assert got, "the pool lock was left held"
