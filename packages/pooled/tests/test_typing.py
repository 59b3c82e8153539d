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
  method that type lacks is an error on each marked line, nowhere else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

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
