"""The root README's PgBouncer examples run on a real PgBouncer and print what they say.

They are marked ``<!-- readme-test: pgbouncer_transaction -->`` /
``pgbouncer_session`` (:mod:`tether.harness.docs`); the example's address of
PgBouncer is rewritten to the harness's PgBouncer in that mode, in a scratch
database of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.harness.docs import Example, Rewrites, conninfo, examples, run_on_postgresql
from tether.harness.pgbouncer import PgBouncer

README = Path(__file__).parents[3] / "README.md"
MODES = ("pgbouncer_transaction", "pgbouncer_session")
EXAMPLES = [e for e in examples(README) if e.targets & set(MODES)]

#: The example's PgBouncer address, and how to write it for the harness's.
PGBOUNCER: Rewrites = {
    '    conninfo="postgresql://app:secret@localhost:6432/app",\n': lambda server, database: (
        f"    conninfo={conninfo(server, database)},\n"
    ),
}


def test_the_pgbouncer_section_has_an_example_per_mode() -> None:
    text = README.read_text(encoding="utf-8")
    assert "## Behind PgBouncer and with failover" in text and "### PgBouncer" in text
    assert sorted(mode for e in EXAMPLES for mode in e.targets) == sorted(MODES)
    assert all(e.output for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.id}-{min(e.targets)}")
def test_readme_example_behind_pgbouncer(example: Example, request: pytest.FixtureRequest) -> None:
    (mode,) = example.targets
    bouncer: PgBouncer = request.getfixturevalue(mode)
    assert run_on_postgresql(example, PGBOUNCER, bouncer) == example.output
