"""Phase "layers": where a request's time goes, layer by layer, and a profile of it.

One thread runs checkout -> ``SELECT 1`` -> fetch -> checkin on PostgreSQL
through configurations that add tether's layers one at a time: the driver
connection alone (held), a :mod:`tether.steady` connection (held: the
per-statement layer only), a :mod:`tether.pooled` checkout whose statement
runs on the driver connection underneath (``dbapi_connection``: the pool's
checkout and checkin only), and the full pooled and persistent paths;
psycopg_pool's ``getconn``/``putconn`` (a pool that hands out the bare
driver connection) is the reference, and a "floor" row shows what the
least a proxy-handing pool can do costs: a deque and one small object per
checkout, nothing checked. Batches are interleaved as in the cycle
phase, so a burst of noise hits every row alike. The difference between two
rows is what a layer costs *around a real round trip*, which is more than
the same code costs in a tight loop: the CPU's caches are cold after the
wait for the server.

Then the full pooled path runs once under :mod:`cProfile` (the standard
library's deterministic profiler; it inflates every Python call alike, so
read its shares, not its times), and the top functions by own time are
written to ``profile_pooled.txt`` next to the report.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from context import Context, fmt
from measure import median
from targets import Target

__all__ = ["markdown", "run"]

SQL = "SELECT 1"
RAW = "driver connection, held"
PROFILE_FILE = "profile_pooled.txt"

Request = Callable[[], None]


def _query(con: Any) -> None:
    cursor = con.cursor()
    cursor.execute(SQL)
    cursor.fetchall()
    cursor.close()


class _FloorProxy:
    """One checkout of :class:`_FloorPool`: gives the connection back on close(), nothing else."""

    __slots__ = ("_con", "_pool")

    def cursor(self) -> Any:
        return self._con.cursor()

    def close(self) -> None:
        con = self._con
        if con is not None:
            self._con = None
            self._pool.append(con)


def _floor_checkout(pool: Any) -> _FloorProxy:
    proxy = _FloorProxy.__new__(_FloorProxy)
    proxy._pool = pool
    proxy._con = pool.pop()
    return proxy


def _configurations(target: Target, closers: list[Callable[[], None]]) -> dict[str, Request]:
    """Each row's request function (and what to close afterwards in ``closers``)."""
    from tether.persistent import PersistentDB
    from tether.pooled import PooledDB
    from tether.steady import connect

    rows: dict[str, Request] = {}
    raw = target.connect()
    closers.append(raw.close)
    rows[RAW] = lambda: _query(raw)

    steady = connect(target.creator())
    closers.append(steady.close)
    rows["+ tether.steady (connection held)"] = lambda: _query(steady)

    # The floor of any pool that hands out proxies, in CPython: a deque and one
    # small object per checkout, nothing checked (not a pool anyone should use:
    # no thread safety beyond the GIL, no timeouts, no transaction handling).
    floor_con = target.connect()
    closers.append(floor_con.close)
    floor = deque([floor_con])

    def floor_request() -> None:
        proxy = _floor_checkout(floor)
        _query(proxy)
        proxy.close()

    rows["floor: deque + a proxy object, nothing checked"] = floor_request

    pool = PooledDB(target.creator(), 1, 1, 0, 1, True)
    closers.append(pool.close)

    def pool_only() -> None:
        proxy = pool.connection()
        _query(proxy.dbapi_connection)
        proxy.close()

    def pooled() -> None:
        proxy = pool.connection()
        _query(proxy)
        proxy.close()

    rows["+ tether.pooled checkout/checkin (statement on the driver connection)"] = pool_only
    rows["tether.pooled (all layers)"] = pooled

    persistent = PersistentDB(target.creator())
    closers.append(persistent.close)

    def persistent_request() -> None:
        con = persistent.connection()
        _query(con)
        con.close()

    rows["tether.persistent (all layers)"] = persistent_request
    try:
        from psycopg.conninfo import make_conninfo
        from psycopg_pool import ConnectionPool
    except ImportError:
        return rows
    params = dict(target.params)
    app = params.pop("application_name", None)
    kwargs: dict[str, Any] = {"autocommit": True}
    if app is not None:
        kwargs["application_name"] = app
    peer = ConnectionPool(make_conninfo(**params), min_size=1, max_size=1, kwargs=kwargs, open=True)
    peer.wait(30.0)
    closers.append(peer.close)

    def peer_request() -> None:
        con = peer.getconn()
        _query(con)
        peer.putconn(con)

    rows["psycopg_pool getconn/putconn (reference)"] = peer_request
    return rows


