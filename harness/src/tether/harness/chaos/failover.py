"""Failover chaos: the ledger through a multi-host DSN while the primary dies or steps down.

The other scenarios break one server or the network in front of it. These
break the *primary* of a :class:`~tether.harness.replication.ReplicationPair`
(a primary and a synchronous streaming standby), the way production systems
change primaries, while the ledger workload writes through a pool whose
driver connects with ``host=127.0.0.1,127.0.0.1 port=P,Q
target_session_attrs=read-write``:

``failover_kill``  the primary is SIGKILLed; ``window`` seconds later (a
                   failover manager's detection time) the standby is promoted
``switchover``     the primary turns read-only and stays up (its sessions stay
                   connected and answer writes with 25006), transactions begun
                   before are ended, and once the standby has everything it is
                   promoted (``window``: the time between the two steps)

The database counts as reachable again when the promotion has returned. The
invariants are the suite's own (:mod:`.invariants`), with the ledger read
from the **new primary**: every acknowledged commit must be there exactly
once ("no acknowledged commit missing on the new primary"), no transaction
split across sessions, the first commit within ``recovery_bound`` of the
promotion, none failing from ``quiet_after`` seconds after it, timeouts kept,
no leaked session on either server, plus one of their own:

``retired``        after the run no session of the pool is left on the old,
                   read-only primary (a switchover): every one of them
                   answered 25006 or reported ``default_transaction_read_only``
                   and was closed, never handed out again.

Connections go to the servers directly (no toxiproxy): libpq must see a dead
host refuse and a standby say it is read-only, as it would in production.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..replication import ReplicationPair
from ..targets import DriverTarget
from .faults import Fault, FaultContext
from .invariants import (
    Violation,
    check_ledger,
    check_recovery,
    check_sessions,
    check_sustained,
    check_timeouts,
)
from .ledger import LedgerOps, LedgerTable, LedgerWorkload
from .pools import PoolHandle, PoolSettings, make_pool
from .runner import Scenario, ScenarioResult
from .sockets import connections_to_port
from .timeouts import Timeouts

__all__ = [
    "FAILOVER_CI_MATRIX",
    "FAILOVER_DRIVERS",
    "FAILOVER_FAULTS",
    "FailoverContext",
    "FailoverEnvironment",
    "FailoverKill",
    "FailoverScenario",
    "FailoverSpec",
    "PairFault",
    "Switchover",
    "failover_matrix",
    "make_failover_fault",
    "run_failover_scenario",
]

log = logging.getLogger("tether.harness.chaos")

#: The drivers that take a libpq multi-host DSN.
FAILOVER_DRIVERS: tuple[str, ...] = ("psycopg", "pgdb", "pg")


@dataclass
class FailoverContext:
    """What a pair fault acts on: the pair, the driver target on its DSN, the run's timeouts."""

    pair: ReplicationPair
    target: DriverTarget
    timeouts: Timeouts
    notes: dict[str, Any] = field(default_factory=dict)


class PairFault(Fault):
    """A fault of a replication pair: ``apply_pair``, hold the window, ``lift_pair``.

    Run by :func:`run_failover_scenario`; the single-server runner cannot
    (``apply``/``lift`` raise ``TypeError``).
    """

    restarts_server = True
    unreachable = True

    def apply(self, ctx: FaultContext) -> None:
        raise TypeError(f"{self.name} acts on a replication pair: use run_failover_scenario")

    def lift(self, ctx: FaultContext) -> None:
        raise TypeError(f"{self.name} acts on a replication pair: use run_failover_scenario")

    @abc.abstractmethod
    def apply_pair(self, ctx: FailoverContext) -> None:
        """Start the fault (the primary dies, or steps down)."""

    @abc.abstractmethod
    def lift_pair(self, ctx: FailoverContext) -> None:
        """End it: when this returns a server accepts writes again (the promoted standby)."""


