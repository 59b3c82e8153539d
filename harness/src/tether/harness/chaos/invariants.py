"""The invariants no fault may break, checked after a run, each with a precise message.

1. ``durability``: every acknowledged commit is in the database exactly once;
   no row of a transaction that raised before ``commit()`` is there. Rows of
   transactions whose ``commit()`` raised (outcome unknown) may be there or
   not: they are counted and listed, not judged.
2. ``atomicity``: no statement was silently retried inside a ``begin()``
   transaction. Every transaction writes ``key`` and ``key + "b"`` in two
   statements; a pair with one row present, or whose rows were written by
   different server sessions, proves the transaction was split across
   sessions. (Session ids are PostgreSQL backend pids / MariaDB connection
   ids; a server restart can reuse an id, so the half-pair test is the
   primary one.)
3. ``recovery``: after the database is reachable again, the first transaction
   is acknowledged within the stated bound.
3b. ``sustained``: from that bound until the end of the run, no transaction
   fails and the commit rate is at least half the rate before the fault: a
   pool that commits once and then keeps failing (connections it never
   reopens) has not recovered.
4. ``timeouts``/``hang``: a failing checkout or statement fails within its
   configured timeouts (the worst overshoot is reported; beyond ``slack`` it
   is a violation), and every worker thread finishes before the run's
   deadline.
5. ``leaks``: after the run the server's count of the test user's sessions is
   at most the pool's maximum (and zero once the pool is closed), and the
   pool's statistics balance.

Each ``check_*`` function returns its measurements and a list of
:class:`Violation`; they take plain data, so they can be tested with
fabricated records (and are, in the chaos suite's own tests).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .ledger import LedgerRow, TxnRecord, WorkerState

__all__ = [
    "INVARIANTS",
    "InvariantViolation",
    "LedgerCheck",
    "RecoveryCheck",
    "SessionCheck",
    "SustainedCheck",
    "TimeoutCheck",
    "Violation",
    "check_ledger",
    "check_recovery",
    "check_sessions",
    "check_sustained",
    "check_timeouts",
]

#: The invariants by name, in report order.
INVARIANTS = (
    "durability",
    "atomicity",
    "recovery",
    "sustained",
    "timeouts",
    "hang",
    "leaks",
    "proxy",
)
_EXAMPLES = 8
_PAIR_KEY = re.compile(r"^(?P<base>.*s\d+)(?P<b>b?)$")


@dataclass(frozen=True)
class Violation:
    """A broken invariant: which one, what exactly, and some of the offending keys."""

    invariant: str
    message: str
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        more = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"[{self.invariant}] {self.message}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "examples": self.examples}


class InvariantViolation(AssertionError):
    """A scenario broke one or more invariants; ``violations`` lists them."""

    def __init__(self, scenario: str, violations: Sequence[Violation]) -> None:
        self.scenario = scenario
        self.violations = tuple(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(
            f"scenario {scenario}: {len(self.violations)} invariant(s) broken:\n{lines}"
        )


def _examples(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(keys)[:_EXAMPLES])


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


# -- 1 and 2: the ledger -------------------------------------------------------------------


@dataclass
class LedgerCheck:
    """The ledger compared with the client's records."""

    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight: int = 0
    #: Unknown-outcome (and in-flight) transactions found committed / not committed.
    unknown_committed: list[str] = field(default_factory=list)
    unknown_absent: list[str] = field(default_factory=list)
    rows: int = 0
    violations: list[Violation] = field(default_factory=list)


