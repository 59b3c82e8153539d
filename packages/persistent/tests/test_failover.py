"""tether.persistent through a libpq multi-host DSN while the primary fails over or switches over.

Each thread keeps its own steady connection, opened with
``host=a,b port=p,q target_session_attrs=read-write connect_timeout=2`` (the
root README's "Primary failover"). The servers are this worker's
replication pair (``failover_pair``); the load is the chaos suite's ledger,
whose rows are read from the new primary.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tether.harness.chaos import PoolSettings, Timeouts
from tether.harness.chaos.failover import (
    FailoverEnvironment,
    FailoverKill,
    FailoverScenario,
    run_failover_scenario,
)
from tether.harness.chaos.pools import PersistentPoolHandle, PoolHandle
from tether.harness.replication import LIBPQ_DRIVERS, ReplicationPair
from tether.harness.targets import DriverTarget
from tether.persistent import PersistentDB, PersistentPg

CONNECT_TIMEOUT = 2  # seconds, per host (libpq)
T = TypeVar("T")


def make_pool(target: DriverTarget, **options: Any) -> Any:
    """The pool as the README configures it, for ``target`` (on the pair's DSN)."""
    kwargs = Timeouts(connect=CONNECT_TIMEOUT).apply(target.name, target.kwargs)
    if target.name == "pg":
        return PersistentPg(**options, **kwargs)
    return PersistentDB(target.creator, **options, **kwargs)


def readme_pool(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """A chaos pool factory building :func:`make_pool` for the ledger workload."""
    return PersistentPoolHandle(make_pool(target), max_sessions=settings.workers,
                                checkout_timeout=None)  # fmt: skip


def _where(target: DriverTarget, db: Any) -> tuple[int, str]:
    """The port of the server ``db``'s session is on, and its ``transaction_read_only``."""
    ((port, read_only),) = target.query(
        db, "SELECT inet_server_port(), current_setting('transaction_read_only')"
    )
    return int(port), str(read_only)


@pytest.mark.parametrize("driver", LIBPQ_DRIVERS)
def test_after_the_primary_dies_the_new_primary_serves_within_3_s(
    failover_pair: ReplicationPair, driver: str
) -> None:
    scenario = FailoverScenario(
        FailoverKill(window=1.0),
        driver,
        readme_pool,
        workers=3,
        warmup=0.5,
        after=3.0,
        recovery_bound=3.0,  # the first commit after the promotion, at the latest
        quiet_after=2.0,  # from then on no transaction fails
        # The promise here is "served, and nothing fails"; commit rates over this 1 s
        # window are noise on a busy machine (the chaos suite judges them, on 2 s).
        sustained_ratio=0.0,
        timeouts=Timeouts(connect=CONNECT_TIMEOUT),
    )
    result = run_failover_scenario(scenario, FailoverEnvironment(failover_pair, driver))
    # Every acknowledged commit on the new primary once, no half transaction, recovery
    # within 3 s, no failure from 2 s after the promotion, no leaked session.
    result.raise_for_violations()
    assert result.recovery.recovery_time is not None and result.recovery.recovery_time <= 3.0
    assert result.sustained.checked and result.sustained.errors == 0
    assert result.notes["new_primary_port"] == failover_pair.require_primary().port


class Thread:
    """One thread of its own (its persistent connection lives as long as it does)."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1)

    def run(self, function: Callable[[], T]) -> T:
        return self._executor.submit(function).result(timeout=30)

    def close(self) -> None:
        self._executor.shutdown()


@pytest.mark.parametrize("driver", LIBPQ_DRIVERS)
def test_after_a_switchover_read_only_sessions_are_retired(
    failover_pair: ReplicationPair, driver: str
) -> None:
    pair = failover_pair
    target = pair.target(driver)
    table = pair.unique_table("switch")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int, port int)")
    insert = f"INSERT INTO {table} VALUES ({target.placeholder}, inet_server_port())"
    pool = make_pool(target)
    threads = [Thread(), Thread()]
    try:
        old = pair.require_primary().port

        def where() -> tuple[int, str]:
            db = pool.connection()
            try:
                return _where(target, db)
            finally:
                db.rollback()

        assert [t.run(where) for t in threads] == [(old, "off")] * 2
        new = pair.switchover().port

        def outside() -> tuple[int, str]:
            # The statement the old primary refused (25006) did not run: it runs again
            # on a new session, which libpq opens on the new primary.
            db = pool.connection()
            target.query(db, insert, (1,))
            db.commit()
            return _where(target, db)

        def inside() -> object:
            db = pool.connection()
            db.begin()
            try:
                target.query(db, insert, (2,))
            except Exception as exc:  # the driver's 25006 error, nothing retried
                db.rollback()  # the session is retired now; the next use opens another
                return getattr(exc, "sqlstate", None)
            return "not refused"

        assert threads[0].run(outside) == (new, "off")
        assert threads[1].run(inside) == "25006"
        assert [t.run(where) for t in threads] == [(new, "off")] * 2
        assert pair.sessions().get(old, 0) == 0
        assert pair.require_primary().admin_execute(f"SELECT n, port FROM {table}") == [(1, new)]
    finally:
        for thread in threads:
            thread.close()
        pool.close()
