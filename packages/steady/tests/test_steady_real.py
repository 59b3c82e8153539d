"""The reopen rule on real servers, for every driver: restarts, kills, transactions.

Each test gets its own server per xdist worker (tether.harness), so
restarting it disturbs no other test running at the same time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from tether.simple_pool.errors import ConfigurationError
from tether.steady import (
    InvalidCursorError,
    PingStatementError,
    SteadyDBError,
    SteadyPgConnection,
    connect,
)

pytestmark = [pytest.mark.server]

#: The DB-API drivers that talk to a server (sqlite3 has no session to lose).
server_dbapi = pytest.mark.parametrize(
    "driver_target", ["psycopg", "pgdb", "pymysql"], indirect=True
)


def open_steady(target: Any, maxusage: int | None = None, ping: Any = 1, **extra: Any) -> Any:
    """A steady connection to the target's server, with a marker set by setsession."""
    setsession = [marker_setsession(target)]
    kwargs = {**target.kwargs, **extra}
    if target.name == "pg":
        return SteadyPgConnection(maxusage, setsession, True, *target.args, ping=ping, **kwargs)
    return connect(
        target.creator, maxusage, setsession, None, ping, True, None, *target.args, **kwargs
    )


def marker_setsession(target: Any) -> str:
    if target.server.kind == "postgresql":
        return "SET application_name = 'tether_marker'"
    return "SET @tether_marker = 'tether_marker'"


def marker(target: Any, con: Any) -> Any:
    if target.server.kind == "postgresql":
        return rows(target, con, "SELECT current_setting('application_name')")[0][0]
    return rows(target, con, "SELECT @tether_marker")[0][0]


def rows(target: Any, con: Any, sql: str) -> list[Any]:
    """``sql`` through a tether connection, with the driver's API (the harness knows each)."""
    return target.query(con, sql)


def backend(target: Any, con: Any) -> int:
    return int(rows(target, con, target.backend_id_sql)[0][0])


def end(target: Any, con: Any) -> None:
    """End the implicit transaction a statement may have opened."""
    if target.name != "pg":
        con.commit()


def make_table(target: Any) -> str:
    table = target.unique_table("steady")
    raw = target.connect()
    try:
        if target.name == "pg":
            raw.query(f"CREATE TABLE {table} (k INTEGER PRIMARY KEY)")
        else:
            cur = raw.cursor()
            cur.execute(f"CREATE TABLE {table} (k INTEGER PRIMARY KEY)")
            raw.commit()
    finally:
        raw.close()
    return table


def committed_keys(target: Any, table: str) -> list[int]:
    raw = target.connect()
    try:
        if target.name == "pg":
            return sorted(r[0] for r in raw.query(f"SELECT k FROM {table}").getresult())
        cur = raw.cursor()
        cur.execute(f"SELECT k FROM {table}")
        keys = sorted(r[0] for r in cur.fetchall())
        raw.commit()
        return keys
    finally:
        raw.close()


@pytest.mark.restart
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_between_transactions_is_transparent(server_target: Any, mode: str) -> None:
    con = open_steady(server_target)
    before = backend(server_target, con)
    end(server_target, con)
    server_target.server.restart(mode=mode)
    assert marker(server_target, con) == "tether_marker", "setsession re-applied"
    assert backend(server_target, con) != before, "a new server session"
    end(server_target, con)
    con.close()


@pytest.mark.restart
def test_restart_is_transparent_in_autocommit_mode(server_target: Any) -> None:
    if server_target.name in ("psycopg", "pymysql"):
        con = open_steady(server_target, autocommit=True)
    elif server_target.name == "pgdb":
        con = open_steady(server_target, on_connect=lambda raw: setattr(raw, "autocommit", True))
    else:
        con = open_steady(server_target)  # the classic API commits every statement
    assert con.adapter.autocommit(con.dbapi_connection if server_target.dbapi2 else con.db)
    before = backend(server_target, con)
    server_target.server.restart(mode="fast")
    # The session's end is seen on the socket before sending: safe to send anew.
    assert backend(server_target, con) != before
    assert marker(server_target, con) == "tether_marker"
    con.close()


def test_setsession_survives_the_first_rollback(server_target: Any) -> None:
    con = open_steady(server_target)
    con.rollback()
    assert marker(server_target, con) == "tether_marker"
    con.close()


def test_killed_session_is_replaced_transparently(server_target: Any) -> None:
    con = open_steady(server_target)
    before = backend(server_target, con)
    end(server_target, con)
    server_target.kill_backend(before)
    time.sleep(0.2)
    assert marker(server_target, con) == "tether_marker"
    assert backend(server_target, con) != before
    con.close()


@pytest.mark.restart
def test_restart_inside_begin_raises_and_commits_nothing(server_target: Any) -> None:
    interrupted_transaction(server_target, "begin")


