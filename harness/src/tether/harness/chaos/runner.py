"""Run one scenario: load through a pool, a fault on a schedule, then the invariants.

A :class:`Scenario` names a fault, a driver and a pool, plus the schedule and
timeouts. :func:`run_scenario` runs it in a :class:`ChaosEnvironment` (the
database server, the driver target and the toxiproxy proxy in front of the
server) and returns a :class:`ScenarioResult`; ``result.raise_for_violations()``
turns broken invariants into an :class:`~.invariants.InvariantViolation`.

The schedule, in seconds from the start of the workload::

    0 ........ warmup ........ apply ..window.. lift ........ after ......... stop
               (load, no fault)       (fault)   (reachable)  |recovery_bound|
                                                             |   (recovery) | sustain ..|
                                                       deadline = stop + bound + slack

``after`` defaults to ``recovery_bound + sustain``: the *sustained* window,
from the recovery bound to the end of the run, must see no failed
transaction and at least half the commit rate of the warmup.

1. Prove the workload's address is the proxy: disable the proxy and check a
   connect is refused, enable it again (and afterwards, if the server has
   proxy metrics, check the proxy carried the run's bytes).
2. Create the ledger table, count the test user's sessions, build the pool.
3. Start ``workers`` threads, apply the fault after ``warmup``, hold it for its
   window, lift it (``reachable_at`` = when the lift returned), let the load
   run ``after`` seconds more, stop the workers and wait for them until the
   deadline. Workers still running then are reported as hung; the proxy then
   cuts every connection (and the server is started if down) to free them.
4. Count the connections this process holds to the proxy and the server's
   sessions of the test user, read the pool's stats, close the pool, count
   again. Server sessions left after the pool was closed while the client
   holds no socket are toxiproxy's (it sometimes keeps the upstream half of
   a link open): the proxy cuts them and they are reported as orphans.
5. Read the table and check the invariants.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..servers import DatabaseServer, ServerNotControllableError
from ..targets import DriverTarget
from ..toxiproxy import Proxy, ProxyTraffic, proxied_target
from .faults import Fault, FaultContext, make_fault
from .invariants import (
    InvariantViolation,
    LedgerCheck,
    RecoveryCheck,
    SessionCheck,
    SustainedCheck,
    TimeoutCheck,
    Violation,
    check_ledger,
    check_recovery,
    check_sessions,
    check_sustained,
    check_timeouts,
)
from .ledger import LedgerOps, LedgerTable, LedgerWorkload, TxnRecord, outcome_counts
from .pools import PoolFactory, PoolHandle, PoolSettings, make_pool
from .sockets import connections_to_port
from .timeouts import Timeouts

__all__ = [
    "ChaosEnvironment",
    "Scenario",
    "ScenarioResult",
    "run_scenario",
    "timeline",
]

log = logging.getLogger("tether.harness.chaos")

BIN = 0.1  # seconds per timeline bin
MAX_FAILURES_IN_JSON = 200


@dataclass
class Scenario:
    """One chaos run: ``fault`` (a :class:`Fault` or a name from ``FAULTS``) while
    ``workers`` threads run the ledger through ``pool`` (a name from ``POOLS`` or a
    factory) with ``driver``."""

    fault: Fault | str
    driver: str
    pool: str | PoolFactory = "pooled"
    workers: int = 4
    #: Seconds of load before the fault, and after it is lifted (None: ``recovery_bound
    #: + sustain``).
    warmup: float = 1.0
    after: float | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: The first commit after the database is reachable again must come within this.
    recovery_bound: float = 3.0
    #: Seconds of load after the recovery bound in which nothing may fail and the commit
    #: rate must be at least ``sustained_ratio`` of the rate before the fault.
    sustain: float = 2.0
    sustained_ratio: float = 0.5
    #: Seconds tolerated beyond a timeout bound (scheduling on a busy machine).
    slack: float = 1.0
    #: Pause between the two INSERTs of a transaction (faults then hit open transactions).
    think_time: float = 0.005
    #: Connection cap for capped pools (default workers - 1).
    maxconnections: int | None = None
    #: Extra keyword arguments for the pool.
    pool_options: dict[str, Any] = field(default_factory=dict)
    #: Seconds to wait for the server to notice closed sessions before counting them.
    settle: float = 3.0
    #: A label added to the id (to tell variants of one fault/driver/pool apart).
    label: str = ""
    #: Invariants this run is expected to break (a deliberately broken pool); the
    #: report lists such runs apart, as "caught" when every one of them was reported.
    expect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.fault, str):
            self.fault = make_fault(self.fault)

    @property
    def after_lift(self) -> float:
        """Seconds the load goes on after the fault is lifted."""
        return self.recovery_bound + self.sustain if self.after is None else self.after

    @property
    def fault_obj(self) -> Fault:
        assert isinstance(self.fault, Fault)
        return self.fault

    @property
    def pool_name(self) -> str:
        if isinstance(self.pool, str):
            return self.pool
        return str(getattr(self.pool, "__name__", "custom"))

    @property
    def id(self) -> str:
        parts = [self.fault_obj.name, self.driver, self.pool_name]
        if self.label:
            parts.append(self.label)
        return "-".join(parts)

    def bound(self, phase: str, checkout_timeout: float | None) -> float:
        return self.timeouts.bound(phase, self.driver, checkout_timeout=checkout_timeout)


@dataclass
class ChaosEnvironment:
    """Where a scenario runs: ``target`` (the driver aimed at the server, directly) and
    ``proxy`` (a toxiproxy proxy whose upstream is that server)."""

    target: DriverTarget
    proxy: Proxy

    @property
    def server(self) -> DatabaseServer:
        server = self.target.server
        if server is None:
            raise ValueError(f"{self.target!r} has no server")
        return server


@dataclass
class ScenarioResult:
    """Everything measured in one run; ``to_json()`` for the report."""

    scenario: Scenario
    fault_params: dict[str, Any]
    t0: float
    applied_at: float
    lifted_at: float
    stopped_at: float
    deadline: float
    finished_at: float
    records: list[TxnRecord]
    ledger: LedgerCheck
    recovery: RecoveryCheck
    sustained: SustainedCheck
    timeouts: TimeoutCheck
    sessions: SessionCheck
    pool_stats: dict[str, Any] | None
    traffic: ProxyTraffic | None
    proxy_proof: str
    notes: dict[str, Any]
    violations: list[Violation]
    wall_time: float

    @property
    def id(self) -> str:
        return self.scenario.id

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def caught(self) -> bool:
        """For a run expected to break invariants: every expected one was reported."""
        found = {v.invariant for v in self.violations}
        return bool(self.scenario.expect) and set(self.scenario.expect) <= found

    def violated(self, invariant: str) -> list[Violation]:
        """The violations of ``invariant`` (``durability``, ``atomicity``...)."""
        return [v for v in self.violations if v.invariant == invariant]

    def raise_for_violations(self) -> None:
        if self.violations:
            raise InvariantViolation(self.id, self.violations)

    def counts(self) -> dict[str, int]:
        return outcome_counts(self.records)

    def rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        fault = s.fault_obj
        counts = self.counts()
        return {
            "id": self.id,
            "fault": fault.name,
            "fault_description": fault.description,
            "fault_params": self.fault_params,
            "driver": s.driver,
            "pool": s.pool_name,
            "workers": s.workers,
            "timeouts": {
                "connect": s.timeouts.connect,
                "read": s.timeouts.read,
                "checkout": s.timeouts.checkout,
            },
            "schedule": {
                "applied_at": self.rel(self.applied_at),
                "lifted_at": self.rel(self.lifted_at),
                "stopped_at": self.rel(self.stopped_at),
                "deadline": self.rel(self.deadline),
                "finished_at": self.rel(self.finished_at),
            },
            "transactions": {
                "ok": counts["ok"],
                "failed": counts["failed"],
                "unknown": counts["unknown"],
                "in_flight": counts["in_flight"],
                "unknown_committed": len(self.ledger.unknown_committed),
                "unknown_absent": len(self.ledger.unknown_absent),
                "unknown_keys": sorted(self.ledger.unknown_committed + self.ledger.unknown_absent),
                "rows": self.ledger.rows,
            },
            "errors": _error_summary(self.records),
            "failures": [r.to_json(self.t0) for r in self.records if r.outcome != "ok"][
                :MAX_FAILURES_IN_JSON
            ],
            "recovery": {
                "seconds": None
                if self.recovery.recovery_time is None
                else round(self.recovery.recovery_time, 3),
                "bound": self.recovery.bound,
            },
            "sustained": _sustained_json(self),
            "timeouts_check": {
                "worst_overshoot": None
                if self.timeouts.worst_overshoot is None
                else round(self.timeouts.worst_overshoot, 3),
                "worst": self.timeouts.worst,
                "slowest_failure": None
                if self.timeouts.slowest_failure is None
                else round(self.timeouts.slowest_failure, 3),
                "slack": s.slack,
                "hung": self.timeouts.hung,
            },
            "sessions": {
                "before": self.sessions.before,
                "after_run": self.sessions.after_run,
                "after_close": self.sessions.after_close,
                "client_after_run": self.sessions.client_after_run,
                "client_after_close": self.sessions.client_after_close,
                "proxy_orphans": self.sessions.proxy_orphans,
                "max": self.sessions.max_sessions,
            },
            "pool_stats": self.pool_stats,
            "traffic": None
            if self.traffic is None
            else {"upstream": self.traffic.upstream, "downstream": self.traffic.downstream},
            "proxy_proof": self.proxy_proof,
            "notes": self.notes,
            "passed": self.passed,
            "expected_violations": list(s.expect),
            "caught": self.caught,
            "violations": [v.to_json() for v in self.violations],
            "wall_time": round(self.wall_time, 2),
            "timeline": timeline(self),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _sustained_json(result: ScenarioResult) -> dict[str, Any]:
    check = result.sustained
    return {
        "checked": check.checked,
        "reason": check.reason,
        "window": [result.rel(check.start), result.rel(check.end)],
        "before_window": [result.rel(check.before_start), result.rel(check.before_end)],
        "errors": check.errors,
        "rate_before": _round(check.rate_before, 1),
        "rate_after": _round(check.rate_after, 1),
        "ratio": _round(check.ratio),
        "min_ratio": check.min_ratio,
        "passed": check.checked and not check.violations,
    }


def _error_summary(records: list[TxnRecord]) -> dict[str, int]:
    summary: dict[str, int] = {}
    for record in records:
        if record.outcome in ("failed", "unknown"):
            key = f"{record.phase}: {record.error_type}"
            summary[key] = summary.get(key, 0) + 1
    return dict(sorted(summary.items(), key=lambda kv: -kv[1]))


def timeline(result: ScenarioResult, bin_seconds: float = BIN) -> dict[str, Any]:
    """Acknowledged commits and errors per ``bin_seconds``, from the workload's start."""
    end = max(result.finished_at, result.stopped_at) - result.t0
    n = int(end / bin_seconds) + 1
    ok = [0] * n
    errors = [0] * n
    for record in result.records:
        if record.ended is None:
            continue
        i = min(n - 1, max(0, int((record.ended - result.t0) / bin_seconds)))
        if record.outcome == "ok":
            ok[i] += 1
        else:
            errors[i] += 1
    return {
        "bin": bin_seconds,
        "ok": ok,
        "errors": errors,
        "fault": [result.rel(result.applied_at), result.rel(result.lifted_at)],
    }


