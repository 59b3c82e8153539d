"""The exceptions tether raises itself, shared by every layer.

Driver errors (``psycopg.OperationalError``...) always reach the caller as
they are: tether never wraps them, so frameworks that inspect them (to detect
a disconnect, say) keep working. These classes are for what only a pool can
say: it is closed, it timed out, the driver cannot be pooled.
"""

from __future__ import annotations


class TetherError(Exception):
    """Base class of every error raised by tether itself."""


class PoolError(TetherError):
    """Something is wrong with a pool (DBUtils calls this ``PooledDBError``)."""


class PoolClosed(PoolError):
    """The pool (or connection) was closed; it cannot hand out connections any more."""


class ConnectionReturned(PoolClosed):
    """The pooled connection was returned to its pool: the checkout is over.

    Raised by the returned proxy and by every handle taken from it while it
    was borrowed (its cursors, bound methods such as ``ex = db.execute``),
    so they cannot run on the session of the connection's next borrower.
    """


class PoolTimeout(PoolError, TimeoutError):
    """No connection could be had within the timeout."""


class NotSupportedError(PoolError):
    """The driver cannot be used this way (for example its threadsafety is 0)."""


class ConfigurationError(TetherError):
    """The connect arguments cannot work: retrying cannot help.

    A login the database refused (:class:`AuthenticationError`), or arguments
    the driver could not even parse (libpq's "invalid percent-encoded token"
    in a URL, an unknown option, an invalid ``sslmode``). Like a refused
    login, never an outage: no tether layer retries it or calls the database
    unreachable. The message names the user, the host and the database,
    never the password; the driver's error is its ``__cause__`` unless that
    error quotes the password (libpq echoes the bad token of a URL).
    """


class AuthenticationError(ConfigurationError):
    """The database refused the credentials or the database name: a configuration error.

    A wrong password, an unknown user or database, a user that may not log
    in or not from this host. Retrying cannot help, so no tether layer
    retries it or calls the database unreachable: it is raised at once, with
    the driver's error as its ``__cause__``. The message names the user, the
    host and the database, never the password.
    """