@pytest.mark.restart
@server_dbapi
def test_restart_inside_an_implicit_transaction_raises_and_commits_nothing(
    driver_target: Any,
) -> None:
    interrupted_transaction(driver_target, "implicit")


def interrupted_transaction(server_target: Any, how: str) -> None:
    table = make_table(server_target)
    con = open_steady(server_target)
    if how == "begin":
        con.begin()
    rows(server_target, con, f"INSERT INTO {table} VALUES (1)")
    server_target.server.restart(mode="fast")
    with pytest.raises(Exception) as failure:
        rows(server_target, con, f"INSERT INTO {table} VALUES (2)")
    assert not isinstance(failure.value, AssertionError)
    con.rollback()
    rows(server_target, con, f"INSERT INTO {table} VALUES (3)")
    end(server_target, con)
    assert committed_keys(server_target, table) == [3]
    con.close()


@pytest.mark.restart
def test_commit_right_after_the_rollback_of_a_lost_transaction_has_nothing_to_do(
    server_target: Any,
) -> None:
    """The rollback dropped the dead session; a commit with nothing run since is no error
    (found by the pooled model test on 3.9: it raised "the steady connection is closed")."""
    table = make_table(server_target)
    con = open_steady(server_target)
    con.begin()
    rows(server_target, con, f"INSERT INTO {table} VALUES (1)")
    server_target.server.restart(mode="fast")
    con.rollback()
    con.commit()
    rows(server_target, con, f"INSERT INTO {table} VALUES (3)")
    end(server_target, con)
    assert committed_keys(server_target, table) == [3]
    con.close()


@server_dbapi
def test_a_commit_repeated_after_one_that_failed_with_the_session_raises_again(
    driver_target: Any,
) -> None:
    """The failed commit's outcome is unknown: a second commit() must not report success
    (found by the pooled model test on 3.13: it raised "the steady connection is closed",
    which the connection was not); rollback() goes on, and so does the next statement."""
    table = make_table(driver_target)
    con = open_steady(driver_target)
    rows(driver_target, con, f"INSERT INTO {table} VALUES (1)")
    driver_target.kill_backend(backend(driver_target, con))
    time.sleep(0.2)
    with pytest.raises(Exception) as first:
        con.commit()
    assert not isinstance(first.value, SteadyDBError), "the driver's own error, first"
    for _ in range(2):
        with pytest.raises(SteadyDBError, match="commit failed before"):
            con.commit()
    # What reopens without running a statement does not clear it (fifth outside attack:
    # after cursor() or begin() the repeated commit reported success).
    con.cursor().close()
    with pytest.raises(SteadyDBError, match="commit failed before"):
        con.commit()
    con.begin()
    with pytest.raises(SteadyDBError, match="commit failed before"):
        con.commit()
    con.rollback()
    con.commit()  # nothing ran since the rollback: nothing to commit
    rows(driver_target, con, f"INSERT INTO {table} VALUES (2)")
    con.commit()
    assert committed_keys(driver_target, table) == [2]
    # Without rollback(): the next statement goes on, on a new session.
    rows(driver_target, con, f"INSERT INTO {table} VALUES (3)")
    driver_target.kill_backend(backend(driver_target, con))
    time.sleep(0.2)
    with pytest.raises(Exception) as second:
        con.commit()
    assert not isinstance(second.value, SteadyDBError), "the driver's own error, again"
    rows(driver_target, con, f"INSERT INTO {table} VALUES (4)")
    con.commit()
    assert committed_keys(driver_target, table) == [2, 4]
    con.close()


@server_dbapi
def test_a_statement_that_commits_by_itself_is_not_run_twice_when_killed_mid_way(
    driver_target: Any,
) -> None:
    """Outside a transaction, not in autocommit mode: the server's rollback of a lost
    session does not undo a statement that committed by itself ("INSERT ...; COMMIT; ..."
    on PostgreSQL, a procedure that commits on MariaDB). Found by an outside attack: re-run
    on a new session, it was applied twice. The driver's error reaches the caller; the next
    statement reopens."""
    table = make_table(driver_target)
    next_key = f"SELECT coalesce(max(k), 0) + 1 FROM {table}"  # run twice: two rows
    con = open_steady(driver_target)
    session = backend(driver_target, con)
    end(driver_target, con)
    if driver_target.server.kind == "postgresql":
        sql = f"INSERT INTO {table} {next_key}; COMMIT; SELECT pg_sleep(3)"
    else:
        procedure = f"{table}_pay"
        rows(
            driver_target,
            con,
            f"CREATE PROCEDURE {procedure}() BEGIN INSERT INTO {table} {next_key}; COMMIT;"
            " DO SLEEP(3); END",
        )
        end(driver_target, con)
        sql = f"CALL {procedure}()"
        session = backend(driver_target, con)
        end(driver_target, con)
    killer = threading.Timer(0.5, driver_target.kill_backend, (session,))
    killer.start()
    try:
        with pytest.raises(Exception) as lost:
            rows(driver_target, con, sql)
        assert not isinstance(lost.value, SteadyDBError), "the driver's own error"
    finally:
        killer.join()
    con.rollback()
    assert committed_keys(driver_target, table) == [1], "applied once, never re-run"
    rows(driver_target, con, f"INSERT INTO {table} VALUES (5)")
    end(driver_target, con)
    assert committed_keys(driver_target, table) == [1, 5]
    con.close()


