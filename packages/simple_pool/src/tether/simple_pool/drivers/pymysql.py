"""The adapter for PyMySQL (``import pymysql``), against MariaDB and MySQL.

PyMySQL drops its socket the moment it sees the connection fail, so
``conn.open`` is an exact, free "is it closed" check; its errors carry the
client (``CR_*``, 2xxx) or server (``ER_*``) error number as ``args[0]``.

Measured with PyMySQL 1.2.4 and MariaDB 10.11:

* Server restart (SIGTERM), SIGKILL, ``KILL <id>`` / ``KILL CONNECTION``, idle
  or during a query: ``OperationalError(2013, 'Lost connection to MySQL
  server during query')``, then ``open`` is False. MariaDB sent no 1927 here.
* Every later call: ``InterfaceError(0, '')``, raised before sending;
  ``close()`` and ``ping()`` on a closed connection: ``Error('Already closed')``.
* ``KILL QUERY``: ``OperationalError(1317, 'Query execution was
  interrupted')``, connection usable.
* Server down at connect: ``OperationalError(2003, "Can't connect ...")``.
* A server that accepts TCP but never answers: ``connect()`` hangs forever
  despite ``connect_timeout``, which only covers the TCP connect; the
  handshake reads with ``read_timeout`` (default None). This adapter bounds
  the handshake (see :meth:`PyMySQLAdapter.connect`).
* ``server_status & SERVER_STATUS_IN_TRANS`` is set after ``BEGIN`` or a
  write, but NOT after a plain ``SELECT`` (or ``SELECT ... FOR UPDATE``)
  with autocommit off, although InnoDB then holds a snapshot (another
  session's commits stay invisible until rollback). So outside autocommit,
  "flag not set" cannot mean "no transaction".
* ``COM_RESET_CONNECTION`` (0x1f) rolls back and drops user variables, temp
  tables and ``GET_LOCK`` locks, keeps the session id, but also resets
  ``autocommit`` to 1, ``sql_mode`` and the character set to the handshake
  charset: PyMySQL's connect-time settings must be sent again. An unknown
  command gives ``OperationalError(1047, 'Unknown command')`` (SQLSTATE
  08S01!) and leaves the connection usable.

Settings a borrower can change on the connection object
(:meth:`PyMySQLAdapter.settings`), measured by counting the bytes PyMySQL
sent through a TCP proxy:

* ``autocommit(v)`` sends ``SET AUTOCOMMIT = v`` (23 bytes) when ``v``
  differs from the flag in the server's last status, nothing when it is
  the same. ``get_autocommit()`` reads that flag (no round trip), so it also
  sees an SQL ``SET autocommit = 0`` (measured), while PyMySQL's own
  ``autocommit_mode`` (re-sent when it reconnects) still says what
  ``autocommit()`` last set.
* ``set_character_set(cs, collation)`` sends ``SET NAMES`` (a round trip)
  and updates ``charset``, ``collation``, ``encoding``. ``set_charset(cs)``
  (deprecated, warns) calls ``set_character_set(cs)``.
* ``cursorclass`` (the class ``cursor()`` makes) is a plain attribute: free.

``select_db()``: PyMySQL does not record the database it switched to
(``conn.db`` keeps the connect-time one), and a borrower's ``select_db()``
reached the next borrower, with ``reset_session`` too:
``COM_RESET_CONNECTION`` keeps the current database (measured on MariaDB
10.11). So each connection the adapter opens gets its own ``select_db``
that records the name (:func:`_track_database`); a different one is
selected back (one ``COM_INIT_DB``). SQL ``USE`` is not seen: it is session
state changed with SQL, as ``SET`` is. A connection opened without a
database cannot be given "none" back.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Iterator
from typing import Any

from ..attributes import instance_dict
from . import register
from ._socket import socket_readable
from .base import DriverAdapter, log, restore_attributes

#: ``SERVER_STATUS_IN_TRANS`` and ``SERVER_STATUS_AUTOCOMMIT`` from
#: ``pymysql.constants.SERVER_STATUS`` (protocol constants, copied so this
#: module imports without PyMySQL).
_IN_TRANS = 0x0001
_AUTOCOMMIT = 0x0002
#: The protocol command PyMySQL has no method for (it calls 0x1f ``COM_END``).
_COM_RESET_CONNECTION = 0x1F
#: ER_UNKNOWN_COM_ERROR: the server predates COM_RESET_CONNECTION
#: (MySQL < 5.7.3, MariaDB < 10.2.4).
_ER_UNKNOWN_COM_ERROR = 1047

#: Error numbers after which the connection is gone. PyMySQL closes its socket
#: for most of them anyway; the list also covers an error seen before that.
LOST_ERRNOS = frozenset(
    {
        2003,  # CR_CONN_HOST_ERROR: cannot reach the server (also mid-connect OSErrors)
        2006,  # CR_SERVER_GONE_ERROR: writing the request failed
        2013,  # CR_SERVER_LOST: EOF or read timeout while waiting for the answer
        2014,  # CR_COMMANDS_OUT_OF_SYNC: PyMySQL lost its place in the protocol stream
        2055,  # CR_SERVER_LOST_EXTENDED
        1053,  # ER_SERVER_SHUTDOWN: the server is shutting down
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+: wait_timeout expired)
    }
)
#: Server errors at connect that mean the login was refused: configuration errors,
#: never an outage (measured on MariaDB 10.11: a wrong password gives 1045, an
#: unknown database 1049).
AUTH_ERRNOS = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR: no access to that database
        1045,  # ER_ACCESS_DENIED_ERROR: wrong user or password
        1049,  # ER_BAD_DB_ERROR: unknown database
        1130,  # ER_HOST_NOT_PRIVILEGED: this host may not connect
        1251,  # ER_NOT_SUPPORTED_AUTH_MODE: the client cannot do the server's auth method
        1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR: e.g. unix_socket-only root
        1820,  # ER_MUST_CHANGE_PASSWORD
        1862,  # ER_MUST_CHANGE_PASSWORD_LOGIN: the password expired
        4151,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
    }
)
#: PyMySQL's default ``connect_timeout``.
_DEFAULT_CONNECT_TIMEOUT = 10.0
#: The smallest connect timeout :meth:`PyMySQLAdapter.set_timeouts` passes; PyMySQL
#: rejects 0 and a deadline that has (nearly) passed still needs a positive value.
_MIN_TIMEOUT = 0.1


@contextlib.contextmanager
def _bounded(conn: Any, timeout: float | None) -> Iterator[None]:
    """PyMySQL's read and write timeouts lowered to ``timeout`` inside the block, put back after.

    PyMySQL applies ``_read_timeout``/``_write_timeout`` to the socket before
    each read and write, so every wait of the block is bounded; None (or a
    connection without them): nothing changes.
    """
    attributes = instance_dict(conn) or {}
    if timeout is None or "_read_timeout" not in attributes or "_write_timeout" not in attributes:
        yield
        return
    read, write = conn._read_timeout, conn._write_timeout
    seconds = max(float(timeout), _MIN_TIMEOUT)
    conn._read_timeout = seconds if read is None else min(read, seconds)
    conn._write_timeout = seconds if write is None else min(write, seconds)
    try:
        yield
    finally:
        conn._read_timeout, conn._write_timeout = read, write


_MAX_TIMEOUT = 31536000.0  # PyMySQL's upper limit for connect_timeout


def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and type(args[0]) is int else None


#: Plain attributes of a PyMySQL connection that every query reads (how text
#: is encoded, how large a packet may be, whether text comes back decoded).
_QUERY_ATTRIBUTES = ("encoding", "max_allowed_packet", "use_unicode")


@register
class PyMySQLAdapter(DriverAdapter):
    """PyMySQL: ``open`` and ``server_status`` for state, error numbers for errors."""

    name = "pymysql"
    sql_sets_autocommit = True  # see DriverAdapter.sql_sets_autocommit
    # autocommit(True) is PyMySQL's setter; select_db() changes the default database;
    # set_charset(cs) is the older name of set_character_set(cs) (deprecated, still
    # there in 2.2.8: found by an outside attack, left out here it raised 2013 after an
    # idle kill where set_character_set() reopened, and was not replayed).
    session_setters = frozenset({"autocommit", "select_db", "set_character_set", "set_charset"})
    setter_aliases = {"set_charset": "set_character_set"}  # (its one argument is the same)
    modules = ("pymysql",)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """A new connection (see :meth:`_connect_bounded`) whose ``select_db()`` is recorded."""
        charset = kwargs.get("charset")
        if isinstance(charset, str) and charset and self.creator_is_driver:
            from pymysql.charset import charset_by_name

            if charset_by_name(charset) is None:
                # PyMySQL itself fails with "'NoneType' object has no attribute
                # 'encoding'" (measured, 2.2.8): say what is wrong instead.
                raise LookupError(f"charset {charset!r}: no character set PyMySQL knows")
        conn = self._connect_bounded(*args, **kwargs)
        _track_database(conn)
        return conn

    def opened(self, conn: Any) -> None:
        """The first connection of a creator tether refined gets the recorder too."""
        super().opened(conn)
        _track_database(conn)

    def _connect_bounded(self, *args: Any, **kwargs: Any) -> Any:
        """Open a connection whose handshake cannot outlast ``connect_timeout``.

        PyMySQL's ``connect_timeout`` (default 10 s) only limits the TCP
        connect; the greeting, authentication, ``SET NAMES`` and
        ``init_command`` are read with ``read_timeout``, which defaults to
        "forever", so a server that accepts and then stays silent hangs the
        connect (measured). Setting ``read_timeout`` for good would instead kill
        every longer query later. So the connect runs with read/write timeouts
        no longer than ``connect_timeout`` and the user's own values (None by
        default) are put back on the open connection. Only done when the
        creator is PyMySQL's own connect.
        """
        if not self.creator_is_driver:
            return self._connect(*args, **kwargs)
        bound = kwargs.get("connect_timeout", _DEFAULT_CONNECT_TIMEOUT)
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound <= 0:
            return self._connect(*args, **kwargs)  # let PyMySQL report the bad value
        user_read = kwargs.get("read_timeout")
        user_write = kwargs.get("write_timeout")
        bounded = dict(kwargs)
        bounded["read_timeout"] = bound if user_read is None else min(user_read, bound)
        bounded["write_timeout"] = bound if user_write is None else min(user_write, bound)
        conn = self._connect(*args, **bounded)
        attributes = instance_dict(conn) or {}
        if "_read_timeout" in attributes and "_write_timeout" in attributes:
            # PyMySQL re-applies these to the socket before its next read/write.
            conn._read_timeout = user_read
            conn._write_timeout = user_write
            return conn
        # An unknown PyMySQL layout: the handshake bound cannot be taken back, and
        # leaving it would time out long queries. Connect again without it.
        log.warning(
            "pymysql: cannot restore read/write timeouts on %s; connecting without"
            " the handshake bound",
            type(conn).__name__,
        )
        self.close(conn)
        return self._connect(*args, **kwargs)

    # -- state, without round trips -------------------------------------------------------

    def is_closed(self, conn: Any) -> bool:
        """``not conn.open``: PyMySQL drops the socket when it sees the connection fail."""
        if conn is None:
            return False
        return not bool(getattr(conn, "open", True))

    def in_transaction(self, conn: Any) -> bool | None:
        """True when the server flagged a transaction; False only in autocommit mode.

        With autocommit off, a plain SELECT opens an InnoDB snapshot without
        setting ``SERVER_STATUS_IN_TRANS`` (measured on MariaDB 10.11), so an
        unset flag answers None ("maybe"): the caller rolls back, which also
        ends the snapshot. A closed connection answers None too (its last
        status is stale).
        """
        if conn is None or self.is_closed(conn):
            return None
        status = getattr(conn, "server_status", None)
        if not isinstance(status, int):
            return None
        if status & _IN_TRANS:
            return True
        if status & _AUTOCOMMIT:
            return False
        return None

    def left_busy(self, conn: Any) -> object:
        """The server's last status: in a transaction, or autocommit off (one read of it)."""
        return conn.server_status & (_IN_TRANS | _AUTOCOMMIT) != _AUTOCOMMIT

    def autocommit(self, conn: Any) -> bool:
        """``conn.get_autocommit()``: the autocommit flag of the server's last status."""
        return bool(conn.get_autocommit())

    def socket_fd(self, conn: Any) -> int | None:
        sock = getattr(conn, "_sock", None)  # None once PyMySQL saw the connection fail
        try:
            return int(sock.fileno()) if sock is not None else None
        except Exception:
            return None

    def peer_closed(self, conn: Any) -> bool:
        """Anything waiting on an idle connection's socket: the server is closing it.

        The MySQL protocol never sends unprompted data to an idle session; a
        killed or timed-out session gets EOF (MariaDB) or a last error packet
        (MySQL 8's 4031) before it. The exception is an unbuffered result
        (``SSCursor``) still being read, whose rows are legitimately waiting.
        """
        if conn is None or self.is_closed(conn):
            return False
        result = getattr(conn, "_result", None)
        if result is not None and getattr(result, "unbuffered_active", False):
            return False
        fd = self.socket_fd(conn)
        return fd is not None and socket_readable(fd)

    # -- settings a borrower can change ---------------------------------------------------

    def settings(self, raw: Any) -> dict[str, Any]:
        """``autocommit`` (the server's flag), ``autocommit_mode``, ``charset``,
        ``collation`` and ``cursorclass``; all read from PyMySQL's state."""
        return {
            "autocommit": bool(raw.get_autocommit()),
            "autocommit_mode": raw.autocommit_mode,
            "charset": raw.charset,
            "collation": raw.collation,
            "cursorclass": raw.cursorclass,
            "database": _database(raw),
        }

    def restore_settings(self, raw: Any, saved: dict[str, Any]) -> bool:
        """``SET NAMES`` and ``SET AUTOCOMMIT`` only when they differ; attributes for the rest."""
        changed = False
        charset, collation = saved.get("charset"), saved.get("collation")
        if charset is not None and (raw.charset, raw.collation) != (charset, collation):
            raw.set_character_set(charset, collation)  # one round trip
            changed = True
        if "autocommit" in saved and bool(raw.get_autocommit()) != saved["autocommit"]:
            raw.autocommit(saved["autocommit"])  # one round trip: SET AUTOCOMMIT
            changed = True
        database = saved.get("database")
        if database and _database(raw) != database:
            raw.select_db(database)  # one round trip: COM_INIT_DB
            changed = True
        rest = {k: v for k, v in saved.items() if k in ("autocommit_mode", "cursorclass")}
        return restore_attributes(raw, rest) or changed

    def configuration(self, raw: Any) -> Any:
        """Copies of the connection's ``encoders`` and ``decoders`` (~20 entries each).

        PyMySQL copies its conversion tables into every connection, and
        escapes each parameter with ``encoders`` and converts each column
        with ``decoders``: found by an outside attack, an encoder one borrower
        put there rewrote the next borrower's parameters. Also the plain
        attributes it reads on every query (:data:`_QUERY_ATTRIBUTES`:
        ``db.encoding = "cp1252"`` mangled the next borrower's text, a fourth
        outside attack found).
        """
        plain = tuple(getattr(raw, name, None) for name in _QUERY_ATTRIBUTES)
        return (dict(raw.encoders), dict(raw.decoders), plain)

    def restore_configuration(self, raw: Any, saved: Any) -> bool:
        """Fresh copies of the saved tables (always), the plain attributes where they differ.

        Always new dicts, not only when they differ: a borrower that kept
        ``db.decoders`` past its checkout could otherwise change the next
        borrower's (fifth outside attack). No round trip.
        """
        encoders, decoders, plain = saved
        changed = bool(raw.encoders != encoders or raw.decoders != decoders)
        for name, value in zip(_QUERY_ATTRIBUTES, plain):
            if getattr(raw, name, None) != value:
                setattr(raw, name, value)
                changed = True
        raw.encoders = dict(encoders)
        raw.decoders = dict(decoders)
        return changed

    # -- round trips ------------------------------------------------------------------------

    def ping(self, conn: Any, timeout: float | None = None) -> bool:
        """``COM_PING`` (``conn.ping(reconnect=False)``): works in any transaction state.

        ``reconnect`` is passed explicitly: old PyMySQL versions defaulted to
        reconnecting, which would swap the session behind the pool's back.
        ``timeout``: PyMySQL's read/write timeouts are lowered to it for the
        ping (it applies them to the socket before each read and write) and
        put back after; a ping that runs out of time raises 2013 and PyMySQL
        closes the connection.
        """
        if conn is None or self.is_closed(conn):
            return False
        try:
            with _bounded(conn, timeout):
                conn.ping(reconnect=False)
        except Exception:
            return False
        return True

    def rollback_within(self, conn: Any, timeout: float) -> bool | None:
        """``rollback()`` with PyMySQL's read/write timeouts lowered to ``timeout`` (see ping).

        PyMySQL waits for the answer with the connection's ``read_timeout``,
        None (forever) by default: found by a fourth outside attack, a checkin
        behind a stopped server hung there. A rollback that runs out of time
        raises 2013 and PyMySQL closes the connection.
        """
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is False:
            return True
        try:
            with _bounded(conn, timeout):
                conn.rollback()
        except Exception:
            return False
        return not self.is_closed(conn)

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """:meth:`reset_session`, each of its round trips within ``timeout`` (as :meth:`ping`)."""
        if conn is None or self.is_closed(conn):
            return False
        try:
            with _bounded(conn, timeout):
                self.reset_session(conn)
        except Exception:
            return False
        return not self.is_closed(conn)

    def driver_ping(
        self, conn_class: type, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, tuple[Any, ...], dict[str, Any]]:
        """``ping(reconnect=...)``: PyMySQL's ping reconnects by itself when asked to.

        Measured with PyMySQL 2.2.8 and MariaDB 10.11: after a ``KILL`` of a
        session inside a transaction, ``conn.ping(reconnect=True)`` returns
        None (and warns that ``reconnect`` is deprecated), the connection
        now is a new session (another ``CONNECTION_ID()``, user variables
        gone, PyMySQL's own ``init_command`` and ``autocommit_mode`` sent
        again), and a following INSERT and ``commit()`` committed the second
        half of the transaction alone. ``ping()`` with no argument, on the
        same kill: ``OperationalError(2013)``, then ``Error('Already
        closed')``. The default of ``reconnect`` is read from the driver's
        signature (False in 2.x; older releases defaulted to True).
        """
        if len(args) > 1 or (args and "reconnect" in kwargs):
            return False, args, kwargs  # not a call PyMySQL accepts: let it say so
        if args:
            reconnect = args[0]
        elif "reconnect" in kwargs:
            reconnect = kwargs["reconnect"]
        else:
            reconnect = _ping_reconnects_by_default(conn_class)
        if not reconnect:
            return False, args, kwargs
        rest = {name: value for name, value in kwargs.items() if name != "reconnect"}
        return True, (), {**rest, "reconnect": False}

    def reset_session(self, conn: Any) -> None:
        """``COM_RESET_CONNECTION``, then PyMySQL's connect-time settings again.

        The reset rolls back, drops user variables, temporary tables, prepared
        statements and ``GET_LOCK`` locks, and resets session variables to the
        server's defaults, like a new connection but without the handshake.
        Since that also undoes what PyMySQL set when it connected, the
        character set (``SET NAMES``), ``sql_mode`` and ``init_command`` are
        sent again, and ``autocommit`` is put back as it was before the reset
        (the server resets it to 1). A server without the command (MySQL
        < 5.7.3, MariaDB < 10.2.4) only gets a rollback.
        """
        autocommit = bool(conn.get_autocommit())
        try:
            conn._execute_command(_COM_RESET_CONNECTION, b"")
            conn._read_ok_packet()
        except Exception as exc:
            if _errno(exc) != _ER_UNKNOWN_COM_ERROR:
                raise
            log.debug("pymysql: server lacks COM_RESET_CONNECTION; rolling back only")
            conn.rollback()
            return
        charset = getattr(conn, "charset", None)
        if charset:
            conn.set_character_set(charset, getattr(conn, "collation", None))
        sql_mode = getattr(conn, "sql_mode", None)
        if sql_mode is not None:
            cursor = conn.cursor()
            try:
                cursor.execute("SET sql_mode=%s", (sql_mode,))
            finally:
                cursor.close()
        init_command = getattr(conn, "init_command", None)
        if init_command is not None:
            self.execute(conn, init_command)
        database = getattr(conn, "db", None)  # the connect-time one
        if database:
            # The reset keeps the current database, also one chosen in SQL
            # (USE other), which no attribute of PyMySQL's shows (found by an
            # outside attack): always selected again, one round trip.
            conn.select_db(database)
        conn.autocommit(autocommit)

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """Lost when PyMySQL closed the connection or the error number says so.

        Not lost: 1317 (query interrupted by ``KILL QUERY``), 1969/3024
        (statement time limits), 1047 (unknown command, despite SQLSTATE
        08S01), and SQL errors.
        """
        if conn is not None and self.is_closed(conn):
            return True
        code = _errno(exc)
        if code in LOST_ERRNOS:
            return True
        interface_error = self.error_class("InterfaceError")
        return code == 0 and interface_error is not None and isinstance(exc, interface_error)

    def is_auth_failure(self, exc: BaseException) -> bool:
        """The server refused the login: its error number says so (``AUTH_ERRNOS``)."""
        return _errno(exc) in AUTH_ERRNOS

    def is_configuration_error(self, exc: BaseException) -> bool:
        """A file the arguments name is not there or not readable (``ssl={"ca": ...}``).

        Measured with PyMySQL 2.2.8: its SSL context is made before any socket
        is opened, and the missing file's ``FileNotFoundError`` comes through
        as it is (network errors come wrapped, ``OperationalError`` 2003): an
        ``OSError`` a pool would otherwise take for an outage and retry
        (sixth outside attack).

        And a value PyMySQL's ``Connection()`` refuses before it opens a socket
        (measured, 2.2.8): ``port="x"`` (ValueError), ``connect_timeout="x"``
        (TypeError), an unknown ``charset`` (LookupError, from :meth:`connect`;
        PyMySQL's own is an AttributeError). Only the connect's own errors are
        asked here, so a ValueError of a statement is never one; PyMySQL's errors
        are none of these classes.
        """
        return isinstance(
            exc,
            (
                FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                ValueError, TypeError, LookupError, AttributeError,
            ),
        )  # fmt: skip

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True for ``InterfaceError(0, '')`` / ``Error('Already closed')``: PyMySQL had no
        socket and refused before sending."""
        if conn is not None and not self.is_closed(conn):
            return False
        interface_error = self.error_class("InterfaceError")
        if interface_error is not None and type(exc) is interface_error:
            return tuple(exc.args) == (0, "")
        error = self.error_class("Error")
        return error is not None and type(exc) is error and tuple(exc.args) == ("Already closed",)

    # -- timeouts ---------------------------------------------------------------------------

    def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Set ``connect_timeout`` (float seconds); :meth:`connect` extends it to the handshake.

        ``read_timeout``/``write_timeout`` are not set here: they would stay on
        the connection and time out long queries; the adapter's connect bounds
        the handshake with ``connect_timeout`` instead.
        """
        if not self.creator_is_driver:
            return kwargs
        wanted = min(max(float(seconds), _MIN_TIMEOUT), _MAX_TIMEOUT)
        current = kwargs.get("connect_timeout", _DEFAULT_CONNECT_TIMEOUT)
        if isinstance(current, (int, float)) and not isinstance(current, bool) and current > 0:
            wanted = min(wanted, float(current))
        kwargs["connect_timeout"] = wanted
        return kwargs


