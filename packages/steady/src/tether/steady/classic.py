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
from collections.abc import Callable
from types import MethodType
from typing import Any

from tether.simple_pool.drivers import DriverAdapter

from .core import PING_ON_EXECUTE, SetSession, SteadyBase
from .errors import InvalidConnectionError

__all__ = ["SteadyPgConnection"]

# Methods of pg.DB that talk to the server and are made steady.
_STEADY_METHODS = frozenset(
    {"query", "query_formatted", "query_prepared", "prepare", "get", "insert", "update",
     "upsert", "delete", "truncate", "get_as_list", "get_as_dict", "delete_prepared",
     "describe_prepared", "notification_handler", "inserttable", "get_tables",
     "get_databases", "get_relations", "get_attnames", "get_parameter", "set_parameter",
     "has_table_privilege", "pkey", "pkeys"}
)  # fmt: skip


class SteadyPgConnection(SteadyBase):
    """A classic ``pg.DB`` connection that reopens itself when that is safe.

    ``SteadyPgConnection(maxusage=None, setsession=None, closeable=True, *args, **kwargs)``
    as in DBUtils; ``args``/``kwargs`` go to ``pg.DB()``. Keyword-only extras
    as for :func:`tether.steady.connect`. Used as a context manager it runs a
    transaction: ``begin()`` on entry, ``commit()`` or ``rollback()`` on exit.
    """

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

        super().__init__(
            pg.DB,
            maxusage,
            setsession,
            None,
            ping,
            closeable,
            None,
            args,
            kwargs,
            driver=driver if driver is not None else "pg",
            max_lifetime=max_lifetime,
            on_connect=on_connect,
            logger=logger,
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
            self.rollback()

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
        return getattr(self.escape_to_driver(), name)
