"""Checkout and checkin: no round trips when clean, waiting, fairness, deadlines, unreachable."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tether.pooled import (
    DatabaseUnreachable,
    PoolClosed,
    PooledDB,
    PoolExhausted,
    TooManyConnectionsError,
    UnreachableTimeout,
)
from tether.simple_pool.drivers import DriverAdapter

from .conftest import FakeDriver, FakeOperationalError

# -- the hot path -------------------------------------------------------------------------------


def test_clean_checkout_and_checkin_make_no_round_trip(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(1)
    before = fake.round_trips
    for _ in range(100):
        db = pool.connection()
        db.close()
    assert fake.round_trips == before  # no ping, no rollback


def test_rollback_only_when_a_transaction_is_open(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(1)
    db = pool.connection()
    raw = db._con._raw
    db.cursor().execute("SELECT 1")  # reads: the driver reports no transaction
    db.close()
    assert raw.rollbacks == 0
    db = pool.connection()
    db.cursor().execute("UPDATE t SET x = 1")
    db.close()
    assert raw.rollbacks == 1 and not raw.in_transaction


def test_ping_only_after_ping_after_seconds_idle(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(1, ping_after=0.05)
    db = pool.connection()
    raw = db._con._raw
    db.close()
    trips = raw.round_trips
    pool.connection().close()
    assert raw.round_trips == trips  # used a moment ago: no ping
    time.sleep(0.1)  # idle long enough (the maintenance thread marks it within 25 ms)
    pool.connection().close()
    assert raw.round_trips == trips + 1  # one ping


def test_ping_after_zero_pings_every_checkout(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(1, ping_after=0)
    db = pool.connection()
    raw = db._con._raw
    db.close()
    trips = raw.round_trips
    for _ in range(3):
        pool.connection().close()
    assert raw.round_trips == trips + 3


def test_ping_zero_never_pings(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(1, ping=0, ping_after=0)
    trips = fake.round_trips
    for _ in range(3):
        pool.connection().close()
    assert fake.round_trips == trips


def test_dead_idle_connection_is_replaced_at_checkout(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(2, ping_after=0)
    fake.kill_all()  # both idle connections died (server restart)
    db = pool.connection()
    db.cursor().execute("SELECT 1")
    assert db._con._raw.alive
    db.close()
    stats = pool.stats()
    # 3 or 4: one for the checkout, and the maintenance thread may already have
    # refilled towards mincached=2 (a non-blocking connect runs on a thread now).
    assert stats["discarded"] == 2 and stats["opened"] in (3, 4)
    assert stats["opened"] - stats["closed"] == stats["size"]


def test_lost_connection_is_not_kept(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool()
    db = pool.connection()
    db._con._forget(db._con._raw)  # the steady connection dropped a dead driver connection
    db.close()
    stats = pool.stats()
    assert stats["size"] == 0 and stats["discarded"] == 1


# -- limits and waiting -------------------------------------------------------------------------


def test_blocking_waits_for_a_returned_connection(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, blocking=True, checkout_timeout=5)
    db = pool.connection()
    threading.Timer(0.05, db.close).start()
    start = time.monotonic()
    db2 = pool.connection()
    assert 0.03 < time.monotonic() - start < 2
    stats = pool.stats()
    assert stats["waits"] == 1 and stats["wait_time_max"] > 0.03
    db2.close()


def test_blocking_times_out_with_pool_exhausted(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=2, blocking=True, checkout_timeout=0.1, name="busy")
    held = [pool.connection(), pool.connection()]
    start = time.monotonic()
    with pytest.raises(PoolExhausted) as info:
        pool.connection()
    elapsed = time.monotonic() - start
    assert 0.09 < elapsed < 1.0
    message = str(info.value)
    assert "busy" in message and "pool exhausted" in message
    assert "size 2/2" in message and "in use 2" in message and "waiting" in message
    assert isinstance(info.value, TooManyConnectionsError) and isinstance(info.value, TimeoutError)
    assert info.value.pool == "busy" and info.value.timeout == 0.1
    assert pool.stats()["timeouts"] == 1
    for db in held:
        db.close()


def test_waiters_are_served_first_come_first_served(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, blocking=True, checkout_timeout=10)
    db = pool.connection()
    order: list[int] = []
    started: list[threading.Event] = []

    def waiter(number: int, ready: threading.Event) -> None:
        ready.set()
        con = pool.connection()
        order.append(number)
        time.sleep(0.005)
        con.close()

    threads = []
    for number in range(5):
        ready = threading.Event()
        thread = threading.Thread(target=waiter, args=(number, ready))
        thread.start()
        ready.wait()
        _wait_for(lambda n=number: pool.stats()["waiting"] == n + 1)  # type: ignore[misc]
        threads.append(thread)
        started.append(ready)
    db.close()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_newcomers_do_not_barge_ahead_of_waiters(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, blocking=True, checkout_timeout=10)
    db = pool.connection()
    got: list[str] = []

    def waiter() -> None:
        con = pool.connection()
        got.append("waiter")
        time.sleep(0.02)
        con.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    _wait_for(lambda: pool.stats()["waiting"] == 1)
    db.close()  # handed straight to the waiter, not to the idle list
    con = pool.connection()  # the newcomer queues behind it
    got.append("newcomer")
    con.close()
    thread.join(5)
    assert got == ["waiter", "newcomer"]


def test_max_waiting_caps_the_queue(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, blocking=True, checkout_timeout=5, max_waiting=1)
    db = pool.connection()
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: pool.connection().close())
    thread.start()
    _wait_for(lambda: pool.stats()["waiting"] == 1)
    with pytest.raises(TooManyConnectionsError, match="max_waiting=1"):
        pool.connection()
    db.close()
    thread.join(5)
    assert not errors


def test_close_wakes_waiters_with_pool_closed(fake_pool: Any) -> None:
    pool = fake_pool(maxconnections=1, blocking=True, checkout_timeout=5)
    db = pool.connection()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.connection()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    _wait_for(lambda: pool.stats()["waiting"] == 1)
    pool.close()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    db.close()


def test_a_hanging_connect_does_not_block_idle_checkouts(fake: FakeDriver) -> None:
    pool = PooledDB(fake)
    held = pool.connection()  # no idle one left: the next checkout connects
    fake.connect_delay = 0.5
    slow = threading.Thread(target=lambda: pool.connection().close())
    slow.start()
    _wait_for(lambda: pool.stats()["opening"] == 1)
    held.close()
    start = time.monotonic()
    db = pool.connection()  # the idle one, while the other thread is connecting
    assert time.monotonic() - start < 0.1
    db.close()
    slow.join(5)
    pool.close()


def test_checkout_deadline_reaches_the_connect_timeout(fake: FakeDriver) -> None:
    seen: list[float] = []

    class Adapter(DriverAdapter):
        def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
            seen.append(seconds)
            return {**kwargs, "connect_timeout": seconds}

    pool = PooledDB(fake, checkout_timeout=2.5, driver=Adapter, host="x")
    db = pool.connection()
    assert 2.0 < seen[0] <= 2.5
    assert fake.connect_kwargs[-1] == {"host": "x", "connect_timeout": seen[0]}
    assert db._con._kwargs == {"host": "x"}  # reopens later use the user's own arguments
    db.close()
    pool.close()


def test_deadline_covers_the_connect(fake: FakeDriver) -> None:
    class Adapter(DriverAdapter):
        def connect(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(min(kwargs.pop("connect_timeout"), 5))  # a host swallowing packets
            raise FakeOperationalError("timeout expired")

        def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
            return {**kwargs, "connect_timeout": seconds}

    pool = PooledDB(fake, blocking=True, checkout_timeout=0.2, driver=Adapter, name="far")
    start = time.monotonic()
    with pytest.raises(UnreachableTimeout) as info:
        pool.connection()
    assert time.monotonic() - start < 0.6
    assert "far" in str(info.value) and "database unreachable" in str(info.value)
    # The connect runs on a pool thread: at the deadline it has either failed
    # (its error is the cause) or not finished (and the checkout does not wait for it).
    cause = info.value.__cause__
    assert isinstance(cause, FakeOperationalError) or "did not finish in time" in str(info.value)
    pool.close()


def test_a_connect_under_way_does_not_hold_up_its_checkout(fake_pool: Any, fake: Any) -> None:
    # The connect a blocking checkout asked for runs on a thread of the pool's;
    # a connection given back meanwhile serves the checkout at once (HikariCP's
    # spike test), and the new connection goes to the idle list when it is done.
    pool = fake_pool(1, 0, 0, 2, True, checkout_timeout=5)
    held = pool.connection()
    fake.connect_delay = 0.5
    threading.Timer(0.05, held.close).start()
    start = time.monotonic()
    db = pool.connection()
    assert time.monotonic() - start < 0.3, "served by the returned connection"
    db.close()
    deadline = time.monotonic() + 3
    while pool.stats()["opened"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = pool.stats()
    assert stats["opened"] == 2 and stats["idle"] == 2 and stats["in_use"] == 0


# -- unreachable database ---------------------------------------------------------------------


def test_nonblocking_connect_error_is_the_drivers_then_fails_fast(fake: FakeDriver) -> None:
    pool = PooledDB(fake, reconnect_backoff=(5, 5))
    fake.down = True
    with pytest.raises(FakeOperationalError):
        pool.connection()  # the driver's own error, as DBUtils raises it
    attempts = len(fake.connect_kwargs)
    with pytest.raises(DatabaseUnreachable) as info:
        pool.connection()
    assert isinstance(info.value.__cause__, FakeOperationalError)
    assert "unreachable" in str(info.value)
    # the failed checkout did not pile up another connect: only the background attempt
    _wait_for(lambda: len(fake.connect_kwargs) >= attempts + 1)
    time.sleep(0.05)
    assert len(fake.connect_kwargs) == attempts + 1
    pool.close()


def test_background_reconnect_serves_waiters(fake: FakeDriver) -> None:
    pool = PooledDB(fake, blocking=True, checkout_timeout=5, reconnect_backoff=(0.01, 0.05))
    fake.down = True
    results: list[Any] = []

    def checkout() -> None:
        db = pool.connection()
        results.append(db._con._raw)
        db.close()

    threads = [threading.Thread(target=checkout) for _ in range(4)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: pool.stats()["unreachable"])
    time.sleep(0.1)
    assert pool.stats()["unreachable"] and not results
    fake.down = False  # the database is back
    for thread in threads:
        thread.join(5)
    assert len(results) == 4
    stats = pool.stats()
    assert not stats["unreachable"] and stats["connect_errors"] >= 2
    assert stats["checkouts"] == stats["checkins"] == 4
    pool.close()


def test_unreachable_timeout_names_the_last_error(fake: FakeDriver) -> None:
    pool = PooledDB(fake, blocking=True, checkout_timeout=0.15, reconnect_backoff=(0.01, 0.02))
    fake.down = True
    start = time.monotonic()
    with pytest.raises(UnreachableTimeout, match="connection refused") as info:
        pool.connection()
    assert time.monotonic() - start < 1
    assert isinstance(info.value.__cause__, FakeOperationalError)
    assert isinstance(info.value, DatabaseUnreachable)
    pool.close()


def test_programming_errors_at_connect_are_not_unreachable(fake: FakeDriver) -> None:
    pool = PooledDB(fake, blocking=True, checkout_timeout=5, bogus=1)
    fake.connect_error = TypeError("unexpected keyword 'bogus'")
    start = time.monotonic()
    with pytest.raises(TypeError, match="bogus"):
        pool.connection()  # at once: waiting would not help
    assert time.monotonic() - start < 1
    assert not pool.stats()["unreachable"]
    pool.close()


# -- shared connections -------------------------------------------------------------------------


def test_shared_connections(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(maxshared=2, maxconnections=2)
    dbs = [pool.connection() for _ in range(6)]
    raws = {id(db._con._raw) for db in dbs}
    assert len(raws) == 2  # six shares of two connections
    stats = pool.stats()
    assert stats["in_use"] == 2 and stats["checkouts"] == 6 and stats["shared"] == 2
    for db in dbs:
        db.close()
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == 2 and stats["checkins"] == 6


def test_connection_in_transaction_is_not_shared(fake: FakeDriver, fake_pool: Any) -> None:
    pool = fake_pool(maxshared=1, maxconnections=3)
    first = pool.connection()
    first.begin()
    second = pool.connection()  # the shared one is in a transaction: not shared
    assert second._con is not first._con
    first.rollback()
    third = pool.connection()
    assert third._con is first._con
    for db in (first, second, third):
        db.close()
    assert pool.stats()["in_use"] == 0


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def test_a_burst_is_served_by_returned_connections_not_a_connect_per_thread(tmp_path: Any) -> None:
    """HikariCP's spike test, small: 20 threads at once, slow connects, short requests."""
    import sqlite3

    opened: list[int] = []

    def slow_connect() -> sqlite3.Connection:
        time.sleep(0.1)  # a connect costs 100 ms; a request 2 ms
        opened.append(1)
        return sqlite3.connect(str(tmp_path / "spike.db"), check_same_thread=False)

    pool = PooledDB(slow_connect, 2, 0, 0, 20, True, ping=0)
    opened.clear()
    start = threading.Barrier(20)

    def request() -> None:
        start.wait(5)
        with pool.connection() as db:
            db.cursor().execute("SELECT 1")
            time.sleep(0.002)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(opened) <= 4, f"{len(opened)} connects for 20 short requests"
    assert pool.stats()["checkouts"] == 20
    pool.close()


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), ("2", TypeError)])
def test_bad_max_connecting_names_the_parameter(value: Any, error: type[Exception]) -> None:
    import sqlite3

    with pytest.raises(error, match="max_connecting"):
        PooledDB(sqlite3, max_connecting=value, database=":memory:")


def test_a_non_blocking_checkout_waits_for_a_connection_the_pool_is_opening(
    fake: FakeDriver,
) -> None:
    """Found by the model test: with maxconnections=1 and mincached=1, a discarded
    connection's slot went to the maintenance thread's refill, and a non-blocking checkout
    made meanwhile was refused (TooManyConnectionsError: size 1/1, in use 0, idle 0). A
    connection on its way to the idle list is not one in use: the checkout takes it."""
    pool = PooledDB(fake, mincached=1, maxconnections=1, blocking=False, checkout_timeout=5)
    fake.connect_delay = 0.3
    pool.connection().discard()  # the maintenance thread opens mincached's again
    _wait_for(lambda: pool.stats()["opening"] == 1)
    start = time.monotonic()
    with pool.connection() as db:  # waits for the refill, not refused
        assert time.monotonic() - start < 1.0
        assert db.cursor() is not None
        with pytest.raises(TooManyConnectionsError):  # a full pool still refuses at once
            pool.connection()
    pool.close()
