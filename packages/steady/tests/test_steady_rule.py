"""The reopen rule, exhaustively, on a fake driver whose server can kill sessions.

Every promise here is also shown on real servers in test_steady_real.py.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
from fakedb import FakeServer, OperationalError, ProgrammingError, make_module

from tether.steady import (
    InvalidCursor,
    InvalidCursorError,
    SetSessionError,
    SteadyDBConnection,
    SteadyDBError,
    __version__,
    connect,
)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def steady(server: FakeServer, *args: Any, **kwargs: Any) -> SteadyDBConnection:
    return connect(make_module(server), *args, **kwargs)


def session_of(con: SteadyDBConnection) -> int:
    cur = con.cursor()
    cur.execute("SELECT session")
    return int(cur.fetchone()[0])


def test_version_and_dbutils_aliases() -> None:
    assert __version__ == "0.1.0"
    assert InvalidCursor is InvalidCursorError


# -- outside a transaction: transparent ---------------------------------------------------------


def test_a_statement_that_found_the_loss_is_not_retried_the_next_one_reopens(
    server: FakeServer, caplog: Any
) -> None:
    """In autocommit mode: the driver cannot tell whether the statement reached the server,
    and run again it could be applied twice (found by an outside attack). A session found
    lost *before* sending (the adapter's socket look, ``never_sent``) is replaced
    transparently: see the real drivers' tests."""
    con = steady(server, setsession=["SET search_path TO app"], autocommit=True)
    server.kill_all()
    caplog.set_level(logging.INFO, logger="tether.steady")
    cur = con.cursor()
    with pytest.raises(OperationalError):
        cur.execute("INSERT one")
    assert server.committed == []
    assert "may have been applied, so it is not retried" in caplog.text
    cur.execute("INSERT two")  # the next statement: a new session, setsession first
    assert server.committed == ["INSERT two"]
    assert server.statements(2) == ["SET search_path TO app", "INSERT two"]
    assert "reopening dbapi connection" in caplog.text


def test_outside_autocommit_a_first_statement_that_found_the_loss_loses_its_transaction(
    server: FakeServer, caplog: Any
) -> None:
    """Outside autocommit mode the first statement begins the transaction (rule 2): code
    that catches its error and goes on must not have the rest committed on a new session
    without it (found by an outside attack: statements 2 and 3 were committed without
    statement 1). Not retried either: a statement can commit by itself (a CALL, "...;
    COMMIT; ..."). The next statements fail until rollback(), which reopens."""
    con = steady(server, setsession=["SET search_path TO app"])
    con.commit()
    server.kill_all()
    caplog.set_level(logging.INFO, logger="tether.steady")
    cur = con.cursor()
    with pytest.raises(OperationalError):
        cur.execute("INSERT one")
    assert "lost during the first statement of a transaction" in caplog.text
    for statement in ("INSERT two", "INSERT three"):
        with pytest.raises(OperationalError):  # the same, lost, transaction
            cur.execute(statement)
    with pytest.raises(OperationalError):
        con.commit()  # the transaction is lost: never reported as committed
    assert server.sessions == 1, "no new session inside the lost transaction"
    con.rollback()  # ends it without error
    cur.execute("INSERT four")  # a new session, setsession first
    con.commit()
    assert server.committed == ["INSERT four"]
    assert server.statements(2) == ["SET search_path TO app", "INSERT four"]
    assert "reopening dbapi connection" in caplog.text


def test_sql_errors_are_not_taken_for_a_lost_connection(server: FakeServer) -> None:
    con = steady(server)
    cur = con.cursor()
    with pytest.raises(ProgrammingError):
        cur.execute("FAIL")
    assert server.sessions == 1


# -- inside a transaction: never split over two sessions ----------------------------------------


def test_loss_inside_an_implicit_transaction_raises_and_is_not_retried(
    server: FakeServer, caplog: Any
) -> None:
    con = steady(server)
    cur = con.cursor()
    cur.execute("INSERT a")  # implicit transaction: not committed yet
    server.kill_all()
    with pytest.raises(OperationalError):
        cur.execute("INSERT b")
    for _ in range(3):
        with pytest.raises(OperationalError):  # still the same, dead, transaction
            cur.execute("INSERT c")
    assert caplog.text.count("lost inside a transaction") == 1, "logged once, not per statement"
    assert server.sessions == 1, "no new session inside the transaction"
    con.rollback()  # ends the lost transaction without error
    cur.execute("INSERT d")
    con.commit()
    assert server.committed == ["INSERT d"], "nothing of the interrupted transaction"
    assert server.statements(2) == ["INSERT d"]


def test_loss_inside_begin_raises_and_reopens_after_rollback(server: FakeServer) -> None:
    con = steady(server, autocommit=True)
    con.begin()
    cur = con.cursor()
    cur.execute("SELECT 1")
    server.kill_all()
    with pytest.raises(OperationalError):
        cur.execute("INSERT x")
    assert server.sessions == 1
    con.rollback()
    cur.execute("INSERT y")
    assert server.committed == ["INSERT y"]


def _assert_protected_after_loss(server: FakeServer, con: SteadyDBConnection) -> None:
    """The open transaction is lost: its statements fail until rollback, on no new session."""
    cur = con.cursor()
    server.kill_all()
    with pytest.raises(OperationalError):
        cur.execute("INSERT b")
    with pytest.raises(OperationalError):  # not run in autocommit on a new session
        cur.execute("INSERT c")
    assert server.sessions == 1
    con.rollback()
    cur.execute("INSERT d")
    assert server.committed == ["INSERT d"]


def test_explicit_begin_statement_in_autocommit_mode_is_protected(server: FakeServer) -> None:
    # The statement before BEGIN left the session idle; BEGIN itself must not
    # be taken for another statement that leaves it so.
    con = steady(server, autocommit=True)
    cur = con.cursor()
    cur.execute("SELECT 1")
    cur.execute("BEGIN")
    cur.execute("INSERT a")
    _assert_protected_after_loss(server, con)


@pytest.mark.parametrize("how", ["connection method", "cursor method", "dbapi_connection"])
def test_transactions_opened_past_tether_are_protected(server: FakeServer, how: str) -> None:
    # Right after a statement tether knows the session is idle; the driver's
    # own methods can change that without tether seeing it.
    con = steady(server, autocommit=True)
    cur = con.cursor()
    cur.execute("SELECT 1")
    if how == "connection method":
        con.start_transaction()
    elif how == "cursor method":
        cur.copy("BEGIN")
    else:
        con.dbapi_connection.start_transaction()
    _assert_protected_after_loss(server, con)


def test_commit_of_a_lost_transaction_raises_and_is_never_retried(server: FakeServer) -> None:
    con = steady(server)
    cur = con.cursor()
    cur.execute("INSERT a")
    server.kill_all()
    with pytest.raises(OperationalError):
        con.commit()
    assert server.committed == []
    assert server.sessions == 1
    cur.execute("INSERT b")  # the transaction ended with the failed commit: reopen now
    con.commit()
    assert server.committed == ["INSERT b"]


def test_commit_after_a_loss_in_the_transaction_raises(server: FakeServer) -> None:
    con = steady(server)
    cur = con.cursor()
    cur.execute("INSERT a")
    server.kill_all()
    with pytest.raises(OperationalError):
        cur.execute("INSERT b")
    with pytest.raises((OperationalError, SteadyDBError)):
        con.commit()
    assert server.committed == []


# -- autocommit: re-running could apply twice ---------------------------------------------------


def test_autocommit_statement_is_not_rerun_after_a_loss(server: FakeServer) -> None:
    con = steady(server, autocommit=True)
    cur = con.cursor()
    server.kill_all()
    with pytest.raises(OperationalError):
        cur.execute("INSERT once")
    assert [sql for _, sql in server.log] == []
    cur.execute("INSERT again")  # the next statement gets a new session
    assert server.committed == ["INSERT again"]
    assert server.sessions == 2


# -- maxusage, lifetime, setsession, a server that stays down -----------------------------------


def test_maxusage_reopens_after_exactly_n_statements(server: FakeServer) -> None:
    con = steady(server, 3)
    cur = con.cursor()
    sessions = []
    for _ in range(7):
        cur.execute("SELECT session")
        sessions.append(cur.fetchone()[0])
        con.commit()
    assert sessions == [1, 1, 1, 2, 2, 2, 3]


def test_maxusage_never_splits_a_transaction(server: FakeServer) -> None:
    con = steady(server, 2)
    cur = con.cursor()
    for sql in ("INSERT a", "INSERT b", "INSERT c"):
        cur.execute(sql)
    con.commit()
    assert server.committed == ["INSERT a", "INSERT b", "INSERT c"]
    assert server.sessions == 1


def test_max_lifetime_reopens_between_transactions(server: FakeServer) -> None:
    con = steady(server, max_lifetime=0.01)
    import time

    time.sleep(0.02)
    assert session_of(con) == 2
    con.commit()


def test_failing_setsession_raises_a_clear_error_and_leaves_no_session(server: FakeServer) -> None:
    with pytest.raises(SetSessionError, match="preparing a new .* connection failed"):
        steady(server, setsession=["FAIL now"])
    assert server.open == []


def test_on_connect_runs_after_setsession_on_every_new_connection(server: FakeServer) -> None:
    calls: list[int] = []
    con = steady(server, setsession=["SET x"], on_connect=lambda raw: calls.append(raw.session))
    server.kill_all()
    with pytest.raises(OperationalError):
        con.cursor().execute("SELECT 1")  # found the loss: not retried
    con.rollback()  # it began a transaction (rule 2): lost until rollback()
    con.cursor().execute("SELECT 1")
    assert calls == [1, 2]


def test_a_server_that_stays_down_fails_each_attempt_fast(server: FakeServer) -> None:
    con = steady(server)
    server.kill_all()
    server.down = True
    cur = con.cursor()
    with pytest.raises(OperationalError, match="unexpectedly"):
        cur.execute("SELECT 1")  # found the loss (not retried: it was sent)
    con.rollback()  # it began a transaction (rule 2): lost until rollback()
    for _ in range(3):
        with pytest.raises(OperationalError, match="refused"):
            cur.execute("SELECT 1")
    server.down = False
    cur.execute("SELECT session")
    assert cur.fetchone()[0] == 2


# -- cursors ------------------------------------------------------------------------------------


def test_results_of_a_replaced_connection_are_not_returned(server: FakeServer) -> None:
    con = steady(server, autocommit=True)
    old = con.cursor()
    old.execute("SELECT session")
    server.kill_all()
    other = con.cursor()
    with pytest.raises(OperationalError):
        other.execute("INSERT x")  # autocommit: not retried, connection dropped
    other.execute("SELECT session")  # reopens
    with pytest.raises(InvalidCursorError, match="reopened"):
        old.fetchall()
    old.execute("SELECT session")  # a new execute is fine
    assert old.fetchall() == [(2,)]


# -- ping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "on_cursor", "on_execute"),
    [(0, False, False), (1, False, False), (2, True, False), (4, False, True), (7, True, True)],
)
def test_ping_checks_happen_exactly_when_the_bitmask_says(
    server: FakeServer, flag: int, on_cursor: bool, on_execute: bool
) -> None:
    checks: list[str] = []
    con = steady(server, ping=(flag, lambda raw: checks.append("ping")))
    checks.clear()
    cur = con.cursor()
    assert checks == (["ping"] if on_cursor else [])
    checks.clear()
    cur.execute("SELECT 1")
    assert checks == (["ping"] if on_execute else [])
    checks.clear()
    assert con.check() == (True if flag & 1 else None)


