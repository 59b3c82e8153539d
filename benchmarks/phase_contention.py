"""Phase "contention": 64 threads on 8 connections; checkout waits and thread shares.

Only pools that cap their connections take part. Every checkout's wait is
timed. In a closed loop the *mean* wait is fixed by the throughput (Little's
law); a fair pool gives every request about that wait, an unfair one gives
some requests much longer ones. So the fairness figures are p99 / mean wait
(<= 2 is the target) and each thread's share of the checkouts relative to
a fair share (every thread within 0.5x..2x).
"""

from __future__ import annotations

import math
from typing import Any

from context import Context, fmt
from measure import Workers, median, percentile, share_stats
from phase_throughput import close_all, measure_set, open_all

__all__ = ["markdown", "run"]


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    n = s.contention_threads
    adapters = ctx.new_adapters(where=lambda a: a.capped)
    skipped: dict[str, Any] = {}
    opened = open_all(ctx, adapters, skipped)
    workers = Workers(n)
    per_run: dict[str, list[Any]] = {}
    try:
        for run_index in range(s.runs):
            ctx.log(f"contention: run {run_index + 1}, {n} threads on {s.pool_size} connections")
            windows = measure_set(
                ctx, opened, workers, n, duration=s.contention_duration, record_waits=True,
                rotate=run_index,
            )  # fmt: skip
            for name, window in windows.items():
                per_run.setdefault(name, []).append(window)
    finally:
        workers.close()
        close_all(opened, skipped)
    rows = []
    for adapter in adapters:
        if adapter not in opened:
            rows.append(skipped[adapter.name])
            continue
        runs = []
        for window in per_run.get(adapter.name, []):
            # completed checkouts, plus the waits still going on at the end (starved threads)
            waits = sorted(window.waits + window.censored)
            mean = sum(waits) / len(waits) if waits else math.nan
            p99 = percentile(waits, 0.99)
            runs.append({
                "qps": window.rate,
                "checkouts": len(waits),
                "wait_mean_us": mean * 1e6,
                "wait_p50_us": percentile(waits, 0.50) * 1e6,
                "wait_p99_us": p99 * 1e6,
                "wait_max_us": (waits[-1] if waits else math.nan) * 1e6,
                "p99_over_mean": p99 / mean if mean else math.nan,
                "still_waiting_at_end": len(window.censored),
                "starved_in_warmup": window.unwarmed,
                "errors": window.errors,
                "first_error": window.first_error,
                **share_stats(window.counts),
            })  # fmt: skip
        row: dict[str, Any] = {"pool": adapter.name, "family": adapter.family, "runs": runs}
        for key in ("qps", "wait_p50_us", "wait_p99_us", "wait_max_us", "p99_over_mean", "jain"):
            row[key] = median([r[key] for r in runs])
        row["min_share"] = min((r["min_share"] for r in runs), default=math.nan)
        row["max_share"] = max((r["max_share"] for r in runs), default=math.nan)
        row["errors"] = sum(r["errors"] for r in runs)
        rows.append(row)
    return {"phase": "contention", "threads": n, "connections": s.pool_size, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    out = [
        f"## Contention and fairness: {result['threads']} threads on"
        f" {result['connections']} connections",
        "",
        "Checkout wait per run (run 1 / run 2) in µs, counting the waits still going on"
        " when the window closed (a starved thread's wait); p99/mean: 1 = every request"
        " waits alike (a fair queue), the target is <= 2; thread share = a thread's checkouts"
        " relative to a fair share, worst over the runs (target 0.5..2); Jain index 1 = fair.",
        "",
        "| pool | q/s | wait p50 µs | wait p99 µs | wait max µs | p99 / mean"
        " | thread share min / max | Jain | still waiting at end | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "runs" not in r:
            out.append(f"| {r['pool']} | {r.get('skipped') or r.get('error')} | | | | | | | | |")
            continue

        def both(key: str, runs: list[dict[str, Any]] = r["runs"]) -> str:
            return " / ".join(fmt(x[key]) for x in runs)

        out.append(
            f"| {r['pool']} | {both('qps')} | {both('wait_p50_us')} | {both('wait_p99_us')}"
            f" | {both('wait_max_us')} | {both('p99_over_mean')}"
            f" | {fmt(r['min_share'])} / {fmt(r['max_share'])} | {both('jain')}"
            f" | {both('still_waiting_at_end')} | {r['errors']} |"
        )
    return "\n".join(out)
