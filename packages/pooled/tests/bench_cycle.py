"""Checkout+checkin cycle time of tether.pooled vs DBUtils' PooledDB, sqlite3, one process.

Run: ``python packages/pooled/tests/bench_cycle.py [cycles]``. Rounds of both
pools are interleaved and the best round of each is kept, so machine load
affects both alike.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
import time
from typing import Any

from tether.pooled import PooledDB


def cycle_close(pool: Any, n: int) -> float:
    connection = pool.connection
    start = time.perf_counter()
    for _ in range(n):
        db = connection()
        db.close()
    return (time.perf_counter() - start) / n * 1e6


def cycle_with(pool: Any, n: int) -> float:
    connection = pool.connection
    start = time.perf_counter()
    for _ in range(n):
        with connection():
            pass
    return (time.perf_counter() - start) / n * 1e6


def compare(cycles: int = 100_000, rounds: int = 10) -> dict[str, tuple[float, float]]:
    """Best microseconds per cycle (close(), with) for each pool."""
    from dbutils.pooled_db import PooledDB as DBUtilsPooledDB

    pools = {
        "DBUtils 3.2 PooledDB": DBUtilsPooledDB(
            sqlite3, 1, database=":memory:", check_same_thread=False
        ),
        "tether.pooled PooledDB": PooledDB(sqlite3, 1, database=":memory:"),
    }
    best = {name: [float("inf"), float("inf")] for name in pools}
    per_round = max(cycles // rounds, 1)
    gc.disable()
    try:
        for _ in range(rounds):
            for name, pool in pools.items():
                best[name][0] = min(best[name][0], cycle_close(pool, per_round))
                best[name][1] = min(best[name][1], cycle_with(pool, per_round))
    finally:
        gc.enable()
    return {name: (close, with_) for name, (close, with_) in best.items()}


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for name, (close, with_) in compare(total).items():
        print(f"{name:24s} connection()+close(): {close:.3f} us   with-block: {with_:.3f} us")
