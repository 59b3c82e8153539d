"""Driver objects that hold the session: lent for one borrow, refused after it.

Some of a driver's methods return an object that goes on using the driver
connection after the call returned: psycopg's ``db.transaction()`` (a
context manager: ``with tx:`` sends BEGIN or SAVEPOINT, and COMMIT),
``db.pipeline()``, ``db.notifies()`` (a generator that waits for the
session's notifications), a cursor's ``copy()`` and ``stream()``; sqlite3's
``db.iterdump()`` and ``db.blobopen()``; PyMySQL's
``fetchall_unbuffered()``. Found by outside attacks: kept past ``close()``,
each of them worked on the session of the connection's next borrower, whose
transaction it could open, commit or read. So a pool hands each of them out
inside a :class:`Lent`, which checks that the borrow still lasts before every
use.

Which results are lent is one rule, :func:`holds_session`, judged by the
result's class: an iterator (it has ``__next__``: each step may read from
the session), a context manager (``__enter__``: entering and leaving it
runs statements) or an object with a ``close()`` of its own (it holds a
resource, and a driver's is the session: PyGreSQL's ``db.source()``,
``db.locreate()``, ``db.notification_handler()``, which have neither of the
others; found by an outside attack, a kept ``Source`` read and wrote in the
next borrower's transaction). Measured over the public methods of psycopg
3.3's, sqlite3's, PyMySQL's, pgdb's and pg's connections and cursors, that
is every result that holds the session (the objects above, pgdb's
``copy_to()`` generator, a driver connection or cursor itself) and none that
does not: the others are None, numbers, strings, tuples and lists of rows,
psycopg's ``Xid``. So no driver adapter declares a quirk of its own.

Layer API: :class:`Lent` says how a lent object behaves (as the object
itself: attributes, ``with``, iteration, ``len()``, indexing,
``isinstance``); a layer says what "the borrow still lasts" means in
:meth:`Lent._lent_use` (the simple pool: the proxy is not returned;
tether.steady: the checkout's lease) and how values read off it are lent in
:meth:`Lent._lent_value`.
"""

from __future__ import annotations

import threading
from types import BuiltinMethodType, MethodType
from typing import Any

from .live import Uncopyable

__all__ = ["METHODS", "Lent", "holds_session"]

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
        verdict = hasattr(cls, "__next__") or hasattr(cls, "__enter__") or hasattr(cls, "close")
        with _lock:
            if len(_verdicts) < _MAX_VERDICTS:
                _verdicts[cls] = verdict
    return verdict


class Lent(Uncopyable):
    """A driver object that holds the session, usable while its borrow lasts.

    It behaves as the object it wraps: its attributes and methods, ``with``,
    iteration, ``len()`` and indexing (sqlite3's ``Blob``); ``isinstance(tx,
    psycopg.Transaction)`` holds (``type(tx)`` tells the truth). Every use
    goes through :meth:`_lent_use`, which a subclass defines: it raises once
    the borrow has ended. What is read off the object goes through
    :meth:`_lent_value` (a method to guard, a result to lend).

    ``__getattr__`` is fine here: these objects are not on the hot path.
    """

    __slots__ = ("_lent_object",)

    _lent_object: Any

    def _lent_use(self) -> Any:
        """The wrapped object, while its borrow lasts (else the layer's error)."""
        raise NotImplementedError

    def _lent_value(self, value: Any) -> Any:
        """``value``, read off the wrapped object or returned by it, as the borrower gets it."""
        raise NotImplementedError

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
