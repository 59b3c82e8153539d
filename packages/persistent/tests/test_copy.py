"""A persistent generator and its connections cannot be copied or pickled."""

from __future__ import annotations

import copy
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tether.persistent import PersistentDB


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"]
)
def test_a_generator_and_its_connection_cannot_be_copied(tmp_path: Path, duplicate: Any) -> None:
    persist = PersistentDB(sqlite3, database=str(tmp_path / "c.sqlite3"))
    try:
        db = persist.connection()
        for obj in (persist, db, db.cursor()):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                duplicate(obj)
        assert db.cursor().execute("SELECT 1").fetchone() == (1,)
    finally:
        persist.close()
