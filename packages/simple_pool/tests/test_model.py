"""Model-based (stateful) test of SimplePooledDB against a real PostgreSQL (issue 11).

A hypothesis ``RuleBasedStateMachine`` interleaves checkouts (several held at
once, up to ``maxconnections``), checkins (``close()`` and ``with``),
INSERTs into a ledger with unique ids, SELECTs, commit/rollback, driver
setting changes, and proxies kept past checkin. Checked after every step,
from the README and the public docstrings of tether.simple_pool:

- ``maxconnections`` connections are opened at once, no more sessions ever;
  a checkout beyond them waits ``timeout`` and raises ``PoolTimeout``;
- a connection is rolled back when it comes back (the ledger: nothing
  uncommitted survives a checkin, every acknowledged commit is there once);
- connections are lent to one borrower at a time: a proxy given back
  cannot be used any more (a tether error, and nothing runs on the server);
- a new checkout is in the configured state (autocommit as passed).
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tether.simple_pool import PoolTimeout, SimplePooledDB, TetherError

pytestmark = [pytest.mark.server]

APP = "tether-model"
DATABASE = "tether_model_simple"
INSERT = "INSERT INTO ledger (id) VALUES (%s)"
_SERVERS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _servers(pg_server: Any) -> None:
    _SERVERS["postgresql"] = pg_server


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )


class Admin:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.con: Any = None
        server.create_database(DATABASE)
        self.rows("CREATE TABLE IF NOT EXISTS ledger (id text NOT NULL)")
        self.rows(f"GRANT ALL ON ledger TO {server.user}")

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self.con is None:
            self.con = self.server.admin_connect(DATABASE)
        cur = self.con.cursor()
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    def session_count(self) -> int:
        return int(
            self.rows(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND backend_type = 'client backend'"
                " AND usename = %s AND pid <> pg_backend_pid()",
                (DATABASE, self.server.user),
            )[0][0]
        )


_ADMIN: list[Admin] = []


@dataclass
class Borrower:
    db: Any
    autocommit: bool
    implicit: bool = False
    pending: list[str] = field(default_factory=list)


class SimpleModel(RuleBasedStateMachine):
    handles = False
    driver_settings = False
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        if not _ADMIN:
            _ADMIN.append(Admin(_SERVERS["postgresql"]))
        self.admin = _ADMIN[0]
        self.pool: Any = None
        self.borrowers: list[Borrower] = []
        self.kept: list[tuple[str, Any]] = []
        self.prefix = f"{uuid.uuid4().hex[:8]}-"
        self.committed: set[str] = set()
        self.rolled_back: set[str] = set()
        self.forbidden: set[str] = set()
        self.probes = 0

    def new_id(self) -> str:
        return f"{self.prefix}{next(self.counter)}"

    def pick(self, i: int) -> Borrower:
        return self.borrowers[i % len(self.borrowers)]

    def run(self, db: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = db.cursor()
        try:
            cur.execute(sql, params or None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def end(self, b: Borrower, outcome: set[str]) -> None:
        outcome.update(b.pending)
        b.pending.clear()
        b.implicit = False

    @initialize(maxconnections=st.integers(1, 3), autocommit=st.booleans())
    def make(self, maxconnections: int, autocommit: bool) -> None:
        s = self.admin.server
        self.maxconnections = maxconnections
        self.autocommit = autocommit
        self.pool = SimplePooledDB(
            psycopg,
            maxconnections,
            timeout=5.0,
            host=s.host,
            port=s.port,
            user=s.user,
            password=s.password,
            dbname=DATABASE,
            application_name=APP,
            autocommit=autocommit,
        )

    def teardown(self) -> None:
        for b in self.borrowers:
            with contextlib.suppress(Exception):
                b.db.close()
            self.end(b, self.rolled_back)
        self.borrowers.clear()
        self.kept.clear()
        if self.pool is not None:
            self.pool.close()
            self.check_ledger()

    @precondition(lambda self: len(self.borrowers) < self.maxconnections)
    @rule()
    def checkout(self) -> None:
        db = self.pool.connection()
        b = Borrower(db, self.autocommit)
        self.borrowers.append(b)
        assert db.autocommit is self.autocommit, (
            f"new checkout has autocommit={db.autocommit}, the pool's connections are configured"
            f" with autocommit={self.autocommit} (an earlier borrower's setting)"
        )

    @precondition(lambda self: len(self.borrowers) == self.maxconnections and self.probes < 1)
    @rule()
    def checkout_over_the_limit(self) -> None:
        self.probes += 1
        try:
            extra = self.pool.connection(timeout=0.05)
        except PoolTimeout:
            return
        extra.close()
        raise AssertionError(f"a checkout beyond maxconnections={self.maxconnections} succeeded")

    @precondition(lambda self: self.borrowers)
    @rule(
        i=st.integers(0, 7),
        how=st.sampled_from(["close", "with"]),
        keep=st.sampled_from(["nothing", "proxy", "proxy_commit"]),
    )
    def checkin(self, i: int, how: str, keep: str) -> None:
        b = self.pick(i)
        if self.handles and keep != "nothing":
            self.kept.append((keep, b.db))
        self.borrowers.remove(b)
        if how == "close":
            b.db.close()
            self.end(b, self.rolled_back)  # README: rolled back when it comes back
        else:
            with b.db:
                pass
            self.end(b, self.committed)  # README: `with` commits when the block succeeds

    @precondition(lambda self: len(self.borrowers) < self.maxconnections)
    @rule(commit=st.booleans())
    def with_block(self, commit: bool) -> None:
        new = self.new_id()
        with self.pool.connection() as db:
            assert db.autocommit is self.autocommit, f"new checkout has autocommit={db.autocommit}"
            self.run(db, INSERT, (new,))
            if commit:
                db.commit()
            self.committed.add(new)  # committed, or by the `with` on success

    @precondition(lambda self: self.borrowers)
    @rule(i=st.integers(0, 7))
    def insert(self, i: int) -> None:
        b = self.pick(i)
        new = self.new_id()
        self.run(b.db, INSERT, (new,))
        if b.autocommit:
            self.committed.add(new)
        else:
            b.pending.append(new)
            b.implicit = True

    @precondition(lambda self: self.borrowers)
    @rule(i=st.integers(0, 7))
    def select(self, i: int) -> None:
        b = self.pick(i)
        seen = {
            r[0]
            for r in self.run(b.db, "SELECT id FROM ledger WHERE id LIKE %s", (self.prefix + "%",))
        }
        if not b.autocommit:
            b.implicit = True
        others = {x for o in self.borrowers if o is not b for x in o.pending}
        assert set(b.pending) <= seen, "a borrower does not see its own uncommitted rows"
        assert not seen & others, (
            f"a borrower sees another borrower's uncommitted rows {seen & others}"
        )

    @precondition(lambda self: self.borrowers)
    @rule(i=st.integers(0, 7))
    def commit(self, i: int) -> None:
        b = self.pick(i)
        b.db.commit()
        self.end(b, self.committed)

    @precondition(lambda self: self.borrowers)
    @rule(i=st.integers(0, 7))
    def rollback(self, i: int) -> None:
        b = self.pick(i)
        b.db.rollback()
        self.end(b, self.rolled_back)

    @precondition(lambda self: self.driver_settings and self.borrowers)
    @rule(i=st.integers(0, 7), on=st.booleans())
    def set_autocommit(self, i: int, on: bool) -> None:
        b = self.pick(i)
        if b.implicit:
            return
        b.db.autocommit = on
        b.autocommit = on

    @precondition(lambda self: self.handles and self.kept)
    @rule(j=st.integers(0, 7))
    def use_kept_proxy(self, j: int) -> None:
        kind, proxy = self.kept[j % len(self.kept)]
        new = self.new_id()
        self.forbidden.add(new)
        try:
            if kind == "proxy":
                proxy.cursor().execute(INSERT, (new,))
            else:
                proxy.commit()
        except TetherError:
            return
        except Exception as exc:
            raise AssertionError(f"a proxy given back raised {exc!r}, not a tether error") from exc
        raise AssertionError(
            f"a proxy given back still works ({kind}): it reaches a connection lent to someone else"
        )

    def check_ledger(self) -> None:
        rows = [
            r[0]
            for r in self.admin.rows("SELECT id FROM ledger WHERE id LIKE %s", (self.prefix + "%",))
        ]
        present = set(rows)
        twice = {x for x in present if rows.count(x) > 1}
        assert not twice, f"rows committed more than once: {twice}"
        missing = self.committed - present
        assert not missing, f"acknowledged commits missing: {sorted(missing)}"
        undone = present & self.rolled_back
        assert not undone, f"rolled-back rows are committed: {sorted(undone)}"
        ran = present & self.forbidden
        assert not ran, f"statements through a proxy given back committed: {sorted(ran)}"
        pending = present & {x for b in self.borrowers for x in b.pending}
        assert not pending, f"rows of open transactions are committed: {sorted(pending)}"

    @invariant()
    def ledger_matches_the_model(self) -> None:
        if self.pool is not None:
            self.check_ledger()

    @invariant()
    def exactly_maxconnections_sessions(self) -> None:
        if self.pool is None:
            return
        deadline = time.monotonic() + 0.3
        while (
            n := self.admin.session_count()
        ) != self.maxconnections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert n == self.maxconnections, f"{n} sessions, maxconnections={self.maxconnections}"


class CoreModel(SimpleModel):
    pass


class KeptProxyModel(SimpleModel):
    handles = True


class DriverSettingsModel(SimpleModel):
    driver_settings = True


def _case(machine: type[SimpleModel], examples: int, steps: int) -> Any:
    case = machine.TestCase
    case.settings = _settings(examples, steps)
    return case


TestSimpleCore = _case(CoreModel, 40, 30)
TestSimpleKeptProxy = _case(KeptProxyModel, 30, 25)
TestSimpleDriverSettings = _case(DriverSettingsModel, 10, 25)
