"""A pooled connection is typed as the creator's connection, and checked as one.

``PooledDB(creator)`` is a ``PooledDB[CT]`` where ``creator`` is a typed
connect function returning ``CT``; a DB-API 2 module creator gives a
``PooledDB[DBAPIConnection]``. Every ``assert_type`` must hold, and each
``# E: <code>`` line (a method the connection type lacks) must be an error
of that code, no other line one: ``test_typing.py`` checks both. Never run.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Optional

import psycopg
from psycopg.rows import TupleRow
from typing_extensions import assert_type

from tether.pooled import PooledDB
from tether.simple_pool.dbapi import DBAPIConnection, DBAPICursor


def sqlite3_creator() -> None:
    pool = PooledDB(sqlite3.connect, database=":memory:")
    assert_type(pool, PooledDB[sqlite3.Connection])
    assert_type(pool.connection(), sqlite3.Connection)
    assert_type(pool.dedicated_connection(), sqlite3.Connection)
    with pool.connection() as db:
        assert_type(db, sqlite3.Connection)
        assert_type(db.execute("SELECT 1"), sqlite3.Cursor)
        db.no_such_method()  # E: attr-defined
    pool.connection().no_such_method()  # E: attr-defined


def psycopg_creator(conninfo: str) -> None:
    # psycopg.connect is generic in the row type: mypy leaves it open (Any) ...
    pool = PooledDB(psycopg.connect, conninfo=conninfo)
    assert_type(pool, PooledDB[psycopg.Connection[Any]])
    with pool.connection() as db:
        assert_type(db, psycopg.Connection[Any])
        db.no_such_method()  # E: attr-defined
    pool.dedicated_connection().no_such_method()  # E: attr-defined
    # ... unless the pool's annotation closes it, as with psycopg_pool.
    rows: PooledDB[psycopg.Connection[TupleRow]] = PooledDB(psycopg.connect, conninfo=conninfo)
    with rows.connection() as db:
        assert_type(db.execute("SELECT 1").fetchone(), Optional[TupleRow])


def module_creator() -> None:
    pool = PooledDB(sqlite3, database=":memory:")
    assert_type(pool, PooledDB[DBAPIConnection])
    with pool.connection() as db:
        assert_type(db, DBAPIConnection)
        assert_type(db.cursor(), DBAPICursor)
        db.cursor().execute("SELECT 1")
        db.no_such_method()  # E: attr-defined
    pool.connection().cursor().no_such_method()  # E: attr-defined


def annotated(pool: PooledDB[sqlite3.Connection]) -> sqlite3.Connection:
    return pool.connection()