def check_ledger(records: Sequence[TxnRecord], rows: Sequence[LedgerRow]) -> LedgerCheck:
    """Invariants 1 and 2: compare the acknowledged commits with the table's rows."""
    result = LedgerCheck(rows=len(rows))
    by_key: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        by_key[row.key].append(row)
    known = {r.key for r in records}

    missing: list[str] = []
    duplicated: list[str] = []
    from_failed: list[str] = []
    half: list[str] = []
    split: list[str] = []
    for record in records:
        key = record.key
        a, b = by_key.get(key, []), by_key.get(key + "b", [])
        if record.outcome == "ok":
            result.acknowledged += 1
        elif record.outcome == "failed":
            result.failed += 1
        elif record.outcome == "unknown":
            result.unknown += 1
        else:
            result.in_flight += 1
        # Atomicity, whatever the outcome: both rows or neither, from one session.
        if bool(a) != bool(b):
            half.append(f"{key}{'' if a else 'b'}")
        elif a and b and {r.backend for r in a} != {r.backend for r in b}:
            split.append(f"{key}: {a[0].backend}/{b[0].backend}")
        if record.outcome == "ok":
            if not a or not b:
                missing.append(key if not a else key + "b")
            if len(a) > 1 or len(b) > 1:
                duplicated.append(f"{key} x{max(len(a), len(b))}")
        elif record.outcome == "failed":
            if a or b:
                from_failed.append(f"{key} ({record.phase}: {record.error_type})")
        else:
            if len(a) > 1 or len(b) > 1:
                duplicated.append(f"{key} x{max(len(a), len(b))}")
            if a and b:
                result.unknown_committed.append(key)
            elif not a and not b:
                result.unknown_absent.append(key)
    strangers = sorted(
        k for k in by_key if (m := _PAIR_KEY.match(k)) is None or m["base"] not in known
    )

    v = result.violations
    if missing:
        v.append(
            Violation(
                "durability",
                f"{_count(len(missing), 'acknowledged commit')} missing from the database",
                _examples(missing),
            )
        )
    if duplicated:
        v.append(
            Violation(
                "durability",
                f"{_count(len(duplicated), 'transaction')} written more than once",
                _examples(duplicated),
            )
        )
    if from_failed:
        v.append(
            Violation(
                "durability",
                f"{_count(len(from_failed), 'transaction')} raised before commit() but"
                " left rows in the database",
                _examples(from_failed),
            )
        )
    if strangers:
        v.append(
            Violation(
                "durability",
                f"{_count(len(strangers), 'row')} with keys the client never wrote",
                _examples(strangers),
            )
        )
    if half:
        v.append(
            Violation(
                "atomicity",
                f"{_count(len(half), 'transaction')} committed only one of its two rows:"
                " a statement was retried on a new session inside the transaction",
                _examples(half),
            )
        )
    if split:
        v.append(
            Violation(
                "atomicity",
                f"{_count(len(split), 'transaction')} wrote its two rows from different"
                " server sessions",
                _examples(split),
            )
        )
    return result


# -- 3: recovery -------------------------------------------------------------------------


@dataclass
class RecoveryCheck:
    """Seconds from "reachable again" to the first acknowledged commit (None: none came)."""

    reachable_at: float
    recovery_time: float | None
    bound: float
    violations: list[Violation] = field(default_factory=list)


def check_recovery(
    records: Sequence[TxnRecord], reachable_at: float, bound: float, run_end: float
) -> RecoveryCheck:
    """Invariant 3: the first commit acknowledged at or after ``reachable_at`` came within
    ``bound`` seconds (``run_end``: when workers stopped starting transactions)."""
    acked = [r.ended for r in records if r.outcome == "ok" and r.ended is not None]
    after = [t for t in acked if t >= reachable_at]
    first = min(after) if after else None
    recovery = None if first is None else first - reachable_at
    result = RecoveryCheck(reachable_at, recovery, bound)
    if recovery is None:
        result.violations.append(
            Violation(
                "recovery",
                "no transaction was acknowledged after the database was reachable again"
                f" ({run_end - reachable_at:.2f} s until the run ended; bound {bound:g} s)",
            )
        )
    elif recovery > bound:
        result.violations.append(
            Violation(
                "recovery",
                f"first acknowledged commit {recovery:.2f} s after the database was reachable"
                f" again; bound {bound:g} s",
            )
        )
    return result


# -- 3b: sustained recovery ---------------------------------------------------------------

#: The commit rate after recovery must be at least this share of the rate before the fault.
SUSTAINED_RATIO = 0.5
#: Seconds of load at the start left out of the rate before the fault (first connects).
RATE_SKIP = 0.2
#: The shortest window after the recovery bound worth judging, in seconds.
MIN_SUSTAINED_WINDOW = 1.0


