"""Steady classic PyGreSQL connections: DBUtils' ``steady_pg`` on tether's reopen rule.

PyGreSQL's classic API (``pg.DB``) is not DB-API 2: statements run through
``query()``, ``get()``, ``insert()``... and transactions through ``begin()``,
``end()``/``commit()`` and ``rollback()``. :class:`SteadyPgConnection` makes
those methods steady with exactly the state machine the DB-API flavour uses
(:class:`tether.steady.core.SteadyBase`); only this thin proxy differs.
Outside ``begin()`` the classic API commits every statement by itself, so a
statement is re-run after a lost connection only when it cannot have reached
the server (the session was seen closed before sending).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import MethodType
from typing import TYPE_CHECKING, Any, AnyStr, Protocol, TypeVar

if TYPE_CHECKING:  # PyGreSQL's own types (it ships py.typed); not imported at run time
    import pg
    from pg import Query
    from pg.attrs import AttrDict

from tether.simple_pool.drivers import DriverAdapter
from tether.simple_pool.lending import METHODS

from .core import PING_ON_EXECUTE, SetSession, SteadyBase
from .errors import InvalidConnectionError
from .lease import leased_bound
from .options import SteadyOptions

__all__ = ["PgConnection", "SteadyPgConnection"]

_P = TypeVar("_P", bound="SteadyPgConnection")

# Methods of pg.DB that talk to the server and are made steady.
_STEADY_METHODS = frozenset(
    {"query", "query_formatted", "query_prepared", "prepare", "get", "insert", "update",
     "upsert", "delete", "truncate", "get_as_list", "get_as_dict", "delete_prepared",
     "describe_prepared", "inserttable", "get_tables",
     "get_databases", "get_relations", "get_attnames", "get_parameter", "set_parameter",
     "has_table_privilege", "pkey", "pkeys"}
)  # fmt: skip


class PgConnection(Protocol):
    """The classic PyGreSQL API as tether's classic connections give it, for type checkers.

    What :class:`SteadyPgConnection`, a ``PersistentPg`` connection and a
    ``PooledPg`` proxy are typed as: ``pg.DB``'s methods with PyGreSQL's own
    signatures (PyGreSQL >= 6 ships them), so ``mypy --strict`` checks
    ``db.query("SELECT $1", 1)`` against them and rejects ``db.no_such_method()``.
    ``pg.DB`` itself is no help there: it passes unknown attributes to its
    low-level connection (a ``__getattr__``), so to mypy every attribute exists.
    Nor is it what these objects are (``isinstance(db, pg.DB)`` is False: tether's
    connections forward to one). ``db`` is the ``pg.DB`` itself (bypassing
    tether), not pg.DB's low-level connection. ``with db:`` gives ``db``
    back and keeps each object's own rule: a steady (or persistent)
    connection runs a transaction, as ``pg.DB`` does; a pooled one commits
    or rolls back what is open and goes back to its pool. The rest of
    ``pg.DB`` (large objects, COPY, notices) is reached through ``db``.
    """

    @property
    def db(self) -> pg.DB: ...

    # -- the session
    def close(self) -> None: ...
    def reopen(self) -> None: ...
    def reset(self) -> None: ...

    # -- transactions
    def begin(self, mode: str | None = None) -> Query: ...
    def commit(self) -> Query: ...
    def end(self) -> Query: ...
    def rollback(self, name: str | None = None) -> Query: ...
    def savepoint(self, name: str) -> Query: ...
    def release(self, name: str) -> Query: ...
    def transaction(self) -> int: ...

    # -- statements
    def query(self, command: str, *args: Any) -> Query: ...
    def query_formatted(
        self,
        command: str,
        parameters: tuple[Any, ...] | list[Any] | dict[str, Any] | None = None,
        types: tuple[Any, ...] | list[Any] | dict[str, Any] | None = None,
        inline: bool = False,
    ) -> Query: ...
    def query_prepared(self, name: str, *args: Any) -> Query: ...
    def prepare(self, name: str, command: str) -> None: ...
    def describe_prepared(self, name: str | None = None) -> Query: ...
    def delete_prepared(self, name: str | None = None) -> Query: ...

    # -- rows by table
    def get(
        self, table: str, row: Any, keyname: str | tuple[str, ...] | None = None
    ) -> dict[str, Any]: ...
    def insert(
        self, table: str, row: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...
    def update(
        self, table: str, row: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...
    def upsert(
        self, table: str, row: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...
    def clear(self, table: str, row: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def delete(self, table: str, row: dict[str, Any] | None = None, **kw: Any) -> int: ...
    def truncate(
        self,
        table: str | list[str] | tuple[str, ...] | set[str] | frozenset[str],
        restart: bool = False,
        cascade: bool = False,
        only: bool = False,
    ) -> Query: ...
    def get_as_list(
        self,
        table: str,
        what: str | list[str] | tuple[str, ...] | None = None,
        where: str | list[str] | tuple[str, ...] | None = None,
        order: str | list[str] | tuple[str, ...] | bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        scalar: bool = False,
    ) -> list[Any]: ...
    def get_as_dict(
        self,
        table: str,
        keyname: str | list[str] | tuple[str, ...] | None = None,
        what: str | list[str] | tuple[str, ...] | None = None,
        where: str | list[str] | tuple[str, ...] | None = None,
        order: str | list[str] | tuple[str, ...] | bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        scalar: bool = False,
    ) -> dict[Any, Any]: ...
    def inserttable(
        self,
        table: str,
        values: Sequence[list[Any] | tuple[Any, ...]],
        columns: list[str] | tuple[str, ...] | None = None,
        freeze: bool = False,
    ) -> int: ...

    # -- the catalog and settings
    def pkey(
        self, table: str, composite: bool = False, flush: bool = False
    ) -> str | tuple[str, ...]: ...
    def pkeys(self, table: str) -> tuple[str, ...]: ...
    def get_databases(self) -> list[str]: ...
    def get_relations(
        self, kinds: str | Sequence[str] | None = None, system: bool = False
    ) -> list[str]: ...
    def get_tables(self, system: bool = False) -> list[str]: ...
    def get_attnames(self, table: str, with_oid: bool = True, flush: bool = False) -> AttrDict: ...
    def has_table_privilege(
        self, table: str, privilege: str = "select", flush: bool = False
    ) -> bool: ...
    def get_parameter(
        self,
        parameter: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | dict[str, Any],
    ) -> str | list[str] | dict[str, str]: ...
    def set_parameter(
        self,
        parameter: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | dict[str, Any],
        value: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | None = None,
        local: bool = False,
    ) -> None: ...

    # -- quoting
    def escape_literal(self, s: AnyStr) -> AnyStr: ...
    def escape_identifier(self, s: AnyStr) -> AnyStr: ...
    def escape_string(self, s: AnyStr) -> AnyStr: ...
    def escape_bytea(self, s: AnyStr) -> AnyStr: ...

    def __enter__(self) -> PgConnection: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


class SteadyPgConnection(SteadyBase):
    """A classic ``pg.DB`` connection that reopens itself when that is safe.

    ``SteadyPgConnection(maxusage=None, setsession=None, closeable=True, *args, **kwargs)``
    as in DBUtils; ``args``/``kwargs`` go to ``pg.DB()``. Keyword-only extras
    as for :func:`tether.steady.connect`. Used as a context manager it runs a
    transaction: ``begin()`` on entry, ``commit()`` or ``rollback()`` on exit.
    """

    __slots__ = ()  # its state is SteadyBase's slots

    def __init__(
        self,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        closeable: bool = True,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        ping: Any = 0,
        **kwargs: Any,
    ) -> None:
        import pg  # PyGreSQL; imported only by those who use the classic API

        options = SteadyOptions(
            maxusage=maxusage,
            setsession=setsession,
            ping=ping,
            closeable=closeable,
            max_lifetime=max_lifetime,
            on_connect=on_connect,
            logger=logger,
        )
        super().__init__(
            pg.DB, options, args, kwargs, driver=driver if driver is not None else "pg"
        )

    @classmethod
    def from_options(
        cls: type[_P],
        options: SteadyOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> _P:
        """A steady classic connection with the settings of ``options``; ``args``/``kwargs``
        go to ``pg.DB()``. ``failures`` and ``isfatal`` must be unset (PyGreSQL's
        classic API has its own errors: see classic.py).
        """
        if not isinstance(options, SteadyOptions):
            raise TypeError(f"options: expected SteadyOptions, got {type(options).__name__}")
        o = options
        if o.failures is not None or o.isfatal is not None:
            raise ValueError("options: SteadyPgConnection takes no failures or isfatal")
        return cls(
            o.maxusage,
            o.setsession,
            o.closeable,
            *args,
            driver=driver,
            max_lifetime=o.max_lifetime,
            on_connect=o.on_connect,
            logger=o.logger,
            ping=o.ping,
            **kwargs,
        )

    def reopen(self) -> None:
        """Reopen the connection now (ending any transaction with the old one)."""
        self._reopen("reopen() was called")

    def reset(self) -> None:
        """Reset the connection: a new session, with ``setsession`` applied again."""
        self._reopen("reset() was called")

    def end(self, *args: Any, **kwargs: Any) -> Any:
        """Commit the transaction (PyGreSQL's ``end()``)."""
        return self.commit(*args, **kwargs)

    @property
    def db(self) -> Any:
        """The ``pg.DB`` instance itself (bypasses tether)."""
        if self._raw is None:
            raise InvalidConnectionError("the steady connection is closed")
        return self.escape_to_driver()  # what is done with it is not seen here

    def __enter__(self) -> SteadyPgConnection:
        self.begin()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.roll_back_block()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._closed:
            raise InvalidConnectionError("the steady connection is closed")
        if name in _STEADY_METHODS or name.startswith("get_"):

            def steady(self: SteadyPgConnection, *args: Any, **kwargs: Any) -> Any:
                return self._run(lambda raw: getattr(raw, name)(*args, **kwargs), PING_ON_EXECUTE)

            return MethodType(steady, self)  # a method, like pg.DB's own
        if self._raw is None:
            self._ready()
        # pg.DB's other methods can change the session unseen.
        value = getattr(self.escape_to_driver(), name)
        if name in self._adapter.unrestorable:
            self._state.spoiled = True  # the session ends with the checkout (see end_checkout)
        if isinstance(value, METHODS):
            # What it returns may hold the session (db.source(), db.locreate(),
            # db.notification_handler()): lent for this checkout only (lease.py;
            # found by an outside attack: a kept Source read and wrote in the
            # next borrower's transaction).
            return leased_bound(self, value)
        return value
