"""PooledPg: DBUtils' pool of classic PyGreSQL connections, as a thin front on the same pool.

PyGreSQL's classic API (``pg.DB``) is not DB-API 2, but pooling it is the same
job: the only differences are the steady connection kind
(:class:`tether.steady.SteadyPgConnection`), the proxy
(:class:`~tether.pooled.proxies.PooledPgConnection`, which adds
``reopen()``), no shared connections, and DBUtils' ``reset`` constants. So
:class:`PooledPg` is :class:`tether.pooled.pool.Pool` with those plugged in:
every extra of :class:`~tether.pooled.PooledDB` (checkout timeout,
lifetimes, leak detection, stats...) works here too.

``reset`` takes DBUtils' values: 0/None (roll back an open transaction),
``RESET_ALWAYS_ROLLBACK`` (the same in tether: a rollback is sent only when
one is open, as the driver reports it), ``RESET_COMPLETELY`` (a full session
reset with ``DISCARD ALL`` through the driver adapter; DBUtils reopened the
connection, which resets the same state at the cost of a new connection),
or a callable ``reset(db)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.simple_pool.drivers import DriverAdapter, adapter_for
from tether.steady import PgConnection, SteadyOptions, SteadyPgConnection
from tether.steady.core import SetSession
from tether.steady.ping import parse_ping

from ._version import __version__
from .errors import (
    InvalidConnection,
    InvalidConnectionError,
    PooledPgError,
    TooManyConnections,
    TooManyConnectionsError,
)
from .events import EventHook
from .options import PoolOptions
from .pool import Pool
from .proxies import PooledPgConnection
from .reset import RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY, reset_policy

__all__ = [
    "RESET_ALWAYS_ROLLBACK",
    "RESET_COMPLETELY",
    "InvalidConnection",
    "InvalidConnectionError",
    "PooledPg",
    "PooledPgConnection",
    "PooledPgError",
    "TooManyConnections",
    "TooManyConnectionsError",
]


class PooledPg(Pool):
    """A pool of steady classic PyGreSQL connections (DBUtils' ``PooledPg``).

    ``PooledPg(mincached=0, maxcached=0, maxconnections=0, blocking=False,
    maxusage=None, setsession=None, reset=None, *args, **kwargs)`` with
    DBUtils' meaning; ``args``/``kwargs`` go to ``pg.DB()``. The keyword-only
    extras are :class:`~tether.pooled.PooledDB`'s, plus ``ping`` (DBUtils'
    PooledPg never checks connections; here the default 1 checks those idle
    longer than ``ping_after`` on checkout, as PooledDB does).
    """

    version = __version__
    _proxy = PooledPgConnection
    _shared_proxy = PooledPgConnection

    def __init__(
        self,
        mincached: int | None = 0,
        maxcached: int | None = 0,
        maxconnections: int | None = 0,
        blocking: bool = False,
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        reset: int | bool | Callable[[Any], object] | None = None,
        *args: Any,
        ping: Any = 1,
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
        # Every argument is checked here, by the options object (options.py).
        options = PoolOptions(
            mincached=mincached,
            maxcached=maxcached,
            maxshared=0,
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
                ping=ping,
                closeable=False,
                on_connect=on_connect,
                logger=logger,
            ),
        )
        import pg  # PyGreSQL; imported only by those who use the classic API

        if driver is None:
            try:
                adapter = adapter_for(pg.DB, "pg")
            except ValueError:  # no adapter registered under that name
                adapter = adapter_for(pg.DB)
        else:
            adapter = adapter_for(pg.DB, driver)
        self._args = args
        ping_flags, _ = parse_ping(options.steady.ping, adapter)
        self._setup(
            adapter,
            kwargs,
            options,
            reset=reset_policy(options.reset, options.reset_session, classic=True),
            maxshared=0,
            ping_flags=ping_flags,
        )

    @classmethod
    def from_options(
        cls,
        options: PoolOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> PooledPg:
        """A pool with the settings of ``options``; ``args``/``kwargs`` go to ``pg.DB()``.

        ``maxshared``, ``steady.failures`` and ``steady.isfatal`` must be unset:
        classic connections are never shared, and PyGreSQL's errors are classic.py's.
        """
        if not isinstance(options, PoolOptions):
            raise TypeError(f"options: expected PoolOptions, got {type(options).__name__}")
        o, s = options, options.steady
        if o.maxshared or s.failures is not None or s.isfatal is not None:
            raise ValueError("options: PooledPg takes no maxshared, failures or isfatal")
        return cls(
            o.mincached,
            o.maxcached,
            o.maxconnections,
            o.blocking,
            s.maxusage,
            s.setsession,
            o.reset,
            *args,
            ping=s.ping,
            driver=driver,
            **o.extras(),
            **kwargs,
        )

    def _new_connection(self, kwargs: dict[str, Any]) -> SteadyPgConnection:
        return SteadyPgConnection.from_options(
            self._options.steady, *self._args, driver=self._adapter, **kwargs
        )

    def steady_connection(self) -> SteadyPgConnection:
        """A steady connection of this pool's kind, outside the pool (closed by ``close()``)."""
        options = self._options.steady.replace(closeable=True)
        return SteadyPgConnection.from_options(
            options, *self._args, driver=self._adapter, **self._kwargs
        )

    def pooled_connection(self) -> SteadyPgConnection:
        """The steady connection itself, without a proxy; give it back with :meth:`cache`."""
        con = self._checkout_entry().con
        assert isinstance(con, SteadyPgConnection)
        return con

    def connection(self, shareable: bool = False) -> PgConnection:
        """A pooled classic connection (a :class:`PooledPgConnection` proxy).

        Typed as :class:`tether.steady.PgConnection`, ``pg.DB``'s methods with
        PyGreSQL's signatures: the proxy passes them to the steady connection,
        which makes them steady. The proxy's own extras (``invalidate()``,
        ``detach()``) are on :class:`PooledPgConnection`.
        """
        proxy: PgConnection = Pool.connection(self, False)  # a PooledPgConnection
        return proxy

    if TYPE_CHECKING:  # the type only: at run time this is Pool's

        def dedicated_connection(self) -> PgConnection: ...