@dataclass
class SustainedCheck:
    """The load from ``start`` (reachable again + the recovery bound) to ``end`` (the run's end)
    compared with the load before the fault (``before_start`` to ``before_end``)."""

    start: float
    end: float
    before_start: float
    before_end: float
    #: Commits per second before the fault, and in the window (None: not measured).
    rate_before: float | None = None
    rate_after: float | None = None
    #: Transactions that failed (or whose commit raised) in the window.
    errors: int = 0
    min_ratio: float = SUSTAINED_RATIO
    #: False when the window was too short (or there was no load before) to judge.
    checked: bool = False
    reason: str = ""
    violations: list[Violation] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.rate_before is None or self.rate_after is None or self.rate_before <= 0:
            return None
        return self.rate_after / self.rate_before


def check_sustained(
    records: Sequence[TxnRecord],
    *,
    started: float,
    applied_at: float,
    reachable_at: float,
    bound: float,
    run_end: float,
    min_ratio: float = SUSTAINED_RATIO,
    min_window: float = MIN_SUSTAINED_WINDOW,
) -> SustainedCheck:
    """Invariant 3b: from ``reachable_at + bound`` to ``run_end`` (when workers stopped
    starting transactions) no transaction failed, and commits per second were at least
    ``min_ratio`` times those from ``started`` (+ a short skip) to ``applied_at``.

    A transaction counts in the window when it ended in it (or later: a transaction
    that was still finishing when the run ended).
    """
    start = reachable_at + bound
    before_start = started + RATE_SKIP
    result = SustainedCheck(start, run_end, before_start, applied_at, min_ratio=min_ratio)
    window = run_end - start
    if window < min_window:
        result.reason = (
            f"the run ended {window:.2f} s after the recovery bound (at least {min_window:g} s"
            " needed)"
        )
        return result
    ended = [(r.ended, r) for r in records if r.ended is not None]
    late = [(t, r) for t, r in ended if t >= start and r.outcome != "ok"]
    commits = sum(1 for t, r in ended if r.outcome == "ok" and start <= t < run_end)
    result.errors = len(late)
    result.rate_after = commits / window
    result.checked = True
    if applied_at - before_start > 0:
        before = sum(1 for t, r in ended if r.outcome == "ok" and before_start <= t < applied_at)
        result.rate_before = before / (applied_at - before_start)
    v = result.violations
    if late:
        kinds: dict[str, int] = defaultdict(int)
        for _, r in late:
            kinds[f"{r.phase}: {r.error_type}"] += 1
        worst = sorted(kinds.items(), key=lambda kv: -kv[1])[:3]
        v.append(
            Violation(
                "sustained",
                f"{_count(len(late), 'transaction')} failed from {bound:g} s after the database"
                f" was reachable again to the end of the run ({window:.1f} s): "
                + ", ".join(f"{k} x{n}" for k, n in worst),
                _examples(f"{r.key} at +{t - reachable_at:.2f}s" for t, r in late),
            )
        )
    ratio = result.ratio
    if result.rate_before and ratio is not None and ratio < min_ratio:
        v.append(
            Violation(
                "sustained",
                f"{result.rate_after:.0f} commits/s from {bound:g} s after the database was"
                f" reachable again, {ratio:.0%} of the {result.rate_before:.0f}/s before the"
                f" fault (at least {min_ratio:.0%} required)",
            )
        )
    return result


# -- 4: timeouts and hangs ---------------------------------------------------------------


@dataclass
class TimeoutCheck:
    """The slowest failure relative to its bound, and the workers that hung."""

    #: max(elapsed - bound) over failed operations, and over succeeded steps that outlived
    #: their bound (negative: all within); None: no failures.
    worst_overshoot: float | None = None
    worst: str = ""
    slowest_failure: float | None = None
    hung: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


