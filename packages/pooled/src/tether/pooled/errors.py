"""The errors of tether.pooled: DBUtils' names, plus the two ways a checkout can fail in time.

DBUtils' ``pooled_db`` and ``pooled_pg`` each define ``PooledDBError`` /
``PooledPgError`` with ``InvalidConnectionError`` and
``TooManyConnectionsError`` below them. tether keeps those names, but as one
tree shared by both fronts (``PooledPgError`` *is* ``PooledDBError``), rooted
in :class:`tether.simple_pool.errors.PoolError` like every tether pool error,
so code written against DBUtils catches exactly what it caught before::

    PoolError (= PooledDBError = PooledPgError)
    ├── InvalidConnectionError        the proxy was already returned to the pool
    ├── NotSupportedError             the driver cannot be pooled (threadsafety 0)
    ├── PoolClosed                    the pool was closed
    ├── TooManyConnectionsError       maxconnections reached and blocking=False
    │   └── PoolExhausted             blocking, but no connection came back in time
    ├── DatabaseUnreachable           no new connection can be opened right now
    │   └── UnreachableTimeout        blocking, and the database stayed unreachable
    └── PoolTimeout (TimeoutError)
        └── CheckoutTimeout           base of PoolExhausted and UnreachableTimeout

A blocking checkout in DBUtils can wait forever; in tether it waits at most
``checkout_timeout`` seconds and then raises one of the two
:class:`CheckoutTimeout` subclasses, whose message says which case it was
and names the pool. Driver errors (``psycopg.OperationalError``...) are
never wrapped: when a connect fails they reach the caller as they are, or
chained as the ``__cause__`` of :class:`DatabaseUnreachable`.
"""

from __future__ import annotations

from tether.simple_pool.errors import NotSupportedError, PoolClosed, PoolError, PoolTimeout
from tether.steady.errors import InvalidConnectionError as SteadyInvalidConnectionError

__all__ = [
    "CheckoutTimeout",
    "DatabaseUnreachable",
    "InvalidConnection",
    "InvalidConnectionError",
    "NotSupportedError",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "PooledDBError",
    "PooledPgError",
    "TooManyConnections",
    "TooManyConnectionsError",
    "UnreachableTimeout",
]

#: DBUtils' base class names: the same class as every tether pool error's base.
PooledDBError = PoolError
PooledPgError = PoolError


class InvalidConnectionError(PoolError, SteadyInvalidConnectionError):
    """The pooled connection was closed (given back to the pool); it cannot be used any more."""


class TooManyConnectionsError(PoolError):
    """``maxconnections`` is reached (or too many threads wait already) and no wait is allowed."""


class DatabaseUnreachable(PoolError):
    """No new connection can be opened: the last attempt failed and the pool is reconnecting.

    The last connect error is the ``__cause__``. While the pool reconnects in
    the background, checkouts that would need a new connection fail fast with
    this error instead of each trying to connect again.
    """


class CheckoutTimeout(PoolTimeout):
    """A blocking checkout got no connection within ``checkout_timeout``.

    ``pool`` is the pool's name, ``timeout`` the configured seconds.
    """

    def __init__(self, message: str, *, pool: str = "", timeout: float = 0.0) -> None:
        super().__init__(message)
        self.pool = pool
        self.timeout = timeout


class PoolExhausted(CheckoutTimeout, TooManyConnectionsError):
    """Every connection stayed in use until the checkout timeout ("pool exhausted")."""


class UnreachableTimeout(CheckoutTimeout, DatabaseUnreachable):
    """The database stayed unreachable until the checkout timeout ("database unreachable")."""


# DBUtils' deprecated alias names
InvalidConnection = InvalidConnectionError
TooManyConnections = TooManyConnectionsError
