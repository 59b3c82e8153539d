"""The driver adapter: everything tether needs to know about one database driver.

Database drivers agree on little beyond ``connect()``, ``cursor()``,
``commit()`` and ``rollback()``. A pool needs more: it must tell "the
connection is gone" from "your SQL was wrong", know whether a transaction is
open without asking the server, check liveness cheaply, and close a broken
connection without raising. Every driver answers those questions differently
(PyGreSQL reports a lost connection as a ``ProgrammingError``; psycopg's
``OperationalError`` also covers failures that leave the connection usable),
so the answers live here, one class per driver, and the pool logic in every
tether layer is written once against this interface.

An adapter is bound to a *creator*: a DB-API 2 module (``psycopg``), a
connect function (``psycopg.connect``, ``functools.partial(...)``, your own
function), or for PyGreSQL's classic API the ``pg`` module. It holds no
connection itself; every method takes the raw driver connection it acts on.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

log = logging.getLogger("tether.drivers")

#: Connections inherited across fork() and abandoned: kept referenced, never finalized.
_ABANDONED: list[Any] = []


class DriverAdapter:
    """The generic adapter, correct for any DB-API 2 driver, and the base of the others.

    The generic answers are conservative: without knowledge of the driver,
    no error is taken for a lost connection unless the connection itself
    says it is closed, a transaction is assumed open whenever one may be, and
    liveness is checked with a real round trip.
    """

    #: Short name used in logs, ``repr()`` and ``driver=`` arguments.
    name: ClassVar[str] = "dbapi"
    #: Module names (``creator.__name__``, a function's ``__module__`` prefix) this adapter serves.
    modules: ClassVar[tuple[str, ...]] = ()
    #: True for drivers with a DB-API 2 interface; False for PyGreSQL's classic ``pg.DB``.
    dbapi2: ClassVar[bool] = True
    #: Driver methods that change the session (``set_autocommit(True)``...): a steady
    #: connection remembers their calls and makes them again on a reopened connection.
    session_setters: ClassVar[frozenset[str]] = frozenset()
    #: Cursor attributes that only describe results (DB-API 2's, plus the driver's
    #: own): reading them through a steady cursor cannot change the session.
    cursor_result_attributes: ClassVar[frozenset[str]] = frozenset(
        {"description", "rowcount", "lastrowid", "arraysize", "rownumber", "messages",
         "errorhandler"}
    )  # fmt: skip
    #: Plain attributes of the connection object that :meth:`settings` snapshots and
    #: :meth:`restore_settings` sets back (only those the connection has; a method
    #: of the same name, such as PyMySQL's ``autocommit()``, is left out).
    setting_attributes: ClassVar[tuple[str, ...]] = ("autocommit",)
    #: Statement used by :meth:`ping`.
    ping_sql: ClassVar[str] = "SELECT 1"
    #: True when :func:`~tether.simple_pool.drivers.adapter_for` fell back to this generic
    #: adapter because it did not recognise the creator (a user's own connect function):
    #: :func:`~tether.simple_pool.drivers.refine` may then swap in the adapter of the
    #: driver the first connection turns out to belong to. An adapter chosen by name, class
    #: or from a known creator is never replaced.
    refinable: bool = False

    def __init__(self, creator: ModuleType | Callable[..., Any], module: ModuleType | None = None):
        if isinstance(creator, ModuleType):
            connect = getattr(creator, "connect", None)
            if not callable(connect):
                raise TypeError(
                    f"creator: module {creator.__name__!r} has no connect() function;"
                    " pass a DB-API 2 module or a function that returns a connection"
                )
            self.module: ModuleType | None = creator
            self._connect: Callable[..., Any] = connect
        elif callable(creator):
            self.module = module if module is not None else _module_of(creator)
            self._connect = creator
        else:
            raise TypeError(
                "creator: expected a DB-API 2 module or a callable returning a connection,"
                f" got {type(creator).__name__}"
            )
        self.creator = creator

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- what the module says about itself ------------------------------------------------

    @property
    def threadsafety(self) -> int | None:
        """The module's DB-API ``threadsafety`` (None when it cannot be determined)."""
        if self.module is None:
            return None
        value = getattr(self.module, "threadsafety", None)
        return value if isinstance(value, int) else None

    @property
    def dbapi(self) -> ModuleType | None:
        """The DB-API 2 module behind this creator, if known."""
        return self.module

    def error_class(self, name: str) -> type[BaseException] | None:
        """The module's DB-API exception class called ``name`` (``OperationalError``...)."""
        cls = getattr(self.module, name, None) if self.module is not None else None
        return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None

    @property
    def base_error(self) -> type[BaseException]:
        """The root of the driver's exception tree (DB-API ``Error``)."""
        return self.error_class("Error") or Exception

    @property
    def creator_is_driver(self) -> bool:
        """True when the creator is this driver's own module or connect function.

        Only then may the adapter add driver keyword arguments to a connect
        (``connect_timeout``, ``check_same_thread``...): a user's own connect
        function (``lambda: psycopg.connect(dsn)``) accepts none of them. A
        ``functools.partial`` of the driver's connect counts as the driver's.
        """
        return bool(self.modules) and top_module_name(self.creator) in self.modules

    # -- connections ----------------------------------------------------------------------

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Open a new raw connection with the user's arguments."""
        return self._connect(*args, **kwargs)

    def close(self, conn: Any) -> None:
        """Close ``conn``, never raising: closing a dead connection is not an error."""
        try:
            conn.close()
        except Exception as exc:  # the connection may already be gone
            log.debug("ignoring error while closing %s connection: %r", self.name, exc)

    def is_closed(self, conn: Any) -> bool:
        """True when the driver already knows ``conn`` is unusable. No round trip."""
        closed = getattr(conn, "closed", False)
        return bool(closed) if isinstance(closed, (bool, int)) else False

    def socket_fd(self, conn: Any) -> int | None:
        """The descriptor of the socket ``conn`` talks to the server on (None: none known)."""
        return None

    def abandon(self, conn: Any) -> None:
        """Let go of a connection inherited from the parent process, without closing it.

        After ``fork()`` the child's copy of a connection shares the parent's
        socket. Closing it, even by letting it be garbage-collected, sends
        the protocol's goodbye (PostgreSQL's Terminate, MySQL's COM_QUIT) on
        that socket and ends the *parent's* session. So the child points its
        own copy of the descriptor at /dev/null (the parent's is untouched)
        and keeps the object referenced until it exits, so no finalizer runs.
        """
        fd = self.socket_fd(conn)
        if fd is not None:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, fd)
                finally:
                    os.close(null)
            except OSError:
                pass
        _ABANDONED.append(conn)

    def peer_closed(self, conn: Any) -> bool:
        """True when the server has ended the session, seen on the socket. No round trip.

        A server that restarts or kills a session closes its socket (after a
        final error message, for PostgreSQL). Polling the socket with a zero
        timeout sees that before anything is sent, so a statement can go to
        a new connection instead of failing on the old one. The generic
        adapter cannot read the driver's socket and says False.
        """
        return False

    def ping(self, conn: Any) -> bool:
        """A real liveness check (one round trip). False when the connection is dead."""
        if self.is_closed(conn):
            return False
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self.ping_sql)
                cursor.fetchall()
            finally:
                cursor.close()
        except Exception:
            return False
        return True

    # -- transactions -----------------------------------------------------------------------

    def autocommit(self, conn: Any) -> bool:
        """True when every statement on ``conn`` commits by itself."""
        value = getattr(conn, "autocommit", False)
        if callable(value):  # PyMySQL's autocommit is a method; get_autocommit() is the getter
            getter = getattr(conn, "get_autocommit", None)
            return bool(getter()) if callable(getter) else False
        return bool(value)

    def in_transaction(self, conn: Any) -> bool | None:
        """Whether the driver's own state says a transaction is open, with no round trip.

        None means the driver cannot say; callers then assume "maybe" and roll back.
        """
        value = getattr(conn, "in_transaction", None)
        return value if isinstance(value, bool) else None

    def begin(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        """Start an explicit transaction (DB-API drivers start them implicitly)."""
        begin = getattr(conn, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def commit(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        return conn.commit(*args, **kwargs)

    def rollback(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        return conn.rollback(*args, **kwargs)

    def reset_session(self, conn: Any) -> None:
        """Undo everything a user did to the session (settings, temp tables, locks...).

        The generic adapter can only roll back; server-specific adapters do more.
        """
        self.rollback(conn)

    # -- settings a borrower can change ---------------------------------------------------

    def settings(self, raw: Any) -> dict[str, Any]:
        """The driver-level settings a borrower can change on the connection object itself
        (not with SQL), read without a round trip: a snapshot to restore later.

        The generic adapter knows one: ``autocommit``, when the connection has
        it as a plain attribute (DB-API 2's common extension).
        """
        return read_attributes(raw, self.setting_attributes)

    def restore_settings(self, raw: Any, saved: dict[str, Any]) -> bool:
        """Set back every setting in `saved` whose current value differs. Called outside a
        transaction. Returns True if anything had to be changed. Raises the driver's error when
        it cannot (the caller then discards the connection).

        Only values that differ are set, so a connection nobody changed costs
        no round trip (and no driver call at all).
        """
        return restore_attributes(raw, saved)

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """True when ``exc``, raised by an operation on ``conn``, means the connection is gone.

        False means the connection is still usable (bad SQL, a constraint, a
        cancelled query): the error belongs to the caller and no reopen helps.
        """
        return self.is_closed(conn)

    def never_sent(self, conn: Any, exc: BaseException) -> bool:
        """True when ``exc`` proves the failed statement never reached the server.

        Only then may a statement be retried in autocommit mode, where running
        it twice could apply it twice.
        """
        return False

    def execute(self, conn: Any, sql: str) -> None:
        """Run one statement with no parameters and discard any result (used for setsession)."""
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    def set_timeouts(self, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Return connect ``kwargs`` with the driver's connect timeout limited to ``seconds``.

        Used to turn what is left of a checkout deadline into driver timeouts,
        so a host that swallows packets cannot hang a connect. Pass the result
        to this adapter's :meth:`connect`, not to the creator directly: some
        drivers take the timeout in another form (PyGreSQL's classic ``pg.DB``
        only in its conninfo string), and the adapter translates it there. A
        smaller timeout the user already set is kept. Drivers count in whole
        seconds or have a minimum (libpq: 2 s), so the real limit may exceed
        ``seconds`` slightly. The generic adapter knows no timeout parameter,
        and an adapter whose creator is not the driver's own connect function
        (see :attr:`creator_is_driver`) cannot pass one: both return ``kwargs``
        unchanged.
        """
        return kwargs


_MISSING: Any = object()


def read_attributes(raw: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes ``names`` of ``raw`` that it has as values (not as bound methods)."""
    saved: dict[str, Any] = {}
    for name in names:
        value = getattr(raw, name, _MISSING)
        if value is _MISSING or inspect.ismethod(value):
            continue  # PyMySQL's autocommit is a method: not a plain attribute
        saved[name] = value
    return saved


def restore_attributes(raw: Any, saved: dict[str, Any]) -> bool:
    """``setattr`` each saved attribute whose current value differs; True if any did.

    Compared with ``!=``, not ``is``: a getter may return an equal new object
    each time (a bound method, an enum member from a property).
    """
    changed = False
    for name, value in saved.items():
        if getattr(raw, name, _MISSING) != value:
            setattr(raw, name, value)
            changed = True
    return changed


def socket_readable(fd: int) -> bool:
    """Whether ``fd`` has data or EOF waiting, without blocking (a zero-timeout poll).

    On an idle database connection nothing should be waiting: data means the
    server said something on its own (usually a final error before closing),
    EOF means it closed. Either way, adapters look closer before trusting it.
    """
    import select

    # poll(), not select(): select() fails on descriptors above 1023.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))  # POLLHUP, POLLERR and POLLNVAL are always reported


def top_module_name(obj: object) -> str:
    """The top-level module name ``obj`` belongs to, or ``""``.

    A module gives its own top-level name (``sqlite3.dbapi2`` -> ``sqlite3``);
    a function or class the module it was defined in (``psycopg.connect`` ->
    ``psycopg``, ``pg.DB`` -> ``pg``); a ``functools.partial`` that of the
    wrapped function. C accelerator modules lose their leading underscore
    (``sqlite3.connect`` is defined in ``_sqlite3``).
    """
    import functools

    while isinstance(obj, functools.partial):  # its __module__ is "functools"
        obj = obj.func
    if isinstance(obj, ModuleType):
        name: object = obj.__name__
    else:
        name = getattr(obj, "__module__", None)
        if not isinstance(name, str):  # other wrappers that keep the function as .func
            inner = getattr(obj, "func", None)
            name = getattr(inner, "__module__", None) if inner is not None else None
    if not isinstance(name, str):
        return ""
    return name.split(".")[0].lstrip("_")


def _module_of(function: Callable[..., Any]) -> ModuleType | None:
    """The top-level module a connect function belongs to (``psycopg`` for psycopg.connect)."""
    import sys

    top = top_module_name(function)
    return sys.modules.get(top) if top else None
