"""Chaos behind PgBouncer: PgBouncer restarted, paused, and the database restarted behind it.

The CI run takes :data:`~tether.harness.chaos.bouncer.PGBOUNCER_CI`; ``--chaos-full`` /
``TETHER_CHAOS_FULL=1`` every scenario of
:func:`~tether.harness.chaos.bouncer.pgbouncer_matrix`. Each must keep every invariant.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether.harness.chaos import ChaosEnvironment, run_scenario, write_scenario
from tether.harness.chaos.bouncer import (  # fixtures, registered by being imported here
    PGBOUNCER_CI,
    BouncerScenarioSpec,
    bouncer_chaos_env,
    pgbouncer_matrix,
    pgbouncer_proxy_session,
    pgbouncer_proxy_transaction,
)

__all__ = ["bouncer_chaos_env", "pgbouncer_proxy_session", "pgbouncer_proxy_transaction"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bouncer_spec" not in metafunc.fixturenames:
        return
    full = bool(metafunc.config.getoption("--chaos-full", default=False)) or os.environ.get(
        "TETHER_CHAOS_FULL", ""
    ).strip().lower() in ("1", "true", "yes")
    specs = pgbouncer_matrix() if full else PGBOUNCER_CI
    params = [pytest.param(spec, id=spec.id, marks=[pytest.mark.restart]) for spec in specs]
    metafunc.parametrize("bouncer_spec", params)


@pytest.mark.server
def test_behind_pgbouncer(
    bouncer_spec: BouncerScenarioSpec, bouncer_chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    result = run_scenario(bouncer_spec.build(), bouncer_chaos_env)
    write_scenario(result, chaos_results)
    assert result.traffic is None or result.traffic.upstream > 0
    assert result.counts()["ok"] > 0, "no transaction was acknowledged at all"
    result.raise_for_violations()
