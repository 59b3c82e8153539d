"""The two halves every exporter shares: the pools it reads, and fixed-bucket timings.

:class:`WatchedPools` holds pools weakly by name and snapshots their
``stats()`` at collection time. :class:`Timings` counts observations into
fixed buckets per pool name, for exporters (Prometheus' custom collectors)
that build histograms themselves; an observation is a bisect and three
additions under a lock held for nothing else.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from ..pool import Pool
from ..stats import PoolStats

__all__ = ["DEFAULT_BUCKETS", "Histogram", "Timings", "WatchedPools", "check_buckets"]

#: Histogram buckets, in seconds: from a lock-free checkout (0) up to the default
#: ``checkout_timeout`` (30 s); connects and uses of a connection fit them too.
DEFAULT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


class WatchedPools:
    """Pools by name, weakly: ``add()`` them, ``snapshots()`` their ``stats()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, weakref.ref[Pool]] = {}

    def add(self, pool: Pool) -> None:
        """Watch ``pool``; TypeError if it is not a tether pool, ValueError if its name is taken."""
        if not isinstance(pool, Pool):
            raise TypeError(
                f"pool: expected a tether.pooled pool (PooledDB, PooledPg), got"
                f" {type(pool).__name__}"
            )
        with self._lock:
            known = self._pools.get(pool.name)
            other = known() if known is not None else None
            if other is not None and other is not pool:
                raise ValueError(
                    f"pool: another pool named {pool.name!r} is watched already; its metrics"
                    " would mix with this one's: give each pool its own name="
                )
            self._pools[pool.name] = weakref.ref(pool)

    def snapshots(self) -> list[PoolStats]:
        """The ``stats()`` of every watched pool still alive, by name."""
        with self._lock:
            alive = []
            for name, ref in list(self._pools.items()):
                pool = ref()
                if pool is None:
                    del self._pools[name]
                else:
                    alive.append(pool)
        return [pool.stats() for pool in alive]  # each takes its pool's lock: not under ours


class Histogram:
    """One pool's observations: per-bucket counts (the last is +Inf), their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.total = 0.0

    def cumulative(self) -> list[int]:
        """Counts of observations <= each bound, +Inf last (Prometheus' ``le`` buckets)."""
        out, running = [], 0
        for count in self.counts:
            running += count
            out.append(running)
        return out


class Timings:
    """Observations in seconds, counted into fixed buckets per pool name."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = check_buckets(bounds)
        self._lock = threading.Lock()
        self._by_pool: dict[str, Histogram] = {}

    def observe(self, pool: str, seconds: float) -> None:
        index = bisect_left(self.bounds, seconds)  # first bound >= seconds: its le bucket
        with self._lock:
            histogram = self._by_pool.get(pool)
            if histogram is None:
                histogram = self._by_pool[pool] = Histogram(len(self.bounds))
            histogram.counts[index] += 1
            histogram.total += seconds

    def snapshot(self) -> list[tuple[str, list[int], float]]:
        """Each pool's name, cumulative bucket counts and sum, copied under the lock."""
        with self._lock:
            return [(name, h.cumulative(), h.total) for name, h in self._by_pool.items()]


def check_buckets(bounds: Iterable[float]) -> tuple[float, ...]:
    """Histogram bucket bounds: finite, increasing seconds; ValueError naming ``buckets``."""
    try:
        checked = tuple(float(bound) for bound in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"buckets: expected a sequence of seconds, got {bounds!r}") from None
    if (
        not checked
        or any(lo >= hi for lo, hi in zip(checked, checked[1:]))
        or any(not 0 <= b < float("inf") for b in checked)
    ):
        raise ValueError(
            f"buckets: expected increasing, finite, non-negative seconds, got {list(checked)}"
        )
    return checked
