"""peewee on tether: ``playhouse.pool``'s pooled databases, backed by a tether ``PooledDB``.

::

    from tether.frameworks.peewee import PooledPostgresqlDatabase

    db = PooledPostgresqlDatabase(
        "app", user="app", host="db", max_connections=20, stale_timeout=300, timeout=10
    )

Same names and parameters as peewee's ``playhouse.pool`` (``max_connections``,
``stale_timeout``, ``timeout``; ``manual_close()``, ``close_idle()``,
``close_stale(age)``, ``close_all()``), and the same ``connect()``/``close()``
semantics: ``db.connect()`` checks a connection out for the calling thread
(peewee keeps it in the thread's ``_state``), ``db.close()`` gives it back.
Underneath, every connection is a tether steady connection in a
:class:`~tether.pooled.PooledDB`: reopened transparently after a server
restart outside transactions, never inside ``atomic()``, with a deadline on
every wait.

How it differs from a subclass of peewee's database
---------------------------------------------------
peewee's ``Database.connect()`` calls ``_connect()`` while it holds the
database's ``_lock``, one lock for all threads, and ``close()`` needs the
same lock. A pool that *blocks* in ``_connect()`` until a connection is
given back therefore waits for a ``close()`` that cannot happen: with 16
threads on 4 connections, every checkout times out. (``playhouse.pool``
avoids this by raising inside the lock and waiting outside it, polling.)
Here ``connect()`` and ``close()`` are written out so that peewee's lock
guards only the thread's state change: the tether checkout (which may
wait) and the checkin (which may roll back, or close a connection) run
with no lock held, and a returned connection goes straight to the longest
waiter.

``_connect()`` stays peewee's own: it is the *creator* of the tether pool,
called for every new driver connection (also those tether opens after a
restart), so peewee's per-connection setup (psycopg's autocommit mode,
sqlite's pragmas and user functions, MySQL's charset) is on every session.
``_initialize_connection()`` runs on every checkout, as in peewee's pools.
``db.connection()`` is tether's pooled connection: every driver attribute
passes through, and ``db.connection().dbapi_connection`` is the driver's.

Parameters
----------
* ``max_connections`` (default 20; 0 or None: no limit) -> ``maxconnections``.
* ``timeout``: peewee's wait for a free connection. ``None`` (the default):
  no wait, :class:`playhouse.pool.MaxConnectionsExceeded` at once at the
  limit. A number of seconds: wait that long (tether's ``checkout_timeout``),
  then ``MaxConnectionsExceeded``. ``0`` means "wait forever" in peewee;
  tether never waits forever, so it becomes :data:`WAIT_FOREVER` seconds
  (300): long enough for any healthy application, short enough that a hang
  shows up as an error instead of a stuck thread.
* ``stale_timeout`` (seconds) -> ``max_lifetime``: a connection older than
  that is closed between uses (tether jitters lifetimes by up to 10 %, so it
  may go a little earlier).
* ``tether``: more :class:`~tether.pooled.PooledDB` keyword arguments
  (``mincached``, ``max_idle``, ``ping_after``, ``reset_session``,
  ``leak_threshold``, ``on_event``, ``name``, or ``checkout_timeout`` itself);
  they win over the values above.

The closing methods, compared with peewee's
-------------------------------------------
peewee closes driver connections that other threads are using (``close_all``,
``close_stale``). tether never touches a connection another thread holds
(its statement could be running), so those connections are *retired*
instead: closed when their holder gives them back, never lent again.

* ``manual_close()``: close this thread's connection instead of returning it.
* ``close_idle()``: close the idle connections now (returns how many).
* ``close_stale(age=600)``: retire connections checked out more than ``age``
  seconds ago (returns how many). Their slots are freed when they come
  back; a thread that died holding one gives it back when it is collected.
* ``close_all()``: close this thread's connection and the idle ones, and
  retire the ones in use.
* ``db.tether_pool`` is the :class:`~tether.pooled.PooledDB` (``stats()``);
  ``db.tether_pool.close()`` shuts it down.

PostgreSQL runs on psycopg 3 (peewee's ``prefer_psycopg3``, set by default:
tether has no psycopg2 adapter), MySQL/MariaDB on PyMySQL, SQLite on
peewee's sqlite3 module (``check_same_thread=False`` by default: a pooled
connection moves between threads; use a file, not ``:memory:``, which would
be a different database per connection).
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Union

import peewee
from peewee import ImproperlyConfigured, InterfaceError, OperationalError
from playhouse.pool import MaxConnectionsExceeded
from playhouse.postgres_ext import PostgresqlExtDatabase

from tether.pooled import PooledDB, TooManyConnectionsError
from tether.simple_pool.drivers import (
    DriverAdapter,
    PsycopgAdapter,
    PyMySQLAdapter,
    Sqlite3Adapter,
)

__all__ = [
    "WAIT_FOREVER",
    "MaxConnectionsExceeded",
    "PooledDatabase",
    "PooledMySQLDatabase",
    "PooledPostgresqlDatabase",
    "PooledPostgresqlExtDatabase",
    "PooledSqliteDatabase",
]

#: Seconds a checkout waits where peewee's ``timeout=0`` means "wait forever".
WAIT_FOREVER = 300.0

#: peewee's module, untyped: its internals (the exception wrapper, the driver
#: modules it imported) are not in its stubs.
_pw: Any = peewee
_names = itertools.count(1)
_NOT_INITIALIZED = "Error, database must be initialized before opening a connection."

Number = Union[int, float, str, None]


def _make_int(value: Number) -> int | float | None:
    """peewee's ``make_int``: numbers stay, strings (from a URL) become ints."""
    if value is not None and not isinstance(value, (int, float)):
        return int(value)
    return value