class FailoverKill(PairFault):
    """SIGKILL the primary; ``window`` seconds later promote the standby."""

    name = "failover_kill"

    def __init__(self, window: float = 1.5) -> None:
        super().__init__(window)
        self.description = (
            f"primary SIGKILLed, standby promoted {window:g} s later (multi-host DSN,"
            " target_session_attrs=read-write)"
        )

    def apply_pair(self, ctx: FailoverContext) -> None:
        old = ctx.pair.kill_primary()
        ctx.notes["old_primary_port"] = old.port

    def lift_pair(self, ctx: FailoverContext) -> None:
        if ctx.pair.standby is not None:  # not promoted yet (apply may have failed half-way)
            ctx.notes["new_primary_port"] = ctx.pair.promote().port


class Switchover(PairFault):
    """The primary turns read-only and stays up; ``window`` seconds later the standby is
    promoted (see :meth:`~tether.harness.replication.ReplicationPair.demote`)."""

    name = "switchover"

    def __init__(self, window: float = 0.5, grace: float = 0.5) -> None:
        super().__init__(window)
        if grace < 0:
            raise ValueError(f"grace: expected seconds >= 0, got {grace!r}")
        self.grace = grace
        self.description = (
            "old primary reloaded read-only (default_transaction_read_only) and left up,"
            f" standby promoted {window:g} s later"
        )

    def apply_pair(self, ctx: FailoverContext) -> None:
        old = ctx.pair.require_primary()
        ctx.notes["old_primary_port"] = old.port
        ctx.pair.demote(self.grace)

    def lift_pair(self, ctx: FailoverContext) -> None:
        if ctx.pair.standby is not None:
            ctx.notes["new_primary_port"] = ctx.pair.promote().port

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "grace": self.grace}


#: The pair faults by name: a factory taking optional keyword parameters.
FAILOVER_FAULTS: dict[str, Callable[..., PairFault]] = {
    "failover_kill": FailoverKill,
    "switchover": Switchover,
}


def make_failover_fault(name: str, **params: Any) -> PairFault:
    """The pair fault called ``name`` (a key of :data:`FAILOVER_FAULTS`) with ``params``."""
    try:
        factory = FAILOVER_FAULTS[name]
    except KeyError:
        known = ", ".join(FAILOVER_FAULTS)
        raise ValueError(f"name: unknown failover fault {name!r}; known: {known}") from None
    return factory(**params)


@dataclass
class FailoverScenario(Scenario):
    """A :class:`~.runner.Scenario` of a pair fault.

    ``recovery_bound`` (default 3 s): the first commit after the promotion
    must come within it; ``quiet_after`` (default 2 s): from that long after
    the promotion to the end of the run, no transaction may fail (and the
    commit rate is judged, as in the *sustained* invariant).
    """

    quiet_after: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.fault, str):
            self.fault = make_failover_fault(self.fault)
        super().__post_init__()
        if not isinstance(self.fault, PairFault):
            raise TypeError(f"fault: expected a pair fault, got {self.fault!r}")
        if self.driver not in FAILOVER_DRIVERS:
            raise ValueError(
                f"driver: expected one of {', '.join(FAILOVER_DRIVERS)}, got {self.driver!r}"
            )

    @property
    def after_lift(self) -> float:
        after = max(self.recovery_bound, self.quiet_after) + self.sustain
        return after if self.after is None else self.after


@dataclass
class FailoverEnvironment:
    """Where a failover scenario runs: the pair, and the driver on its multi-host DSN."""

    pair: ReplicationPair
    driver: str
    target_session_attrs: str = "read-write"

    def target(self) -> DriverTarget:
        """The driver target on the DSN (built now: its admin server is the current primary)."""
        return self.pair.target(self.driver, self.target_session_attrs)


@dataclass(frozen=True)
class FailoverSpec:
    """A failover scenario by names, cheap at collection time; :meth:`build` makes it."""

    fault: str
    driver: str
    pool: str
    fault_params: dict[str, Any] = field(default_factory=dict, hash=False)
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.driver}-{self.pool}"

    def build(self, **overrides: Any) -> FailoverScenario:
        options = {**self.options, **overrides}
        fault = make_failover_fault(self.fault, **self.fault_params)
        return FailoverScenario(fault, self.driver, self.pool, **options)


