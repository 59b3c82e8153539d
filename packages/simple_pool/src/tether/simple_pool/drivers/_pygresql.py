"""What both PyGreSQL adapters (DB-API ``pgdb`` and classic ``pg``) share.

The two APIs sit on one C extension and one libpq connection, so a lost
connection looks the same through both: a ``ProgrammingError`` (not an
``OperationalError``) when libpq finds the socket gone, then ``LookupError``
or an ``OperationalError`` wrapping it on the next use. Classifying that,
and libpq's connect timeout, is written once here.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from ._postgres import (
    READ_ONLY_SQLSTATE,
    TRANS_IDLE,
    TRANS_INERROR,
    Parameter,
    ask_server_read_only,
    connect_timeout,
    libpq_auth_failure,
    libpq_configuration_error,
    must_retire,
    note_opened,
    pygresql_presend_error,
    sqlstate_means_lost,
    turned_read_only,
)
from .base import DriverAdapter, wait_readable

_MISSING = object()


class PyGreSQLAdapter(DriverAdapter):
    """Base of :class:`PgdbAdapter` and :class:`PgClassicAdapter`."""

    def libpq(self, conn: Any) -> Any:
        """PyGreSQL's libpq connection object behind ``conn`` (None once closed)."""
        return getattr(conn, "_cnx", None)

    def _parameter(self, conn: Any) -> Parameter:
        """What libpq holds for a server-reported parameter of ``conn`` (``cnx.parameter``)."""

        def parameter(name: str) -> object:
            try:
                return self.libpq(conn).parameter(name)
            except Exception:
                return None

        return parameter

    def opened(self, conn: Any) -> None:
        """Remember whether the server accepted writes when ``conn`` was opened."""
        note_opened(conn, self._parameter(conn))

    def turned_read_only(self, conn: Any) -> bool:
        """True when ``conn`` was opened read-write and its server now reports read-only."""
        return turned_read_only(conn, self._parameter(conn))

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """Lost when libpq's status went bad (PyGreSQL raises ProgrammingError, then
        LookupError, for that) or the SQLSTATE says so; not for cancels or SQL errors.

        Also a 25006 (read-only transaction) on a session whose server stopped
        accepting writes since it was opened (the old primary after a
        switchover): that session must be retired, and the statement did not run.
        """
        if conn is not None and self.is_closed(conn):
            return True
        if sqlstate_means_lost(getattr(exc, "sqlstate", None)):
            return True
        return conn is not None and must_retire(
            conn, exc, self._parameter(conn), lambda: self._server_read_only(conn)
        )

    def _server_read_only(self, conn: Any) -> bool | None:
        """Ask the server whether it (not the session) is read-only; None in a transaction.

        Asked on libpq's connection directly (PyGreSQL's DB-API layer would open
        a transaction first), and only when the session is idle.
        """
        cnx = self.libpq(conn)
        try:
            if cnx is None or cnx.transaction() != TRANS_IDLE:
                return None
        except Exception:
            return None
        return ask_server_read_only(lambda sql: cnx.query(sql).getresult()[0][0])

    def is_auth_failure(self, exc: BaseException) -> bool:
        """libpq's FATAL message for a refused login (measured with PyGreSQL 6.2.3: a wrong
        password or an unknown database raises ``InternalError`` without a SQLSTATE)."""
        return libpq_auth_failure(exc)

    def is_configuration_error(self, exc: BaseException) -> bool:
        """libpq's parse errors of the conninfo or URL (PyGreSQL 6.2.3: ``InternalError``)."""
        return libpq_configuration_error(exc)

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True for PyGreSQL's own refusal to use a closed or bad connection, and for a
        statement the server refused as a write in a read-only transaction (25006:
        refused before it ran)."""
        if getattr(exc, "sqlstate", None) == READ_ONLY_SQLSTATE:
            return True
        if conn is not None and not self.is_closed(conn):
            return False
        return pygresql_presend_error(exc)

    # -- configuration a borrower can add -------------------------------------------------

    #: The attribute of the connection object that holds its type cache and its
    #: typecasts: ``pgdb.Connection.type_cache``, ``pg.DB.dbtypes`` (a raw
    #: ``pg.Connection`` has none).
    type_cache_attribute: ClassVar[str] = ""

    def _typecasts(self, raw: Any) -> dict[str, Any] | None:
        """The typecasts dict of ``raw``'s type cache, or None."""
        cache = getattr(raw, self.type_cache_attribute, None) if self.type_cache_attribute else None
        casts = getattr(cache, "_typecasts", None)
        return casts if isinstance(casts, dict) else None

    def configuration(self, raw: Any) -> Any:
        """A copy of the typecasts of the connection's type cache, and ``pg.DB``'s regtypes mode.

        ``db.type_cache.set_typecast("date", f)`` (pgdb) or
        ``db.dbtypes.set_typecast(...)`` (classic ``pg``) stores ``f`` in the type
        cache's ``_typecasts`` dict, which converts every value of that type the
        connection fetches: found by a fourth outside attack, one borrower's
        cast converted the next borrower's rows. None when there is no type cache.
        """
        casts = self._typecasts(raw)
        if casts is None:
            return None
        cache = getattr(raw, self.type_cache_attribute)
        return dict(casts), getattr(cache, "_regtypes", None)

    def restore_configuration(self, raw: Any, saved: Any) -> bool:
        """The saved typecasts back, if any differs (a dict comparison, no round trip).

        PyGreSQL fills ``_typecasts`` lazily (a type's cast is made the first
        time a value of that type is fetched), so a key added since the
        snapshot is either such a fill or a borrower's ``set_typecast()``; the
        two cannot be told apart, and both are dropped: a fill is made again
        when it is next needed (for a composite type, with one catalog query).
        A cast PyGreSQL bound to a libpq connection (a ``partial`` with
        ``cnx=``/``connection=``) is kept only on that connection: a snapshot is
        also put on the new session of a transparent reopen.
        """
        casts = self._typecasts(raw)
        if casts is None:
            return False
        copy, regtypes = saved
        owner = getattr(casts, "cnx", None) or getattr(casts, "connection", None)
        wanted = {k: v for k, v in copy.items() if _bound_to(v, owner)}
        changed = False
        if len(casts) != len(wanted) or any(
            casts.get(k, _MISSING) is not v for k, v in wanted.items()
        ):
            casts.clear()
            casts.update(wanted)
            changed = True
        cache = getattr(raw, self.type_cache_attribute)
        if regtypes is not None and getattr(cache, "_regtypes", regtypes) != regtypes:
            raw.use_regtypes(regtypes)  # pg.DB: also empties its caches made in the other mode
            changed = True
        return changed

    # -- timeouts ---------------------------------------------------------------------------

    def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Set libpq's ``connect_timeout`` (whole seconds, at least 2, per host attempt).

        ``pgdb.connect`` passes it to the conninfo; the classic adapter's
        ``connect()`` moves it into the conninfo string.
        """
        if self.creator_is_driver:
            kwargs["connect_timeout"] = connect_timeout(seconds, kwargs.get("connect_timeout"))
        return kwargs


def _bound_to(cast: Any, owner: Any) -> bool:
    """False for a typecast PyGreSQL bound to a libpq connection other than ``owner``."""
    if not isinstance(cast, functools.partial):
        return True
    bound = cast.keywords.get("cnx", cast.keywords.get("connection", owner))
    return bound is owner


def ping_cnx(cnx: Any, timeout: float | None) -> None:
    """One round trip on PyGreSQL's libpq connection ``cnx``; raises when it fails.

    ``SELECT 1``, or in a failed transaction (where that fails) the empty
    statement: PyGreSQL answers the server's EmptyQueryResponse with
    ``ValueError('Empty query')``, which proves the round trip. With
    ``timeout`` the statement is sent with ``send_query()`` and the answer is
    awaited with ``poll()`` for at most that long (``TimeoutError`` if it does
    not come; the caller closes the connection) before PyGreSQL reads it.
    """
    sql = "" if int(cnx.transaction()) == TRANS_INERROR else "SELECT 1"
    try:
        if timeout is None:
            cnx.query(sql)
            return
        query = cnx.send_query(sql)
        if not wait_readable(int(cnx.fileno()), timeout):
            raise TimeoutError(f"no answer to the ping within {timeout:g} s")
        while query.getresult() is not None:  # up to the end of the answer
            pass
    except ValueError:
        if sql:
            raise  # "Empty query" only proves the round trip for the empty statement


def rollback_cnx_within(cnx: Any, timeout: float) -> bool:
    """``ROLLBACK`` on PyGreSQL's libpq connection ``cnx``, answered within ``timeout`` s.

    See :func:`command_cnx_within`: PyGreSQL's own ``rollback()``/``query()``
    wait for the server without a limit.
    """
    return command_cnx_within(cnx, "ROLLBACK", timeout)


def command_cnx_within(cnx: Any, sql: str, timeout: float) -> bool:
    """``sql`` on PyGreSQL's libpq connection ``cnx``, answered within ``timeout`` seconds.

    Sent with ``send_query()`` and awaited with ``poll()``, as :func:`ping_cnx`
    does: PyGreSQL's own ``query()`` waits for the server without a limit.
    True when libpq is idle afterwards; False when the answer did not come in
    time or the statement failed (the caller closes the connection).
    """
    try:
        query = cnx.send_query(sql)
        if not wait_readable(int(cnx.fileno()), timeout):
            return False
        while query.getresult() is not None:  # up to the end of the answer
            pass
        return int(cnx.transaction()) == TRANS_IDLE
    except Exception:
        return False
