"""Bad arguments are refused at construction, naming the parameter; DBUtils' values still work.

Table-driven: every parameter of ``PooledDB`` and ``PooledPg`` with the bad
values of its kind. The checks are the steady layer's and the simple pool's
own (tether.simple_pool.checks): same parameter, same message.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import threading
from typing import Any

import pytest

from tether.pooled import PooledDB, PooledPg
from tether.pooled.pg import RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY
from tether.simple_pool import SimplePooledDB
from tether.steady import connect

SECRET = "hunter2-do-not-print"
#: The documented maximum of every seconds parameter: 30 days.
MAX_SECONDS = 30 * 24 * 3600

COUNT_BAD: list[tuple[Any, type[Exception]]] = [
    ("", TypeError),
    (0.0, TypeError),
    (1.5, TypeError),
    ("10", TypeError),
    (True, TypeError),
    (-1, ValueError),
]
FLAG_BAD: list[tuple[Any, type[Exception]]] = [
    ("no", TypeError),  # would have been True
    ("", TypeError),
    (None, TypeError),
    (2, TypeError),
    ([], TypeError),
]
HUGE_BAD: list[tuple[Any, type[Exception]]] = [
    ("1", TypeError),
    (True, TypeError),
    (-1, ValueError),
    (math.inf, ValueError),
    (math.nan, ValueError),
    (sys.maxsize, ValueError),  # accepted before; every wait then raised OverflowError
    (1e12, ValueError),
    (threading.TIMEOUT_MAX, ValueError),
    (MAX_SECONDS + 1, ValueError),
]
SECONDS_BAD = [(0, ValueError), *HUGE_BAD]
SETSESSION_BAD: list[tuple[Any, type[Exception]]] = [
    ("PRAGMA foreign_keys = ON", TypeError),
    (123, TypeError),
    ([1], TypeError),
    (["PRAGMA foreign_keys = ON", None], TypeError),
    ({"PRAGMA foreign_keys = ON": 1}, TypeError),  # a dict: runs in no stated order
]
FAILURES_BAD: list[tuple[Any, type[Exception]]] = [
    (42, TypeError),
    ("OperationalError", TypeError),
    (sqlite3.OperationalError("x"), TypeError),
    ((sqlite3.OperationalError, 1), TypeError),
    (int, TypeError),
    ((), ValueError),  # no exception would mean "lost"
]
CALLABLE_BAD: list[tuple[Any, type[Exception]]] = [(1, TypeError), ("f", TypeError)]
PING_BAD: list[tuple[Any, type[Exception]]] = [
    (9, ValueError),
    ("", ValueError),  # an empty statement
    ((1, "  "), ValueError),
    (-1, ValueError),
    (1.5, TypeError),
    ([1], TypeError),
    (True, TypeError),
    ((1,), TypeError),
]

INT_BAD = [(None, TypeError), *COUNT_BAD]

#: Every parameter of PooledDB, with its bad values.
DB_BAD: dict[str, list[tuple[Any, type[Exception]]]] = {
    "creator": [(42, TypeError)],
    "mincached": COUNT_BAD,
    "maxcached": COUNT_BAD,
    "maxshared": COUNT_BAD,
    "maxconnections": COUNT_BAD,
    "blocking": FLAG_BAD,
    "maxusage": COUNT_BAD,
    "setsession": SETSESSION_BAD,
    "reset": [("yes", TypeError), (3.0, TypeError)],
    "failures": FAILURES_BAD,
    "ping": PING_BAD,
    "isfatal": CALLABLE_BAD,
    "checkout_timeout": [(None, TypeError), *SECONDS_BAD],
    "max_lifetime": SECONDS_BAD,
    "max_idle": SECONDS_BAD,
    "max_waiting": COUNT_BAD,
    "max_connecting": [(0, ValueError), *INT_BAD],
    "reset_session": FLAG_BAD,
    "leak_threshold": SECONDS_BAD,
    "validate_interval": SECONDS_BAD,
    "ping_after": [(None, TypeError), *HUGE_BAD],  # 0: ping every checkout
    "reconnect_backoff": [
        (1, TypeError),
        ((1,), TypeError),
        (("1", 2), TypeError),
        ((2, 1), ValueError),
        ((0, 1), ValueError),
        ((1, math.inf), ValueError),
        ((1, 1e12), ValueError),
    ],
    "on_connect": CALLABLE_BAD,
    "on_event": CALLABLE_BAD,
    "driver": [("nosuchdriver", ValueError), (3, TypeError)],
    "logger": [("x", TypeError), (logging, TypeError)],
    "name": [(1, TypeError), (b"pool", TypeError)],
}
#: PooledPg: no creator, maxshared, failures, isfatal (as DBUtils' PooledPg); reset is an int.
PG_BAD = {
    **{k: v for k, v in DB_BAD.items() if k not in ("creator", "maxshared", "failures", "isfatal")},
    "reset": [("yes", TypeError), (3, ValueError)],
}


def _show(value: Any) -> str:
    """A test id for ``value`` that is the same in every xdist worker (no addresses)."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


def _cases(table: dict[str, list[tuple[Any, type[Exception]]]]) -> Any:
    return [
        pytest.param(param, value, error, id=f"{param}={_show(value)}")
        for param, rows in table.items()
        for value, error in rows
    ]


