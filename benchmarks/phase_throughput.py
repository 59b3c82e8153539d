"""Phase "throughput": N threads loop checkout -> SELECT 1 -> fetch -> checkin on PostgreSQL.

Capped pools share ``pool_size`` (8) connections; thread-affine pools and the
raw-held baseline have one connection per thread; connect-per-request opens
one per request. Each cell is queries/s over a timed window and % of the
raw-held baseline at the same thread count. Run twice with autocommit on,
then twice with it off (every request leaves a transaction the pool must
end; a pool that does not end it is flagged by the sessions the server shows
"idle in transaction" afterwards).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

from context import Context, fmt
from measure import Request, Window, Workers, db_request, median, share_stats
from pools import PoolAdapter

__all__ = ["markdown", "measure_set", "run"]

RAW = "baseline: raw held"
PER_REQUEST = "baseline: connect per request"
SQL = "SELECT 1"


def _requests(adapter: PoolAdapter, waiting: list[float] | None) -> Callable[[int], Request]:
    """Thread i's request loop body through ``adapter``."""

    def make(index: int) -> Request:
        return db_request(adapter, SQL, waiting=waiting, index=index)

    return make


def measure_set(
    ctx: Context,
    adapters: list[PoolAdapter],
    workers: Workers,
    n: int,
    *,
    duration: float,
    record_waits: bool = False,
    rotate: int = 0,
) -> dict[str, Window]:
    """``settings.windows`` interleaved windows per adapter at ``n`` threads, merged by name.

    Each round measures every adapter once, in an order rotated from round to
    round, so slow drifts of the machine's load spread over all pools.
    """
    parts: dict[str, list[Window]] = {}
    for round_index in range(ctx.settings.windows):
        k = (rotate + round_index) % len(adapters) if adapters else 0
        for adapter in adapters[k:] + adapters[:k]:
            if n > ctx.settings.per_request_max_threads and adapter.key == PER_REQUEST:
                continue
            waiting = [math.inf] * n if record_waits else None
            window = workers.measure(
                n,
                _requests(adapter, waiting),
                warmup=ctx.settings.warmup,
                duration=duration,
                server_cpu=ctx.server_cpu(),
                record_waits=record_waits,
                waiting=waiting,
                warm_timeout=ctx.settings.warm_timeout,
            )
            parts.setdefault(adapter.name, []).append(window)
    return {name: Window.merge(windows) for name, windows in parts.items()}


def open_all(
    ctx: Context, adapters: list[PoolAdapter], rows: dict[str, Any], **target: Any
) -> list[PoolAdapter]:
    """Open every runnable adapter, each on its own ``application_name``; note the rest."""
    assert ctx.pg is not None
    opened = []
    for index, adapter in enumerate(adapters):
        reason = adapter.unsupported("postgresql", autocommit=target.get("autocommit", True))
        if reason:
            rows[adapter.name] = {"pool": adapter.name, "family": adapter.family, "skipped": reason}
            continue
        t = ctx.pg.variant(application_name=f"tether-bench-{index}", **target)
        try:
            adapter.open(t, size=ctx.settings.pool_size)
            adapter.prewarm()
        except Exception as exc:
            rows[adapter.name] = {
                "pool": adapter.name,
                "family": adapter.family,
                "error": f"open failed: {exc!r}",
            }
            continue
        opened.append(adapter)
    return opened


def close_all(adapters: list[PoolAdapter], rows: dict[str, Any]) -> None:
    for adapter in adapters:
        try:
            adapter.close()
        except Exception as exc:
            rows.setdefault(adapter.name, {})["close_error"] = repr(exc)
    gc.collect()  # DBUtils' PersistentDB closes its connections when collected


