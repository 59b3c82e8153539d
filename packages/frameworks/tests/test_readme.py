"""Every python example in this package's README runs as written and prints what it says.

The README's convention: a ```python block is followed by ``It prints:`` and
a ```text block with its exact output (required here for every block). A
block preceded by ``<!-- readme-test: sqlite3 postgresql -->`` also runs on
the harness's PostgreSQL, in a database of its own: the sqlite3 line of the
example (one of ``POSTGRESQL`` below, which must occur exactly once) is
replaced by its PostgreSQL equivalent, and the output must be the same.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.harness.servers import DatabaseServer

from .conftest import sqlalchemy_url, unique_name

README = Path(__file__).parents[1] / "README.md"

_EXAMPLE = re.compile(
    r"(?:<!-- readme-test: (?P<targets>[\w ]+) -->\n)?"
    r"```python\n(?P<code>.*?)```\n"
    r"(?:\s*It prints:\s*```text\n(?P<output>.*?)```)?",
    re.S,
)
TARGETS = {"sqlite3", "postgresql"}


def _sqlalchemy(server: DatabaseServer, database: str) -> str:
    return f"    {sqlalchemy_url(server, database)!r},\n"


def _peewee(server: DatabaseServer, database: str) -> str:
    return (
        "db = PooledPostgresqlDatabase(\n"
        f"    {database!r}, host={server.host!r}, port={server.port},"
        f" user={server.user!r}, password={server.password!r},\n"
        "    max_connections=4, timeout=10,\n"
        ")\n"
    )


#: The sqlite3 lines of the examples, and how to write them for PostgreSQL.
POSTGRESQL: dict[str, Callable[[DatabaseServer, str], str]] = {
    '    "sqlite:///app.db",\n'
    '    connect_args={"check_same_thread": False},'
    "  # tether lends connections across threads\n": _sqlalchemy,
    'db = PooledSqliteDatabase("app.db", max_connections=4, timeout=10,'
    ' pragmas={"journal_mode": "wal"})\n': _peewee,
    "from tether.frameworks.peewee import PooledSqliteDatabase\n": lambda server, database: (
        "from tether.frameworks.peewee import PooledPostgresqlDatabase\n"
    ),
}


@dataclass(frozen=True)
class Example:
    line: int
    code: str
    output: str | None
    targets: frozenset[str]


def examples(readme: Path) -> list[Example]:
    text = readme.read_text(encoding="utf-8")
    return [
        Example(
            text.count("\n", 0, match.start("code")),
            match["code"],
            match["output"],
            frozenset((match["targets"] or "sqlite3").split()),
        )
        for match in _EXAMPLE.finditer(text)
    ]


EXAMPLES = examples(README)


def _run(code: str) -> str:
    """Run ``code`` in a new interpreter in an empty directory; its stdout."""
    with tempfile.TemporaryDirectory(prefix="tether-readme-") as workdir:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"README example failed:\n{code}\n--- stderr ---\n{result.stderr}")
    return result.stdout


def on_postgresql(code: str, server: DatabaseServer, database: str) -> str:
    """``code`` with its sqlite3 lines written for ``database`` on ``server``."""
    replaced = 0
    for sqlite_line, make in POSTGRESQL.items():
        count = code.count(sqlite_line)
        assert count <= 1, f"{sqlite_line!r} occurs {count} times"
        if count:
            code = code.replace(sqlite_line, make(server, database))
            replaced += 1
    assert replaced, "no sqlite3 line to replace: update POSTGRESQL in test_readme.py"
    assert "sqlite" not in code.lower(), code
    return code


def test_every_example_says_what_it_prints() -> None:
    assert len(EXAMPLES) >= 2
    for example in EXAMPLES:
        assert example.output is not None, f"README line {example.line}: no 'It prints:' block"
        assert example.targets <= TARGETS, example.targets
    assert sum("postgresql" in example.targets for example in EXAMPLES) >= 2


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: f"line{example.line}")
def test_readme_example_on_sqlite3(example: Example) -> None:
    assert _run(example.code) == example.output


@pytest.mark.parametrize(
    "example",
    [example for example in EXAMPLES if "postgresql" in example.targets],
    ids=lambda example: f"line{example.line}",
)
def test_readme_example_on_postgresql(example: Example, pg_server: DatabaseServer) -> None:
    database = unique_name("readme")
    pg_server.create_database(database)
    try:
        assert _run(on_postgresql(example.code, pg_server, database)) == example.output
    finally:
        pg_server.ensure_running()
        pg_server.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
