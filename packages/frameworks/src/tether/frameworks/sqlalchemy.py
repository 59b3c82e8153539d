"""SQLAlchemy on tether: :class:`TetherPool`, a SQLAlchemy pool backed by tether's connections.

::

    from sqlalchemy import create_engine
    from tether.frameworks.sqlalchemy import TetherPool

    engine = create_engine(
        "postgresql+psycopg://app:secret@db/app",
        poolclass=TetherPool,
        tether={"pool": "pooled", "maxconnections": 20},
    )

SQLAlchemy connects with the URL as usual (its dialect builds the connect
arguments, ``do_connect`` events and ``connect_args`` apply); tether owns the
driver connections: a :class:`~tether.pooled.PooledDB` (``"pool": "pooled"``,
the default) or a :class:`~tether.persistent.PersistentDB` (``"persistent"``:
one connection per thread). Every other key of ``tether`` is a keyword
argument of that class (``maxconnections``, ``max_lifetime``, ``maxusage``...).

What SQLAlchemy sees
--------------------
* A checkout is a tether checkout: SQLAlchemy's ``Connection`` runs on a
  pooled proxy or on the thread's persistent connection, so lost connections
  are reopened transparently where that is safe (outside transactions), and
  a transaction's statements are never retried on a new session.
* The ``connect`` event (and ``first_connect``: the dialect's
  ``initialize()``) fires once per *driver* connection, with the driver's
  own connection object, whenever tether opens one, including the ones it
  opens transparently after a server restart. So the dialect's per-connection
  setup (psycopg's notice handler, an engine-wide ``isolation_level``) and
  your own ``connect`` listeners (``PRAGMA foreign_keys=ON``...) are in place
  on every session, exactly once. ``checkout``/``checkin``/``reset`` events
  fire per checkout, with tether's connection object. ``close`` events do not
  fire: tether closes driver connections itself.
* When tether cannot recover transparently (the connection broke inside a
  transaction), the driver's own exception reaches SQLAlchemy, whose
  disconnect detection sees it as usual: the ``Connection`` is invalidated,
  and invalidation closes the driver connection underneath, so tether opens
  a new one for the next checkout.
* Checkout waits end with :class:`sqlalchemy.exc.TimeoutError`, as with
  ``QueuePool``.

QueuePool's arguments are understood: ``pool_size`` (idle connections kept:
tether's ``maxcached``), ``max_overflow`` (``maxconnections = pool_size +
max_overflow``; -1: no limit), ``pool_timeout`` (``checkout_timeout``),
``pool_recycle`` (``max_lifetime``), ``pool_pre_ping`` (tether checks the
connection at checkout: ``ping=1``, and for pooled ``ping_after=0``). Values
in ``tether`` win. Without ``pool_pre_ping`` nothing is checked at
checkout: no round trip per checkout; a server that closed the session is
noticed on its socket before the next statement is sent.

``tether`` may also be an existing :class:`~tether.pooled.PooledDB` or
:class:`~tether.persistent.PersistentDB` (shared with code outside
SQLAlchemy). SQLAlchemy's connect arguments are then unused, tether's own
``on_connect`` cannot be set, and the ``connect`` event fires when a checkout
brings a driver connection SQLAlchemy has not seen yet (not for a connection
reopened in the middle of a checkout).

Persistent mode: a thread that checks out a second connection while it
still holds its persistent one (two ``Session``\\ s open at once, say) gets a
temporary connection of its own, closed when given back, so two SQLAlchemy
connections never share one session.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Union, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool
from sqlalchemy.pool.base import ConnectionPoolEntry, _ConnectionRecord

from tether.persistent import PersistentDB
from tether.persistent import TooManyConnectionsError as PersistentTooMany
from tether.pooled import PooledConnection, PooledDB
from tether.pooled import TooManyConnectionsError as PooledTooMany
from tether.simple_pool.errors import ConfigurationError, PoolTimeout, TetherError

__all__ = ["PERSISTENT", "POOLED", "TetherPool"]

#: ``tether={"pool": ...}`` values.
POOLED = "pooled"
PERSISTENT = "persistent"

TetherGenerator = Union[PooledDB[Any], PersistentDB[Any]]
_FULL = (PoolTimeout, PooledTooMany, PersistentTooMany)


class TetherPool(Pool):
    """A SQLAlchemy pool whose connections are tether's (see the module docstring).

    Use it as ``create_engine(url, poolclass=TetherPool, tether={...})``.
    ``creator`` is SQLAlchemy's (made from the URL by ``create_engine``).
    ``tether``: a mapping with ``"pool"`` (``"pooled"`` or ``"persistent"``) and
    keyword arguments for :class:`~tether.pooled.PooledDB` /
    :class:`~tether.persistent.PersistentDB`, or an existing instance of either.
    ``pool_size``, ``max_overflow``, ``timeout``, ``recycle`` and ``pre_ping``
    are QueuePool's, translated to tether's options. Other arguments are
    :class:`sqlalchemy.pool.Pool`'s.
    """

    def __init__(
        self,
        creator: Any,
        tether: Mapping[str, Any] | TetherGenerator | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        timeout: float | None = None,
        recycle: int = -1,
        pre_ping: bool = False,
        **kw: Any,
    ) -> None:
        # tether does recycling and pre-ping itself; SQLAlchemy's would act
        # on checkouts, not on the driver connections.
        super().__init__(creator, recycle=-1, pre_ping=False, **kw)
        self._args: dict[str, Any] = {
            "tether": tether,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "timeout": timeout,
            "recycle": recycle,
            "pre_ping": pre_ping,
        }
        self._lock = threading.Lock()
        self._tether: TetherGenerator | None = None
        self._user_on_connect: Callable[[Any], object] | None = None
        #: ids of the persistent connections checked out now (each belongs to one thread).
        self._held: set[int] = set()
        #: Driver connections whose ``connect`` event has fired (existing tether pools only).
        self._seen: weakref.WeakSet[Any] | None = None
        if isinstance(tether, (PooledDB, PersistentDB)):
            self._owned = False
            self._mode: str = POOLED if isinstance(tether, PooledDB) else PERSISTENT
            self._tether = tether
            self._seen = weakref.WeakSet()
            self._options: dict[str, Any] = {}
        elif tether is None or isinstance(tether, Mapping):
            self._owned = True
            self._options = _translate(
                dict(tether or {}), pool_size, max_overflow, timeout, recycle, pre_ping
            )
            self._mode = self._options.pop("pool", POOLED)
            if self._mode not in (POOLED, PERSISTENT):
                raise ValueError(
                    f"tether: 'pool' must be {POOLED!r} or {PERSISTENT!r}, got {self._mode!r}"
                )
            user_on_connect = self._options.pop("on_connect", None)
            if user_on_connect is not None and not callable(user_on_connect):
                raise TypeError("tether: 'on_connect' must be a callable")
            _check_options(self._mode, self._options)
            self._user_on_connect = user_on_connect
        else:
            raise TypeError(
                "tether: expected a mapping of options, a PooledDB or a PersistentDB,"
                f" got {type(tether).__name__}"
            )

    # -- the tether side ----------------------------------------------------------------------

    @property
    def tether(self) -> TetherGenerator:
        """The tether pool (``PooledDB``) or generator (``PersistentDB``) behind this pool.

        An owned one is created on the first checkout, after ``create_engine``
        has registered the dialect's events.
        """
        generator = self._tether
        if generator is not None:
            return generator
        with self._lock:
            if self._tether is None:
                cls = PooledDB if self._mode == POOLED else PersistentDB
                self._tether = cls(self._connect_driver, on_connect=self._prepare, **self._options)
            return self._tether

    @property
    def mode(self) -> str:
        """``"pooled"`` or ``"persistent"``."""
        return self._mode

    def _connect_driver(self) -> Any:
        """A new driver connection, made by SQLAlchemy's creator (URL, connect_args, events)."""
        return self._invoke_creator(cast(ConnectionPoolEntry, None))

    def _prepare(self, raw: Any) -> None:
        """tether's ``on_connect``: fire SQLAlchemy's connect events for a new driver connection."""
        if self._user_on_connect is not None:
            self._user_on_connect(raw)
        self._fire_connect(raw)

    def _fire_connect(self, raw: Any) -> None:
        record = _ConnectionRecord(self, connect=False)
        record.dbapi_connection = raw
        record.starttime = time.time()
        dispatch: Any = self.dispatch
        if dispatch.first_connect:
            dispatch.first_connect.for_modify(dispatch).exec_once_unless_exception(raw, record)
        dispatch.connect.for_modify(dispatch)._exec_w_sync_on_first_run(raw, record)

    def _checkout(self) -> Any:
        """A tether connection for one SQLAlchemy checkout."""
        try:
            generator = self.tether  # (made at the first checkout: mincached connects there)
            if isinstance(generator, PooledDB):
                con = generator.dedicated_connection()
            else:
                con = generator.connection()
                with self._lock:
                    nested = id(con) in self._held
                    if not nested:
                        self._held.add(id(con))
                if nested:  # this thread holds its connection already: a temporary one
                    con = generator.steady_connection()
        except _FULL as exc:
            raise sa_exc.TimeoutError(f"tether: no connection available: {exc}") from exc
        except ConfigurationError as exc:
            raise _as_driver_error(exc) from exc
        if self._seen is not None:
            self._see(con)
        return con

    def _see(self, con: Any) -> None:
        """Fire ``connect`` for a driver connection of a tether pool we did not create."""
        raw = con.dbapi_connection
        if raw is None or raw in self._seen:  # type: ignore[operator]
            return
        try:
            self._fire_connect(raw)
        except BaseException:
            self._give_back(con)
            raise
        # What the events configured (the dialect's hstore adapters) stays for
        # later checkouts: else tether takes it back at checkin, as a borrower's.
        con.keep_configuration()
        self._seen.add(raw)  # type: ignore[union-attr]

    def _give_back(self, con: Any) -> None:
        """End a checkout: return the pooled proxy, or release the persistent connection."""
        if self._mode == PERSISTENT:
            with self._lock:
                self._held.discard(id(con))
        con.close()  # pooled: back to the pool; persistent: rolls back; temporary: closes

    # -- SQLAlchemy's Pool interface ---------------------------------------------------------

    def _do_get(self) -> ConnectionPoolEntry:
        return _TetherRecord(self)

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        con = record.dbapi_connection
        if con is not None:
            cast(_ConnectionRecord, record).dbapi_connection = None
            if _soft_invalidated(record):
                # ``connection.invalidate(soft=True)``: QueuePool replaces the driver
                # connection at its next checkout; a record here lives for one
                # checkout, so the driver connection is closed as it is given back
                # (seventh outside attack: it was reused).
                self._close_connection(con)
            else:
                self._give_back(con)

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # SQLAlchemy closes a connection only when it must not be used again
        # (invalidated after a disconnect, detached): close the driver
        # connection under it, so that tether opens a new one, then give the
        # checkout back.
        self.logger.debug("Closing driver connection under %r", connection)
        if isinstance(connection, PooledConnection):
            # Given back closed, never lent again: no rollback is attempted on the
            # dead session, and no "given back with its transaction open" warning
            # (seventh outside attack) for what SQLAlchemy itself invalidated.
            try:
                connection.discard()
            except Exception:
                self.logger.exception("Exception discarding connection %r", connection)
            return
        try:
            raw = connection.dbapi_connection
            if raw is not None:
                raw.close()
        except Exception:
            self.logger.debug("closing the driver connection failed", exc_info=True)
        try:
            self._give_back(connection)
        except Exception:
            self.logger.exception("Exception giving back connection %r", connection)

    def recreate(self) -> TetherPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
            **self._args,
        )

    def dispose(self) -> None:
        """Close the tether pool this pool created (idle connections now, the rest on return)."""
        if self._owned and self._tether is not None:
            self._tether.close()

    def status(self) -> str:
        generator = self._tether
        if generator is None:
            return f"TetherPool ({self._mode}, not started)"
        if isinstance(generator, PooledDB):
            stats = generator.stats()
            keys = ("size", "idle", "in_use")
            shown = ", ".join(f"{k}={stats.get(k)}" for k in keys if k in stats)
            return f"TetherPool ({self._mode}): {shown or stats}"
        return f"TetherPool ({self._mode}): {generator!r}"


