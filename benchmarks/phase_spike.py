"""Phase "spike": HikariCP's spike test on PostgreSQL.

Each pool starts with 5 idle connections (made before the test, at normal
speed) and may grow to 50. Then new connections take 150 ms longer to open
(a slow network or TLS handshake), 50 threads arrive at once and each runs
one 2 ms query (``pg_sleep(0.002)``). Reported: how long the burst took
until the last thread was done, how many connections the pool opened during
it, and how many sessions the server still has for the pool right after the
burst and after a short settle. A pool that lends a returned connection to a
waiting thread, rather than opening one per waiter, ends small.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from context import Context, fmt
from measure import median
from pools import PoolAdapter

__all__ = ["markdown", "run"]


def _burst(ctx: Context, adapter: PoolAdapter, index: int) -> dict[str, Any]:
    s = ctx.settings
    assert ctx.pg is not None and ctx.server is not None
    app = f"tether-bench-spike-{index}"
    target = ctx.pg.variant(application_name=app, connect_delay=s.spike_connect_delay)
    adapter.open(target, size=s.spike_max, min_idle=s.spike_min_idle)
    try:
        adapter.prewarm()
        before = ctx.server.count_connections(app)
        target.stats.reset()
        target.stats.slow = True
        sql = f"SELECT pg_sleep({s.spike_query_seconds})"
        barrier = threading.Barrier(s.spike_threads + 1)
        finished: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            barrier.wait()
            try:
                handle = adapter.checkout()
                try:
                    cursor = adapter.connection(handle).cursor()
                    cursor.execute(sql)
                    cursor.fetchall()
                    cursor.close()
                finally:
                    adapter.checkin(handle)
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
            end = time.perf_counter()
            with lock:
                finished.append(end)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(s.spike_threads)]
        for thread in threads:
            thread.start()
        barrier.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join(60)
        burst = max(finished) - t0 if finished else float("nan")
        created = target.stats.created
        right_after = ctx.server.count_connections(app)
        time.sleep(s.spike_settle)
        settled = ctx.server.count_connections(app)
        created_total = target.stats.created
        target.stats.slow = False
    finally:
        adapter.close()
    return {
        "burst_ms": burst * 1e3,
        "connections_before": before,
        "created_during_burst": created,
        "created_incl_settle": created_total,
        "open_right_after": right_after,
        "open_after_settle": settled,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    candidates = ctx.new_adapters()
    rows: dict[str, dict[str, Any]] = {}
    runnable: list[tuple[int, type[PoolAdapter]]] = []
    for index, adapter in enumerate(candidates):
        row = rows[adapter.name] = {"pool": adapter.name, "family": adapter.family, "runs": []}
        if adapter.thread_affine:
            reason: str | None = "one connection per thread: not a pool that can be capped"
        else:
            reason = adapter.unsupported("postgresql", spike=True)
        if reason:
            row["skipped"] = reason
            continue
        runnable.append((index, type(adapter)))
    for run_index in range(s.spike_runs):
        ctx.log(f"spike: run {run_index + 1}")
        order = runnable if run_index % 2 == 0 else list(reversed(runnable))
        for index, cls in order:
            adapter = cls()
            row = rows[adapter.name]
            try:
                t0 = time.perf_counter()
                row["runs"].append(_burst(ctx, adapter, index))
                ctx.log(f"spike: {adapter.name} took {time.perf_counter() - t0:.2f} s")
            except Exception as exc:
                row["error"] = repr(exc)
    for row in rows.values():
        runs = row["runs"]
        if runs:
            for key in ("burst_ms", "created_during_burst", "open_after_settle"):
                row[key] = median([r[key] for r in runs])
            row["max_open_after_settle"] = max(r["open_after_settle"] for r in runs)
    return {
        "phase": "spike",
        "threads": s.spike_threads,
        "max": s.spike_max,
        "min_idle": s.spike_min_idle,
        "connect_delay_ms": s.spike_connect_delay * 1e3,
        "query_ms": s.spike_query_seconds * 1e3,
        "settle_s": s.spike_settle,
        "rows": list(rows.values()),
    }


def markdown(result: dict[str, Any]) -> str:
    out = [
        f"## Spike (HikariCP's test): {result['threads']} threads at once, pool"
        f" min idle {result['min_idle']} / max {result['max']}, connect"
        f" +{fmt(result['connect_delay_ms'], 0)} ms, {fmt(result['query_ms'], 0)} ms queries",
        "",
        "Per run (runs separated by /): burst = time until the last thread was done;"
        " created = connections opened during the burst; open = server sessions of the"
        f" pool right after the burst and {result['settle_s']} s later (target <= 8).",
        "",
        "| pool | burst ms | created | open right after | open after settle | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if not r["runs"]:
            out.append(f"| {r['pool']} | {r.get('skipped') or r.get('error')} | | | | |")
            continue

        def both(key: str, runs: list[dict[str, Any]] = r["runs"]) -> str:
            return " / ".join(fmt(x[key], 0) for x in runs)

        errors = sum(x["errors"] for x in r["runs"])
        first = next((x["first_error"] for x in r["runs"] if x["first_error"]), "")
        out.append(
            f"| {r['pool']} | {both('burst_ms')} | {both('created_during_burst')}"
            f" | {both('open_right_after')} | {both('open_after_settle')}"
            f" | {errors} {first or ''} |"
        )
    return "\n".join(out)