class _Checkout:
    """What the database knows about one checkout: when, and whether to retire it."""

    __slots__ = ("ref", "retire", "taken_at")

    def __init__(self, ref: weakref.ref[Any]) -> None:
        self.ref = ref
        self.taken_at = time.time()
        self.retire = False


class PooledDatabase(peewee.Database):
    """The pool behaviour shared by every backend below (see the module docstring).

    Combine it with a peewee database class, pool first, and give the
    driver adapter in :meth:`_tether_driver`, as the classes below do.
    """

    # peewee's own attributes, not in its stubs.
    _lock: Any
    _state: Any
    #: peewee's driver-level connect: the tether pool's creator.
    _connect: Callable[[], Any]
    #: peewee's hooks: the server version once, the session per checkout.
    _set_server_version: Callable[[Any], None]
    _initialize_connection: Callable[[Any], None]

    def __init__(
        self,
        database: str | None,
        max_connections: Number = 20,
        stale_timeout: Number = None,
        timeout: Number = None,
        *args: Any,
        tether: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Set before peewee's __init__, which calls init() (and so close()).
        self._max_connections = _make_int(max_connections)
        self._stale_timeout = _make_int(stale_timeout)
        self._wait_timeout = _make_int(timeout)
        self._tether_options: dict[str, Any] = dict(tether or {})
        self._pool: PooledDB[Any] | None = None
        self._pool_guard = threading.Lock()  # creating or replacing _pool; never held for I/O
        #: The checkouts of every thread, by id of tether's connection. Changed
        #: by single dict operations (atomic in CPython), so a weak reference
        #: callback can drop an entry whatever lock its thread holds.
        self._checked_out: dict[int, _Checkout] = {}
        super().__init__(database, *args, **kwargs)

    def init(
        self,
        database: str | None,
        max_connections: Number = None,
        stale_timeout: Number = None,
        timeout: Number = None,
        tether: Mapping[str, Any] | None = None,
        **connect_kwargs: Any,
    ) -> None:
        """peewee's ``init()``: (re)configure; a pool made before is closed and made anew."""
        super().init(database, **connect_kwargs)
        if max_connections is not None:
            self._max_connections = _make_int(max_connections)
        if stale_timeout is not None:
            self._stale_timeout = _make_int(stale_timeout)
        if timeout is not None:
            self._wait_timeout = _make_int(timeout)
        if tether is not None:
            self._tether_options = dict(tether)
        with self._pool_guard:
            old, self._pool = self._pool, None
        if old is not None:
            old.close()  # idle connections now, those in use when they come back

    # -- the tether pool --------------------------------------------------------------------

    @property
    def tether_pool(self) -> PooledDB[Any]:
        """The :class:`~tether.pooled.PooledDB` behind this database (made on first use)."""
        pool = self._pool
        if pool is not None:
            return pool
        if self.deferred:
            raise InterfaceError(_NOT_INITIALIZED)
        new = PooledDB(self._connect, **self._pool_options())  # may connect: no lock held
        with self._pool_guard:
            pool = self._pool
            if pool is None:
                self._pool = pool = new
        if pool is not new:  # another thread was quicker
            new.close()
        return pool

    def _pool_options(self) -> dict[str, Any]:
        """PooledDB's keyword arguments from peewee's parameters, then ``tether``'s."""
        wait = self._wait_timeout
        options: dict[str, Any] = {
            "maxconnections": int(self._max_connections or 0),
            "blocking": wait is not None,
            "driver": self._tether_driver(),
            "name": f"{type(self).__name__}-{next(_names)}",
        }
        if wait is not None:
            options["checkout_timeout"] = WAIT_FOREVER if wait == 0 else float(wait)
        if self._stale_timeout:
            options["max_lifetime"] = float(self._stale_timeout)
        options.update(self._tether_options)
        return options

    def _tether_driver(self) -> DriverAdapter:
        """The tether driver adapter for the connections ``_connect()`` makes."""
        raise NotImplementedError

    # -- connect and close: peewee's, with the waiting outside peewee's lock ---------------

    def _may_open(self, reuse_if_open: bool) -> bool:
        """Under peewee's lock: may this thread open a connection? (peewee's checks)."""
        if self.deferred:
            raise InterfaceError(_NOT_INITIALIZED)
        if not self._state.closed:
            if reuse_if_open:
                return False
            raise OperationalError("Connection already opened.")
        return True

    def connect(self, reuse_if_open: bool = False) -> bool:
        """Check a connection out of the pool for this thread (peewee's ``connect()``).

        Waits for a free connection as ``timeout`` says, holding no lock.
        """
        with self._lock:
            if not self._may_open(reuse_if_open):
                return False
        con = self._checkout()
        installed = False
        try:
            with self._lock:  # thread_safe=False: another thread may have connected meanwhile
                if self._may_open(reuse_if_open):
                    self._state.reset()
                    self._state.set_connection(con)
                    installed = True
            if not installed:
                self._give_back(con)
                return False
            with _pw.__exception_wrapper__:
                if self.server_version is None:
                    self._set_server_version(con)  # a driver attribute: no round trip
                self._initialize_connection(con)
        except BaseException:
            if installed:
                with self._lock:
                    if self._state.conn is con:
                        self._state.reset()
            self._give_back(con)
            raise
        return True

    def close(self) -> bool:
        """Give this thread's connection back to the pool (peewee's ``close()``).

        Refused inside a transaction, as in peewee. The checkin (a rollback
        if something was left open, closing a retired connection) runs after
        peewee's lock is released.
        """
        with self._lock:
            if self.deferred:
                raise InterfaceError(_NOT_INITIALIZED)
            if self.in_transaction():
                raise OperationalError("Attempting to close database while transaction is open.")
            con = None if self._state.closed else self._state.conn
            self._state.reset()
        if con is None:
            return False
        with _pw.__exception_wrapper__:
            self._give_back(con)
        return True

    # -- transactions: ended through the connection, so tether sees them end ---------------

    def commit(self) -> None:
        """Commit this thread's transaction with the connection's ``commit()``.

        peewee sends ``COMMIT`` as a statement; through the DB-API method,
        tether knows the transaction ended, and never retries a failed commit.
        """
        if self.is_closed():
            raise InterfaceError("Cannot commit, database connection not open.")
        with _pw.__exception_wrapper__:
            self._state.conn.commit()

    def rollback(self) -> None:
        """Roll back with the connection's ``rollback()`` (peewee sends ``ROLLBACK`` as SQL).

        After the server ended the session inside a transaction, a
        ``ROLLBACK`` statement would fail and hide the error that ended the
        ``atomic()`` block; tether's ``rollback()`` succeeds, and the next
        statement gets a new session.
        """
        if self.is_closed():
            raise InterfaceError("Cannot rollback, database connection not open.")
        with _pw.__exception_wrapper__:
            self._state.conn.rollback()

    def _close(self, conn: Any) -> None:
        """peewee's hook for closing a connection: here, giving it back to the pool."""
        self._give_back(conn)

    def _checkout(self) -> Any:
        """A tether connection for this thread; ``MaxConnectionsExceeded`` when none is free."""
        pool = self.tether_pool
        try:
            with _pw.__exception_wrapper__:  # driver errors become peewee's, as in connect()
                con = pool.dedicated_connection()
        except TooManyConnectionsError as exc:
            raise MaxConnectionsExceeded(f"Exceeded maximum connections: {exc}") from exc
        key = id(con)
        checked_out = self._checked_out

        def forget(_: weakref.ref[Any]) -> None:  # the proxy was collected (its thread died)
            checked_out.pop(key, None)

        checked_out[key] = _Checkout(weakref.ref(con, forget))
        return con

    def _give_back(self, con: Any) -> None:
        """End a checkout: back to the pool, or closed if it was retired."""
        record = self._checked_out.pop(id(con), None)
        if record is not None and record.retire:
            con.discard()
        else:
            con.close()

    def _retire(self, age: float | None) -> int:
        """Mark the checkouts older than ``age`` seconds (all: None) to be closed on return."""
        cutoff = None if age is None else time.time() - age
        n = 0
        for record in self._checked_out.copy().values():
            if not record.retire and (cutoff is None or record.taken_at < cutoff):
                record.retire = True
                n += 1
        return n

    # -- playhouse.pool's methods -----------------------------------------------------------

    def manual_close(self) -> bool:
        """Close this thread's connection instead of returning it (False: none was open)."""
        if self.is_closed():
            return False
        record = self._checked_out.get(id(self._state.conn))
        if record is not None:
            record.retire = True
        self.close()
        return True

    def close_idle(self) -> int:
        """Close the connections nobody has checked out, now; returns how many."""
        pool = self._pool
        return 0 if pool is None else pool.close_idle()

    def close_stale(self, age: float = 600) -> int:
        """Retire connections checked out more than ``age`` seconds ago; returns how many.

        peewee closes them under their threads; tether closes each when its
        holder gives it back (its slot is freed then).
        """
        return self._retire(float(age))

    def close_all(self) -> None:
        """Close this thread's connection and every idle one; retire the ones in use."""
        self.close()
        self._retire(None)
        self.close_idle()


class PooledPostgresqlDatabase(PooledDatabase, peewee.PostgresqlDatabase):
    """peewee's ``PooledPostgresqlDatabase`` on tether, with psycopg 3."""

    def init(self, database: str | None, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefer_psycopg3", True)  # tether speaks psycopg 3, not psycopg2
        super().init(database, *args, **kwargs)

    def _tether_driver(self) -> DriverAdapter:
        import psycopg

        if not isinstance(self._adapter, _pw.Psycopg3Adapter):  # type: ignore[attr-defined]
            raise ImproperlyConfigured(
                "tether's pooled PostgreSQL databases need psycopg 3 (prefer_psycopg3=True)"
            )
        return PsycopgAdapter(self._connect, module=psycopg)


class PooledPostgresqlExtDatabase(PooledPostgresqlDatabase, PostgresqlExtDatabase):  # type: ignore[misc]
    """peewee's ``PooledPostgresqlExtDatabase`` (``playhouse.postgres_ext``) on tether."""


class PooledMySQLDatabase(PooledDatabase, peewee.MySQLDatabase):  # type: ignore[misc]
    """peewee's ``PooledMySQLDatabase`` on tether, with PyMySQL."""

    def _tether_driver(self) -> DriverAdapter:
        mysql = _pw.mysql
        if mysql is None or getattr(mysql, "__name__", "") != "pymysql":
            raise ImproperlyConfigured(
                "tether's pooled MySQL database needs PyMySQL (peewee found"
                f" {getattr(mysql, '__name__', None)!r})"
            )
        return PyMySQLAdapter(self._connect, module=mysql)


class PooledSqliteDatabase(PooledDatabase, peewee.SqliteDatabase):
    """peewee's ``PooledSqliteDatabase`` on tether (``check_same_thread=False`` by default)."""

    def init(self, database: str | None, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("check_same_thread", False)  # a pooled connection changes threads
        super().init(database, *args, **kwargs)

    def _tether_driver(self) -> DriverAdapter:
        return Sqlite3Adapter(self._connect, module=_pw.sqlite3)
