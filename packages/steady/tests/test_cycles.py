"""A failed statement leaves no reference cycle: its cursor is freed at once.

Found by an outside attack: a frame that held the exception it raised was
part of that exception's traceback, a cycle that kept the cursor (and the
driver's) alive until the garbage collector ran. The collector then
finalised sqlite3 objects in the middle of another thread's checkout, which
overran ``checkout_timeout`` by seconds while the database lock was
contended. Freed by reference counting, nothing waits for the collector.
"""

from __future__ import annotations

import gc
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.steady import connect


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("path", ["first statement", "hot path"])
def test_a_failed_statements_cursor_is_freed_without_the_collector(
    tmp_path: Path, no_gc: None, path: str
) -> None:
    db = connect(sqlite3, database=str(tmp_path / "c.sqlite3"), isolation_level=None)
    if path == "hot path":  # a settled session: execute()'s own recovery
        db.cursor().execute("SELECT 1")
    cur: Any = db.cursor()
    try:
        cur.execute("SELEC 1")
    except sqlite3.OperationalError:
        pass
    else:
        pytest.fail("the statement did not fail")
    freed = weakref.ref(cur)
    del cur
    assert freed() is None, gc.get_referrers(freed())
    db.close()
