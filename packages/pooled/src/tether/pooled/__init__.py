"""tether-pooled: a shared pool of steady database connections; DBUtils' PooledDB, made strict.

``PooledDB(creator, ...)`` and ``PooledPg(...)`` take DBUtils 3.2's arguments
and behave as DBUtils documents, on one pool implementation
(:mod:`tether.pooled.pool`) of tether's steady connections. Beyond DBUtils,
as keyword-only arguments: a finite checkout timeout that covers waiting,
connecting and the health check; fail-fast and background reconnect while
the database is unreachable; a maintenance thread that keeps ``mincached``
idle connections, retires old and idle ones and validates them; reset
modes; leak detection; ``stats()`` and event hooks; fork safety; a pool's
lifecycle (``with`` closes it, ``close(timeout)`` waits for borrowed
connections, ``resize()`` changes its limits while it runs); ``invalidate()``
and ``detach()`` on connections; and ``manage(module)``, SQLAlchemy 1.x's
``pool.manage``: a DB-API module whose ``connect()`` pools.

Read the modules in this order to learn how it works: :mod:`.pool` (the
pool and its hot path), :mod:`.proxies`, :mod:`.reset`,
:mod:`.maintenance`, :mod:`.leaks`, :mod:`.events`, :mod:`.stats`, :mod:`.fork`,
:mod:`.errors`, then the fronts :mod:`.db` and :mod:`.pg`, and :mod:`.managed`;
the exporters to Prometheus and OpenTelemetry are in :mod:`.metrics`.
"""

from ._version import __version__
from .db import PooledDB
from .errors import (
    CheckoutTimeout,
    DatabaseUnreachable,
    InvalidConnection,
    InvalidConnectionError,
    NotSupportedError,
    PoolClosed,
    PooledDBError,
    PooledPgError,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    TooManyConnections,
    TooManyConnectionsError,
    UnreachableTimeout,
)
from .events import EventKind, PoolEvent
from .managed import ManagedModule, clear_managers, manage
from .options import PoolOptions
from .pg import PooledPg
from .pool import Pool
from .proxies import (
    PooledConnection,
    PooledDedicatedDBConnection,
    PooledPgConnection,
    PooledSharedDBConnection,
)
from .reset import RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY
from .stats import PoolStats

__all__ = [
    "RESET_ALWAYS_ROLLBACK",
    "RESET_COMPLETELY",
    "CheckoutTimeout",
    "DatabaseUnreachable",
    "EventKind",
    "InvalidConnection",
    "InvalidConnectionError",
    "ManagedModule",
    "NotSupportedError",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolEvent",
    "PoolExhausted",
    "PoolOptions",
    "PoolStats",
    "PoolTimeout",
    "PooledConnection",
    "PooledDB",
    "PooledDBError",
    "PooledDedicatedDBConnection",
    "PooledPg",
    "PooledPgConnection",
    "PooledPgError",
    "PooledSharedDBConnection",
    "TooManyConnections",
    "TooManyConnectionsError",
    "UnreachableTimeout",
    "__version__",
    "clear_managers",
    "manage",
]