# -- running -------------------------------------------------------------------------------


def _prove_proxied(target: DriverTarget, proxy: Proxy, timeouts: Timeouts) -> str:
    """Disable the proxy and check the target's connect fails: its address is the proxy's."""
    kwargs = timeouts.apply(target.name, target.kwargs)
    factory: Callable[..., Any] = target.module.DB if target.name == "pg" else target.module.connect
    with proxy.disabled():
        started = time.monotonic()
        try:
            conn = factory(*target.args, **kwargs)
        except Exception as exc:
            return (
                f"connect refused with the proxy disabled ({type(exc).__name__},"
                f" {time.monotonic() - started:.2f} s): clients use {proxy.listen}"
            )
        with contextlib.suppress(Exception):
            conn.close()
    raise AssertionError(
        f"{target!r} connected with proxy {proxy.name} disabled: its traffic bypasses toxiproxy"
    )


def _count_sessions(target: DriverTarget, at_most: int, settle: float) -> int:
    """The test user's session count, waiting up to ``settle`` s for it to drop to ``at_most``."""
    deadline = time.monotonic() + settle
    while True:
        count = target.session_count()
        if count <= at_most or time.monotonic() >= deadline:
            return count
        time.sleep(0.05)


def _sleep_until(t: float) -> None:
    remaining = t - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def run_scenario(scenario: Scenario, env: ChaosEnvironment) -> ScenarioResult:
    """Run ``scenario`` in ``env`` and check every invariant (see the module doc)."""
    started_wall = time.monotonic()
    fault = scenario.fault_obj
    server = env.server
    direct = env.target
    if direct.name != scenario.driver:
        raise ValueError(f"env: scenario {scenario.id} is for {scenario.driver}, got {direct!r}")
    if fault.restarts_server and not server.controllable:
        raise ServerNotControllableError(
            f"fault {fault.name} restarts the server, and {server!r} is not the harness's to"
            " restart (an external server): deselect it with -m 'not restart'"
        )
    proxy = env.proxy
    proxy.reset()
    server.ensure_running()
    target = proxied_target(direct, proxy)
    proof = _prove_proxied(target, proxy, scenario.timeouts)

    table = LedgerTable(server, direct.unique_table("ledger"))
    table.create()
    direct.ignore_existing_sessions()
    target = proxied_target(direct, proxy)  # with the ignored sessions just recorded
    sessions_before = target.session_count()
    traffic_before = proxy.traffic()

    settings = PoolSettings(
        scenario.workers, scenario.timeouts, scenario.maxconnections, dict(scenario.pool_options)
    )
    handle: PoolHandle = make_pool(scenario.pool, target, settings)
    ops = LedgerOps(scenario.driver, server.kind, table.name)
    workload = LedgerWorkload(handle, ops, workers=scenario.workers, think_time=scenario.think_time)
    ctx = FaultContext(server, proxy, direct, scenario.timeouts)

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
                fault.apply(ctx)
                fault.hold(ctx, time.monotonic() + fault.window)
            finally:
                fault.lift(ctx)
                lifted_at = time.monotonic()
            log.info(
                "chaos %s: fault %s applied at %.2f s, lifted at %.2f s",
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
            log.warning(
                "chaos %s: %d workers still running at the deadline; cutting their connections",
                scenario.id,
                len(hung),
            )
            hung_snapshot = [dataclasses.replace(s) for s in hung]
            _release(workload, proxy, server, handle)
            hung = hung_snapshot
        finished_at = time.monotonic()

        max_sessions = handle.max_sessions
        port = proxy.listen_port
        gc.collect()  # connections only garbage holds are closed now, not counted
        client_after_run = connections_to_port(port)
        after_run = _count_sessions(
            target, max_sessions, scenario.settle if client_after_run is None else 1.0
        )
        stats = handle.stats()
        stats_problems = handle.balance_problems(stats) if not hung else []
    finally:
        with contextlib.suppress(Exception):
            handle.close()
    gc.collect()
    client_after_close = connections_to_port(port)
    after_close = _count_sessions(target, 0, scenario.settle if client_after_close is None else 1.0)
    if client_after_close:
        ctx.notes["open_after_close"] = _describe_live_connections(scenario.driver)
    orphans = 0
    if after_close and client_after_close == 0:
        # The client holds nothing: what is left on the server is held by toxiproxy.
        proxy.cut_connections()
        orphans = after_close - _count_sessions(target, 0, scenario.settle)
        if orphans:
            log.info("chaos %s: %d server sessions held by toxiproxy", scenario.id, orphans)
    traffic_after = proxy.traffic()
    traffic = None
    if traffic_after is not None:
        traffic = traffic_after - (traffic_before or ProxyTraffic(0, 0))

    rows = table.rows()
    records = list(workload.records)
    ledger = check_ledger(records, rows)
    recovery = check_recovery(records, lifted_at, scenario.recovery_bound, stopped_at)
    sustained = check_sustained(
        records,
        started=t0,
        applied_at=applied_at,
        reachable_at=lifted_at,
        bound=scenario.recovery_bound,
        run_end=stopped_at,
        min_ratio=scenario.sustained_ratio,
    )
    timeouts = check_timeouts(
        records,
        bound,
        slack=scenario.slack,
        hung=hung,
        deadline=deadline,
        now=seen_at,
    )
    sessions = check_sessions(
        before=sessions_before,
        after_run=after_run,
        after_close=after_close,
        max_sessions=max_sessions,
        client_after_run=client_after_run,
        client_after_close=client_after_close,
        proxy_orphans=orphans,
        stats_problems=stats_problems,
    )
    violations = [
        *ledger.violations,
        *recovery.violations,
        *sustained.violations,
        *timeouts.violations,
        *sessions.violations,
    ]
    crashed = [s for s in workload.states if s.crash is not None]
    if crashed:
        raise RuntimeError(
            f"chaos {scenario.id}: {len(crashed)} worker(s) crashed in the harness itself"
        ) from crashed[0].crash
    if traffic is not None and traffic.upstream <= 0:
        violations.append(
            Violation("proxy", f"proxy {proxy.name} carried no client bytes during the run")
        )
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
        traffic=traffic,
        proxy_proof=proof,
        notes=dict(ctx.notes),
        violations=violations,
        wall_time=time.monotonic() - started_wall,
    )
    log.info(
        "chaos %s: %s; recovery %s s; after it %s commits/s (%s before), %d errors;"
        " %d violation(s)",
        scenario.id,
        result.counts(),
        None if recovery.recovery_time is None else round(recovery.recovery_time, 2),
        _round(sustained.rate_after, 0),
        _round(sustained.rate_before, 0),
        sustained.errors,
        len(violations),
    )
    return result