class _TetherRecord(_ConnectionRecord):
    """SQLAlchemy's record of one checkout; its connection is a tether checkout.

    Made without connecting (no ``connect`` event per checkout); the
    checkout is taken when SQLAlchemy asks for the connection. Recycling
    and invalidation timestamps play no part: tether decides when driver
    connections are replaced.
    """

    def __init__(self, pool: TetherPool) -> None:
        super().__init__(pool, connect=False)
        self._tether_pool = pool

    def get_connection(self) -> Any:
        con = self.dbapi_connection
        if con is None:
            con = self._tether_pool._checkout()
            self.dbapi_connection = con
            self.starttime = time.time()
        return con


def _check_options(mode: str, options: Mapping[str, Any]) -> None:
    """TypeError for an option the chosen tether class does not take, at ``create_engine``.

    Its creator here takes no arguments, so every other keyword would reach it
    at the first checkout (found by an outside attack: ``reset_session`` with
    ``"pool": "persistent"`` failed there with a TypeError about
    ``_connect_driver``).
    """
    cls = PooledDB if mode == POOLED else PersistentDB
    known = {
        name
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(options) - known - {"creator"})
    if unknown:
        raise TypeError(
            f"tether: {', '.join(repr(name) for name in unknown)}: not an option of"
            f" {cls.__name__} ('pool': {mode!r})"
        )


