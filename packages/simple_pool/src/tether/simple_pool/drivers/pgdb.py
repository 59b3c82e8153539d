"""The adapter for PyGreSQL's DB-API 2 interface (``import pgdb``).

``pgdb.Connection`` wraps a libpq connection of PyGreSQL's C module in
``conn._cnx`` (``None`` once closed). PyGreSQL itself relies on that
attribute (``pg.DB(pgdb_connection)`` unwraps it), and it is the only way to
libpq's exact state: ``_cnx.status`` (1 = OK, 0 = bad) and
``_cnx.transaction()`` (libpq's transaction status), both without a round
trip. ``conn.closed`` combines them.

PyGreSQL reports a lost connection as a ``ProgrammingError``, the same class
as a syntax error, so the class decides nothing. Measured with PyGreSQL 6.2.3
and PostgreSQL 15:

* ``pg_ctl restart -m immediate``: ``ProgrammingError`` "server closed the
  connection unexpectedly" (no SQLSTATE); then ``_cnx.status`` is 0 and
  ``closed`` True. Next use: ``OperationalError("Internal error in '...':
  unknown encoding: ")`` (from ``LookupError``), raised before sending.
* ``-m fast`` / ``pg_terminate_backend``: ``ProgrammingError`` "FATAL:
  terminating connection due to administrator command ..." (no SQLSTATE).
* ``pg_cancel_backend``: ``OperationalError`` with ``sqlstate`` 57014;
  status stays 1, the connection is usable after a rollback.
* Syntax error: ``ProgrammingError`` 42601; unique violation:
  ``IntegrityError`` 23505; both with status 1.
* After ``close()``: ``OperationalError("Connection has been closed")``.
* Server down at connect: ``InternalError`` "Connection refused".
* pgdb sends its BEGIN lazily, with the first statement (``begin()`` is
  tether's alone). When the server ended the session before that statement
  (``-m fast`` or ``immediate`` while the connection was idle), the BEGIN
  fails: ``ProgrammingError`` as above, ``_tnx`` stays False, ``_cnx.status``
  0, ``_cnx.transaction()`` 4 (UNKNOWN). Every later statement raises
  ``OperationalError("Can't start transaction")`` from ``LookupError('unknown
  encoding: ')``, and ``rollback()`` and ``commit()`` *return* without doing
  anything (with ``_tnx`` True, ``rollback()`` raises ``OperationalError("Can't
  rollback transaction")``). :meth:`PgdbAdapter.rollback` raises there, so
  the connection is known lost and reopened; before, tether kept it and every
  transaction of that connection failed until the process ended (issue 11).

Settings a borrower can change on the connection object
(:meth:`PgdbAdapter.settings`): ``autocommit`` and ``cursor_type`` (the class
``cursor()`` makes), both plain attributes. Measured through a TCP proxy:
setting ``autocommit`` sends nothing; it only decides whether pgdb sends
``BEGIN`` before the next statement. pgdb lets it be switched inside a
transaction (its ``rollback()`` still ends that transaction).
"""

from __future__ import annotations

from typing import Any

from . import register
from ._postgres import (
    DISCARD_ALL,
    peer_closed,
    transaction_state,
    with_conninfo_timeout,
)
from ._pygresql import PyGreSQLAdapter, command_cnx_within, ping_cnx, rollback_cnx_within
from .base import log

#: ``pg.Connection.status`` of a usable connection (libpq CONNECTION_OK is 0,
#: but PyGreSQL reports 1 for good and 0 for bad).
_STATUS_OK = 1
_MISSING = object()
_URI_PREFIXES = ("postgresql://", "postgres://")


