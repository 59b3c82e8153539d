"""tether.pooled through a libpq multi-host DSN while the primary fails over or switches over.

The pool is configured as the root README's "Primary failover" says:
``host=a,b port=p,q target_session_attrs=read-write connect_timeout=2``,
``reconnect_backoff=(0.05, 1.0)``. The servers are this worker's replication
pair (a primary and a synchronous standby, ``failover_pair``); the load is
the chaos suite's ledger, whose rows are read from the new primary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tether.harness.chaos import PoolSettings, Timeouts
from tether.harness.chaos.failover import (
    FailoverEnvironment,
    FailoverKill,
    FailoverScenario,
    run_failover_scenario,
)
from tether.harness.chaos.pools import PooledPoolHandle, PoolHandle
from tether.harness.docs import examples, run_example
from tether.harness.replication import LIBPQ_DRIVERS, ReplicationPair, libpq_conninfo
from tether.harness.targets import DriverTarget
from tether.pooled import PooledDB, PooledPg

README = Path(__file__).parents[3] / "README.md"
CONNECT_TIMEOUT = 2  # seconds, per host (libpq)


def make_pool(target: DriverTarget, size: int = 3, **options: Any) -> Any:
    """The pool as the README configures it, for ``target`` (on the pair's DSN)."""
    kwargs = Timeouts(connect=CONNECT_TIMEOUT).apply(target.name, target.kwargs)
    settings: dict[str, Any] = {
        "maxconnections": size,
        "maxcached": size,
        "blocking": True,
        "checkout_timeout": 3.0,
        "reconnect_backoff": (0.05, 1.0),
        **options,
    }
    if target.name == "pg":
        return PooledPg(**settings, **kwargs)
    return PooledDB(target.creator, **settings, **kwargs)


def readme_pool(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """A chaos pool factory building :func:`make_pool` for the ledger workload."""
    return PooledPoolHandle(make_pool(target, settings.cap), max_sessions=settings.cap,
                            checkout_timeout=3.0)  # fmt: skip


def _sqlstate(exc: BaseException) -> object:
    return getattr(exc, "sqlstate", None)


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
        maxconnections=3,
        warmup=0.5,
        after=3.0,
        recovery_bound=3.0,  # the first commit after the promotion, at the latest
        quiet_after=2.0,  # from then on no transaction fails
        # The promise here is "served, and nothing fails"; commit rates over this 1 s
        # window are noise on a busy machine (the chaos suite judges them, on 2 s).
        sustained_ratio=0.0,
        timeouts=Timeouts(connect=CONNECT_TIMEOUT, checkout=3.0),
    )
    result = run_failover_scenario(scenario, FailoverEnvironment(failover_pair, driver))
    # Every acknowledged commit on the new primary once, no half transaction, recovery
    # within 3 s, no failure from 2 s after the promotion, no leaked session.
    result.raise_for_violations()
    assert result.recovery.recovery_time is not None and result.recovery.recovery_time <= 3.0
    assert result.sustained.checked and result.sustained.errors == 0
    assert result.notes["new_primary_port"] == failover_pair.require_primary().port
    before = [r for r in result.records if r.ended is not None and r.ended < result.applied_at]
    assert sum(r.outcome == "ok" for r in before) > 0, "no load before the kill"


@pytest.mark.parametrize("driver", LIBPQ_DRIVERS)
def test_after_a_switchover_read_only_sessions_are_retired(
    failover_pair: ReplicationPair, driver: str
) -> None:
    pair = failover_pair
    target = pair.target(driver)
    table = pair.unique_table("switch")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int, port int)")
    insert = f"INSERT INTO {table} VALUES ({target.placeholder}, inet_server_port())"
    pool = make_pool(target, size=2)
    try:
        first, second = pool.connection(), pool.connection()
        old = pair.require_primary().port
        assert _where(target, first)[0] == _where(target, second)[0] == old
        first.rollback()
        second.rollback()
        new = pair.switchover().port

        # Outside a transaction: the statement the old primary refused (25006) did not
        # run, so it runs again on a new session, which libpq opens on the new primary.
        target.query(first, insert, (1,))
        first.commit()
        assert _where(target, first) == (new, "off")
        # Inside a transaction: the driver's 25006 error, nothing retried.
        second.begin()
        with pytest.raises(Exception) as refused:
            target.query(second, insert, (2,))
        assert _sqlstate(refused.value) == "25006"
        second.rollback()  # the session is retired now; the next use opens another
        assert _where(target, second) == (new, "off")
        first.close()
        second.close()

        # No session of the pool is left on the old primary, and none is handed out.
        held = [pool.connection() for _ in range(2)]
        assert [_where(target, db) for db in held] == [(new, "off")] * 2
        for db in held:
            db.close()
        assert pair.sessions().get(old, 0) == 0
        assert pair.require_primary().admin_execute(f"SELECT n, port FROM {table}") == [(1, new)]
    finally:
        pool.close()


