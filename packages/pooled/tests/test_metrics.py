"""The exporters, as an operator sees them: Prometheus' scraped text, OpenTelemetry's reader.

Each test drives real pools (sqlite3 in a file, and psycopg on the harness's
PostgreSQL) through checkouts, a queued checkout, a timeout, a leak and an
outage, then reads what the exporter exports and holds it to ``stats()``
(one source of truth) and to what the test did: the queued checkout's wait
lands in the right bucket, every checkout is timed once.
"""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tether.pooled import DatabaseUnreachable, PooledDB, PoolExhausted, PoolStats
from tether.pooled.metrics.otel import POOL_NAME, STATE, PoolInstruments
from tether.pooled.metrics.prometheus import PoolCollector

HOLD = 0.2  # how long the queued checkout waits for the one connection
TIMEOUT = 2.0  # checkout_timeout: well above HOLD, however loaded the machine


@pytest.fixture(params=["sqlite3", "postgresql"])
def connect_args(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    """A driver module and its connect() arguments: sqlite3 in a file, or PostgreSQL."""
    if request.param == "sqlite3":
        return sqlite3, {"database": str(tmp_path / "app.db"), "check_same_thread": False}
    import psycopg

    return psycopg, {"conninfo": request.getfixturevalue("pg_server").url()}


def _workload(pool: PooledDB) -> None:
    """Three plain checkouts, one that queues for HOLD s, one that times out, one leak."""
    for _ in range(3):
        with pool.connection() as db:
            db.cursor().execute("SELECT 1")
    held = pool.connection()
    got = threading.Event()

    def queued() -> None:
        with pool.connection():
            got.set()

    thread = threading.Thread(target=queued)
    thread.start()
    deadline = time.monotonic() + 10
    while pool.stats()["waiting"] != 1:  # queued behind the held connection
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(HOLD)
    assert not got.is_set()
    held.close()  # handed straight to the queued checkout
    thread.join()
    assert got.is_set()
    held = pool.connection()
    with pytest.raises(PoolExhausted):
        pool.connection()  # maxconnections=1, after checkout_timeout
    held.close()
    pool.connection()  # dropped unclosed: a leak, given back by the garbage collector
    gc.collect()


def _pool(module: Any, kwargs: dict[str, Any], name: str, hook: Any) -> PooledDB:
    return PooledDB(
        module,
        maxconnections=1,
        blocking=True,
        checkout_timeout=TIMEOUT,
        name=name,
        on_event=hook,
        **kwargs,
    )


# -- Prometheus ------------------------------------------------------------------------------


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``generate_latest()`` parsed back: (sample name, sorted labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _prometheus_matches_stats(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], stats: PoolStats
) -> None:
    label = (("pool", stats["name"]),)
    expected = {
        "tether_pool_size": stats["size"],
        "tether_pool_idle": stats["idle"],
        "tether_pool_in_use": stats["in_use"],
        "tether_pool_waiting": stats["waiting"],
        "tether_pool_unreachable": int(stats["unreachable"]),
        "tether_pool_checkouts_total": stats["checkouts"],
        "tether_pool_timeouts_total": stats["timeouts"],
        "tether_pool_connects_total": stats["opened"],
        "tether_pool_connect_errors_total": stats["connect_errors"],
        "tether_pool_discards_total": stats["discarded"],
        "tether_pool_leaks_total": stats["leaks"],
    }
    assert {name: scraped[name, label] for name in expected} == expected


def test_prometheus_collector_scraped(connect_args: tuple[Any, dict[str, Any]]) -> None:
    module, kwargs = connect_args
    registry = CollectorRegistry()
    collector = PoolCollector(registry=registry)
    busy = _pool(module, kwargs, "busy", collector.on_event)
    quiet = _pool(module, kwargs, "quiet", collector.on_event)
    collector.watch(busy)
    collector.watch(quiet)
    try:
        _workload(busy)
        with quiet.connection():
            pass
        scraped = _scrape(registry)
        busy_stats, quiet_stats = busy.stats(), quiet.stats()
        _prometheus_matches_stats(scraped, busy_stats)
        _prometheus_matches_stats(scraped, quiet_stats)
        assert busy_stats["checkouts"] == 7 and busy_stats["timeouts"] == 1  # as done
        assert busy_stats["leaks"] == 1 and quiet_stats["checkouts"] == 1

        label = ("pool", "busy")
        wait = "tether_pool_checkout_wait_seconds"
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in scraped.items()
            if name == f"{wait}_bucket" and label in labels
        )
        counts = [value for _, value in buckets]
        assert counts == sorted(counts)  # cumulative
        assert buckets[-1] == (float("inf"), scraped[f"{wait}_count", (label,)])
        # Every successful checkout timed once; the queued one waited HOLD s.
        assert scraped[f"{wait}_count", (label,)] == busy_stats["checkouts"]
        below = dict(buckets)
        assert below[0.1] <= busy_stats["checkouts"] - 1  # the queued one is above 0.1 s
        assert below[0.0001] >= 1  # a lock-free checkout of an idle connection: 0 s
        assert below[30.0] == busy_stats["checkouts"]
        assert HOLD <= scraped[f"{wait}_sum", (label,)] < TIMEOUT * 6
        assert scraped[f"{wait}_count", (("pool", "quiet"),)] == 1
    finally:
        busy.close()
        quiet.close()


