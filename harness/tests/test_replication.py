"""The replication pair: a synchronous standby, failover, switchover and restore, for real."""

from __future__ import annotations

import contextlib
import time

import psycopg
import pytest

from tether.harness.replication import LIBPQ_DRIVERS, ReplicationPair


def _where(pair: ReplicationPair, driver: str, target_session_attrs: str = "read-write") -> str:
    """The role of the server a new ``driver`` connection through the DSN lands on."""
    target = pair.target(driver, target_session_attrs)
    conn = target.connect()
    try:
        ((port,),) = target.query(conn, "SELECT inet_server_port()")
    finally:
        conn.close()
    return pair.role_of(int(port))


def test_a_commit_acknowledged_by_the_primary_is_on_the_standby(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    assert pair.healthy()
    assert pair.standby is not None and pair.standby.in_recovery()
    assert {pair.require_primary().port, pair.standby.port} == set(pair.ports)
    table = pair.unique_table("sync")
    with contextlib.closing(psycopg.connect(pair.conninfo(), autocommit=True)) as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
        for n in range(20):
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (n,))
            # remote_apply: the commit returned once the standby had applied it.
            assert pair.standby.admin_execute(f"SELECT count(*) FROM {table}") == [(n + 1,)]


def test_every_libpq_driver_reaches_the_primary_through_the_multi_host_dsn(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    for driver in LIBPQ_DRIVERS:
        assert _where(pair, driver) == "primary", driver
    assert _where(pair, "psycopg", "prefer-standby") == "standby"
    first, second = pair.ports
    assert f"port={first},{second}" in pair.conninfo()
    assert "target_session_attrs=read-write" in pair.conninfo()
    for text in (repr(pair), pair.redacted_conninfo(), repr(pair.target("psycopg"))):
        assert pair.password not in text


def test_failover_kill_then_promote_keeps_acknowledged_commits(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    table = pair.unique_table("failover")
    pair.require_primary().admin_execute(f"CREATE TABLE {table} (n int)")
    pair.require_primary().admin_execute(f"INSERT INTO {table} SELECT generate_series(1, 100)")
    old_port = pair.require_primary().port
    pair.kill_primary()
    assert pair.role_of(old_port) == "down"
    # No server accepts writes: libpq refuses the standby for a read-write session.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pair.conninfo(), connect_timeout=2).close()
    started = time.monotonic()
    new = pair.promote()
    assert time.monotonic() - started < 5.0
    assert new.port != old_port and pair.role_of(new.port) == "primary"
    for driver in LIBPQ_DRIVERS:
        assert _where(pair, driver) == "primary", driver
    assert new.admin_execute(f"SELECT count(*) FROM {table}") == [(100,)]
    # Healthy again, on the same two ports, the roles swapped.
    ports = pair.ports
    pair.restore()
    assert pair.healthy() and pair.ports == ports
    assert pair.require_primary() is new and pair.role_of(old_port) == "standby"


def test_switchover_leaves_the_old_primary_up_and_read_only(
    failover_pair: ReplicationPair,
) -> None:
    pair = failover_pair
    table = pair.unique_table("switch")
    old = pair.require_primary()
    old.admin_execute(f"CREATE TABLE {table} (n int)")
    idle = psycopg.connect(pair.conninfo(), autocommit=True)
    busy = psycopg.connect(pair.conninfo())
    try:
        busy.execute(f"INSERT INTO {table} VALUES (1)")  # read-write, open across the switch
        new = pair.switchover(grace=0.2)
        assert old.is_running() and pair.role_of(old.port) == "old_primary"
        assert pair.role_of(new.port) == "primary"
        # The idle session is still connected, and refuses writes now (pg_auto_failover #575).
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            idle.execute(f"INSERT INTO {table} VALUES (2)")
        assert idle.info.parameter_status("default_transaction_read_only") == "on"
        assert idle.execute("SELECT 1").fetchone() == (1,)
        # The transaction begun read-write before the switch was ended, not left to write.
        with pytest.raises(psycopg.OperationalError):
            busy.commit()
        assert new.admin_execute(f"SELECT count(*) FROM {table}") == [(0,)]
        assert _where(pair, "psycopg") == "primary"
    finally:
        idle.close()
        busy.close()
    pair.restore()
    assert pair.healthy() and not old.is_running()


def test_restore_finishes_a_failover_a_test_left_half_done(failover_pair: ReplicationPair) -> None:
    pair = failover_pair
    standby = pair.standby
    pair.kill_primary()
    pair.restore()
    assert pair.healthy() and pair.require_primary() is standby
