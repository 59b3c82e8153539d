"""The DB-API 2 connection, as a type: what tether's pools promise when the creator is untyped.

A pool built on a typed connect function (``sqlite3.connect``,
``psycopg.connect``) is typed with the connection class that function
returns. A pool built on a DB-API 2 *module* (``PooledDB(sqlite3)``) cannot
be: a module has no return type. Its connections are typed with
:class:`DBAPIConnection`, the part of PEP 249 every driver has, so that a
misspelt method is a type error there too. Type-level only: nothing here
runs at checkout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["DBAPIConnection", "DBAPICursor"]

_Self = TypeVar("_Self", bound="DBAPIConnection")


class DBAPICursor(Protocol):
    """A PEP 249 cursor: execute, fetch, close."""

    @property
    def description(self) -> Sequence[Any] | None: ...

    @property
    def rowcount(self) -> int: ...

    def execute(self, operation: Any, *args: Any, **kwargs: Any) -> object: ...

    def executemany(self, operation: Any, seq_of_parameters: Any, /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchmany(self, size: int = ..., /) -> Sequence[Any]: ...

    def fetchall(self) -> Sequence[Any]: ...

    def close(self) -> object: ...


class DBAPIConnection(Protocol):
    """A PEP 249 connection as tether's proxies expose it: cursor, commit, rollback, close, with.

    ``with`` is tether's rule (commit on success, roll back on an exception,
    then give the connection back), which every pooled and persistent
    connection has, whatever the driver.
    """

    def cursor(self, *args: Any, **kwargs: Any) -> DBAPICursor: ...

    def commit(self) -> object: ...

    def rollback(self) -> object: ...

    def close(self) -> object: ...

    def __enter__(self: _Self) -> _Self: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> object: ...
