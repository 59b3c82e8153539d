"""Errors of the steady layer, with DBUtils' names (and its deprecated aliases).

A lost connection is reported with the driver's own exception, never
wrapped, so that frameworks detecting disconnects still see it. These
classes say what only tether knows: the steady connection or cursor can no
longer be used.
"""

from __future__ import annotations

from tether.simple_pool.errors import ConfigurationError, TetherError


class SteadyDBError(TetherError):
    """General error of a steady DB-API connection."""


class InvalidCursorError(SteadyDBError):
    """The cursor cannot be used: it was closed, or its connection was reopened since."""


class SteadyPgError(SteadyDBError):
    """General error of a steady classic PyGreSQL connection."""


class InvalidConnectionError(SteadyPgError):
    """The steady classic connection was closed."""


class PingStatementError(ConfigurationError):
    """The ``ping`` statement failed on a session that answered: it can never succeed.

    The server rejected the statement itself (the driver's ``ProgrammingError``:
    a typo, a table that does not exist), not a lost session. Taken for a dead
    connection, it had a pool open connection after connection until the
    checkout timed out as "unreachable". The driver's error is its ``__cause__``.
    """


# DBUtils' deprecated alias names
InvalidCursor = InvalidCursorError
InvalidConnection = InvalidConnectionError
