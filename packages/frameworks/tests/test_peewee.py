"""tether.frameworks.peewee: peewee's pooled databases on tether, against real servers.

PostgreSQL (psycopg 3), MariaDB (PyMySQL) and sqlite3, with peewee models:
many threads on few connections inside ``atomic()``, ``connection_context()``,
a server restart between requests, and playhouse.pool's closing methods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from playhouse.pool import MaxConnectionsExceeded

from tether.frameworks.peewee import (
    WAIT_FOREVER,
    PooledDatabase,
    PooledMySQLDatabase,
    PooledPostgresqlDatabase,
    PooledPostgresqlExtDatabase,
    PooledSqliteDatabase,
)
from tether.harness.servers import DatabaseServer

from .conftest import unique_name

BACKENDS = ["postgresql", "mariadb", "sqlite"]
SERVERS = ["postgresql", "mariadb"]
PID_SQL = {
    "postgresql": "SELECT pg_backend_pid()",
    "mariadb": "SELECT CONNECTION_ID()",
}

MakeDb = Callable[..., PooledDatabase]


@pytest.fixture
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeDb]:
    """A factory: ``make_db(kind, **pool_args)``, each database's pool closed after the test."""
    made: list[PooledDatabase] = []

    def make(kind: str, cls: type[PooledDatabase] | None = None, **kwargs: Any) -> PooledDatabase:
        db: PooledDatabase
        if kind == "sqlite":
            db = (cls or PooledSqliteDatabase)(
                str(tmp_path / "app.db"), pragmas={"journal_mode": "wal"}, **kwargs
            )
        else:
            server: DatabaseServer = request.getfixturevalue(
                "pg_server" if kind == "postgresql" else "mariadb_server"
            )
            default = PooledPostgresqlDatabase if kind == "postgresql" else PooledMySQLDatabase
            db = (cls or default)(
                server.database,
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                **kwargs,
            )
        made.append(db)
        return db

    yield make
    for db in made:
        if not db.is_closed() and not db.in_transaction():
            db.close()
        if db._pool is not None:
            db.tether_pool.close()


def note_model(db: peewee.Database) -> type[peewee.Model]:
    """A model on a table of its own, created in ``db``."""

    class Note(peewee.Model):
        writer = peewee.IntegerField()
        seq = peewee.IntegerField()

        class Meta:
            database = db
            table_name = unique_name("peewee_note")
            indexes = ((("writer", "seq"), False),)

    with db.connection_context():
        db.create_tables([Note])
    return Note


def backend_pid(db: peewee.Database, kind: str) -> int:
    """The server session this thread's connection is on."""
    return int(db.execute_sql(PID_SQL[kind]).fetchone()[0])


@pytest.mark.parametrize("kind", BACKENDS)
def test_sixteen_threads_on_four_connections_write_exactly_once(make_db: MakeDb, kind: str) -> None:
    # A subclass that waited for a connection inside peewee's connect() would
    # hold peewee's lock while the 4 holders need it to close(): timeouts.
    db = make_db(kind, max_connections=4, timeout=20)
    note = note_model(db)
    threads, writes = 16, 12
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(writer: int) -> None:
        try:
            start.wait()
            for seq in range(writes):
                with db.connection_context(), db.atomic():
                    note.create(writer=writer, seq=seq)
                    assert note.select().where(note.writer == writer).count() == seq + 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not any(t.is_alive() for t in workers), "a thread hung"
    assert errors == []
    with db.connection_context():
        rows = [(n.writer, n.seq) for n in note.select()]
    assert sorted(rows) == [(w, s) for w in range(threads) for s in range(writes)]
    stats = db.tether_pool.stats()
    assert stats["timeouts"] == 0 and stats["in_use"] == 0
    assert stats["size"] <= 4 and stats["opened"] <= 4 + stats["discarded"]
    assert stats["waits"] > 0  # the threads did contend for the four connections


