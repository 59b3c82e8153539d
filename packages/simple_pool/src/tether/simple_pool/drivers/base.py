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

import functools
import inspect
import logging
import os
import re
import select
import threading
import urllib.parse
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
    #: Session setters that are another name of one (a deprecated alias), by that
    #: name: made again under the current one, so a replay neither repeats the
    #: driver's deprecation warning (from tether's code) nor keeps two entries for
    #: one setting.
    setter_aliases: ClassVar[dict[str, str]] = {}
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
    #: True for an embedded database (sqlite3): a connect does no network I/O, so
    #: it needs no deadline of its own and runs in the caller's thread (sqlite3's
    #: connections refuse, by default, to be used by another thread than their maker's).
    local: ClassVar[bool] = False
    #: Statement used by :meth:`ping`.
    ping_sql: ClassVar[str] = "SELECT 1"
    #: True when SQL can switch the driver's autocommit mode (MySQL's ``SET autocommit = 1``
    #: changes what PyMySQL's ``get_autocommit()`` reports): then a statement run outside
    #: autocommit mode is followed by a read of the mode, so a switch made in SQL is given
    #: back at checkin. False where autocommit is the driver's own client-side state
    #: (psycopg, pgdb, sqlite3). The generic adapter cannot know, so it reads.
    sql_sets_autocommit: ClassVar[bool] = True
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

    def open(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`connect`, with a refused login raised as ``AuthenticationError``.

        Every tether layer opens its connections through here, so a wrong
        password or database name is reported the same way everywhere: at
        once, as a configuration error naming the user, host and database
        (never the password), with the driver's error as ``__cause__``;
        never as "database unreachable", and never retried. Arguments the
        driver cannot parse (:meth:`is_configuration_error`), or a connect
        error that quotes the password, raise ``ConfigurationError`` the same
        way; its ``__cause__`` is None when the driver's text had the password.
        """
        try:
            conn = self.connect(*args, **kwargs)
        except Exception as exc:
            from ..errors import AuthenticationError, ConfigurationError

            creator = self.creator
            if isinstance(creator, functools.partial):
                # Django's and others' creators carry the connect arguments themselves.
                args, kwargs = (*creator.args, *args), {**creator.keywords, **kwargs}
            text = str(exc).strip()
            for secret in _secrets(args, kwargs):
                text = text.replace(secret, "***")
            quoted = text != str(exc).strip()
            target = describe_target(args, kwargs)
            error: ConfigurationError
            if self.is_auth_failure(exc):
                error = AuthenticationError(
                    f"{self.name}: the database refused the login of {target}"
                    f" ({type(exc).__name__}: {text}); check the user, password and database name"
                )
            elif quoted or self.is_configuration_error(exc):
                text = _mask_quoted(text, args, kwargs)
                quoted = quoted or text != str(exc).strip()
                error = ConfigurationError(
                    f"{self.name}: the connect arguments for {target} cannot work"
                    f" ({type(exc).__name__}: {text}); retrying cannot help"
                )
            else:
                raise
            if quoted:
                raise error from None  # the driver's text had the password: not kept
            raise error from exc
        self.opened(conn)
        return conn

    def opened(self, conn: Any) -> None:
        """Note what a new connection's state says about it, as it was opened. No round trip.

        Called by :meth:`open` (and by :func:`~tether.simple_pool.drivers.refine`
        for the first connection of a creator it refined). The PostgreSQL
        adapters remember whether the server accepted writes then (see
        :meth:`ping`); the generic adapter notes nothing. Never raises.
        """

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

    def is_gone(self, conn: Any) -> bool:
        """:meth:`is_closed` or :meth:`peer_closed`, in one call. No round trip.

        What tether.steady asks before a statement that follows a pause: an
        adapter whose two answers read the same driver state overrides it to
        read it once.
        """
        return self.is_closed(conn) or self.peer_closed(conn)

    def driver_ping(
        self, conn_class: type, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, tuple[Any, ...], dict[str, Any]]:
        """A call of the driver's own ``conn.ping(*args, **kwargs)``, taken apart.

        Returns whether that call lets the driver reconnect by itself, and
        the arguments of the same call made so that it never does. A driver
        that reconnects behind tether's back opens a session tether never
        prepared (no ``setsession``, ``on_connect`` or replayed settings),
        and inside a transaction one that silently lacks the work done so
        far; so a steady connection turns such a request into its own reopen
        rule and calls the driver's ping without it. ``conn_class``: the
        class of the driver's connections (a default can depend on the
        driver's version). The generic adapter knows no ping that
        reconnects: ``(False, args, kwargs)``, the call unchanged.
        """
        return False, args, kwargs

    def ping(self, conn: Any, timeout: float | None = None) -> bool:
        """A real liveness check (one round trip). False when the connection is dead.

        ``timeout``: the most seconds the check may take (None: the driver's
        own limits). A check that runs out of time answers False, and the
        caller must close the connection: the answer may still be on its way.
        The generic adapter cannot bound a round trip and ignores it; the
        driver adapters override this to honour it.
        """
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

    def left_busy(self, conn: Any) -> object:
        """After a statement answered in autocommit mode: whether the session left that state.

        True (any true value) when the statement opened a transaction (an
        explicit ``BEGIN``) or ended autocommit mode (MySQL's ``SET autocommit
        = 0``); false while the session is idle in autocommit mode. tether.steady
        asks it after every autocommit statement, so it is on the hot path:
        adapters whose driver keeps the answer in one field override it with a
        C-level reader (``staticmethod(operator.attrgetter(...))``), measured at
        a tenth of the two Python-level reads this default makes.
        """
        return not self.autocommit(conn) or self.in_transaction(conn) is not False

    def in_transaction(self, conn: Any) -> bool | None:
        """Whether the driver's own state says a transaction is open, with no round trip.

        None means the driver cannot say; callers then assume "maybe" and roll back.
        """
        value = getattr(conn, "in_transaction", None)
        return value if isinstance(value, bool) else None

    def begin(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        """Start an explicit transaction, also in autocommit mode.

        The driver's own ``begin()`` where it has one (PyMySQL). Otherwise a
        DB-API driver starts transactions by itself before the first statement
        -- unless it is in autocommit mode, where ``begin()`` must send
        ``BEGIN`` or the "transaction" would commit statement by statement
        (psycopg, sqlite3 with ``isolation_level=None``).
        """
        begin = getattr(conn, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)
        elif self.autocommit(conn):
            self.execute(conn, "BEGIN")

    def commit(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        return conn.commit(*args, **kwargs)

    def rollback(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        return conn.rollback(*args, **kwargs)

    def rollback_within(self, conn: Any, timeout: float) -> bool | None:
        """Roll back, waiting for the server at most ``timeout`` seconds.

        True: rolled back. False: the rollback did not finish in time (or
        failed); the caller must close the connection, whose answer may still
        be on its way. None: this adapter cannot bound a rollback (nothing was
        sent); the caller uses :meth:`rollback`. The generic adapter says None.
        """
        return None

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """:meth:`reset_session` on an idle ``conn``, waiting for the server at most ``timeout`` s.

        True: reset. False: the reset did not finish in time (or failed); the
        caller must close the connection, whose answer may still be on its
        way. None: this adapter cannot bound it, or a transaction is open
        (nothing was sent); the caller uses :meth:`reset_session`. The generic
        adapter says None.
        """
        return None

    #: Driver cursor methods that return an object which sends statements later
    #: (psycopg's ``copy()``, ``stream()``): tether.steady makes them after the reopen
    #: rule's checks, so that a session the server ended is replaced first.
    cursor_session_methods: ClassVar[frozenset[str]] = frozenset()
    #: The same for the connection's own methods (psycopg's ``pipeline()``, ``transaction()``).
    connection_session_methods: ClassVar[frozenset[str]] = frozenset()
    #: Result attributes (of :attr:`cursor_result_attributes`) a native cursor
    #: (:meth:`native_cursor_class`) leaves unguarded after its checkout: those the
    #: driver's own code reads and writes on every statement.
    native_cursor_unguarded: ClassVar[frozenset[str]] = frozenset()

    def native_cursor_class(self, conn: Any) -> type | None:
        """The cursor class a plain ``cursor()`` on ``conn`` makes, if tether may subclass it.

        A class ``cls`` returned here promises: ``cls(conn)`` makes the cursor
        ``conn.cursor()`` would (no statement sent), the class can be
        subclassed with slots, and :meth:`rebind_cursor` can move a cursor of
        it to another connection of the same driver. tether.steady then makes
        its cursors as such a subclass (``tether.steady.native``): one object
        per cursor, not a wrapper around the driver's (measured: ~6,000
        instructions per request less on psycopg). None (the default): tether
        wraps the driver's cursor.
        """
        return None

    def rebind_cursor(self, cursor: Any, conn: Any) -> None:
        """Move ``cursor`` (made from :meth:`native_cursor_class`'s class) to ``conn``.

        After a reopen, a cursor made on the lost connection runs its next
        statement on the new one, keeping what the borrower set on it. Only
        asked where :meth:`native_cursor_class` answered a class.
        """
        raise NotImplementedError(f"{self.name}: no native cursors")

    def closes_on_server(self, cursor: Any) -> bool:
        """Whether the driver cursor ``cursor``'s ``close()`` sends a statement to the server.

        A server-side cursor's does (psycopg's ``CLOSE "name"``): once its
        checkout has ended a steady cursor must not close it, as the session
        is the next borrower's (see ``tether.steady.SteadyDBServerCursor``).
        Asked once per cursor made with arguments, never for a plain ``cursor()``.
        The generic adapter says False: a DB-API cursor's ``close()`` is the client's.
        """
        return False

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

    # -- configuration a borrower can add -------------------------------------------------

    def configuration(self, raw: Any) -> Any:
        """What configures the driver connection ``raw`` beyond :meth:`settings`: a snapshot.

        Type adapters, notice handlers, encoders: state a borrower adds to
        the driver connection object (psycopg's ``adapters.register_dumper()``,
        ``add_notice_handler()``; PyMySQL's ``encoders``) that would otherwise
        reach the next borrower, changing the values it stores or showing it
        what that one does (found by an outside attack). Taken once per driver
        connection, after ``setsession`` and ``on_connect``: what the pool
        configured. None (the generic adapter): nothing to keep.
        """
        return None

    def restore_configuration(self, raw: Any, saved: Any) -> bool:
        """Put back the :meth:`configuration` ``saved`` where ``raw``'s differs; True if it did.

        Called at checkin, only when something reached the driver connection
        past tether; no round trip (the configuration lives in the client).
        """
        return False

    #: Driver connection methods whose effect can neither be read nor undone
    #: (sqlite3's ``set_trace_callback()``: nothing tells which callback is
    #: installed, so nothing can put back the pool's): a checkout that reached
    #: one ends with the driver connection closed, and the next borrower gets a
    #: new one. Cheaper choices do not exist: undone to "none", the callback
    #: ``on_connect`` installed would be lost for every later borrower.
    unrestorable: ClassVar[frozenset[str]] = frozenset()

    # -- errors -----------------------------------------------------------------------------

    def is_connection_lost(self, conn: Any, exc: BaseException) -> bool:
        """True when ``exc``, raised by an operation on ``conn``, means the connection is gone.

        False means the connection is still usable (bad SQL, a constraint, a
        cancelled query): the error belongs to the caller and no reopen helps.
        """
        return self.is_closed(conn)

    def is_auth_failure(self, exc: BaseException) -> bool:
        """True when ``exc``, raised by :meth:`connect`, means the login itself was refused.

        A wrong password, an unknown user or database, a user not allowed to
        log in: configuration errors that no retry can fix. The generic
        adapter asks the adapter of the driver the exception comes from (a
        user's own connect function still raises its driver's errors).
        """
        return self._ask_drivers_adapter("is_auth_failure", exc)

    def is_configuration_error(self, exc: BaseException) -> bool:
        """True when ``exc``, raised by :meth:`connect`, says the arguments cannot work.

        Not a refused login (:meth:`is_auth_failure`) but arguments the driver
        refused before it reached a server: libpq's parse errors of a conninfo
        string or URL. The generic adapter asks the driver's adapter, as
        :meth:`is_auth_failure` does.
        """
        return self._ask_drivers_adapter("is_configuration_error", exc)

    def _ask_drivers_adapter(self, method: str, exc: BaseException) -> bool:
        """The answer of the adapter of the driver ``exc`` comes from to ``method(exc)``.

        For the generic adapter (a user's own connect function still raises its
        driver's errors); False when no adapter of that driver answers it.
        """
        from . import _REGISTRY

        adapter_class = _REGISTRY.get(top_module_name(type(exc)))
        if adapter_class is None or getattr(adapter_class, method) is getattr(
            DriverAdapter, method
        ):
            return False
        return bool(getattr(adapter_class, method)(self, exc))

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


#: Connect keywords that name whom a connection is for (never the password).
_TARGET_KEYS = (("user", "user"), ("username", "user"), ("host", "host"), ("port", "port"),
                ("dbname", "database"), ("database", "database"), ("db", "database"))  # fmt: skip
_PASSWORD_KEYS = ("password", "passwd", "pass")
_CONNINFO_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


#: Keywords that may hold a whole conninfo string or URL (pgdb takes it as ``database``).
_CONNINFO_KEYS = ("dsn", "conninfo", "dbname", "database")


def describe_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Whom connect arguments log in as, where: ``user 'u' at host h:p, database 'd'``.

    Read from the keywords and from a conninfo string or URL given as the
    first argument (or as ``dbname``/``dsn``/``conninfo``). Never the password.
    """
    found: dict[str, str] = {}
    texts = [a for a in args[:1] if isinstance(a, str)]
    texts += [kwargs[k] for k in _CONNINFO_KEYS if isinstance(kwargs.get(k), str)]
    for text in texts:
        if "://" in text:
            for key, part in _url_target(text).items():
                if part:
                    found.setdefault(key, urllib.parse.unquote(part))
        elif "=" in text:
            for key, value in _CONNINFO_PAIR.findall(text):
                for name, role in _TARGET_KEYS:
                    if key == name and value:
                        found.setdefault(role, value.strip("'"))
    for name, role in _TARGET_KEYS:
        value = kwargs.get(name)
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if text and not (name in _CONNINFO_KEYS and ("=" in text or "://" in text)):  # read above
            found[role] = text
    if not found and not args and not kwargs:
        # A lambda or a bound method that takes no arguments (SQLAlchemy's creator):
        # whom it logs in as is inside it, and "(default)" would be wrong (eighth
        # outside attack). The driver's own message, which follows, names the user.
        return "the user, host and database its creator function connects with"
    parts = [f"user {found.get('user', '(default)')!r}"]
    host = found.get("host", "(default)")
    parts.append(f"at host {host}:{found['port']}" if "port" in found else f"at host {host}")
    parts.append(f"database {found.get('database', '(default)')!r}")
    return " ".join(parts[:2]) + ", " + parts[2]


_QUOTED = re.compile(r'"[^"]*"')


def _mask_quoted(text: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``text`` with every double-quoted token masked, but option names the caller gave.

    libpq quotes the token it could not parse, and in a malformed conninfo
    (``password=my secret``, unquoted) that is part of the password, which
    :func:`_secrets` cannot find (measured: ``missing "=" after "secret" in
    connection info string``, fifth outside attack). Names of keyword
    arguments and of ``key=`` pairs stay readable (``invalid connection option
    "bogus"``).
    """
    names = {str(key) for key in kwargs}
    for value in [a for a in args[:1] if isinstance(a, str)] + [
        v for k, v in kwargs.items() if k in _CONNINFO_KEYS and isinstance(v, str)
    ]:
        names.update(key for key, _ in _CONNINFO_PAIR.findall(value))
    names -= set(_PASSWORD_KEYS)

    def mask(match: re.Match[str]) -> str:
        token = match.group(0)[1:-1]
        keep = token in names or not any(c.isalnum() for c in token)  # "=" and such
        return match.group(0) if keep else '"***"'

    return _QUOTED.sub(mask, text)


#: A URI's ``scheme://user:password@`` as libpq reads it: the user info ends at
#: the first ``@`` before any ``/`` (``#`` and ``?`` may be part of a password,
#: which urllib would take for a fragment or a query).
_URL_USERINFO = re.compile(r"^[A-Za-z][\w+.-]*://(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@")


def _url_target(text: str) -> dict[str, str]:
    """User, host, port and database of a URI, read as libpq reads it; never raises.

    Not ``urllib.parse.urlsplit(...).port``: it raises on what libpq accepts
    (several hosts ``h1:p1,h2:p2``, a password with ``#``), and that error,
    which quoted the password, replaced the driver's (sixth outside attack).
    """
    userinfo = _URL_USERINFO.match(text)
    rest = text[userinfo.end() :] if userinfo else text.split("://", 1)[1]
    hostport, _, tail = rest.partition("/")
    database = re.split(r"[?#]", tail, maxsplit=1)[0]
    host, port = hostport, ""
    first = hostport.split(",", 1)[0]
    if first.startswith("["):
        host, _, after = first[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    elif ":" in first:
        host, port = first.rsplit(":", 1)
    else:
        host = first
    if "," in hostport:
        host = hostport  # several hosts: named as given (a password is never here)
        port = ""
    found = {
        "user": userinfo.group("user") if userinfo else "",
        "host": host,
        "port": port if port.isdigit() else "",
        "database": database,
    }
    for key, value in _url_query(text):  # libpq reads these too: ?user=u&dbname=d
        role = dict(_TARGET_KEYS).get(key)
        if role and value and not found.get(role):
            found[role] = value
    return found


def _url_query(text: str) -> list[tuple[str, str]]:
    """A URI's query parameters, decoded (``urllib.parse.parse_qsl`` never raises on them)."""
    query = text.partition("?")[2].partition("#")[0] if "?" in text else ""
    return urllib.parse.parse_qsl(query, keep_blank_values=True)


def _secrets(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """The passwords in connect arguments, to keep them out of error messages."""
    found = [str(kwargs[k]) for k in _PASSWORD_KEYS if kwargs.get(k)]
    for text in [a for a in args[:1] if isinstance(a, str)] + [
        v for k, v in kwargs.items() if k in _CONNINFO_KEYS and isinstance(v, str)
    ]:
        if "://" in text:
            password = _URL_USERINFO.match(text)
            if password and password.group("password"):
                raw = password.group("password")
                found += [raw, urllib.parse.unquote(raw), urllib.parse.quote(raw, safe="")]
            found += [value for key, value in _url_query(text) if key in _PASSWORD_KEYS]
            continue  # a URI's query is not a conninfo string: its pairs are read above
        for key, value in _CONNINFO_PAIR.findall(text):
            if key in _PASSWORD_KEYS and value:
                found.append(value.strip("'"))
    return [secret for secret in found if len(secret) >= 1]


def socket_readable(fd: int) -> bool:
    """Whether ``fd`` has data or EOF waiting, without blocking (a zero-timeout poll).

    On an idle database connection nothing should be waiting: data means the
    server said something on its own (usually a final error before closing),
    EOF means it closed. Either way, adapters look closer before trusting it.
    """
    # poll(), not select(): select() fails on descriptors above 1023. One poll
    # object per descriptor and thread, made once: steady asks this before a
    # statement that follows a pause (its hot path with gaps), and making and
    # registering a new poll object each time was most of the cost (callgrind).
    # A poll object only holds descriptor numbers, so it stays right when the
    # descriptor is closed and its number reused; per thread, so two threads
    # never poll with the same object at once (which poll() refuses).
    try:
        pollers = _pollers.by_fd
    except AttributeError:
        pollers = _pollers.by_fd = {}
    poll = pollers.get(fd)
    if poll is None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        poll = pollers[fd] = poller.poll
    return bool(poll(0))  # POLLHUP, POLLERR and POLLNVAL are always reported


#: Per thread: ``by_fd``, a bound ``poll`` of a poll object registered for that descriptor.
_pollers = threading.local()


def wait_readable(fd: int, seconds: float) -> bool:
    """Wait at most ``seconds`` for ``fd`` to have data or EOF; False when time ran out."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(max(0, int(seconds * 1000 + 0.999))))


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
