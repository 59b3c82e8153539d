"""The regression gate (a ratio against the fastest peer in the same run) and the targets.

The gate fails the run when tether's persistent or pooled connections
(default settings) are more than 2x slower than the fastest comparable peer
measured in the same process: the cycle time on each database (µs, lower is
better) and the throughput at each thread count with autocommit on (q/s,
higher is better), in every run (pools of one run are measured in the same
interleaved rounds: the ratio is paired). Above the pool size, capped pools
are compared with capped peers and one-connection-per-thread pools with
their kind. Absolute times are never compared with anything.

The instructions phase (callgrind) is gated too, by ratio: tether's
instructions added over the driver alone divided by psycopg_pool's, each at
most its bound in :data:`INSTR_LIMITS`. Instruction counts do not move with
the machine's load, so one run decides; only rows whose two parts agree
within :data:`INSTR_LINEARITY_PCT` are trusted at all.

The targets are the issue's goals, reported met or missed with the number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from phase_throughput import comparable_peers

__all__ = ["check", "targets"]

GATED = ("tether.persistent", "tether.pooled")
LIMIT = 2.0
NOT_INSTALLED = "not importable"
FAIR = "baseline: fair hand-off, nothing checked"  # pools.FairHandoff.key

#: The instructions phase: (configuration, workload) -> the most instructions it may add
#: over the driver alone, as a multiple of what psycopg_pool getconn/putconn adds in the
#: same workload (for checkout+checkin alone: of psycopg_pool's whole cycle).
#: Measured on main 408662e (2026-12-03, psycopg 3.3.9, Python 3.11.7, valgrind 3.19), the
#: full run, back to back / gaps past ALIVE_BYPASS / checkout+checkin: pooled 0.72 /
#: 0.91 / 0.34, persistent 0.80 / 0.98 / 0.43, steady held 0.36 / 0.54 (297aa25, the
#: quick run: pooled 0.85 / 1.07 / 0.34, persistent 0.86 / 1.08 / 0.39, steady 0.47 /
#: 0.68; 4cc2ecf: pooled
#: 1.01 / 1.50 / 0.48, persistent 1.12 / 1.56 / 0.68, steady 0.62 / 1.04; 6249a9e, before
#: the forwarding classes: pooled 1.87-1.96 / 2.83-3.03 / 0.75-0.76). Each bound is that
#: figure plus ~15%: a ratio moved by up to ~7% between runs on a loaded machine (a
#: pool's count by up to ~2.3%, psycopg_pool's small "added" amplifies it; the driver
#: alone, which has no pool threads, moved 0.15%: thread scheduling is the likely cause,
#: not pinned down), so a bound this close fails on a regression of a few thousand
#: instructions and not on scheduling. Tighten them as the hot path gets leaner (issue
#: 14's +12,000 for pooled back to back is ~0.42x). The gap bounds have 0.25 more room:
#: bisecting showed that d496872, which adds no work per request (the forwarding class
#: cache's key), moved the steady gap path by +5,700 instructions (~0.2x) when it runs
#: after the back-to-back workload in the same process, and by nothing when it runs
#: alone: a layout effect (likely CPython's type attribute cache), not tether's code, so
#: that path moves by that much on unrelated changes.
INSTR_LIMITS: dict[tuple[str, str], float] = {
    ("tether.pooled", "request"): 0.83,
    ("tether.pooled", "request-gap"): 1.15,
    ("tether.pooled", "cycle"): 0.40,
    ("tether.persistent", "request"): 0.92,
    ("tether.persistent", "request-gap"): 1.23,
    ("tether.persistent", "cycle"): 0.50,
    ("tether.steady", "request"): 0.42,
    ("tether.steady", "request-gap"): 0.80,
    # Autocommit off (request-txn), measured 2026-12-06 on main 4549715, full N / quick:
    # pooled +50,615 / +52,205 (1.46x / 1.59x), persistent +39,476 / +35,322 (1.14x /
    # 1.07x), steady held +23,684 / +23,743 (0.68x / 0.72x) over the driver's ~134,400;
    # psycopg_pool +34,709 / +32,882; the fresh-clone CI's quick run on 07b47dd: pooled
    # 1.39x, persistent 1.25x, steady 0.73x. The bound is the largest ratio plus ~15%. Before
    # 8be964a, pooled's checkin escaped to the driver on every rollback and compared every
    # setting: 262.9k per request (~2.8x), the kind of regression this bound catches.
    # 2026-12-07: those figures depended on whether the checkin's ROLLBACK answer was in
    # when tether first read (psycopg's _command_within read before it waited): pooled
    # moved between +35k and +45k with the server's latency, and the fresh-clone CI's quick
    # run measured 1.38x. Waiting first made it deterministic (full N, 2 runs under load
    # and idle within 0.01%): pooled +45,259 (~1.35x), persistent +30,443 (~0.91x). Bounds:
    # those plus ~20-30% (the fresh-clone CI measured 1.36x and 0.99x).
    # 2026-12-07 (407d97b, full run): a statement on a session tether's own commit or
    # rollback left idle takes the cursor's hot path, and psycopg's transaction status is
    # one dict lookup: pooled +33,866 (1.05x), persistent +21,631 (0.67x), steady held
    # +16,339 (0.50x), psycopg_pool +32,368. Bounds: those plus ~20%.
    ("tether.pooled", "request-txn"): 1.25,
    ("tether.persistent", "request-txn"): 0.80,
    ("tether.steady", "request-txn"): 0.62,
    # Two threads on a pool of one connection (request-contended), 2026-12-07, main plus
    # the checkin's direct hand-over: pooled +33,949 (0.52x; the quick run +34,016, 0.52x)
    # over the driver back to back, psycopg_pool +65,863, the fair hand-off that checks
    # nothing +9,985. Before the hand-over, the waiting checkout's path cost ~8,500 more
    # (~0.61x, measured with a 2-thread ping-pong script). Bound: today's plus ~15%.
    ("tether.pooled", "request-contended"): 0.60,
}
#: How far (percent of the slope) the per-request instructions of a row's two parts
#: may differ before the row is not trusted: measured up to 1.6% (see above).
INSTR_LINEARITY_PCT = 3.0
INSTR_WORKLOADS = {
    "request": "back to back",
    "request-gap": "gaps past ALIVE_BYPASS",
    "cycle": "checkout+checkin",
    "request-txn": "autocommit off",
    "request-contended": "2 threads on 1 connection",
}


def _rows(results: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    data = results.get(phase) or {}
    if phase == "cycle":
        return [r | {"db": db["target"]} for db in data.get("databases", []) for r in db["rows"]]
    if phase == "throughput":
        return [
            r | {"autocommit": mode["autocommit"]}
            for mode in data.get("modes", [])
            for r in mode["rows"]
        ]
    return list(data.get("rows", []))


def _run_value(field: str, k: int) -> Callable[[dict[str, Any]], float]:
    """A row's value in run ``k`` (a sort key)."""

    def value(row: dict[str, Any]) -> float:
        return float(row[field][k])

    return value


