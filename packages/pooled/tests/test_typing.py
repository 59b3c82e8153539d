"""The types a user leans on, checked as a user's CI would: ``mypy --strict`` on user code.

mypy (one run for the module, in a process of its own: in this one it
would leave some 400,000 objects behind, and every later ``gc.collect()``
of the test process would pay for them) checks the programs in ``typed/``
against tether.pooled as installed, ``py.typed`` and all:

* ``user_program.py`` must have no error, its ``assert_type`` calls
  included (``stats()`` is a ``PoolStats``, each key its own type;
  ``PoolEvent.kind`` an ``EventKind``), and it runs;
* every ``# E: <code>`` line of ``misuse.py`` must be an error of that code
  (a misspelt stats key, an event kind that does not exist, a wrong argument
  to the driver's method, the creator's argument in DBUtils' ``mincached``
  place), and no other line may be one;
* ``connection_attrs.py``: a pooled connection is typed as the creator's
  connection (``sqlite3.Connection``, ``psycopg.Connection``; the DB-API 2
  Protocol for a module creator), its ``assert_type`` calls hold, and a
  method that type lacks is an error on each marked line, nowhere else;
* ``pooled_pg_program.py`` (PyGreSQL's classic API): ``PooledPg.connection()`` is a
  ``tether.steady.PgConnection``, ``pg.DB``'s methods with PyGreSQL's own
  signatures; no error, and it runs against a real PostgreSQL;
* ``pg_misuse.py``: a method ``pg.DB`` lacks, a wrong argument to one of its
  methods, a wrong result type: an error on each marked line, nowhere else.

The ``PgConnection`` Protocol is held to what it describes: each of its
methods is ``pg.DB``'s, with the same parameters, and a real pooled classic
connection has every one.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.harness import DriverTarget

TYPED = Path(__file__).parent / "typed"
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")
_MARK = re.compile(r"#\s*E:\s*(?P<code>[\w-]+)")

Errors = dict[str, dict[int, set[str]]]  # file name -> line -> error codes


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Errors:
    """mypy --strict over typed/*.py, once: the errors by file and line."""
    scratch = tmp_path_factory.mktemp("mypy")
    config = scratch / "mypy.ini"  # the user's config, not the repository's (no source paths)
    config.write_text("[mypy]\nstrict = True\nwarn_unreachable = True\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(scratch / "cache"),
            "--no-error-summary",
            "--show-error-codes",
            *sorted(str(path) for path in TYPED.glob("*.py")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 2: mypy itself failed (a crash, an option)
    errors: Errors = defaultdict(lambda: defaultdict(set))
    for line in done.stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None:
            errors[Path(match["file"]).name][int(match["line"])].add(match["code"])
        else:
            assert ": note: " in line, line  # nothing mypy says goes unread
    return errors


def _marked(name: str) -> dict[int, set[str]]:
    """The ``# E: <code>`` marks of ``typed/<name>``, by line number."""
    lines = (TYPED / name).read_text().splitlines()
    return {
        number: {match["code"]}
        for number, text in enumerate(lines, 1)
        if (match := _MARK.search(text)) is not None
    }


def test_user_program_type_checks(mypy_errors: Errors) -> None:
    assert dict(mypy_errors.get("user_program.py", {})) == {}


def test_user_program_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(TYPED / "user_program.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[('checkin', 1), ('checkout', 1), ('connect', 1)] 1 24",
        "['tether_pool_checkouts_total{pool=\"typed\"} 1.0']",
        "True (1,)",
        "2",
    ]


def test_misuse_is_an_error(mypy_errors: Errors) -> None:
    marked = _marked("misuse.py")
    assert len(marked) == 8
    assert {line: set(codes) for line, codes in mypy_errors["misuse.py"].items()} == marked


def test_no_such_method_on_a_pooled_connection_is_an_error(mypy_errors: Errors) -> None:
    marked = _marked("connection_attrs.py")
    assert marked
    found = {line: set(codes) for line, codes in mypy_errors.get("connection_attrs.py", {}).items()}
    assert found == marked


def test_the_generic_pool_subscripts_and_instantiates_at_run_time() -> None:
    """``PooledDB[psycopg.Connection]`` is a run-time expression too (an alias, a base)."""
    import sqlite3

    import psycopg

    from tether.pooled import PooledDB

    assert repr(PooledDB[psycopg.Connection]).endswith("PooledDB[psycopg.Connection]")
    with PooledDB[sqlite3.Connection](sqlite3.connect, database=":memory:") as pool:
        assert isinstance(pool, PooledDB)
        with pool.connection() as db:
            assert isinstance(db, sqlite3.Connection)
            assert db.execute("SELECT 1").fetchone() == (1,)


# -- PyGreSQL's classic API: PooledPg ---------------------------------------------------------


@pytest.fixture
def pg_classic(pg_server: Any, tmp_path: Path) -> Iterator[DriverTarget]:
    target = DriverTarget.build("pg", pg_server, workdir=tmp_path)
    yield target
    target.cleanup()


def test_pg_program_type_checks(mypy_errors: Errors) -> None:
    assert dict(mypy_errors.get("pooled_pg_program.py", {})) == {}


@pytest.mark.server
def test_pg_program_runs(pg_classic: DriverTarget) -> None:
    # The connect arguments hold a password: the environment, not the command line.
    env = {**os.environ, "TETHER_PG_KWARGS": json.dumps(pg_classic.kwargs)}
    done = subprocess.run(
        [sys.executable, str(TYPED / "pooled_pg_program.py")],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[(42,)] {'n': 7}", "tether 3 1"]


def test_pg_misuse_is_an_error(mypy_errors: Errors) -> None:
    marked = _marked("pg_misuse.py")
    assert len(marked) == 9
    assert {line: set(codes) for line, codes in mypy_errors["pg_misuse.py"].items()} == marked


def _protocol_methods() -> dict[str, Any]:
    from tether.steady import PgConnection

    return {
        name: value
        for name, value in vars(PgConnection).items()
        if callable(value) and not name.startswith("_")
    }


def test_the_pg_protocol_is_pg_db_s_api() -> None:
    """Each method of ``PgConnection`` is ``pg.DB``'s, with its parameters (kinds, defaults)."""
    import pg

    from tether.steady import PgConnection

    def parameters(function: Any) -> list[tuple[str, Any, Any]]:
        return [
            (p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()
        ]

    methods = _protocol_methods()
    assert {"query", "query_formatted", "insert", "update", "get", "delete", "begin",
            "commit", "rollback", "close", "reopen"} <= set(methods)  # fmt: skip
    for name, method in methods.items():
        assert parameters(method) == parameters(getattr(pg.DB, name)), name
    assert isinstance(vars(PgConnection)["db"], property)  # tether's: the pg.DB itself


@pytest.mark.server
def test_a_pooled_classic_connection_has_every_method_of_its_type(
    pg_classic: DriverTarget,
) -> None:
    import pg

    from tether.pooled import PooledPg

    with PooledPg(1, 1, 1, **pg_classic.kwargs) as pool, pool.connection() as db:
        missing = [name for name in _protocol_methods() if not callable(getattr(db, name))]
        assert missing == []
        assert isinstance(db.db, pg.DB)