def test_prometheus_unreachable_and_connect_errors(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry=registry)
    pool = PooledDB(sqlite3, database=str(tmp_path / "missing" / "app.db"), name="down")
    collector.watch(pool)
    try:
        with pytest.raises(sqlite3.OperationalError):
            pool.connection()  # the first failure is the driver's error
        with pytest.raises(DatabaseUnreachable):
            pool.connection()
        scraped = _scrape(registry)
        _prometheus_matches_stats(scraped, pool.stats())
        assert scraped["tether_pool_unreachable", (("pool", "down"),)] == 1
        assert scraped["tether_pool_connect_errors_total", (("pool", "down"),)] >= 1
        # No on_event hook: no histogram samples, rather than one that lies.
        assert not any(name.startswith("tether_pool_checkout_wait") for name, _ in scraped)
    finally:
        pool.close()


def test_watch_checks_and_forgets(tmp_path: Path) -> None:
    collector = PoolCollector(registry=None)
    with pytest.raises(TypeError, match="pool"):
        collector.watch(sqlite3.connect(":memory:"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buckets"):
        PoolCollector(registry=None, buckets=[1.0, 0.5])
    first = PooledDB(sqlite3, database=":memory:", name="same")
    collector.watch(first)
    collector.watch(first)  # the same pool again is harmless
    second = PooledDB(sqlite3, database=":memory:", name="same")
    with pytest.raises(ValueError, match="name="):
        collector.watch(second)
    first.close()
    del first
    gc.collect()
    collector.watch(second)  # the first one is gone: its name is free
    registry = CollectorRegistry()
    registry.register(collector)
    assert ("tether_pool_size", (("pool", "same"),)) in _scrape(registry)
    second.close()
    del second
    gc.collect()
    assert not any(name == "tether_pool_size" for name, _ in _scrape(registry))


# -- OpenTelemetry ---------------------------------------------------------------------------


@pytest.fixture
def reader() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def test_otel_semantic_conventions(
    connect_args: tuple[Any, dict[str, Any]],
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    module, kwargs = connect_args
    memory, provider = reader
    instruments = PoolInstruments(meter_provider=provider)
    pool = _pool(module, kwargs, "orders", instruments.on_event)
    instruments.watch(pool)
    try:
        _workload(pool)
        held = pool.connection()  # one used, none idle, at the collection
        points = _points(memory)
        stats = pool.stats()
        held.close()
    finally:
        pool.close()

    def value(name: str, **attributes: str) -> Any:
        found = [p for p in points[name] if dict(p.attributes) == attributes]
        assert len(found) == 1, (name, points[name])
        return found[0]

    orders = {POOL_NAME: "orders"}
    count = "db.client.connection.count"
    assert value(count, **orders, **{STATE: "used"}).value == stats["in_use"] == 1
    assert value(count, **orders, **{STATE: "idle"}).value == stats["idle"] == 0
    assert value("db.client.connection.max", **orders).value == 1
    assert value("db.client.connection.idle.min", **orders).value == 0
    assert "db.client.connection.idle.max" not in points  # maxcached=0: no limit to report
    assert value("db.client.connection.pending_requests", **orders).value == 0
    assert value("db.client.connection.timeouts", **orders).value == stats["timeouts"] == 1
    wait = value("db.client.connection.wait_time", **orders)
    use = value("db.client.connection.use_time", **orders)
    create = value("db.client.connection.create_time", **orders)
    assert all(isinstance(p, HistogramDataPoint) for p in (wait, use, create))
    assert wait.count == stats["checkouts"]  # each successful checkout timed once
    assert HOLD <= wait.max < TIMEOUT  # the queued one
    assert use.count == stats["checkins"]  # each checkin timed once
    assert use.max >= HOLD  # the connection held while the other checkout queued
    assert create.count == stats["opened"] and create.min > 0


def test_otel_two_pools_apart(reader: tuple[InMemoryMetricReader, MeterProvider]) -> None:
    memory, provider = reader
    instruments = PoolInstruments(meter_provider=provider)
    pools = [
        PooledDB(sqlite3, database=":memory:", mincached=n, maxcached=4, name=f"p{n}")
        for n in (1, 2)
    ]
    for pool in pools:
        instruments.watch(pool)
    try:
        points = _points(memory)
    finally:
        for pool in pools:
            pool.close()
    idle = {
        p.attributes[POOL_NAME]: p.value
        for p in points["db.client.connection.count"]
        if p.attributes[STATE] == "idle"
    }
    assert idle == {"p1": 1, "p2": 2}
    assert {p.attributes[POOL_NAME]: p.value for p in points["db.client.connection.idle.max"]} == {
        "p1": 4,
        "p2": 4,
    }


# -- without the extras ----------------------------------------------------------------------


def test_the_extras_are_optional() -> None:
    """tether.pooled imports without them; an exporter says which extra it needs."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = sys.modules['opentelemetry'] = None\n"
        "import tether.pooled, tether.pooled.metrics\n"
        "for name in ('prometheus', 'otel'):\n"
        "    try:\n"
        "        __import__(f'tether.pooled.metrics.{name}')\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "tether.pooled.metrics.prometheus needs prometheus_client: pip install"
        ' "tether-pooled[prometheus]"',
        'tether.pooled.metrics.otel needs opentelemetry-api: pip install "tether-pooled[otel]"',
    ]
