"""One options object per pool (issue 14): checked once, read-only, the signatures' defaults.

From the outside: ``PoolOptions`` and ``SteadyOptions`` as a user makes them,
``pool.options``, ``PooledDB.from_options``, with sqlite3 and a real
PostgreSQL through psycopg.
"""

from __future__ import annotations

import functools
import inspect
import logging
import pickle
import sqlite3
from typing import Any

import psycopg
import pytest

from tether.pooled import PooledDB, PooledPg, PoolOptions
from tether.steady import SteadyDBConnection, SteadyOptions, SteadyPgConnection, connect


def _defaults(func: Any, skip: set[str]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in skip
    }


STEADY_FIELDS = set(SteadyOptions._fields)
POOL_FIELDS = set(PoolOptions._fields) - {"steady"}


def _checked(options_class: type, name: str, value: Any) -> Any:
    """What the options object stores for a signature's default (None counts as 0...)."""
    return getattr(options_class(**{name: value}), name)


def test_pooleddb_signature_defaults_are_the_options_defaults() -> None:
    # The signature is a thin forwarder: its defaults must be the options' own,
    # so that PooledDB(creator) and PooledDB.from_options(creator, PoolOptions()) agree.
    pool_defaults = PoolOptions()
    steady_defaults = SteadyOptions(closeable=False)
    seen = set()
    for name, default in _defaults(PooledDB.__init__, {"driver"}).items():
        if name in POOL_FIELDS:
            assert _checked(PoolOptions, name, default) == getattr(pool_defaults, name), name
        else:
            assert name in STEADY_FIELDS, f"{name}: in PooledDB's signature, in no options object"
            assert _checked(SteadyOptions, name, default) == getattr(steady_defaults, name), name
        seen.add(name)
    assert seen >= POOL_FIELDS
    # closeable is the pool's business; max_lifetime is the pool's own (it retires
    # old connections between checkouts), not its steady connections'
    assert STEADY_FIELDS - seen == {"closeable"}


def test_pooledpg_signature_defaults_are_the_options_defaults() -> None:
    pool_defaults = PoolOptions()
    found = _defaults(PooledPg.__init__, {"driver"})
    assert found["reset"] is None  # DBUtils' PooledPg default: the same as True (roll back)
    for name, default in found.items():
        if name in POOL_FIELDS:
            assert _checked(PoolOptions, name, default) == getattr(pool_defaults, name), name
        else:
            assert _checked(SteadyOptions, name, default) == getattr(SteadyOptions(), name), name


def _keyword_only(func: Any) -> set[str]:
    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def test_extras_are_the_fronts_keyword_only_arguments() -> None:
    # from_options passes extras() by keyword: every one of them, nothing else
    extras = set(PoolOptions().extras())
    assert _keyword_only(PooledDB.__init__) == extras | {"driver"}
    assert _keyword_only(PooledPg.__init__) == extras | {"driver", "ping"}


def test_steady_signatures_defaults_are_the_options_defaults() -> None:
    defaults = SteadyOptions()
    for func in (SteadyDBConnection.__init__, connect):
        found = _defaults(func, {"driver"})
        assert set(found) == STEADY_FIELDS
        for name, default in found.items():
            assert _checked(SteadyOptions, name, default) == getattr(defaults, name), name
    classic = _defaults(SteadyPgConnection.__init__, {"driver"})
    assert set(classic) == STEADY_FIELDS - {"failures", "isfatal"}
    assert classic["ping"] == 0  # DBUtils' SteadyPg never pings; the rest as SteadyOptions