def _describe_live_connections(driver: str, limit: int = 5) -> list[str]:
    """The driver connections still alive in this process and what refers to them
    (to tell a pool's leak from a reference the harness keeps)."""
    objects = gc.get_objects()
    skip = {id(objects)}
    found: list[str] = []

    def owner(ref: object, depth: int = 0) -> str:
        name = type(ref).__qualname__
        if depth >= 2 or isinstance(ref, type) or type(ref).__name__ == "frame":
            return name
        skip.add(id(ref))
        outer = [
            owner(o, depth + 1)
            for o in gc.get_referrers(ref)
            if id(o) not in skip and o is not objects
        ]
        return f"{name} in {outer[:2]}"

    for obj in objects:
        cls = type(obj)
        module = getattr(cls, "__module__", None)
        if not isinstance(module, str) or not module.startswith(driver):
            continue
        if cls.__name__ not in ("Connection", "DB"):
            continue
        if getattr(obj, "closed", None) is True or getattr(obj, "open", None) is False:
            continue
        holders = [owner(ref) for ref in gc.get_referrers(obj) if ref is not objects]
        found.append(f"{module}.{cls.__name__} held by {holders[:3]}")
        if len(found) >= limit:
            break
    return found


def _release(
    workload: LedgerWorkload, proxy: Proxy, server: DatabaseServer, handle: PoolHandle
) -> None:
    """Free hung workers: cut every proxied connection (starting a stopped server), then,
    if some still wait, close the pool (which should fail its waiters)."""
    with contextlib.suppress(Exception):
        proxy.reset()
    with contextlib.suppress(Exception):
        server.ensure_running()
    with contextlib.suppress(Exception):
        proxy.cut_connections()
    if not workload.join(time.monotonic() + 3.0):
        return
    with contextlib.suppress(Exception):
        handle.close()
    if not workload.join(time.monotonic() + 3.0):
        return
    log.error(
        "chaos: %d workers are still stuck after their connections were cut and the pool"
        " was closed; they are daemon threads and are abandoned",
        len(workload.alive()),
    )


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]
