"""Driver features pass through every tether layer (steady, persistent, pooled).

Frameworks use their driver's connection directly: SQLAlchemy's psycopg
dialect calls ``add_notice_handler`` and reads ``info``, sets
``autocommit``; Django's PostgreSQL backend reads ``adapters`` and makes
named cursors; its MySQL backend calls PyMySQL's ``autocommit()`` and
``ping()``. So every public attribute of each driver's connection must be
reachable through a tether connection and be the driver's own, except the
few tether deliberately intercepts (listed here and in the README).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from .conftest import LAYERS, layer_connection, raw_of

# Attributes of the driver's connection that a tether connection replaces with
# its own, by driver; the same for all three layers (a pooled connection
# forwards to its steady connection). DB-API: cursor() makes steady cursors;
# commit/rollback/begin keep the transaction state; close() gives back (pooled)
# or only ends the transaction (persistent); cancel() also ends the
# transaction state; ping() calls the driver's ping where it has one.
DBAPI_INTERCEPTED = {"close", "commit", "cursor", "rollback"}
INTERCEPTED: dict[str, set[str]] = {
    # Session setters are the driver's methods, wrapped to be remembered and
    # replayed on a transparently reopened connection (the adapter lists them).
    # Connection-level execute() (psycopg, pgdb, sqlite3; executemany() and
    # executescript() where the driver has them) runs on a tether cursor: the
    # cursor it returns ends with the checkout, and it follows the reopen rule.
    "psycopg": DBAPI_INTERCEPTED
    | {"cancel", "execute", "set_autocommit", "set_isolation_level", "set_read_only"}
    | {"set_deferrable"},
    "pgdb": DBAPI_INTERCEPTED | {"execute", "executemany"},
    "pymysql": DBAPI_INTERCEPTED
    | {"begin", "ping", "autocommit", "select_db", "set_character_set", "set_charset"},
    "sqlite3": DBAPI_INTERCEPTED | {"execute", "executemany", "executescript"},
    # Classic PyGreSQL: begin/commit/end/rollback keep the transaction state,
    # close/reopen/reset manage the session; ``db`` is the pg.DB itself
    # (PyGreSQL's is its pg.Connection) and ``adapter`` tether's driver adapter
    # (PyGreSQL's is its pg.Adapter: reach it as ``con.db.adapter``).
    "pg": {"adapter", "begin", "close", "commit", "db", "end", "reopen", "reset", "rollback"},
}
# Classic PyGreSQL methods that talk to the server are the driver's, run under
# tether's reopen rule (so they are wrappers, not the bound methods themselves).
PG_MADE_STEADY = {
    "delete", "delete_prepared", "describe_prepared", "get", "get_as_dict", "get_as_list",
    "get_attnames", "get_cast_hook", "get_databases", "get_generated", "get_notice_receiver",
    "get_parameter", "get_relations", "get_tables", "has_table_privilege", "insert",
    "inserttable", "pkey", "pkeys", "prepare", "query",
    "query_formatted", "query_prepared", "set_parameter", "truncate", "update", "upsert",
}  # fmt: skip


def _is_drivers(value: Any, raw_value: Any, raw: Any) -> bool:
    """Whether ``value`` (read through tether) is the driver connection's own ``raw_value``.

    Every layer hands out the driver's methods guarded by their checkout
    (they refuse to run once it has ended, and lend what they return for it
    only): the method inside the guards (``__wrapped__``) is the driver's.
    """
    while getattr(value, "__self__", None) is not raw and hasattr(value, "__wrapped__"):
        # tether's guards, down to the driver's method bound to its connection
        # (psycopg's transaction() has a __wrapped__ of its own: not followed).
        value = value.__wrapped__
    if value is raw_value:
        return True
    try:
        if value == raw_value:  # bound methods: the same function bound to the same object
            return True
    except Exception:
        pass
    if callable(value):
        return False
    # A property that builds a new object on every access (psycopg's ``info``).
    return type(value) is type(raw_value)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_public_driver_attribute_is_reachable(driver_target: Any, layer: str) -> None:
    """The enumeration: each driver's public connection attributes through each layer."""
    with layer_connection(driver_target, layer) as con:
        raw = raw_of(con)
        names = sorted(name for name in dir(raw) if not name.startswith("_"))
        assert len(names) > 10
        tethers = set()
        for name in names:
            value = getattr(con, name)  # reachable: no AttributeError
            if not _is_drivers(value, getattr(raw, name), raw):
                tethers.add(name)
        expected = INTERCEPTED[driver_target.name]
        if driver_target.name == "pg":
            expected = expected | (PG_MADE_STEADY & set(names))
        assert tethers == expected


