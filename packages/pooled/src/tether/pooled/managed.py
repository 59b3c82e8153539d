"""``manage(module)``: pool a DB-API module's ``connect()`` without changing the code that calls it.

SQLAlchemy 1.x had ``sqlalchemy.pool.manage(module, **params)``: a stand-in
for a DB-API module whose ``connect(*args, **kwargs)`` returns a pooled
connection, from one pool per distinct set of connect arguments. This is
that, on :class:`~tether.pooled.PooledDB`::

    sqlite3 = manage(sqlite3, maxconnections=5)
    db = sqlite3.connect("app.db")   # a pooled connection; db.close() gives it back

How it works:

* **One pool per set of connect arguments.** The arguments are turned into
  a key: the arguments themselves when they can be hashed, else their
  pickle, else their ``repr`` (so ``connect(dsn, options={...})`` works).
  The key is only compared, never logged or shown: connect arguments hold
  passwords. Keyword order does not matter.
* **Everything else passes through** to the module: ``proxy.Error``,
  ``proxy.paramstyle``, ``proxy.threadsafety``... so code that catches
  ``module.Error`` keeps working.
* **Creating a pool takes no lock while connecting.** The pool is made
  with ``mincached=0`` (no connect in the constructor) outside the
  manager's lock; of two threads that raced to make the same pool the
  second one's is closed unused (it opened nothing), and ``mincached`` is
  then applied with :meth:`~tether.pooled.pool.Pool.resize`, so the pool's
  maintenance thread opens those connections in the background. (A
  failing connect is the first checkout's error, not ``manage()``'s.)
* **One manager per module and options**: ``manage(sqlite3)`` twice gives
  the same proxy, as in SQLAlchemy; other options give another proxy
  (SQLAlchemy silently kept the first options).
* ``proxy.dispose(*args, **kwargs)`` closes the pool of those arguments,
  ``proxy.close()`` all of the proxy's pools (a later ``connect()`` makes
  new ones), and :func:`clear_managers` closes every proxy's pools and
  forgets the proxies.

The pool options are :class:`~tether.pooled.PooledDB`'s, by keyword, checked
when ``manage()`` is called (an unknown one is a ``TypeError``). ``name``,
if given, is the prefix of the pools' names (``name-1``, ``name-2``...).
"""

from __future__ import annotations

import inspect
import pickle
import threading
from collections.abc import Callable, Hashable
from typing import Any

from tether.simple_pool.checks import check_count

from .db import PooledDB

__all__ = ["ManagedModule", "clear_managers", "manage"]

#: PooledDB's DBUtils parameters, in order: passed by position, because the
#: connect arguments that follow them (``*args``) are positional too.
_PARAMS = inspect.signature(PooledDB.__init__).parameters
_POSITIONAL = [
    name
    for name, param in _PARAMS.items()
    if param.kind is param.POSITIONAL_OR_KEYWORD and name not in ("self", "creator")
]
_KEYWORD_ONLY = {name for name, param in _PARAMS.items() if param.kind is param.KEYWORD_ONLY}

#: The proxy's own attributes: never looked up on the module.
_OWN = frozenset({"_module", "_options", "_name", "_lock", "_pools", "_made"})

_lock = threading.Lock()
_managers: dict[Hashable, ManagedModule] = {}


