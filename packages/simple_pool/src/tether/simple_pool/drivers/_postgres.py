"""What the three PostgreSQL adapters share: libpq's states, SQLSTATEs and timeouts.

psycopg 3 and PyGreSQL (``pg`` and ``pgdb``) both sit on libpq, so they report
the same transaction states and the server's SQLSTATE codes, and take the same
``connect_timeout`` rules. Keeping those facts here gives the three adapters
one answer to "is this error a lost connection?", and to "has this session's
server stopped accepting writes?" (see :func:`turned_read_only`).
"""

from __future__ import annotations

import math
import re
import struct
import weakref
from collections.abc import Callable
from typing import Any

from ._socket import peek, socket_readable

#: libpq's ``PGTransactionStatusType`` values (``PQtransactionStatus``), which
#: psycopg's ``TransactionStatus`` and PyGreSQL's ``TRANS_*`` constants mirror.
TRANS_IDLE = 0
TRANS_ACTIVE = 1
TRANS_INTRANS = 2
TRANS_INERROR = 3
TRANS_UNKNOWN = 4

#: A libpq transaction status as tether's answer (see :func:`transaction_state`):
#: one dict lookup, read at every checkin outside autocommit mode (a function
#: with ``int()`` and two tests cost ~1,000 instructions more, measured).
TRANSACTION_STATES: dict[int, bool] = {
    TRANS_IDLE: False, TRANS_ACTIVE: True, TRANS_INTRANS: True, TRANS_INERROR: True,
}  # fmt: skip

#: SQLSTATEs after which the server has closed the session, outside class 08.
#: 57P01 admin_shutdown (``pg_terminate_backend``, ``pg_ctl stop -m fast``),
#: 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up / shutting down),
#: 57P04 database_dropped, 57P05 idle_session_timeout, 25P03
#: idle_in_transaction_session_timeout: all FATAL, the backend exits.
#: 57014 query_canceled is deliberately absent: the session survives a cancel.
LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "25P03"})

#: SQLSTATE 25006 read_only_sql_transaction: a write refused because the
#: transaction is read-only. The server refuses the statement before running
#: it, so nothing of it was applied.
READ_ONLY_SQLSTATE = "25006"

#: Parameters a PostgreSQL 14+ server reports to libpq on its own whenever they
#: change (``ParameterStatus``; what ``target_session_attrs=read-write`` checks
#: at connect): ``in_hot_standby`` is ``on`` on a standby,
#: ``default_transaction_read_only`` on a server set read-only (a primary
#: demoted in a switchover). libpq keeps the last value it was told.
READ_ONLY_PARAMETERS = ("default_transaction_read_only", "in_hot_standby")

#: libpq rounds any positive ``connect_timeout`` below 2 seconds up to 2.
LIBPQ_MIN_CONNECT_TIMEOUT = 2

#: Undoes everything a session can change: settings, temp tables, prepared
#: statements, advisory locks, LISTEN, cursors, session authorization.
#: It cannot run inside a transaction block.
DISCARD_ALL = "DISCARD ALL"


#: What libpq reports when the server refused the login, measured on PostgreSQL 15:
#: libpq's connection errors carry no SQLSTATE (psycopg's ``sqlstate`` and
#: PyGreSQL's are None), only the server's FATAL message. English messages
#: (the server's ``lc_messages``); a translated server is classified by SQLSTATE
#: only, where the driver has one.
_AUTH_MESSAGES = (
    "password authentication failed",  # 28P01
    "authentication failed for user",  # ident, peer, SCRAM, GSSAPI, SSPI, LDAP, cert: 28000
    "SASL authentication failed",  # PgBouncer 1.18 refusing a SCRAM login (no user named)
    "no pg_hba.conf entry",  # 28000
    "pg_hba.conf rejects connection",  # 28000
    "is not permitted to log in",  # 28000
    "does not exist",  # role (28000) or database (3D000) "... does not exist"
    "permission denied for database",  # 42501 at login: no CONNECT privilege
    "no password supplied",  # libpq itself: the server asked for a password
    "password is required",
)