def check(results: dict[str, Any], *, quick: bool, allow_missing: bool) -> dict[str, Any]:
    """Per run, the tether pool against the fastest comparable peer of that run; the best run.

    Pools of one run were measured in the same interleaved rounds, so their
    ratio is paired; the gate fails only when tether is more than 2x slower
    in *every* run: a real regression is consistent, a burst of load from
    the rest of the machine is not.
    """
    checked: list[str] = []
    failures: list[str] = []
    missing: list[str] = []
    cycle = [r for r in _rows(results, "cycle") if not r.get("validated")]
    for db in sorted({r["db"] for r in cycle}):
        rows = [r for r in cycle if r["db"] == db]
        peers = [r for r in rows if r["family"] == "peer" and r.get("runs_us")]
        if not peers:
            continue
        for key in GATED:
            row = next((r for r in rows if r["pool"] == key), None)
            if row is None:  # not selected (--pools)
                continue
            if not row.get("runs_us"):
                reason = row.get("skipped") or row.get("error") or "not run"
                (missing if NOT_INSTALLED in str(reason) else failures).append(
                    f"cycle {db}: {key}: {reason}"
                )
                continue
            # per run: this pool against the fastest peer of the same interleaved rounds
            ratios: list[tuple[float, int, dict[str, Any]]] = []
            for k, tether_us in enumerate(row["runs_us"]):
                fastest = min(peers, key=_run_value("runs_us", k))
                ratios.append((tether_us / fastest["runs_us"][k], k, fastest))
            ratio, k, fastest = min(ratios, key=lambda x: x[0])
            line = (
                f"cycle {db}: {key} {row['runs_us'][k]:.2f} µs vs fastest peer {fastest['pool']}"
                f" {fastest['runs_us'][k]:.2f} µs = {ratio:.2f}x"
                f" (per run: {', '.join(f'{x[0]:.2f}' for x in ratios)})"
            )
            checked.append(line)
            if ratio > LIMIT:
                failures.append(line + f" (> {LIMIT:g}x)")
    tput = [r for r in _rows(results, "throughput") if r.get("autocommit")]
    pool_size = (results.get("throughput") or {}).get("pool_size", 8)
    for n in sorted({r["threads"] for r in tput}):
        rows = [r for r in tput if r["threads"] == n]
        for key in GATED:
            row = next((r for r in rows if r["pool"] == key), None)
            if row is None:  # not selected (--pools)
                continue
            if not row.get("runs_qps"):
                reason = row.get("skipped") or row.get("error") or "no result"
                if NOT_INSTALLED not in str(reason):
                    failures.append(f"throughput {n} threads: {key}: {reason}")
                continue
            peers = [
                p
                for p in comparable_peers(rows, row, pool_size)
                if len(p.get("runs_qps", [])) == len(row["runs_qps"])
            ]
            if not peers:
                continue
            ratios = []
            for k, tether_qps in enumerate(row["runs_qps"]):
                best = max(peers, key=_run_value("runs_qps", k))
                peer_qps = best["runs_qps"][k]
                ratios.append((peer_qps / tether_qps if tether_qps else math.inf, k, best))
            ratio, k, best = min(ratios, key=lambda x: x[0])
            line = (
                f"throughput {n} threads: {key} {row['runs_qps'][k]:,.0f} q/s vs best peer"
                f" {best['pool']} {best['runs_qps'][k]:,.0f} q/s: peer/tether = {ratio:.2f}"
                f" (per run: {', '.join(f'{x[0]:.2f}' for x in ratios)})"
            )
            checked.append(line)
            if ratio > LIMIT:
                failures.append(line + f" (> {LIMIT:g}x)")
    _check_instructions(results, checked, failures, missing)
    if missing and not allow_missing:
        failures += [f"missing (pass --allow-missing to accept): {m}" for m in missing]
    return {
        "rule": f"tether persistent/pooled (default settings) within {LIMIT:g}x of the fastest"
        " comparable peer of the same run in at least one run: cycle µs per database,"
        " throughput q/s (autocommit on) per thread count",
        "quick": quick,
        "checked": checked,
        "missing": missing,
        "failures": failures,
    }


