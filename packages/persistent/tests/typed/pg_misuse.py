"""Mistakes on PersistentPg's classic connections ``mypy --strict`` must catch: ``# E: <code>``.

``test_typing.py`` checks that each marked line has an error of that code,
and no other line has any. Never run.
"""

from __future__ import annotations

from tether.persistent import PersistentPg


def mistakes(persist: PersistentPg) -> None:
    persist.connection().no_such_method()  # E: attr-defined
    persist.dedicated_connection().no_such_method()  # E: attr-defined
    db = persist.connection()
    with db as transaction:
        transaction.no_such_method()  # E: attr-defined
    db.query(42)  # E: arg-type
    db.update("table", row="id=1")  # E: arg-type
    rows: list[str] = db.get("table", 1)  # E: assignment
    print(rows)
