"""The objects ``pool.connection()`` returns: thin proxies that give the connection back on close.

A proxy stands for *one checkout*. It forwards every attribute to the steady
connection it holds (``cursor``, ``commit``, ``begin``...), which in turn
forwards what it does not define itself to the driver's connection, so
driver features pass through (psycopg's ``info``, ``add_notice_handler``,
PyMySQL's ``select_db``...). ``close()`` does not close anything: it gives
the connection back to the pool, and the proxy becomes unusable
(:class:`~tether.pooled.errors.InvalidConnectionError`), so a stale reference
can never reach a connection that another thread has taken since. The same
holds for everything taken from it: a method (``commit = db.commit``, the
driver's ``db.execute``) checks at each call that its checkout still holds
the connection, and a cursor raises
:class:`~tether.steady.InvalidCursorError` once its checkout has ended.

Proxies have ``__slots__`` and no per-checkout state beyond three
references, because one is made on every checkout.

A proxy that is garbage-collected while still holding its connection
gives it back (as in DBUtils) and the pool logs it as a leak; see
:mod:`tether.pooled.leaks`. For dedicated proxies this is done by a weak
reference callback the pool keeps while the proxy is checked out, not by a
``__del__`` method, which would cost every proxy twice as much to free.

``with pool.connection() as db:`` commits when the block succeeds and rolls
back when it raises, then gives the connection back: the one ``with`` rule of
every tether layer, of psycopg's and sqlite3's connections and of
psycopg_pool. (DBUtils' PooledDB rolls back either way, silently losing an
INSERT made inside the block.) A connection given back *without* ``with``
while a transaction is open is rolled back, and that is logged at WARNING
once per place in the program that gave it back.

Two ways out of the pool, as SQLAlchemy's connection proxy has them:
``invalidate()`` (also ``discard()``) closes the driver connection now and
frees its slot; ``detach()`` hands the connection over to the caller for
good (the proxy's pool is then a :class:`_Detached`, whose "give back"
closes it).

A cursor made with ``db.cursor()`` keeps its
proxy alive, so ``pool.connection().cursor().execute(...)``, which DBUtils
warns against, cannot return the connection while the cursor is in use.
"""

from __future__ import annotations

from types import BuiltinMethodType, MethodType
from typing import TYPE_CHECKING, Any

from tether.simple_pool import Uncopyable
from tether.steady import CONNECTION_SHORTCUTS

from .errors import InvalidConnectionError, NotSupportedError

if TYPE_CHECKING:
    from .pool import Pool, _Entry

__all__ = [
    "PooledConnection",
    "PooledDedicatedDBConnection",
    "PooledPgConnection",
    "PooledSharedDBConnection",
]

_OWN = frozenset({"_con", "_entry", "_pool"})
#: Bound methods (Python's and C's): what is guarded once fetched from a proxy.
#: Other callables (psycopg's ``row_factory``, a class) are values, not handles.
_METHODS = (MethodType, BuiltinMethodType)