def _check_instructions(
    results: dict[str, Any], checked: list[str], failures: list[str], missing: list[str]
) -> None:
    """The instructions phase's ratios against :data:`INSTR_LIMITS` (when the phase ran)."""
    data = results.get("instructions")
    if not data:
        return
    if data.get("error"):
        failures.append(f"instructions: {data['error']}")
        return
    rows = {r["configuration"]: r for r in data.get("rows", [])}
    reference = rows.get(data.get("reference", ""))
    if reference is None or "workloads" not in reference:
        return  # not selected (--pools), or its failure is reported below
    for row in rows.values():
        if "workloads" not in row:
            reason = row.get("skipped") or row.get("error") or "not run"
            (missing if NOT_INSTALLED in str(reason) else failures).append(
                f"instructions: {row['configuration']}: {reason}"
            )
            continue
        for workload, w in row["workloads"].items():
            if w["linearity_pct"] > INSTR_LINEARITY_PCT:
                failures.append(
                    f"instructions {row['configuration']} ({INSTR_WORKLOADS[workload]}):"
                    f" the two parts differ by {w['linearity_pct']:.1f}% per request"
                    f" (> {INSTR_LINEARITY_PCT:g}%): not a stable measurement"
                )
    for (key, workload), limit in INSTR_LIMITS.items():
        row = rows.get(key)
        w = (row or {}).get("workloads", {}).get(workload)
        if w is None:
            continue  # not selected, or reported above
        ratio = w["x_reference"]
        line = (
            f"instructions {key} ({INSTR_WORKLOADS[workload]}): {w['added']:+,.0f}"
            f" per {'cycle' if workload == 'cycle' else 'request'}"
            f" vs psycopg_pool {reference['workloads'][workload]['added']:+,.0f}"
            f" = {ratio:.2f}x"
        )
        checked.append(line)
        if not ratio <= limit:  # NaN fails
            failures.append(line + f" (> {limit:g}x)")