def check_timeouts(
    records: Sequence[TxnRecord],
    bound: Callable[[str], float],
    *,
    slack: float,
    hung: Sequence[WorkerState] = (),
    deadline: float | None = None,
    now: float | None = None,
) -> TimeoutCheck:
    """Invariant 4: failed operations stayed within ``bound(phase) + slack``; no worker
    was still running at ``deadline`` (``hung``: the workers alive then, seen at ``now``)."""
    result = TimeoutCheck()
    over: list[str] = []
    late_ok: list[str] = []
    for record in records:
        if record.outcome == "ok" and record.slowest_phase:
            # A step that waited past its bound and then succeeded: no timeout fired
            # where one should have (a pool without deadlines, under a blackhole that
            # lifts before anything gives up).
            limit = bound(record.slowest_phase)
            overshoot = record.slowest_elapsed - limit
            if overshoot > slack:
                if result.worst_overshoot is None or overshoot > result.worst_overshoot:
                    result.worst_overshoot = overshoot
                    result.worst = (
                        f"{record.slowest_phase} took {record.slowest_elapsed:.2f} s"
                        f" (bound {limit:.2f} s) and then succeeded"
                    )
                late_ok.append(
                    f"{record.key} {record.slowest_phase}"
                    f" {record.slowest_elapsed:.2f}s>{limit:.2f}s (succeeded)"
                )
            continue
        if record.outcome not in ("failed", "unknown"):
            continue
        limit = bound(record.phase)
        overshoot = record.op_elapsed - limit
        if result.slowest_failure is None or record.op_elapsed > result.slowest_failure:
            result.slowest_failure = record.op_elapsed
        if result.worst_overshoot is None or overshoot > result.worst_overshoot:
            result.worst_overshoot = overshoot
            result.worst = (
                f"{record.phase} failed after {record.op_elapsed:.2f} s (bound {limit:.2f} s):"
                f" {record.error_type}"
            )
        if overshoot > slack:
            over.append(
                f"{record.key} {record.phase} {record.op_elapsed:.2f}s>{limit:.2f}s"
                f" ({record.error_type})"
            )
    if late_ok:
        result.violations.append(
            Violation(
                "timeouts",
                f"{_count(len(late_ok), 'operation')} outlived its timeout bound"
                f" + {slack:g} s slack before succeeding",
                _examples(late_ok),
            )
        )
    if over:
        result.violations.append(
            Violation(
                "timeouts",
                f"{_count(len(over), 'operation')} failed later than its timeout bound"
                f" + {slack:g} s slack",
                _examples(over),
            )
        )
    if hung:
        at = now if now is not None else 0.0
        result.hung = [
            f"worker {s.index} in {s.phase} for {at - s.op_started:.1f} s (txn {s.key})"
            for s in hung
        ]
        when = "" if deadline is None else " at the run's deadline"
        result.violations.append(
            Violation(
                "hang",
                f"{_count(len(hung), 'worker thread')} still running{when}:"
                " an operation without a timeout",
                tuple(result.hung[:_EXAMPLES]),
            )
        )
    return result


# -- 5: leaks ----------------------------------------------------------------------------


@dataclass
class SessionCheck:
    """Connections around the run: server sessions of the test user, and the sockets
    this process holds to the proxy (``client_*``, None where they cannot be counted)."""

    before: int
    after_run: int
    after_close: int
    max_sessions: int
    client_after_run: int | None = None
    client_after_close: int | None = None
    #: Server sessions whose client had closed its socket, held open by toxiproxy
    #: (they ended when the proxy cut its connections after the pool was closed).
    proxy_orphans: int = 0
    stats_problems: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


def check_sessions(
    *,
    before: int,
    after_run: int,
    after_close: int,
    max_sessions: int,
    client_after_run: int | None = None,
    client_after_close: int | None = None,
    proxy_orphans: int = 0,
    stats_problems: Sequence[str] = (),
) -> SessionCheck:
    """Invariant 5: at most ``max_sessions`` connections after the run, none after closing
    the pool, and the pool's statistics balance (``stats_problems`` empty).

    Where the client's own sockets were counted (``client_*``), they decide: a server
    session whose client socket is closed is not the pool's (toxiproxy may hold it);
    otherwise the server's counts do.
    """
    result = SessionCheck(
        before,
        after_run,
        after_close,
        max_sessions,
        client_after_run,
        client_after_close,
        proxy_orphans,
        list(stats_problems),
    )
    held = client_after_run if client_after_run is not None else after_run
    where = "connections held by the client" if client_after_run is not None else "server sessions"
    if held > max_sessions:
        result.violations.append(
            Violation(
                "leaks",
                f"{held} {where} after the run (server: {after_run}); the pool may hold at"
                f" most {max_sessions}",
            )
        )
    left = client_after_close if client_after_close is not None else after_close
    if left > 0:
        what = "client connection" if client_after_close is not None else "server session"
        result.violations.append(
            Violation(
                "leaks",
                f"{_count(left, what)} still open after the pool was closed"
                f" (server sessions: {after_close})",
            )
        )
    if stats_problems:
        result.violations.append(
            Violation(
                "leaks",
                "the pool's statistics do not balance: " + "; ".join(stats_problems),
            )
        )
    return result
