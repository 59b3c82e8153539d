"""A user's program, checked with ``mypy --strict``: the types tether.persistent promises.

``test_typing.py`` type-checks it (every ``assert_type`` must hold, no error
anywhere) and runs it; ``nox -s typecheck`` checks it too.
"""

from __future__ import annotations

import sqlite3

from typing_extensions import assert_type

from tether.persistent import PersistentDB, PersistentOptions
from tether.simple_pool.dbapi import DBAPIConnection


def main() -> None:
    # A typed connect function: this thread's connection is a sqlite3.Connection,
    # as the steady connection's isinstance check agrees at run time.
    persist = PersistentDB(sqlite3.connect, database=":memory:")
    assert_type(persist, PersistentDB[sqlite3.Connection])
    with persist.connection() as db:
        assert_type(db, sqlite3.Connection)
        print(isinstance(db, sqlite3.Connection), db.execute("SELECT 1").fetchone())
    assert_type(persist.options, PersistentOptions)
    like = PersistentDB.from_options(sqlite3.connect, persist.options, database=":memory:")
    assert_type(like, PersistentDB[sqlite3.Connection])
    like.close()
    persist.close()
    # A DB-API 2 module: the Protocol every driver's connection fits.
    plain = PersistentDB(sqlite3, database=":memory:")
    assert_type(plain, PersistentDB[DBAPIConnection])
    with plain.connection() as con:
        assert_type(con, DBAPIConnection)
        cursor = con.cursor()
        cursor.execute("SELECT 2")
        print(cursor.fetchone())
    plain.close()


if __name__ == "__main__":
    main()
