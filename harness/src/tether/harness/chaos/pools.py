"""The pools a chaos run drives: tether's two pools, and pools that are broken on purpose.

The runner needs little from a pool: ``connection()`` (a connection whose
``close()`` gives it back), ``close()``, the most sessions it may hold open
(``max_sessions``, for the leak check) and, if it has any, statistics that
must balance once it is quiet. :class:`PoolHandle` is that interface; a
*pool factory* builds one for a (proxied) driver target and the run's
:class:`PoolSettings`.

``POOLS`` holds the factories by name:

``pooled``      :class:`tether.pooled.PooledDB` / ``PooledPg``: ``maxconnections``
                below the worker count (so checkouts also wait), blocking
                with ``checkout_timeout``, background reconnect capped at 1 s.
``persistent``  :class:`tether.persistent.PersistentDB` / ``PersistentPg``: one
                connection per worker thread.

The deliberately broken doubles (:mod:`tether.harness.chaos.doubles`) are
registered here too, so a test can run a scenario with them by name and
check that the invariants catch them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..targets import DriverTarget
from .timeouts import Timeouts

__all__ = [
    "POOLS",
    "PersistentPoolHandle",
    "PoolFactory",
    "PoolHandle",
    "PoolSettings",
    "PooledPoolHandle",
    "make_pool",
    "register_pool",
]

log = logging.getLogger("tether.harness.chaos")


@dataclass(frozen=True)
class PoolSettings:
    """What the runner asks of every pool: sized for ``workers`` threads, with ``timeouts``."""

    workers: int
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Connection cap for pools that have one (default: workers - 1, at least 1).
    maxconnections: int | None = None
    #: Extra keyword arguments for the pool constructor.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cap(self) -> int:
        return self.maxconnections or max(1, self.workers - 1)


class PoolHandle:
    """A pool under test, as the runner sees it."""

    #: The pool's name in reports (``pooled``, ``persistent``...).
    name: str = "pool"

    def __init__(self, pool: Any, *, max_sessions: int, checkout_timeout: float | None) -> None:
        #: The pool object itself.
        self.pool = pool
        #: The most server sessions the pool may hold at once.
        self.max_sessions = max_sessions
        #: The pool's checkout timeout (None: it has none; checkouts only connect).
        self.checkout_timeout = checkout_timeout

    def connection(self) -> Any:
        """A connection for one transaction; its ``close()`` gives it back."""
        return self.pool.connection()

    def close(self) -> None:
        """Close the pool and every connection it holds."""
        self.pool.close()

    def stats(self) -> dict[str, Any] | None:
        """The pool's statistics, or None if it keeps none."""
        return None

    def open_connections(self) -> int | None:
        """How many connections the pool holds open, if it can tell."""
        return None

    def balance_problems(self, stats: dict[str, Any] | None) -> list[str]:
        """What does not add up in ``stats`` taken when the pool is quiet ([] = fine)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} max_sessions={self.max_sessions}>"


#: ``factory(target, settings) -> PoolHandle``; ``target`` already points at the proxy.
PoolFactory = Callable[[DriverTarget, PoolSettings], PoolHandle]


def target_kwargs(target: DriverTarget, settings: PoolSettings) -> dict[str, Any]:
    """The target's connect arguments with the run's driver timeouts.

    Server targets connect with keyword arguments only (``args`` is empty).
    """
    if target.args:
        raise ValueError(f"target: {target!r} has positional connect arguments")
    return settings.timeouts.apply(target.name, target.kwargs)


# -- tether.pooled ---------------------------------------------------------------------------


class PooledPoolHandle(PoolHandle):
    """A :mod:`tether.pooled` pool."""

    name = "pooled"

    def stats(self) -> dict[str, Any] | None:
        return dict(self.pool.stats())

    def open_connections(self) -> int | None:
        stats = self.pool.stats()
        return int(stats["size"]) + int(stats.get("opening", 0))

    def balance_problems(self, stats: dict[str, Any] | None) -> list[str]:
        """Once quiet: ``checkouts == checkins``, nothing in use, ``opened - closed == size``."""
        if stats is None:
            return ["the pool returned no stats"]
        problems = []
        checkouts, checkins = stats.get("checkouts"), stats.get("checkins")
        if checkouts != checkins:
            problems.append(
                f"checkouts ({checkouts}) != checkins ({checkins}) with every worker finished"
            )
        if stats.get("in_use"):
            problems.append(f"{stats['in_use']} connections still in use")
        opened, size = stats.get("opened"), stats.get("size")
        # The count of closed connections: "closed" (an int) in tether.pooled's stats.
        closed = stats.get("closed_connections", stats.get("closed"))
        if isinstance(opened, int) and isinstance(closed, int) and isinstance(size, int):
            if opened - closed != size:
                problems.append(f"opened ({opened}) - closed ({closed}) != size ({size})")
        else:
            problems.append(f"stats lack opened/closed/size counters: {sorted(stats)}")
        cap = stats.get("maxconnections") or 0
        if cap and isinstance(size, int) and size > cap:
            problems.append(f"size {size} > maxconnections {cap}")
        return problems


def tether_pooled(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """tether's PooledDB (PooledPg for classic pg): blocking, capped, with a checkout timeout."""
    from tether import pooled

    cap = settings.cap
    timeout = settings.timeouts.checkout
    options: dict[str, Any] = {
        "checkout_timeout": timeout,
        "reconnect_backoff": (0.05, 1.0),
        "name": f"chaos-{target.name}",
        **settings.extra,
    }
    kwargs = target_kwargs(target, settings)
    limits: dict[str, Any] = {"maxcached": cap, "maxconnections": cap, "blocking": True}
    pool: Any
    if target.name == "pg":
        pool = pooled.PooledPg(**limits, **options, **kwargs)
    else:
        pool = pooled.PooledDB(target.creator, **limits, **options, **kwargs)
    return PooledPoolHandle(pool, max_sessions=cap, checkout_timeout=timeout)