class PooledConnection(Uncopyable):
    """Base of the proxies: one checkout of one steady connection."""

    # __dict__: a name the connection does not have, assigned on the proxy
    # (``db.request_id = 1``), is kept for this checkout only (made only when used).
    __slots__ = ("__dict__", "__weakref__", "_con", "_entry", "_pool")

    _con: Any  # the steady connection (None once given back)
    _entry: _Entry | None
    _pool: Pool | _Detached  # _Detached once detach() took the connection out of the pool
    #: The driver's connection-level execute*() run on a steady cursor (DB-API proxies).
    _shortcuts: frozenset[str] = frozenset()
    #: The class of steady connection this (forwarding) class passes attributes through for.
    _forwards: type | None = None

    def __init__(self, pool: Pool, entry: _Entry) -> None:
        self._pool = pool
        self._entry = entry
        self._con = entry.con

    def close(self) -> None:
        """Give the connection back to the pool (it is not closed); idempotent."""
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._con = None
            self._pool._checkin(entry)

    def discard(self) -> None:
        """Give the connection back *closed*: its session is never lent again; idempotent.

        For a session left in a state nobody should inherit (``SET ROLE``, a
        temporary table, a driver setting tether does not track). The pool
        closes the driver connection (an open transaction ends with it) and
        frees the slot for a new one.
        """
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._con = None
            self._pool._discard(entry)

    def invalidate(self) -> None:
        """Close the driver connection now and free its slot (SQLAlchemy's name); idempotent.

        The same as :meth:`discard`: for a connection known to be broken or
        in a state nobody should inherit. The next checkout gets a new
        connection; this proxy is closed (``InvalidConnectionError``).
        """
        self.discard()

    def detach(self) -> None:
        """Take the connection out of the pool for good; this proxy keeps it.

        As SQLAlchemy's ``detach()``: the pool forgets the connection (its
        slot is free at once for a new one, and ``stats()`` counts it as
        given back and ``detached``), and this proxy goes on working as a
        plain steady connection owned by the caller: it still reopens
        itself when that is safe, is never handed to anyone else, is not
        closed when the pool is, and its ``close()`` (or the end of a
        ``with`` block) really closes it. For a session you want to keep
        apart (a ``LISTEN``, a long export). Detaching twice does nothing;
        detaching a connection already given back raises
        ``InvalidConnectionError``.
        """
        entry = self._entry
        if entry is None:
            self._held()  # raises: given back already
            return
        pool = self._pool
        if isinstance(pool, _Detached):
            return
        pool._detach(entry)
        self._pool = _Detached(pool.name, pool._timeout)

    # The transaction methods, spelled out: a bound method fetched from the
    # proxy (``commit = db.commit``) checks at every call that this checkout
    # still holds the connection, so it can never commit another borrower's work.

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        """Commit (the steady connection's ``commit()``)."""
        return self._held().commit(*args, **kwargs)

    def rollback(self, *args: Any, **kwargs: Any) -> Any:
        """Roll back (the steady connection's ``rollback()``)."""
        return self._held().rollback(*args, **kwargs)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        """Start a transaction (the steady connection's ``begin()``)."""
        return self._held().begin(*args, **kwargs)

    def _held(self) -> Any:
        """The steady connection, while this checkout holds it."""
        con = self._con
        if con is None:
            raise InvalidConnectionError(
                f"this pooled connection was closed (given back to pool {self._pool.name})"
            )
        return con

    if TYPE_CHECKING:  # the steady connection's attributes (a forwarding subclass's at run time)

        def __getattr__(self, name: str) -> Any: ...

    def _forward_get(self, name: str) -> Any:
        # Names not defined here: the steady connection's, and through it the
        # driver connection's (passed through by a forwarding subclass, see
        # tether.steady.forwarding_class: no __getattr__ on the hot path).
        if name in _OWN:
            raise AttributeError(name)
        con = self._con
        if con is None:
            raise InvalidConnectionError(
                f"this pooled connection was closed (given back to pool {self._pool.name})"
            )
        if name in self._shortcuts:
            # db.execute(...): on a steady cursor that keeps this checkout alive
            # (``pool.connection().execute(...).fetchall()`` must not give the
            # connection back before the fetch), refused once the checkout ended.
            return _bound_to_checkout(self, con.shortcut(name, self))
        value = getattr(con, name)
        if isinstance(value, _METHODS):
            # A method (the driver's ``transaction``, ``copy``...) kept past
            # close() must not run on the connection's next borrower.
            return _bound_to_checkout(self, value)
        return value

    def _forward_set(self, name: str, value: Any) -> None:
        # ``db.autocommit = True`` is meant for the driver: through the steady
        # connection, which remembers it for reopened connections.
        con = self._con
        if con is None:
            raise InvalidConnectionError(
                f"this pooled connection was closed (given back to pool {self._pool.name})"
            )
        setattr(con, name, value)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # The one ``with`` rule of every tether layer (and of psycopg, sqlite3,
        # psycopg_pool): commit when the block succeeds, roll back when it
        # raises. Nothing open: nothing to send. Then the connection goes back.
        entry = self._entry
        if entry is None:
            return
        con = self._con
        try:
            if con.transaction_open():
                if exc_type is None:
                    con.commit()
                else:
                    # Bounded as the checkin's own rollback is (a stopped server hung
                    # the block's exit: fourth outside attack); out of time, the driver
                    # connection is closed, and the block's error goes on.
                    con.roll_back_within(self._pool._timeout)
        finally:
            self._entry = None
            self._con = None
            self._pool._checkin(entry)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The driver connection's class, so ``isinstance(db, psycopg.Connection)`` holds.

        Frameworks check the type of the connection they are given (psycopg's
        ``TypeInfo.fetch``, SQLAlchemy's psycopg dialect); a proxy that failed
        such checks would not be a drop-in. ``type(db)`` still tells the truth,
        as with wrapt's ``ObjectProxy``, and no tether code path looks here.
        """
        con = self._con
        return con.__class__ if con is not None else type(self)

    def __repr__(self) -> str:
        state = "closed" if self._con is None else repr(self._con)
        return f"<{type(self).__name__} from pool {self._pool.name}: {state}>"


def _bound_to_checkout(proxy: PooledConnection, method: Any) -> Any:
    """``method``, refusing to run once ``proxy``'s checkout has ended."""
    con = proxy._con

    def call(*args: Any, **kwargs: Any) -> Any:
        if proxy._con is not con:
            raise InvalidConnectionError(
                f"this pooled connection was closed (given back to pool {proxy._pool.name});"
                " a method taken from it cannot be used any more"
            )
        return method(*args, **kwargs)

    call.__name__ = getattr(method, "__name__", "method")
    call.__doc__ = getattr(method, "__doc__", None)
    call.__wrapped__ = method  # type: ignore[attr-defined]  # as functools.wraps: inspectable
    return call


class _Detached:
    """What a detached proxy has instead of its pool: giving the connection back closes it.

    The proxy's ``close()``, ``discard()`` and ``with`` exit call the pool's
    ``_checkin``/``_discard``; for a detached connection these really close
    it. Swapping the proxy's pool for this costs the checkout hot path nothing.
    """

    __slots__ = ("_timeout", "name")

    def __init__(self, pool_name: str, timeout: float) -> None:
        self.name = f"{pool_name}, from which it was detached"
        self._timeout = timeout  # its checkout_timeout: bounds the with block's rollback

    def _checkin(self, entry: _Entry) -> None:
        entry.con.retire()

    _discard = _checkin
    _unshare = _checkin  # never reached: a shared connection cannot be detached

    def _orphaned(self, entry: _Entry) -> None:
        """Never reached (shared proxies only); a detached connection is closed by the gc."""

    def _checkout_entry(self) -> _Entry:
        raise InvalidConnectionError(
            "this detached connection was closed; it cannot take another one from a pool"
        )

    def _attach(self, proxy: PooledConnection, entry: _Entry) -> None:
        raise AssertionError("unreachable: _checkout_entry raises")


class PooledDedicatedDBConnection(PooledConnection):
    """A DB-API 2 connection used by this checkout alone."""

    __slots__ = ()
    _shortcuts = CONNECTION_SHORTCUTS

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """A steady cursor that keeps this checkout alive while it is used."""
        con = self._con
        if con is None:
            raise InvalidConnectionError(
                f"this pooled connection was closed (given back to pool {self._pool.name})"
            )
        return con.cursor_for(self, args, kwargs)


class PooledSharedDBConnection(PooledDedicatedDBConnection):
    """A share of a DB-API 2 connection used by several threads (driver threadsafety > 1).

    ``close()`` gives back this share; the connection returns to the idle
    cache when its last share is given back.
    """

    __slots__ = ()

    def close(self) -> None:
        """Give back this share of the connection; idempotent."""
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._con = None
            self._pool._unshare(entry)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def discard(self) -> None:
        """Refused: other threads share this connection, so one of them cannot close it."""
        raise NotSupportedError(
            "discard: a shared connection cannot be discarded by one of its sharers;"
            " use a dedicated connection (pool.dedicated_connection())"
        )

    def detach(self) -> None:
        """Refused: other threads share this connection, so one of them cannot take it."""
        raise NotSupportedError(
            "detach: a shared connection cannot be detached by one of its sharers;"
            " use a dedicated connection (pool.dedicated_connection())"
        )

    def __del__(self) -> None:
        try:
            entry = self._entry
        except AttributeError:  # never set up
            return
        if entry is not None:
            self._entry = None
            self._con = None
            try:
                self._pool._orphaned(entry)
            except Exception:  # at interpreter exit anything may be gone already
                pass


class PooledPgConnection(PooledConnection):
    """A classic PyGreSQL (``pg.DB``) connection from :class:`~tether.pooled.PooledPg`."""

    __slots__ = ()

    # The classic steady connection passes pg.DB's attributes through with a
    # __getattr__ of its own, so they are not in its dir() for a forwarding
    # subclass to copy: this proxy forwards the same way.
    def __getattr__(self, name: str) -> Any:
        return self._forward_get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            self._forward_set(name, value)

    def __enter__(self) -> Any:
        # pg.DB commits each statement by itself unless a transaction was begun,
        # so a block is one only if it begins one: pg.DB's own ``with db:`` and
        # SteadyPgConnection's send BEGIN on entry; __exit__ then commits or rolls
        # back as on every layer (found by an outside attack: a block that raised
        # kept its INSERT). A BEGIN that fails gives the connection back.
        con = self._held()
        try:
            if not con.transaction_open():
                con.begin()
        except BaseException:
            self.close()
            raise
        return self

    def query(self, *args: Any, **kwargs: Any) -> Any:
        """Run a query (``pg.DB.query``, steady: see :class:`tether.steady.SteadyPgConnection`)."""
        return self._held().query(*args, **kwargs)

    def reopen(self) -> None:
        """Reopen the connection, or take another one from the pool if it was given back."""
        con = self._con
        if con is not None:
            con.reopen()
        else:
            self._pool._attach(self, self._pool._checkout_entry())
