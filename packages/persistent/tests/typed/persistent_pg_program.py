"""A user's program on PyGreSQL's classic API, checked with ``mypy --strict``: PersistentPg's types.

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

from tether.persistent import PersistentPg
from tether.steady import PgConnection


def main() -> None:
    kwargs: dict[str, Any] = json.loads(os.environ["TETHER_PG_KWARGS"])
    persist = PersistentPg(**kwargs)
    try:
        db = persist.connection()  # this thread's connection: pg.DB's methods, typed
        assert_type(db, PgConnection)
        assert_type(persist.dedicated_connection(), PgConnection)
        assert_type(db.query("SELECT $1::int + 1", 41), pg.Query)
        print(db.query("SELECT $1::int + 1", 41).getresult())
        with db:  # a transaction, as with pg.DB
            db.query("CREATE TEMP TABLE typed_pg (id serial PRIMARY KEY, name text)")
            inserted = db.insert("typed_pg", name="tether")
            assert_type(inserted, dict[str, Any])
            assert_type(db.get("typed_pg", inserted["id"]), dict[str, Any])
        assert_type(db.get_as_list("typed_pg", what="name"), list[Any])
        print(db.get_as_list("typed_pg", what="name", scalar=True))
    finally:
        persist.close()


if __name__ == "__main__":
    main()
