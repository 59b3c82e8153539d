"""A user's program, checked with ``mypy --strict``: the types tether.pooled promises.

``test_typing.py`` type-checks it (every ``assert_type`` must hold, no error
anywhere) and runs it; ``nox -s typecheck`` checks it too. It uses only the
public API, as an application would.
"""

from __future__ import annotations

import sqlite3

from prometheus_client import CollectorRegistry, generate_latest
from typing_extensions import assert_type

from tether.pooled import EventKind, PooledDB, PoolEvent, PoolOptions, PoolStats
from tether.pooled.events import EventHook
from tether.pooled.metrics.otel import PoolInstruments
from tether.pooled.metrics.prometheus import PoolCollector
from tether.simple_pool.dbapi import DBAPIConnection
from tether.steady import SteadyOptions

seen: dict[EventKind, int] = {}


def count(event: PoolEvent) -> None:
    assert_type(event.kind, EventKind)
    assert_type(event.pool, str)
    assert_type(event.reason, str)
    assert_type(event.duration, float)
    seen[event.kind] = seen.get(event.kind, 0) + 1


def main() -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry=registry)
    instruments = PoolInstruments()  # the global (no-op) meter provider
    hooks: list[EventHook] = [count, collector.on_event, instruments.on_event]

    def on_event(event: PoolEvent) -> None:
        for hook in hooks:
            hook(event)

    with PooledDB(sqlite3, database=":memory:", name="typed", on_event=on_event) as pool:
        collector.watch(pool)
        instruments.watch(pool)
        with pool.connection() as db:  # a module creator: the DB-API 2 Protocol
            assert_type(db, DBAPIConnection)
            db.cursor().execute("SELECT 1")
        stats = pool.stats()
        assert_type(stats, PoolStats)
        assert_type(stats["name"], str)
        assert_type(stats["size"], int)
        assert_type(stats["in_use"], int)
        assert_type(stats["unreachable"], bool)
        assert_type(stats["wait_time_max"], float)
        plain: dict[str, object] = dict(stats)  # still a plain dict underneath
        print(sorted(seen.items()), stats["checkouts"], len(plain))
    scraped = generate_latest(registry).decode()
    print([line for line in scraped.splitlines() if line.startswith("tether_pool_checkouts")])
    # A typed connect function: the pool's connections are sqlite3.Connection,
    # as the proxy's isinstance check agrees at run time.
    with PooledDB(sqlite3.connect, database=":memory:") as typed:
        assert_type(typed, PooledDB[sqlite3.Connection])
        with typed.connection() as con:
            assert_type(con, sqlite3.Connection)
            row = con.execute("SELECT 1").fetchone()
            print(isinstance(con, sqlite3.Connection), row)
        # One options object: a second pool like the first, typed as the first.
        assert_type(typed.options, PoolOptions)
        assert_type(typed.options.steady, SteadyOptions)
        assert_type(typed.options.maxconnections, int)
        options = typed.options.replace(maxconnections=2)
        with PooledDB.from_options(sqlite3.connect, options, database=":memory:") as like:
            assert_type(like, PooledDB[sqlite3.Connection])
            print(like.options.maxconnections)
        assert_type(PooledDB.from_options(sqlite3, options).options, PoolOptions)


if __name__ == "__main__":
    main()