def _batch(request: Request, n: int) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        request()
    return time.perf_counter() - t0, time.process_time() - c0


def _profile(
    request: Request, n: int, out: Path | None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The top functions of ``n`` requests by own time, as rows; the full listing to ``out``."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        request()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_cc, calls, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({
            "function": f"{_short(path)}:{line}({name})",
            "calls_per_request": calls / n,
            "share": own / total if total else math.nan,
        })  # fmt: skip
    rows.sort(key=lambda r: -r["share"])
    layers: dict[str, float] = {}
    for row in rows:
        layer = _layer(row["function"])
        layers[layer] = layers.get(layer, 0.0) + row["share"]
    if out is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
        out.write_text(
            f"cProfile of {n} requests through tether.pooled (all layers)\n" + text.getvalue()
        )
    return rows[:15], dict(sorted(layers.items(), key=lambda kv: -kv[1]))


def _layer(function: str) -> str:
    """Which package a profiled function belongs to."""
    for prefix in ("tether/pooled", "tether/persistent", "tether/steady", "tether/simple_pool"):
        if function.startswith(prefix):
            return prefix.replace("/", ".")
    if function.startswith(("psycopg/", "psycopg_pool/")):
        return "psycopg (the driver)"
    if function.startswith("<") or function.startswith("~"):
        return "built-ins (C functions called from Python)"
    return "the benchmark's loop"


def _short(path: str) -> str:
    for marker in ("/tether/", "/psycopg/", "/psycopg_pool/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def run(ctx: Context) -> dict[str, Any]:
    assert ctx.pg is not None
    s = ctx.settings
    target = ctx.pg.variant(application_name="tether-bench-layers")
    closers: list[Callable[[], None]] = []
    try:
        configurations = _configurations(target, closers)
        for request in configurations.values():
            _batch(request, 50)  # warm: prepared statements, first checkouts
        n = 150 if s.quick else 400
        samples: dict[str, list[float]] = {name: [] for name in configurations}
        cpu: dict[str, list[float]] = {name: [] for name in configurations}
        rng = random.Random(20261122)
        reps = 6 if s.quick else 20
        ctx.log(f"layers: {len(configurations)} configurations x {reps} batches of {n}")
        for _rep in range(reps):
            order = list(configurations.items())
            rng.shuffle(order)
            for name, request in order:
                wall, used = _batch(request, n)
                samples[name].append(wall / n * 1e6)
                cpu[name].append(used / n * 1e6)
        out = Path(s.out_dir) / PROFILE_FILE if s.out_dir else None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        profile, by_layer = _profile(configurations["tether.pooled (all layers)"], n * 5, out)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception:
                pass
    raw = median(samples[RAW])
    rows = []
    for name in configurations:
        us = median(samples[name])
        rows.append({
            "configuration": name,
            "us": us,
            "client_cpu_us": median(cpu[name]),
            "pct_of_raw": 100 * raw / us if us else math.nan,
            "added_us": us - raw,
        })  # fmt: skip
    return {
        "phase": "layers",
        "rows": rows,
        "profile": profile,
        "profile_by_layer": by_layer,
        "profile_file": PROFILE_FILE,
    }


def markdown(result: dict[str, Any]) -> str:
    out = [
        "## Layers: where one request's time goes (one thread, PostgreSQL)",
        "",
        "checkout -> SELECT 1 -> fetch -> checkin, median µs per request over interleaved"
        " batches; *% raw* = the driver connection's rate / this one's; *added* = µs more"
        " than the driver connection alone.",
        "",
        "| configuration | µs / request | % raw | added µs | client CPU µs |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['configuration']} | {fmt(r['us'])} | {fmt(r['pct_of_raw'], 0)}%"
            f" | {fmt(r['added_us'])} | {fmt(r['client_cpu_us'])} |"
        )
    out += [
        "",
        f"Profile of tether.pooled (cProfile; shares of own time, full listing in"
        f" `{result['profile_file']}`):",
        "",
        "| package | share of time |",
        "|---|---|",
        *(
            f"| {layer} | {fmt(100 * share, 1)}% |"
            for layer, share in result.get("profile_by_layer", {}).items()
        ),
        "",
        "| function | calls / request | share of time |",
        "|---|---|---|",
    ]
    for p in result["profile"]:
        out.append(
            f"| `{p['function']}` | {fmt(p['calls_per_request'])} | {fmt(100 * p['share'], 1)}% |"
        )
    return "\n".join(out)