@pytest.mark.parametrize(("param", "value", "error"), _cases(DB_BAD))
def test_bad_value_is_refused_at_construction(
    param: str, value: Any, error: type[Exception]
) -> None:
    kwargs: dict[str, Any] = {"creator": sqlite3, param: value}
    with pytest.raises(error, match=rf"^{param}\b") as info:
        PooledDB(password=SECRET, **kwargs)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("param", "value", "error"), _cases(PG_BAD))
def test_bad_value_is_refused_at_construction_classic(
    param: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^{param}\b") as info:
        PooledPg(passwd=SECRET, **{param: value})
    assert SECRET not in str(info.value)


def test_setsession_and_failures_are_checked_before_the_first_checkout() -> None:
    # Both used to be accepted, and the first checkout failed with
    # "'int' object is not iterable" (setsession) or a confusing isinstance error.
    with pytest.raises(TypeError, match=r"^setsession\b"):
        PooledDB(sqlite3, setsession=123, database=":memory:")
    with pytest.raises(TypeError, match=r"^failures\b"):
        PooledDB(sqlite3, failures=42, database=":memory:")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("maxusage", ""),
        ("maxusage", 0.0),
        ("setsession", [1]),
        ("failures", 42),
        ("ping", 9),
        ("isfatal", 3),
        ("on_connect", 1),
        ("logger", "x"),
        ("driver", "nosuchdriver"),
    ],
)
def test_same_parameter_same_error_as_the_steady_layer(param: str, value: Any) -> None:
    errors = []
    for make in (
        lambda: PooledDB(sqlite3, database=":memory:", **{param: value}),
        lambda: connect(sqlite3, database=":memory:", **{param: value}),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            make()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_seconds_have_one_message_in_every_layer() -> None:
    def message(make: Any, *args: Any, **kwargs: Any) -> str:
        with pytest.raises(ValueError) as info:
            make(*args, **kwargs)
        return str(info.value).split(":", 1)[1]

    expected = message(SimplePooledDB, sqlite3, 1, timeout=1e12)
    assert message(connect, sqlite3, max_lifetime=1e12) == expected
    for param in ("checkout_timeout", "max_lifetime", "max_idle", "leak_threshold"):
        assert message(PooledDB, sqlite3, **{param: 1e12}) == expected


VALID: dict[str, list[Any]] = {
    "mincached": [None, 0, 1, 2],
    "maxcached": [None, 0, 1, 5],
    "maxshared": [None, 0, 3],
    "maxconnections": [None, 0, 1, 10],
    "blocking": [True, False],
    "maxusage": [None, 0, 1, 1000],
    "setsession": [None, [], ["PRAGMA foreign_keys = ON"], ("PRAGMA foreign_keys = ON",)],
    "reset": [True, False, None, lambda raw: None],
    "failures": [None, sqlite3.OperationalError, (sqlite3.OperationalError, sqlite3.Error)],
    "ping": [None, 0, 1, 2, 4, 7, "SELECT 1", (7, "SELECT 1"), lambda raw: True],
    "isfatal": [None, lambda exc: True],
    "checkout_timeout": [0.5, 30, MAX_SECONDS],
    "max_lifetime": [None, 0.5, 3600, MAX_SECONDS],
    "max_idle": [None, 60, MAX_SECONDS],
    "max_waiting": [0, 5],
    "max_connecting": [1, 4],
    "reset_session": [True, False],
    "leak_threshold": [None, 10, MAX_SECONDS],
    "validate_interval": [None, 30, MAX_SECONDS],
    "ping_after": [0, 0.0, 1, MAX_SECONDS],
    "reconnect_backoff": [(0.05, 5.0), (1, 1), (1, MAX_SECONDS)],
    "on_connect": [None, lambda raw: None],
    "on_event": [None, lambda event: None],
    "driver": [None, "sqlite3"],
    "logger": [None, logging.getLogger("my.app")],
    "name": [None, "orders"],
}


@pytest.mark.parametrize(
    ("param", "value"),
    [pytest.param(p, v, id=f"{p}={_show(v)}") for p, values in VALID.items() for v in values],
)
def test_valid_values_are_accepted(param: str, value: Any) -> None:
    pool = PooledDB(sqlite3, database=":memory:", **{param: value})
    try:
        with pool.connection() as db:
            db.cursor().execute("SELECT 1")
    finally:
        pool.close()


def test_dbutils_positional_call() -> None:
    # creator, mincached, maxcached, maxshared, maxconnections, blocking, maxusage,
    # setsession, reset, failures, ping, isfatal, *args
    pool = PooledDB(sqlite3, 1, 0, 0, 0, False, None, None, True, None, 1, None, ":memory:")
    with pool.connection() as db:
        db.cursor().execute("SELECT 1")
    pool.close()


@pytest.mark.parametrize("reset", [None, 0, False, True, RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY])
def test_classic_valid_values_are_accepted_without_connecting(reset: Any) -> None:
    # mincached=0: PooledPg opens nothing until the first checkout.
    PooledPg(0, 0, 0, False, None, None, reset).close()
    PooledPg(None, None, None, True, 0, [], reset, ping=7, ping_after=0, max_idle=60).close()
