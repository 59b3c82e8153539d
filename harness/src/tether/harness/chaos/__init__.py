"""tether.harness.chaos: real load through a pool while real faults hit the database.

A *scenario* runs ``workers`` threads that write a ledger through a pool
(tether's ``pooled`` or ``persistent``, or any pool factory) with one driver
(psycopg, pgdb, pg, PyMySQL) for a few seconds, while one *fault* is applied
and lifted on a schedule: a server restart, the server down for a while, all
client sessions terminated, or, through toxiproxy, reset connections, a
blackhole, latency, a bandwidth limit, slow closes, connections cut
mid-response, or a disabled proxy. Afterwards, with the fault lifted, the
*invariants* are checked (:mod:`.invariants`): acknowledged commits are
durable and nothing else is; no transaction was split across sessions; the
pool recovers within a bound; failures respect their timeouts and no
thread hangs; no session leaks and the pool's stats balance.

Quick use (pytest, with the harness plugin and :mod:`.fixtures` loaded)::

    from tether.harness.chaos import Scenario, run_scenario

    @pytest.mark.parametrize("driver_target", ["psycopg"], indirect=True)
    def test_restart(chaos_env):
        result = run_scenario(Scenario("restart_immediate", "psycopg", "pooled"), chaos_env)
        result.raise_for_violations()

Modules: :mod:`.faults`, :mod:`.ledger` (the workload), :mod:`.pools` and
:mod:`.doubles` (pools, good and deliberately broken), :mod:`.invariants`,
:mod:`.runner`, :mod:`.report`, :mod:`.matrix`, :mod:`.fixtures`,
:mod:`.timeouts`; :mod:`.failover` runs the ledger through a multi-host DSN
while a replication pair fails over or switches over.
"""

from __future__ import annotations

from .faults import FAULTS, Fault, FaultContext, make_fault, terminate_client_sessions
from .invariants import INVARIANTS, InvariantViolation, Violation
from .ledger import LedgerRow, LedgerWorkload, TxnRecord
from .matrix import CI_MATRIX, ScenarioSpec, full_matrix
from .pools import POOLS, PoolHandle, PoolSettings, make_pool, register_pool
from .report import default_results_dir, write_scenario, write_summary
from .runner import ChaosEnvironment, Scenario, ScenarioResult, run_scenario
from .timeouts import Timeouts

__all__ = [
    "CI_MATRIX",
    "FAULTS",
    "INVARIANTS",
    "POOLS",
    "ChaosEnvironment",
    "Fault",
    "FaultContext",
    "InvariantViolation",
    "LedgerRow",
    "LedgerWorkload",
    "PoolHandle",
    "PoolSettings",
    "Scenario",
    "ScenarioResult",
    "ScenarioSpec",
    "Timeouts",
    "TxnRecord",
    "Violation",
    "default_results_dir",
    "full_matrix",
    "make_fault",
    "make_pool",
    "register_pool",
    "run_scenario",
    "terminate_client_sessions",
    "write_scenario",
    "write_summary",
]
