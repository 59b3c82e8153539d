"""A persistent connection is typed as the creator's connection, and checked as one.

Every ``assert_type`` must hold, and each ``# E: <code>`` line must be an
error of that code, no other line one: ``test_typing.py`` checks both.
Never run.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from typing_extensions import assert_type

from tether.persistent import PersistentDB
from tether.simple_pool.dbapi import DBAPIConnection


def sqlite3_creator() -> None:
    persist = PersistentDB(sqlite3.connect, database=":memory:")
    assert_type(persist.connection(), sqlite3.Connection)
    assert_type(persist.dedicated_connection(), sqlite3.Connection)
    with persist.connection() as db:
        db.no_such_method()  # E: attr-defined
        db.execute(42)  # E: arg-type


def psycopg_creator(conninfo: str) -> None:
    persist = PersistentDB(psycopg.connect, conninfo=conninfo)
    assert_type(persist, PersistentDB[psycopg.Connection[Any]])
    with persist.connection() as db:
        assert_type(db, psycopg.Connection[Any])
        db.no_such_method()  # E: attr-defined
    # The second positional argument is DBUtils' maxusage, not the creator's:
    PersistentDB(psycopg.connect, conninfo)  # E: call-overload


def module_creator() -> None:
    persist = PersistentDB(sqlite3, database=":memory:")
    with persist.connection() as db:
        assert_type(db, DBAPIConnection)
        db.no_such_method()  # E: attr-defined
        cursor: int = db.cursor()  # E: assignment
        print(cursor)
