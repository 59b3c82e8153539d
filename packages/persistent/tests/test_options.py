"""One options object per persistent generator (issue 14), from the outside."""

from __future__ import annotations

import inspect
import sqlite3
import threading
from typing import Any

import pytest

from tether.persistent import PersistentDB, PersistentOptions, PersistentPg
from tether.steady import SteadyOptions

GENERATOR_FIELDS = set(PersistentOptions._fields) - {"steady"}
STEADY_FIELDS = set(SteadyOptions._fields)


def _defaults(func: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty and name != "driver"
    }


@pytest.mark.parametrize("front", [PersistentDB, PersistentPg])
def test_signature_defaults_are_the_options_defaults(front: Any) -> None:
    defaults = PersistentOptions()
    found = _defaults(front.__init__)
    for name, default in found.items():
        if name in GENERATOR_FIELDS:
            checked = getattr(PersistentOptions(**{name: default}), name)
            assert checked == getattr(defaults, name), name
        else:
            assert name in STEADY_FIELDS, f"{name}: in the signature, in no options object"
            checked = getattr(SteadyOptions(**{name: default}), name)
            assert checked == getattr(defaults.steady, name), name
    expected = GENERATOR_FIELDS | STEADY_FIELDS
    if front is PersistentPg:  # classic: no failures/isfatal; ping is taken from **kwargs
        expected -= {"failures", "isfatal", "ping"}
    assert set(found) == expected


def test_extras_are_the_fronts_keyword_only_arguments() -> None:
    extras = set(PersistentOptions().extras())
    for front in (PersistentDB, PersistentPg):
        keyword_only = {
            name
            for name, p in inspect.signature(front.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        assert keyword_only == extras | {"driver"}


def test_generator_options_are_what_was_given_and_reach_each_thread() -> None:
    persist = PersistentDB(
        sqlite3.connect,
        7,
        ["PRAGMA foreign_keys = ON"],
        ping=0,
        closeable=True,
        maxconnections=2,
        checkout_timeout=3,
        database=":memory:",
    )
    try:
        o = persist.options
        assert (o.maxconnections, o.checkout_timeout, o.threadlocal) == (2, 3.0, None)
        assert o.steady == SteadyOptions(
            maxusage=7, setsession=["PRAGMA foreign_keys = ON"], ping=0, closeable=True
        )
        with pytest.raises(AttributeError, match="read-only"):
            o.blocking = True  # type: ignore[misc]
        rows: list[Any] = []

        def work() -> None:
            db = persist.connection()
            rows.append(db.cursor().execute("PRAGMA foreign_keys").fetchone())
            assert db.steady_options == o.steady  # type: ignore[attr-defined]
            db.close()

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert rows == [(1,)]
        clone = PersistentDB.from_options(sqlite3.connect, o, database=":memory:")
        try:
            assert clone.options == o
            assert clone.connection().cursor().execute("SELECT 3").fetchone() == (3,)
        finally:
            clone.close()
    finally:
        persist.close()


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("maxconnections", 2.0, TypeError, "maxconnections: expected an int"),
        ("blocking", "yes", TypeError, "blocking: expected True or False"),
        ("checkout_timeout", 0, ValueError, "checkout_timeout: must be a number of seconds > 0"),
        ("ping_after", None, TypeError, "ping_after: expected seconds"),
        ("threadlocal", 3, TypeError, "threadlocal: expected a class like threading.local"),
        ("steady", None, TypeError, "steady: expected SteadyOptions"),
    ],
)
def test_bad_option_is_refused_naming_it(
    field: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PersistentOptions(**{field: value})
    with pytest.raises(error, match=message):
        PersistentOptions().replace(**{field: value})


def test_from_options_refuses_what_is_not_options() -> None:
    with pytest.raises(TypeError, match="options: expected PersistentOptions"):
        PersistentDB.from_options(sqlite3.connect, SteadyOptions())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="PersistentPg takes no failures or isfatal"):
        PersistentPg.from_options(PersistentOptions(steady=SteadyOptions(isfatal=lambda exc: True)))
