"""Runnable documentation: every ```python block of a README runs and prints what it says.

A README example that no longer runs, or no longer prints what the README
says, is a bug users find first. The convention:

* a ```python block is followed by ``It prints:`` and a ```text block with
  its exact standard output;
* a block preceded by ``<!-- readme-test: sqlite3 postgresql -->`` runs on
  sqlite3 and on the harness's PostgreSQL; ``<!-- readme-test: postgresql -->``
  only on PostgreSQL (examples that need a real server);
  ``<!-- readme-test: pgbouncer_transaction -->`` / ``pgbouncer_session`` on the
  harness's PgBouncer in that pool mode. Without the comment a block runs on
  sqlite3 only.

On PostgreSQL the example runs in a database of its own, with its sqlite3
lines rewritten: each package's test gives the exact lines and how to write
them for PostgreSQL (:data:`Rewrites`), and the output must be the same.

Each block runs in a fresh interpreter (so blocks cannot lean on each other by
accident) with a temporary working directory (examples may create files).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.harness.servers import DatabaseServer

__all__ = [
    "TARGETS",
    "Example",
    "Rewrites",
    "check_documented",
    "conninfo",
    "examples",
    "on_postgresql",
    "python_blocks",
    "run_example",
    "run_on_postgresql",
    "run_python_block",
    "scratch_database",
]

_EXAMPLE = re.compile(
    r"(?:<!-- readme-test: (?P<targets>[\w ]+) -->\n)?"
    r"```python\n(?P<code>.*?)```\n"
    r"(?:\s*It prints:\s*```text\n(?P<output>.*?)```)?",
    re.S,
)
#: Where an example can be marked to run.
TARGETS = frozenset({"sqlite3", "postgresql", "pgbouncer_transaction", "pgbouncer_session"})

#: sqlite3 lines of examples -> how to write each for a database on a PostgreSQL server.
Rewrites = Mapping[str, Callable[["DatabaseServer", str], str]]


@dataclass(frozen=True)
class Example:
    """One ```python block: where it is, its code, its expected output, where it runs."""

    line: int  # the README line of the block's first code line, 0-based
    code: str
    output: str | None
    targets: frozenset[str]

    @property
    def id(self) -> str:
        """A pytest id: ``line<N>``."""
        return f"line{self.line}"


def examples(readme: Path) -> list[Example]:
    """The ```python blocks of ``readme``, in order, with their outputs and targets."""
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


def python_blocks(readme: Path) -> list[str]:
    """The code of the ```python blocks of ``readme``, in order."""
    return [example.code for example in examples(readme)]


def run_example(code: str, *, timeout: float = 120.0) -> str:
    """Run ``code`` in a new interpreter in an empty directory; its stdout.

    AssertionError with the code and its stderr if it exits with an error.
    """
    with tempfile.TemporaryDirectory(prefix="tether-readme-") as workdir:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"README example failed:\n{code}\n--- stderr ---\n{result.stderr}")
    return result.stdout


def run_python_block(code: str, *, timeout: float = 120.0) -> None:
    """Run ``code`` in a new interpreter; AssertionError with its stderr if it fails."""
    run_example(code, timeout=timeout)


def check_documented(found: list[Example], *, postgresql: int = 0) -> None:
    """Every example says what it prints; at least ``postgresql`` also run on PostgreSQL."""
    assert found, "no ```python block found"
    for example in found:
        assert example.output is not None, f"README line {example.line}: no 'It prints:' block"
        assert example.output.strip(), f"README line {example.line}: prints nothing"
        assert example.targets and example.targets <= TARGETS, (example.line, example.targets)
    on_postgresql = sum("postgresql" in example.targets for example in found)
    assert on_postgresql >= postgresql, f"{on_postgresql} examples run on PostgreSQL"


def conninfo(server: DatabaseServer, database: str) -> str:
    """A Python literal of the libpq URL of ``database`` on ``server``."""
    return repr(server.url(database))


def on_postgresql(code: str, rewrites: Rewrites, server: DatabaseServer, database: str) -> str:
    """``code`` with its sqlite3 lines written for ``database`` on ``server``.

    Each line of ``rewrites`` may occur at most once; at least one must, and
    no mention of sqlite may remain.
    """
    replaced = 0
    for sqlite_line, make in rewrites.items():
        count = code.count(sqlite_line)
        assert count <= 1, f"{sqlite_line!r} occurs {count} times"
        if count:
            code = code.replace(sqlite_line, make(server, database))
            replaced += 1
    assert replaced, f"no line to rewrite for PostgreSQL in:\n{code}"
    assert "sqlite" not in code.lower(), code
    return code


@contextmanager
def scratch_database(server: DatabaseServer, prefix: str = "readme") -> Iterator[str]:
    """A new database on ``server``, unique to this run and worker, dropped afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    database = f"{prefix}_{worker}_{uuid.uuid4().hex[:10]}"
    server.create_database(database)
    try:
        yield database
    finally:
        server.ensure_running()
        server.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run_on_postgresql(example: Example, rewrites: Rewrites, server: DatabaseServer) -> str:
    """Run ``example`` rewritten for a scratch database on ``server``; its stdout."""
    with scratch_database(server) as database:
        return run_example(on_postgresql(example.code, rewrites, server, database))
