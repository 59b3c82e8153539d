"""The invariant checker must fail pools that are broken on purpose.

Each test runs a real scenario with a deliberately broken pool from
:mod:`tether.harness.chaos.doubles` and asserts the run reports exactly the
invariant that pool breaks, with a precise message. A checker that let them
pass would make every green scenario of the matrix meaningless.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.harness.chaos import ChaosEnvironment, Scenario, run_scenario, write_scenario
from tether.harness.chaos.faults import Blackhole, TerminateBackends


@pytest.mark.parametrize("chaos_driver", ["psycopg", "pymysql"])
def test_retry_inside_transaction_is_caught(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    # DBUtils' PooledDB used without begin(): a statement after a lost connection is
    # re-run on a new session, which commits the transaction's second row alone.
    scenario = Scenario(
        TerminateBackends(window=1.5, every=0.3),
        chaos_driver,
        "dbutils_implicit_tx",
        think_time=0.05,  # most of the time, a worker is between its two INSERTs
        after=1.5,
        label="broken",
        expect=("atomicity", "durability"),
    )
    result = run_scenario(scenario, chaos_env)
    write_scenario(result, chaos_results)
    assert result.caught
    atomicity = result.violated("atomicity")
    assert atomicity, f"the split transactions were not caught: {result.violations}"
    assert "committed only one of its two rows" in atomicity[0].message
    assert atomicity[0].examples, "the message must name the offending keys"
    # Half transactions that were acknowledged are missing a row: durability breaks too.
    assert result.violated("durability")
    with pytest.raises(AssertionError, match=r"\[atomicity\]"):
        result.raise_for_violations()


@pytest.mark.parametrize("chaos_driver", ["psycopg"])
def test_same_fault_with_begin_respected_keeps_atomicity(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    # The control for the test above: tether's pool under the same fault splits nothing.
    scenario = Scenario(
        TerminateBackends(window=1.5, every=0.3),
        chaos_driver,
        "persistent",
        think_time=0.05,
        after=1.5,
        label="control",
    )
    result = run_scenario(scenario, chaos_env)
    write_scenario(result, chaos_results)
    assert result.counts()["failed"] > 0, "the fault hit no transaction: the control proves nothing"
    assert not result.violated("atomicity")
    assert not result.violated("durability")


@pytest.mark.parametrize("chaos_driver", ["pymysql"])
def test_pool_without_timeouts_is_caught(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    # DBUtils' blocking PooledDB without driver timeouts: blackholed queries wait for the
    # whole blackhole, and so does every checkout waiting for their connections.
    scenario = Scenario(
        Blackhole(window=6.5),
        chaos_driver,
        "never_timeout",
        after=1.5,
        label="broken",
        expect=("timeouts",),
    )
    result = run_scenario(scenario, chaos_env)
    write_scenario(result, chaos_results)
    timeouts = result.violated("timeouts")
    assert timeouts, f"waits without a timeout were not caught: {result.violations}"
    # Late failures, or -- when the blackhole lifts before anything gives up --
    # waits that outlived their bound and then went on: either is the broken promise.
    assert any(
        "failed later than its timeout bound" in v.message
        or "outlived its timeout bound" in v.message
        for v in timeouts
    )
    assert result.timeouts.worst_overshoot is not None
    assert result.timeouts.worst_overshoot > scenario.slack


@pytest.mark.parametrize("chaos_driver", ["psycopg"])
def test_hanging_pool_is_caught(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    # A pool that loses a slot per failed transaction and waits without limit: after the
    # fault every worker waits for ever. The run must end anyway and name the hung workers.
    scenario = Scenario(
        "proxy_disabled",
        chaos_driver,
        "slot_leak",
        after=1.0,
        slack=0.5,
        label="broken",
        expect=("hang", "recovery"),
    )
    result = run_scenario(scenario, chaos_env)
    write_scenario(result, chaos_results)
    hang = result.violated("hang")
    assert hang, f"the hung workers were not caught: {result.violations}"
    assert "still running at the run's deadline" in hang[0].message
    assert any("checkout" in example for example in hang[0].examples)
    assert result.violated("recovery")


@pytest.mark.parametrize("chaos_driver", ["pymysql"])
def test_leaking_pool_is_caught(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    from tether.harness.chaos.doubles import LeakyPoolHandle
    from tether.harness.chaos.pools import POOLS, PoolHandle, PoolSettings
    from tether.harness.targets import DriverTarget

    made: list[LeakyPoolHandle] = []

    def leaky(target: DriverTarget, settings: PoolSettings) -> PoolHandle:
        handle = POOLS["leaky"](target, settings)
        assert isinstance(handle, LeakyPoolHandle)
        made.append(handle)
        return handle

    leaky.__name__ = "leaky"
    scenario = Scenario(
        "none", chaos_driver, leaky, warmup=0.5, after=1.0, label="broken", expect=("leaks",)
    )
    try:
        result = run_scenario(scenario, chaos_env)
    finally:
        for handle in made:
            handle.really_close()
    write_scenario(result, chaos_results)
    leaks = result.violated("leaks")
    assert leaks, f"the leaked connections were not caught: {result.violations}"
    assert any("still open after the pool was closed" in v.message for v in leaks)
    assert any("after the run" in v.message for v in leaks)


@pytest.mark.restart
@pytest.mark.parametrize("chaos_driver", ["pymysql"])
def test_pool_that_keeps_a_dead_connection_is_caught(
    chaos_driver: str, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    # A pool that commits again soon after a restart (recovery holds) but keeps lending
    # one dead connection: its transactions fail until the end of the run.
    scenario = Scenario(
        "restart_fast", chaos_driver, "sticky_dead", label="broken", expect=("sustained",)
    )
    result = run_scenario(scenario, chaos_env)
    write_scenario(result, chaos_results)
    assert not result.violated("recovery"), result.violations
    sustained = result.violated("sustained")
    assert sustained, f"the failures after recovery were not caught: {result.violations}"
    assert "failed from 3 s after the database was reachable again" in sustained[0].message
    assert sustained[0].examples, "the message must name the offending keys"
    assert result.sustained.errors > 0
