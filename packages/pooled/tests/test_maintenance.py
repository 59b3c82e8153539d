"""The maintenance thread, lifetimes, leak detection and reset modes (no server needed)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import pytest

from tether.pooled import PooledDB, PoolEvent
from tether.pooled.maintenance import backoff_delay

from .conftest import FakeDriver
from .test_checkout import _wait_for

# -- lifetimes ----------------------------------------------------------------------------------


def test_max_lifetime_retires_idle_and_returned_connections(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 2, max_lifetime=0.1)
    held = pool.connection()
    first = held._con._raw
    _wait_for(lambda: pool.stats()["closed"] >= 1, timeout=3)  # the idle one, in the background
    time.sleep(0.05)
    held.close()  # past its lifetime: closed when it comes back
    assert first.closed
    _wait_for(lambda: pool.stats()["size"] >= 2, timeout=3)  # refilled to mincached
    stats = pool.stats()
    assert stats["opened"] - stats["closed"] == stats["size"]
    assert stats["discarded"] == 0  # retired, not broken
    pool.close()


def test_expired_connection_is_not_handed_out(fake: FakeDriver) -> None:
    pool = PooledDB(fake, max_lifetime=0.05)
    db = pool.connection()
    first = db._con._raw
    db.close()
    time.sleep(0.06)
    db = pool.connection()
    assert db._con._raw is not first and first.closed
    db.close()
    pool.close()


def test_lifetimes_are_jittered(fake: FakeDriver) -> None:
    pool = PooledDB(fake, max_lifetime=100)
    expiries = {pool._expiry(0.0) for _ in range(20)}
    assert len(expiries) > 1 and all(90 <= e <= 100 for e in expiries)
    pool.close()


def test_max_idle_keeps_mincached(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 1, max_idle=0.05)
    dbs = [pool.connection() for _ in range(3)]
    for db in dbs:
        db.close()
    assert pool.stats()["idle"] == 3
    _wait_for(lambda: pool.stats()["idle"] == 1, timeout=3)
    time.sleep(0.1)
    stats = pool.stats()
    assert stats["size"] == 1 and stats["closed"] == 2
    pool.close()


def test_validate_interval_discards_dead_idle_connections(fake: FakeDriver) -> None:
    events: list[PoolEvent] = []
    pool = PooledDB(fake, 2, validate_interval=0.02, on_event=events.append)
    fake.kill_all()
    _wait_for(lambda: pool.stats()["discarded"] >= 2, timeout=3)
    _wait_for(lambda: pool.stats()["size"] == 2, timeout=3)  # replaced
    assert ("discard", "ping failed") in [(e.kind, e.reason) for e in events]
    db = pool.connection()
    assert db._con._raw.alive
    db.close()
    pool.close()


def test_mincached_is_refilled_after_discards(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 2, reset=lambda raw: (_ for _ in ()).throw(RuntimeError("no")))
    pool.connection().close()  # the reset fails: discarded
    assert pool.stats()["discarded"] == 1
    _wait_for(lambda: pool.stats()["size"] == 2, timeout=3)
    pool.close()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = [backoff_delay(attempt, 0.1, 2.0) for attempt in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(1.0 <= delay <= 2.0 for delay in delays[5:])
    assert len({backoff_delay(3, 0.1, 2.0) for _ in range(10)}) > 1


def test_maintenance_thread_ends_with_the_pool(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 1, max_idle=10)
    maintenance = pool._maintenance
    assert maintenance is not None and maintenance.alive()
    pool.close()
    _wait_for(lambda: not maintenance.alive(), timeout=3)


def test_maintenance_never_holds_the_lock_while_connecting(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 1, max_lifetime=0.05)
    fake.connect_delay = 0.3  # refills are slow
    time.sleep(0.1)  # the idle one expired: the maintenance thread is reconnecting
    fake.connect_delay = 0.0
    start = time.monotonic()
    db = pool.connection()
    db.close()
    assert time.monotonic() - start < 0.25
    pool.close()


# -- leaks --------------------------------------------------------------------------------------


def _take_and_hold(pool: PooledDB) -> Any:
    return pool.connection()  # the line the leak report must point at


def test_leak_threshold_logs_the_checkout_stack_once(
    fake: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[PoolEvent] = []
    pool = PooledDB(fake, leak_threshold=0.05, on_event=events.append, name="leaky")
    with caplog.at_level(logging.WARNING, logger="tether.pooled"):
        db = _take_and_hold(pool)
        _wait_for(lambda: pool.stats()["leaks"] == 1, timeout=3)
        time.sleep(0.1)
    reports = [r for r in caplog.records if "checked out for" in r.getMessage()]
    assert len(reports) == 1  # once per checkout
    text = reports[0].getMessage()
    assert "leaky" in text and "leak_threshold=0.05" in text
    assert "_take_and_hold" in text and "test_maintenance.py" in text
    assert "return pool.connection()" in text  # the source line
    assert "tether/pooled/pool.py" not in text  # tether's own frames are left out
    assert any(event.kind == "leak" for event in events)
    db.close()
    pool.close()


def test_garbage_collected_proxy_gives_its_connection_back(
    fake: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = PooledDB(fake, maxconnections=1, leak_threshold=60)
    with caplog.at_level(logging.WARNING, logger="tether.pooled"):
        db = _take_and_hold(pool)
        db.cursor().execute("UPDATE t SET x = 1")
        raw = db._con._raw
        del db
        gc.collect()
    assert pool.stats()["in_use"] == 0 and pool.stats()["leaks"] == 1
    assert raw.rollbacks == 1  # reset like any return
    text = caplog.text
    assert "garbage-collected" in text and "_take_and_hold" in text
    db2 = pool.connection()  # maxconnections=1: it really came back
    db2.close()
    pool.close()


def test_garbage_collected_proxy_without_leak_threshold(
    fake: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    pool = PooledDB(fake)
    with caplog.at_level(logging.WARNING, logger="tether.pooled"):
        pool.connection()  # dropped at once
    assert "garbage-collected" in caplog.text and "set leak_threshold" in caplog.text
    assert pool.stats()["in_use"] == 0
    pool.close()


def test_closed_proxy_collected_later_is_not_a_leak(fake: FakeDriver) -> None:
    pool = PooledDB(fake)
    db = pool.connection()
    db.close()
    other = pool.connection()  # the same connection, taken again
    del db
    gc.collect()
    assert pool.stats()["leaks"] == 0 and pool.stats()["in_use"] == 1
    other.close()
    pool.close()


def test_garbage_collected_shared_proxy(fake: FakeDriver) -> None:
    pool = PooledDB(fake, maxshared=1)
    a, b = pool.connection(), pool.connection()
    assert a._con is b._con
    del a
    gc.collect()
    assert pool.stats()["in_use"] == 1 and pool.stats()["leaks"] == 1
    b.close()
    assert pool.stats()["in_use"] == 0
    pool.close()


def test_collector_running_under_the_pool_lock_defers_the_return(fake: FakeDriver) -> None:
    pool = PooledDB(fake, 0, 0, 0, 1, True, checkout_timeout=2)
    db = pool.connection()
    entry = db._entry
    pool._lock.acquire()  # as if the collector ran inside a locked section
    try:
        entry.ref = None  # what the weakref callback does first
        pool._orphaned(entry)
    finally:
        pool._lock.release()
    db._entry = db._con = None
    # deferred to the maintenance thread (or the next slow checkout), not lost
    _wait_for(lambda: pool.stats()["in_use"] == 0, timeout=3)
    pool.connection().close()
    pool.close()


# -- reset modes --------------------------------------------------------------------------------


def test_reset_false_still_rolls_back_open_transactions(fake: FakeDriver) -> None:
    pool = PooledDB(fake, reset=False)
    db = pool.connection()
    db.cursor().execute("INSERT x")  # no begin(): DBUtils would not roll this back
    raw = db._con._raw
    db.close()
    assert raw.rollbacks == 1 and not raw.in_transaction
    pool.close()


def test_reset_session_runs_on_every_return(fake: FakeDriver) -> None:
    calls: list[Any] = []

    class Adapter(type(PooledDB(fake)._adapter)):  # type: ignore[misc]
        def reset_session(self, conn: Any) -> None:
            calls.append(conn)
            conn.session.clear()

    pool = PooledDB(fake, reset_session=True, driver=Adapter)
    db = pool.connection()
    db.cursor().execute("SET x = 1")
    raw = db._con._raw
    db.close()
    assert calls == [raw] and raw.session == {}
    pool.connection().close()
    assert len(calls) == 2
    pool.close()


def test_reset_callback_gets_the_driver_connection(fake: FakeDriver) -> None:
    seen: list[Any] = []
    pool = PooledDB(fake, reset=seen.append)
    db = pool.connection()
    raw = db._con._raw
    db.close()
    assert seen == [raw]
    pool.close()


def test_failed_reset_discards_the_connection(fake: FakeDriver) -> None:
    pool = PooledDB(fake)
    db = pool.connection()
    db.cursor().execute("INSERT x")
    raw = db._con._raw
    fake.rollback_fails = True
    db.close()
    fake.rollback_fails = False
    assert raw.closed
    stats = pool.stats()
    assert stats["discarded"] == 1 and stats["size"] == 0
    db = pool.connection()
    assert db._con._raw is not raw  # never handed out again
    db.close()
    pool.close()


def test_event_hook_may_use_the_pool(fake: FakeDriver) -> None:
    seen: list[dict[str, Any]] = []
    pool: PooledDB

    def hook(event: PoolEvent) -> None:
        if event.kind == "checkin":
            seen.append(pool.stats())  # would deadlock if called under the lock

    pool = PooledDB(fake, on_event=hook)
    thread = threading.Thread(target=lambda: pool.connection().close())
    thread.start()
    thread.join(3)
    assert not thread.is_alive() and len(seen) == 1
    pool.close()
