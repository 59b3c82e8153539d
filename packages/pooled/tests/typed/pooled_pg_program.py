"""A user's program on PyGreSQL's classic API, checked with ``mypy --strict``: PooledPg's types.

``test_typing.py`` type-checks it (every ``assert_type`` must hold, no error
anywhere) and runs it against the tests' PostgreSQL, whose ``pg.DB()``
arguments it reads as JSON from ``TETHER_PG_KWARGS`` (the environment, not
the command line: they hold a password). It uses only the public API.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pg
from typing_extensions import assert_type

from tether.pooled import PooledPg, PoolStats
from tether.steady import PgConnection


def main() -> None:
    kwargs: dict[str, Any] = json.loads(os.environ["TETHER_PG_KWARGS"])
    with PooledPg(1, 1, 1, name="typed-pg", **kwargs) as pool:
        assert_type(pool, PooledPg)
        with pool.connection() as db:  # pg.DB's methods, with PyGreSQL's signatures
            assert_type(db, PgConnection)
            assert_type(db.query("SELECT $1::int + 1", 41), pg.Query)
            row = db.query_formatted("SELECT %s::int AS n", (7,)).dictresult()[0]
            assert_type(db.get_tables(), list[str])
            assert_type(db.db, pg.DB)  # the pg.DB itself, bypassing tether
            print(db.query("SELECT $1::int + 1", 41).getresult(), row)
        con = pool.connection()
        assert_type(con, PgConnection)
        assert_type(con.begin(), pg.Query)
        con.query("CREATE TEMP TABLE typed_pg (id serial PRIMARY KEY, name text)")
        inserted = con.insert("typed_pg", name="tether")
        assert_type(inserted, dict[str, Any])
        assert_type(con.delete("typed_pg", inserted), int)
        con.rollback()
        con.close()  # back to the pool
        with pool.dedicated_connection() as other:  # the same, as in DBUtils
            assert_type(other, PgConnection)
        stats = pool.stats()
        assert_type(stats, PoolStats)
        print(inserted["name"], stats["checkouts"], stats["size"])


if __name__ == "__main__":
    main()
