"""Shared helpers: every tether layer over one driver target, SQLAlchemy URLs for the servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether.harness import DriverTarget
from tether.harness.servers import DatabaseServer
from tether.persistent import PersistentDB, PersistentPg
from tether.pooled import PooledDB, PooledPg
from tether.steady import SteadyPgConnection
from tether.steady import connect as steady_connect

LAYERS = ("steady", "persistent", "pooled")


@contextmanager
def layer_connection(target: DriverTarget, layer: str, **options: Any) -> Iterator[Any]:
    """A connection of ``layer`` (steady, persistent, pooled) over ``target``'s driver."""
    args, kwargs = target.args, {**target.kwargs, **options}
    owner: Any = None
    if target.name == "pg":
        if layer == "steady":
            con = SteadyPgConnection(None, None, True, *args, **kwargs)
        elif layer == "persistent":
            owner = PersistentPg(None, None, False, None, *args, **kwargs)
            con = owner.connection()
        else:
            owner = PooledPg(0, 0, 0, False, None, None, True, *args, **kwargs)
            con = owner.connection()
    elif layer == "steady":
        con = steady_connect(target.creator, None, None, None, 1, True, None, *args, **kwargs)
    elif layer == "persistent":
        owner = PersistentDB(
            target.creator, None, None, None, 0, False, None, None, *args, **kwargs
        )
        con = owner.connection()
    else:
        # DBUtils' positional order: creator, mincached, maxcached, maxshared,
        # maxconnections, blocking, maxusage, setsession, reset, failures, ping, isfatal.
        owner = PooledDB(
            target.creator, 0, 0, 0, 0, False, None, None, True, None, 1, None, *args, **kwargs
        )
        con = owner.connection()
    try:
        yield con
    finally:
        try:
            con.close()
        finally:
            if owner is not None:
                owner.close()
            elif layer == "steady":
                con.close()


def raw_of(con: Any) -> Any:
    """The driver connection under a tether connection of any layer."""
    if hasattr(con, "db") and type(con).__name__.endswith("PgConnection"):
        return con.db
    return con.dbapi_connection


def sqlalchemy_url(server: DatabaseServer, database: str | None = None) -> str:
    """A SQLAlchemy URL for the server: psycopg for PostgreSQL, PyMySQL for MariaDB."""
    url = server.url(database)
    if server.kind == "postgresql":
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return url.replace("mysql://", "mysql+pymysql://", 1) + "?charset=utf8mb4"


def unique_name(prefix: str) -> str:
    """A table or database name unique to this test run and xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}_{worker}_{uuid.uuid4().hex[:10]}"
