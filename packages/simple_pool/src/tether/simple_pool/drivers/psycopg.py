"""The adapter for psycopg 3 (``import psycopg``).

psycopg knows a lot about its connection without asking the server:
``closed`` and ``broken`` say whether it is usable, ``info.transaction_status``
is libpq's exact transaction state. Its exceptions carry the server's
SQLSTATE. But its ``OperationalError`` covers both a dead connection and a
cancelled query (``QueryCanceled`` is a subclass), so the class alone decides
nothing; the state and the SQLSTATE do.

Measured with psycopg 3.3.9 and PostgreSQL 15:

* ``pg_ctl restart -m immediate``: next use raises ``OperationalError``
  (no SQLSTATE) "consuming input failed: server closed the connection
  unexpectedly"; afterwards ``closed`` and ``broken`` are True.
* ``-m fast`` and ``pg_terminate_backend``: ``AdminShutdown`` (57P01); then
  ``closed``/``broken`` True.
* Any later call on such a connection: ``OperationalError("the connection is
  closed")`` (queries, ``cursor()``) or ``"the connection is lost"``
  (``rollback()``, setting ``autocommit``), raised before sending.
* ``pg_cancel_backend``: ``QueryCanceled`` (57014), connection usable,
  status INERROR until rolled back.
* Server down at connect: ``OperationalError`` "Connection refused".
* A server that accepts TCP but never answers: ``ConnectionTimeout`` after
  ``connect_timeout`` (psycopg enforces it itself, minimum 2 s).
* Behind PgBouncer 1.18 in transaction mode, psycopg's automatic prepared
  statements meet other server sessions: ``InvalidSqlStatementName`` (26000),
  ``DuplicatePreparedStatement`` (42P05) and ``ProtocolViolation`` (08P01,
  "bind message supplies 1 parameters, but prepared statement "_pg3_2"
  requires 0"), connection still usable. Class 08 would say "lost": these
  are not, and carry :data:`PGBOUNCER_HINT` (see :mod:`.pgbouncer`).

Settings a borrower can change on the connection object (:meth:`PsycopgAdapter.settings`):
``autocommit``, ``read_only``, ``isolation_level``, ``deferrable``,
``row_factory``, ``cursor_factory``, ``server_cursor_factory``,
``prepare_threshold``, ``prepared_max``. Measured by counting the bytes
psycopg sent through a TCP proxy: setting any of them sends nothing (0
bytes); ``read_only``, ``isolation_level`` and ``deferrable`` only shape the
``BEGIN`` psycopg sends before the next statement (after ``read_only =
True``, ``SHOW transaction_read_only`` in that transaction said ``on``).
Setting ``autocommit``, ``read_only``, ``isolation_level`` or ``deferrable``
inside a transaction raises ``ProgrammingError("can't change 'autocommit'
now: connection in transaction status INTRANS")``; on a broken connection
``OperationalError("the connection is lost")``. Not covered: ``adapters``
(a mutable map of dumpers/loaders; a copy per checkout would cost more than
the checkout) and ``add_notice_handler``/``add_notify_handler`` lists.
"""

from __future__ import annotations

import contextlib
import logging
import time
from operator import attrgetter
from typing import Any

from . import register
from ._postgres import (
    DISCARD_ALL,
    READ_ONLY_SQLSTATE,
    TRANS_IDLE,
    TRANSACTION_STATES,
    Parameter,
    ask_server_read_only,
    connect_timeout,
    libpq_auth_failure,
    libpq_configuration_error,
    must_retire,
    note_opened,
    peer_closed,
    sqlstate_means_lost,
    turned_read_only,
)
from .base import DriverAdapter, socket_readable, wait_readable

log = logging.getLogger("tether.drivers")

#: psycopg's own messages for a call refused because the connection is already
#: closed or broken: raised before anything is sent.
_PRESEND_MESSAGES = frozenset({"the connection is closed", "the connection is lost"})


