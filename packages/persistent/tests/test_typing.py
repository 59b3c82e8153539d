"""The types a user leans on, checked as a user's CI would: ``mypy --strict`` on user code.

mypy (once, in a process of its own, as tether-pooled's ``test_typing.py``
does) checks the programs in ``typed/`` against tether.persistent as
installed, ``py.typed`` and all:

* ``persistent_program.py`` has no error, its ``assert_type`` calls included
  (``PersistentDB(sqlite3.connect)`` gives ``sqlite3.Connection``, a module
  creator the DB-API 2 Protocol), and it runs;
* each ``# E: <code>`` line of ``connection_attrs.py`` (a method the
  connection type lacks, a wrong argument to the driver's method, the
  creator's argument in DBUtils' ``maxusage`` place) is an error of that
  code, and no other line is one;
* ``persistent_pg_program.py`` (PyGreSQL's classic API): a ``PersistentPg``
  connection is a ``tether.steady.PgConnection``, ``pg.DB``'s methods with
  PyGreSQL's own signatures; no error, and it runs against a real PostgreSQL;
* each ``# E: <code>`` line of ``pg_misuse.py`` (a method ``pg.DB`` lacks, a
  wrong argument, a wrong result type) is an error of that code, no other line one.
"""

from __future__ import annotations

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
    config = scratch / "mypy.ini"  # the user's config, not the repository's
    config.write_text("[mypy]\nstrict = True\nwarn_unreachable = True\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config),
         "--cache-dir", str(scratch / "cache"), "--no-error-summary", "--show-error-codes",
         *sorted(str(path) for path in TYPED.glob("*.py"))],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 2: mypy itself failed
    errors: Errors = defaultdict(lambda: defaultdict(set))
    for line in done.stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None:
            errors[Path(match["file"]).name][int(match["line"])].add(match["code"])
        else:
            assert ": note: " in line, line  # nothing mypy says goes unread
    return errors


def test_user_program_type_checks(mypy_errors: Errors) -> None:
    assert dict(mypy_errors.get("persistent_program.py", {})) == {}


def test_user_program_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(TYPED / "persistent_program.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True (1,)", "(2,)"]


def _marked(name: str) -> dict[int, set[str]]:
    """The ``# E: <code>`` marks of ``typed/<name>``, by line number."""
    lines = (TYPED / name).read_text().splitlines()
    return {
        number: {match["code"]}
        for number, text in enumerate(lines, 1)
        if (match := _MARK.search(text)) is not None
    }


def test_misuse_of_a_persistent_connection_is_an_error(mypy_errors: Errors) -> None:
    marked = _marked("connection_attrs.py")
    assert len(marked) == 6
    found = {line: set(codes) for line, codes in mypy_errors.get("connection_attrs.py", {}).items()}
    assert found == marked


def test_the_generic_generator_subscripts_and_instantiates_at_run_time() -> None:
    """``PersistentDB[psycopg.Connection]`` is a run-time expression too (an alias, a base)."""
    import sqlite3

    import psycopg

    from tether.persistent import PersistentDB

    assert repr(PersistentDB[psycopg.Connection]).endswith("PersistentDB[psycopg.Connection]")
    persist = PersistentDB[sqlite3.Connection](sqlite3.connect, database=":memory:")
    try:
        assert isinstance(persist, PersistentDB)
        with persist.connection() as db:
            assert isinstance(db, sqlite3.Connection)
            assert db.execute("SELECT 1").fetchone() == (1,)
    finally:
        persist.close()


# -- PyGreSQL's classic API: PersistentPg -----------------------------------------------------


@pytest.fixture
def pg_classic(pg_server: Any, tmp_path: Path) -> Iterator[DriverTarget]:
    target = DriverTarget.build("pg", pg_server, workdir=tmp_path)
    yield target
    target.cleanup()


def test_pg_program_type_checks(mypy_errors: Errors) -> None:
    assert dict(mypy_errors.get("persistent_pg_program.py", {})) == {}


@pytest.mark.server
def test_pg_program_runs(pg_classic: DriverTarget) -> None:
    # The connect arguments hold a password: the environment, not the command line.
    env = {**os.environ, "TETHER_PG_KWARGS": json.dumps(pg_classic.kwargs)}
    done = subprocess.run(
        [sys.executable, str(TYPED / "persistent_pg_program.py")],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[(42,)]", "['tether']"]


def test_pg_misuse_is_an_error(mypy_errors: Errors) -> None:
    marked = _marked("pg_misuse.py")
    assert len(marked) == 6
    found = {line: set(codes) for line, codes in mypy_errors.get("pg_misuse.py", {}).items()}
    assert found == marked


@pytest.mark.server
def test_a_persistent_classic_connection_has_every_method_of_its_type(
    pg_classic: DriverTarget,
) -> None:
    """What ``PgConnection`` promises is there on a real ``PersistentPg`` connection."""
    import pg

    from tether.persistent import PersistentPg
    from tether.steady import PgConnection

    methods = [name for name, value in vars(PgConnection).items()
               if callable(value) and not name.startswith("_")]  # fmt: skip
    persist = PersistentPg(**pg_classic.kwargs)
    try:
        db = persist.connection()
        assert [name for name in methods if not callable(getattr(db, name))] == []
        assert isinstance(db.db, pg.DB)
    finally:
        persist.close()
