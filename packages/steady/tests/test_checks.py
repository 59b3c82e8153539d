"""Bad arguments are refused at construction, naming the parameter; DBUtils' values still work.

Table-driven: every parameter of ``connect``, ``SteadyDBConnection`` and
``SteadyPgConnection`` with the bad values of its kind, checked by the same
functions (tether.simple_pool.checks) as in every other layer.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import threading
from typing import Any

import pytest

from tether.simple_pool import SimplePooledDB
from tether.steady import SteadyDBConnection, SteadyPgConnection, connect

SECRET = "hunter2-do-not-print"
#: The documented maximum of every seconds parameter: 30 days.
MAX_SECONDS = 30 * 24 * 3600

COUNT_BAD: list[tuple[Any, type[Exception]]] = [
    ("", TypeError),  # DBUtils-style `x or 0` took these for 0
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
SECONDS_BAD: list[tuple[Any, type[Exception]]] = [
    ("1", TypeError),
    (True, TypeError),
    (0, ValueError),
    (-1, ValueError),
    (math.inf, ValueError),
    (math.nan, ValueError),
    (sys.maxsize, ValueError),
    (1e12, ValueError),
    (threading.TIMEOUT_MAX, ValueError),
    (MAX_SECONDS + 1, ValueError),
]
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
LOGGER_BAD: list[tuple[Any, type[Exception]]] = [("x", TypeError), (logging, TypeError)]
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
DRIVER_BAD: list[tuple[Any, type[Exception]]] = [("nosuchdriver", ValueError), (3, TypeError)]

#: Every parameter of SteadyDBConnection / connect, with its bad values.
DB_BAD: dict[str, list[tuple[Any, type[Exception]]]] = {
    "maxusage": COUNT_BAD,
    "setsession": SETSESSION_BAD,
    "failures": FAILURES_BAD,
    "ping": PING_BAD,
    "closeable": FLAG_BAD,
    "isfatal": CALLABLE_BAD,
    "driver": DRIVER_BAD,
    "max_lifetime": SECONDS_BAD,
    "on_connect": CALLABLE_BAD,
    "logger": LOGGER_BAD,
}
#: SteadyPgConnection has no failures/isfatal (as in DBUtils' SteadyPgConnection).
PG_BAD = {k: v for k, v in DB_BAD.items() if k not in ("failures", "isfatal")}


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


class Opened(Exception):
    """Raised by the creator: the constructor got as far as connecting."""


def creator(**kwargs: Any) -> sqlite3.Connection:
    raise Opened


@pytest.mark.parametrize("front", [connect, SteadyDBConnection])
@pytest.mark.parametrize(("param", "value", "error"), _cases(DB_BAD))
def test_bad_value_is_refused_before_connecting(
    front: Any, param: str, value: Any, error: type[Exception]
) -> None:
    kwargs: dict[str, Any] = {"driver": "sqlite3", param: value}
    with pytest.raises(error, match=rf"^{param}\b") as info:
        front(creator, password=SECRET, **kwargs)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("param", "value", "error"), _cases(PG_BAD))
def test_bad_value_is_refused_before_connecting_classic(
    param: str, value: Any, error: type[Exception]
) -> None:
    # Nothing listens on port 1: a check made only after connecting fails differently.
    with pytest.raises(error, match=rf"^{param}\b") as info:
        SteadyPgConnection(host="127.0.0.1", port=1, passwd=SECRET, **{param: value})
    assert SECRET not in str(info.value)


def test_bad_logger_no_longer_waits_for_the_first_reopen() -> None:
    # It used to be accepted, and the first reopen then failed with AttributeError.
    with pytest.raises(TypeError, match=r"^logger\b"):
        connect(sqlite3, database=":memory:", logger="x")  # type: ignore[arg-type]


def test_same_parameter_same_message_as_the_simple_pool() -> None:
    messages = []
    for make in (
        lambda: connect(creator, driver="sqlite3", max_lifetime=1e12),
        lambda: SimplePooledDB(sqlite3, 1, timeout=1e12),
    ):
        with pytest.raises(ValueError) as info:
            make()
        messages.append(str(info.value).split(":", 1)[1])
    assert messages[0] == messages[1]


VALID: dict[str, list[Any]] = {
    "maxusage": [None, 0, 1, 1000],
    "setsession": [None, [], ["PRAGMA foreign_keys = ON"], ("PRAGMA foreign_keys = ON",)],
    "failures": [None, sqlite3.OperationalError, (sqlite3.OperationalError, sqlite3.Error)],
    "ping": [None, 0, 1, 2, 4, 7, "SELECT 1", (7, "SELECT 1"), lambda raw: True],
    "closeable": [True, False],
    "isfatal": [None, lambda exc: True],
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
    con = connect(sqlite3, database=":memory:", **{param: value})
    con.cursor().execute("SELECT 1")
    con.close()


def test_dbutils_positional_call() -> None:
    # creator, maxusage, setsession, failures, ping, closeable, isfatal, *args
    con = connect(sqlite3, 0, None, None, 1, True, None, ":memory:")
    con.cursor().execute("SELECT 1")
    con.close()
