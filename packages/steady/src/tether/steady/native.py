"""Steady cursors that are the driver's own cursors: one object per cursor, not two.

A :class:`~tether.steady.SteadyDBCursor` wraps the driver's cursor: every
``cursor()`` makes two objects, and every ``execute()``, ``fetchone()`` and
``close()`` is a frame of tether's calling a frame of the driver's. Measured
under callgrind (psycopg 3.3, CPython 3.11, ``benchmarks/README.md``), that
second object and its frames were ~5,500 of the ~7,850 instructions a steady
cursor added to a request, and bought no check: the rule's own tests are
~2,300 of it.

Where the driver lets a cursor class be subclassed and made directly, the
steady connection makes its plain ``cursor()`` as a subclass of the driver's
class instead (the adapter says which class, ``native_cursor_class()``:
psycopg's ``cursor_factory``). The subclass, built once per driver class
by :func:`native_class`, carries the rule itself:

* ``execute()`` and ``executemany()`` follow the reopen rule exactly as a
  :class:`SteadyDBCursor`'s do: the same fast path on a settled session, the
  same full rule through ``SteadyBase._run`` otherwise. A reopen moves the
  cursor to the new driver connection (the adapter's ``rebind_cursor()``).
* Its checkout ends with it: a statement, a fetch, iteration and every other
  driver method on a kept cursor raise :class:`InvalidCursorError` once the
  connection was given back, and a fetch after a reopen refuses the old
  session's rows.
* ``cursor.connection`` answers the tether connection (or the pool's proxy
  that holds it), never the driver's, which would outlive the checkout.
* The driver's other methods (psycopg's ``copy()``, ``stream()``,
  ``scroll()``...) are reached as through a wrapper: refused after the
  checkout, the session marked unknown, what they return lent (see lease.py).

Everything else is the driver's own, untouched: ``isinstance(cur,
psycopg.Cursor)`` holds because it is one, ``close()`` and the result
attributes are psycopg's (readable after ``close()`` and after the checkout,
as the cursor's own results: nothing is sent). Cursors made with arguments
(a name, a row factory), and every cursor of a driver without such a class,
stay :class:`SteadyDBCursor` wrappers.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

from tether.simple_pool import Uncopyable

from . import core as _core
from .errors import InvalidCursorError
from .lease import _stale, lend

if TYPE_CHECKING:
    from .dbapi import SteadyDBConnection
    from .state import SessionState

__all__ = ["NativeCursor", "native_class"]

#: Names the rule or the lease covers in :class:`NativeCursor` itself, and the
#: driver's methods that only read the cursor's own results or settings:
#: never wrapped by :func:`native_class`.
_OWN = frozenset({
    "close", "setinputsizes", "setoutputsize", "fetchone", "fetchmany", "fetchall",
})  # fmt: skip


class NativeCursor(Uncopyable):
    """The rule's part of a native steady cursor (a mixin; see the module docstring).

    Never made alone: :func:`native_class` puts it before the driver's cursor
    class, whose methods it calls as ``self._driver_execute`` and the like.
    """

    # The slots are native_class's subclass's (two classes with slots cannot both be bases).
    if TYPE_CHECKING:
        __slots__ = (
            "_steady_con", "_steady_generation", "_steady_holder", "_steady_inside",
            "_steady_lease", "_steady_state",
        )  # fmt: skip
    else:
        __slots__ = ()

    # Set by SteadyDBConnection.cursor_for on every cursor (slots of native_class's subclass).
    _steady_con: SteadyDBConnection
    _steady_state: SessionState
    _steady_generation: int  # the state's generation the cursor's driver connection belongs to
    _steady_lease: int  # the checkout it belongs to
    _steady_holder: Any  # what keeps its connection checked out (a pool's proxy), or None
    _steady_inside: bool  # tether is calling the driver's method (see connection)

    # The driver class's own methods (class attributes of the subclass).
    _driver_execute: Callable[..., Any]
    _driver_executemany: Callable[..., Any]
    _driver_fetchone: Callable[..., Any]
    _driver_fetchmany: Callable[..., Any]
    _driver_fetchall: Callable[..., Any]
    _driver_iter: Callable[..., Iterator[Any]]
    _driver_next: Callable[..., Any] | None  # where the driver's cursor is its own iterator
    _driver_connection: Any  # the driver class's ``connection`` (its descriptor, in the class)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        # SteadyDBCursor.execute's hot path (see there): the same tests, in the same order.
        state = self._steady_state
        settled = state.settled
        if not settled or self._steady_generation != state.generation:
            return self._steady_execute(args, kwargs)
        con = self._steady_con
        now = monotonic()
        if con._execute_checks or (
            now - state.alive_at >= _core.ALIVE_BYPASS and not con._still_there()
        ):
            return self._steady_execute(args, kwargs)
        raw_con = con._raw
        self._steady_inside = True  # (see connection)
        try:
            if kwargs or len(args) != 1:
                result = self._driver_execute(*args, **kwargs)
            else:
                result = self._driver_execute(args[0])
        except Exception as exc:
            self._steady_inside = False
            return self._steady_failed(exc, raw_con, now, args, kwargs, settled is True)
        self._steady_inside = False
        state.alive_at = now
        state.usage += 1
        if settled is not True:
            con._began(raw_con)  # MANUAL: it opened a transaction
        elif con._left_busy(raw_con):
            con._went_busy(raw_con)
        return result

    def _steady_execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``execute()`` under the full rule (the session not settled, or checks due)."""
        if self._steady_lease != self._steady_state.lease:
            self._steady_stale()
        run = self._driver_execute
        return self._steady_con._run(lambda raw_con: self._steady_on(raw_con, run, args, kwargs))

    def _steady_failed(
        self,
        exc: Exception,
        raw_con: Any,
        now: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        autocommit: bool,
    ) -> Any:
        """The hot path's ``execute()`` raised ``exc``: SteadyBase._run's recovery."""
        run = self._driver_execute
        try:
            return self._steady_con._recover_statement(
                lambda new: self._steady_on(new, run, args, kwargs), raw_con, exc, now, autocommit
            )
        finally:
            exc = None  # type: ignore[assignment]  # no cycle through this frame (see _recover)

    def _steady_on(
        self, raw_con: Any, run: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``run(...)`` (a method of this cursor's) on ``raw_con``, the cursor moved there first
        if it was reopened."""
        state = self._steady_state
        if self._steady_generation != state.generation:
            if self._steady_lease != state.lease:
                self._steady_stale()
            old, self._steady_generation = self._steady_generation, state.generation
            self._steady_inside = True  # (see connection: a driver __init__ may read it)
            try:  # (its attributes are read as the new session's while it moves)
                self._steady_con._adapter.rebind_cursor(self, raw_con)
            except BaseException:
                self._steady_generation = old
                raise
            finally:
                self._steady_inside = False
        self._steady_inside = True  # (see connection)
        try:
            return run(*args, **kwargs)
        finally:
            self._steady_inside = False

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        if self._steady_lease != self._steady_state.lease:
            self._steady_stale()
        run = self._driver_executemany
        return self._steady_con._run(lambda raw_con: self._steady_on(raw_con, run, args, kwargs))

    def _steady_stale(self) -> None:
        raise _stale(self._steady_con, "this cursor")

    def _steady_results(self) -> None:
        """Raise: the checkout ended, or the connection was reopened since the last execute."""
        if self._steady_lease != self._steady_state.lease:
            self._steady_stale()
        raise InvalidCursorError(
            "the connection was reopened since this cursor's last execute;"
            " its results are gone: execute again"
        )

    def fetchone(self) -> Any:
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        return self._driver_fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        return self._driver_fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        return self._driver_fetchall()

    def __iter__(self) -> Iterator[Any]:
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        return self._steady_rows()

    def _steady_rows(self) -> Iterator[Any]:
        # As SteadyDBCursor's: the checkout checked at every row. Never the
        # driver's iterator itself (psycopg's cursor is its own iterator).
        state, lease = self._steady_state, self._steady_lease
        next_row = self._driver_next
        if next_row is None:
            next_row = iter(self._driver_iter()).__next__
        while True:
            try:
                row = next_row()
            except StopIteration:
                return
            if state.lease != lease:
                self._steady_stale()
            yield row

    def __next__(self) -> Any:
        """The next row, as PEP 249's optional ``next()``; StopIteration after the last."""
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    @property
    def connection(self) -> Any:
        """The connection as its borrower holds it (a pool's proxy, or the steady connection).

        The driver's own code reads it too (psycopg's ``Transformer`` on every
        statement, its ``Copy``): while tether is calling into the driver
        (``_steady_inside``), it gets the driver's connection, which it drives;
        tether's would mark the session unknown at every statement. (Telling
        the driver's reads apart by the calling module instead measured 2,140
        instructions a request, the flag ~100.) A read from anywhere else, a
        stream's rows included, gets tether's, which passes the driver's
        attributes through.
        """
        if self._steady_inside:
            return self._driver_connection
        holder = self._steady_holder
        return holder if holder is not None else self._steady_con

    @property
    def dbapi_cursor(self) -> Any:
        """The driver's cursor: this one (it is the driver's class); the session marked unknown."""
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        self._steady_state.unknown()
        return self

    def held_by(self, holder: Any) -> None:
        """Layer API: as :meth:`SteadyDBCursor.held_by`."""
        self._steady_holder = holder

    if TYPE_CHECKING:  # the driver cursor's own attributes and methods

        def __getattr__(self, name: str) -> Any: ...

        def __enter__(self) -> NativeCursor: ...

        def __exit__(self, *exc: object) -> None: ...

        def close(self) -> None: ...


def _leased(name: str, method: Callable[..., Any], session: bool) -> Callable[..., Any]:
    """The driver cursor's ``method``, as a :class:`SteadyDBCursor` passes it through.

    A statement method (``execute*``, ``call*``) follows the rule; any other
    is refused after the checkout, marks the session unknown (it may send
    what tether does not see), and what it returns is lent for the checkout
    (lease.py). ``session``: it returns an object that sends statements later
    (the adapter's ``cursor_session_methods``: psycopg's ``copy()``,
    ``stream()``); made after the rule's checks, so that a session the server
    ended is replaced first, outside a transaction, as before a statement.
    """
    if name.startswith(("execute", "call")):

        def statement(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self._steady_lease != self._steady_state.lease:
                self._steady_stale()
            run = method.__get__(self)
            return self._steady_con._run(
                lambda raw_con: self._steady_on(raw_con, run, args, kwargs)
            )

        call = statement
    elif session:

        def sending(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = self._steady_state
            if self._steady_lease != state.lease:
                raise _stale(self._steady_con, f"the driver cursor's {name}()")
            run = method.__get__(self)
            result = self._steady_con._run(
                lambda raw_con: self._steady_on(raw_con, run, args, kwargs), writes=False
            )
            state.unknown()  # what it sends later is not seen here
            return lend(result, self._steady_con, self._steady_lease)

        call = sending
    else:

        def passed(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = self._steady_state
            if self._steady_lease != state.lease:
                raise _stale(self._steady_con, f"the driver cursor's {name}()")
            state.unknown()
            self._steady_inside = True  # (see connection)
            try:
                result = method(self, *args, **kwargs)
            finally:
                self._steady_inside = False
            if result is self:  # fluent (psycopg's set_result()): this cursor, not lent
                return self
            return lend(result, self._steady_con, self._steady_lease)

        call = passed
    call.__name__ = name
    call.__doc__ = getattr(method, "__doc__", None)
    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _result(name: str, descriptor: Any) -> property:
    """The driver cursor's result attribute ``name`` (a descriptor of its class), as a
    :class:`SteadyDBCursor` passes it through: readable after ``close()``, refused once
    the checkout has ended or the connection was reopened since the last execute.
    An assignment (``arraysize``) is refused once the checkout has ended.
    """

    def get(self: Any) -> Any:
        if self._steady_generation != self._steady_state.generation:
            self._steady_results()
        return descriptor.__get__(self, type(self))

    def set_(self: Any, value: Any) -> None:
        # (Set before the driver's __init__ runs: see SteadyDBConnection.cursor_for.)
        if self._steady_lease != self._steady_state.lease:
            self._steady_stale()
        descriptor.__set__(self, value)

    return property(get, set_ if hasattr(descriptor, "__set__") else None, doc=name)


_classes: dict[tuple[type, frozenset[str], frozenset[str]], type] = {}
_lock = threading.Lock()


def native_class(base: type, results: frozenset[str], sessions: frozenset[str]) -> type:
    """The native steady cursor class for the driver cursor class ``base`` (made once).

    ``results``: the names of its result attributes to guard as a wrapper
    guards them (the adapter's ``cursor_result_attributes`` less its
    ``native_cursor_unguarded``). ``sessions``: the driver's session methods (the
    adapter's ``cursor_session_methods``): methods that return an object
    which sends statements later, made after the rule's checks.
    """
    key = (base, results, sessions)
    cls = _classes.get(key)
    if cls is not None:
        return cls
    namespace: dict[str, Any] = {
        "__slots__": (
            "_steady_con",
            "_steady_generation",
            "_steady_holder",
            "_steady_inside",
            "_steady_lease",
            "_steady_state",
        ),
        "__module__": __name__,
        "__doc__": f"A steady cursor that is a {base.__module__}.{base.__qualname__}"
        " (see tether.steady.native).",
        "_driver_execute": base.execute,  # type: ignore[attr-defined]
        "_driver_executemany": getattr(base, "executemany", None),
        "_driver_fetchone": base.fetchone,  # type: ignore[attr-defined]
        "_driver_fetchmany": base.fetchmany,  # type: ignore[attr-defined]
        "_driver_fetchall": base.fetchall,  # type: ignore[attr-defined]
        "_driver_iter": base.__iter__,  # type: ignore[attr-defined]
        "_driver_next": getattr(base, "__next__", None),
        "_driver_connection": inspect.getattr_static(base, "connection"),
    }
    own = set(vars(NativeCursor)) | _OWN
    for name in dir(base):
        if name.startswith("_") or name in own:
            continue
        value = getattr(base, name)
        if callable(value) and not isinstance(value, type):
            namespace[name] = _leased(name, value, name in sessions)
    for name in results:
        descriptor = inspect.getattr_static(base, name, None)
        if descriptor is not None and hasattr(type(descriptor), "__get__"):
            namespace[name] = _result(name, descriptor)
    made = type(f"SteadyNative{base.__name__}", (NativeCursor, base), namespace)
    with _lock:
        return _classes.setdefault(key, made)
