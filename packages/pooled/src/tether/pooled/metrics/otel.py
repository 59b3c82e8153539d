"""OpenTelemetry metrics for tether pools: ``pip install "tether-pooled[otel]"``.

Instruments made through ``opentelemetry-api`` (an SDK or exporter of the
application's choosing collects them), named as OpenTelemetry's semantic
conventions for database client connection pools name them, each with the
attribute ``db.client.connection.pool.name`` (the pool's ``name``)::

    from tether.pooled import PooledDB
    from tether.pooled.metrics.otel import PoolInstruments

    instruments = PoolInstruments()  # the global MeterProvider; or meter_provider=...
    pool = PooledDB(psycopg, maxconnections=20, name="orders", on_event=instruments.on_event)
    instruments.watch(pool)

* ``db.client.connection.count`` (observable up-down counter), with
  ``db.client.connection.state`` ``idle`` (``stats()["idle"]``) and ``used``
  (``stats()["in_use"]``);
* ``db.client.connection.idle.max``, ``.idle.min``, ``.max`` (observable up-down
  counters): ``maxcached``, ``mincached``, ``maxconnections``;
* ``db.client.connection.pending_requests`` (observable up-down counter): ``waiting``;
* ``db.client.connection.timeouts`` (observable counter): ``timeouts``;
* ``db.client.connection.create_time``, ``.wait_time``, ``.use_time``
  (histograms, seconds): each ``connect``, ``checkout`` and ``checkin`` event's
  ``duration``.

The observable instruments read ``stats()`` when the SDK collects; the
histograms record the ``duration`` of the pool's events
(:mod:`tether.pooled.events`), so they need ``on_event``. A limit of 0 (no
limit) is not reported: the conventions have no value for "unlimited".

One ``PoolInstruments`` per meter provider (the instrument names are
fixed): ``watch()`` every pool on the same one.

What it costs: ``watch()`` nothing between collections. The hook records
two histogram points per checkout and checkin; with the OpenTelemetry SDK
(1.45) that took a checkout+checkin of an idle sqlite3 connection from
about 3 to 18 microseconds in one thread (``on_event`` of the Prometheus
collector: about 4), so on a hot path of microseconds it is worth knowing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

try:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        'tether.pooled.metrics.otel needs opentelemetry-api: pip install "tether-pooled[otel]"'
    ) from exc

from .._version import __version__
from ..events import PoolEvent
from ..pool import Pool
from ._watched import DEFAULT_BUCKETS, WatchedPools, check_buckets

__all__ = ["POOL_NAME", "STATE", "PoolInstruments"]

#: The attribute naming the pool, and the one naming a connection's state.
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


class PoolInstruments:
    """The ``db.client.connection.*`` instruments of the pools it ``watch()``-es.

    ``meter_provider``: the provider to take the meter ``tether.pooled``
    from (None: the global one, ``opentelemetry.metrics.get_meter_provider()``).
    ``buckets``: the histograms' advised bucket bounds, in seconds.
    """

    def __init__(
        self,
        *,
        meter_provider: MeterProvider | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
            raise TypeError(
                f"meter_provider: expected an opentelemetry MeterProvider or None,"
                f" got {type(meter_provider).__name__}"
            )
        bounds = list(check_buckets(buckets))
        self._pools = WatchedPools()
        meter = get_meter("tether.pooled", __version__, meter_provider=meter_provider)
        connections = "{connection}"
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._count],
            unit=connections,
            description="The number of connections that are currently in state described by"
            " the state attribute",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.max",
            callbacks=[self._idle_max],
            unit=connections,
            description="The maximum number of idle open connections allowed",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.min",
            callbacks=[self._idle_min],
            unit=connections,
            description="The minimum number of idle open connections allowed",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.max",
            callbacks=[self._max],
            unit=connections,
            description="The maximum number of open connections allowed",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            callbacks=[self._pending],
            unit="{request}",
            description="The number of current pending requests for an open connection",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            callbacks=[self._timeouts],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to"
            " obtain a connection from the pool",
        )
        self._create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self._wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self._use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it to the pool",
            explicit_bucket_boundaries_advisory=bounds,
        )

    def watch(self, pool: Pool) -> None:
        """Report ``pool``'s connections, limits and timeouts (until it is garbage-collected)."""
        self._pools.add(pool)

    def on_event(self, event: PoolEvent) -> None:
        """A pool's ``on_event`` hook: records connect, wait and use times."""
        kind = event.kind
        if kind == "checkout":
            self._wait_time.record(event.duration, {POOL_NAME: event.pool})
        elif kind == "checkin":
            self._use_time.record(event.duration, {POOL_NAME: event.pool})
        elif kind == "connect":
            self._create_time.record(event.duration, {POOL_NAME: event.pool})

    # -- the observable instruments' callbacks, called by the SDK at each collection ----------

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            name = stats["name"]
            yield Observation(stats["idle"], {POOL_NAME: name, STATE: "idle"})
            yield Observation(stats["in_use"], {POOL_NAME: name, STATE: "used"})

    def _idle_max(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            if stats["maxcached"]:
                yield Observation(stats["maxcached"], {POOL_NAME: stats["name"]})

    def _idle_min(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            yield Observation(stats["mincached"], {POOL_NAME: stats["name"]})

    def _max(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            if stats["maxconnections"]:
                yield Observation(stats["maxconnections"], {POOL_NAME: stats["name"]})

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            yield Observation(stats["waiting"], {POOL_NAME: stats["name"]})

    def _timeouts(self, options: CallbackOptions) -> Iterable[Observation]:
        for stats in self._pools.snapshots():
            yield Observation(stats["timeouts"], {POOL_NAME: stats["name"]})
