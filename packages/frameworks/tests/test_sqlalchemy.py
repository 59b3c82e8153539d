"""SQLAlchemy 2 over tether: TetherPool (pooled, persistent) and creator= with NullPool.

Real PostgreSQL (psycopg) and MariaDB (PyMySQL): ORM and Core under many
threads with transactions and savepoints, server-side cursors, and
SQLAlchemy's own disconnect handling after server restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects.postgresql import HSTORE
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from tether.frameworks.sqlalchemy import TetherPool
from tether.harness import DriverTarget
from tether.harness.servers import DatabaseServer
from tether.persistent import PersistentDB
from tether.pooled import PooledDB

from .conftest import sqlalchemy_url, unique_name

HOWS = ("pooled", "persistent", "creator-pooled", "creator-persistent")
DRIVER = {"postgresql": "psycopg", "mariadb": "pymysql"}


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> DatabaseServer:
    name = "pg_server" if request.param == "postgresql" else "mariadb_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


EngineFactory = Callable[..., sa.Engine]


@pytest.fixture
def make_engine(server: DatabaseServer) -> Iterator[EngineFactory]:
    """Build engines of one of the HOWS on ``server``; disposed (and tether pools closed) after."""
    engines: list[sa.Engine] = []
    owners: list[Any] = []

    def make(how: str, **options: Any) -> sa.Engine:
        url = sqlalchemy_url(server)
        if how.startswith("creator-"):
            target = DriverTarget.build(DRIVER[server.kind], server)
            generator: Any
            if how == "creator-pooled":
                generator = PooledDB(
                    target.creator, maxconnections=16, blocking=True, **target.kwargs
                )
            else:
                generator = PersistentDB(target.creator, ping=0, **target.kwargs)
            owners.append(generator)
            # DBUtils' recipe, with the dialect's default options (psycopg's
            # dialect looks up hstore with TypeInfo.fetch(), which takes only
            # what passes isinstance(con, psycopg.Connection)).
            engine = sa.create_engine(
                url, creator=generator.connection, poolclass=NullPool, **options
            )
        else:
            tether = {"pool": how, **options.pop("tether", {})}
            engine = sa.create_engine(url, poolclass=TetherPool, tether=tether, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
    for owner in owners:
        owner.close()


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        unique_name("sa"),
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("worker", sa.Integer, nullable=False),
        sa.Column("label", sa.String(40), nullable=False),
    )


@pytest.fixture
def table(server: DatabaseServer) -> Iterator[sa.Table]:
    metadata = sa.MetaData()
    table = _table(metadata)
    engine = sa.create_engine(sqlalchemy_url(server), poolclass=NullPool)
    metadata.create_all(engine)
    yield table
    server.ensure_running()
    metadata.drop_all(engine)
    engine.dispose()


def _count(engine: sa.Engine, table: sa.Table, **where: Any) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.mark.parametrize("how", HOWS)
def test_orm_and_core_under_many_threads(
    make_engine: EngineFactory, table: sa.Table, how: str
) -> None:
    engine = make_engine(how)

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __table__ = table

    threads, rounds = 8, 6
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                with Session(engine) as session, session.begin():
                    session.add(Row(worker=worker, label=f"orm-{i}"))
                    try:
                        with session.begin_nested():  # a savepoint, rolled back
                            session.add(Row(worker=worker, label=f"gone-{i}"))
                            session.flush()
                            raise LookupError
                    except LookupError:
                        pass
                    session.add(Row(worker=worker, label=f"orm2-{i}"))
                with engine.begin() as conn:  # Core
                    conn.execute(sa.insert(table).values(worker=worker, label=f"core-{i}"))
                try:
                    with engine.begin() as conn:  # rolled back by the exception
                        conn.execute(sa.insert(table).values(worker=worker, label="rolled-back"))
                        raise KeyError
                except KeyError:
                    pass
        except BaseException as caught:
            errors.append(caught)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert not errors, errors
    assert _count(engine, table) == threads * rounds * 3
    assert _count(engine, table, label="rolled-back") == 0
    with engine.connect() as conn:
        gone = conn.execute(sa.select(table.c.id).where(table.c.label.like("gone-%"))).all()
    assert gone == []
    if how == "pooled":
        stats = engine.pool.tether.stats()  # type: ignore[attr-defined]
        assert stats["in_use"] == 0


@pytest.mark.restart
@pytest.mark.parametrize("how", HOWS)
def test_orm_session_and_core_across_a_restart(
    make_engine: EngineFactory, server: DatabaseServer, how: str
) -> None:
    """Tables, Core, an ORM model (add, commit, query, rollback), a restart between requests."""
    engine = make_engine(how)

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = unique_name("note")
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(sa.String(40))

    Base.metadata.create_all(engine)
    try:
        with engine.begin() as conn:  # Core
            conn.execute(sa.insert(Note), [{"text": "core"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(Note.text)).scalars().all() == ["core"]
        with Session(engine) as session:  # ORM: add, commit, query, rollback
            session.add(Note(text="orm"))
            session.commit()
            session.add(Note(text="rolled back"))
            session.flush()
            assert session.scalars(sa.select(Note.text).order_by(Note.id)).all() == [
                "core",
                "orm",
                "rolled back",
            ]
            session.rollback()
            assert session.scalars(sa.select(Note.text).order_by(Note.id)).all() == ["core", "orm"]
        server.restart("fast")  # between two requests: transparent
        with Session(engine) as session, session.begin():
            session.add(Note(text="after the restart"))
        with Session(engine) as session:
            texts = session.scalars(sa.select(Note.text).order_by(Note.id)).all()
        assert texts == ["core", "orm", "after the restart"]
    finally:
        server.ensure_running()
        Base.metadata.drop_all(engine)


@pytest.fixture
def hstore_url(pg_server: DatabaseServer) -> Iterator[str]:
    """A PostgreSQL database of its own with the hstore extension (dropped after the test)."""
    name = unique_name("hstore")
    pg_server.create_database(name)
    pg_server.admin_execute("CREATE EXTENSION hstore", database=name)
    yield sqlalchemy_url(pg_server, name)
    pg_server.ensure_running()
    pg_server.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("how", HOWS)
def test_psycopg_dialect_default_options_use_hstore(
    pg_server: DatabaseServer, hstore_url: str, how: str
) -> None:
    """The default ``use_native_hstore=True``: TypeInfo.fetch() on tether's connection works."""
    owners: list[Any] = []
    # With creator=, the dialect registers hstore once, on its first connection,
    # as a borrower: tether takes that back at checkin (a borrower's adapters
    # never reach the next one), so the README's recipe registers it in the
    # tether pool's on_connect.
    engine = _hstore_engine(pg_server, hstore_url, how, owners, on_connect=_register_hstore)
    metadata = sa.MetaData()
    table = sa.Table(
        "kv",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("data", HSTORE, nullable=False),
    )
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(data={"a": "1", "b": "2"}))
        assert engine.dialect._has_native_hstore  # type: ignore[attr-defined]
        with engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)  # tether's, passing for the driver's
            assert type(raw).__module__.startswith("tether.")
            # psycopg's own hstore loader, registered by the dialect: a dict, not a string.
            assert conn.execute(sa.text("SELECT data FROM kv")).scalar_one() == {"a": "1", "b": "2"}
    finally:
        engine.dispose()
        for owner in owners:
            owner.close()


