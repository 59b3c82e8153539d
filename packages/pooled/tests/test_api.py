"""The public API without a server: DBUtils compatibility, arguments, proxies, stats, events."""

from __future__ import annotations

import gc
import logging
import sqlite3
from typing import Any

import pytest

import tether.pooled
from tether.pooled import (
    CheckoutTimeout,
    DatabaseUnreachable,
    InvalidConnectionError,
    NotSupportedError,
    PoolClosed,
    PooledDB,
    PooledDBError,
    PooledDedicatedDBConnection,
    PooledPgError,
    PooledSharedDBConnection,
    PoolEvent,
    PoolExhausted,
    PoolTimeout,
    TooManyConnectionsError,
    UnreachableTimeout,
)
from tether.pooled import pg as pooled_pg
from tether.simple_pool.errors import PoolError
from tether.steady import InvalidConnectionError as SteadyInvalidConnectionError
from tether.steady import SteadyDBConnection

from .conftest import FakeDriver


def test_version_and_exports() -> None:
    assert isinstance(tether.pooled.__version__, str) and tether.pooled.__version__
    assert PooledDB.version == tether.pooled.__version__
    for name in tether.pooled.__all__:
        assert hasattr(tether.pooled, name), name


def test_error_tree() -> None:
    assert PooledDBError is PoolError is PooledPgError
    assert pooled_pg.TooManyConnectionsError is TooManyConnectionsError
    assert issubclass(InvalidConnectionError, PooledDBError)
    assert issubclass(InvalidConnectionError, SteadyInvalidConnectionError)
    assert issubclass(PoolExhausted, TooManyConnectionsError)
    assert issubclass(PoolExhausted, CheckoutTimeout)
    assert issubclass(UnreachableTimeout, DatabaseUnreachable)
    assert issubclass(CheckoutTimeout, PoolTimeout)
    assert issubclass(CheckoutTimeout, TimeoutError)
    assert not issubclass(UnreachableTimeout, TooManyConnectionsError)


def test_dbutils_positional_signature(fake: FakeDriver, fake_pool: Any) -> None:
    # creator, mincached, maxcached, maxshared, maxconnections, blocking, maxusage,
    # setsession, reset, failures, ping, isfatal, then the creator's arguments
    pool = fake_pool(2, 3, 0, 5, False, 10, ["SET a = 1"], True, None, 1, None, host="h")
    assert pool.stats()["idle"] == 2
    assert fake.opened == 2
    assert fake.connections[0].kwargs == {"host": "h"}
    assert fake.connections[0].session == {"a": "1"}
    db = pool.connection()
    assert isinstance(db, PooledDedicatedDBConnection)
    db.close()


def test_connection_proxies_reach_the_driver(fake_pool: Any) -> None:
    pool = fake_pool()
    db = pool.connection()
    assert isinstance(db._con, SteadyDBConnection)
    assert db.fake_feature().startswith("feature of ")  # driver attribute, through two proxies
    assert db.threadsafety() == 2  # a steady connection method
    cursor = db.cursor()
    cursor.execute("SELECT 1")
    assert cursor.fetchall() == [(1,)]
    db.close()
    db.close()  # idempotent
    with pytest.raises(InvalidConnectionError, match="closed"):
        db.cursor()
    with pytest.raises(InvalidConnectionError):
        db.fake_feature()


def test_with_block_commits_on_success_and_rolls_back_on_error(fake: FakeDriver) -> None:
    """One `with` rule for every layer (issue 12); DBUtils' PooledDB rolled back either way."""
    pool = PooledDB(fake)
    with pool.connection() as db:
        cursor = db.cursor()
        cursor.execute("INSERT x")
        raw = db._con._raw
        assert raw.in_transaction
    assert pool.stats()["in_use"] == 0
    assert not raw.in_transaction and raw.rollbacks == 0  # committed by the `with`
    try:
        with pool.connection() as db:
            db.cursor().execute("INSERT y")
            raise KeyError("the block failed")
    except KeyError:
        pass
    assert raw.rollbacks == 1 and not raw.in_transaction
    pool.close()


def test_dedicated_connection_and_steady_connection(fake_pool: Any) -> None:
    pool = fake_pool(maxshared=5)
    db = pool.dedicated_connection()
    assert isinstance(db, PooledDedicatedDBConnection)
    db.close()
    steady = pool.steady_connection()
    assert isinstance(steady, SteadyDBConnection)
    steady.close()
    assert steady._raw is None  # a steady connection outside the pool really closes


def test_not_thread_safe_module_is_refused() -> None:
    with pytest.raises(NotSupportedError):
        PooledDB(FakeDriver(threadsafety=0))