# -- tether.persistent -----------------------------------------------------------------------


class PersistentPoolHandle(PoolHandle):
    """A :mod:`tether.persistent` pool (one connection per thread)."""

    name = "persistent"

    def open_connections(self) -> int | None:
        count = getattr(self.pool, "open_connections", None)  # a property (or a method)
        if callable(count):
            count = count()
        return int(count) if isinstance(count, int) else None

    def stats(self) -> dict[str, Any] | None:
        count = self.open_connections()
        return None if count is None else {"open_connections": count}

    def balance_problems(self, stats: dict[str, Any] | None) -> list[str]:
        if stats is None:
            return []
        count = stats["open_connections"]
        if count > self.max_sessions:
            return [f"{count} open connections for {self.max_sessions} threads"]
        return []


def tether_persistent(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """tether's PersistentDB (PersistentPg for classic pg): one connection per worker."""
    from tether import persistent

    kwargs = {**target_kwargs(target, settings), **settings.extra}
    pool: Any
    if target.name == "pg":
        pool = persistent.PersistentPg(**kwargs)
    else:
        pool = persistent.PersistentDB(target.creator, **kwargs)
    return PersistentPoolHandle(pool, max_sessions=settings.workers, checkout_timeout=None)


# -- the registry ----------------------------------------------------------------------------

#: Pool factories by name. ``doubles`` adds the broken ones.
POOLS: dict[str, PoolFactory] = {
    "pooled": tether_pooled,
    "persistent": tether_persistent,
}


def register_pool(name: str, factory: PoolFactory) -> PoolFactory:
    """Make ``factory`` available to scenarios as ``pool=name``."""
    POOLS[name] = factory
    return factory


def make_pool(pool: str | PoolFactory, target: DriverTarget, settings: PoolSettings) -> PoolHandle:
    """Build the pool ``pool`` (a name in :data:`POOLS` or a factory) for ``target``."""
    if isinstance(pool, str):
        from . import doubles  # noqa: F401  (registers the broken doubles)

        try:
            factory = POOLS[pool]
        except KeyError:
            raise ValueError(f"pool: unknown pool {pool!r}; known: {', '.join(POOLS)}") from None
    else:
        factory = pool
    handle = factory(target, settings)
    log.debug("built %r for %r", handle, target)
    return handle
