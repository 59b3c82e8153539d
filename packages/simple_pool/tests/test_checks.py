"""Bad arguments are refused at construction, naming the parameter; DBUtils' values still work.

Table-driven: every parameter of every public constructor of this package,
with the bad values of its kind. The same checks (tether.simple_pool.checks)
are used by every layer above, so the tables there look like this one.
"""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
from typing import Any

import pytest

from tether.simple_pool import PooledDB, PooledPg, SimplePooledDB, SimplePooledPg

SECRET = "hunter2-do-not-print"
#: The documented maximum of every seconds parameter: 30 days.
MAX_SECONDS = 30 * 24 * 3600

SECONDS_BAD: list[tuple[Any, type[Exception]]] = [
    ("1", TypeError),
    (True, TypeError),
    ([1], TypeError),
    (0, ValueError),
    (-1, ValueError),
    (math.inf, ValueError),
    (math.nan, ValueError),
    # accepted before, and then every wait raised OverflowError (lock timeouts)
    (sys.maxsize, ValueError),
    (1e12, ValueError),
    (threading.TIMEOUT_MAX, ValueError),
    (MAX_SECONDS + 1, ValueError),
]

BAD: dict[str, list[tuple[Any, type[Exception]]]] = {
    "maxconnections": [
        ("", TypeError),
        (0.0, TypeError),
        (1.5, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
        (0, ValueError),
        (-1, ValueError),
    ],
    "timeout": SECONDS_BAD,
    "driver": [("nosuchdriver", ValueError), (3, TypeError)],
}
CASES = [(param, value, error) for param, rows in BAD.items() for value, error in rows]


def _show(value: Any) -> str:
    """A test id for ``value`` that is the same in every xdist worker (no addresses)."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


IDS = [f"{param}={_show(value)}" for param, value, _ in CASES]


def _call(front: Any, param: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"maxconnections": 1, param: value}
    maxconnections = kwargs.pop("maxconnections")
    if front is SimplePooledPg:
        front(maxconnections, password=SECRET, **kwargs)
    else:
        front(sqlite3, maxconnections, password=SECRET, **kwargs)


@pytest.mark.parametrize("front", [SimplePooledDB, SimplePooledPg])
@pytest.mark.parametrize(("param", "value", "error"), CASES, ids=IDS)
def test_bad_value_is_refused_at_construction(
    front: Any, param: str, value: Any, error: type[Exception]
) -> None:
    # The password would make sqlite3.connect() fail (and classic pg find no
    # server): only a check made before connecting passes this test.
    with pytest.raises(error, match=rf"^{param}\b") as info:
        _call(front, param, value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("value", "error"), SECONDS_BAD, ids=[_show(v) for v, _ in SECONDS_BAD])
def test_bad_connection_timeout_names_the_parameter(value: Any, error: type[Exception]) -> None:
    pool = SimplePooledDB(sqlite3, 1, database=":memory:")
    with pytest.raises(error, match=r"^timeout\b"):
        pool.connection(value)
    pool.close()


def test_bad_creator_names_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"^creator\b"):
        SimplePooledDB(42, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [None, 0.5, 30, 30.0, MAX_SECONDS])
def test_valid_timeouts_are_accepted(timeout: Any) -> None:
    with SimplePooledDB(sqlite3, 2, database=":memory:", timeout=timeout) as pool:
        pool.connection(timeout).close()


def test_dbutils_positional_call_and_aliases() -> None:
    # DBUtils' simple_pooled_db: PooledDB(dbapi, maxconnections, *args, **kwargs)
    assert PooledDB is SimplePooledDB and PooledPg is SimplePooledPg
    with PooledDB(sqlite3, 3, ":memory:") as pool, pool.connection() as db:
        assert db.execute("SELECT 1").fetchone() == (1,)