@pytest.mark.parametrize("kind", BACKENDS)
def test_connect_close_and_connection_context_as_in_peewee(make_db: MakeDb, kind: str) -> None:
    db = make_db(kind, max_connections=2)
    pool = db.tether_pool
    assert db.is_closed()
    assert db.connect() is True
    assert not db.is_closed() and pool.stats()["in_use"] == 1
    assert db.connect(reuse_if_open=True) is False
    with pytest.raises(peewee.OperationalError, match="already opened"):
        db.connect()
    raw = db.connection().dbapi_connection  # tether's connection; the driver's underneath
    assert type(raw).__module__.split(".")[0] in {"psycopg", "pymysql", "sqlite3"}
    with db.atomic(), pytest.raises(peewee.OperationalError, match="transaction is open"):
        db.close()
    assert db.close() is True and db.close() is False
    assert db.is_closed() and pool.stats()["in_use"] == 0
    with db.connection_context():
        with db.connection_context():  # nested: the same checkout
            assert pool.stats()["in_use"] == 1
        assert not db.is_closed()
    assert db.is_closed() and pool.stats()["in_use"] == 0
    assert pool.stats()["opened"] == 1  # one driver connection served every checkout

    @db.connection_context()
    def request() -> bool:
        return db.is_closed()

    assert request() is False and db.is_closed()


def test_connection_state_is_per_thread(make_db: MakeDb) -> None:
    db = make_db("sqlite", max_connections=4)
    db.connect()
    seen: list[bool] = []
    other = threading.Thread(target=lambda: seen.append(db.is_closed()))
    other.start()
    other.join()
    assert seen == [True]
    db.close()


def server_of(request: pytest.FixtureRequest, kind: str) -> DatabaseServer:
    """The harness server of ``kind`` (the one ``make_db`` connects to)."""
    server: DatabaseServer = request.getfixturevalue(
        "pg_server" if kind == "postgresql" else "mariadb_server"
    )
    return server


@pytest.mark.restart
@pytest.mark.parametrize("kind", SERVERS)
def test_server_restart_between_requests_is_transparent(
    make_db: MakeDb, request: pytest.FixtureRequest, kind: str
) -> None:
    db = make_db(kind, max_connections=4, timeout=10)
    note = note_model(db)
    with db.connection_context(), db.atomic():
        note.create(writer=1, seq=1)
        before = backend_pid(db, kind)
    server_of(request, kind).restart("fast")
    with db.connection_context(), db.atomic():  # no error: reopened before anything was sent
        note.create(writer=1, seq=2)
        after = backend_pid(db, kind)
    assert after != before
    with db.connection_context():
        assert sorted(n.seq for n in note.select()) == [1, 2]


@pytest.mark.restart
@pytest.mark.parametrize("kind", SERVERS)
def test_restart_inside_atomic_is_never_retried(
    make_db: MakeDb, request: pytest.FixtureRequest, kind: str
) -> None:
    db = make_db(kind, max_connections=2, timeout=10)
    note = note_model(db)
    with pytest.raises(peewee.DatabaseError), db.connection_context(), db.atomic():
        note.create(writer=2, seq=1)
        server_of(request, kind).restart("fast")
        note.create(writer=2, seq=2)  # the session is gone: never run on a new one
    with db.connection_context():  # the next request works, and nothing half-committed
        assert list(note.select().where(note.writer == 2)) == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_manual_close_closes_instead_of_returning(make_db: MakeDb, kind: str) -> None:
    db = make_db(kind, max_connections=1)
    pool = db.tether_pool
    assert db.manual_close() is False  # nothing open
    db.connect()
    raw = db.connection().dbapi_connection
    assert db.manual_close() is True
    assert db.is_closed()
    stats = pool.stats()
    assert stats["size"] == 0 and stats["closed"] == 1 and stats["in_use"] == 0
    with db.connection_context():  # the slot is free again; a new driver connection
        assert db.connection().dbapi_connection is not raw
        db.execute_sql("SELECT 1")