@register
class PgdbAdapter(PyGreSQLAdapter):
    """PyGreSQL DB-API: state from the wrapped libpq connection, errors from its status."""

    name = "pgdb"
    sql_sets_autocommit = False  # see DriverAdapter.sql_sets_autocommit
    modules = ("pgdb",)
    setting_attributes = ("autocommit", "cursor_type")
    type_cache_attribute = "type_cache"

    # -- connections ----------------------------------------------------------------------

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """``pgdb.connect(*args, **kwargs)``; a ``database`` URI gets the ``connect_timeout``.

        pgdb writes keyword arguments it does not know as ``kw=value`` pairs
        into a conninfo string that starts ``dbname=<database>``, where libpq
        no longer expands a ``postgresql://`` URI: measured with PyGreSQL
        6.2.3, ``pgdb.connect(database=url)`` connects as the URI says and
        ``pgdb.connect(database=url, connect_timeout=5)`` to the local socket
        with the default database. The timeout tether adds (see
        :meth:`set_timeouts`) goes into the URI's query instead.
        """
        database = kwargs.get("database")
        if (
            self.creator_is_driver
            and "connect_timeout" in kwargs
            and isinstance(database, str)
            and database.startswith(_URI_PREFIXES)
        ):
            timeout = int(float(kwargs.pop("connect_timeout")))
            kwargs["database"] = with_conninfo_timeout(database, timeout)
        return self._connect(*args, **kwargs)

    # -- state, without round trips -------------------------------------------------------

    def is_closed(self, conn: Any) -> bool:
        """Closed by the user (``_cnx`` is None) or libpq's status is not OK (no round trip).

        The same test as pgdb's own ``closed`` property, done here so that it
        also works where that property is missing or raises.
        """
        if conn is None:
            return False
        cnx: Any = getattr(conn, "_cnx", _MISSING)
        if cnx is _MISSING:
            return bool(getattr(conn, "closed", False))
        if cnx is None:
            return True
        try:
            return bool(cnx.status != _STATUS_OK)
        except Exception:  # TypeError('Connection is not valid')
            return True

    def in_transaction(self, conn: Any) -> bool | None:
        """libpq's transaction status of ``conn._cnx`` (exact, even for a BEGIN run by hand);
        pgdb's own flag put right where SQL ended its transaction.

        Falls back to pgdb's own flag (``_tnx``, "pgdb sent BEGIN") when the
        libpq connection is not reachable.
        """
        cnx = getattr(conn, "_cnx", None)
        if cnx is None:
            return None
        try:
            if cnx.status != _STATUS_OK:
                return None
            state = transaction_state(cnx.transaction())
            if state is False and getattr(conn, "_tnx", False):
                # SQL ended the transaction pgdb began (COMMIT, ROLLBACK or END
                # through execute()), and pgdb still believes it open: it would
                # send no BEGIN before the next statement, which would then
                # commit by itself, for this borrower and the next (found by an
                # outside attack: a rolled-back block's row stayed). The session
                # is idle, so pgdb is told so, as its own commit() would.
                conn._tnx = False
            return state
        except AttributeError:
            flag = getattr(conn, "_tnx", None)
            return flag if isinstance(flag, bool) else None
        except Exception:
            return None

    def autocommit(self, conn: Any) -> bool:
        """pgdb's ``autocommit`` attribute: when False, pgdb sends BEGIN before a statement."""
        return bool(getattr(conn, "autocommit", False))

    def begin(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        """In autocommit mode, ``BEGIN`` now, and tell pgdb a transaction is open.

        pgdb's ``commit()``/``rollback()`` send COMMIT/ROLLBACK only when its
        own ``_tnx`` flag says it began the transaction; without it, the
        explicit transaction would never be committed. Outside autocommit
        pgdb begins one itself with the next statement.
        """
        if self.autocommit(conn):
            self.execute(conn, "BEGIN")
            conn._tnx = True

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn._cnx.fileno())
        except Exception:
            return None

    def peer_closed(self, conn: Any) -> bool:
        """The server's farewell or EOF waiting on the idle socket (peeked, not read)."""
        if conn is None or self.is_closed(conn):
            return False
        try:
            cnx = conn._cnx
            return peer_closed(int(cnx.fileno()), bool(getattr(cnx, "ssl_in_use", False)))
        except Exception:
            return False

    # -- transactions -----------------------------------------------------------------------

    def rollback(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        """``conn.rollback()``, plus a ROLLBACK for a transaction pgdb does not know about;
        an error, never silence, on a lost connection.

        pgdb only rolls back a transaction it began itself; after a ``BEGIN``
        the user ran by hand in autocommit mode, ``rollback()`` does nothing
        and the transaction would stay open in the pool.

        On a connection libpq marked bad, pgdb's ``rollback()`` returns
        without a word when its own ``_tnx`` flag is False: the server
        closed the session before pgdb's implicit BEGIN went through (the
        BEGIN is what failed). A caller that takes a returning rollback for a
        usable connection would keep the dead one for ever, so this raises
        the driver's ``OperationalError`` there, as pgdb does itself when
        ``_tnx`` is True ("Can't rollback transaction"). Either way the
        server has ended the transaction.
        """
        result = conn.rollback(*args, **kwargs)
        cnx = getattr(conn, "_cnx", None)
        if cnx is not None and self.is_closed(conn):
            error = self.error_class("OperationalError") or ConnectionError
            raise error("Can't rollback transaction: the connection to the server was lost")
        if not args and not kwargs and self.in_transaction(conn):
            conn._cnx.query("ROLLBACK")
        return result

    def close(self, conn: Any) -> None:
        """Close without pgdb's rollback first (never raising).

        pgdb's ``close()`` rolls back first while its ``_tnx`` flag is set, and
        waits for that answer without a limit: closing a connection whose
        ping or rollback ran out of time (a blackholed server) hung there, on
        a session that may be half-read. The server rolls back a session that
        ends anyway, so the flag is cleared and only the session is closed.
        """
        if getattr(conn, "_tnx", False):
            try:
                conn._tnx = False
            except Exception:
                pass
        super().close(conn)

    def rollback_within(self, conn: Any, timeout: float) -> bool | None:
        """``ROLLBACK`` on the libpq connection, awaited for at most ``timeout`` seconds.

        pgdb's ``rollback()`` waits without a limit. Afterwards pgdb's own
        flag (``_tnx``, "pgdb sent BEGIN") is cleared as its ``rollback()``
        does: left True, pgdb would send no BEGIN before the next statement,
        which would then commit by itself.
        """
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is False:
            return True
        cnx = getattr(conn, "_cnx", None)
        if cnx is None:
            return None
        if not rollback_cnx_within(cnx, timeout):
            return False
        conn._tnx = False
        return True

    # -- round trips ------------------------------------------------------------------------

    def ping(self, conn: Any, timeout: float | None = None) -> bool:
        """One round trip on the libpq connection, bypassing pgdb's implicit BEGIN.

        ``timeout`` bounds the wait for the answer (see ``ping_cnx``).

        Through a cursor, pgdb would open a transaction outside autocommit
        mode. In a failed transaction, where ``SELECT 1`` fails, the empty
        statement is sent instead: PyGreSQL raises ``ValueError('Empty
        query')`` for the server's EmptyQueryResponse, which proves the
        server answered.
        """
        if conn is None or self.is_closed(conn):
            return False
        cnx = getattr(conn, "_cnx", None)
        if cnx is None:
            return super().ping(conn)
        try:
            ping_cnx(cnx, timeout)
        except Exception:
            return False
        # After the round trip libpq knows if the server turned read-only (see
        # PsycopgAdapter.ping): such a session is of no use to the pool that opened it.
        return not self.is_closed(conn) and not self.turned_read_only(conn)

    def reset_session(self, conn: Any) -> None:
        """Roll back, then ``DISCARD ALL`` on the libpq connection (outside any transaction)."""
        self.rollback(conn)
        conn._cnx.query(DISCARD_ALL)

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """``DISCARD ALL`` on the idle libpq connection, awaited for at most ``timeout`` s."""
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is not False:
            return None
        return command_cnx_within(conn._cnx, DISCARD_ALL, timeout)


def _transaction_status(cnx: Any) -> int | None:
    try:
        return int(cnx.transaction())
    except Exception as exc:
        log.debug("pgdb: no transaction status: %r", exc)
        return None
