"""What both PyGreSQL adapters (DB-API ``pgdb`` and classic ``pg``) share.

The two APIs sit on one C extension and one libpq connection, so a lost
connection looks the same through both: a ``ProgrammingError`` (not an
``OperationalError``) when libpq finds the socket gone, then ``LookupError``
or an ``OperationalError`` wrapping it on the next use. Classifying that,
and libpq's connect timeout, is written once here.
"""

from __future__ import annotations

from typing import Any

from ._postgres import connect_timeout, pygresql_presend_error, sqlstate_means_lost
from .base import DriverAdapter


class PyGreSQLAdapter(DriverAdapter):
    """Base of :class:`PgdbAdapter` and :class:`PgClassicAdapter`."""

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """Lost when libpq's status went bad (PyGreSQL raises ProgrammingError, then
        LookupError, for that) or the SQLSTATE says so; not for cancels or SQL errors."""
        if conn is not None and self.is_closed(conn):
            return True
        return sqlstate_means_lost(getattr(exc, "sqlstate", None))

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True for PyGreSQL's own refusal to use a closed or bad connection."""
        if conn is not None and not self.is_closed(conn):
            return False
        return pygresql_presend_error(exc)

    # -- timeouts ---------------------------------------------------------------------------

    def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Set libpq's ``connect_timeout`` (whole seconds, at least 2, per host attempt).

        ``pgdb.connect`` passes it to the conninfo; the classic adapter's
        ``connect()`` moves it into the conninfo string.
        """
        if self.creator_is_driver:
            kwargs["connect_timeout"] = connect_timeout(seconds, kwargs.get("connect_timeout"))
        return kwargs
