"""The adapter for PyGreSQL's classic interface (``import pg``, ``pg.DB``).

The classic API is not DB-API 2: a ``pg.DB`` runs each ``query()`` in
autocommit mode unless ``begin()`` opened a transaction; there are no cursors.
The creator is ``pg.DB`` itself, or the ``pg`` module (then connecting means
``pg.DB(*args, **kwargs)``), or ``pg.connect`` (a raw ``pg.Connection``, which
this adapter also handles). ``pg.DB.db`` is the raw libpq connection (``None``
after ``close()``); its ``status`` (1 good, 0 bad) and ``transaction()``
(libpq's transaction status) answer without a round trip.

Measured with PyGreSQL 6.2.3 and PostgreSQL 15:

* ``pg_ctl restart -m immediate``: ``ProgrammingError`` "server closed the
  connection unexpectedly" (no SQLSTATE), ``db.db.status`` 0; every later
  call, even ``rollback()``, raises ``LookupError('unknown encoding: ')``
  before sending.
* ``-m fast`` / ``pg_terminate_backend``: ``ProgrammingError`` "FATAL:
  terminating connection due to administrator command ...", status 0.
* ``pg_cancel_backend``: ``OperationalError`` 57014, status 1, transaction
  INERROR until rolled back.
* After ``close()``: ``InternalError('Connection already closed')``.
* ``rollback()`` with no transaction open: the server logs a warning
  ("there is no transaction in progress"), so the adapter skips it.
* Server down at connect: ``InternalError`` "Connection refused".

Settings a borrower can change on the connection object
(:meth:`PgClassicAdapter.settings`): the cast hook, the notice receiver and
non-blocking mode (getter/setter pairs of the libpq connection), and
``pg.DB.debug`` (where ``pg.DB`` prints or logs every query). Measured
through a TCP proxy: setting any of them sends nothing. There is no
autocommit switch to restore (see :meth:`PgClassicAdapter.autocommit`).
The default cast hook is a bound method, a new object at every
``get_cast_hook()``: settings are compared with ``==``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

from ..attributes import instance_dict
from . import register
from ._postgres import (
    DISCARD_ALL,
    peer_closed,
    transaction_state,
    with_conninfo_timeout,
)
from ._pygresql import PyGreSQLAdapter, command_cnx_within, ping_cnx, rollback_cnx_within
from .base import top_module_name

_STATUS_OK = 1
#: pg.DB's per-table caches (PyGreSQL 6: attribute names, generated columns,
#: primary keys, privileges), keyed by table name.
_DB_TABLE_CACHES = ("_attnames", "_generated", "_pkeys", "_privileges")
#: The positional parameters of ``pg.connect``/``pg.DB``: dbname comes first.
_DBNAME_POSITION = 0


@register
class PgClassicAdapter(PyGreSQLAdapter):
    """PyGreSQL classic ``pg.DB``: autocommit unless ``begin()``, state from ``db.db``."""

    name = "pg"
    type_cache_attribute = "dbtypes"
    sql_sets_autocommit = False  # see DriverAdapter.sql_sets_autocommit
    modules = ("pg",)
    dbapi2 = False
    #: Measured on PyGreSQL 6.2: once a notice receiver was set, libpq's own
    #: notice processing (NOTICE lines on stderr) never comes back, not even with
    #: ``set_notice_receiver(None)``: the next borrower's notices vanished (found
    #: by an outside attack). A checkout that sets one ends with the session.
    unrestorable = frozenset({"set_notice_receiver"})

    def __init__(self, creator: ModuleType | Callable[..., Any], module: ModuleType | None = None):
        if isinstance(creator, ModuleType) and callable(getattr(creator, "DB", None)):
            # The pg module: its connect() returns a raw pg.Connection; tether hands out pg.DB.
            super().__init__(creator.DB, module=creator)
            self.creator = creator
        else:
            super().__init__(creator, module)

    @property
    def threadsafety(self) -> int:
        """1: the module may be shared between threads, a ``pg.DB`` may not.

        The ``pg`` module declares no DB-API ``threadsafety``; a libpq
        connection must not be used by two threads at once, and ``pg.DB``
        keeps per-connection caches without locks.
        """
        return 1

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """``pg.DB(*args, **kwargs)``, moving a ``connect_timeout`` keyword into the conninfo.

        ``pg.DB`` has no ``connect_timeout`` argument; libpq reads it from a
        conninfo string given as ``dbname``, while host, port and user given
        separately still apply.
        """
        if self.creator_is_driver and "connect_timeout" in kwargs:
            timeout = int(float(kwargs.pop("connect_timeout")))
            if args:
                if isinstance(args[_DBNAME_POSITION], (str, type(None))):
                    dbname = with_conninfo_timeout(args[_DBNAME_POSITION], timeout)
                    args = (dbname, *args[_DBNAME_POSITION + 1 :])
            elif "db" not in kwargs:  # pg.DB(db=existing_connection) opens nothing
                kwargs["dbname"] = with_conninfo_timeout(kwargs.get("dbname"), timeout)
        return self._connect(*args, **kwargs)

    # -- the raw connection -----------------------------------------------------------------

    def _raw(self, conn: Any) -> Any:
        """The libpq connection: ``conn.db`` for a ``pg.DB`` (None once closed), else ``conn``."""
        pg = sys.modules.get("pg")
        db_class = getattr(pg, "DB", None) if pg is not None else None
        if isinstance(db_class, type) and isinstance(conn, db_class):
            return (instance_dict(conn) or {}).get("db")
        if top_module_name(type(conn)) == "pg" and type(conn).__name__ == "DB":
            return (instance_dict(conn) or {}).get("db")
        return conn

    def libpq(self, conn: Any) -> Any:
        """The libpq connection (``db.db`` of a ``pg.DB``)."""
        return self._raw(conn)

    def _status(self, conn: Any) -> int | None:
        raw = self._raw(conn)
        if raw is None:
            return None
        try:
            return int(raw.status)
        except Exception:  # TypeError('Connection is not valid') once closed
            return None

    # -- state, without round trips -------------------------------------------------------

    def is_closed(self, conn: Any) -> bool:
        """Closed by the user (``db.db`` is None) or libpq's status is not OK."""
        if conn is None:
            return False
        return self._status(conn) != _STATUS_OK

    def in_transaction(self, conn: Any) -> bool | None:
        """libpq's transaction status: inside ``begin()`` True, otherwise False."""
        if self.is_closed(conn):
            return None
        try:
            return transaction_state(self._raw(conn).transaction())
        except Exception:
            return None

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(self._raw(conn).fileno())
        except Exception:
            return None

    def peer_closed(self, conn: Any) -> bool:
        """The server's farewell or EOF waiting on the idle socket (peeked, not read)."""
        if conn is None or self.is_closed(conn):
            return False
        raw = self._raw(conn)
        try:
            return peer_closed(int(raw.fileno()), bool(getattr(raw, "ssl_in_use", False)))
        except Exception:
            return False

    def autocommit(self, conn: Any) -> bool:
        """True unless a transaction is open: classic ``query()`` commits by itself.

        The classic API has no autocommit switch; statements run in their own
        transaction until ``begin()``. An unknown state (closed connection)
        answers False, the conservative choice for retry decisions.
        """
        return self.in_transaction(conn) is False

    # -- settings a borrower can change ---------------------------------------------------

    #: (getter, setter) pairs, by setting name (``pg.DB`` and ``pg.Connection`` both have them).
    _ACCESSORS: ClassVar[dict[str, tuple[str, str]]] = {
        "cast_hook": ("get_cast_hook", "set_cast_hook"),
        "notice_receiver": ("get_notice_receiver", "set_notice_receiver"),
        "non_blocking": ("is_non_blocking", "set_non_blocking"),
    }

    def settings(self, raw: Any) -> dict[str, Any]:
        """The cast hook, notice receiver, non-blocking mode, and ``pg.DB.debug``."""
        saved = {name: getattr(raw, get)() for name, (get, _) in self._ACCESSORS.items()}
        if self._raw(raw) is not raw:  # a pg.DB, not a raw pg.Connection
            saved["debug"] = raw.debug
        return saved

    def restore_settings(self, raw: Any, saved: dict[str, Any]) -> bool:
        """Call each setter whose getter now answers differently; no round trip."""
        changed = False
        for name, (get, put) in self._ACCESSORS.items():
            if name in saved and getattr(raw, get)() != saved[name]:
                getattr(raw, put)(saved[name])
                changed = True
        if "debug" in saved and raw.debug != saved["debug"]:
            raw.debug = saved["debug"]
            changed = True
        return changed

    # -- transactions -----------------------------------------------------------------------

    def begin(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        """``db.begin(mode)``; a raw ``pg.Connection`` gets ``BEGIN``."""
        begin = getattr(conn, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)
        else:
            conn.query("BEGIN")

    def commit(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        """``db.commit()``, skipped when libpq says no transaction is open."""
        if self.in_transaction(conn) is False:
            return None
        commit = getattr(conn, "commit", None)
        if callable(commit):
            return commit(*args, **kwargs)
        return conn.query("COMMIT")

    def rollback(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        """``db.rollback(name=None)``, skipped when no transaction is open (the server warns)."""
        if self.in_transaction(conn) is False:
            return None
        rollback = getattr(conn, "rollback", None)
        if callable(rollback):
            return rollback(*args, **kwargs)
        name = args[0] if args else kwargs.get("name")
        return conn.query(f"ROLLBACK TO {name}" if name else "ROLLBACK")

    def rollback_within(self, conn: Any, timeout: float) -> bool | None:
        """``ROLLBACK`` on the libpq connection, awaited for at most ``timeout`` seconds.

        ``db.rollback()`` waits without a limit; ``pg.DB`` keeps no
        transaction flag of its own, so nothing else is to be set back.
        """
        if conn is None or self.is_closed(conn):
            return False
        if self.in_transaction(conn) is False:
            return True
        raw = self._raw(conn)
        if raw is None:
            return False
        return rollback_cnx_within(raw, timeout)

    # -- round trips ------------------------------------------------------------------------

    def execute(self, conn: Any, sql: str) -> None:
        """``db.query(sql)``."""
        conn.query(sql)

    def ping(self, conn: Any, timeout: float | None = None) -> bool:
        """``SELECT 1`` on the raw connection; the empty statement in a failed transaction.

        PyGreSQL answers the server's EmptyQueryResponse with ``ValueError('Empty
        query')``, which proves the round trip. ``timeout`` bounds the wait for
        the answer (see ``ping_cnx``).
        """
        if conn is None or self.is_closed(conn):
            return False
        try:
            ping_cnx(self._raw(conn), timeout)
        except Exception:
            return False
        # After the round trip libpq knows if the server turned read-only (see
        # PsycopgAdapter.ping): such a session is of no use to the pool that opened it.
        return not self.is_closed(conn) and not self.turned_read_only(conn)

    def reset_session(self, conn: Any) -> None:
        """Roll back any transaction, ``DISCARD ALL``, and forget ``pg.DB``'s table metadata.

        ``pg.DB`` caches column names, primary keys and privileges per table
        name; DISCARD ALL drops temporary tables, and the next user may create
        one of the same name with other columns, which ``insert()``/``get()``
        would then get wrong.
        """
        self.rollback(conn)
        conn.query(DISCARD_ALL)
        self._forget_tables(conn)

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """``DISCARD ALL`` on the idle libpq connection, awaited for at most ``timeout`` s."""
        if conn is None or self.is_closed(conn):
            return False
        raw = self._raw(conn)
        if raw is None:
            return False
        if self.in_transaction(conn) is not False:
            return None
        if not command_cnx_within(raw, DISCARD_ALL, timeout):
            return False
        self._forget_tables(conn)
        return True

    def _forget_tables(self, conn: Any) -> None:
        """Empty ``pg.DB``'s per-table caches (a raw ``pg.Connection`` has none)."""
        if self._raw(conn) is not conn:  # a pg.DB, not a raw connection
            for name in _DB_TABLE_CACHES:
                cache = (instance_dict(conn) or {}).get(name)
                if isinstance(cache, dict):
                    cache.clear()

    def close(self, conn: Any) -> None:
        """Close, never raising (a closed ``pg.DB`` raises InternalError on ``close()``)."""
        if self._raw(conn) is None:
            return
        super().close(conn)