def _register_hstore(raw: Any) -> None:
    """The README's ``on_connect`` for a tether pool used with ``creator=``."""
    from psycopg.types import TypeInfo
    from psycopg.types.hstore import register_hstore

    info = TypeInfo.fetch(raw, "hstore")
    assert info is not None
    register_hstore(info, raw)


def _hstore_engine(
    pg_server: DatabaseServer,
    url: str,
    how: str,
    owners: list[Any],
    on_connect: Callable[[Any], None] | None = None,
) -> sa.Engine:
    if how.startswith("creator-"):
        target = DriverTarget.build("psycopg", pg_server)
        kwargs = {**target.kwargs, "dbname": sa.make_url(url).database, "on_connect": on_connect}
        owner: Any
        if how == "creator-pooled":
            owner = PooledDB(target.creator, maxconnections=4, blocking=True, **kwargs)
        else:
            owner = PersistentDB(target.creator, **kwargs)
        owners.append(owner)
        return sa.create_engine(
            "postgresql+psycopg://", creator=owner.connection, poolclass=NullPool
        )
    return sa.create_engine(url, poolclass=TetherPool, tether={"pool": how})


@pytest.mark.parametrize(
    "how",
    [
        "pooled",
        "persistent",
        "creator-pooled",  # the borrower's hstore loader is carried to the new session
        "creator-persistent",
    ],
)
def test_hstore_loader_survives_a_reopen_inside_a_checkout(
    pg_server: DatabaseServer, hstore_url: str, how: str
) -> None:
    owners: list[Any] = []
    engine = _hstore_engine(pg_server, hstore_url, how, owners)
    select = sa.text("SELECT 'a=>1'::hstore")
    try:
        with engine.connect() as conn:
            assert conn.execute(select).scalar_one() == {"a": "1"}
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            DriverTarget.build("psycopg", pg_server).kill_backend(pid)
            # Between two transactions: tether reopens before sending.
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
            assert conn.execute(select).scalar_one() == {"a": "1"}
    finally:
        engine.dispose()
        for owner in owners:
            owner.close()