@pytest.mark.parametrize("layer", LAYERS)
def test_driver_methods_work_through_tether(driver_target: Any, layer: str) -> None:
    """Calling a few driver-specific methods through tether reaches the driver."""
    name = driver_target.name
    with layer_connection(driver_target, layer) as con:
        if name == "psycopg":
            notices: list[str] = []
            con.add_notice_handler(lambda diag: notices.append(diag.message_primary))
            with con.cursor() as cur:
                cur.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
            con.commit()
            assert notices == ["hello from the server"]
            assert con.info.server_version >= 100000
            assert con.pgconn is raw_of(con).pgconn
            # What psycopg.types.TypeInfo.fetch (SQLAlchemy's hstore lookup) insists on.
            import psycopg
            from psycopg.types import TypeInfo

            assert isinstance(con, psycopg.Connection)
            info = TypeInfo.fetch(con, "text")
            assert info is not None and info.oid == 25
            con.rollback()
        elif name == "pymysql":
            assert con.get_server_info()
            assert con.thread_id() == raw_of(con).thread_id()
            con.select_db(driver_target.kwargs["database"])
            con.autocommit(True)
            assert con.get_autocommit() is True
            con.autocommit(False)
        elif name == "sqlite3":
            con.create_function("twice", 1, lambda x: 2 * x)
            with con.cursor() as cur:
                cur.execute("SELECT twice(21)")
                assert cur.fetchone()[0] == 42
            assert con.in_transaction is False
        elif name == "pgdb":
            assert con.type_cache is raw_of(con).type_cache
            assert con.autocommit is False
        else:  # classic pg
            assert con.query("SELECT 6 * 7").getresult() == [(42,)]
            assert con.db.adapter is not None
            assert con.escape_identifier('x"y') == '"x""y"'


@pytest.mark.parametrize("layer", LAYERS)
def test_cursors_take_the_drivers_options(dbapi_target: Any, layer: str) -> None:
    """Row factories, cursor classes and named (server-side) cursors reach the driver."""
    name = dbapi_target.name
    with layer_connection(dbapi_target, layer) as con:
        if name == "psycopg":
            from psycopg.rows import dict_row

            with con.cursor(row_factory=dict_row) as cur:
                cur.execute("SELECT 1 AS one")
                assert cur.fetchone() == {"one": 1}
            with con.cursor("tether_named") as cur:  # a server-side cursor
                cur.execute("SELECT generate_series(1, 1000) AS n")
                assert cur.name == "tether_named"
                assert len(cur.fetchmany(10)) == 10
                assert sum(1 for _ in cur) == 990
            con.rollback()
        elif name == "pymysql":
            import pymysql.cursors

            with con.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SELECT 1 AS one")
                assert cur.fetchone() == {"one": 1}
            with con.cursor(pymysql.cursors.SSCursor) as cur:  # unbuffered
                cur.execute("SELECT 1 UNION ALL SELECT 2")
                assert [row[0] for row in cur] == [1, 2]
        elif name == "sqlite3":

            class Named(sqlite3.Cursor):
                pass

            cur = con.cursor(Named)
            cur.execute("SELECT 1")
            assert isinstance(cur.dbapi_cursor, Named)
            assert cur.fetchall() == [(1,)]
        else:
            with con.cursor() as cur:
                cur.execute("SELECT 1")
                assert [tuple(row) for row in cur.fetchall()] == [(1,)]


_SETTABLE: dict[str, tuple[str, Any]] = {
    "psycopg": ("prepare_threshold", 17),
    "pgdb": ("autocommit", True),
    "pymysql": ("cursorclass", "sentinel"),
    "sqlite3": ("text_factory", bytes),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_assigning_a_driver_attribute_reaches_the_driver(dbapi_target: Any, layer: str) -> None:
    """``con.autocommit = True`` (SQLAlchemy, Django) must set the driver's attribute."""
    attribute, value = _SETTABLE[dbapi_target.name]
    with layer_connection(dbapi_target, layer) as con:
        setattr(con, attribute, value)
        assert getattr(raw_of(con), attribute) == value
        assert getattr(con, attribute) == value


@pytest.mark.parametrize("driver_target", ["psycopg", "pymysql"], indirect=True)
@pytest.mark.parametrize("layer", LAYERS)
def test_session_settings_survive_a_transparent_reopen(driver_target: Any, layer: str) -> None:
    """Autocommit set through tether is still on after tether replaced the driver connection."""
    with layer_connection(driver_target, layer) as con:
        old = raw_of(con)
        backend = driver_target.backend_id(old)
        old.rollback()  # backend_id() ran a query on the driver connection
        if driver_target.name == "psycopg":
            con.autocommit = True
        else:
            con.autocommit(True)
        driver_target.kill_backend(backend)
        with con.cursor() as cur:  # reopened transparently, outside a transaction
            cur.execute("SELECT 1")
        new = raw_of(con)
        assert new is not old
        mode = new.autocommit if driver_target.name == "psycopg" else new.get_autocommit()
        assert mode is True
