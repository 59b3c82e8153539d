"""A pool stays healthy after the database was down: not one recovery, a sustained one.

Issue 11, defect 4: with PyGreSQL's ``pgdb``, connections that met the
outage between ``begin()`` and their first statement kept failing with
``OperationalError: Can't start transaction`` for as long as the run went
on (tens of thousands of errors, the commit rate at 2-15 % of before).
"""

from __future__ import annotations

from typing import Any

import pytest

from tether.harness.outage import run_outage
from tether.pooled import PooledDB, PooledPg

pytestmark = [pytest.mark.server, pytest.mark.restart]

#: Seconds after the server is back from which nothing may fail any more.
BOUND = 2.0


@pytest.mark.parametrize("server_target", ["pgdb", "pg"], indirect=True)
def test_commits_come_back_and_errors_stop_after_the_database_was_down(
    server_target: Any,
) -> None:
    target = server_target
    options: dict[str, Any] = {
        "maxcached": 3,
        "maxconnections": 3,
        "blocking": True,
        "checkout_timeout": 1.5,
        "reconnect_backoff": (0.05, 1.0),
    }
    if target.name == "pg":
        pool: Any = PooledPg(**options, **target.kwargs)
    else:
        pool = PooledDB(target.creator, **options, **target.kwargs)
    try:
        run = run_outage(pool.connection, target, workers=4, down=2.0, after=4.0)
    finally:
        pool.close()
    summary = run.describe(BOUND)
    assert run.rate_before > 0, summary
    assert run.errors_after(BOUND) == [], summary
    assert run.rate_after(BOUND) >= 0.5 * run.rate_before, summary
