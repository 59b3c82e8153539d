"""The adapter for the standard library's ``sqlite3``.

SQLite runs in-process: there is no server to lose, so the only "lost"
connection is a closed one. Two things need care in a pool.

Threads. ``sqlite3.threadsafety`` is computed from how the SQLite library was
compiled: 3 for the usual serialized build ("connections may be shared").
But a connection made with the default ``check_same_thread=True`` raises
``ProgrammingError`` in any thread but its creator's, and Python's docs ask
users to serialise writes on a shared connection themselves. A pool hands a
connection from one thread to the next (one at a time), so:

* the adapter connects with ``check_same_thread=False`` unless the user set
  it (only when the creator is ``sqlite3`` itself: a function of your own
  must pass it, or its connections fail in other threads);
* :attr:`Sqlite3Adapter.threadsafety` is 1 whatever the module says, so the
  pools never give one connection to two threads at the same time.

Closed connections have no ``closed`` attribute: every use raises
``ProgrammingError('Cannot operate on a closed database.')``. Reading
``total_changes`` is the cheapest call that checks it (a flag test in C, and
unlike ``execute`` it does not check the thread).

Settings a borrower can change on the connection object
(:meth:`Sqlite3Adapter.settings`): ``isolation_level``, ``row_factory``,
``text_factory`` and, on Python 3.12+, ``autocommit``. In-process: no round
trip exists. Setting ``isolation_level = None`` commits an open transaction;
setting 3.12's ``autocommit = False`` opens one (PEP 249 mode keeps a
transaction open at all times), so a restored connection in that mode is
"in a transaction" again, as a new one would be.

What cannot be read back (:attr:`Sqlite3Adapter.unrestorable`):
``set_trace_callback``, ``set_authorizer``, ``set_progress_handler``, the
``create_*`` functions, extensions, limits and ``deserialize()`` (which
replaces the connection's database by an image). sqlite3 has no getter for
any of them, so a checkout that used one ends with the connection closed
(found by an outside attack: a trace callback one borrower installed saw
every statement of the next). A ``:memory:`` database goes with it: give
each pooled connection a file, or configure such callbacks in ``on_connect``.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from . import register
from .base import DriverAdapter

_CLOSED_MESSAGE = "Cannot operate on a closed database."
_THREAD_MESSAGE = "SQLite objects created in a thread can only be used in that same thread"


@register
class Sqlite3Adapter(DriverAdapter):
    """sqlite3: closed-ness probed through ``total_changes``; thread use made explicit."""

    local = True  # an embedded database: connecting is opening a file
    name = "sqlite3"
    sql_sets_autocommit = False  # see DriverAdapter.sql_sets_autocommit
    modules = ("sqlite3",)
    #: ``isolation_level`` before ``autocommit``: on 3.12+ the later one decides.
    setting_attributes = ("isolation_level", "row_factory", "text_factory", "autocommit")
    #: No getter for any of these (see the module docstring and DriverAdapter.unrestorable).
    unrestorable = frozenset(
        {
            "set_trace_callback", "set_authorizer", "set_progress_handler", "create_function",
            "create_aggregate", "create_collation", "create_window_function",
            "enable_load_extension", "load_extension", "setlimit", "setconfig",
            # Replaces the database the connection works on (3.11+): the next
            # borrower's commits would go to the image, never to the file
            # (found by an outside attack).
            "deserialize",
        }
    )  # fmt: skip

    @property
    def threadsafety(self) -> int:
        """1: connections move between threads but are never used by two at once."""
        return 1

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """``sqlite3.connect`` with ``check_same_thread=False`` unless the user chose."""
        if self.creator_is_driver:
            kwargs.setdefault("check_same_thread", False)
        return self._connect(*args, **kwargs)

    # -- state, without round trips -------------------------------------------------------

    def is_closed(self, conn: Any) -> bool:
        """True once ``close()`` ran (probed by reading ``total_changes``)."""
        if conn is None:
            return False
        try:
            conn.total_changes  # noqa: B018 - the attribute access is the check
        except AttributeError:
            return False  # not a sqlite3 connection: nothing to tell
        except Exception:
            return True  # ProgrammingError: Cannot operate on a closed database.
        return False

    #: SQLite's own "not in autocommit" flag (SQL cannot change the module's
    #: isolation_level): one C-level read (see DriverAdapter.left_busy).
    left_busy = staticmethod(attrgetter("in_transaction"))  # type: ignore[assignment]

    def in_transaction(self, conn: Any) -> bool | None:
        """``conn.in_transaction`` (SQLite's own autocommit flag); None once closed."""
        if conn is None or self.is_closed(conn):
            return None
        value = getattr(conn, "in_transaction", None)
        return value if isinstance(value, bool) else None

    def autocommit(self, conn: Any) -> bool:
        """Python 3.12's ``autocommit`` when set to True/False, else ``isolation_level is None``.

        With 3.12's default ``autocommit=LEGACY_TRANSACTION_CONTROL`` (-1) and
        before 3.12, the old rule applies: ``isolation_level=None`` means the
        module never opens transactions implicitly.
        """
        value = getattr(conn, "autocommit", None)
        if isinstance(value, bool):
            return value
        return getattr(conn, "isolation_level", "") is None

    def reset_session(self, conn: Any) -> None:
        """Roll back: SQLite has no session reset.

        TEMP tables and PRAGMAs survive; they live in the connection itself,
        and only closing it clears them (``DETACH``/``DROP`` would need to know
        what the user made).
        """
        self.rollback(conn)

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """Only a closed connection is lost: a database file does not go away mid-session.

        Not lost: SQL errors, ``database is locked`` (the busy timeout ran out)
        and the check_same_thread error, which a new connection made in the
        right thread would hide rather than fix.
        """
        if conn is not None and self.is_closed(conn):
            return True
        return _CLOSED_MESSAGE in str(exc)

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True for the closed-database and wrong-thread refusals, raised before running."""
        message = str(exc)
        return _CLOSED_MESSAGE in message or _THREAD_MESSAGE in message
