"""Bad arguments are refused at construction, naming the parameter; DBUtils' values still work.

Table-driven: every parameter of ``PersistentDB`` and ``PersistentPg`` with
the bad values of its kind. The checks are the steady layer's and the simple
pool's own (tether.simple_pool.checks): same parameter, same message.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import threading
from typing import Any

import pytest

from tether.persistent import PersistentDB, PersistentPg
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

#: Every parameter of PersistentDB, with its bad values.
DB_BAD: dict[str, list[tuple[Any, type[Exception]]]] = {
    "creator": [(42, TypeError)],
    "maxusage": COUNT_BAD,
    "setsession": SETSESSION_BAD,
    "failures": FAILURES_BAD,
    "ping": PING_BAD,
    "closeable": FLAG_BAD,
    "threadlocal": CALLABLE_BAD,
    "isfatal": CALLABLE_BAD,
    "maxconnections": COUNT_BAD,
    "blocking": FLAG_BAD,
    "checkout_timeout": [(None, TypeError), *SECONDS_BAD],
    "ping_after": [(None, TypeError), *HUGE_BAD],  # 0: ping every time
    "driver": [("nosuchdriver", ValueError), (3, TypeError)],
    "max_lifetime": SECONDS_BAD,
    "on_connect": CALLABLE_BAD,
    "logger": [("x", TypeError), (logging, TypeError)],
}
#: PersistentPg: DBUtils' PersistentPg has no creator, failures, isfatal.
PG_BAD = {k: v for k, v in DB_BAD.items() if k not in ("creator", "failures", "isfatal")}


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
        PersistentDB(password=SECRET, **kwargs)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("param", "value", "error"), _cases(PG_BAD))
def test_bad_value_is_refused_at_construction_classic(
    param: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^{param}\b") as info:
        PersistentPg(passwd=SECRET, **{param: value})
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("maxusage", ""),
        ("setsession", [1]),
        ("failures", 42),
        ("ping", 9),
        ("closeable", "no"),
        ("isfatal", 3),
        ("max_lifetime", 1e12),
        ("on_connect", 1),
        ("logger", "x"),
    ],
)
def test_same_parameter_same_error_as_the_steady_layer(param: str, value: Any) -> None:
    errors = []
    for make in (
        lambda: PersistentDB(sqlite3, database=":memory:", **{param: value}),
        lambda: connect(sqlite3, database=":memory:", **{param: value}),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            make()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


VALID: dict[str, list[Any]] = {
    "maxusage": [None, 0, 1, 1000],
    "setsession": [None, [], ["PRAGMA foreign_keys = ON"], ("PRAGMA foreign_keys = ON",)],
    "failures": [None, sqlite3.OperationalError, (sqlite3.OperationalError, sqlite3.Error)],
    "ping": [None, 0, 1, 2, 4, 7, "SELECT 1", (7, "SELECT 1"), lambda raw: True],
    "closeable": [True, False],
    "threadlocal": [None, threading.local],
    "isfatal": [None, lambda exc: True],
    "maxconnections": [None, 0, 1, 10],
    "blocking": [True, False],
    "checkout_timeout": [0.5, 30, MAX_SECONDS],
    "ping_after": [0, 0.0, 1, MAX_SECONDS],
    "driver": [None, "sqlite3"],
    "max_lifetime": [None, 0.5, 3600, MAX_SECONDS],
    "on_connect": [None, lambda raw: None],
    "logger": [None, logging.getLogger("my.app")],
}


@pytest.mark.parametrize(
    ("param", "value"),
    [pytest.param(p, v, id=f"{p}={_show(v)}") for p, values in VALID.items() for v in values],
)
def test_valid_values_are_accepted(param: str, value: Any) -> None:
    with PersistentDB(sqlite3, database=":memory:", **{param: value}) as persist:
        persist.connection().cursor().execute("SELECT 1")


def test_dbutils_positional_call() -> None:
    # creator, maxusage, setsession, failures, ping, closeable, threadlocal, isfatal, *args
    with PersistentDB(sqlite3, 0, None, None, 1, False, None, None, ":memory:") as persist:
        persist.connection().cursor().execute("SELECT 1")


def test_classic_valid_values_are_accepted_without_connecting() -> None:
    # PersistentPg connects at a thread's first connection() only.
    PersistentPg(0, None, False, None, maxconnections=None, blocking=True).close()
    PersistentPg(None, [], True, threading.local, ping=7, ping_after=0).close()