@pytest.mark.parametrize("how", HOWS)
def test_server_side_cursors(make_engine: EngineFactory, table: sa.Table, how: str) -> None:
    engine = make_engine(how)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"worker": 0, "label": f"r{i}"} for i in range(500)])
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=50).execute(
            sa.select(table.c.label).order_by(table.c.id)
        )
        # A server-side cursor: psycopg's named cursor, PyMySQL's SSCursor.
        cursor = result.cursor.dbapi_cursor  # type: ignore[attr-defined]
        assert type(cursor).__name__ in ("ServerCursor", "SSCursor")
        seen = [row.label for partition in result.partitions(100) for row in partition]
    assert seen == [f"r{i}" for i in range(500)]


@pytest.mark.restart
@pytest.mark.parametrize("how", HOWS)
def test_restart_between_transactions_is_transparent(
    make_engine: EngineFactory, server: DatabaseServer, table: sa.Table, how: str
) -> None:
    engine = make_engine(how)
    invalidated: list[Any] = []
    event.listen(engine, "invalidate", lambda *args: invalidated.append(args))
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(worker=1, label="before"))
    server.restart("fast")
    with engine.begin() as conn:  # the session is gone; tether reopens before sending
        conn.execute(sa.insert(table).values(worker=1, label="after"))
    assert _count(engine, table) == 2
    assert invalidated == []


@pytest.mark.restart
@pytest.mark.parametrize("how", ["pooled", "persistent", "creator-pooled"])
def test_restart_inside_a_transaction_reaches_sqlalchemy(
    make_engine: EngineFactory, server: DatabaseServer, table: sa.Table, how: str, caplog: Any
) -> None:
    """No transparent recovery inside a transaction: SQLAlchemy sees the driver's disconnect.
    What SQLAlchemy invalidated goes back without a "transaction open" warning."""
    caplog.set_level(logging.WARNING, logger="tether")
    engine = make_engine(how)
    with engine.connect() as conn:
        conn.execute(sa.insert(table).values(worker=1, label="lost"))  # autobegin
        server.restart("fast")
        with pytest.raises(exc.OperationalError) as caught:
            conn.execute(sa.insert(table).values(worker=1, label="lost too"))
        assert caught.value.connection_invalidated  # SQLAlchemy's is_disconnect saw it
        assert isinstance(caught.value.orig, engine.dialect.loaded_dbapi.OperationalError)
        conn.rollback()
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(worker=2, label="next"))
    assert _count(engine, table) == 1
    assert _count(engine, table, label="next") == 1
    assert not [r for r in caplog.records if "transaction open" in r.getMessage()]


