"""The invariant checker, fed fabricated records and rows: every violation it must report.

These need no server: they pin down what each check accepts and rejects, and the
wording of its messages, so a regression in the checker cannot hide behind
green chaos runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.harness.chaos import CI_MATRIX, FAULTS, Timeouts, full_matrix, make_fault
from tether.harness.chaos.invariants import (
    InvariantViolation,
    Violation,
    check_ledger,
    check_recovery,
    check_sessions,
    check_sustained,
    check_timeouts,
)
from tether.harness.chaos.ledger import LedgerRow, TxnRecord, WorkerState
from tether.harness.chaos.matrix import DRIVERS, FAULT_NAMES, POOL_NAMES
from tether.harness.chaos.report import render_markdown, write_timeline_png


def rec(n: int, outcome: str, *, phase: str = "", ended: float = 1.0, elapsed: float = 0.0,
        worker: int = 0) -> TxnRecord:  # fmt: skip
    record = TxnRecord(f"abcw{worker}s{n}", worker, n, started=ended - 0.01, ended=ended)
    record.outcome = outcome  # type: ignore[assignment]
    record.phase = phase or ("" if outcome == "ok" else "stmt1")
    record.error_type = "" if outcome == "ok" else "OperationalError"
    record.op_elapsed = elapsed
    return record


def pair(
    n: int, backend: int = 7, backend_b: int | None = None, worker: int = 0
) -> list[LedgerRow]:
    key = f"abcw{worker}s{n}"
    return [
        LedgerRow(key, backend),
        LedgerRow(key + "b", backend if backend_b is None else backend_b),
    ]


# -- durability and atomicity ------------------------------------------------------------


def test_clean_ledger_passes() -> None:
    records = [rec(1, "ok"), rec(2, "failed"), rec(3, "unknown", phase="commit"), rec(4, "ok")]
    rows = pair(1) + pair(3) + pair(4)
    check = check_ledger(records, rows)
    assert check.violations == []
    assert (check.acknowledged, check.failed, check.unknown) == (2, 1, 1)
    assert check.unknown_committed == ["abcw0s3"]


def test_unknown_outcome_absent_is_counted_not_judged() -> None:
    check = check_ledger([rec(1, "unknown", phase="commit")], [])
    assert check.violations == []
    assert check.unknown_absent == ["abcw0s1"]


def test_missing_acknowledged_commit() -> None:
    check = check_ledger([rec(1, "ok"), rec(2, "ok")], pair(1))
    [v] = check.violations
    assert v.invariant == "durability"
    assert v.message == "1 acknowledged commit missing from the database"
    assert v.examples == ("abcw0s2",)


def test_duplicated_commit() -> None:
    check = check_ledger([rec(1, "ok")], pair(1) + pair(1))
    assert [str(v) for v in check.violations] == [
        "[durability] 1 transaction written more than once (e.g. abcw0s1 x2)"
    ]


def test_rows_of_a_failed_transaction() -> None:
    check = check_ledger([rec(1, "failed", phase="stmt2")], pair(1))
    [v] = check.violations
    assert v.invariant == "durability"
    assert "raised before commit() but left rows" in v.message
    assert v.examples == ("abcw0s1 (stmt2: OperationalError)",)


def test_half_committed_transaction_is_a_split() -> None:
    # The broken-pool signature: the second statement re-run on a new session and committed.
    rows = [LedgerRow("abcw0s1b", 9)]
    check = check_ledger([rec(1, "ok")], rows)
    invariants = sorted(v.invariant for v in check.violations)
    assert invariants == ["atomicity", "durability"]
    atomicity = next(v for v in check.violations if v.invariant == "atomicity")
    assert "committed only one of its two rows" in atomicity.message
    assert atomicity.examples == ("abcw0s1b",)


def test_half_pair_of_unknown_outcome_is_still_a_split() -> None:
    check = check_ledger([rec(1, "unknown", phase="commit")], [LedgerRow("abcw0s1", 3)])
    assert [v.invariant for v in check.violations] == ["atomicity"]


def test_pair_from_two_sessions_is_a_split() -> None:
    check = check_ledger([rec(1, "ok")], pair(1, backend=11, backend_b=12))
    [v] = check.violations
    assert v.invariant == "atomicity"
    assert "different server sessions" in v.message
    assert v.examples == ("abcw0s1: 11/12",)


def test_rows_nobody_wrote() -> None:
    check = check_ledger([rec(1, "ok")], [*pair(1), LedgerRow("zzzw9s9", 1)])
    [v] = check.violations
    assert "keys the client never wrote" in v.message


# -- recovery ----------------------------------------------------------------------------


def test_recovery_time_is_first_ack_after_reachable() -> None:
    records = [rec(1, "ok", ended=1.0), rec(2, "failed", ended=2.5), rec(3, "ok", ended=3.2)]
    check = check_recovery(records, reachable_at=3.0, bound=1.0, run_end=6.0)
    assert check.recovery_time == pytest.approx(0.2)
    assert check.violations == []


def test_slow_recovery_and_no_recovery() -> None:
    records = [rec(1, "ok", ended=5.5)]
    slow = check_recovery(records, reachable_at=3.0, bound=1.0, run_end=6.0)
    assert [v.message for v in slow.violations] == [
        "first acknowledged commit 2.50 s after the database was reachable again; bound 1 s"
    ]
    never = check_recovery(records, reachable_at=5.8, bound=1.0, run_end=6.0)
    assert never.recovery_time is None
    assert "no transaction was acknowledged" in never.violations[0].message


# -- timeouts and hangs ------------------------------------------------------------------


def _load(start: float, end: float, per_second: int, outcome: str = "ok") -> list[TxnRecord]:
    n = int((end - start) * per_second)
    return [rec(1000 + i, outcome, ended=start + i / per_second) for i in range(n)]


def test_sustained_recovery_passes_when_load_is_back() -> None:
    # 100/s before the fault (0-1 s), nothing while it lasts, 80/s after it (3-8 s).
    records = _load(0.0, 1.0, 100) + _load(3.1, 8.0, 80)
    check = check_sustained(
        records, started=0.0, applied_at=1.0, reachable_at=3.0, bound=3.0, run_end=8.0
    )
    assert check.checked and check.violations == []
    assert check.rate_before == pytest.approx(100, rel=0.05)
    assert check.rate_after == pytest.approx(80, rel=0.05)


def test_failures_after_the_recovery_bound_break_sustained() -> None:
    records = _load(0.0, 1.0, 100) + _load(3.1, 8.0, 80) + [rec(7, "failed", ended=7.5)]
    check = check_sustained(
        records, started=0.0, applied_at=1.0, reachable_at=3.0, bound=3.0, run_end=8.0
    )
    [v] = check.violations
    assert v.invariant == "sustained"
    assert v.message.startswith("1 transaction failed from 3 s after the database was")
    assert "stmt1: OperationalError x1" in v.message
    assert v.examples == ("abcw0s7 at +4.50s",)
    # A failure before the bound is recovery's business, not sustained's.
    early = _load(0.0, 1.0, 100) + _load(3.1, 8.0, 80) + [rec(7, "failed", ended=5.9)]
    assert (
        check_sustained(
            early, started=0.0, applied_at=1.0, reachable_at=3.0, bound=3.0, run_end=8.0
        ).violations
        == []
    )


def test_low_commit_rate_after_recovery_breaks_sustained() -> None:
    records = _load(0.0, 1.0, 100) + _load(3.1, 8.0, 40)
    check = check_sustained(
        records, started=0.0, applied_at=1.0, reachable_at=3.0, bound=3.0, run_end=8.0
    )
    [v] = check.violations
    assert "40 commits/s from 3 s after the database was reachable again" in v.message
    assert "at least 50% required" in v.message


def test_short_run_is_not_judged() -> None:
    check = check_sustained(
        _load(0.0, 1.0, 100), started=0.0, applied_at=1.0, reachable_at=3.0, bound=3.0,
        run_end=4.5,
    )  # fmt: skip
    assert not check.checked and check.violations == []
    assert "at least 1 s needed" in check.reason


def test_overshoot_within_slack_is_reported_not_failed() -> None:
    records = [rec(1, "failed", phase="stmt1", elapsed=2.3), rec(2, "ok")]
    check = check_timeouts(records, lambda phase: 2.0, slack=0.5)
    assert check.worst_overshoot == pytest.approx(0.3)
    assert check.slowest_failure == pytest.approx(2.3)
    assert check.violations == []


def test_failure_beyond_its_bound() -> None:
    records = [rec(1, "failed", phase="checkout", elapsed=9.0)]
    check = check_timeouts(records, lambda phase: 4.0, slack=1.0)
    [v] = check.violations
    assert v.invariant == "timeouts"
    assert v.examples == ("abcw0s1 checkout 9.00s>4.00s (OperationalError)",)


def test_hung_workers() -> None:
    hung = [WorkerState(2, phase="stmt2", op_started=10.0, key="abcw2s5")]
    check = check_timeouts([], lambda phase: 1.0, slack=0.5, hung=hung, deadline=20.0, now=20.0)
    [v] = check.violations
    assert v.invariant == "hang"
    assert v.examples == ("worker 2 in stmt2 for 10.0 s (txn abcw2s5)",)


# -- leaks -------------------------------------------------------------------------------


def test_sessions_within_the_pool_maximum() -> None:
    check = check_sessions(before=0, after_run=3, after_close=0, max_sessions=3)
    assert check.violations == []


def test_client_counts_decide_over_toxiproxy_orphans() -> None:
    # The server still lists sessions toxiproxy holds; the client holds nothing: no leak.
    check = check_sessions(
        before=0, after_run=5, after_close=2, max_sessions=3,
        client_after_run=3, client_after_close=0, proxy_orphans=2,
    )  # fmt: skip
    assert check.violations == []


def test_leaks_and_unbalanced_stats() -> None:
    check = check_sessions(
        before=0, after_run=9, after_close=4, max_sessions=3,
        client_after_run=9, client_after_close=4, stats_problems=["checkouts (5) != checkins (4)"],
    )  # fmt: skip
    messages = [v.message for v in check.violations]
    assert messages[0].startswith("9 connections held by the client after the run")
    assert messages[1].startswith("4 client connections still open after the pool was closed")
    assert "checkouts (5) != checkins (4)" in messages[2]


def test_invariant_violation_lists_everything() -> None:
    error = InvariantViolation("x", [Violation("hang", "a"), Violation("leaks", "b", ("k",))])
    assert str(error) == "scenario x: 2 invariant(s) broken:\n  - [hang] a\n  - [leaks] b (e.g. k)"


# -- configuration -----------------------------------------------------------------------


def test_driver_timeouts() -> None:
    t = Timeouts(connect=1.0, read=1.5, checkout=1.0)
    assert t.apply("psycopg", {"host": "h"}) == {"host": "h", "connect_timeout": 2}
    assert t.apply("pg", {"dbname": "db x"})["dbname"] == "dbname='db x' connect_timeout=2"
    assert t.apply("pymysql", {}) == {
        "connect_timeout": 1.0,
        "read_timeout": 1.5,
        "write_timeout": 1.5,
    }
    assert t.bound("checkout", "psycopg", checkout_timeout=1.0) == 1.0 + 1.5 + 2.0
    assert t.bound("commit", "pymysql", checkout_timeout=None) == 1.5
    with pytest.raises(ValueError, match="connect"):
        Timeouts(connect=0)


def test_fault_catalogue() -> None:
    assert set(FAULT_NAMES) == set(FAULTS) - {"none"}
    for name in FAULTS:
        fault = make_fault(name)
        assert fault.name == name
        assert fault.description
    with pytest.raises(ValueError, match="unknown fault"):
        make_fault("earthquake")


def test_ci_matrix_covers_every_fault_driver_and_pool() -> None:
    assert {s.fault for s in CI_MATRIX} == set(FAULT_NAMES)
    assert {s.driver for s in CI_MATRIX} == set(DRIVERS)
    assert {s.pool for s in CI_MATRIX} == set(POOL_NAMES)
    assert len({s.id for s in CI_MATRIX}) == len(CI_MATRIX)
    assert len(full_matrix()) == len(FAULT_NAMES) * len(DRIVERS) * len(POOL_NAMES)


# -- the report --------------------------------------------------------------------------


def fake_result(passed: bool) -> dict[str, object]:
    return {
        "id": "latency-psycopg-pooled", "fault": "latency", "fault_description": "+200 ms",
        "fault_params": {"window": 2.0}, "driver": "psycopg", "pool": "pooled", "workers": 4,
        "timeouts": {"connect": 2.0, "read": 2.0, "checkout": 1.5},
        "schedule": {"applied_at": 1.0, "lifted_at": 3.0, "stopped_at": 6.5, "deadline": 12,
                     "finished_at": 6.6},
        "transactions": {"ok": 10, "failed": 1, "unknown": 1, "in_flight": 0,
                         "unknown_committed": 1, "unknown_absent": 0, "unknown_keys": ["k1"],
                         "rows": 22},
        "errors": {"stmt1: OperationalError": 1},
        "recovery": {"seconds": 0.12, "bound": 3.0},
        "sustained": {"checked": True, "reason": "", "window": [3.3, 5.3],
                      "before_window": [0.2, 1.0], "errors": 0, "rate_before": 300.0,
                      "rate_after": 280.0, "ratio": 0.933, "min_ratio": 0.5, "passed": passed},
        "timeouts_check": {"worst_overshoot": -1.5, "worst": "stmt1 ...", "slowest_failure": 0.5,
                           "slack": 1.0, "hung": []},
        "sessions": {"before": 0, "after_run": 3, "after_close": 0, "client_after_run": 3,
                     "client_after_close": 0, "proxy_orphans": 0, "max": 3},
        "traffic": {"upstream": 100, "downstream": 200}, "proxy_proof": "refused",
        "notes": {}, "passed": passed, "wall_time": 7.0,
        "violations": [] if passed else [{"invariant": "leaks", "message": "m", "examples": []}],
        "timeline": {"bin": 0.1, "ok": [1, 2, 0, 3], "errors": [0, 0, 1, 0], "fault": [0.1, 0.2]},
    }  # fmt: skip


def test_broken_pool_runs_are_listed_apart() -> None:
    broken = {**fake_result(False), "id": "b", "expected_violations": ["leaks"], "caught": True}
    text = render_markdown([fake_result(True), broken])
    assert "1 scenarios: 1 passed, 0 failed. 1 deliberately broken pools: 1 caught." in text
    assert "| caught (expected) (leaks) |" in text


def test_markdown_report_has_a_table_per_scenario() -> None:
    text = render_markdown([fake_result(True), {**fake_result(False), "id": "other"}])
    assert "2 scenarios: 1 passed, 1 failed." in text
    assert (
        "| latency-psycopg-pooled | 10 | 1 | 1 | 0.12 s (3.0 s) | 0 err, 280/300 per s (93%) |"
        " -1.50 s | 0/3/0 (3) | pass |" in text
    )
    assert "| sustained recovery (3.30-5.30 s) | 0 failed; 280 commits/s vs 300 before" in text
    old = {k: v for k, v in fake_result(True).items() if k != "sustained"}  # an older report
    assert "| 0.12 s (3.0 s) | - | -1.50 s |" in render_markdown([old])
    assert "## other" in text
    assert "- [leaks] m" in text
    assert "unknown-outcome keys | k1" in text


def test_timeline_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    assert write_timeline_png(fake_result(True), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(fake_result(True))  # the data is plain JSON