def test_pool_options_are_what_was_given_checked() -> None:
    log = logging.getLogger("test-options")
    with PooledDB(
        sqlite3.connect,
        0,
        4,
        0,
        6,
        True,
        maxusage=100,
        setsession=["PRAGMA foreign_keys = ON"],
        checkout_timeout=2,
        max_lifetime=600,
        name="opts",
        logger=log,
        database=":memory:",
        check_same_thread=False,
    ) as pool:
        o = pool.options
        assert isinstance(o, PoolOptions)
        assert (o.maxcached, o.maxconnections, o.blocking) == (4, 6, True)
        assert o.checkout_timeout == 2.0 and isinstance(o.checkout_timeout, float)
        assert o.max_lifetime == 600.0 and o.name == "opts"
        assert o.steady.maxusage == 100
        assert o.steady.setsession == ("PRAGMA foreign_keys = ON",)
        assert o.steady.logger is log and o.steady.closeable is False
        assert o.steady.max_lifetime is None  # the pool retires old connections itself
        with pytest.raises(AttributeError, match="read-only"):
            o.maxconnections = 7  # type: ignore[misc]
        with pytest.raises(AttributeError):
            pool.options = o  # type: ignore[misc]
        db = pool.connection()
        try:
            # the steady connection was made from the pool's own steady options
            assert db.cursor().execute("PRAGMA foreign_keys").fetchone() == (1,)
        finally:
            db.close()
        pool.resize(maxconnections=9, mincached=1)
        assert (pool.options.maxconnections, pool.options.mincached) == (9, 1)
        assert pool.options.replace(maxconnections=6, mincached=0) == o
        pool.resize(mincached=0)  # only what resize() is given changes
        assert (pool.options.maxconnections, pool.options.mincached) == (9, 0)


def test_resize_keeps_the_limits_as_asked() -> None:
    # maxcached 5 raises maxconnections 2 to 5 (DBUtils' rule); options keep 2,
    # and a resize of mincached alone must not write the raised 5 there.
    with PooledDB(sqlite3.connect, 0, 5, 0, 2, database=":memory:") as pool:
        assert pool.stats()["maxconnections"] == 5
        pool.resize(mincached=1)
        assert pool.options.maxconnections == 2
        assert pool.options == PoolOptions(mincached=1, maxcached=5, maxconnections=2)


def test_equal_settings_are_equal_options() -> None:
    # None, False and True all mean "roll back an open transaction" (reset.py)
    assert PoolOptions(reset=None) == PoolOptions(reset=False) == PoolOptions()


def test_from_options_makes_a_pool_like_the_first() -> None:
    kwargs = {"database": ":memory:", "check_same_thread": False}
    first = PooledDB(sqlite3.connect, maxconnections=3, maxusage=5, ping=0, **kwargs)
    with first, PooledDB.from_options(sqlite3.connect, first.options, **kwargs) as second:
        assert second.options == first.options
        assert second.stats()["maxconnections"] == 3
        db = second.connection()
        assert db.cursor().execute("SELECT 2").fetchone() == (2,)
        db.close()
    with pytest.raises(TypeError, match="options: expected PoolOptions"):
        PooledDB.from_options(sqlite3.connect, {"maxconnections": 3})  # type: ignore[call-overload]


