"""Persistent connections stay healthy after the database was down: a sustained recovery.

Issue 11, defect 4: with PyGreSQL's ``pgdb``, a thread whose connection met
the outage between ``begin()`` and its first statement kept failing with
``OperationalError: Can't start transaction`` for as long as it ran.
"""

from __future__ import annotations

from typing import Any

import pytest

from tether.harness.outage import run_outage
from tether.persistent import PersistentDB, PersistentPg

pytestmark = [pytest.mark.server, pytest.mark.restart]

#: Seconds after the server is back from which nothing may fail any more.
BOUND = 2.0


@pytest.mark.parametrize("server_target", ["pgdb", "pg"], indirect=True)
def test_commits_come_back_and_errors_stop_after_the_database_was_down(
    server_target: Any,
) -> None:
    target = server_target
    if target.name == "pg":
        persist: Any = PersistentPg(**target.kwargs)
    else:
        persist = PersistentDB(target.creator, **target.kwargs)
    try:
        run = run_outage(persist.connection, target, workers=4, down=2.0, after=4.0)
    finally:
        persist.close()
    summary = run.describe(BOUND)
    assert run.rate_before > 0, summary
    assert run.errors_after(BOUND) == [], summary
    assert run.rate_after(BOUND) >= 0.5 * run.rate_before, summary