@server_dbapi
def test_a_transaction_lost_during_its_first_statement_commits_none_of_the_rest(
    driver_target: Any,
) -> None:
    """Not in autocommit mode, the first statement begins the transaction (rule 2). Found by
    an outside attack: code that caught its loss and went on had statements 2 and 3 run on
    a new session and committed without statement 1. Now they fail, as every statement of
    a lost transaction does, until rollback(); then a new session."""
    table = make_table(driver_target)
    con = open_steady(driver_target)
    session = backend(driver_target, con)
    end(driver_target, con)
    sleep = "pg_sleep(3)" if driver_target.server.kind == "postgresql" else "SLEEP(3)"
    killer = threading.Timer(0.5, driver_target.kill_backend, (session,))
    killer.start()
    try:
        with pytest.raises(Exception) as lost:
            rows(driver_target, con, f"SELECT {sleep}")  # statement 1, killed mid-way
        assert not isinstance(lost.value, SteadyDBError), "the driver's own error"
    finally:
        killer.join()
    for key in (2, 3):  # the caller caught it and goes on
        with pytest.raises(Exception) as refused:
            rows(driver_target, con, f"INSERT INTO {table} VALUES ({key})")
        assert not isinstance(refused.value, AssertionError)
    with pytest.raises(Exception) as refused:
        con.commit()
    assert not isinstance(refused.value, AssertionError)
    assert committed_keys(driver_target, table) == [], "none of the rest, on any session"
    con.rollback()
    rows(driver_target, con, f"INSERT INTO {table} VALUES (4)")
    con.commit()
    assert committed_keys(driver_target, table) == [4]
    assert backend(driver_target, con) != session
    assert marker(driver_target, con) == "tether_marker", "setsession on the new session"
    con.close()


def test_maxusage_changes_the_backend_after_exactly_n_statements(server_target: Any) -> None:
    con = open_steady(server_target, maxusage=3)
    seen = []
    for _ in range(7):
        seen.append(backend(server_target, con))
        end(server_target, con)
    assert seen[0] == seen[1] == seen[2] != seen[3]
    assert seen[3] == seen[4] == seen[5] != seen[6]
    con.close()


@server_dbapi
@pytest.mark.parametrize("flag", [2, 4])
def test_a_dead_connection_is_found_when_the_ping_flag_says(driver_target: Any, flag: int) -> None:
    dbapi_target = driver_target
    checks: list[int] = []

    def check(raw: Any) -> bool:
        checks.append(1)
        cur = raw.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        return True

    con = open_steady(dbapi_target, ping=(flag, check))
    before = backend(dbapi_target, con)
    end(dbapi_target, con)
    dbapi_target.kill_backend(before)
    time.sleep(0.2)
    checks.clear()
    cur = con.cursor()
    assert len(checks) == (1 if flag == 2 else 0), "a round trip at cursor() only with flag 2"
    checks.clear()
    cur.execute(dbapi_target.backend_id_sql)
    assert len(checks) == (1 if flag == 4 else 0), "a round trip at execute() only with flag 4"
    assert cur.fetchone()[0] != before, "the statement ran on a new session"
    end(dbapi_target, con)
    con.close()


@server_dbapi
def test_a_ping_statement_the_server_rejects_is_a_configuration_error(
    driver_target: Any,
) -> None:
    """Taken for a dead session, a ping statement with a typo had a pool open connection
    after connection (512 in 3 s) and then report the database unreachable (found by an
    outside attack). The server answered: it is the setting, named, with the driver's
    error as its cause, and the session is left as it was."""
    target = driver_target
    bad = "SELECT * FROM no_such_table"
    con = open_steady(target, ping=(1, bad))  # 1: when asked (a pool's checkout)
    before = backend(target, con)
    end(target, con)
    with pytest.raises(PingStatementError, match="ping: the statement") as failure:
        con.check()
    assert isinstance(failure.value, ConfigurationError)
    assert isinstance(failure.value.__cause__, target.module.ProgrammingError)
    assert not con.transaction_open(), "what the failed check opened is rolled back"
    assert backend(target, con) == before, "the same session: it was never taken for dead"
    end(target, con)
    con.close()
    con = open_steady(target, ping=(4, bad))  # 4: before every statement
    with pytest.raises(PingStatementError):
        con.cursor().execute("SELECT 1")
    con.close()


