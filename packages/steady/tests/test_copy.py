"""A steady connection and its cursors cannot be copied or pickled (one clear TypeError).

A copy would be a second object around the same driver session that knows
nothing of the original's transaction state (see tether.simple_pool.live).
"""

from __future__ import annotations

import copy
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tether.steady import connect


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"]
)
def test_a_steady_connection_and_its_cursor_cannot_be_copied(
    tmp_path: Path, duplicate: Any
) -> None:
    db = connect(sqlite3, database=str(tmp_path / "c.sqlite3"))
    cur = db.cursor()
    for obj in (db, cur):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            duplicate(obj)
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    db.close()
