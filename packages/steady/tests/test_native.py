"""A plain psycopg cursor is the driver's own class, and keeps every promise a wrapper kept.

tether.steady makes ``cursor()`` on psycopg as a subclass of the connection's
``cursor_factory`` (see tether.steady.native): one object per cursor. These
tests hold it to what the steady README promises of a cursor, on a real
PostgreSQL, the way a user reaches it.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tether.steady import InvalidCursorError, connect

pytestmark = [pytest.mark.server]

psycopg_only = pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)


def steady(target: Any, **extra: Any) -> Any:
    return connect(target.creator, None, None, None, 1, True, None, **{**target.kwargs, **extra})


def backend(con: Any) -> int:
    with con.cursor() as cur:
        pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
    con.commit()
    return int(pid)


@psycopg_only
def test_a_plain_cursor_is_the_drivers_class_and_answers_tether(driver_target: Any) -> None:
    con = steady(driver_target, autocommit=True)
    try:
        cur = con.cursor()
        assert isinstance(cur, psycopg.Cursor)
        assert psycopg.Cursor in type(cur).__mro__, "one object: the driver's own class"
        assert cur.connection is con, "never the driver connection, which outlives a checkout"
        assert cur.execute("SELECT 1").fetchone() == (1,), "execute() chains as psycopg's"
        assert [row for row in cur.execute("SELECT generate_series(1, 3)")] == [(1,), (2,), (3,)]
        cur.close()
        assert cur.closed
    finally:
        con.close()


@psycopg_only
def test_a_cursor_made_before_a_kill_runs_on_the_new_session_with_its_settings(
    driver_target: Any,
) -> None:
    con = steady(driver_target, autocommit=True)
    try:
        cur = con.cursor()
        cur.row_factory = dict_row
        cur.arraysize = 7
        first = backend(con)
        driver_target.kill_backend(first)
        assert cur.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"] != first
        assert cur.arraysize == 7
        assert cur.execute("SELECT 2 AS x").fetchall() == [{"x": 2}]
    finally:
        con.close()


@psycopg_only
def test_rows_of_a_session_reopened_since_the_execute_are_refused(driver_target: Any) -> None:
    con = steady(driver_target, autocommit=True)
    try:
        old = con.cursor()
        old.execute("SELECT generate_series(1, 3)")
        driver_target.kill_backend(backend(con))
        assert con.cursor().execute("SELECT 1").fetchone() == (1,)  # reopens
        for use in (old.fetchone, old.fetchall, lambda: list(old), lambda: old.rowcount):
            with pytest.raises(InvalidCursorError, match="reopened"):
                use()
        assert old.execute("SELECT 5").fetchone() == (5,), "execute again: it works"
    finally:
        con.close()


@psycopg_only
def test_a_cursor_kept_past_the_checkout_refuses_every_use(driver_target: Any) -> None:
    con = steady(driver_target, autocommit=True)
    try:
        kept = con.cursor()
        kept.execute("SELECT generate_series(1, 3)")
        rows = iter(kept)
        assert next(rows) == (1,)
        con.end_checkout()  # what a pool does at checkin (layer API)
        uses = {
            "execute": lambda: kept.execute("SELECT 1"),
            "executemany": lambda: kept.executemany("SELECT %s", [(1,)]),
            "fetchone": kept.fetchone,
            "fetchall": kept.fetchall,
            "iteration": lambda: next(rows),
            "copy": lambda: kept.copy("COPY (SELECT 1) TO STDOUT"),
            "stream": lambda: next(iter(kept.stream("SELECT 1"))),
            "scroll": lambda: kept.scroll(0),
            "rowcount": lambda: kept.rowcount,
        }
        for name, use in uses.items():
            with pytest.raises(InvalidCursorError):
                use()
                pytest.fail(f"{name} worked after the checkout ended")
        kept.close()  # harmless
        assert con.cursor().execute("SELECT 1").fetchone() == (1,)
    finally:
        con.close()


@psycopg_only
def test_the_connections_cursor_factory_is_followed(driver_target: Any) -> None:
    con = steady(driver_target, autocommit=True, cursor_factory=psycopg.ClientCursor)
    try:
        cur = con.cursor()
        assert isinstance(cur, psycopg.ClientCursor)
        assert cur.execute("SELECT %s::int", [3]).fetchone() == (3,)
        con.cursor_factory = psycopg.RawCursor  # a borrower's change, through tether
        raw = con.cursor()
        assert isinstance(raw, psycopg.RawCursor)
        assert raw.execute("SELECT $1::int", [4]).fetchone() == (4,)
        con.end_checkout()  # the pool's configured factory back for the next borrower
        assert isinstance(con.cursor(), psycopg.ClientCursor)
    finally:
        con.close()


@psycopg_only
def test_a_copy_and_a_stream_during_the_checkout_work(driver_target: Any) -> None:
    con = steady(driver_target, autocommit=True)
    try:
        cur = con.cursor()
        with cur.copy("COPY (SELECT generate_series(1, 2)) TO STDOUT") as copy:
            assert [bytes(row) for row in copy] == [b"1\n", b"2\n"]
        assert [row for row in cur.stream("SELECT generate_series(1, 2)")] == [(1,), (2,)]
        assert cur.execute("SELECT 1").fetchone() == (1,)
    finally:
        con.close()


@psycopg_only
def test_cursor_connection_is_tethers_around_every_statement(driver_target: Any) -> None:
    """psycopg's own code reads ``cursor.connection`` on every statement (its type loaders
    and dumpers keep it): it gets the driver's while tether calls psycopg, anyone else
    tether's, before, between and after statements and while rows are iterated."""
    import datetime
    import json

    from psycopg.types.json import Jsonb

    con = steady(driver_target, autocommit=True)
    try:
        cur = con.cursor()
        assert cur.connection is con
        row = cur.execute(
            "SELECT now(), %s::jsonb, 'é'::text, interval '1 day'", [Jsonb({"a": 1})]
        ).fetchone()
        assert isinstance(row[0], datetime.datetime) and row[0].tzinfo is not None
        assert row[1:] == ({"a": 1}, "é", datetime.timedelta(days=1))
        assert cur.connection is con
        for _ in cur.execute("SELECT generate_series(1, 2)"):
            assert cur.connection is con
        with cur.copy("COPY (SELECT 1) TO STDOUT") as copy:
            assert [bytes(r) for r in copy] == [b"1\n"]
        assert cur.connection is con
        assert json.loads(json.dumps(cur.execute("SELECT 1").fetchall())) == [[1]]
    finally:
        con.close()