def _key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """A key equal for equal connect arguments, whatever the keyword order; never shown."""
    items = (args, tuple(sorted(kwargs.items())))
    try:
        hash(items)
    except TypeError:  # a dict or list among the values: compare a serialised form
        pass
    else:
        return items
    try:
        return ("pickle", pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # neither hashable nor picklable: its repr is all there is
        return ("repr", repr(items))


class ManagedModule:
    """A DB-API module whose ``connect()`` returns pooled connections; see :mod:`.managed`."""

    def __init__(self, module: Any, pool_options: dict[str, Any]) -> None:
        connect = getattr(module, "connect", None)
        if not callable(connect):
            raise TypeError(
                f"module: expected a DB-API 2 module with a connect() function,"
                f" got {type(module).__name__}"
            )
        for option in pool_options:
            if option not in _POSITIONAL and option not in _KEYWORD_ONLY:
                raise TypeError(f"manage: unknown pool option {option!r}")
        check_count("mincached", pool_options.get("mincached"))  # the probe below uses 0
        self._module = module
        self._options = dict(pool_options)
        self._name = pool_options.get("name")
        # Checked now, as the constructor checks them, not at the first connect:
        # a pool made with these options (and no connect arguments) and closed.
        # mincached=0, so nothing is opened.
        self._make(0, (), {}).close()
        self._lock = threading.Lock()
        self._pools: dict[Hashable, PooledDB[Any]] = {}
        self._made = 0

    def _make(self, number: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PooledDB[Any]:
        """A new pool for these connect arguments, with ``mincached=0``: it opens nothing."""
        options = dict(self._options)
        options["mincached"] = 0
        positional = [options.pop(name, _PARAMS[name].default) for name in _POSITIONAL]
        prefix = self._name or f"manage-{getattr(self._module, '__name__', 'module')}"
        options["name"] = f"{prefix}-{number}"
        # By position, then by keyword: mypy cannot see that the two never overlap.
        make: Callable[..., PooledDB[Any]] = PooledDB
        return make(self._module, *positional, *args, **options, **kwargs)

    def get_pool(self, *args: Any, **kwargs: Any) -> PooledDB[Any]:
        """The pool for these connect arguments, made on first use."""
        key = _key(args, kwargs)
        pool = self._pools.get(key)  # one atomic dict read: the common case takes no lock
        if pool is not None:
            return pool
        with self._lock:
            self._made += 1
            number = self._made
        fresh = self._make(number, args, kwargs)  # outside the lock; no connect either
        with self._lock:
            pool = self._pools.setdefault(key, fresh)
        if pool is not fresh:  # another thread was first: use its pool
            fresh.close()
            return pool
        mincached = self._options.get("mincached")
        if mincached:
            pool.resize(mincached=mincached)  # opened by its maintenance thread
        return pool

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """A pooled connection (``close()`` gives it back) from the pool of these arguments."""
        return self.get_pool(*args, **kwargs).connection()

    def dispose(self, *args: Any, **kwargs: Any) -> None:
        """Close the pool of these connect arguments and forget it (if there is one)."""
        with self._lock:
            pool = self._pools.pop(_key(args, kwargs), None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Close and forget every pool of this proxy; a later ``connect()`` makes new ones."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:  # after the lock: closing talks to the servers
            pool.close()

    def pools(self) -> list[PooledDB[Any]]:
        """The pools made so far (one per set of connect arguments)."""
        with self._lock:
            return list(self._pools.values())

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined here: the module's (Error, paramstyle...).
        if name.startswith("__") or name in _OWN:
            raise AttributeError(name)
        return getattr(self._module, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._module)) | set(super().__dir__()))

    def __repr__(self) -> str:
        module = getattr(self._module, "__name__", type(self._module).__name__)
        return f"<ManagedModule {module}: {len(self._pools)} pool(s)>"


def manage(module: Any, **pool_options: Any) -> ManagedModule:
    """A proxy of the DB-API ``module`` whose ``connect()`` returns pooled connections.

    ``pool_options`` are :class:`~tether.pooled.PooledDB`'s. The same module
    and options give the same proxy; see :mod:`tether.pooled.managed`.
    """
    key = (id(module), _key((), pool_options))
    with _lock:
        proxy = _managers.get(key)
    if proxy is not None and proxy._module is module:
        return proxy
    made = ManagedModule(module, pool_options)  # checks the options; opens nothing
    with _lock:
        proxy = _managers.get(key)
        if proxy is None or proxy._module is not module:
            proxy = _managers[key] = made
    return proxy


def clear_managers() -> None:
    """Close every pool of every :func:`manage` proxy, and forget the proxies."""
    with _lock:
        proxies = list(_managers.values())
        _managers.clear()
    for proxy in proxies:
        proxy.close()