def test_sharing_needs_threadsafety_2() -> None:
    pool = PooledDB(FakeDriver(threadsafety=1), maxshared=3)
    db1, db2 = pool.connection(), pool.connection()
    assert not isinstance(db1, PooledSharedDBConnection)
    assert db1._con is not db2._con
    db1.close()
    db2.close()
    pool.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"mincached": "1"}, TypeError, "mincached"),
        ({"maxcached": -1}, ValueError, "maxcached"),
        ({"maxshared": 1.5}, TypeError, "maxshared"),
        ({"maxconnections": -2}, ValueError, "maxconnections"),
        ({"maxusage": "x"}, TypeError, "maxusage"),
        ({"setsession": "SET a = 1"}, TypeError, "setsession"),
        ({"reset": "yes"}, TypeError, "reset"),
        ({"ping": 9}, ValueError, "ping"),
        ({"ping": [1]}, TypeError, "ping"),
        ({"isfatal": 3}, TypeError, "isfatal"),
        ({"checkout_timeout": 0}, ValueError, "checkout_timeout"),
        ({"checkout_timeout": None}, TypeError, "checkout_timeout"),
        ({"checkout_timeout": float("inf")}, ValueError, "checkout_timeout"),
        ({"max_lifetime": -1}, ValueError, "max_lifetime"),
        ({"max_idle": "1"}, TypeError, "max_idle"),
        ({"max_waiting": -1}, ValueError, "max_waiting"),
        ({"reset_session": 1}, TypeError, "reset_session"),
        ({"leak_threshold": 0}, ValueError, "leak_threshold"),
        ({"validate_interval": True}, TypeError, "validate_interval"),
        ({"ping_after": -1}, ValueError, "ping_after"),
        ({"ping_after": "1"}, TypeError, "ping_after"),
        ({"reconnect_backoff": 1}, TypeError, "reconnect_backoff"),
        ({"reconnect_backoff": (2, 1)}, ValueError, "reconnect_backoff"),
        ({"on_event": 1}, TypeError, "on_event"),
        ({"on_connect": 1}, TypeError, "on_connect"),
        ({"driver": "nope"}, ValueError, "driver"),
        ({"logger": "x"}, TypeError, "logger"),
        ({"name": 1}, TypeError, "name"),
    ],
)
def test_bad_arguments_name_the_parameter(
    fake: FakeDriver, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        PooledDB(fake, **kwargs)
    assert fake.opened == 0


def test_dbutils_none_means_zero(fake_pool: Any) -> None:
    pool = fake_pool(None, None, None, None)
    db = pool.connection()
    db.close()


def test_limits_are_adjusted_as_in_dbutils(fake_pool: Any) -> None:
    pool = fake_pool(mincached=3, maxcached=1, maxconnections=2)
    assert pool._maxcached == 3  # maxcached >= mincached
    assert pool._maxconnections == 3  # maxconnections >= maxcached


def test_nonblocking_limit_raises_too_many_connections(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=2, name="limited")
    a, b = pool.connection(), pool.connection()
    with pytest.raises(TooManyConnectionsError, match=r"limited.*maxconnections \(2\)"):
        pool.connection()
    a.close()
    c = pool.connection()
    b.close()
    c.close()


def test_maxcached_closes_the_surplus(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(maxcached=2)
    dbs = [pool.connection() for _ in range(4)]
    for db in dbs:
        db.close()
    stats = pool.stats()
    assert stats["idle"] == 2 and stats["size"] == 2 and stats["closed"] == 2
    assert fake.closed == 2


def test_lifo_reuse(fake_pool: Any) -> None:
    pool = fake_pool()
    a, b = pool.connection(), pool.connection()
    raw_a, raw_b = a._con._raw, b._con._raw
    a.close()
    b.close()
    c = pool.connection()
    assert c._con._raw is raw_b  # the most recently returned first
    d = pool.connection()
    assert d._con._raw is raw_a
    c.close()
    d.close()


def test_discard_closes_the_connection_and_frees_its_slot(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, name="one")
    db = pool.dedicated_connection()
    raw = db._con._raw
    db.discard()
    assert fake.closed == 1
    with pytest.raises(InvalidConnectionError):
        db.cursor()
    db.discard()  # idempotent
    db.close()
    stats = pool.stats()
    assert stats["size"] == 0 and stats["in_use"] == 0 and stats["closed"] == 1
    assert stats["checkouts"] == stats["checkins"] == 1
    again = pool.dedicated_connection()  # the slot is free: no TooManyConnectionsError
    assert again._con._raw is not raw
    again.close()


def test_a_share_cannot_be_discarded(fake_pool: Any) -> None:
    pool = fake_pool(maxshared=2)
    share = pool.connection()
    assert isinstance(share, PooledSharedDBConnection)
    with pytest.raises(NotSupportedError, match="discard"):
        share.discard()
    share.close()


def test_close_idle_closes_only_idle_connections(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool()
    held = pool.connection()
    for db in [pool.connection(), pool.connection()]:
        db.close()
    assert pool.close_idle() == 2
    assert fake.closed == 2
    stats = pool.stats()
    assert stats["idle"] == 0 and stats["in_use"] == 1 and stats["size"] == 1
    held.cursor().execute("SELECT 1")  # the one in use still works
    held.close()
    assert pool.stats()["idle"] == 1  # and is kept: the pool stays open
    assert pool.close_idle() == 1 and pool.close_idle() == 0


def test_closed_pool(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 2)
    db = pool.connection()
    pool.close()
    assert fake.closed == 1  # the idle one at once
    with pytest.raises(PoolClosed):
        pool.connection()
    db.cursor().execute("SELECT 1")  # the one in use still works
    db.close()
    assert fake.closed == 2  # and is closed when it comes back
    pool.close()  # twice is harmless
    assert pool.stats()["size"] == 0


def test_stats_and_events(fake: FakeDriver) -> None:
    events: list[PoolEvent] = []
    pool = PooledDB(fake, maxcached=1, on_event=events.append, name="ev")
    a, b = pool.connection(), pool.connection()
    a.close()
    b.close()  # maxcached=1: closed
    kinds = [event.kind for event in events]
    assert kinds.count("connect") == 2
    assert kinds.count("checkout") == 2
    assert kinds.count("checkin") == 2
    assert ("close", "maxcached") in [(e.kind, e.reason) for e in events]
    assert all(event.pool == "ev" for event in events)
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"] == 2
    assert stats["opened"] - stats["closed"] == stats["size"] == 1
    assert isinstance(stats, dict)
    pool.close()


def test_event_hook_errors_are_logged(fake: FakeDriver, caplog: pytest.LogCaptureFixture) -> None:
    def hook(event: PoolEvent) -> None:
        raise RuntimeError("hook broke")

    pool = PooledDB(fake, on_event=hook)
    with caplog.at_level(logging.ERROR, logger="tether.pooled"):
        pool.connection().close()
    assert "on_event hook" in caplog.text
    pool.close()


def test_custom_logger_and_name(fake: FakeDriver, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("my.app.pool")
    pool = PooledDB(fake, maxconnections=1, blocking=True, checkout_timeout=0.05, logger=logger)
    db = pool.connection()
    with caplog.at_level(logging.WARNING, logger="my.app.pool"):
        db.cursor().execute("INSERT x")
        db.close()  # with its transaction open: rolled back, and a warning for the program
    assert any(record.name == "my.app.pool" for record in caplog.records)
    pool.close()


def test_cursor_keeps_its_checkout_alive(fake_pool: Any) -> None:
    pool = fake_pool()
    cursor = pool.connection().cursor()  # DBUtils warns against this; tether makes it safe
    gc.collect()
    assert pool.stats()["in_use"] == 1
    cursor.execute("SELECT 1")
    del cursor
    gc.collect()
    assert pool.stats()["in_use"] == 0


def test_cache_and_foreign_connections(fake_pool: Any) -> None:
    pool = fake_pool()
    db = pool.connection()
    pool.cache(db)  # a proxy: closed
    assert pool.stats()["in_use"] == 0
    with pytest.raises(ValueError, match="cache"):
        pool.cache(object())


def test_sqlite3_pool_basics(tmp_path: Any) -> None:
    pool = PooledDB(sqlite3, 1, database=str(tmp_path / "db.sqlite"), check_same_thread=False)
    with pool.connection() as db:
        cursor = db.cursor()
        cursor.execute("CREATE TABLE t (x INTEGER)")
        cursor.execute("INSERT INTO t VALUES (1)")
        db.commit()
        assert db.in_transaction is False  # a sqlite3 attribute, through the proxies
    db = pool.connection()
    cursor = db.cursor()
    cursor.execute("INSERT INTO t VALUES (2)")
    db.close()  # not committed (and no `with`, which would commit): rolled back on return
    with pool.connection() as db:
        cursor = db.cursor()
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (1,)
    stats = pool.stats()
    assert stats["opened"] == 1 and stats["checkouts"] == 3 == stats["checkins"]
    pool.close()


def test_repr(fake_pool: Any) -> None:
    pool = fake_pool(name="r")
    db = pool.connection()
    assert "'r'" in repr(pool)
    assert "pool r" in repr(db)
    db.close()
    assert "closed" in repr(db)
