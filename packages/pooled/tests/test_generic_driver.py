"""A DB-API 2 driver tether has no adapter for, on a real server (MariaDB through PyMySQL).

The module here is the test's own: connections that wrap PyMySQL's and have a
non-standard ``query()`` method, as many drivers have one. tether knows
nothing of it (the generic adapter): whether a transaction is open, it cannot
read; it knows only what ran through it.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pymysql
import pytest

from tether.pooled import PooledDB

pytestmark = [pytest.mark.server]


_ERRORS = (
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
)  # fmt: skip


def _generic_module() -> types.ModuleType:
    module = types.ModuleType("unknown_driver")

    class Connection:
        def __init__(self, raw: Any) -> None:
            self._raw = raw

        def cursor(self) -> Any:
            return self._raw.cursor()

        def commit(self) -> None:
            self._raw.commit()

        def rollback(self) -> None:
            self._raw.rollback()

        def close(self) -> None:
            self._raw.close()

        def query(self, sql: str) -> Any:  # a driver's own extra: past tether
            return self._raw.query(sql)

    def connect(**kwargs: Any) -> Connection:
        return Connection(pymysql.connect(**kwargs))

    module.__dict__.update(
        apilevel="2.0",
        threadsafety=1,
        paramstyle="pyformat",
        connect=connect,
        Connection=Connection,
        **{name: getattr(pymysql, name) for name in _ERRORS},
    )
    return module


@pytest.fixture
def ledger(mariadb_server: Any) -> Any:
    mariadb_server.admin_execute("DROP TABLE IF EXISTS generic_ledger")
    mariadb_server.admin_execute("CREATE TABLE generic_ledger (id INT PRIMARY KEY, amount INT)")
    yield lambda: mariadb_server.admin_execute("SELECT id, amount FROM generic_ledger ORDER BY id")
    mariadb_server.admin_execute("DROP TABLE IF EXISTS generic_ledger")


def _kwargs(server: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }


@pytest.mark.parametrize("limit", ["maxusage", "max_lifetime"])
@pytest.mark.parametrize("past", ["driver method", "dbapi_connection"])
def test_a_usage_limit_never_reopens_inside_a_transaction_begun_past_tether(
    mariadb_server: Any, ledger: Any, limit: str, past: str
) -> None:
    # steady README, rule 2: inside a transaction the connection is never
    # replaced. The debit runs past tether, so tether cannot know a
    # transaction is open: a reopen for maxusage or max_lifetime there would
    # lose the debit with the old session and commit the credit alone (found
    # by an outside attack). It waits for the next checkout instead.
    extra: dict[str, Any] = {"maxusage": 1} if limit == "maxusage" else {"max_lifetime": 0.05}
    pool = PooledDB(_generic_module(), **extra, **_kwargs(mariadb_server))
    try:
        with pool.connection() as db:
            cur = db.cursor()
            cur.execute("SELECT CONNECTION_ID()")  # uses maxusage up
            session = cur.fetchall()[0][0]
            db.commit()
            time.sleep(0.1)  # past max_lifetime
            debit = "INSERT INTO generic_ledger VALUES (1, -10)"
            if past == "driver method":
                db.query(debit)
            else:
                raw = db.dbapi_connection.cursor()
                raw.execute(debit)
                raw.close()
            cur.execute("INSERT INTO generic_ledger VALUES (2, 10)")
            db.commit()
        assert ledger() == [(1, -10), (2, 10)], "half a transaction committed"
        with pool.connection() as db:  # the next checkout: the limit applies now
            cur = db.cursor()
            cur.execute("SELECT CONNECTION_ID()")
            assert cur.fetchall()[0][0] != session, "reopened for the limit at the next checkout"
    finally:
        pool.close()


@pytest.mark.parametrize("limit", ["maxusage", "max_lifetime"])
def test_a_steady_connections_limit_waits_for_the_transaction_begun_past_tether(
    mariadb_server: Any, ledger: Any, limit: str
) -> None:
    # The same rule one layer down: a steady connection's own limits.
    from tether.steady import connect

    extra: dict[str, Any] = {"maxusage": 1} if limit == "maxusage" else {"max_lifetime": 0.05}
    con = connect(_generic_module(), **extra, **_kwargs(mariadb_server))
    try:
        cur = con.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        session = cur.fetchall()[0][0]
        con.commit()
        time.sleep(0.1)
        con.query("INSERT INTO generic_ledger VALUES (1, -10)")
        cur.execute("INSERT INTO generic_ledger VALUES (2, 10)")
        con.commit()
        assert ledger() == [(1, -10), (2, 10)], "half a transaction committed"
        # A driver object taken during it could open a transaction after any commit,
        # unseen: a steady connection alone has no checkout to end, so the limit waits.
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchall()[0][0] == session
    finally:
        con.close()


@pytest.mark.parametrize("taken", ["dbapi_cursor", "dbapi_connection"])
def test_a_driver_object_taken_before_a_commit_and_used_after_it_is_still_seen(
    mariadb_server: Any, ledger: Any, taken: str
) -> None:
    # Found by an outside attack: tether's commit had made the checkout count as
    # clean again, so an INSERT through a driver cursor taken before it was
    # neither rolled back at checkin (the next borrower committed it) nor
    # protected from a maxusage reopen (lost, and the rest committed).
    pool = PooledDB(_generic_module(), maxusage=2, **_kwargs(mariadb_server))
    try:
        db = pool.connection()
        cur = db.cursor()
        raw = cur.dbapi_cursor if taken == "dbapi_cursor" else db.dbapi_connection.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        db.commit()
        raw.execute("INSERT INTO generic_ledger VALUES (1, -10)")  # past tether, after it
        cur.execute("INSERT INTO generic_ledger VALUES (2, 10)")  # maxusage reached here
        db.close()  # not committed: both rolled back
        db = pool.connection()
        cur = db.cursor()
        cur.execute("INSERT INTO generic_ledger VALUES (3, 0)")
        db.commit()
        db.close()
        assert ledger() == [(3, 0)], "an earlier borrower's work was committed"
    finally:
        pool.close()
