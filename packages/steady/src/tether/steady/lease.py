"""Driver objects that hold the session: usable only during the checkout that made them.

tether passes the driver's methods through (see forwarding.py), and some of
them return an object that goes on using the driver connection after the
call returned (psycopg's ``db.transaction()``, ``db.pipeline()``,
``db.notifies()``, a cursor's ``copy()`` and ``stream()``; sqlite3's
``iterdump()`` and ``blobopen()``; PyMySQL's ``fetchall_unbuffered()``).
Which results those are, and how such an object behaves when lent, is
:mod:`tether.simple_pool.lending` (one rule, :func:`holds_session`, for
every layer). Here a lent object's borrow is the checkout: tether's own
cursors end with it (:attr:`SessionState.lease`, bumped by
``end_checkout``), and so does every :class:`SessionBound`.

The price is paid on the forwarded-escape path only (a driver method reached
through tether's forwarding): one dict lookup by the result's class, and the
wrapper for the few results that hold the session. tether's own
``cursor()``, ``execute()``, ``fetch*()`` and ``close()`` do not come here.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any

from tether.simple_pool.lending import METHODS, Lent, holds_session

from .errors import InvalidCursorError

if TYPE_CHECKING:
    from .core import SteadyBase

__all__ = ["SessionBound", "holds_session", "leased_bound", "leased_method"]


def _stale(con: SteadyBase, what: str) -> InvalidCursorError:
    """The error for ``what`` (the driver's, named) used after its checkout ended.

    A steady cursor's words, so that a borrower sees one error for every kept handle.
    """
    if con.retired:
        return InvalidCursorError(f"{what}: its connection is closed")
    return InvalidCursorError(
        f"{what} belongs to a checkout that has ended (its connection was given back"
        " to the pool, which may have lent it to another borrower): make a new one"
    )


def lend(value: Any, con: SteadyBase, lease: int, cursor: Any = None) -> Any:
    """``value`` as the borrower may hold it: wrapped if it holds the session.

    ``cursor``: the steady cursor whose driver cursor produced ``value``, if
    any; the driver cursor itself comes back as that steady cursor (psycopg's
    ``cur.results()`` yields its cursor), as a steady cursor's ``execute()``
    chains.
    """
    if value is None:
        return None
    if cursor is not None and value is cursor._raw:
        return cursor
    if holds_session(type(value)):
        if callable(value):  # PyGreSQL's NotificationHandler: called to listen
            return CallableSessionBound(value, con, lease, cursor)
        return SessionBound(value, con, lease, cursor)
    return value


def leased_method(
    con: SteadyBase, method: Callable[..., Any], lease: int, cursor: Any = None
) -> Callable[..., Any]:
    """``method`` (a driver's), refusing to run after checkout ``lease``; its result lent.

    A function, not a bound method: bind it where a layer above must see a
    method (see ``SteadyDBConnection._forward_get``).
    """
    state = con._state
    name = getattr(method, "__name__", "method")

    def call(*args: Any, **kwargs: Any) -> Any:
        # (Nothing here refers to ``call`` itself: a cycle would keep the connection
        # for the garbage collector, and PersistentDB counts its references.)
        if state.lease != lease:
            raise _stale(con, f"the driver's {name}()")
        state.unknown()  # it may change the session behind tether's back
        return lend(method(*args, **kwargs), con, lease, cursor)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = getattr(method, "__doc__", None)
    call.__wrapped__ = method  # type: ignore[attr-defined]  # as functools.wraps: inspectable
    return call


def leased_bound(con: SteadyBase, method: Callable[..., Any]) -> Any:
    """``method`` (a driver connection's) as a method of ``con``, leased for this checkout.

    Bound to the steady connection, as the driver's was to its own, so that
    whoever wraps methods (a pool's proxy) sees one.
    """
    return MethodType(_unbound(leased_method(con, method, con._state.lease)), con)


def _unbound(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` as a function of the object it is bound to with MethodType (which it ignores)."""

    def method(_self: object, *args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)

    method.__name__ = method.__qualname__ = call.__name__
    method.__doc__ = call.__doc__
    method.__wrapped__ = call  # type: ignore[attr-defined]
    return method


class SessionBound(Lent):
    """A driver object that holds the session, refused once its checkout has ended.

    It behaves as the object it wraps (:class:`tether.simple_pool.lending.Lent`).
    Every use first checks the lease (:class:`InvalidCursorError`, as a steady
    cursor's), then marks the session unknown: what the object does (a BEGIN,
    a COMMIT) is not seen by tether, so the state is read again before the
    next statement and the settings compared at checkin. A method read off it
    is guarded the same way, and what it returns (a ``Copy`` entered, the rows
    of ``copy.rows()``, ``tx.connection``) is lent by the same rule.
    """

    __slots__ = ("_lent_con", "_lent_cursor", "_lent_lease")

    _lent_con: SteadyBase
    _lent_lease: int
    _lent_cursor: Any

    def __init__(self, obj: Any, con: SteadyBase, lease: int, cursor: Any = None) -> None:
        put = object.__setattr__
        put(self, "_lent_object", obj)
        put(self, "_lent_con", con)
        put(self, "_lent_lease", lease)
        put(self, "_lent_cursor", cursor)

    def _lent_use(self) -> Any:
        """The wrapped object, while its checkout lasts."""
        con = self._lent_con
        state = con._state
        if state.lease != self._lent_lease:
            raise _stale(con, f"this {type(self._lent_object).__name__}")
        state.unknown()
        return self._lent_object

    def __enter__(self) -> Any:
        entered = super().__enter__()
        state = self._lent_con._state
        if state.lease == self._lent_lease:
            state.blocks += 1
        return entered

    def __exit__(self, *exc: object) -> Any:
        con = self._lent_con
        try:
            return super().__exit__(*exc)
        finally:
            # Left, whatever the driver's exit raised (psycopg's transaction
            # counter stays up when its exit fails on a lost session).
            state = con._state
            if state.lease == self._lent_lease:
                state.blocks = max(state.blocks - 1, 0)
                con._block_exited()  # a transaction lost inside the block ended with it

    def _lent_value(self, value: Any) -> Any:
        if isinstance(value, METHODS):
            return leased_method(self._lent_con, value, self._lent_lease, self._lent_cursor)
        if value is self._lent_object:
            return self  # a fluent method or __enter__ returning the object itself
        return lend(value, self._lent_con, self._lent_lease, self._lent_cursor)


class CallableSessionBound(SessionBound):
    """A :class:`SessionBound` for an object that is called (each call uses the session)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._lent_value(self._lent_use()(*args, **kwargs))
