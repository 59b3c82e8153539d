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
  code, and no other line is one.
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


def test_misuse_of_a_persistent_connection_is_an_error(mypy_errors: Errors) -> None:
    lines = (TYPED / "connection_attrs.py").read_text().splitlines()
    marked = {
        number: {match["code"]}
        for number, text in enumerate(lines, 1)
        if (match := _MARK.search(text)) is not None
    }
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
