"""The PostgreSQL adapters after a switchover: which sessions must be retired.

A session opened on a server that accepted writes, whose server then turned
read-only (the old primary of a switchover, reloaded with
``default_transaction_read_only = on``), must be retired: its 25006 counts as
a lost connection, the refused statement never ran, and its ping fails once
libpq heard of the change. A session opened read-only (a read pool on a
standby, or any session opened after the server turned read-only) is kept.
Real servers: this worker's replication pair.
"""

from __future__ import annotations

from typing import Any

import pytest

from tether.harness.replication import LIBPQ_DRIVERS, ReplicationPair
from tether.harness.targets import DriverTarget
from tether.simple_pool.drivers import adapter_for


def _write(target: Any, conn: Any, table: str) -> BaseException:
    with pytest.raises(Exception) as refused:
        target.query(conn, f"INSERT INTO {table} VALUES (1)")
    return refused.value


def test_only_sessions_opened_read_write_are_retired(failover_pair: ReplicationPair) -> None:
    pair = failover_pair
    table = pair.unique_table("retire")
    old = pair.require_primary()
    old.admin_execute(f"CREATE TABLE {table} (n int)")
    opened = []
    for driver in LIBPQ_DRIVERS:
        target = pair.target(driver)  # read-write: lands on the primary
        adapter = adapter_for(target.creator)
        opened.append((driver, True, target, adapter, adapter.open(**target.kwargs)))
    try:
        pair.switchover()
        for driver in LIBPQ_DRIVERS:
            # Opened on the old primary once it is read-only: read-only from the start.
            target = DriverTarget.build(driver, old)
            adapter = adapter_for(target.creator)
            opened.append((driver, False, target, adapter, adapter.open(**target.kwargs)))
        for driver, retire, target, adapter, conn in opened:
            exc = _write(target, conn, table)
            assert getattr(exc, "sqlstate", None) == "25006", (driver, retire, exc)
            assert adapter.never_sent(conn, exc), (driver, retire)  # refused before it ran
            assert adapter.is_connection_lost(conn, exc) is retire, (driver, retire)
            adapter.rollback(conn)
            assert adapter.ping(conn) is not retire, (driver, retire)
            assert adapter.ping(conn, timeout=2.0) is not retire, (driver, retire)
            assert not adapter.is_closed(conn)  # alive: retiring it is the pool's choice
    finally:
        for _, _, _, adapter, conn in opened:
            adapter.close(conn)


def test_a_read_only_transaction_of_the_callers_own_is_not_a_reason_to_retire(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    table = pair.unique_table("own")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int)")
    for driver in LIBPQ_DRIVERS:
        target = pair.target(driver)
        adapter = adapter_for(target.creator)
        conn = adapter.open(**target.kwargs)
        try:
            target.query(conn, "BEGIN READ ONLY")
            exc = _write(target, conn, table)
            assert getattr(exc, "sqlstate", None) == "25006", (driver, exc)
            assert not adapter.is_connection_lost(conn, exc), driver  # the caller's error
            adapter.rollback(conn)
            assert adapter.ping(conn), driver
        finally:
            adapter.close(conn)


def test_the_sessions_own_read_only_guard_is_not_a_reason_to_retire(
    failover_pair: ReplicationPair,
) -> None:
    """``SET default_transaction_read_only = on`` of the session's own (an application's
    guard) reaches libpq like a server-wide change; a write it refused must not count as
    lost, or the steady rule would re-run it on a new session, past the guard (found by
    an outside attack: the write committed)."""
    pair = failover_pair
    table = pair.unique_table("guard")
    primary = pair.require_primary()
    primary.admin_execute(f"CREATE TABLE {table} (n int)")
    for driver in LIBPQ_DRIVERS:
        target = pair.target(driver)
        adapter = adapter_for(target.creator)
        conn = adapter.open(**target.kwargs)
        try:
            if driver != "pg":  # classic pg is in autocommit already
                conn.autocommit = True
            for guard in (
                "SET default_transaction_read_only = on",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            ):
                target.query(conn, guard)
                exc = _write(target, conn, table)
                assert getattr(exc, "sqlstate", None) == "25006", (driver, guard, exc)
                assert not adapter.is_connection_lost(conn, exc), (driver, guard)
                target.query(conn, "RESET default_transaction_read_only")
        finally:
            adapter.close(conn)
    rows = primary.admin_execute(f"SELECT count(*) FROM {table}")
    assert rows == [(0,)], rows