@pytest.mark.parametrize("driver", LIBPQ_DRIVERS)
def test_after_a_switchover_the_checkout_ping_retires_a_read_only_session(
    failover_pair: ReplicationPair, driver: str
) -> None:
    pair = failover_pair
    target = pair.target(driver)
    table = pair.unique_table("ping")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int)")
    pool = make_pool(target, size=1, ping_after=0)  # ping at every checkout
    try:
        with pool.connection() as db:
            target.query(db, "SELECT 1")
        new = pair.switchover().port
        # The ping's answer carries default_transaction_read_only = on: the session is
        # retired at the checkout, and the transaction runs on the new primary at once.
        with pool.connection() as db:
            db.begin()
            target.query(db, f"INSERT INTO {table} VALUES (1)")
            assert _where(target, db) == (new, "off")
        assert pool.stats()["opened"] == 2
        assert pair.require_primary().admin_execute(f"SELECT n FROM {table}") == [(1,)]
    finally:
        pool.close()


def test_a_prefer_standby_read_pool_keeps_reading_through_a_failover(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    table = pair.unique_table("reads")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int)")
    pair.require_primary().admin_execute(f"INSERT INTO {table} SELECT generate_series(1, 10)")
    standby = pair.standby
    assert standby is not None
    target = pair.target("psycopg", "prefer-standby")
    # ping_after=0: every checkout pings; a session read-only from the start is kept.
    pool = make_pool(target, size=2, ping_after=0)
    seen: list[tuple[int, bool, int]] = []

    def read() -> None:
        with pool.connection() as db:
            ((port, standby_now, count),) = target.query(
                db, f"SELECT inet_server_port(), pg_is_in_recovery(), count(*) FROM {table}"
            )
            seen.append((int(port), bool(standby_now), int(count)))

    try:
        for _ in range(5):
            read()
        pair.kill_primary()
        for _ in range(5):
            read()  # the standby still answers
        pair.promote()
        for _ in range(5):
            read()
        assert {port for port, _, _ in seen} == {standby.port}
        assert [s for _, s, _ in seen] == [True] * 10 + [False] * 5
        assert {count for _, _, count in seen} == {10}
        assert pool.stats()["opened"] == 1  # never retired, never reopened
    finally:
        pool.close()


def test_the_readme_failover_example_runs_before_and_after_a_failover(
    failover_pair: ReplicationPair,
) -> None:
    (example,) = [e for e in examples(README) if "target_session_attrs=read-write" in e.code]
    assert "postgresql" in example.targets and example.output is not None
    pair = failover_pair
    database = pair.unique_table("readme")  # a fresh name, used for a database
    pair.require_primary().admin_execute(f'CREATE DATABASE "{database}"')
    params = pair.conninfo_params()
    params.pop("target_session_attrs")  # the example's own line after it says read-write
    params["dbname"] = database
    placeholder = re.search(r'"host=db1\.example[^"]*"', example.code)
    assert placeholder is not None
    code = example.code.replace(placeholder.group(0), repr(libpq_conninfo(params)))
    try:
        assert run_example(code) == example.output  # served by the primary
        pair.failover()
        assert run_example(code) == example.output  # the same DSN, served by the new primary
        orders = pair.require_primary().admin_execute("SELECT item FROM orders", database=database)
        assert orders == [("tea",), ("tea",)]
    finally:
        pair.require_primary().admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