@server_dbapi
@pytest.mark.parametrize("sql", ["COMMIT", "ROLLBACK"])
@pytest.mark.parametrize("then", ["commit", "rollback", "nothing"])
def test_sql_that_ends_the_transaction_leaves_the_next_statement_in_a_new_one(
    driver_target: Any, sql: str, then: str
) -> None:
    """A transaction ended by SQL through ``execute()``, then (or not) by ``commit()`` or
    ``rollback()``: the next statement opens a new transaction, which ``rollback()``
    undoes. Found by an outside attack on pgdb, whose own flag still said "in a
    transaction" (libpq idle): tether's commit() saw nothing to commit, pgdb sent no BEGIN
    for the next statement, and it committed by itself, for a pool's next borrower too."""
    target = driver_target
    table = make_table(target)
    con = open_steady(target)
    try:
        cur = con.cursor()
        cur.execute(f"INSERT INTO {table} VALUES (1)")
        cur.execute(sql)
        if then != "nothing":
            getattr(con, then)()
        cur.execute(f"INSERT INTO {table} VALUES (2)")
        assert con.transaction_open()
        con.rollback()
        expected = [1] if sql == "COMMIT" else []
        assert committed_keys(target, table) == expected, "the second INSERT was rolled back"
    finally:
        con.close()


@pytest.mark.parametrize("driver_target", ["psycopg", "pgdb"], indirect=True)
def test_a_ping_statement_that_starts_failing_never_aborts_an_open_transaction(
    driver_target: Any,
) -> None:
    """The check at ``cursor()`` and ``execute()`` runs only outside a transaction (a dead
    session could not be replaced inside one anyway). So a ping statement that starts to
    fail midway (a function dropped) cannot abort a transaction the caller began: on
    PostgreSQL its commit would then have rolled back in silence. The transaction
    commits whole; the next statement after it raises the configuration error."""
    target = driver_target
    table = make_table(target)
    health = target.unique_table("health")
    admin = target.connect()
    try:
        admin.autocommit = True
        cur = admin.cursor()
        cur.execute(f"CREATE FUNCTION {health}() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        con = open_steady(target, ping=(6, f"SELECT {health}()"))  # cursor() and execute()
        try:
            con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
            assert con.transaction_open()
            cur.execute(f"DROP FUNCTION {health}()")
            work = con.cursor()
            work.execute(f"INSERT INTO {table} VALUES (2)")
            con.commit()
            assert committed_keys(target, table) == [1, 2], "the transaction committed whole"
            with pytest.raises(PingStatementError, match=health):
                con.cursor().execute(f"INSERT INTO {table} VALUES (3)")
            assert not con.transaction_open(), "the failed check left nothing open"
        finally:
            con.close()
    finally:
        admin.close()
    assert committed_keys(target, table) == [1, 2]


@server_dbapi
@pytest.mark.parametrize("window", ["default", "an hour"])
def test_the_alive_bypass_window_decides_whether_the_socket_is_peeked(
    driver_target: Any, window: str, monkeypatch: Any
) -> None:
    # In autocommit mode, a session killed between two statements is replaced
    # before the second is sent only if tether peeks at the socket first; it
    # does not when the first answered less than ALIVE_BYPASS ago.
    from tether.steady import core

    if window == "an hour":
        monkeypatch.setattr(core, "ALIVE_BYPASS", 3600.0)
    if driver_target.name == "pgdb":
        con = open_steady(driver_target, on_connect=lambda raw: setattr(raw, "autocommit", True))
    else:
        con = open_steady(driver_target, autocommit=True)
    cur = con.cursor()
    cur.execute(driver_target.backend_id_sql)
    before = cur.fetchone()[0]
    assert con._state.settled, "known idle after a statement in autocommit mode"
    driver_target.kill_backend(before)  # takes 100 ms: longer than the default window
    time.sleep(0.2)
    if window == "default":
        cur.execute(driver_target.backend_id_sql)
        assert cur.fetchone()[0] != before, "replaced before sending"
    else:
        with pytest.raises(Exception) as failed:  # sent, may have run: not retried
            cur.execute(driver_target.backend_id_sql)
        assert con.adapter.is_connection_lost(con._dead, failed.value)
        cur.execute(driver_target.backend_id_sql)  # the next statement reopens
        assert cur.fetchone()[0] != before
    con.close()


@pytest.mark.parametrize("driver_target", ["pymysql"], indirect=True)
def test_autocommit_ended_by_sql_is_seen(driver_target: Any) -> None:
    # MySQL can leave autocommit mode by a statement; the SELECTs after it
    # open a transaction (a snapshot) that a lost session must not split.
    con = open_steady(driver_target, autocommit=True)
    cur = con.cursor()
    cur.execute("SET autocommit = 0")
    assert not con._state.settled, "autocommit mode changed: not known idle in autocommit mode"
    cur.execute(driver_target.backend_id_sql)
    session = cur.fetchone()[0]
    driver_target.kill_backend(session)
    time.sleep(0.2)
    import pymysql

    with pytest.raises(pymysql.err.OperationalError):
        cur.execute("SELECT 1")
    with pytest.raises(pymysql.err.Error):  # still the same, lost, transaction: no new session
        cur.execute("SELECT 1")
    con.rollback()
    cur.execute(driver_target.backend_id_sql)
    assert cur.fetchone()[0] != session
    con.close()


@server_dbapi
def test_results_are_never_taken_from_a_replaced_connection(driver_target: Any) -> None:
    dbapi_target = driver_target
    con = open_steady(dbapi_target)
    old = con.cursor()
    old.execute("SELECT 1 UNION ALL SELECT 2")
    assert old.fetchone()[0] == 1
    end(dbapi_target, con)
    session = backend(dbapi_target, con)
    end(dbapi_target, con)  # outside a transaction, so the next statement may reopen
    dbapi_target.kill_backend(session)
    time.sleep(0.2)
    backend(dbapi_target, con)  # reopens transparently
    with pytest.raises(InvalidCursorError):
        old.fetchone()
    con.close()


def test_a_server_that_stays_down_fails_fast(server_target: Any) -> None:
    con = open_steady(server_target)
    end(server_target, con)
    server_target.server.stop(mode="fast")
    try:
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(Exception) as failure:
                backend(server_target, con)
            assert not isinstance(failure.value, AssertionError)
        assert time.monotonic() - started < 10
    finally:
        server_target.server.start()
    assert marker(server_target, con) == "tether_marker"
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg", "pymysql"], indirect=True)
def test_a_creator_function_gets_its_drivers_adapter(driver_target: Any) -> None:
    target = driver_target
    con = connect(lambda: target.connect())
    assert con.adapter.name == target.name, "refined from the first connection"
    before = backend(target, con)
    end(target, con)
    target.kill_backend(before)
    assert backend(target, con) != before, "the driver's own loss classification applies"
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
def test_a_closed_connections_state_stays_readable(driver_target: Any) -> None:
    """psycopg's ``con.closed`` after ``close()``: True, as on the driver's own
    connection (tether raised "the steady connection is closed")."""
    con = open_steady(driver_target)
    assert con.closed is False
    con.close()
    assert con.closed is True
    with pytest.raises(Exception, match="closed"):
        con.cursor().execute("SELECT 1")


@server_dbapi
def test_a_reopen_keeps_the_borrowers_settings_over_on_connects(driver_target: Any) -> None:
    """on_connect turns autocommit on, the caller turns it off: after a transparent
    reopen the caller's setting holds, so its rollback() still undoes its INSERT (found
    by an outside attack: on_connect ran after the replay and won)."""
    target = driver_target
    table = make_table(target)

    def autocommit_on(raw: Any) -> None:
        raw.autocommit(True) if target.name == "pymysql" else setattr(raw, "autocommit", True)

    con = connect(target.creator, *target.args, on_connect=autocommit_on, **target.kwargs)
    if target.name == "pymysql":
        con.autocommit(False)
    else:
        con.autocommit = False
    before = backend(target, con)
    con.rollback()
    target.kill_backend(before)
    time.sleep(0.2)
    cur = con.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1)")  # reopened: nothing was open
    assert backend(target, con) != before
    con.rollback()
    assert committed_keys(target, table) == []
    con.close()


