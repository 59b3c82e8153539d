"""PooledDB: DBUtils' pool of DB-API 2 connections, on tether's pool and steady connections.

``PooledDB(creator, mincached, maxcached, maxshared, maxconnections, blocking,
maxusage, setsession, reset, failures, ping, isfatal, *args, **kwargs)`` takes
DBUtils 3.2's arguments in DBUtils' order, with DBUtils' meaning, and
``connection(shareable=True)`` / ``dedicated_connection()`` return proxies
of steady connections (:mod:`tether.pooled.proxies`). What tether adds is
keyword-only, with names no driver's ``connect()`` uses, so everything else
still goes to the creator; see :class:`PooledDB` and the package README.

Where tether is stricter than DBUtils:

* a blocking checkout waits at most ``checkout_timeout`` (30 s), not forever;
* a returned connection is always rolled back when a transaction is open,
  whatever ``reset`` says (DBUtils' ``reset=False`` could hand the next user a
  half-done transaction);
* the steady connections never re-run a statement inside a transaction on a
  new connection (:mod:`tether.steady.core`), so no half transaction is ever
  committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from tether.simple_pool.dbapi import DBAPIConnection
from tether.simple_pool.drivers import DriverAdapter, adapter_for
from tether.steady import SteadyDBConnection, SteadyOptions
from tether.steady.core import Failures, SetSession
from tether.steady.ping import parse_ping

from ._version import __version__
from .errors import NotSupportedError
from .events import EventHook
from .options import PoolOptions
from .pool import Pool
from .proxies import PooledDedicatedDBConnection, PooledSharedDBConnection
from .reset import reset_policy

__all__ = ["PooledDB"]

#: The type of the creator's connections: what ``connection()`` is typed as.
CT = TypeVar("CT")


class PooledDB(Pool, Generic[CT]):
    """A pool of steady DB-API 2 connections (DBUtils' ``PooledDB``).

    DBUtils' arguments: ``creator`` (a DB-API 2 module or a function returning
    a connection), ``mincached`` (idle connections opened at once, and kept
    by the maintenance thread), ``maxcached`` (most idle connections kept; 0:
    no limit), ``maxshared`` (most shared connections, when the driver's
    threadsafety > 1; 0: all dedicated), ``maxconnections`` (0: no limit),
    ``blocking`` (wait, rather than raise TooManyConnectionsError, at the
    limit), ``maxusage`` (statements before a connection is reopened),
    ``setsession`` (SQL run on every new connection), ``reset`` (True, False,
    None: roll back an open transaction on return -- always, see
    :mod:`tether.pooled.reset`; or a callable ``reset(raw)``), ``failures`` and
    ``isfatal`` (what counts as a lost connection), ``ping`` (when and how to
    check liveness; the "on checkout" check is made only after ``ping_after``
    seconds idle), ``args``/``kwargs`` (for the creator).

    tether's keyword-only extras: ``checkout_timeout`` (seconds; the one
    deadline of a blocking checkout, default 30), ``max_lifetime``,
    ``max_idle`` (seconds), ``max_connecting`` (most connects
    running at once for blocking checkouts, default 2: a burst is served by
    returned connections, not by a connect per thread), ``max_waiting``
    (most threads blocked at once; 0: no limit), ``reset_session`` (full session reset on return),
    ``leak_threshold`` (seconds), ``validate_interval`` (seconds between
    background pings of idle connections), ``ping_after`` (seconds idle before
    a checkout pings; 0: every checkout), ``reconnect_backoff`` ((first,
    maximum) seconds), ``on_connect`` (called with each new driver
    connection), ``on_event`` (hook, :mod:`tether.pooled.events`), ``driver``
    (the driver adapter), ``logger``, ``name``.

    Typed as ``PooledDB[CT]``: ``connection()`` is a ``CT``, the type the
    creator returns (``PooledDB(sqlite3.connect, ...)`` pools
    ``sqlite3.Connection``); a module creator gives a
    :class:`~tether.simple_pool.dbapi.DBAPIConnection`.
    """

    version = __version__
    _proxy = PooledDedicatedDBConnection
    _shared_proxy = PooledSharedDBConnection

    @overload
    def __init__(
        self: PooledDB[CT],
        creator: Callable[..., CT],
        mincached: int | None = 0,
        maxcached: int | None = 0,
        maxshared: int | None = 0,
        maxconnections: int | None = 0,
        blocking: bool = False,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        reset: bool | Callable[[Any], object] | None = True,
        failures: Failures | None = None,
        ping: Any = 1,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        checkout_timeout: float = 30.0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_waiting: int = 0,
        max_connecting: int = 2,
        reset_session: bool = False,
        leak_threshold: float | None = None,
        validate_interval: float | None = None,
        ping_after: float = 1.0,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
        on_connect: Callable[[Any], object] | None = None,
        on_event: EventHook | None = None,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        logger: logging.Logger | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: PooledDB[DBAPIConnection],
        creator: ModuleType,
        mincached: int | None = 0,
        maxcached: int | None = 0,
        maxshared: int | None = 0,
        maxconnections: int | None = 0,
        blocking: bool = False,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        reset: bool | Callable[[Any], object] | None = True,
        failures: Failures | None = None,
        ping: Any = 1,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        checkout_timeout: float = 30.0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_waiting: int = 0,
        max_connecting: int = 2,
        reset_session: bool = False,
        leak_threshold: float | None = None,
        validate_interval: float | None = None,
        ping_after: float = 1.0,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
        on_connect: Callable[[Any], object] | None = None,
        on_event: EventHook | None = None,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        logger: logging.Logger | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None: ...

    def __init__(
        self,
        creator: ModuleType | Callable[..., Any],
        mincached: int | None = 0,
        maxcached: int | None = 0,
        maxshared: int | None = 0,
        maxconnections: int | None = 0,
        blocking: bool = False,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        reset: bool | Callable[[Any], object] | None = True,
        failures: Failures | None = None,
        ping: Any = 1,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        checkout_timeout: float = 30.0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_waiting: int = 0,
        max_connecting: int = 2,
        reset_session: bool = False,
        leak_threshold: float | None = None,
        validate_interval: float | None = None,
        ping_after: float = 1.0,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
        on_connect: Callable[[Any], object] | None = None,
        on_event: EventHook | None = None,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        logger: logging.Logger | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._closed = True  # until set up, so that __del__ works whatever fails
        # Every argument is checked here, by the options object (options.py,
        # with the checks every layer uses), before anything is opened.
        options = PoolOptions(
            mincached=mincached,
            maxcached=maxcached,
            maxshared=maxshared,
            maxconnections=maxconnections,
            blocking=blocking,
            reset=reset,
            reset_session=reset_session,
            checkout_timeout=checkout_timeout,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            max_waiting=max_waiting,
            max_connecting=max_connecting,
            leak_threshold=leak_threshold,
            validate_interval=validate_interval,
            ping_after=ping_after,
            reconnect_backoff=reconnect_backoff,
            on_event=on_event,
            name=name,
            steady=SteadyOptions(
                maxusage=maxusage,
                setsession=setsession,
                failures=failures,
                ping=ping,
                closeable=False,
                isfatal=isfatal,
                on_connect=on_connect,
                logger=logger,
            ),
        )
        adapter = adapter_for(creator, driver)
        threadsafety = _threadsafety(creator, adapter)
        if not threadsafety:
            raise NotSupportedError("Database module is not thread-safe.")
        self._creator = creator
        self._args = args
        ping_flags, _ = parse_ping(options.steady.ping, adapter)
        self._setup(
            adapter,
            kwargs,
            options,
            reset=reset_policy(options.reset, options.reset_session),
            # as DBUtils: sharing needs threadsafety > 1
            maxshared=options.maxshared if threadsafety > 1 else 0,
            ping_flags=ping_flags,
        )

    @overload
    @classmethod
    def from_options(
        cls,
        creator: Callable[..., CT],
        options: PoolOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PooledDB[CT]: ...

    @overload
    @classmethod
    def from_options(
        cls,
        creator: ModuleType,
        options: PoolOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PooledDB[DBAPIConnection]: ...

    @classmethod
    def from_options(
        cls,
        creator: ModuleType | Callable[..., Any],
        options: PoolOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PooledDB[Any]:
        """A pool with the settings of ``options``; ``args``/``kwargs`` go to the creator.

        ``PooledDB.from_options(creator, pool.options)`` makes a pool like ``pool``.
        """
        if not isinstance(options, PoolOptions):
            raise TypeError(f"options: expected PoolOptions, got {type(options).__name__}")
        o, s = options, options.steady
        make: Any = cls  # the overloads above type the result; __init__'s own pick the creator
        pool: PooledDB[Any] = make(
            creator,
            o.mincached,
            o.maxcached,
            o.maxshared,
            o.maxconnections,
            o.blocking,
            s.maxusage,
            s.setsession,
            o.reset,  # an int: refused by reset_policy, as in __init__
            s.failures,
            s.ping,
            s.isfatal,
            *args,
            driver=driver,
            **o.extras(),
            **kwargs,
        )
        return pool

    if TYPE_CHECKING:  # the types only: at run time these are Pool's, the hot path unchanged
        # Typed as the creator's connection, though they return a proxy: the
        # proxy passes every attribute it does not define to the driver's
        # connection, and isinstance(proxy, type(driver connection)) holds (the
        # proxy's __class__ is the driver's), so what CT promises is there.
        # tether's own extras (invalidate(), detach()) are on PooledConnection.
        def connection(self, shareable: bool = True) -> CT: ...

        def dedicated_connection(self) -> CT: ...

    def _new_connection(self, kwargs: dict[str, Any]) -> SteadyDBConnection:
        return SteadyDBConnection.from_options(
            self._creator, self._options.steady, *self._args, driver=self._adapter, **kwargs
        )

    def steady_connection(self) -> SteadyDBConnection:
        """A steady connection of this pool's kind, outside the pool (closed by ``close()``)."""
        options = self._options.steady.replace(closeable=True)
        return SteadyDBConnection.from_options(
            self._creator, options, *self._args, driver=self._adapter, **self._kwargs
        )


def _threadsafety(creator: Any, adapter: DriverAdapter) -> int:
    """The DB-API threadsafety level, found as DBUtils finds it (1 when unknown)."""
    for owner in (creator, getattr(creator, "dbapi", None)):
        value = getattr(owner, "threadsafety", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if isinstance(creator, ModuleType):
        return 0  # a module that does not say it is thread-safe (DBUtils: not supported)
    value = adapter.threadsafety
    return 1 if value is None else value