#: The failover scenarios of the CI-sized chaos run.
FAILOVER_CI_MATRIX: tuple[FailoverSpec, ...] = (
    FailoverSpec("failover_kill", "psycopg", "pooled"),
    FailoverSpec("switchover", "pgdb", "persistent"),
)


def failover_matrix() -> tuple[FailoverSpec, ...]:
    """Every pair fault x every libpq driver x both pools."""
    return tuple(
        FailoverSpec(fault, driver, pool)
        for fault in FAILOVER_FAULTS
        for driver in FAILOVER_DRIVERS
        for pool in ("pooled", "persistent")
    )


# -- running -------------------------------------------------------------------------------


def _pool_sessions(
    pair: ReplicationPair, at_most: int, settle: float
) -> tuple[int, dict[int, int]]:
    """The test user's sessions on both servers, waiting up to ``settle`` s for at most
    ``at_most``; (total, per port)."""
    deadline = time.monotonic() + settle
    while True:
        per_port = pair.sessions()
        total = sum(per_port.values())
        if total <= at_most or time.monotonic() >= deadline:
            return total, per_port
        time.sleep(0.05)


def _client_sockets(ports: tuple[int, int]) -> int | None:
    counts = [connections_to_port(port) for port in ports]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def run_failover_scenario(scenario: Scenario, env: FailoverEnvironment) -> ScenarioResult:
    """Run a pair-fault scenario (see the module doc) and check every invariant.

    The pair is made healthy first (``restore()``); afterwards it is left as
    the fault left it (the caller's fixture restores it for the next run).
    """
    started_wall = time.monotonic()
    fault = scenario.fault_obj
    if not isinstance(fault, PairFault):
        raise TypeError(f"scenario: {scenario.id} has no pair fault ({fault!r})")
    if env.driver != scenario.driver:
        raise ValueError(f"env: scenario {scenario.id} is for {scenario.driver}, got {env.driver}")
    pair = env.pair
    pair.restore()
    target = env.target()
    quiet_after = getattr(scenario, "quiet_after", scenario.recovery_bound)

    table = LedgerTable(pair.require_primary(), pair.unique_table("ledger"))
    table.create()
    sessions_before, _ = _pool_sessions(pair, 0, 1.0)
    settings = PoolSettings(
        scenario.workers, scenario.timeouts, scenario.maxconnections, dict(scenario.pool_options)
    )
    handle: PoolHandle = make_pool(scenario.pool, target, settings)
    ops = LedgerOps(scenario.driver, "postgresql", table.name)
    workload = LedgerWorkload(handle, ops, workers=scenario.workers, think_time=scenario.think_time)
    ctx = FailoverContext(pair, target, scenario.timeouts)

    def bound(phase: str) -> float:
        return scenario.bound(phase, handle.checkout_timeout)

    max_bound = max(bound(p) for p in ("checkout", "begin", "stmt1", "commit"))
    log.info("chaos %s: start (%d workers, %r)", scenario.id, scenario.workers, fault)
    t0 = time.monotonic()
    workload.start()
    applied_at = lifted_at = t0
    hung = []
    try:
        try:
            _sleep_until(t0 + scenario.warmup)
            applied_at = time.monotonic()
            try:
                fault.apply_pair(ctx)
                _sleep_until(time.monotonic() + fault.window)
            finally:
                fault.lift_pair(ctx)
                lifted_at = time.monotonic()
            log.info(
                "chaos %s: %s at %.2f s, promoted at %.2f s",
                scenario.id,
                fault.name,
                applied_at - t0,
                lifted_at - t0,
            )
            _sleep_until(lifted_at + scenario.after_lift)
        finally:
            stopped_at = time.monotonic()
            workload.stop()
        deadline = stopped_at + max_bound + scenario.slack
        hung = workload.join(deadline)
        seen_at = time.monotonic()
        if hung:
            log.warning("chaos %s: %d workers hung; closing the pool", scenario.id, len(hung))
            hung = [dataclasses.replace(s) for s in hung]
            with contextlib.suppress(Exception):
                handle.close()
            workload.join(time.monotonic() + 3.0)
        finished_at = time.monotonic()

        max_sessions = handle.max_sessions
        gc.collect()  # connections only garbage holds are closed now, not counted
        client_after_run = _client_sockets(pair.ports)
        after_run, per_port = _pool_sessions(pair, max_sessions, scenario.settle)
        stats = handle.stats()
        stats_problems = handle.balance_problems(stats) if not hung else []
    finally:
        with contextlib.suppress(Exception):
            handle.close()
    gc.collect()
    client_after_close = _client_sockets(pair.ports)
    after_close, _ = _pool_sessions(pair, 0, scenario.settle)

    primary = pair.require_primary()
    rows = LedgerTable(primary, table.name).rows()  # the ledger as the NEW primary has it
    records = list(workload.records)
    ledger = check_ledger(records, rows)
    where = f"on the new primary (port {primary.port})"
    ledger.violations[:] = [
        dataclasses.replace(v, message=v.message.replace("from the database", where))
        for v in ledger.violations
    ]
    recovery = check_recovery(records, lifted_at, scenario.recovery_bound, stopped_at)
    sustained = check_sustained(
        records,
        started=t0,
        applied_at=applied_at,
        reachable_at=lifted_at,
        bound=quiet_after,
        run_end=stopped_at,
        min_ratio=scenario.sustained_ratio,
    )
    timeouts = check_timeouts(
        records, bound, slack=scenario.slack, hung=hung, deadline=deadline, now=seen_at
    )
    sessions = check_sessions(
        before=sessions_before,
        after_run=after_run,
        after_close=after_close,
        max_sessions=max_sessions,
        client_after_run=client_after_run,
        client_after_close=client_after_close,
        stats_problems=stats_problems,
    )
    retired: list[Violation] = []
    old = pair.old_primary
    if old is not None and old.is_running() and per_port.get(old.port):
        retired.append(
            Violation(
                "retired",
                f"{per_port[old.port]} session(s) of the pool still on the read-only old"
                f" primary (port {old.port}) after the run",
            )
        )
    ctx.notes["sessions_after_run"] = {str(port): n for port, n in per_port.items()}
    violations = [
        *ledger.violations,
        *recovery.violations,
        *sustained.violations,
        *timeouts.violations,
        *sessions.violations,
        *retired,
    ]
    crashed = [s for s in workload.states if s.crash is not None]
    if crashed:
        raise RuntimeError(
            f"chaos {scenario.id}: {len(crashed)} worker(s) crashed in the harness itself"
        ) from crashed[0].crash
    result = ScenarioResult(
        scenario=scenario,
        fault_params=fault.params(),
        t0=t0,
        applied_at=applied_at,
        lifted_at=lifted_at,
        stopped_at=stopped_at,
        deadline=deadline,
        finished_at=finished_at,
        records=records,
        ledger=ledger,
        recovery=recovery,
        sustained=sustained,
        timeouts=timeouts,
        sessions=sessions,
        pool_stats=stats,
        traffic=None,
        proxy_proof=f"no proxy: direct connections through {pair.redacted_conninfo()}",
        notes=dict(ctx.notes),
        violations=violations,
        wall_time=time.monotonic() - started_wall,
    )
    log.info(
        "chaos %s: %s; recovery %s s; %d errors from %g s after the promotion; %d violation(s)",
        scenario.id,
        result.counts(),
        None if recovery.recovery_time is None else round(recovery.recovery_time, 2),
        sustained.errors,
        quiet_after,
        len(violations),
    )
    return result


def _sleep_until(t: float) -> None:
    remaining = t - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
