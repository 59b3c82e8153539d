"""Every python example in this package's README runs and prints what it says.

The convention is tether.harness.docs': each ```python block is followed by
``It prints:`` and its exact output; blocks marked
``<!-- readme-test: sqlite3 postgresql -->`` also run on the harness's
PostgreSQL with the sqlite3 lines of ``POSTGRESQL`` rewritten for psycopg
(``<!-- readme-test: postgresql -->``: only there), and print the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.harness.docs import (
    Example,
    Rewrites,
    check_documented,
    conninfo,
    examples,
    run_example,
    run_on_postgresql,
)
from tether.harness.servers import DatabaseServer

README = Path(__file__).parents[1] / "README.md"
EXAMPLES = examples(README)

#: The sqlite3 lines of the examples, and how to write them for psycopg.
POSTGRESQL: Rewrites = {
    "import sqlite3, tempfile, os\n": lambda server, database: "import psycopg, tempfile, os\n",
    "persist = PersistentDB(sqlite3, database=path)": lambda server, database: (
        f"persist = PersistentDB(psycopg, conninfo={conninfo(server, database)})"
    ),
    '(sqlite3, database=os.path.join(tempfile.mkdtemp(), "a.db"))': lambda server, database: (
        f"(psycopg, conninfo={conninfo(server, database)})"
    ),
}


def test_every_example_says_what_it_prints() -> None:
    check_documented(EXAMPLES, postgresql=2)


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