@pytest.mark.parametrize("driver_target", ["pymysql"], indirect=True)
def test_a_session_setter_after_an_idle_kill_reopens_as_a_statement_does(
    driver_target: Any,
) -> None:
    """PyMySQL's select_db() and autocommit() after the server ended the idle session
    (found by an outside attack: they raised 2013 where a statement reopened)."""
    target = driver_target
    con = connect(target.creator, *target.args, **target.kwargs)
    database = rows(target, con, "SELECT DATABASE()")[0][0]
    for call in (lambda: con.select_db(database), lambda: con.autocommit(True)):
        before = backend(target, con)
        end(target, con)
        target.kill_backend(before)
        time.sleep(0.2)
        call()
        assert backend(target, con) != before
    assert rows(target, con, "SELECT @@autocommit") == [(1,)]
    con.close()


@pytest.mark.parametrize("driver_target", ["pymysql"], indirect=True)
def test_ping_reconnect_inside_a_lost_transaction_raises_and_commits_nothing(
    driver_target: Any,
) -> None:
    """PyMySQL's ``ping(reconnect=True)`` (a keep-alive idiom) on a session the server
    ended inside a transaction (found by an outside attack: the driver reconnected by
    itself, and the transaction's second half committed alone)."""
    target = driver_target
    table = make_table(target)
    con = open_steady(target)
    cur = con.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1)")  # autocommit off: a transaction is open
    target.kill_backend(backend(target, con))
    with pytest.raises(target.module.OperationalError):
        con.ping(reconnect=True)
    with pytest.raises(target.module.Error):  # every later statement of it fails too
        con.cursor().execute(f"INSERT INTO {table} VALUES (2)")
    with pytest.raises(Exception):  # noqa: B017 (the driver's error or tether's)
        con.commit()
    con.rollback()
    assert committed_keys(target, table) == []
    con.ping(True)  # the transaction is over: a new session, prepared by tether
    assert marker(target, con) == "tether_marker"
    con.close()