@pytest.mark.parametrize("kind", BACKENDS)
def test_close_idle_and_close_all(make_db: MakeDb, kind: str) -> None:
    db = make_db(kind, max_connections=4, timeout=5)
    pool = db.tether_pool
    hold, release = threading.Barrier(3), threading.Event()

    def holder() -> None:
        with db.connection_context():
            db.execute_sql("SELECT 1")
            hold.wait()
            release.wait(10)

    holders = [threading.Thread(target=holder) for _ in range(2)]
    for t in holders:
        t.start()
    hold.wait()
    db.connect()  # this thread's: three in use now
    db.close()
    assert pool.stats()["idle"] == 1 and pool.stats()["in_use"] == 2
    assert db.close_idle() == 1
    assert pool.stats()["idle"] == 0 and pool.stats()["size"] == 2
    db.connect()
    db.close_all()  # closes this thread's and the idle ones; retires the two in use
    assert db.is_closed()
    stats = pool.stats()
    assert stats["idle"] == 0 and stats["in_use"] == 2
    release.set()
    for t in holders:
        t.join(10)
    stats = pool.stats()  # the retired ones were closed when given back
    assert stats["size"] == 0 and stats["idle"] == 0 and stats["in_use"] == 0
    with db.connection_context():  # and the pool goes on
        db.execute_sql("SELECT 1")


@pytest.mark.parametrize("kind", BACKENDS)
def test_close_stale_retires_old_checkouts(make_db: MakeDb, kind: str) -> None:
    db = make_db(kind, max_connections=4)
    pool = db.tether_pool
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with db.connection_context():
            taken.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    taken.wait(10)
    assert db.close_stale(age=60) == 0  # not that old
    time.sleep(0.05)
    db.connect()  # this thread's is younger than the cutoff below
    assert db.close_stale(age=0.03) == 1
    db.close()
    assert pool.stats()["idle"] == 1  # kept
    release.set()
    t.join(10)
    stats = pool.stats()
    assert stats["idle"] == 1 and stats["size"] == 1 and stats["closed"] == 1


@pytest.mark.parametrize("kind", SERVERS)
def test_stale_timeout_replaces_old_connections(make_db: MakeDb, kind: str) -> None:
    db = make_db(kind, max_connections=2, stale_timeout=1)
    with db.connection_context():
        first = backend_pid(db, kind)
    with db.connection_context():
        assert backend_pid(db, kind) == first  # reused while young
    time.sleep(1.2)
    with db.connection_context():
        assert backend_pid(db, kind) != first  # too old: closed, a new session
    assert db.tether_pool.stats()["closed"] >= 1


def test_timeout_none_fails_at_once_and_a_number_waits(make_db: MakeDb) -> None:
    no_wait = make_db("sqlite", max_connections=1)
    waits = make_db("sqlite", max_connections=1, timeout=0.3)
    forever = make_db("sqlite", max_connections=1, timeout=0)
    for db, expect in ((no_wait, (0.0, 0.2)), (waits, (0.25, 2.0))):
        db.connect()
        outcome: list[Any] = []

        def other(db: PooledDatabase = db, outcome: list[Any] = outcome) -> None:
            began = time.monotonic()
            try:
                db.connect()
            except MaxConnectionsExceeded as error:
                outcome.append((time.monotonic() - began, error))

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        db.close()
        [(took, exc)] = outcome
        assert expect[0] <= took < expect[1], took
        assert isinstance(exc, ValueError)  # playhouse.pool's MaxConnectionsExceeded
    forever.connect()  # timeout=0: waits (up to WAIT_FOREVER s) until it is given back
    served: list[bool] = []

    def waiter() -> None:
        with forever.connection_context():
            served.append(True)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert served == [] and forever.tether_pool.stats()["waiting"] == 1
    forever.close()
    t.join(10)
    assert served == [True]
    assert WAIT_FOREVER == 300.0


def test_ext_database_and_init_of_a_deferred_database(make_db: MakeDb, pg_server: Any) -> None:
    db = PooledPostgresqlExtDatabase(None, max_connections=2)
    with pytest.raises(peewee.InterfaceError):
        db.connect()
    db.init(
        pg_server.database,
        host=pg_server.host,
        port=pg_server.port,
        user=pg_server.user,
        password=pg_server.password,
        timeout=5,
    )
    try:
        with db.connection_context():
            assert db.execute_sql("SELECT 41 + 1").fetchone()[0] == 42
        assert db.tether_pool.stats()["maxconnections"] == 2
    finally:
        db.tether_pool.close()