def _as_driver_error(exc: ConfigurationError) -> BaseException:
    """tether's refused-login (or unusable arguments) error as the driver's own error class.

    SQLAlchemy wraps a driver's error from the pool as ``sqlalchemy.exc.OperationalError``
    (QueuePool's behaviour); tether's own error class it passes on unwrapped, which code
    catching SQLAlchemy's errors missed (eighth outside attack). The message is tether's
    (the password masked), and tether's error is the cause.
    """
    original = exc.__cause__ or exc.__context__
    if original is None or isinstance(original, TetherError):
        return exc
    try:
        return type(original)(str(exc))
    except Exception:  # a driver error class that takes other arguments
        return exc


def _soft_invalidated(record: Any) -> bool:
    """Whether SQLAlchemy soft-invalidated ``record`` during its checkout.

    SQLAlchemy 2.x stamps ``_soft_invalidate_time`` (a class attribute, 0
    until ``invalidate(soft=True)``) and compares it with ``starttime``; read
    here, the one place this package depends on that record's internals.
    """
    soft = getattr(record, "_soft_invalidate_time", 0) or 0
    return bool(soft and soft > (getattr(record, "starttime", 0) or 0))


def _translate(
    options: dict[str, Any],
    pool_size: int | None,
    max_overflow: int | None,
    timeout: float | None,
    recycle: int,
    pre_ping: bool,
) -> dict[str, Any]:
    """tether options from QueuePool's arguments; explicit tether options win."""
    pooled = options.get("pool", POOLED) == POOLED
    if pooled:
        if pool_size is not None:
            options.setdefault("maxcached", pool_size)
            if max_overflow is not None:
                limit = 0 if max_overflow < 0 else pool_size + max_overflow
                options.setdefault("maxconnections", limit)
        options.setdefault("blocking", True)
        if timeout is not None:
            options.setdefault("checkout_timeout", timeout)
    elif timeout is not None:
        options.setdefault("checkout_timeout", timeout)
    if recycle is not None and recycle > 0:
        options.setdefault("max_lifetime", float(recycle))
    if pre_ping:
        options.setdefault("ping", 1)
        if pooled:
            options.setdefault("ping_after", 0.0)
    else:
        options.setdefault("ping", 0)
    return options