def test_connect_event_once_per_driver_connection(
    make_engine: EngineFactory, server: DatabaseServer
) -> None:
    """Dialect setup (psycopg's notice handler) and user listeners run once per session."""
    engine = make_engine("pooled", tether={"maxcached": 2})
    connects: list[Any] = []
    event.listen(engine, "connect", lambda dbapi_con, record: connects.append(dbapi_con))
    for _ in range(20):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    assert len(connects) == 1
    raw = connects[0]
    assert type(raw).__module__.split(".")[0] == DRIVER[server.kind]  # the driver's own
    if server.kind == "postgresql":
        assert len(raw._notice_handlers) == 1
    with engine.connect() as conn:
        tether_con = conn.connection.dbapi_connection
        assert tether_con.dbapi_connection is raw


def test_an_engine_isolation_level_survives_reset_session(
    make_engine: EngineFactory, server: DatabaseServer
) -> None:
    """The dialect sets an engine-wide isolation level in the connect event; ``DISCARD ALL``
    (MariaDB's ``COM_RESET_CONNECTION``) undid it, and every borrower after the first ran at
    the server's default (eighth outside attack: SERIALIZABLE became REPEATABLE READ)."""
    engine = make_engine(
        "pooled", isolation_level="SERIALIZABLE", tether={"maxcached": 1, "reset_session": True}
    )
    if server.kind == "postgresql":
        sql = "SELECT current_setting('transaction_isolation')"
    else:
        sql = "SELECT @@session.tx_isolation"  # (MariaDB 10.11; MySQL 8: transaction_isolation)
    seen = []
    for _ in range(3):
        with engine.connect() as conn:
            seen.append(str(conn.execute(sa.text(sql)).scalar()).lower().replace("-", " "))
    assert seen == ["serializable"] * 3


@pytest.mark.restart
def test_connect_event_fires_for_a_transparently_reopened_connection(
    make_engine: EngineFactory, server: DatabaseServer
) -> None:
    engine = make_engine("persistent")
    connects: list[Any] = []
    event.listen(engine, "connect", lambda dbapi_con, record: connects.append(dbapi_con))
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        conn.commit()
        server.restart("fast")
        conn.execute(sa.text("SELECT 1"))  # same checkout: reopened under SQLAlchemy
    assert len(connects) == 2
    assert connects[0] is not connects[1]


def test_checkout_timeout_is_sqlalchemys(make_engine: EngineFactory) -> None:
    # 1 s, not less: the first connect must finish within it too (a MariaDB connect
    # took over 0.2 s on a loaded 2-core machine and failed the test as "unreachable").
    engine = make_engine("pooled", pool_size=1, max_overflow=0, pool_timeout=1.0)
    with engine.connect(), pytest.raises(exc.TimeoutError):
        engine.connect()
    with engine.connect() as conn:  # given back: usable again
        conn.execute(sa.text("SELECT 1"))


@pytest.mark.parametrize("how", ["pooled", "persistent"])
def test_a_soft_invalidated_connection_is_replaced(
    make_engine: EngineFactory, server: DatabaseServer, how: str
) -> None:
    """``invalidate(soft=True)``: QueuePool replaces the driver connection at its next
    checkout; behind TetherPool the same session was reused (seventh outside attack)."""
    engine = make_engine(how, pool_size=1, max_overflow=0)
    sql = sa.text(
        "SELECT pg_backend_pid()" if server.kind == "postgresql" else "SELECT CONNECTION_ID()"
    )
    with engine.connect() as conn:
        first = conn.execute(sql).scalar()
        conn.connection.invalidate(soft=True)
    with engine.connect() as conn:
        second = conn.execute(sql).scalar()
    with engine.connect() as conn:
        assert conn.execute(sql).scalar() == second  # not invalidated: kept
    assert second != first


def test_an_option_the_tether_class_does_not_take_fails_at_create_engine(
    server: DatabaseServer,
) -> None:
    """It failed at the first checkout with a TypeError about ``_connect_driver`` (found by
    an outside attack: ``reset_session`` with ``"pool": "persistent"``)."""
    with pytest.raises(TypeError, match="'reset_session': not an option of PersistentDB"):
        sa.create_engine(
            sqlalchemy_url(server),
            poolclass=TetherPool,
            tether={"pool": "persistent", "reset_session": True},
        )


