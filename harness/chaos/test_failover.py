"""Failover chaos: the ledger through a multi-host DSN while the primary dies or steps down.

Scenarios ``failover_kill`` and ``switchover`` (see
:mod:`tether.harness.chaos.failover`) with each libpq driver and both pools in
the full matrix (``--chaos-full``); the CI-sized run has
:data:`~tether.harness.chaos.failover.FAILOVER_CI_MATRIX`. Each runs on this
worker's replication pair, made healthy again before the next.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether.harness.chaos import write_scenario
from tether.harness.chaos.failover import (
    FAILOVER_CI_MATRIX,
    FailoverEnvironment,
    FailoverSpec,
    failover_matrix,
    run_failover_scenario,
)
from tether.harness.replication import ReplicationPair


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "failover_spec" not in metafunc.fixturenames:
        return
    # The chaos conftest's switch: --chaos-full or TETHER_CHAOS_FULL=1.
    full = bool(metafunc.config.getoption("--chaos-full", default=False)) or os.environ.get(
        "TETHER_CHAOS_FULL", ""
    ).strip().lower() in ("1", "true", "yes")
    specs = failover_matrix() if full else FAILOVER_CI_MATRIX
    metafunc.parametrize("failover_spec", [pytest.param(s, id=s.id) for s in specs])


def test_failover_scenario(
    failover_spec: FailoverSpec, failover_pair: ReplicationPair, chaos_results: Path
) -> None:
    result = run_failover_scenario(
        failover_spec.build(), FailoverEnvironment(failover_pair, failover_spec.driver)
    )
    write_scenario(result, chaos_results)
    assert result.counts()["ok"] > 0, "no transaction was acknowledged at all"
    result.raise_for_violations()


def test_a_pool_that_keeps_read_only_sessions_is_caught(
    failover_pair: ReplicationPair, chaos_results: Path
) -> None:
    """A pool that takes 25006 for the caller's error (only ``OperationalError`` counts as
    lost, as DBUtils' default ``failures`` does) keeps lending the old primary's
    sessions after a switchover: every write on them fails, for ever."""
    import psycopg

    spec = FailoverSpec(
        "switchover",
        "psycopg",
        "pooled",
        options={
            "pool_options": {"failures": (psycopg.OperationalError,)},
            "label": "keeps_read_only",
            "expect": ("sustained", "retired"),
        },
    )
    result = run_failover_scenario(spec.build(), FailoverEnvironment(failover_pair, "psycopg"))
    write_scenario(result, chaos_results)
    assert result.caught, result.violations
    assert not result.violated("durability") and not result.violated("atomicity")