def libpq_auth_failure(exc: BaseException) -> bool:
    """True when a libpq connect error means the login was refused (SQLSTATE 28xxx, 3D000).

    Without a SQLSTATE (libpq's connection errors have none) the server's
    FATAL message decides; only a FATAL at connect counts, so "relation ...
    does not exist" from a statement never does.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate.startswith("28") or sqlstate == "3D000"
    text = str(exc)
    if "no password supplied" in text:
        return True
    if "FATAL:" not in text:
        return False
    fatal = text.split("FATAL:", 1)[1]
    if "does not exist" in fatal:
        return fatal.lstrip().startswith(("role ", "database "))
    return any(message in fatal for message in _AUTH_MESSAGES)


#: libpq's messages for connect arguments it cannot parse or use, from its
#: conninfo and URL parser (``fe-connect.c``, PostgreSQL 15 and 16), raised
#: before any server is reached (psycopg: ProgrammingError or
#: OperationalError "connection is bad: ..."; PyGreSQL: InternalError).
_CONNINFO_ERROR = re.compile(
    r"invalid percent-encoded token"
    r"|forbidden value %00 in percent-encoded value"
    r"|invalid connection option \""
    r"|missing \"=\" after \".*\" in connection info string"
    r"|unterminated quoted string in connection info string"
    r"|invalid URI query parameter"
    r"|(extra|missing) key/value separator \"=\" in URI query parameter"
    r"|end of string reached when looking for matching \"\]\""
    r"|IPv6 host address may not be empty in URI"
    r"|unexpected character \".\" at position \d+ in URI"
    r"|invalid integer value \".*\" for connection option"
    r"|invalid (port number|\w+ value): \""
    r"|could not match \d+ (host names|port numbers) to \d+"
    r"|definition of service \".*\" not found"
)


def libpq_configuration_error(exc: BaseException) -> bool:
    """True when a libpq connect error says the connect arguments cannot work (no SQLSTATE)."""
    return not getattr(exc, "sqlstate", None) and bool(_CONNINFO_ERROR.search(str(exc)))


def sqlstate_means_lost(sqlstate: object) -> bool:
    """True for a SQLSTATE that means the server ended the session (class 08 or 57P0x...)."""
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in LOST_SQLSTATES)


# -- sessions whose server stopped accepting writes --------------------------------------
#
# After a switchover the old primary stays up, read-only: its sessions stay
# connected and answer their next write with 25006. A session opened on a
# server that accepted writes and now reports read-only can never write again
# and must be retired; a session opened read-only (a read pool on a standby,
# ``target_session_attrs=prefer-standby``) is what its pool asked for and is
# kept. The connection objects themselves cannot say how they were opened
# (psycopg's are slotted; PyGreSQL keeps no conninfo), so the connections
# opened read-write are remembered here, by id, held weakly.

_READ_WRITE_AT_OPEN: dict[int, weakref.ref[Any]] = {}

#: ``parameter(name)``: the value libpq holds for a reported server parameter, or None.
Parameter = Callable[[str], object]


def reports_read_only(parameter: Parameter) -> bool:
    """True when the server told libpq that its sessions are read-only (no round trip)."""
    return any(parameter(name) in ("on", b"on") for name in READ_ONLY_PARAMETERS)


def note_opened(conn: Any, parameter: Parameter) -> None:
    """Remember ``conn``, just opened, if its server accepted writes then.

    A server before PostgreSQL 14 reports neither parameter: its sessions
    count as read-write at open, and :func:`turned_read_only` never fires
    for them (the parameters never say ``on``).
    """
    if reports_read_only(parameter):
        return
    key = id(conn)

    def forget(ref: weakref.ref[Any]) -> None:
        # Runs while ``conn`` is finalized, before its id can be reused by a new object.
        if _READ_WRITE_AT_OPEN.get(key) is ref:
            _READ_WRITE_AT_OPEN.pop(key, None)

    try:
        _READ_WRITE_AT_OPEN[key] = weakref.ref(conn, forget)
    except TypeError:  # an object without weak references (a raw C connection): not tracked
        pass


def turned_read_only(conn: Any, parameter: Parameter) -> bool:
    """True when ``conn`` was opened read-write and its server now reports read-only."""
    ref = _READ_WRITE_AT_OPEN.get(id(conn))
    return ref is not None and ref() is conn and reports_read_only(parameter)


#: Asked only after a 25006 on a session libpq reports read-only: is it the *server*
#: that turned read-only (recovery, or ``default_transaction_read_only`` from the
#: configuration after a reload), or this session's own ``SET`` (source ``session``)?
#: Both reach libpq as the same reported parameter.
SERVER_READ_ONLY_SQL = (
    "SELECT pg_is_in_recovery() OR EXISTS (SELECT 1 FROM pg_settings"
    " WHERE name = 'default_transaction_read_only' AND setting = 'on'"
    " AND source <> 'session')"
)

#: ``server_read_only()``: the answer to :data:`SERVER_READ_ONLY_SQL`, or None when it
#: cannot be asked (the session is inside a transaction, or the query failed).
ServerReadOnly = Callable[[], "bool | None"]


def must_retire(
    conn: Any,
    exc: BaseException,
    parameter: Parameter,
    server_read_only: ServerReadOnly | None = None,
) -> bool:
    """True when ``exc`` is the 25006 of a session whose server stopped accepting writes.

    A 25006 on a session that is still read-write (the user's ``BEGIN READ
    ONLY``) or was read-only from the start (a read pool) is the caller's
    error, not a reason to reconnect. Nor is the session's own
    ``SET default_transaction_read_only = on`` (an application's guard, which
    libpq reports just like a server-wide change): outside a transaction,
    ``server_read_only`` asks the server which it is, so that a write the guard
    refused is never re-run on a new session. Inside a transaction it cannot
    be asked; the error reaches the caller there anyway, and nothing is re-run.
    """
    if getattr(exc, "sqlstate", None) != READ_ONLY_SQLSTATE or not turned_read_only(
        conn, parameter
    ):
        return False
    return server_read_only is None or server_read_only() is not False


def ask_server_read_only(run: Callable[[str], object]) -> bool | None:
    """:data:`SERVER_READ_ONLY_SQL` through ``run`` (returns the one value), or None."""
    try:
        value = run(SERVER_READ_ONLY_SQL)
    except Exception:
        return None
    if isinstance(value, str):  # PyGreSQL with its bool conversion off: 't' / 'f'
        return value.lower() in ("t", "true", "on")
    return None if value is None else bool(value)


def transaction_state(status: Any) -> bool | None:
    """libpq's transaction status as tether's answer: open (True), idle (False), unknown (None).

    ACTIVE (a command in progress) counts as open: whatever runs may have
    started a transaction. INERROR (a failed transaction block) is open too:
    it must be rolled back before the connection is usable again.
    """
    try:
        return TRANSACTION_STATES.get(status)  # an int, or an IntEnum (hashed as its int)
    except TypeError:  # unhashable: nothing libpq answers
        return None


def connect_timeout(seconds: float, current: Any = None) -> int:
    """The libpq ``connect_timeout`` for ``seconds`` left, keeping a smaller ``current`` one.

    libpq counts whole seconds with a minimum of 2, so ``seconds`` is rounded
    up (never cutting short a connect that would finish in time) and raised to
    2. A positive ``current`` value the user chose is kept when smaller; zero,
    negative or unparsable values mean "wait forever" to libpq and are replaced.
    """
    wanted = max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(seconds) if seconds > 0 else 0)
    try:
        user = int(float(current)) if current is not None else 0
    except (TypeError, ValueError):
        user = 0
    return min(user, wanted) if user > 0 else wanted


_CONNINFO_TIMEOUT = re.compile(r"(?:^|\s)connect_timeout\s*=\s*'?(-?\d+)")


def with_conninfo_timeout(dbname: str | None, timeout: int) -> str:
    """``dbname`` as a libpq conninfo string that carries ``connect_timeout``.

    PyGreSQL's classic ``pg.connect``/``pg.DB`` take no ``connect_timeout``
    argument, but libpq expands a ``dbname`` containing ``=`` (or a
    ``postgresql://`` URI) into connection parameters, while the host, port
    and user given separately still apply. A plain database name becomes
    ``dbname='name' connect_timeout=N``; a conninfo string gets the option
    appended unless it already holds a smaller one.
    """
    if not dbname:
        return f"connect_timeout={timeout}"
    if dbname.startswith(("postgresql://", "postgres://")):
        # (A URI ending in "?" or "&" takes the parameter as it is: libpq refuses an
        # empty one, "missing key/value separator": sixth outside attack.)
        separator = "" if dbname.endswith(("?", "&")) else "&" if "?" in dbname else "?"
        return f"{dbname}{separator}connect_timeout={timeout}"
    if "=" in dbname:
        match = _CONNINFO_TIMEOUT.search(dbname)
        if match is not None and 0 < int(match.group(1)) <= timeout:
            return dbname
        return f"{dbname} connect_timeout={timeout}"
    quoted = dbname.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{quoted}' connect_timeout={timeout}"


def pygresql_presend_error(exc: BaseException) -> bool:
    """True when PyGreSQL raised ``exc`` itself, before sending, because the connection is gone.

    Measured with PyGreSQL 6.2: on a closed ``pg.DB`` every call raises
    ``InternalError('Connection already closed')`` (or ``'Connection is not
    valid'`` through attribute access); on a closed raw ``pg.Connection``
    ``TypeError('Connection is not valid')``; on a closed ``pgdb`` connection
    ``OperationalError('Connection has been closed')``. On a connection libpq
    marked bad, encoding the query fails first with ``LookupError('unknown
    encoding: ')`` (``pgdb`` wraps it in ``OperationalError("Internal error
    in ...")``, chained with ``from``). All of these fail before anything
    reaches the server.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = str(current.args[0]) if current.args else ""
        if isinstance(current, LookupError) and message.startswith("unknown encoding"):
            return True
        if message in (
            "Connection already closed",
            "Connection is not valid",
            "Connection has been closed",
        ):
            return True
        current = current.__cause__
    return False


def peer_closed(fd: int, ssl: bool) -> bool:
    """True when the server has ended the idle session on socket ``fd`` (nothing is read).

    Measured on PostgreSQL 15: ``pg_terminate_backend`` and ``pg_ctl stop -m
    fast`` leave an ErrorResponse (``E``, FATAL, 57P01) and EOF on an idle
    connection's socket; ``-m immediate`` a NoticeResponse (``N``, WARNING,
    57P01) and EOF. A session that is fine can also have data waiting:
    NOTIFY (``A``), ParameterStatus (``S``) or an ordinary notice, so the
    peeked messages are parsed instead of trusting readability. Over TLS the
    bytes are encrypted: only EOF counts there.
    """
    if not socket_readable(fd):
        return False
    data = peek(fd)
    if data is None:
        return False
    if not data:
        return True  # EOF
    if ssl:
        return False
    return _messages_say_closed(data)


def _messages_say_closed(data: bytes) -> bool:
    """Whether backend messages peeked on an idle connection announce the session's end."""
    offset = 0
    while offset < len(data):
        kind = data[offset : offset + 1]
        if kind == b"E":
            return True  # an error while idle is always FATAL: the backend exits
        if offset + 5 > len(data):
            return False
        (length,) = struct.unpack_from("!i", data, offset + 1)
        end = offset + 1 + length
        if length < 4 or end > len(data):
            return False  # incomplete: the rest is still on its way
        if kind == b"N" and sqlstate_means_lost(_notice_sqlstate(data[offset + 5 : end])):
            return True
        offset = end
    return False


def _notice_sqlstate(body: bytes) -> str | None:
    """The ``C`` (SQLSTATE) field of an ErrorResponse/NoticeResponse body."""
    for field in body.split(b"\0"):
        if field[:1] == b"C":
            return field[1:].decode("ascii", "replace")
    return None