@pytest.mark.parametrize("driver_target", ["pymysql"], indirect=True)
@pytest.mark.parametrize("call", ["keyword", "positional"])
def test_ping_reconnect_outside_a_transaction_reopens_the_steady_way(
    driver_target: Any, call: str
) -> None:
    """Outside a transaction ``ping(reconnect=True)`` after an idle kill gives a working
    session prepared by tether: setsession run, the caller's settings replayed (found by
    an outside attack: PyMySQL reconnected by itself and skipped both)."""
    target = driver_target
    con = open_steady(target)
    con.set_character_set("latin1")  # a setting of the caller's, replayed on a new session
    before = backend(target, con)
    end(target, con)
    target.kill_backend(before)
    time.sleep(0.2)
    assert (con.ping(reconnect=True) if call == "keyword" else con.ping(True)) is None
    assert backend(target, con) != before
    assert marker(target, con) == "tether_marker"
    assert rows(target, con, "SELECT @@character_set_client") == [("latin1",)]
    assert con.ping() is None  # ping() with no argument: the driver's, as before
    con.close()


@pytest.mark.parametrize("driver_target", ["pymysql"], indirect=True)
@pytest.mark.parametrize("configured", [True, False], ids=["pool-on", "pool-off"])
def test_a_reopen_keeps_an_autocommit_mode_set_in_sql(driver_target: Any, configured: bool) -> None:
    """PyMySQL: the caller's ``SET autocommit = 0`` (or ``= 1``) in SQL, which
    ``get_autocommit()`` follows, holds across a transparent reopen after an idle kill
    (found by an outside attack: the reopen gave back on_connect's mode, so the
    caller's rollback() undid nothing, or its autocommit INSERT was never committed)."""
    target = driver_target
    table = make_table(target)
    con = connect(
        target.creator,
        *target.args,
        on_connect=lambda raw: raw.autocommit(configured),
        **target.kwargs,
    )
    before = backend(target, con)
    end(target, con)
    con.cursor().execute(f"SET autocommit = {0 if configured else 1}")
    con.commit()
    assert con.get_autocommit() is not configured
    target.kill_backend(before)
    time.sleep(0.2)
    con.cursor().execute(f"INSERT INTO {table} VALUES (1)")  # reopened: nothing was open
    assert backend(target, con) != before
    assert con.get_autocommit() is not configured
    if configured:
        con.rollback()  # the caller's transaction: undone
        assert committed_keys(target, table) == []
    else:
        assert committed_keys(target, table) == [1]  # the caller's autocommit: committed
    con.close()


@server_dbapi
def test_a_reopen_keeps_autocommit_set_on_the_driver_connection(driver_target: Any) -> None:
    """``autocommit`` switched on the driver connection itself (``dbapi_connection``,
    past tether's replay) holds across a transparent reopen, as the session's other
    settings do: the INSERT after the reopen commits by itself."""
    target = driver_target
    table = make_table(target)
    con = connect(target.creator, *target.args, **target.kwargs)  # autocommit off
    raw = con.dbapi_connection
    if target.name == "pymysql":
        raw.autocommit(True)
    else:
        raw.autocommit = True
    before = backend(target, con)
    target.kill_backend(before)
    time.sleep(0.2)
    con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    assert backend(target, con) != before
    con.close()  # no commit: in autocommit mode there is nothing left to commit
    assert committed_keys(target, table) == [1]


@server_dbapi
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_session_killed_after_a_commit_outside_autocommit_is_replaced_before_sending(
    driver_target: Any, end: str
) -> None:
    # A commit or rollback of tether's own leaves the session known idle outside
    # autocommit mode: the next statement skips the driver reads that would tell,
    # but not the socket look after a pause, so a kill in between is seen and the
    # statement goes to a new session (it starts a transaction: nothing is split).
    con = open_steady(driver_target)
    table = make_table(driver_target)
    cur = con.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1)")
    before = backend(driver_target, con)
    getattr(con, end)()
    driver_target.kill_backend(before)
    time.sleep(0.2)
    cur.execute(f"INSERT INTO {table} VALUES (2)")
    assert backend(driver_target, con) != before, "replaced before sending"
    con.commit()
    assert committed_keys(driver_target, table) == ([1, 2] if end == "commit" else [2])
    con.close()


