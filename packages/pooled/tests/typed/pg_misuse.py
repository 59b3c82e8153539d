"""Mistakes on PooledPg's classic connections ``mypy --strict`` must catch: ``# E: <code>``.

``test_typing.py`` checks that each marked line has an error of that code,
and no other line has any. Never run.
"""

from __future__ import annotations

from tether.pooled import PooledPg


def mistakes(pool: PooledPg) -> None:
    pool.connection().no_such_method()  # E: attr-defined
    pool.dedicated_connection().no_such_method()  # E: attr-defined
    with pool.connection() as db:
        db.no_such_method()  # E: attr-defined
        db.query(42)  # E: arg-type
        db.insert("table", row=[1, 2])  # E: arg-type
        db.get_tables(system="yes")  # E: arg-type
        count: str = db.delete("table", {"id": 1})  # E: assignment
        db.begin().no_such_method()  # E: attr-defined
        print(count)
    pool.stats()["in_uses"]  # E: typeddict-item