def test_a_failed_ping_reopens_before_the_statement(server: FakeServer) -> None:
    con = steady(server, ping=(4, "SELECT 1"), autocommit=True)
    server.kill_all()
    cur = con.cursor()
    cur.execute("INSERT safe")  # the ping found the loss before sending: no error
    assert server.committed == ["INSERT safe"]


# -- close, failures, isfatal -------------------------------------------------------------------


def test_non_closeable_close_rolls_back_and_stays_open(server: FakeServer) -> None:
    con = steady(server, closeable=False)
    cur = con.cursor()
    cur.execute("INSERT a")
    con.close()
    assert server.open and not server.open[0].pending
    cur.execute("INSERT b")
    con.commit()
    assert server.committed == ["INSERT b"]


def test_closed_connection_says_so(server: FakeServer) -> None:
    con = steady(server)
    con.close()
    with pytest.raises(SteadyDBError, match="closed"):
        con.cursor()


def test_failures_and_isfatal_decide_what_is_lost(server: FakeServer) -> None:
    con = steady(server, failures=ProgrammingError, isfatal=lambda exc: "syntax" in str(exc))
    cur = con.cursor()
    with pytest.raises(ProgrammingError):
        cur.execute("FAIL")  # taken for a loss: dropped (not retried: it reached the server)
    assert server.sessions == 1
    con.rollback()  # it began a transaction (rule 2): lost until rollback()
    cur.execute("SELECT session")  # the next statement: a new session
    assert cur.fetchone()[0] == 2


def test_driver_attributes_pass_through(server: FakeServer) -> None:
    con = steady(server)
    assert con.session == 1  # the fake driver's own attribute
    assert con.dbapi_connection.session == 1


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"maxusage": -1}, ValueError, "maxusage"),
        ({"maxusage": "5"}, TypeError, "maxusage"),
        ({"setsession": "SET x"}, TypeError, "setsession"),
        ({"failures": 3}, TypeError, "failures"),
        ({"isfatal": 3}, TypeError, "isfatal"),
        ({"ping": 8}, ValueError, "ping"),
        ({"ping": "x", "max_lifetime": 0}, ValueError, "max_lifetime"),
        ({"ping": [1]}, TypeError, "ping"),
        ({"on_connect": 1}, TypeError, "on_connect"),
    ],
)
def test_bad_input_names_the_parameter(
    server: FakeServer, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        steady(server, **kwargs)


def test_bad_creator_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="creator"):
        connect(42)


def test_repr_has_no_password() -> None:
    con = connect(lambda password: sqlite3.connect(":memory:"), password="hunter2")
    assert "hunter2" not in repr(con)
    con.close()
