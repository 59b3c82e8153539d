"""Every python example in this package's README runs as written and prints what it says.

The README's convention: a ```python block is followed by ``It prints:`` and
a ```text block with its exact output (required here for every block). A
block preceded by ``<!-- readme-test: sqlite3 postgresql -->`` also runs on
the harness's PostgreSQL, in a database of its own: the sqlite3 line of the
example (one of ``POSTGRESQL`` below; see tether.harness.docs) is
replaced by its PostgreSQL equivalent, and the output must be the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tether.harness.docs import Example, check_documented, examples, run_example, run_on_postgresql
from tether.harness.servers import DatabaseServer

from .conftest import sqlalchemy_url

README = Path(__file__).parents[1] / "README.md"


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


EXAMPLES = examples(README)


def test_every_example_says_what_it_prints() -> None:
    check_documented(EXAMPLES, postgresql=2)
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if "sqlite3" in e.targets], ids=lambda e: e.id
)
def test_readme_example_on_sqlite3(example: Example) -> None:
    assert run_example(example.code) == example.output


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if "postgresql" in e.targets], ids=lambda e: e.id
)
def test_readme_example_on_postgresql(example: Example, pg_server: DatabaseServer) -> None:
    assert run_on_postgresql(example, POSTGRESQL, pg_server) == example.output
