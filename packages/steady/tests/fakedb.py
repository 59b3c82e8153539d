"""A fake DB-API 2 driver whose server can kill sessions, for unit tests of pure logic.

It models what matters to the reopen rule and nothing else: sessions with
an id, uncommitted work that dies with its session, autocommit, a server
that can be down, and a log of every statement each session received (so a
test can prove a statement was, or was not, retried on a new session).
Real drivers against real servers are tested in test_steady_real.py.
"""

from __future__ import annotations

import types
from typing import Any

threadsafety = 1
apilevel = "2.0"
paramstyle = "qmark"


class Error(Exception):
    pass


class OperationalError(Error):
    pass


class ProgrammingError(Error):
    pass


class FakeServer:
    def __init__(self) -> None:
        self.committed: list[str] = []
        self.log: list[tuple[int, str]] = []  # (session id, statement) as received
        self.sessions = 0
        self.down = False
        self.open: list[FakeConnection] = []

    def kill_all(self) -> None:
        """End every session, as a server restart does."""
        for conn in self.open:
            conn.dead = True
        self.open.clear()

    def statements(self, session: int) -> list[str]:
        return [sql for sid, sql in self.log if sid == session]


class FakeConnection:
    def __init__(self, server: FakeServer, autocommit: bool = False) -> None:
        if server.down:
            raise OperationalError("connection refused")
        server.sessions += 1
        server.open.append(self)
        self.server = server
        self.session = server.sessions
        self.autocommit = autocommit
        self.pending: list[str] = []
        self.begun = False
        self.closed = False
        self.dead = False

    @property
    def in_transaction(self) -> bool:
        return self.begun or bool(self.pending)

    def _check(self) -> None:
        if self.closed:
            raise OperationalError("the connection is closed")
        if self.dead:
            self.closed = True
            raise OperationalError("server closed the connection unexpectedly")

    def cursor(self) -> FakeCursor:
        if self.closed:
            raise OperationalError("the connection is closed")
        return FakeCursor(self)

    def start_transaction(self) -> None:
        """A driver-only method that opens a transaction (as psycopg's ``transaction()``)."""
        self._check()
        self.begun = True

    def commit(self) -> None:
        self._check()
        self.server.committed.extend(self.pending)
        self.pending.clear()
        self.begun = False

    def rollback(self) -> None:
        self._check()
        self.pending.clear()
        self.begun = False

    def close(self) -> None:
        self.closed = True
        if self in self.server.open:
            self.server.open.remove(self)


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        conn = self.conn
        conn._check()
        conn.server.log.append((conn.session, sql))
        if sql.startswith("FAIL"):
            raise ProgrammingError("syntax error")
        if sql == "BEGIN":  # an explicit transaction, in autocommit mode too
            conn.begun = True
        elif sql.startswith("INSERT"):
            if conn.autocommit and not conn.begun:
                conn.server.committed.append(sql)
            else:
                conn.pending.append(sql)
        elif not conn.autocommit and sql.startswith("SELECT"):
            conn.begun = True  # like PostgreSQL: any statement opens a transaction
        self.rows = [(conn.session,)]

    def copy(self, sql: str) -> None:
        """A driver-only statement method (as psycopg's ``copy()``): tether does not see it."""
        self.execute(sql)

    def fetchone(self) -> Any:
        self.conn._check()
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        self.conn._check()
        rows, self.rows = self.rows, []
        return rows

    def close(self) -> None:
        pass


def make_module(server: FakeServer) -> types.ModuleType:
    """A DB-API module bound to ``server`` (what tests pass as the creator)."""
    module = types.ModuleType("fakedb")
    module.threadsafety = 1  # type: ignore[attr-defined]
    module.Error = Error  # type: ignore[attr-defined]
    module.OperationalError = OperationalError  # type: ignore[attr-defined]
    module.ProgrammingError = ProgrammingError  # type: ignore[attr-defined]
    module.connect = lambda autocommit=False, **kw: FakeConnection(server, autocommit)  # type: ignore[attr-defined]
    return module