@register
class PsycopgAdapter(DriverAdapter):
    """psycopg 3: state from ``closed``/``broken``/``info``, errors from the SQLSTATE."""

    name = "psycopg"
    sql_sets_autocommit = False  # see DriverAdapter.sql_sets_autocommit
    session_setters = frozenset(
        {"set_autocommit", "set_isolation_level", "set_read_only", "set_deferrable"}
    )
    modules = ("psycopg",)
    #: Client-side switches: setting one sends nothing (measured, see the module docstring).
    setting_attributes = (
        "autocommit", "read_only", "isolation_level", "deferrable", "row_factory",
        "cursor_factory", "server_cursor_factory", "prepare_threshold", "prepared_max",
    )  # fmt: skip
    cursor_result_attributes = DriverAdapter.cursor_result_attributes | {
        "statusmessage", "pgresult", "query", "params", "closed",
    }  # fmt: skip
    #: The empty statement: the server answers it even inside a failed
    #: transaction (where ``SELECT 1`` fails), so a ping works in every state.
    ping_sql = ""

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Open a connection; a ``connect_timeout`` in the conninfo string wins when smaller.

        psycopg lets keyword arguments override the conninfo string, so the
        timeout :meth:`set_timeouts` adds would replace a stricter one the
        user wrote into the DSN: keep the smaller of the two.
        """
        if self.creator_is_driver and "connect_timeout" in kwargs and args:
            in_dsn = _positive_int(_dsn_connect_timeout(args[0]))
            given = _positive_int(kwargs["connect_timeout"])
            if in_dsn is not None and (given is None or in_dsn < given):
                kwargs["connect_timeout"] = in_dsn
        return self._connect(*args, **kwargs)

    def opened(self, conn: Any) -> None:
        """Remember whether the server accepted writes when ``conn`` was opened."""
        note_opened(conn, _parameter(conn))

    # -- state, without round trips -------------------------------------------------------

    def is_closed(self, conn: Any) -> bool:
        """``closed`` (closed by the user, or after a failure; ``broken`` implies it).

        Read as libpq's own status (0: CONNECTION_OK), which is what psycopg's
        ``closed`` compares (``broken`` is ``closed and not closed by close()``,
        psycopg 3.3): one C-level read instead of two Python properties
        (measured with callgrind: ~1,900 instructions down to ~300).
        """
        try:
            return bool(conn.pgconn.status)
        except Exception:
            return bool(getattr(conn, "closed", True) or getattr(conn, "broken", True))

    def in_transaction(self, conn: Any) -> bool | None:
        """libpq's transaction status: IDLE False; INTRANS, INERROR, ACTIVE True; else None.

        Read from ``conn.pgconn``: ``conn.info`` builds a new object on every
        access (1.4 us measured, against 0.03 us), and pools ask this at every
        checkin. A closed or broken connection's status is UNKNOWN (libpq answers
        UNKNOWN unless CONNECTION_OK), hence None; IDLE implies not broken.
        """
        if getattr(conn, "_pipeline", None) is not None:
            # Inside ``with db.pipeline():`` the statements queued are one unit
            # (psycopg's implicit transaction until the sync): a loss there is
            # a loss inside a transaction, never a reopen under the pipeline,
            # whose statements would run on the new session one by one,
            # committed, while the block raised (found by an outside attack).
            return True
        try:
            status = conn.pgconn.transaction_status
        except Exception:
            return None
        if status == TRANS_IDLE:
            # A two-phase transaction (tpc_begin()) is psycopg's until
            # tpc_commit()/tpc_rollback(), prepared (the session idle) or not:
            # its state, _tpc, would refuse the next borrower's commit() or
            # let its tpc_commit() commit this one's work (found by an outside attack).
            return getattr(conn, "_tpc", None) is not None
        return TRANSACTION_STATES.get(status)  # (transaction_state(), inlined: an int)

    #: libpq's transaction status, non-zero unless IDLE (SQL cannot end psycopg's
    #: client-side autocommit): one C-level read (see DriverAdapter.left_busy).
    left_busy = staticmethod(attrgetter("pgconn.transaction_status"))  # type: ignore[assignment]

    #: psycopg's ``autocommit`` attribute (client-side, a bool): read without a
    #: Python frame of the adapter's own (steady reads it before most statements).
    autocommit = staticmethod(attrgetter("autocommit"))  # type: ignore[assignment]

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn.pgconn.socket)
        except Exception:
            return None

    def peer_closed(self, conn: Any) -> bool:
        """The server's farewell (FATAL error / shutdown warning) or EOF on the idle socket.

        The socket is peeked, not read: psycopg's own ``consume_input`` was
        measured to swallow the farewell without noticing the EOF behind it.
        On steady's path before a statement that follows a pause, so the
        common answer (nothing waiting) costs one poll: the TLS flag and the
        parsing only when something is.
        """
        try:
            pgconn = conn.pgconn
            if pgconn.status:  # closed or broken: is_closed() says so, this does not
                return False
            fd = pgconn.socket
            if not socket_readable(fd):
                return False
            ssl = bool(pgconn.ssl_in_use)
        except Exception:
            return False
        return peer_closed(int(fd), ssl)

    def is_gone(self, conn: Any) -> bool:
        """:meth:`is_closed` or :meth:`peer_closed`, with one read of ``conn.pgconn``.

        Before a statement that follows a pause (tether.steady): one frame and
        one attribute read less than the two calls.
        """
        try:
            pgconn = conn.pgconn
            if pgconn.status:
                return True
            fd = pgconn.socket
            if not socket_readable(fd):
                return False
            ssl = bool(pgconn.ssl_in_use)
        except Exception:
            return self.is_closed(conn) or self.peer_closed(conn)
        return peer_closed(int(fd), ssl)

    # -- round trips ------------------------------------------------------------------------

    def ping(self, conn: Any, timeout: float | None = None) -> bool:
        """One round trip that leaves the transaction state as it was; False on a session
        whose server stopped accepting writes since it was opened.

        The server reports ``default_transaction_read_only`` / ``in_hot_standby``
        with its answer to the first statement after they changed (a switchover
        reloads the old primary read-only; its idle sessions hear of it then), so
        after the round trip libpq knows. Such a session can never write again and
        is not usable for the read-write pool that opened it; a session opened
        read-only (a read pool on a standby) stays usable.

        With ``timeout`` the empty statement is sent on libpq directly and its
        answer awaited with ``poll()`` for at most that long (libpq has no
        timeout of its own for a statement, and a server behind a blackhole
        never answers); False when it did not come, and the connection must
        then be closed (the answer may still arrive). libpq's own empty
        statement opens no transaction in any state, so no autocommit switch.

        Outside autocommit, psycopg would open a transaction before the ping
        statement and leave the connection INTRANS (the user could then not
        switch ``autocommit``): an idle connection is pinged in autocommit
        mode for the moment instead. The empty statement also works inside
        a failed transaction.
        """
        if conn is None or self.is_closed(conn):
            return False
        if timeout is not None:
            return _ping_within(conn, timeout) and not turned_read_only(conn, _parameter(conn))
        try:
            switch = not conn.autocommit and self.in_transaction(conn) is False
            if switch:
                conn.autocommit = True
            try:
                conn.execute(self.ping_sql, prepare=False)
            finally:
                if switch and not self.is_closed(conn):
                    conn.autocommit = False
        except Exception:
            return False
        return not turned_read_only(conn, _parameter(conn))

    def rollback_within(self, conn: Any, timeout: float) -> bool | None:
        """``ROLLBACK`` sent on libpq directly, its answer awaited for at most ``timeout`` s.

        psycopg's ``rollback()`` waits for the server without a limit (a
        blackholed server never answers). Afterwards psycopg's cache of
        prepared statements is cleared as its own ``rollback()`` does, which
        also queues the ``DEALLOCATE ALL`` psycopg sends before its next
        statement. Inside ``conn.transaction()`` blocks or a pipeline psycopg
        keeps state of its own: None there, and the caller uses ``rollback()``.
        """
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is False:
            return True
        if getattr(conn, "_tpc", None) is not None:
            # A two-phase transaction: psycopg's own tpc_rollback() (ROLLBACK, or
            # ROLLBACK PREPARED), the one way to end its _tpc state. Not bounded.
            conn.tpc_rollback()
            return self.in_transaction(conn) is False
        if getattr(conn, "_num_transactions", 0):
            return None
        if getattr(conn, "_pipeline", None) is not None:
            # A pipeline left open (entered by hand): psycopg's rollback() would
            # sync it first, and in autocommit mode the sync commits what it
            # queued (found by an outside attack: a `with` block that raised
            # committed its pipeline's statements). Unsynced, they die with the
            # session: False, so the caller drops the connection.
            return False
        if not _command_within(conn, b"ROLLBACK", timeout):
            return False
        manager = getattr(conn, "_prepared", None)
        clear = getattr(manager, "clear", None)
        if callable(clear):
            clear()
        # (in_transaction() is False, as no pipeline or two-phase transaction is open here)
        status: int = conn.pgconn.transaction_status
        return status == TRANS_IDLE

    def configuration(self, raw: Any) -> Any:
        """A copy of the connection's ``adapters`` and its notice and notify handlers.

        psycopg keeps the type adapters a borrower registers
        (``db.adapters.register_dumper()``, ``TypeInfo.register(db)``...) on
        the connection, and ``add_notice_handler()``/``add_notify_handler()``
        callbacks in two lists: found by an outside attack, a dumper one
        borrower registered rewrote what the next one stored, and its notice
        handler received the next one's notices. ``AdaptersMap(template)`` is
        psycopg's copy-on-write copy (a few dict and list copies, no
        adapter copied): the connection's own map shares every table with
        the copy until a register replaces one, which is how a change is
        seen at checkin without comparing tables.
        """
        from psycopg.adapt import AdaptersMap

        return (
            AdaptersMap(raw.adapters),
            tuple(raw._notice_handlers),
            tuple(raw._notify_handlers),
        )

    def restore_configuration(self, raw: Any, saved: Any) -> bool:
        """A fresh copy of the saved ``adapters`` (always); the handlers back.

        Always a new map, not only when a table was replaced: a borrower that
        kept ``db.adapters`` past its checkout could otherwise register on the
        next borrower's map (fifth outside attack). Only when the checkout
        reached the driver past tether, a few dict and list copies.
        """
        from psycopg import InterfaceError
        from psycopg.adapt import AdaptersMap

        if getattr(raw, "_pipeline", None) is not None:
            # Entered by hand (``p = db.pipeline(); p.__enter__()``) and kept: the
            # connection would stay in pipeline mode for every later borrower, their
            # errors deferred and autocommit statements uncommitted (found by an
            # outside attack). It cannot be left here: the connection is dropped.
            raise InterfaceError("a pipeline is still open on the connection")
        adapters, notice, notify = saved
        changed = not _same_adapters(raw.adapters, adapters)
        raw._adapters = AdaptersMap(adapters)
        for handlers, kept in ((raw._notice_handlers, notice), (raw._notify_handlers, notify)):
            if tuple(handlers) != kept:
                handlers[:] = kept
                changed = True
        return changed

    def close(self, conn: Any) -> None:
        """Close, never raising; a prepared two-phase transaction is rolled back first.

        A prepared transaction outlives its session on the server, holding its
        locks, and anyone who knows its id can commit it: found by a fifth
        outside attack, one left by a borrower survived a persistent thread's
        end, ``PersistentDB.close()`` and ``invalidate()``. tether rolls back
        what a borrower leaves open, so this one too: ``ROLLBACK PREPARED`` is
        sent and the session closed at once, without waiting for the answer
        (the server reads the statement before the terminate message that
        follows it). On a session already lost nothing can be sent: such a
        transaction stays for ``tpc_recover()``.
        """
        tpc = getattr(conn, "_tpc", None)
        if tpc is not None and tpc[1] and not self.is_closed(conn):
            gid = str(tpc[0]).replace("'", "''")
            try:
                conn.pgconn.send_query(f"ROLLBACK PREPARED '{gid}'".encode())
            except Exception as exc:
                log.debug("psycopg: could not roll back a prepared transaction: %r", exc)
        super().close(conn)

    #: psycopg's own code sets ``pgresult`` and reads ``closed`` several times a
    #: statement, and sets ``arraysize`` in every new cursor: guarded, each is a Python
    #: property call, measured at ~2,700 instructions a request for ``arraysize`` alone.
    #: They are the cursor's own (a kept cursor's result, its fetch size): nothing is sent.
    native_cursor_unguarded = frozenset({"pgresult", "closed", "arraysize"})
    #: ``cur.copy()`` and ``cur.stream()`` send their statement when used (see
    #: DriverAdapter.cursor_session_methods): after a lost session they never got a
    #: new one (found by an outside attack: a COPY-only worker failed until an execute()).
    cursor_session_methods = frozenset({"copy", "stream"})
    connection_session_methods = frozenset({"pipeline", "transaction"})

    def native_cursor_class(self, conn: Any) -> type | None:
        """The connection's ``cursor_factory`` (psycopg's ``Cursor``, ``ClientCursor``...).

        psycopg's ``Connection.cursor()`` makes ``cursor_factory(conn,
        row_factory=...)``, the connection's ``row_factory`` when none is
        given, which is what ``cls(conn)`` does; making it sends nothing. Not
        a server-side cursor class (its ``close()`` sends a statement).
        """
        from psycopg import Cursor, ServerCursor

        factory = getattr(conn, "cursor_factory", None)
        if (
            isinstance(factory, type)
            and issubclass(factory, Cursor)
            and not issubclass(factory, ServerCursor)
        ):
            return factory
        return None

    def rebind_cursor(self, cursor: Any, conn: Any) -> None:
        """``cursor`` made again on ``conn``: its row factory, ``arraysize`` and format kept.

        psycopg's cursor ``__init__`` binds it to a connection (its
        ``pgconn``, a copy of its adapters) and resets its results; run again,
        it moves the cursor. Adapters registered on the cursor itself are not
        kept, as they would not be on a new cursor.
        """
        row_factory, arraysize, format_ = cursor.row_factory, cursor.arraysize, cursor.format
        type(cursor).__init__(cursor, conn, row_factory=row_factory)
        cursor.arraysize, cursor.format = arraysize, format_

    def closes_on_server(self, cursor: Any) -> bool:
        """A named cursor's ``close()`` sends ``CLOSE "name"`` (psycopg's ``ServerCursor``)."""
        from psycopg import ServerCursor

        return isinstance(cursor, ServerCursor)

    def reset_session(self, conn: Any) -> None:
        """Roll back, then ``DISCARD ALL`` in autocommit mode, unprepared; then forget prepares.

        DISCARD ALL refuses to run inside a transaction block, and psycopg
        outside autocommit would wrap it in one; the ``autocommit`` flag is
        client-side, so switching it costs no round trip, and the user's
        setting is restored afterwards.

        Measured with psycopg 3.3.9: psycopg prepares any statement it ran
        ``prepare_threshold`` (5) times, ``DISCARD ALL`` included. Prepared,
        DISCARD ALL drops every server-side prepared statement while psycopg
        still maps its queries to them: the next prepared execute fails with
        ``InvalidSqlStatementName: prepared statement "_pg3_N" does not exist``.
        Unprepared, psycopg notices the ``DISCARD ALL`` command status only
        the first time it sees the statement (later runs are merely counted),
        so it forgets its statements after one reset and not after the next.
        Hence ``prepare=False`` here and an explicit ``clear()`` of psycopg's
        prepared-statement cache -- what psycopg's own ``rollback()`` does,
        minus the ``DEALLOCATE ALL`` it would send next: the server has
        discarded them already.
        """
        if self.in_transaction(conn) is not False:
            conn.rollback()
        autocommit = bool(conn.autocommit)
        if not autocommit:
            conn.autocommit = True
        try:
            conn.execute(DISCARD_ALL, prepare=False)
            _forget_session(conn)
        finally:
            if not autocommit and not self.is_closed(conn):
                conn.autocommit = False

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """``DISCARD ALL`` sent on libpq directly, its answer awaited for at most ``timeout`` s.

        psycopg's ``execute()`` waits for the server without a limit (a stopped
        server never answers: found by a fourth outside attack, a checkin with
        ``reset_session=True`` hung there). Sent on libpq, the statement is
        never wrapped in a transaction and never prepared; then psycopg
        forgets what the server discarded, as :meth:`reset_session` does.
        """
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is not False or getattr(conn, "_pipeline", None):
            return None
        if not _command_within(conn, DISCARD_ALL.encode(), timeout):
            return False
        _forget_session(conn)
        return True

    def execute(self, conn: Any, sql: str) -> None:
        """Run one statement with no parameters, never prepared (``execute`` closes its cursor).

        tether's own statements (``setsession``, resets) run on every checkin
        or reopen: prepared after the fifth run, they would be dropped by the
        next ``DISCARD ALL`` behind psycopg's back (see :meth:`reset_session`).
        """
        conn.execute(sql, prepare=False).close()

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """Lost when psycopg marked the connection closed/broken, or the SQLSTATE says so;
        also a ``ReadOnlySqlTransaction`` (25006) on a session whose server stopped
        accepting writes since it was opened (the old primary after a switchover): that
        session must be retired, and the statement did not run.

        ``QueryCanceled`` (57014, a cancel or ``statement_timeout``) leaves the
        connection open and is not lost; neither are SQL errors.
        """
        if conn is not None and self.is_closed(conn):
            return True
        if automatic_prepare_failed(conn, exc):
            # Not lost: a pooler (PgBouncer in transaction mode) moved the session
            # under psycopg's prepared statements. 08P01 would otherwise say "lost".
            self._explain_prepare_failure(exc)
            return False
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate_means_lost(sqlstate):
            return True
        return conn is not None and must_retire(
            conn, exc, _parameter(conn), lambda: _server_read_only(conn)
        )

    _prepare_failure_logged = False

    def _explain_prepare_failure(self, exc: BaseException) -> None:
        """Add :data:`PGBOUNCER_HINT` to ``exc`` (a note) and log it, once per adapter."""
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            with contextlib.suppress(AttributeError, TypeError):  # no __dict__
                exc.__notes__ = notes  # type: ignore[attr-defined, unused-ignore]  # 3.11+
        if PGBOUNCER_HINT not in notes:
            notes.append(PGBOUNCER_HINT)
        if not self._prepare_failure_logged:
            self._prepare_failure_logged = True
            log.warning("psycopg: %s: %s", type(exc).__name__, PGBOUNCER_HINT)

    def is_auth_failure(self, exc: BaseException) -> bool:
        """SQLSTATE class 28 or 3D000, or libpq's FATAL message for them (connects have no
        SQLSTATE: measured with psycopg 3.3.9, ``sqlstate`` is None)."""
        return libpq_auth_failure(exc)

    def is_configuration_error(self, exc: BaseException) -> bool:
        """libpq's parse errors of the conninfo or URL (measured with psycopg 3.3.9:
        ``ProgrammingError``, or ``OperationalError`` "connection is bad: ...")."""
        return libpq_configuration_error(exc)

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True for psycopg's refusal to use an already closed connection (nothing was
        sent), and for a statement the server refused as a write in a read-only
        transaction (25006: refused before it ran)."""
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == READ_ONLY_SQLSTATE:
            return True
        if sqlstate is not None:
            return False  # the server answered
        operational = self.error_class("OperationalError")
        if operational is None or type(exc) is not operational:
            return False
        return str(exc) in _PRESEND_MESSAGES and (conn is None or self.is_closed(conn))

    # -- timeouts ---------------------------------------------------------------------------

    def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Set ``connect_timeout`` (whole seconds, at least 2: psycopg follows libpq).

        psycopg enforces it itself for the whole connection attempt to each
        host (TCP connect, TLS, authentication), so a host that swallows
        packets or accepts and then stays silent fails after it. With several
        hosts the attempts add up. Name resolution happens in libpq and is not
        covered.
        """
        if self.creator_is_driver:
            kwargs["connect_timeout"] = connect_timeout(seconds, kwargs.get("connect_timeout"))
        return kwargs


def _server_read_only(conn: Any) -> bool | None:
    """Ask the server whether it (not the session) is read-only; None inside a transaction.

    Only an idle session is asked, and in autocommit, so that the question opens no
    transaction of its own.
    """
    if conn.pgconn.transaction_status != TRANS_IDLE or not conn.autocommit:
        return None

    def run(sql: str) -> object:
        row = conn.execute(sql, prepare=False).fetchone()
        return None if row is None else row[0]

    return ask_server_read_only(run)


def _parameter(conn: Any) -> Parameter:
    """What libpq holds for a server-reported parameter of ``conn`` (bytes or None)."""

    def parameter(name: str) -> object:
        try:
            return conn.pgconn.parameter_status(name.encode())
        except Exception:
            return None

    return parameter


#: What to do when psycopg's automatic prepared statements fail on another session.
PGBOUNCER_HINT = (
    "psycopg's automatic prepared statements (_pg3_N) were not found on the server session,"
    " or clashed with one there: the server is most likely PgBouncer in transaction pool mode,"
    " where each transaction may run on another server session. Pass"
    " driver=behind_pgbouncer('transaction') (from tether.simple_pool.drivers) to the pool,"
    " or connect with prepare_threshold=None."
)

#: The server's messages when a statement psycopg prepared is not on this session
#: (26000), is there already (42P05), or is another statement (08P01), as measured
#: through PgBouncer 1.18 in transaction mode.
_PREPARE_FAILURES = {
    "26000": "does not exist",
    "42P05": "already exists",
    "08P01": "bind message supplies",
}


def automatic_prepare_failed(conn: Any, exc: BaseException) -> bool:
    """True when ``exc`` is the server refusing one of psycopg's own prepared statements.

    psycopg names them ``_pg3_N``; the user's own ``prepare=True`` statements
    share the names, so a connection whose ``prepare_threshold`` is None (no
    automatic prepares) is never blamed.
    """
    expected = _PREPARE_FAILURES.get(str(getattr(exc, "sqlstate", None)))
    if expected is None:
        return False
    text = str(exc)
    if 'prepared statement "_pg3_' not in text or expected not in text:
        return False
    return conn is None or getattr(conn, "prepare_threshold", 0) is not None


def _forget_session(conn: Any) -> None:
    """What psycopg keeps of a session the server just discarded (``DISCARD ALL``)."""
    _forget_prepared(conn)
    _forget_notifications(conn)


def _forget_notifications(conn: Any) -> None:
    """Drop the notifications psycopg received for a borrower and kept for ``notifies()``.

    ``DISCARD ALL`` ends the session's ``LISTEN`` s, but what the server had sent
    already is in the client: psycopg 3.3 keeps every notification no handler
    took in ``conn._notifies_backlog`` (a deque; None while a ``notifies()``
    generator runs) and hands it to the next ``notifies()`` call -- the next
    borrower's. Measured with psycopg 3.3.9 (fourth outside attack, H3).
    """
    backlog = getattr(conn, "_notifies_backlog", None)
    if backlog is not None:
        backlog.clear()


def _forget_prepared(conn: Any) -> None:
    """Make psycopg forget the statements it prepared, which the server has discarded.

    psycopg has no public call for it; its ``PrepareManager`` (3.1-3.3) keeps
    them in ``conn._prepared``. ``clear()`` queues a ``DEALLOCATE ALL`` that is
    pointless after ``DISCARD ALL``, so the queue is emptied too.
    """
    manager = getattr(conn, "_prepared", None)
    clear = getattr(manager, "clear", None)
    if callable(clear):
        clear()
        flush = getattr(manager, "_to_flush", None)
        if flush is not None:
            flush.clear()


def _dsn_connect_timeout(dsn: object) -> object:
    """The ``connect_timeout`` in a conninfo string or URI (None if absent or unreadable)."""
    if not isinstance(dsn, str) or "connect_timeout" not in dsn:
        return None
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("connect_timeout")
    except Exception:
        return None


def _positive_int(value: Any) -> int | None:
    """``value`` as libpq reads a timeout (whole seconds), or None unless positive."""
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _ping_within(conn: Any, timeout: float) -> bool:
    """The empty statement on psycopg's libpq connection, answered within ``timeout`` seconds."""
    return _command_within(conn, b"", timeout)