@functools.lru_cache(maxsize=8)
def _ping_reconnects_by_default(conn_class: Any) -> bool:
    """Whether ``conn_class.ping()`` with no argument reconnects (its ``reconnect`` default)."""
    try:
        parameter = inspect.signature(conn_class.ping).parameters.get("reconnect")
    except (AttributeError, TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is True


#: Where :func:`_track_database` records the database ``select_db()`` switched to.
_SELECTED = "_tether_selected_db"


def _track_database(conn: Any) -> None:
    """Give ``conn`` a ``select_db`` of its own that records the database it selects.

    A function stored on the instance, calling the class's method: it holds
    the connection weakly, so it makes no reference cycle (a dropped
    connection is still freed at once, without the garbage collector).
    """
    attributes = instance_dict(conn)
    method = getattr(type(conn), "select_db", None)
    if attributes is None or method is None or "select_db" in attributes:
        return
    ref = weakref.ref(conn)

    def select_db(db: Any) -> None:
        target = ref()
        if target is None:
            raise ReferenceError("the connection is gone")
        method(target, db)
        setattr(target, _SELECTED, db.encode() if isinstance(db, str) else db)

    select_db.__doc__ = method.__doc__
    attributes["select_db"] = select_db


def _database(conn: Any) -> Any:
    """The database of ``conn``: the last one ``select_db()`` selected, else the first."""
    selected = getattr(conn, _SELECTED, None)
    return selected if selected is not None else getattr(conn, "db", None)