def _met(value: float | None, ok: bool) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return ok


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed / not measured."""
    out: list[dict[str, Any]] = []

    def add(goal: str, pool: str, value: Any, met: bool | None, detail: str = "") -> None:
        out.append({"target": goal, "pool": pool, "value": value, "met": met, "detail": detail})

    def why(row: dict[str, Any]) -> str:
        return str(row.get("skipped") or row.get("error") or "")

    cycle = [r for r in _rows(results, "cycle") if not r.get("validated")]
    for key in GATED:
        for r in [r for r in cycle if r["pool"] == key]:
            net = r.get("net_us")
            gross = f"gross {r['us']:.2f} µs" if "us" in r else why(r)
            add(f"cycle <= 1.0 µs net ({r['db']})", key, net, _met(net, (net or 0) <= 1.0), gross)
            speed = r.get("speedup_vs_fastest_peer")
            add(
                f">= 3x faster than the fastest peer, net ({r['db']})",
                key,
                speed,
                _met(speed, (speed or 0) >= 3),
                f"fastest peer: {r.get('fastest_peer')}",
            )
    tput = _rows(results, "throughput")
    for r in tput:
        if r["pool"] not in (*GATED, "tether.simple_pool"):
            continue
        mode = "autocommit on" if r["autocommit"] else "autocommit off"
        n = r["threads"]
        if n in (1, 4):
            pct = r.get("pct_of_raw")
            goal = f"throughput >= 95% of raw-held, {n} threads, {mode}"
            add(goal, r["pool"], pct, _met(pct, (pct or 0) >= 95), why(r))
        elif r["pool"] != "tether.persistent":
            vs = r.get("vs_best_peer")
            goal = f"throughput >= 1.3x best peer, {n} threads on 8, {mode}"
            detail = f"best peer {r.get('best_peer')}"
            fair = next(
                (f for f in tput if f["pool"] == FAIR and f["autocommit"] == r["autocommit"]
                 and f["threads"] == n and f.get("vs_best_peer")),
                None,
            )  # fmt: skip
            if fair is not None:
                detail += f"; a fair hand-off with nothing checked: {fair['vs_best_peer']:.2f}x"
            add(goal, r["pool"], vs, _met(vs, (vs or 0) >= 1.3), detail)
            low, high = r.get("min_share", math.nan), r.get("max_share", math.nan)
            goal = f"no thread starved (shares 0.5..2), {n} threads, {mode}"
            add(goal, r["pool"], f"{low:.2f}..{high:.2f}", _met(low, low >= 0.5 and high <= 2))
    for r in _rows(results, "contention"):
        if r["pool"] in ("tether.pooled", "tether.simple_pool"):
            ratio = r.get("p99_over_mean")
            add(
                "p99 checkout wait <= 2x fair share (mean wait), 64 on 8",
                r["pool"],
                ratio,
                _met(ratio, (ratio or 0) <= 2),
                f"p99 {r.get('wait_p99_us', math.nan):.0f} µs" if "runs" in r else why(r),
            )
    for r in _rows(results, "spike"):
        if r["pool"] == "tether.pooled":
            value = r.get("max_open_after_settle")
            detail = (
                f"created during burst {r.get('created_during_burst')},"
                f" burst {r.get('burst_ms', math.nan):.0f} ms"
                if r.get("runs")
                else why(r)
            )
            goal = "spike test ends with <= 8 connections"
            add(goal, r["pool"], value, _met(value, (value or 0) <= 8), detail)
    per_request = {
        r["threads"]: r["qps"]
        for r in tput
        if r["pool"] == "baseline: connect per request" and r["autocommit"] and "qps" in r
    }
    for r in tput:
        if r["pool"] == "tether.pooled" and r["autocommit"] and r["threads"] in per_request:
            base = per_request[r["threads"]]
            ratio = r.get("qps", math.nan) / base if base else None
            goal = f"pooled >= 50x connect-per-request (throughput, {r['threads']} threads)"
            add(goal, r["pool"], ratio, _met(ratio, (ratio or 0) >= 50))
    instr = {r["configuration"]: r for r in (results.get("instructions") or {}).get("rows", [])}
    for key, workload, most in (
        ("tether.pooled", "request", 12_000),
        ("tether.pooled", "request-gap", 20_000),
        ("tether.steady", "request", 8_000),
        ("tether.persistent", "request", 12_000),
        ("tether.pooled", "cycle", 6_000),
        ("tether.persistent", "cycle", 6_000),
    ):
        w = instr.get(key, {}).get("workloads", {}).get(workload)
        if w is not None:
            goal = (
                f"checkout+checkin <= {most:,} instructions"
                if workload == "cycle"
                else f"<= +{most:,} instructions per request ({INSTR_WORKLOADS[workload]})"
            )
            detail = "callgrind" if workload == "cycle" else "callgrind, over the driver alone"
            add(goal, key, round(w["added"]), w["added"] <= most, detail)
    for r in _rows(results, "web"):
        if r["pool"] == "tether.pooled":
            ratio = r.get("vs_connect_per_request")
            goal = "pooled >= 50x connect-per-request (web workload req/s)"
            add(goal, r["pool"], ratio, _met(ratio, (ratio or 0) >= 50))
    return out