@psycopg_only
@pytest.mark.parametrize("keep", ["native", "wrapper"])
def test_a_pipeline_whose_session_the_server_ended_runs_nothing_on_a_new_one(
    driver_target: Any, keep: str
) -> None:
    """Inside ``with db.pipeline():`` the queued statements are one unit: a loss there is a
    loss inside a transaction. Found by an outside attack: they ran on a new session one by
    one, each committed, while the block raised (a retry would insert everything twice)."""
    from psycopg.rows import tuple_row

    admin = psycopg.connect(autocommit=True, **driver_target.kwargs)
    table = f"pipe_{keep}"
    admin.execute(f"DROP TABLE IF EXISTS {table}")
    admin.execute(f"CREATE TABLE {table} (x int)")
    con = steady(driver_target, autocommit=True)
    try:
        cur = con.cursor() if keep == "native" else con.cursor(row_factory=tuple_row)
        # Healthy: psycopg's semantics, a bad statement aborts the whole batch.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), con.pipeline():
            cur.execute(f"INSERT INTO {table} VALUES (1)")
            cur.execute(f"INSERT INTO {table} VALUES (%s)", ["not a number"])
        assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        pid = backend(con)
        # (Killed before the block, the session is replaced before it: see the next test.)
        with pytest.raises(psycopg.OperationalError), con.pipeline():
            cur.execute(f"INSERT INTO {table} VALUES (1)")
            driver_target.kill_backend(pid)
            time.sleep(0.05)
            cur.execute(f"INSERT INTO {table} VALUES (2)")
        assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), "nothing ran"
        con.rollback()  # as after a loss inside a transaction (the rule)
        cur.execute(f"INSERT INTO {table} VALUES (3)")
        assert admin.execute(f"SELECT array_agg(x) FROM {table}").fetchone() == ([3],)
    finally:
        con.close()
        admin.execute(f"DROP TABLE {table}")
        admin.close()


@psycopg_only
@pytest.mark.parametrize("keep", ["native", "wrapper"])
def test_copy_and_stream_after_the_server_ended_the_session_get_a_new_one(
    driver_target: Any, keep: str
) -> None:
    """``cur.copy()`` and ``cur.stream()`` send their statement when used: they follow the
    rule's checks first, so a session the server ended is replaced (outside a transaction).
    Found by an outside attack: they reached the dead session, then "the connection is
    lost" forever, until an ``execute()`` reopened it."""
    from psycopg.rows import tuple_row

    for autocommit in (True, False):
        con = steady(driver_target, autocommit=autocommit)
        try:
            cur = con.cursor() if keep == "native" else con.cursor(row_factory=tuple_row)
            for use in ("copy", "stream"):
                driver_target.kill_backend(backend(con))
                time.sleep(0.05)
                if use == "copy":
                    with cur.copy("COPY (SELECT 42) TO STDOUT") as copy:
                        assert [bytes(row) for row in copy] == [b"42\n"]
                else:
                    assert list(cur.stream("SELECT 43")) == [(43,)]
                con.commit()
        finally:
            con.close()


@psycopg_only
@pytest.mark.parametrize("autocommit", [True, False])
def test_a_pipeline_or_transaction_first_after_an_idle_kill_gets_a_new_session(
    driver_target: Any, autocommit: bool
) -> None:
    """``db.pipeline()`` and ``db.transaction()`` send their statements later: the rule's
    checks run before them, as before a statement (found by an outside attack: a request that
    began with one failed after an idle kill, where a plain statement was transparent)."""
    con = steady(driver_target, autocommit=autocommit)
    try:
        for block in ("pipeline", "transaction"):
            old = backend(con)
            driver_target.kill_backend(old)
            time.sleep(0.05)
            with getattr(con, block)():
                cur = con.cursor()
                cur.execute("SELECT pg_backend_pid()")
                assert cur.fetchone()[0] != old
            con.commit()
    finally:
        con.close()