#: (EMPTY_QUERY, COMMAND_OK) as plain ints, found at the first call (psycopg is imported
#: by then): the answers :func:`_command_within` accepts.
_ACCEPTED: tuple[int, ...] = ()


def _command_within(conn: Any, command: bytes, timeout: float) -> bool:
    """``command`` on psycopg's libpq connection, answered within ``timeout`` seconds."""
    global _ACCEPTED
    if not _ACCEPTED:
        from psycopg import pq

        _ACCEPTED = (int(pq.ExecStatus.EMPTY_QUERY), int(pq.ExecStatus.COMMAND_OK))
    accepted = _ACCEPTED
    deadline = time.monotonic() + timeout
    try:
        pgconn = conn.pgconn
        pgconn.send_query(command)  # a few bytes: the socket buffer takes them at once
        fd = pgconn.socket
        while True:
            # Wait first, then read: the same steps whether or not the answer
            # is in already (reading first cost another round of the loop when
            # it was not: the bench's instruction counts moved with the
            # server's latency by up to ~8,000 a request, measured).
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait_readable(fd, remaining):
                return False  # no answer in time: the caller closes it
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the whole answer is in: idle again
                    return not (pgconn.status or conn.broken)
                if result.status not in accepted:
                    return False
    except Exception:
        return False


def _same_adapters(current: Any, saved: Any) -> bool:
    """Whether psycopg's ``AdaptersMap`` ``current`` still shares every table with ``saved``.

    A register on a copy-on-write map first replaces the table it changes,
    so shared tables (by identity) mean nothing was registered since.
    """
    return (
        current.types._registry is saved.types._registry
        and all(a is b for a, b in zip(current._dumpers.values(), saved._dumpers.values()))
        and all(a is b for a, b in zip(current._dumpers_by_oid, saved._dumpers_by_oid))
        and all(a is b for a, b in zip(current._loaders, saved._loaders))
    )
