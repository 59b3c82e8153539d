"""tether-steady: database connections that reopen themselves, except inside a transaction.

``connect(creator, ...)`` gives a :class:`SteadyDBConnection` for any DB-API 2
driver; :class:`SteadyPgConnection` does the same for PyGreSQL's classic API.
Both follow one rule (:mod:`tether.steady.core`): a lost connection is
replaced and the statement re-run only when nothing can be lost or applied
twice by doing so; inside a transaction the driver's error reaches you and
the connection is replaced after you roll back.
"""

from importlib.metadata import PackageNotFoundError, version

from .classic import PgConnection, SteadyPgConnection
from .core import SetSessionError, SteadyBase
from .dbapi import CONNECTION_SHORTCUTS, SteadyCursor, SteadyDBConnection, SteadyDBCursor, connect
from .errors import (
    InvalidConnection,
    InvalidConnectionError,
    InvalidCursor,
    InvalidCursorError,
    PingStatementError,
    SteadyDBError,
    SteadyPgError,
)
from .forwarding import forwarding_class, set_class
from .native import NativeCursor
from .options import Options, SteadyOptions
from .state import SessionState

try:
    __version__ = version("tether-steady")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "CONNECTION_SHORTCUTS",
    "InvalidConnection",
    "InvalidConnectionError",
    "InvalidCursor",
    "InvalidCursorError",
    "NativeCursor",
    "Options",
    "PgConnection",
    "PingStatementError",
    "SessionState",
    "SetSessionError",
    "SteadyBase",
    "SteadyCursor",
    "SteadyDBConnection",
    "SteadyDBCursor",
    "SteadyDBError",
    "SteadyOptions",
    "SteadyPgConnection",
    "SteadyPgError",
    "__version__",
    "connect",
    "forwarding_class",
    "set_class",
]
