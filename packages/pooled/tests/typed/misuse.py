"""Mistakes ``mypy --strict`` must catch in a user's code: each ``# E: <code>`` line is one.

``test_typing.py`` checks that each marked line has an error of that code,
and no other line has any. Never run.
"""

from __future__ import annotations

import sqlite3

from tether.pooled import EventKind, PooledDB, PoolEvent


def mistakes(pool: PooledDB, event: PoolEvent) -> None:
    stats = pool.stats()
    stats["in_uses"]  # E: typeddict-item
    stats["size"] = "many"  # E: typeddict-item
    total: str = stats["checkouts"]  # E: assignment
    kind: EventKind = "chekout"  # E: assignment
    PoolEvent("chekout", "pool")  # E: arg-type
    print(total, kind, sqlite3)
