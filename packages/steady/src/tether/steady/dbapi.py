"""Steady DB-API 2 connections: DBUtils' ``steady_db``, with tether's reopen rule.

``connect(creator, ...)`` returns a :class:`SteadyDBConnection`, which behaves
like the driver's connection: every attribute tether does not deliberately
intercept (``cursor``, ``commit``, ``rollback``, ``close``, ``begin``, ``cancel``,
``ping``) is the driver's own, so driver features (psycopg's ``info``,
``adapters``, ``add_notice_handler``...) stay reachable and frameworks that
use them keep working. Its cursors re-run an ``execute`` on a new connection
when the old one was lost and doing so is safe (see :mod:`tether.steady.core`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from time import monotonic
from types import MethodType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, Union

from tether.simple_pool import Uncopyable
from tether.simple_pool.drivers import DriverAdapter
from tether.simple_pool.lending import METHODS

from . import core as _core
from .core import PING_ON_CURSOR, Failures, SetSession, SteadyBase
from .errors import InvalidCursorError, SteadyDBError
from .forwarding import forwarding_class, set_class
from .lease import _stale, leased_bound, leased_method, lend
from .native import NativeCursor, native_class
from .options import SteadyOptions

__all__ = ["SteadyCursor", "SteadyDBConnection", "SteadyDBCursor", "connect"]

_C = TypeVar("_C", bound="SteadyDBConnection")


def connect(
    creator: ModuleType | Callable[..., Any],
    maxusage: int | None = None,
    setsession: SetSession | None = None,
    failures: Failures | None = None,
    ping: Any = 1,
    closeable: bool = True,
    isfatal: Callable[[BaseException], bool] | None = None,
    *args: Any,
    driver: str | DriverAdapter | type[DriverAdapter] | None = None,
    max_lifetime: float | None = None,
    on_connect: Callable[[Any], object] | None = None,
    logger: logging.Logger | None = None,
    **kwargs: Any,
) -> SteadyDBConnection:
    """A steady DB-API 2 connection (DBUtils' signature, positional order included).

    ``creator``: a DB-API 2 module or a function returning a connection.
    ``maxusage``: statements before the connection is transparently reopened
    (0 or None: no limit). ``setsession``: SQL statements run on every new
    underlying connection. ``failures``: exception classes that mean "connection
    lost" (default: the driver adapter decides, which tells a lost connection
    from a failed statement). ``ping``: when and how to check liveness (see
    :mod:`tether.steady.ping`). ``closeable``: whether ``close()`` really closes.
    ``isfatal``: a callable deciding whether a matching exception really means
    the connection is lost. ``args``, ``kwargs``: for the creator.

    Keyword-only extras: ``driver`` (the adapter, by name or instance),
    ``max_lifetime`` (seconds before the connection is reopened, between
    transactions), ``on_connect`` (called with every new driver connection,
    after ``setsession``), ``logger`` (where reopens are logged).
    """
    return SteadyDBConnection(
        creator,
        maxusage,
        setsession,
        failures,
        ping,
        closeable,
        isfatal,
        *args,
        driver=driver,
        max_lifetime=max_lifetime,
        on_connect=on_connect,
        logger=logger,
        **kwargs,
    )


class SteadyDBConnection(SteadyBase):
    """A DB-API 2 connection that reopens itself when that is safe."""

    __slots__ = ()  # its state is SteadyBase's slots (see there)

    _cursor_class: type[SteadyDBCursor]

    def __init__(
        self,
        creator: ModuleType | Callable[..., Any],
        maxusage: int | None = None,
        setsession: SetSession | None = None,
        failures: Failures | None = None,
        ping: Any = 1,
        closeable: bool = True,
        isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        options = SteadyOptions(
            maxusage=maxusage,
            setsession=setsession,
            failures=failures,
            ping=ping,
            closeable=closeable,
            isfatal=isfatal,
            max_lifetime=max_lifetime,
            on_connect=on_connect,
            logger=logger,
        )
        super().__init__(creator, options, args, kwargs, driver=driver)
        # The class of this connection's cursors: SteadyDBCursor's forwarding
        # subclass for the driver's cursor class, once the first cursor is made.
        self._cursor_class = SteadyDBCursor
        # From now on the driver's attributes pass through a forwarding
        # subclass's properties (see forwarding.py: no __getattr__, measured).
        cls = forwarding_class(type(self), self._raw, vars(self), DBAPI_CONNECTION_ATTRIBUTES)
        set_class(self, cls)

    @classmethod
    def from_options(
        cls: type[_C],
        creator: ModuleType | Callable[..., Any],
        options: SteadyOptions,
        /,
        *args: Any,
        driver: str | DriverAdapter | type[DriverAdapter] | None = None,
        **kwargs: Any,
    ) -> _C:
        """A steady connection with the settings of ``options``; ``args``/``kwargs`` to connect.

        Layer API: how a pool makes its connections from its one options object.
        """
        if not isinstance(options, SteadyOptions):
            raise TypeError(f"options: expected SteadyOptions, got {type(options).__name__}")
        o = options
        return cls(
            creator,
            o.maxusage,
            o.setsession,
            o.failures,
            o.ping,
            o.closeable,
            o.isfatal,
            *args,
            driver=driver,
            max_lifetime=o.max_lifetime,
            on_connect=o.on_connect,
            logger=o.logger,
            **kwargs,
        )

    def cursor(self, *args: Any, **kwargs: Any) -> SteadyCursor:
        """A steady cursor; ``args``/``kwargs`` go to the driver's ``cursor()``.

        A plain ``cursor()`` is, where the driver allows it, a subclass of the
        driver's cursor class that keeps the rule itself (:mod:`tether.steady.native`);
        otherwise, and with arguments, a :class:`SteadyDBCursor` around the driver's.
        """
        return self.cursor_for(None, args, kwargs)

    def cursor_for(
        self, holder: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> SteadyCursor:
        """Layer API: :meth:`cursor` for a pool's proxy ``holder`` (see ``SteadyDBCursor.held_by``).

        One call instead of two on every request through a pool.
        """
        state = self._state
        native = state.native
        if native and not args and not kwargs:
            raw_con = self._raw
            if raw_con is not None and not state.lost:
                # The hot path: one object, the driver's own cursor (making it
                # sends nothing; the statements that follow are checked).
                # (tether's slots first: the driver's __init__ sets attributes tether guards.)
                cursor = native.__new__(native)
                cursor._steady_con = self
                cursor._steady_state = state
                cursor._steady_generation = state.generation
                cursor._steady_lease = state.lease
                cursor._steady_holder = holder
                cursor._steady_inside = True  # the driver's own __init__ (see NativeCursor)
                cursor.__init__(raw_con)
                cursor._steady_inside = False
                return cursor  # type: ignore[no-any-return]
        elif native is None and self._raw is not None:
            state.native = self._native_class(self._raw)
            return self.cursor_for(holder, args, kwargs)
        cls = self._cursor_class  # (a local: calling an instance attribute as a method is slower)
        return cls(self, args, kwargs, holder)

    def _native_class(self, raw_con: Any) -> type | bool:
        """The native steady cursor class for ``raw_con``'s plain cursors, or False."""
        if self._cursor_checks:
            return False  # ``ping`` on cursor(): the wrapper's checked path (PING_ON_CURSOR)
        adapter = self._adapter
        base = adapter.native_cursor_class(raw_con)
        if base is None:
            return False
        guarded = adapter.cursor_result_attributes - adapter.native_cursor_unguarded
        return native_class(base, guarded, adapter.cursor_session_methods)

    def shortcut(self, name: str, holder: Any = None) -> Callable[..., Any]:
        """Layer API: the driver's connection-level ``name`` (one of :data:`CONNECTION_SHORTCUTS`),
        run on a tether cursor whose ``connection`` answers ``holder`` (as :meth:`cursor_for`).

        The driver's own would return the driver's cursor, which would go on
        working after the checkout ended (on the next borrower's session) and
        would skip the steady rule; on a tether cursor the statement follows
        the rule and its cursor ends with the checkout like any other.
        AttributeError where the driver has no such method.
        """
        if name not in CONNECTION_SHORTCUTS:
            raise AttributeError(name)
        probe = self._raw if self._raw is not None else self._dead
        if probe is not None and not callable(getattr(probe, name, None)):
            raise AttributeError(name)  # this driver has none (PyMySQL)

        def run(*args: Any, **kwargs: Any) -> Any:
            cursor = self.cursor_for(holder, (), {})
            return getattr(cursor, name)(*args, **kwargs)

        run.__name__ = run.__qualname__ = name
        return run

    def cancel(self) -> None:
        """Cancel the running statement (where the driver can) and end the transaction."""
        raw = self.escape_to_driver()
        self._state.begun = False
        cancel = getattr(raw, "cancel", None)
        if callable(cancel):
            cancel()

    def ping(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's own ``ping()`` where it has one, else the adapter's liveness check.

        A ping that would let the driver reconnect by itself (PyMySQL's
        ``ping(reconnect=True)``, a common keep-alive idiom) never does: the
        driver's new session would skip ``setsession``, ``on_connect`` and
        the borrower's replayed settings, and inside a transaction it would
        silently lack the work done so far, whose second half then commits
        alone (found by an outside attack). Such a request means "make sure
        I have a working connection", under the steady rule: see
        :meth:`_ping_reconnecting`. Any other ping is the driver's, as called.
        """
        driver_class = self._driver_class
        if driver_class is not None and callable(getattr(driver_class, "ping", None)):
            reconnect, args, kwargs = self._adapter.driver_ping(driver_class, args, kwargs)
            if reconnect:
                return self._ping_reconnecting(args, kwargs)
        raw = self.escape_to_driver()  # what else a driver's ping does is not seen here
        method = getattr(raw, "ping", None)
        if callable(method):
            return method(*args, **kwargs)
        return self._adapter.ping(raw)

    def _ping_reconnecting(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The driver's ping, with ``args``/``kwargs`` that never reconnect, under the steady rule.

        Inside a transaction the session is never replaced: a lost one
        raises the driver's error, as a statement would, and the transaction
        counts as lost (every later statement of it fails, ``rollback()``
        forgets it). Outside one, the session is made ready as before a
        statement (tether's own reopen when it is gone, with ``setsession``,
        ``on_connect`` and the replay), then pinged; a ping that finds it
        lost after all is sent once more on a new session, which is safe
        because a ping changes nothing on the server.
        """
        if self.transaction_open():
            raw = self._raw
            if raw is None:
                raise SteadyDBError("the connection was lost inside the transaction")
            try:
                return raw.ping(*args, **kwargs)
            except Exception as exc:
                if self._is_lost(raw, exc):
                    self._state.lost = True
                    self._log.warning(
                        "tether: %s connection lost inside a transaction (found by ping);"
                        " not reconnecting. It will be reopened after rollback().",
                        self._adapter.name,
                    )
                raise
        started = monotonic()
        raw = self._ready(started)
        try:
            result = raw.ping(*args, **kwargs)
        except Exception as exc:
            if not self._is_lost(raw, exc):
                raise
            result = self._reopen(f"the ping found it lost ({type(exc).__name__})").ping(
                *args, **kwargs
            )
        self._state.alive_at = started
        return result

    @property
    def dbapi_connection(self) -> Any:
        """The driver's connection itself (bypasses tether: no reopen, no bookkeeping)."""
        return self.escape_to_driver()  # what is done with it is not seen here

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The driver connection's class, so ``isinstance(con, psycopg.Connection)`` holds.

        (``type(con)`` is still :class:`SteadyDBConnection`.) The class of the
        first driver connection: stable across reopens, readable while lost.
        """
        driver_class = getattr(self, "_driver_class", None)  # (None before __init__ set it)
        return driver_class if driver_class is not None else type(self)

    def __enter__(self) -> SteadyDBConnection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # As a DB-API connection's context manager does: commit on success,
        # roll back on error. The connection stays open for more work.
        if exc_type is None:
            self.commit()
        else:
            self.roll_back_block()

    if TYPE_CHECKING:  # the driver's attributes (a forwarding subclass's properties at run time)

        def __getattr__(self, name: str) -> Any: ...

    def _forward_get(self, name: str) -> Any:
        # The driver's own attributes, for names this class does not define.
        if name[0] == "_":
            # Private ones too, from an open driver connection only (psycopg's
            # TypeInfo.fetch calls its connection's ``_start_query``...); never
            # dunders (copy and pickle probe them), never while tether's own
            # state is not set up (that would recurse).
            raw = getattr(self, "_raw", None)
            if raw is None or name[:2] == "__":
                raise AttributeError(name)
            return getattr(self.escape_to_driver(), name)
        if name in CONNECTION_SHORTCUTS:
            return self.shortcut(name)
        # The driver's own methods can change the session behind tether's back
        # (psycopg's transaction(), copy()...): its state is read anew, and
        # its settings are compared with the configured ones at checkin.
        raw = self.escape_to_driver()
        adapter = self._adapter
        if raw is None:
            dead = self._dead
            if dead is not None:  # lost: its state is still readable, without reconnecting
                value = getattr(dead, name)
                if not callable(value):
                    return value
            raw = self._ready()  # a driver method is about to be used: reconnect first
        elif name in adapter.connection_session_methods and not self.transaction_open():
            # psycopg's pipeline() and transaction() send their statements later: the
            # rule's checks first, as before a statement, so that a session the server
            # ended is replaced (found by an outside attack: a request that began with
            # one failed after an idle kill, where a statement was transparent).
            raw = self._ready()
        value = getattr(raw, name)
        if name in adapter.session_setters:
            return _recording(self, name, value)
        if name in adapter.unrestorable:
            # Its effect cannot be read back nor undone (sqlite3's
            # set_trace_callback()): this session ends with the checkout.
            self._state.spoiled = True
        if isinstance(value, METHODS):
            # What it returns may hold the session (psycopg's transaction(),
            # sqlite3's iterdump()...): lent for this checkout only (see
            # lease.py). Bound to this connection, as the driver's was to its
            # own, so that a pool's proxy guards the method too.
            if name in TPC_ENDS:
                return _ending(self, leased_bound(self, value))
            return leased_bound(self, value)
        return value

    def _forward_set(self, name: str, value: Any) -> None:
        # An assignment to a driver attribute (``con.autocommit = True``): made
        # on the driver connection and replayed on every new one.
        raw = self._raw if self._raw is not None else self._ready()
        attribute = getattr(type(raw), name, None)
        if callable(attribute) and not isinstance(attribute, type):
            # PyMySQL's ``db.autocommit = True`` (a slip for ``db.autocommit(True)``)
            # would hide the method on this connection from every later borrower.
            raise TypeError(
                f"{name} is a method of {type(raw).__name__}: call it"
                f" ({name}(...)); assigning it would hide the method"
            )
        self.escape_to_driver()
        setattr(raw, name, value)
        self._remember(name, lambda new: setattr(new, name, value))


#: PEP 249's cursor attributes and extensions, passed through even where the
#: driver sets them only later (PyMySQL's ``lastrowid``, at the first ``execute()``).
DBAPI_CURSOR_ATTRIBUTES = frozenset({
    "arraysize", "connection", "description", "errorhandler", "lastrowid", "messages",
    "next", "nextset", "rowcount", "rownumber", "scroll",
})  # fmt: skip

#: PEP 249's connection extensions, likewise.
DBAPI_CONNECTION_ATTRIBUTES = frozenset({"autocommit", "errorhandler", "messages"})

#: The drivers' connection-level shortcuts (psycopg, pgdb and sqlite3 have
#: ``execute()``; pgdb and sqlite3 ``executemany()``; sqlite3 ``executescript()``):
#: each makes a cursor and runs one statement on it. Layer API.
CONNECTION_SHORTCUTS = frozenset({"execute", "executemany", "executescript"})


#: PEP 249's two-phase commit methods that end the transaction ``tpc_begin()`` opened.
TPC_ENDS = frozenset({"tpc_commit", "tpc_rollback"})


def _ending(con: SteadyBase, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (``tpc_commit``/``tpc_rollback``), telling ``con`` when it failed with the
    session: the transaction ended with it (found by an outside attack: after a failed
    ``tpc_commit()`` on a killed session, neither ``tpc_rollback()`` nor any statement
    got past the dead connection; only a plain ``rollback()`` did)."""

    def end(con: SteadyBase, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:
            con._ended_with_session()
            raise

    end.__name__ = end.__qualname__ = getattr(method, "__name__", "tpc")
    end.__wrapped__ = method  # type: ignore[attr-defined]
    return MethodType(end, con)


def _recording(con: SteadyBase, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a driver's session setter), remembered for replay when it is called."""

    def setter(con: SteadyBase, *args: Any, **kwargs: Any) -> Any:
        call = method
        if not con.transaction_open():
            # As before a statement: a session the server ended while idle
            # is reopened first (found by an outside attack: after an idle
            # KILL, PyMySQL's select_db() and autocommit() raised where a
            # statement reopened), and the setting is made on the new one.
            raw = con._raw
            if raw is None or con._ready() is not raw:
                call = getattr(con._raw, name)
        result = call(*args, **kwargs)
        again = con._adapter.setter_aliases.get(name, name)  # (PyMySQL's set_charset)
        con._remember(again, lambda new: getattr(new, again)(*args, **kwargs))
        return result

    # A method bound to the steady connection, as the driver's was to its own:
    # whoever wraps methods (a pool's proxy) sees one.
    return MethodType(setter, con)


class _CursorSpec:
    """How a steady cursor's driver cursor is made again on a new driver connection.

    The ``cursor()`` arguments and what was set on the cursor since (input and
    output sizes, assigned driver attributes). Most cursors have none of it,
    so it is one slot of the cursor, None until needed: measured, each slot a
    cursor sets and frees costs every request a few dozen instructions.
    """

    __slots__ = ("args", "inputsizes", "kwargs", "outputsizes", "settings")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs = args, kwargs
        self.inputsizes: Any = None
        self.outputsizes: dict[Any, Any] = {}
        self.settings: dict[str, Any] = {}


class SteadyDBCursor(Uncopyable):
    """A cursor whose ``execute*``/``call*`` survive a lost connection where that is safe.

    Results belong to the connection that produced them: once the
    connection has been reopened, fetching from a cursor that executed on
    the old one raises :class:`InvalidCursorError` instead of guessing.
    """

    # Slots: one is made for every request. An attribute the driver cursor has is
    # its own (``cur.row_factory = dict_row``, ``cur.arraysize``), passed through by
    # a forwarding subclass's property and set again on a new driver cursor; any
    # other name assigned stays in this cursor's __dict__ (made only when used).
    # No __del__: a dropped cursor's driver cursor goes with it, as the driver's own would.
    __slots__ = (
        "__dict__", "__weakref__", "_closed", "_con", "_generation", "_holder", "_lease", "_raw",
        "_spec", "_state",
    )  # fmt: skip

    #: The driver cursor class this (forwarding) class passes attributes through for.
    _forwards: type | None = None
    _raw: Any  # the driver's cursor, None once closed (or until made)

    def __init__(
        self,
        con: SteadyDBConnection,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        holder: Any = None,
    ):
        # The hot path: a plain cursor() on a connection in place. Every
        # bytecode here is paid on every request (measured on CPython 3.11:
        # about 20 instructions each), so it is as short as it can be.
        self._con = con
        self._state = state = con._state
        #: What keeps this cursor's connection checked out (a pooled proxy), if anything.
        self._holder = holder
        self._lease = state.lease  # the checkout it belongs to (see SteadyBase.end_checkout)
        if args or kwargs:
            self._open_with(con, args, kwargs)
            return
        #: How to make the driver cursor again after a reopen (cursor() arguments, sizes,
        #: assigned attributes); None for a plain cursor() with nothing set.
        self._spec: _CursorSpec | None = None
        raw_con = con._raw
        if raw_con is not None and not con._cursor_checks and not state.lost:
            # Making a driver cursor sends nothing, so there is nothing to check
            # yet: the statements that follow are checked before they are sent.
            try:
                raw = raw_con.cursor()
            except Exception:  # closed by the driver, say: the steady way below
                pass
            else:
                self._raw = raw
                self._generation = state.generation
                if type(raw) is not type(self)._forwards:
                    self._forward_for(raw)
                return
        self._raw = None
        self._generation = -1
        con._run(self._make, PING_ON_CURSOR, writes=False)

    def _open_with(self, con: SteadyDBConnection, args: tuple[Any, ...], kwargs: Any) -> None:
        """The rest of ``__init__`` for ``cursor(*args, **kwargs)`` with arguments."""
        self._spec = _CursorSpec(args, kwargs)
        self._raw = None
        self._generation = -1
        state = self._state
        raw_con = con._raw
        if raw_con is not None and not con._cursor_checks and not state.lost:
            try:
                raw = raw_con.cursor(*args, **kwargs)
            except Exception:
                pass
            else:
                self._raw = raw
                self._generation = state.generation
                if type(raw) is not type(self)._forwards:
                    self._forward_for(raw)
                return
        con._run(self._make, PING_ON_CURSOR, writes=False)

    def _made_with(self) -> _CursorSpec:
        """This cursor's spec, made on first use (a plain cursor() has none)."""
        spec = self._spec
        if spec is None:
            spec = self._spec = _CursorSpec((), {})
        return spec

    def _forward_for(self, raw: Any) -> None:
        """Move this cursor to the forwarding class for ``raw``'s class (see forwarding.py)."""
        base = type(self)
        if base._forwards is not None:
            base = base.__mro__[1]  # the class that was subclassed for another driver cursor class
        if self._con._adapter.closes_on_server(raw):
            base = SteadyDBServerCursor  # (never the connection's default cursor class: see there)
        elif base is SteadyDBServerCursor:
            base = SteadyDBCursor
        cls = forwarding_class(base, raw, also=DBAPI_CURSOR_ATTRIBUTES)
        set_class(self, cls)
        if self._spec is None or not (self._spec.args or self._spec.kwargs):
            self._con._cursor_class = cls  # the driver's default cursor: the next ones start there

    def _make(self, raw_con: Any) -> None:
        """Create the driver cursor on ``raw_con`` (the current driver connection)."""
        old = self._raw
        spec = self._spec
        if spec is None:
            self._raw = raw = raw_con.cursor()
        else:
            self._raw = raw = raw_con.cursor(*spec.args, **spec.kwargs)
        self._generation = self._state.generation
        if type(raw) is not self._forwards:
            self._forward_for(raw)
        if spec is not None:
            for name, value in spec.settings.items():
                setattr(raw, name, value)
        if old is not None:
            try:
                old.close()
            except Exception:
                pass

    def _on(self, raw_con: Any) -> Any:
        """The driver cursor to run a statement with on ``raw_con``.

        A new one when the connection was reopened since this cursor's was made.
        """
        raw = self._raw
        if raw is None or self._generation != self._state.generation:
            if self._lease != self._state.lease:
                self._stale()
            self._make(raw_con)
            self._apply_sizes()
            raw = self._raw
        return raw

    # The DB-API statements, spelled out (not made in __getattr__): they are
    # the hot path. Any other execute*/call* method of the driver's cursor is
    # made steady the same way by __getattr__.

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        # SteadyBase._run's hot path, inlined for the most frequent call there
        # is; everything else is in _execute(). Early returns, short on purpose:
        # a jump past 255 code units needs EXTENDED_ARG, which stops CPython
        # 3.11 specialising the comparison before it (measured).
        raw = self._raw
        state = self._state
        settled = state.settled
        if not settled or raw is None or self._generation != state.generation:
            return self._execute(args, kwargs)
        con = self._con
        now = monotonic()
        # After a pause, a settled session needs only the socket look of
        # _ready() (settled: connected, idle, autocommit, no usage limits).
        if con._execute_checks or (
            now - state.alive_at >= _core.ALIVE_BYPASS and not con._still_there()
        ):
            return self._execute(args, kwargs)
        raw_con = con._raw
        try:
            # execute(sql), the usual call, without unpacking arguments again.
            if kwargs or len(args) != 1:
                result = raw.execute(*args, **kwargs)
            else:
                result = raw.execute(args[0])
        except Exception as exc:
            return self._execute_failed(exc, raw_con, now, args, kwargs, settled is True)
        # SteadyBase._answered(), inlined: settled implies no maxusage and no
        # max_lifetime, and the mode before the statement: autocommit (True),
        # where the one read (the adapter's left_busy) keeps the rule (SQL can
        # open a transaction, BEGIN, or leave autocommit mode, MySQL's SET
        # autocommit = 0), or not (MANUAL), where the statement opened one.
        state.alive_at = now
        state.usage += 1
        if settled is not True:
            con._began(raw_con)
        elif con._left_busy(raw_con):
            con._went_busy(raw_con)
        # psycopg and sqlite3 return their cursor: chain through this one.
        return self if result is raw else result

    def _execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``execute()`` under the full rule (the session not settled, or checks due)."""
        # (A kept cursor of an ended checkout never takes the hot path: ending
        # a checkout bumps the connection's generation too.)
        if self._lease != self._state.lease:
            self._stale()
        return self._chain(
            self._con._run(lambda raw_con: self._on(raw_con).execute(*args, **kwargs))
        )

    def _execute_failed(
        self,
        exc: Exception,
        raw_con: Any,
        now: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        autocommit: bool,
    ) -> Any:
        """The hot path's ``execute()`` raised ``exc``: SteadyBase._run's recovery."""
        try:
            result = self._con._recover_statement(
                lambda new: self._on(new).execute(*args, **kwargs), raw_con, exc, now, autocommit
            )
        finally:
            exc = None  # type: ignore[assignment]  # no cycle through this frame (see _recover)
        return self._chain(result)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        if self._lease != self._state.lease:
            self._stale()
        return self._chain(
            self._con._run(lambda raw_con: self._on(raw_con).executemany(*args, **kwargs))
        )

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        if self._lease != self._state.lease:
            self._stale()
        return self._con._run(lambda raw_con: self._on(raw_con).callproc(*args, **kwargs))

    def _statement(self, name: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if self._lease != self._state.lease:
                self._stale()
            return self._chain(
                self._con._run(lambda raw_con: getattr(self._on(raw_con), name)(*args, **kwargs))
            )

        return run

    def _session_method(self, name: str) -> Callable[..., Any]:
        """The driver cursor's ``name`` that returns an object sending statements later
        (the adapter's ``cursor_session_methods``): made after the rule's checks, so that
        a session the server ended is replaced first (outside a transaction); what it
        returns is lent for the checkout."""

        def run(*args: Any, **kwargs: Any) -> Any:
            if self._lease != self._state.lease:
                self._stale()
            con = self._con
            result = con._run(
                lambda raw_con: getattr(self._on(raw_con), name)(*args, **kwargs), writes=False
            )
            self._state.unknown()  # what it sends later is not seen here
            return lend(result, con, self._lease, self)

        run.__name__ = run.__qualname__ = name
        return run

    def held_by(self, holder: Any) -> None:
        """Layer API: the object that keeps this cursor's connection checked out (a pool's proxy).

        DB-API's ``cursor.connection`` then answers ``holder``, not the
        steady connection, whose next borrower may be someone else.
        """
        self._holder = holder

    def _chain(self, result: Any) -> Any:
        """This cursor where the driver returned its own cursor (psycopg's ``execute()``).

        So ``cur.execute(...).fetchone()`` goes on through tether: the driver
        cursor handed out would be closed when this one is collected.
        """
        return self if result is not None and result is self._raw else result

    def _stale(self) -> None:
        raise _stale(self._con, "this cursor")

    def _apply_sizes(self) -> None:
        spec = self._spec
        if spec is None:
            return
        if spec.inputsizes is not None:
            self._raw.setinputsizes(spec.inputsizes)
        for column, size in spec.outputsizes.items():
            if column is None:
                self._raw.setoutputsize(size)
            else:
                self._raw.setoutputsize(size, column)

    def _results(self) -> Any:
        raw = self._raw
        if raw is None:
            raise InvalidCursorError("the cursor is closed")
        if self._lease != self._state.lease:
            self._stale()
        if self._generation != self._state.generation:
            raise InvalidCursorError(
                "the connection was reopened since this cursor's last execute;"
                " its results are gone: execute again"
            )
        return raw

    def setinputsizes(self, sizes: Any) -> None:
        """Remember input sizes, to set them again on a reopened cursor."""
        self._made_with().inputsizes = sizes
        self._results().setinputsizes(sizes)

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Remember output sizes, to set them again on a reopened cursor."""
        self._made_with().outputsizes[column] = size
        raw = self._results()
        raw.setoutputsize(size) if column is None else raw.setoutputsize(size, column)

    # The fetches check inline what _results() checks (one frame less per fetch).

    def fetchone(self) -> Any:
        raw = self._raw
        if raw is None or self._generation != self._state.generation:
            raw = self._results()
        return raw.fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        raw = self._raw
        if raw is None or self._generation != self._state.generation:
            raw = self._results()
        return raw.fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        raw = self._raw
        if raw is None or self._generation != self._state.generation:
            raw = self._results()
        return raw.fetchall()

    def close(self) -> None:
        """Close the driver cursor; closing twice is harmless.

        Its result attributes (``rowcount``, ``lastrowid``, ``description``...)
        stay readable until the checkout ends, as on the driver's own closed
        cursor (``cur.lastrowid`` after a PyMySQL ``with conn.cursor()`` block).
        """
        raw, self._raw = self._raw, None
        if raw is not None:
            self._closed = raw
            try:
                raw.close()
            except Exception:
                pass

    @property
    def dbapi_cursor(self) -> Any:
        """The driver's cursor itself (bypasses tether)."""
        raw = self._results()
        self._state.unknown()  # it can run statements tether does not see
        return raw

    def __next__(self) -> Any:
        """The next row, as PEP 249's optional ``next()``; StopIteration after the last."""
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __iter__(self) -> Iterator[Any]:
        raw = self._results()
        try:
            rows = iter(raw)
        except TypeError:
            rows = iter(raw.fetchone, None)
        # Never the driver's iterator itself: pgdb's and sqlite3's cursors are their
        # own iterators (handed out, execute() would keep working after the checkout
        # ended), and psycopg's server-side cursors FETCH as they iterate (on the
        # next borrower's session). A generator over it checks the checkout at every
        # row: a frame resume per row, no statement.
        return self._rows(rows)

    def _rows(self, rows: Iterator[Any]) -> Iterator[Any]:
        state, lease = self._state, self._lease
        for row in rows:
            if state.lease != lease:
                self._stale()
            yield row

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The driver cursor's class, for ``isinstance`` checks (``type(cur)`` tells the truth)."""
        raw = self._raw
        return type(raw) if raw is not None else type(self)

    def __enter__(self) -> SteadyDBCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    if TYPE_CHECKING:  # the driver's attributes (a forwarding subclass's properties at run time)

        def __getattr__(self, name: str) -> Any: ...

    def _forward_set(self, name: str, value: Any) -> None:
        # ``cur.row_factory = dict_row``, ``cur.arraysize = 100``: the driver
        # cursor's, and the next driver cursor's after a reopen.
        if self._lease != self._state.lease:
            self._stale()
        raw = self._raw
        if raw is None:
            raise InvalidCursorError("the cursor is closed")
        setattr(raw, name, value)  # a reopen since: set again on the new driver cursor (_make)
        self._made_with().settings[name] = value

    def _forward_get(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name.startswith(("execute", "call")):
            return self._statement(name)
        adapter = self._con._adapter
        if name in adapter.cursor_session_methods:
            return self._session_method(name)
        results = adapter.cursor_result_attributes
        if self._raw is None and name in results and self._lease == self._state.lease:
            closed = getattr(self, "_closed", None)  # (a slot, set by close())
            if closed is not None:
                return getattr(closed, name)
        raw = self._results()
        if name not in results:
            # A driver cursor method (psycopg's copy(), stream()...) or its
            # connection can run statements tether does not see.
            self._state.unknown()
        if name == "connection":
            # DB-API's optional ``cursor.connection``: the connection this cursor
            # came from as the caller holds it (a pool's proxy, or this steady
            # connection), not the driver's, which would outlive the checkout.
            holder = self._holder
            return holder if holder is not None else self._con
        value = getattr(raw, name)
        if isinstance(value, METHODS):
            # A driver cursor method (psycopg's copy, stream, scroll...) taken
            # before close() must not run on the connection's next borrower,
            # nor what it returns (the Copy, the stream's generator: see
            # lease.py). A driver cursor it returns (set_result()) comes back
            # as this cursor.
            return leased_method(self._con, value, self._lease, self)
        return value


#: What a steady connection's ``cursor()`` returns: a native cursor (the driver's
#: class, see native.py) or a wrapper around the driver's.
SteadyCursor = Union[SteadyDBCursor, NativeCursor]


class SteadyDBServerCursor(SteadyDBCursor):
    """A steady cursor whose driver cursor's ``close()`` sends a statement (psycopg's named ones).

    psycopg's server-side cursor closes with ``CLOSE "name"`` on its
    connection. Found by an outside attack: a named cursor kept past the end
    of its checkout and closed then sent that on the session of the
    connection's next borrower, and closed the next borrower's own cursor of
    the same name. Its portal went with the checkout already (the checkin's
    rollback ends the transaction it lived in; ``reset_session`` closes a
    ``WITH HOLD`` one), so closing it then sends nothing. Only cursors made
    with arguments (``cursor(name=...)``) become one: the plain ``cursor()``
    of the hot path never pays this check.
    """

    __slots__ = ()

    def close(self) -> None:
        if self._lease != self._state.lease:
            self._raw = None  # its checkout has ended: the session is someone else's now
            return
        super().close()
