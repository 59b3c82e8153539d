"""Phase "cycle": checkout + checkin with no query, one thread, microseconds per cycle.

All pools are open at once and measured in interleaved repetitions: each
repetition runs one batch of cycles per pool, in a shuffled order, so a
burst of machine noise hits every pool alike; a pool's figure is the median
of its batches. "net" subtracts the raw-held baseline (the loop and call
overhead every row pays), which leaves what the pool itself costs.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from context import Context, fmt
from measure import median
from pools import PoolAdapter
from targets import Target

__all__ = ["markdown", "run"]

RAW = "baseline: raw held"


def _batch(adapter: PoolAdapter, n: int) -> float:
    checkout, checkin = adapter.checkout, adapter.checkin
    t0 = time.perf_counter()
    for _ in range(n):
        checkin(checkout())
    return time.perf_counter() - t0


def _calibrate(adapter: PoolAdapter, seconds: float) -> int:
    """How many cycles take about ``seconds``."""
    n = 1
    while True:
        elapsed = _batch(adapter, n)
        if elapsed >= seconds / 4 or n >= 1 << 22:
            return max(1, round(n * seconds / max(elapsed, 1e-9)))
        n *= 4


def _measure_target(ctx: Context, target: Target) -> dict[str, Any]:
    s = ctx.settings
    rows: dict[str, dict[str, Any]] = {}
    opened: list[PoolAdapter] = []
    for adapter in ctx.new_adapters(validated=True):
        row = rows[adapter.name] = {
            "pool": adapter.name,
            "family": adapter.family,
            "validated": adapter.validated,
        }
        reason = adapter.unsupported(target.kind)
        if reason:
            row["skipped"] = reason
            continue
        try:
            adapter.open(target, size=2)
            adapter.prewarm()
            _batch(adapter, 3)
        except Exception as exc:
            row["error"] = f"open/first cycle failed: {exc!r}"
            continue
        opened.append(adapter)
    batches = {a.name: _calibrate(a, s.cycle_batch) for a in opened}
    cpu_fn = ctx.server_cpu() if target.kind == "postgresql" else None
    samples: dict[str, list[list[float]]] = {a.name: [] for a in opened}
    cpu: dict[str, list[float]] = {a.name: [] for a in opened}
    server: dict[str, list[float]] = {a.name: [] for a in opened}
    rng = random.Random(20261122)
    for _run in range(s.runs):
        for runs in samples.values():
            runs.append([])
        for _rep in range(s.cycle_reps):
            order = list(opened)
            rng.shuffle(order)
            for adapter in order:
                if adapter.name in rows and "error" in rows[adapter.name]:
                    continue
                n = batches[adapter.name]
                srv0 = cpu_fn() if cpu_fn else None
                c0 = time.process_time()
                try:
                    elapsed = _batch(adapter, n)
                except Exception as exc:
                    rows[adapter.name]["error"] = f"cycle failed: {exc!r}"
                    continue
                c1 = time.process_time()
                srv1 = cpu_fn() if cpu_fn else None
                samples[adapter.name][-1].append(elapsed / n * 1e6)
                cpu[adapter.name].append((c1 - c0) / n * 1e6)
                if srv0 is not None and srv1 is not None:
                    server[adapter.name].append((srv1 - srv0) / n * 1e6)
    for adapter in opened:
        try:
            adapter.close()
        except Exception as exc:
            rows[adapter.name].setdefault("error", f"close failed: {exc!r}")
    for adapter in opened:
        row = rows[adapter.name]
        if "error" in row:
            continue
        runs = samples[adapter.name]
        row["runs_us"] = [median(r) for r in runs]
        row["us"] = median([x for r in runs for x in r])
        row["cpu_us"] = median(cpu[adapter.name])
        row["server_cpu_us"] = median(server[adapter.name]) if server[adapter.name] else None
        row["cycles_per_batch"] = batches[adapter.name]
        if adapter.note:
            row["note"] = adapter.note
    raw = rows.get(RAW, {}).get("us", math.nan)
    for validated in (False, True):
        group = [r for r in rows.values() if "us" in r and r["validated"] == validated]
        for r in group:
            r["net_us"] = r["us"] - raw
        peers = [r for r in group if r["family"] == "peer"]
        fastest = min(peers, key=lambda r: r["us"]) if peers else None
        for r in group:
            if fastest is not None:
                r["fastest_peer"] = fastest["pool"]
                # > 1: this pool is that many times faster than the fastest peer (net cost).
                r["speedup_vs_fastest_peer"] = (
                    fastest["net_us"] / r["net_us"] if r["net_us"] > 0 else math.inf
                )
                r["gross_ratio_vs_fastest_peer"] = r["us"] / fastest["us"]
    return {"target": target.label, "kind": target.kind, "rows": list(rows.values())}


def run(ctx: Context) -> dict[str, Any]:
    results = []
    targets = [ctx.sqlite.variant()]
    if ctx.pg is not None:
        targets.append(ctx.pg.variant(application_name="tether-bench-cycle"))
    for target in targets:
        ctx.log(f"cycle: {target.label}")
        results.append(_measure_target(ctx, target))
    return {"phase": "cycle", "databases": results}


def markdown(result: dict[str, Any]) -> str:
    out = [
        "## Cycle: checkout + checkin, no query, one thread",
        "",
        "Median µs per cycle over interleaved batches (per run, then all runs);"
        " *net* = minus the raw-held baseline (the loop's own cost);"
        " *x fastest peer* = the fastest peer's net cost / this pool's (> 1 is faster);"
        " CPU = this process's CPU per cycle; server = PostgreSQL backends' CPU per cycle.",
    ]
    for db in result["databases"]:
        out += [
            "",
            f"### {db['target']}",
            "",
            "| pool | run 1 / run 2 µs | median µs | net µs | x fastest peer"
            " | client CPU µs | server CPU µs |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in db["rows"]:
            if "us" not in r:
                reason = r.get("skipped") or r.get("error")
                out.append(f"| {r['pool']} | {reason} | | | | | |")
                continue
            runs = " / ".join(fmt(x) for x in r["runs_us"])
            out.append(
                f"| {r['pool']} | {runs} | {fmt(r['us'])} | {fmt(r['net_us'])}"
                f" | {fmt(r.get('speedup_vs_fastest_peer'))} | {fmt(r['cpu_us'])}"
                f" | {fmt(r.get('server_cpu_us'))} |"
            )
    return "\n".join(out)