@server_dbapi
def test_a_statement_past_tether_after_a_commit_is_seen_before_the_next_one(
    driver_target: Any, monkeypatch: Any
) -> None:
    # Known idle after a commit, then an INSERT on the driver connection itself:
    # the next statement must know a transaction is open, even with no socket
    # look at all (an hour's ALIVE_BYPASS), so that a kill splits nothing.
    from tether.steady import core

    monkeypatch.setattr(core, "ALIVE_BYPASS", 3600.0)
    con = open_steady(driver_target)
    table = make_table(driver_target)
    cur = con.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1)")
    con.commit()
    raw_cur = con.dbapi_connection.cursor()
    raw_cur.execute(f"INSERT INTO {table} VALUES (2)")
    raw_cur.close()
    driver_target.kill_backend(backend_of_raw(driver_target, con.dbapi_connection))
    time.sleep(0.2)
    error = driver_target.module.Error
    with pytest.raises(error):  # lost inside the transaction: never on a new session
        cur.execute(f"INSERT INTO {table} VALUES (3)")
    with pytest.raises(error):
        cur.execute(f"INSERT INTO {table} VALUES (4)")  # until rollback()
    con.rollback()
    cur.execute(f"INSERT INTO {table} VALUES (5)")
    con.commit()
    assert committed_keys(driver_target, table) == [1, 5]
    con.close()


