"""Driver objects that hold the session: usable only during the checkout that made them.

tether passes the driver's methods through (see forwarding.py), and some of
them return an object that goes on using the driver connection after the
call returned: psycopg's ``db.transaction()`` (a context manager: ``with tx:``
sends BEGIN or SAVEPOINT, and COMMIT), ``db.pipeline()``, ``db.notifies()``
(a generator that waits for the session's notifications), a cursor's
``copy()`` and ``stream()``; sqlite3's ``db.iterdump()`` (a generator that
reads the database as it goes) and ``db.blobopen()``; PyMySQL's
``fetchall_unbuffered()``. Found by an outside attack: kept past ``close()``,
each of them worked on the session of the connection's next borrower, whose
transaction it could open, commit or read. tether's own cursors end with
their checkout (:attr:`SessionState.lease`, bumped by ``end_checkout``);
these objects are the driver's, so the borrower gets each inside a
:class:`SessionBound`, which checks the lease before every use.

Which results are wrapped is one rule, :func:`holds_session`, judged by the
result's class: an iterator (it has ``__next__``: each step may read from
the session) or a context manager (``__enter__``: entering and leaving it
runs statements). Measured over the public methods of psycopg 3.3's,
sqlite3's, PyMySQL's and pgdb's connections and cursors, that is every
result that holds the session (the objects above, pgdb's ``copy_to()``
generator, a driver connection or cursor itself) and none that does not:
the others are None, numbers, strings, tuples and lists of rows, psycopg's
``Xid``. So no driver adapter declares a quirk of its own. A value read as
an attribute (psycopg's ``db.pgconn``, ``db.info``) is not a result and is
not wrapped: C code checks its exact type (psycopg's ``Transformer``).

The price is paid on the forwarded-escape path only (a driver method reached
through tether's forwarding): one dict lookup by the result's class, and the
wrapper for the few results that hold the session. tether's own
``cursor()``, ``execute()``, ``fetch*()`` and ``close()`` do not come here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import BuiltinMethodType, MethodType
from typing import TYPE_CHECKING, Any

from tether.simple_pool import Uncopyable

from .errors import InvalidCursorError

if TYPE_CHECKING:
    from .core import SteadyBase

__all__ = ["SessionBound", "holds_session", "leased_method"]

#: Bound methods (Python's and C's): what is guarded when read off a driver object.
#: Other callables (psycopg's ``row_factory``, a class) are values, not handles.
METHODS = (MethodType, BuiltinMethodType)

_verdicts: dict[type, bool] = {}
#: Beyond this many classes, verdicts are made but not kept (a bound, not a cache policy).
_MAX_VERDICTS = 1024
_lock = threading.Lock()


def holds_session(cls: type) -> bool:
    """Whether an object of class ``cls``, returned by a driver, goes on using its session.

    An iterator or a context manager (see the module docstring). One dict
    lookup once the class was seen: the answer is the class's, not the object's.
    """
    verdict = _verdicts.get(cls)
    if verdict is None:
        verdict = hasattr(cls, "__next__") or hasattr(cls, "__enter__")
        with _lock:
            if len(_verdicts) < _MAX_VERDICTS:
                _verdicts[cls] = verdict
    return verdict


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


class SessionBound(Uncopyable):
    """A driver object that holds the session, refused once its checkout has ended.

    It behaves as the object it wraps: its attributes and methods, ``with``,
    iteration, ``len()`` and indexing (sqlite3's ``Blob``); ``isinstance(tx,
    psycopg.Transaction)`` holds (``type(tx)`` tells the truth). Every use
    first checks the lease (:class:`InvalidCursorError`, as a steady cursor's),
    then marks the session unknown: what the object does (a BEGIN, a COMMIT)
    is not seen by tether, so the state is read again before the next
    statement and the settings compared at checkin. A method read off it is
    guarded the same way, and what it returns (a ``Copy`` entered, the rows
    of ``copy.rows()``, ``tx.connection``) is lent by the same rule.

    ``__getattr__`` is fine here (see forwarding.py for why tether's own
    objects avoid it): these objects are not on the hot path.
    """

    __slots__ = ("_lent_con", "_lent_cursor", "_lent_lease", "_lent_object")

    _lent_object: Any
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

    def _lent_value(self, value: Any) -> Any:
        if isinstance(value, METHODS):
            return leased_method(self._lent_con, value, self._lent_lease, self._lent_cursor)
        if value is self._lent_object:
            return self  # a fluent method or __enter__ returning the object itself
        return lend(value, self._lent_con, self._lent_lease, self._lent_cursor)

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)  # copy and pickle probe dunders; never passed on
        return self._lent_value(getattr(self._lent_use(), name))

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._lent_use(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._lent_use(), name)

    def __enter__(self) -> Any:
        return self._lent_value(self._lent_use().__enter__())

    def __exit__(self, *exc: object) -> Any:
        return self._lent_use().__exit__(*exc)

    def __iter__(self) -> Any:
        return self._lent_value(iter(self._lent_use()))

    def __next__(self) -> Any:
        return self._lent_value(next(self._lent_use()))

    def __len__(self) -> int:
        return len(self._lent_use())

    def __bool__(self) -> bool:
        return bool(self._lent_use())

    def __getitem__(self, key: Any) -> Any:
        return self._lent_value(self._lent_use()[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._lent_use()[key] = value

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The wrapped object's class, for ``isinstance`` checks (``type()`` tells the truth)."""
        return type(self._lent_object)

    def __repr__(self) -> str:
        return f"<tether {type(self).__name__} {self._lent_object!r}>"
