"""The PgBouncer presets and psycopg's recognition of PgBouncer's prepared-statement errors."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from tether.simple_pool.drivers import (
    PgClassicAdapter,
    PgdbAdapter,
    PsycopgAdapter,
    adapter_for,
    behind_pgbouncer,
)
from tether.simple_pool.drivers.psycopg import PGBOUNCER_HINT, automatic_prepare_failed


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize(
    ("driver", "base"),
    [("psycopg", PsycopgAdapter), ("pgdb", PgdbAdapter), ("pg", PgClassicAdapter)],
)
def test_presets_are_the_driver_adapters(mode: str, driver: str, base: type) -> None:
    preset = behind_pgbouncer(mode, driver)
    assert issubclass(preset, base) and preset.pgbouncer_pool_mode == mode  # type: ignore[attr-defined]
    assert preset.name == base.name
    assert isinstance(adapter_for(psycopg, preset), base)
    assert behind_pgbouncer(mode, driver) is preset
    assert adapter_for(psycopg, "psycopg").__class__ is PsycopgAdapter  # not replaced


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        (("statement",), ValueError, "pool_mode"),
        (("transactions",), ValueError, "pool_mode"),
        ((None,), TypeError, "pool_mode"),
        (("session", "pymysql"), ValueError, "driver"),
        (("session", 3), TypeError, "driver"),
    ],
)
def test_bad_arguments_name_the_parameter(args: tuple[Any, ...], error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        behind_pgbouncer(*args)


class _Conn:
    prepare_threshold: int | None = 5


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            psycopg.errors.InvalidSqlStatementName('prepared statement "_pg3_3" does not exist'),
            True,
        ),
        (
            psycopg.errors.DuplicatePreparedStatement('prepared statement "_pg3_0" already exists'),
            True,
        ),
        (
            psycopg.errors.ProtocolViolation(
                'bind message supplies 1 parameters, but prepared statement "_pg3_2" requires 0'
            ),
            True,
        ),
        (psycopg.errors.InvalidSqlStatementName('prepared statement "mine" does not exist'), False),
        (psycopg.errors.ProtocolViolation("server conn crashed?"), False),
        (psycopg.errors.ProtocolViolation("query_wait_timeout"), False),
        (psycopg.OperationalError("server closed the connection unexpectedly"), False),
    ],
)
def test_prepared_statement_failures_are_recognised(error: Exception, expected: bool) -> None:
    assert automatic_prepare_failed(_Conn(), error) is expected


def test_no_automatic_prepares_no_blame() -> None:
    conn = _Conn()
    conn.prepare_threshold = None
    error = psycopg.errors.InvalidSqlStatementName('prepared statement "_pg3_3" does not exist')
    assert not automatic_prepare_failed(conn, error)


def test_a_prepare_failure_is_not_a_lost_connection_and_carries_the_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = PsycopgAdapter(psycopg)
    error = psycopg.errors.ProtocolViolation(
        'bind message supplies 1 parameters, but prepared statement "_pg3_2" requires 0'
    )
    with caplog.at_level(logging.WARNING, logger="tether.drivers"):
        assert adapter.is_connection_lost(None, error) is False
        assert adapter.is_connection_lost(None, error) is False
    assert error.__notes__ == [PGBOUNCER_HINT]
    assert len([r for r in caplog.records if PGBOUNCER_HINT in r.getMessage()]) == 1
    # PgBouncer's own 08P01 errors still mean the connection is gone.
    assert adapter.is_connection_lost(
        None, psycopg.errors.ProtocolViolation("server conn crashed?")
    )


@pytest.mark.parametrize("bouncer_target", [("psycopg", "transaction")], indirect=True)
def test_transaction_preset_turns_automatic_prepares_off(
    bouncer_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = adapter_for(psycopg, behind_pgbouncer("transaction"))
    conn = adapter.open(**bouncer_target.kwargs)
    try:
        assert conn.prepare_threshold is None
        for n in range(10):
            conn.execute("SELECT %s::int", (n,)).fetchall()
        conn.commit()
        conn.execute("SELECT 1")
        with caplog.at_level(logging.WARNING, logger="tether.drivers"):
            adapter.reset_session(conn)
            adapter.reset_session(conn)
        assert adapter.in_transaction(conn) is False  # rolled back
        assert len([r for r in caplog.records if "only rolls back" in r.getMessage()]) == 1
    finally:
        conn.close()
