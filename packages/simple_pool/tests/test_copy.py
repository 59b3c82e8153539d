"""The teaching pool, its connections and cursors cannot be copied or pickled."""

from __future__ import annotations

import copy
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tether.simple_pool import SimplePooledDB


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"]
)
def test_the_pool_its_connection_and_cursor_cannot_be_copied(
    tmp_path: Path, duplicate: Any
) -> None:
    pool = SimplePooledDB(sqlite3, 1, database=str(tmp_path / "c.sqlite3"), check_same_thread=False)
    try:
        db = pool.connection()
        for obj in (pool, db, db.cursor()):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                duplicate(obj)
        db.close()
    finally:
        pool.close()
