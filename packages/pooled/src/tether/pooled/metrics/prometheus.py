"""A ``prometheus_client`` collector for tether pools: ``pip install "tether-pooled[prometheus]"``.

::

    from prometheus_client import start_http_server
    from tether.pooled import PooledDB
    from tether.pooled.metrics.prometheus import PoolCollector

    collector = PoolCollector()  # registered in prometheus_client's default REGISTRY
    pool = PooledDB(psycopg, maxconnections=20, name="orders", on_event=collector.on_event)
    collector.watch(pool)
    start_http_server(9100)

Every metric has the label ``pool`` (the pool's ``name``):

======================================  ======================================================
``tether_pool_size``                    gauge: open connections (``stats()["size"]``)
``tether_pool_idle``                    gauge: idle connections
``tether_pool_in_use``                  gauge: checked-out connections
``tether_pool_waiting``                 gauge: checkouts blocked, waiting for a connection
``tether_pool_unreachable``             gauge: 1 while the database cannot be reached, else 0
``tether_pool_checkouts_total``         counter: connections handed out
``tether_pool_timeouts_total``          counter: checkouts that failed after ``checkout_timeout``
``tether_pool_connects_total``          counter: connections opened (``stats()["opened"]``)
``tether_pool_connect_errors_total``    counter: connects that failed
``tether_pool_discards_total``          counter: broken connections dropped
``tether_pool_leaks_total``             counter: connections leaked (held too long, or lost)
``tether_pool_checkout_wait_seconds``   histogram: from ``connection()`` to the connection
                                        handed out, per successful checkout (needs
                                        ``on_event``; 0 for an idle one handed out at once)
======================================  ======================================================

The gauges and counters are read from ``stats()`` at each scrape; the
histogram counts the ``checkout`` events' ``duration``
(:mod:`tether.pooled.events`), so its ``_count`` equals the checkouts made
since the hook was set (shares of a shared connection are not timed).

One collector per registry (a second one's metric names would collide, and
``prometheus_client`` refuses it): ``watch()`` every pool on the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "tether.pooled.metrics.prometheus needs prometheus_client: pip install"
        ' "tether-pooled[prometheus]"'
    ) from exc

from ..events import PoolEvent
from ..pool import Pool
from ..stats import PoolStats
from ._watched import DEFAULT_BUCKETS, Timings, WatchedPools

__all__ = ["DEFAULT_BUCKETS", "PoolCollector"]

#: Gauge name -> (its value in a stats() snapshot, help text).
_GAUGES: dict[str, tuple[Callable[[PoolStats], float], str]] = {
    "size": (lambda s: s["size"], "Open connections of the pool (idle, in use, being validated)."),
    "idle": (lambda s: s["idle"], "Idle connections, ready for a checkout."),
    "in_use": (lambda s: s["in_use"], "Connections checked out."),
    "waiting": (lambda s: s["waiting"], "Checkouts blocked, waiting for a connection."),
    "unreachable": (lambda s: s["unreachable"], "1 while the database cannot be reached, else 0."),
}
#: Counter name (without _total) -> (its value in a stats() snapshot, help text).
_COUNTERS: dict[str, tuple[Callable[[PoolStats], float], str]] = {
    "checkouts": (lambda s: s["checkouts"], "Connections handed out."),
    "timeouts": (lambda s: s["timeouts"], "Checkouts that failed after checkout_timeout."),
    "connects": (lambda s: s["opened"], "Connections opened."),
    "connect_errors": (lambda s: s["connect_errors"], "Connects that failed."),
    "discards": (lambda s: s["discarded"], "Broken connections the pool dropped."),
    "leaks": (lambda s: s["leaks"], "Connections held too long or garbage-collected unclosed."),
}


class PoolCollector(Collector):
    """Exports the pools it ``watch()``-es; its ``on_event`` feeds the checkout wait histogram.

    ``registry``: where to register (``prometheus_client.REGISTRY`` by
    default; None: do not register, call ``registry.register()`` yourself).
    ``namespace``: the metric names' prefix. ``buckets``: the histogram's
    upper bounds in seconds (``+Inf`` is added).
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        namespace: str = "tether_pool",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not isinstance(namespace, str) or not namespace.isidentifier():
            raise ValueError(f"namespace: expected a metric name prefix, got {namespace!r}")
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry: expected a prometheus_client CollectorRegistry or None,"
                f" got {type(registry).__name__}"
            )
        self._namespace = namespace
        self._pools = WatchedPools()
        self._waits = Timings(buckets)
        self._bounds = [repr(bound) for bound in self._waits.bounds] + ["+Inf"]  # le="0.001"
        if registry is not None:
            registry.register(self)

    def watch(self, pool: Pool) -> None:
        """Export ``pool``'s gauges and counters from now on (until it is garbage-collected)."""
        self._pools.add(pool)

    def on_event(self, event: PoolEvent) -> None:
        """A pool's ``on_event`` hook: times each checkout into the wait histogram."""
        if event.kind == "checkout":
            self._waits.observe(event.pool, event.duration)

    def collect(self) -> Iterator[Metric]:
        """The metrics now, for ``prometheus_client`` (a scrape, ``generate_latest()``)."""
        prefix = self._namespace
        snapshots = self._pools.snapshots()
        for name, (value, text) in _GAUGES.items():
            gauge = GaugeMetricFamily(f"{prefix}_{name}", text, labels=["pool"])
            for stats in snapshots:
                gauge.add_metric([stats["name"]], float(value(stats)))
            yield gauge
        for name, (value, text) in _COUNTERS.items():
            counter = CounterMetricFamily(f"{prefix}_{name}", text, labels=["pool"])
            for stats in snapshots:
                counter.add_metric([stats["name"]], float(value(stats)))
            yield counter
        histogram = HistogramMetricFamily(
            f"{prefix}_checkout_wait_seconds",
            "Seconds from connection() to the connection handed out, per checkout.",
            labels=["pool"],
        )
        for pool, cumulative, total in self._waits.snapshot():
            histogram.add_metric(
                [pool], list(zip(self._bounds, map(float, cumulative))), sum_value=total
            )
        yield histogram
