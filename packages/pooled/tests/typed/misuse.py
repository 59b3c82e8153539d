"""Mistakes ``mypy --strict`` must catch in a user's code: each ``# E: <code>`` line is one.

``test_typing.py`` checks that each marked line has an error of that code,
and no other line has any. Never run.
"""

from __future__ import annotations

import sqlite3

import psycopg

from tether.pooled import EventKind, PooledDB, PoolEvent


def mistakes(pool: PooledDB[sqlite3.Connection], event: PoolEvent) -> None:
    stats = pool.stats()
    stats["in_uses"]  # E: typeddict-item
    stats["size"] = "many"  # E: typeddict-item
    total: str = stats["checkouts"]  # E: assignment
    kind: EventKind = "chekout"  # E: assignment
    PoolEvent("chekout", "pool")  # E: arg-type
    print(total, kind, sqlite3)


def connection_mistakes(conninfo: str) -> None:
    with PooledDB(sqlite3.connect, database=":memory:").connection() as db:
        db.execute(42)  # E: arg-type
    with PooledDB(sqlite3, database=":memory:").connection() as plain:
        cursor: int = plain.cursor()  # E: assignment
    # The second positional argument is DBUtils' mincached, not the creator's:
    PooledDB(psycopg.connect, conninfo)  # E: call-overload
    print(cursor)
