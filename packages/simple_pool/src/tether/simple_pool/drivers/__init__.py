"""Driver adapters: one class per database driver, chosen from the creator.

``adapter_for(creator)`` picks the adapter from what the creator is (the
module, or the module a connect function belongs to); ``driver=`` overrides
the choice with a name (``"psycopg"``), an adapter class or an instance.

A creator tether does not recognise (``lambda: psycopg.connect(dsn)``, a
function of your own) gets the generic :class:`DriverAdapter`; once the first
connection exists, :func:`refine` swaps in the adapter of the driver that
connection belongs to, so error classification works for it too.

Behind PgBouncer, :func:`behind_pgbouncer` gives the adapter for a driver
and PgBouncer's pool mode (:mod:`.pgbouncer`).

The adapter modules are imported here so that they register themselves; none
of them imports its driver before a connection is made, so this package
imports without psycopg, PyGreSQL or PyMySQL installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .base import DriverAdapter, top_module_name

__all__ = [
    "DriverAdapter",
    "PgClassicAdapter",
    "PgdbAdapter",
    "PsycopgAdapter",
    "PyMySQLAdapter",
    "Sqlite3Adapter",
    "adapter_for",
    "behind_pgbouncer",
    "refine",
    "register",
]

_REGISTRY: dict[str, type[DriverAdapter]] = {}


def register(cls: type[DriverAdapter]) -> type[DriverAdapter]:
    """Make an adapter class known by its ``name`` and the module names it serves."""
    _REGISTRY[cls.name] = cls
    for module_name in cls.modules:
        _REGISTRY[module_name] = cls
    return cls


def adapter_for(
    creator: ModuleType | Callable[..., Any],
    driver: str | DriverAdapter | type[DriverAdapter] | None = None,
) -> DriverAdapter:
    """The adapter for ``creator``: chosen by ``driver`` if given, else from the creator."""
    if isinstance(driver, DriverAdapter):
        return driver
    if isinstance(driver, type) and issubclass(driver, DriverAdapter):
        return driver(creator)
    if isinstance(driver, str):
        try:
            return _REGISTRY[driver](creator)
        except KeyError:
            known = ", ".join(sorted({cls.name for cls in _REGISTRY.values()}))
            raise ValueError(f"driver: unknown driver {driver!r}; known: {known}") from None
    if driver is not None:
        raise TypeError(
            f"driver: expected a name, a DriverAdapter or None, got {type(driver).__name__}"
        )
    cls = _REGISTRY.get(_module_name(creator))
    if cls is not None:
        return cls(creator)
    adapter = DriverAdapter(creator)
    adapter.refinable = True
    return adapter


def refine(adapter: DriverAdapter, conn: Any) -> DriverAdapter:
    """The adapter for the driver ``conn`` belongs to, if ``adapter`` was only a guess.

    Call it with the first connection a creator made. When ``adapter`` is the
    generic fallback :func:`adapter_for` chose for an unknown creator
    (:attr:`DriverAdapter.refinable`), the connection's class tells the driver
    (``psycopg.Connection`` -> :class:`PsycopgAdapter`; subclasses defined
    elsewhere count through their bases) and a new adapter for the same
    creator is returned. Otherwise, or when the connection's driver is
    unknown too, ``adapter`` itself is returned. The refined adapter keeps
    calling the user's creator unchanged: it adds no driver keyword arguments
    to a function that would not accept them (see
    :attr:`DriverAdapter.creator_is_driver`).
    """
    if not adapter.refinable:
        return adapter
    for klass in type(conn).__mro__:
        name = top_module_name(klass)
        cls = _REGISTRY.get(name)
        if cls is None:
            continue
        if type(adapter) is cls:
            return adapter
        refined = cls(adapter.creator, module=sys.modules.get(name))
        driver_module = sys.modules.get(name)
        if driver_module is not None:
            # A creator given as a wrapper module keeps its connect(), but the driver's
            # exception classes and threadsafety come from the driver's own module.
            refined.module = driver_module
        refined.opened(conn)  # opened by the guess: the driver's adapter notes it now
        return refined
    return adapter


def _module_name(creator: object) -> str:
    return top_module_name(creator)


# The adapters register themselves on import; imported last because they use register().
from .pg import PgClassicAdapter  # noqa: E402
from .pgbouncer import behind_pgbouncer  # noqa: E402  (presets: subclasses, not registered)
from .pgdb import PgdbAdapter  # noqa: E402
from .psycopg import PsycopgAdapter  # noqa: E402
from .pymysql import PyMySQLAdapter  # noqa: E402
from .sqlite import Sqlite3Adapter  # noqa: E402