def test_a_connect_argument_named_options_still_reaches_the_driver(pg_server: Any) -> None:
    # libpq's own `options` (server settings at connect): the pool's options
    # object must never take that name from the creator's keywords.
    dsn = pg_server.url()
    options = PoolOptions(maxconnections=2, steady=SteadyOptions(maxusage=50))
    pools = [
        PooledDB(
            psycopg.connect, conninfo=dsn, maxconnections=2, options="-c statement_timeout=4321"
        ),
        PooledDB.from_options(psycopg.connect, options, dsn, options="-c statement_timeout=4321"),
    ]
    for pool in pools:
        with pool:
            db = pool.connection()
            try:
                row = db.cursor().execute("SHOW statement_timeout").fetchone()
                assert row == ("4321ms",)
            finally:
                db.close()
    assert pools[1].options == options.replace()


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("maxconnections", "8", TypeError, "maxconnections: expected an int"),
        ("mincached", -1, ValueError, "mincached: must be >= 0"),
        ("blocking", 1, TypeError, "blocking: expected True or False"),
        ("reset", "yes", TypeError, "reset: expected a bool"),
        ("reset", 5, ValueError, "reset: expected 0, RESET_ALWAYS_ROLLBACK"),
        ("reset", -1, ValueError, "reset: expected 0, RESET_ALWAYS_ROLLBACK"),
        ("reset_session", None, TypeError, "reset_session: expected True or False"),
        ("checkout_timeout", None, TypeError, "checkout_timeout: expected seconds"),
        ("max_idle", float("nan"), ValueError, "max_idle: must be a number of seconds"),
        ("max_connecting", 0, ValueError, "max_connecting: must be >= 1"),
        ("ping_after", -1, ValueError, "ping_after: must be a number of seconds >= 0"),
        ("reconnect_backoff", (2, 1), ValueError, "reconnect_backoff: the first delay"),
        ("on_event", "print", TypeError, "on_event: expected a callable"),
        ("name", 3, TypeError, "name: expected a str"),
        ("steady", {"maxusage": 3}, TypeError, "steady: expected SteadyOptions"),
        (
            "steady",
            SteadyOptions(max_lifetime=60),
            ValueError,
            r"steady: max_lifetime is the pool's own \(PoolOptions.max_lifetime\)",
        ),
    ],
)
def test_bad_pool_option_is_refused_naming_it(
    field: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PoolOptions(**{field: value})
    good = PoolOptions()
    with pytest.raises(error, match=message):
        good.replace(**{field: value})
    with pytest.raises(TypeError, match="no option named 'maxconnection'"):
        good.replace(maxconnection=3)


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("maxusage", 1.5, TypeError, "maxusage: expected an int"),
        ("setsession", "SET x = 1", TypeError, "setsession: expected a list"),
        ("failures", (), ValueError, "failures: an empty tuple"),
        ("ping", 8, ValueError, "ping: the bitmask must be between 0 and 7"),
        ("ping", (1, 2, 3), TypeError, "ping: expected an int bitmask"),
        ("ping", "  ", ValueError, "ping: the SQL statement is empty"),
        ("closeable", "no", TypeError, "closeable: expected True or False"),
        ("isfatal", 1, TypeError, "isfatal: expected a callable"),
        ("max_lifetime", 0, ValueError, "max_lifetime: must be a number of seconds > 0"),
        ("on_connect", "x", TypeError, "on_connect: expected a callable"),
        ("logger", "tether", TypeError, "logger: expected a logging.Logger"),
    ],
)
def test_bad_steady_option_is_refused_naming_it(
    field: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SteadyOptions(**{field: value})


def test_options_are_values_and_print_no_sql() -> None:
    secret = "SET app.token = 'hunter2'"
    o = PoolOptions(name="p", steady=SteadyOptions(setsession=[secret], on_connect=print))
    assert o == PoolOptions(name="p", steady=SteadyOptions(setsession=(secret,), on_connect=print))
    assert hash(o) == hash(o.replace())
    assert o != o.replace(name="q")
    assert pickle.loads(pickle.dumps(o)) == o
    shown = repr(o)
    assert "hunter2" not in shown and "<1 statement>" in shown
    assert "steady=SteadyOptions(" in shown and "on_connect=<print>" in shown
    # a pool's steady connections are never closeable: close() gives them back
    assert PoolOptions(steady=SteadyOptions(closeable=True)).steady.closeable is False
    # a check's arguments are never shown: callables by name, also inside ping's tuple
    check = functools.partial(lambda raw, password: True, password="hunter2")
    for options in (SteadyOptions(ping=(1, check)), SteadyOptions(on_connect=check)):
        assert "hunter2" not in repr(options)
    assert "ping=(1, <partial>)" in repr(SteadyOptions(ping=(1, check)))
    # read-only also against __init__ run again on a made object
    with pytest.raises(AttributeError, match="read-only"):
        o.steady.__init__(maxusage=5)  # type: ignore[misc]
    assert o.steady.maxusage == 0


def test_steady_connection_keeps_its_options() -> None:
    con = SteadyDBConnection(sqlite3.connect, 3, ["PRAGMA foreign_keys = ON"], None, 0, True,
                             database=":memory:")  # fmt: skip
    try:
        assert con.steady_options == SteadyOptions(
            maxusage=3, setsession=["PRAGMA foreign_keys = ON"], ping=0
        )
        again = SteadyDBConnection.from_options(
            sqlite3.connect, con.steady_options, database=":memory:"
        )
        try:
            assert again.steady_options == con.steady_options
            assert again.cursor().execute("PRAGMA foreign_keys").fetchone() == (1,)
        finally:
            again.close()
    finally:
        con.close()
