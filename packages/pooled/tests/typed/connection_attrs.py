"""A method the driver's connection does not have, called on a pooled connection.

With the connection typed as what the creator returns, ``mypy --strict``
flags the marked line; ``test_typing.py`` expects that (as an xfail while
``PooledDB.connection()`` returns ``Any``). Never run.
"""

from __future__ import annotations

import sqlite3

from tether.pooled import PooledDB


def misuse(pool: PooledDB) -> None:
    with pool.connection() as db:
        db.no_such_method()  # E: attr-defined
    pool.connection().no_such_method()  # E: attr-defined
    print(sqlite3)