def backend_of_raw(target: Any, raw: Any) -> int:
    """The backend of a driver connection, asked without a statement through tether."""
    if target.name == "psycopg":
        return int(raw.info.backend_pid)
    if target.name == "pymysql":
        return int(raw.thread_id())
    return int(raw._cnx.backend_pid)  # pgdb: its libpq connection


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
@pytest.mark.parametrize("block", ["transaction", "pipeline", "nested transactions"])
def test_a_session_lost_inside_a_psycopg_block_in_autocommit_mode_ends_with_the_block(
    driver_target: Any, block: str
) -> None:
    # Rule 2 inside the block (its statements fail, none runs on a new
    # session); once the block is left, its transaction has ended with it, and
    # autocommit code, which never calls rollback(), gets a new session (found
    # by an outside attack: every later statement failed until rollback()).
    con = open_steady(driver_target, autocommit=True)
    table = make_table(driver_target)
    session = backend(driver_target, con)
    error = driver_target.module.Error
    # (The outer block of the nested case exits quietly: psycopg's own doing.)
    outer = contextlib.suppress(error) if block == "nested transactions" else pytest.raises(error)
    with outer, con.pipeline() if block == "pipeline" else con.transaction():
        if block == "nested transactions":
            with pytest.raises(error), con.transaction():
                con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
                driver_target.kill_backend(session)
                time.sleep(0.2)
                con.cursor().execute(f"INSERT INTO {table} VALUES (2)")
            with pytest.raises(error):  # the outer block's transaction was lost too
                con.cursor().execute(f"INSERT INTO {table} VALUES (3)")
        else:
            con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
            driver_target.kill_backend(session)
            time.sleep(0.2)
            con.cursor().execute(f"INSERT INTO {table} VALUES (2)")
            con.cursor().execute(f"INSERT INTO {table} VALUES (3)")
    con.cursor().execute(f"INSERT INTO {table} VALUES (4)")  # autocommit: a new session
    assert backend(driver_target, con) != session
    assert committed_keys(driver_target, table) == [4]
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
@pytest.mark.parametrize("prepared", [False, True])
def test_a_tpc_commit_that_failed_with_the_session_ends_the_transaction(
    driver_target: Any, prepared: bool
) -> None:
    # Rule 3 for two-phase commit: the session is gone, and with it the
    # transaction; the next statement gets a new connection (found by an outside
    # attack: neither tpc_rollback() nor any statement got past the dead one).
    con = open_steady(driver_target)
    table = make_table(driver_target)
    session = backend(driver_target, con)
    con.commit()
    con.tpc_begin(con.xid(1, f"tether-{table}", "b"))
    con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    if prepared:
        con.tpc_prepare()
    driver_target.kill_backend(session)
    time.sleep(0.2)
    with pytest.raises(driver_target.module.Error):
        con.tpc_commit()
    assert backend(driver_target, con) != session
    con.commit()
    raw = driver_target.connect()
    try:
        raw.autocommit = True
        for (gid,) in raw.execute("SELECT gid FROM pg_prepared_xacts").fetchall():
            raw.execute(f"ROLLBACK PREPARED '{gid}'")
    finally:
        raw.close()
    assert committed_keys(driver_target, table) == []
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
@pytest.mark.parametrize("first", ["savepoint", "copy", "driver cursor"])
def test_a_session_lost_inside_a_psycopg_block_is_never_replaced_under_it(
    driver_target: Any, first: str
) -> None:
    # Rule 2 while the block is open, whatever meets the loss first: found by an
    # outside attack, a savepoint's enter (or a copy, or a driver cursor) failed
    # without tether seeing it, and the next INSERT ran on a new session in
    # autocommit mode, committed alone, and the block exited without an error.
    con = open_steady(driver_target, autocommit=True)
    table = make_table(driver_target)
    session = backend(driver_target, con)
    error = driver_target.module.Error
    with contextlib.suppress(error), con.transaction():
        con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        driver_target.kill_backend(session)
        time.sleep(0.2)
        with contextlib.suppress(error):
            if first == "savepoint":
                with con.transaction():
                    con.cursor().execute("SELECT 1")
            elif first == "copy":
                with con.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                    copy.write_row((9,))
            else:
                con.dbapi_connection.cursor().execute("SELECT 1")
        with pytest.raises(error):
            con.cursor().execute(f"INSERT INTO {table} VALUES (2)")
    con.cursor().execute(f"INSERT INTO {table} VALUES (3)")  # after the block: a new session
    assert committed_keys(driver_target, table) == [3]
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg", "pymysql"], indirect=True)
def test_a_ping_statement_that_fails_leaves_no_aborted_transaction(driver_target: Any) -> None:
    # A ping statement that raises (here always) on an idle session outside
    # autocommit left psycopg's session in an aborted transaction: every
    # statement failed, and it was never replaced (found by an outside attack).
    # It fails as it runs (division by zero; a subquery of two rows), not as one
    # the server rejects: that is a configuration error (see above).
    if driver_target.server.kind == "postgresql":
        failing = "SELECT 1/0"  # DataError
    else:
        failing = "SELECT (SELECT 1 UNION SELECT 2)"  # OperationalError 1242
    con = open_steady(driver_target, ping=(4, failing))
    table = make_table(driver_target)
    for key in (1, 2, 3):
        cur = con.cursor()
        cur.execute(f"INSERT INTO {table} VALUES ({key})")
        con.commit()
    assert committed_keys(driver_target, table) == [1, 2, 3]
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
def test_a_failed_commit_inside_open_blocks_does_not_end_them(driver_target: Any) -> None:
    # Nested transaction() blocks, entered and kept; the session dies inside;
    # a commit() then fails. The blocks are still open: the next statement must
    # fail too, not run on a new session in autocommit mode (found by an
    # outside attack: it autocommitted). rollback() ends the lost transaction.
    con = open_steady(driver_target, autocommit=True)
    table = make_table(driver_target)
    session = backend(driver_target, con)
    outer = con.transaction()
    outer.__enter__()
    inner = con.transaction()
    inner.__enter__()
    con.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(driver_target.module.Error):
        con.cursor().execute("SELECT pg_terminate_backend(pg_backend_pid())")
    with pytest.raises(driver_target.module.Error):
        con.commit()
    with pytest.raises(driver_target.module.Error):
        con.cursor().execute(f"INSERT INTO {table} VALUES (2)")
    con.rollback()
    con.cursor().execute(f"INSERT INTO {table} VALUES (3)")
    assert backend(driver_target, con) != session
    assert committed_keys(driver_target, table) == [3]
    del outer, inner
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
def test_a_block_dropped_unexited_then_a_loss_gives_a_new_session(driver_target: Any) -> None:
    # psycopg ends a transaction() block's transaction when the block object
    # is dropped without __exit__; the session is then idle in autocommit mode,
    # as the driver says. Found by an outside attack: the block still counted
    # open in tether, a statement lost on that session dropped it, and every
    # later statement, rollback() or not, raised a builtin AttributeError.
    con = open_steady(driver_target, autocommit=True)
    table = make_table(driver_target)
    session = backend(driver_target, con)
    con.transaction().__enter__()  # and dropped at once
    cur = con.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (1)")  # autocommitted, as psycopg does it
    with pytest.raises(driver_target.module.Error):
        # The session dies during the statement: it may have been applied, not retried.
        con.cursor().execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert backend(driver_target, con) != session  # no rollback() needed: nothing was open
    con.rollback()
    assert backend(driver_target, con) != session
    assert committed_keys(driver_target, table) == [1]
    con.close()


@pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
@pytest.mark.parametrize("autocommit", [False, True])
@pytest.mark.parametrize("block", ["transaction", "pipeline"])
def test_rollback_after_a_loss_inside_a_block_left_open_gives_a_new_session(
    driver_target: Any, autocommit: bool, block: str
) -> None:
    # Rule 2: after rollback(), the next statement gets a new connection, also
    # when the block (entered with __enter__ alone) was never left: found by an
    # outside attack, it raised AttributeError, the block still counted open.
    con = open_steady(driver_target, autocommit=autocommit)
    session = backend(driver_target, con)
    if not autocommit:
        con.commit()
    opened = con.pipeline() if block == "pipeline" else con.transaction()
    opened.__enter__()
    driver_target.kill_backend(session)
    time.sleep(0.2)
    with pytest.raises(driver_target.module.Error):
        con.cursor().execute("SELECT 1")
        con.cursor().execute("SELECT 1")  # (a pipeline may send the first one later)
    con.rollback()
    assert backend(driver_target, con) != session
    con.close()