def _mode(ctx: Context, workers: Workers, autocommit: bool) -> dict[str, Any]:
    s = ctx.settings
    adapters = ctx.new_adapters()
    skipped: dict[str, Any] = {}
    opened = open_all(ctx, adapters, skipped, autocommit=autocommit)
    cells: dict[tuple[str, int], list[Any]] = {}
    threads = s.threads if autocommit else s.threads_autocommit_off
    # Open the per-thread connections of thread-affine pools before any window: their
    # first request on each of 64 threads is a connect, not what is measured here.
    for adapter in opened:
        if adapter.thread_affine:
            workers.measure(
                max(threads), _requests(adapter, None), warmup=0.0, duration=0.001,
                warm_timeout=120.0,
            )  # fmt: skip
    for run in range(s.runs):
        for n in threads:
            mode = "on" if autocommit else "off"
            ctx.log(f"throughput: autocommit {mode}, run {run + 1}, {n} threads")
            measured = measure_set(ctx, opened, workers, n, duration=s.duration, rotate=run + n)
            for name, window in measured.items():
                cells.setdefault((name, n), []).append(window)
    left_open: dict[str, int] = {}
    if not autocommit and ctx.server is not None:
        for adapter in opened:
            assert adapter.target is not None and adapter.target.app_name
            left_open[adapter.name] = ctx.server.idle_in_transaction(adapter.target.app_name)
    close_all(opened, skipped)
    rows = []
    for n in threads:
        for adapter in adapters:
            if adapter.name in skipped and adapter not in opened:
                rows.append({**skipped[adapter.name], "threads": n})
                continue
            windows = cells.get((adapter.name, n), [])
            if not windows:
                rows.append({
                    "pool": adapter.name, "family": adapter.family, "threads": n,
                    "skipped": f"run only up to {s.per_request_max_threads} threads",
                })  # fmt: skip
                continue
            rates = [w.rate for w in windows]
            cpu = [w.cpu_per_request_us() for w in windows]
            server_cpu = [x[1] for x in cpu if x[1] is not None]
            row: dict[str, Any] = {
                "pool": adapter.name,
                "family": adapter.family,
                "threads": n,
                "connections": "1/thread" if not adapter.capped else s.pool_size,
                "capped": adapter.capped,
                "runs_qps": rates,
                "qps": median(rates),
                "errors": sum(w.errors for w in windows),
                # threads that had not completed one request when the window opened
                "starved_threads": max(w.unwarmed for w in windows),
                "first_error": next((w.first_error for w in windows if w.first_error), None),
                "client_cpu_us": median([x[0] for x in cpu]),
                "server_cpu_us": median(server_cpu) if server_cpu else None,
                # the worst thread shares over the runs
                "min_share": min(
                    (share_stats(w.counts)["min_share"] for w in windows), default=math.nan
                ),
                "max_share": max(
                    (share_stats(w.counts)["max_share"] for w in windows), default=math.nan
                ),
            }
            if adapter.name in left_open:
                row["idle_in_transaction_after"] = left_open[adapter.name]
            rows.append(row)
    for n in threads:
        at_n = [r for r in rows if r["threads"] == n and "qps" in r]
        raw = next((r["qps"] for r in at_n if r["pool"] == RAW), math.nan)
        for r in at_n:
            r["pct_of_raw"] = 100 * r["qps"] / raw if raw else math.nan
            peers = comparable_peers(at_n, r, s.pool_size)
            best = max(peers, key=lambda p: p["qps"]) if peers else None
            if best is not None:
                r["best_peer"] = best["pool"]
                r["vs_best_peer"] = r["qps"] / best["qps"] if best["qps"] else math.nan
    return {"autocommit": autocommit, "rows": rows}


def comparable_peers(
    rows: list[dict[str, Any]], row: dict[str, Any], pool_size: int
) -> list[dict[str, Any]]:
    """The peers ``row`` is compared with at its thread count.

    Peers that leave transactions open skipped work they were asked to do and
    do not count. With more threads than ``pool_size``, a pool capped at 8
    connections is compared with capped peers only, and a pool with one
    connection per thread with such peers only: 64 connections against 8 is
    not a comparison of pools.
    """
    out = []
    for r in rows:
        if r["family"] != "peer" or math.isnan(r.get("qps", math.nan)):
            continue
        if r.get("idle_in_transaction_after"):
            continue
        if row["threads"] > pool_size and r.get("capped") != row.get("capped"):
            continue
        out.append(r)
    return out


def run(ctx: Context) -> dict[str, Any]:
    workers = Workers(max(ctx.settings.threads))
    try:
        modes = [_mode(ctx, workers, autocommit) for autocommit in (True, False)]
    finally:
        workers.close()
    return {"phase": "throughput", "pool_size": ctx.settings.pool_size, "modes": modes}


def markdown(result: dict[str, Any]) -> str:
    out = [
        f"## Throughput: N threads, checkout -> SELECT 1 -> fetch -> checkin,"
        f" pool size {result['pool_size']}",
        "",
        "queries/s per run and their median; % of the raw-held baseline at the same"
        " thread count; x best peer (above 8 threads: of the same kind, capped or one"
        " connection per thread; peers that leave transactions open do not count);"
        " thread shares = min/max of a thread's requests"
        " relative to a fair share (1.00 = fair); CPU µs per query, client and server.",
    ]
    for mode in result["modes"]:
        title = (
            "autocommit on"
            if mode["autocommit"]
            else ("autocommit off (the pool must end each request's transaction)")
        )
        out += [
            "",
            f"### {title}",
            "",
            "| threads | pool | conns | run 1 / run 2 q/s | median q/s | % raw | x best peer"
            " | thread share min / max | client CPU µs/q | server CPU µs/q | notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mode["rows"]:
            if "qps" not in r:
                reason = r.get("skipped") or r.get("error")
                out.append(f"| {r['threads']} | {r['pool']} | | {reason} | | | | | | | |")
                continue
            notes = []
            if r.get("starved_threads"):
                notes.append(f"{r['starved_threads']} threads got no connection in warm-up")
            if r.get("errors"):
                notes.append(f"{r['errors']} errors: {r.get('first_error')}")
            if r.get("idle_in_transaction_after"):
                notes.append(f"left {r['idle_in_transaction_after']} sessions idle in transaction")
            out.append(
                f"| {r['threads']} | {r['pool']} | {r['connections']}"
                f" | {' / '.join(fmt(x) for x in r['runs_qps'])} | {fmt(r['qps'])}"
                f" | {fmt(r.get('pct_of_raw'), 0)}% | {fmt(r.get('vs_best_peer'))}"
                f" | {fmt(r.get('min_share'))} / {fmt(r.get('max_share'))}"
                f" | {fmt(r['client_cpu_us'], 1)} | {fmt(r.get('server_cpu_us'), 1)}"
                f" | {'; '.join(notes)} |"
            )
    return "\n".join(out)