def test_a_wrong_password_with_mincached_is_sqlalchemys_error(server: DatabaseServer) -> None:
    """The tether pool is made at the first checkout, and mincached connects there: its
    refused login was tether's own error, unwrapped (found by an outside attack)."""
    url = sa.engine.make_url(sqlalchemy_url(server)).set(password="not-the-password-f8")
    engine = sa.create_engine(url, poolclass=TetherPool, tether={"mincached": 1})
    try:
        with pytest.raises(sa.exc.OperationalError) as info:
            engine.connect()
        assert "not-the-password-f8" not in str(info.value)
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["pooled", "persistent"])
def test_a_wrong_password_is_an_authentication_error_at_once(
    server: DatabaseServer, how: str
) -> None:
    """The root README: a wrong password is not an outage. Behind ``TetherPool`` it was one
    (seventh outside attack): the creator SQLAlchemy hands over is a bound method, so the
    pool starts with the generic adapter, whose base error matched AuthenticationError;
    every checkout waited out pool_timeout, and the pool retried in the background."""
    from tether.simple_pool import AuthenticationError

    url = sa.engine.make_url(sqlalchemy_url(server)).set(password="not-the-password-f7")
    engine = sa.create_engine(url, poolclass=TetherPool, tether={"pool": how}, pool_timeout=5)
    try:
        start = time.monotonic()
        with pytest.raises(Exception) as info:
            engine.connect()
        assert time.monotonic() - start < 1.5
        chain = []
        error: BaseException | None = info.value
        while error is not None:
            chain.append(error)
            error = error.__cause__ or error.__context__
        assert any(isinstance(e, AuthenticationError) for e in chain), chain
        assert "not-the-password-f7" not in "".join(str(e) for e in chain)
        # As QueuePool raises it (eighth outside attack: tether's own class, unwrapped).
        assert isinstance(info.value, sa.exc.OperationalError), type(info.value)
    finally:
        engine.dispose()


def test_persistent_nested_checkouts_get_their_own_session(
    make_engine: EngineFactory, server: DatabaseServer
) -> None:
    engine = make_engine("persistent")
    sql = sa.text(
        "SELECT pg_backend_pid()" if server.kind == "postgresql" else "SELECT CONNECTION_ID()"
    )
    with engine.connect() as outer:
        first = outer.execute(sql).scalar()
        with engine.connect() as inner:
            assert inner.execute(sql).scalar() != first
        assert outer.execute(sql).scalar() == first
    with engine.connect() as again:
        assert again.execute(sql).scalar() == first  # the thread's connection, kept


@pytest.mark.parametrize("how", HOWS)
def test_autocommit_isolation_level(
    make_engine: EngineFactory, server: DatabaseServer, how: str
) -> None:
    """``execution_options(isolation_level=...)``: the psycopg dialect assigns the driver's
    ``autocommit``/``isolation_level`` on tether's connection; the next checkout is reset."""
    metadata = sa.MetaData()
    table = _table(metadata)
    engine = make_engine(how)
    try:
        metadata.create_all(engine)
        with engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            auto.execute(sa.insert(table).values(worker=1, label="autocommitted"))
            # No commit: in AUTOCOMMIT the row is visible to others at once.
            other = sa.create_engine(sqlalchemy_url(server), poolclass=NullPool)
            try:
                assert _count(other, table) == 1
            finally:
                other.dispose()
        with engine.connect() as conn:  # the isolation level was reset on return
            conn.execute(sa.insert(table).values(worker=1, label="rolled back"))
            conn.rollback()
        with engine.connect() as conn:
            serializable = conn.execution_options(isolation_level="SERIALIZABLE")
            assert serializable.get_isolation_level() == "SERIALIZABLE"
        with engine.connect() as conn:
            assert conn.get_isolation_level() != "SERIALIZABLE"
        assert _count(engine, table) == 1
    finally:
        metadata.drop_all(engine)
