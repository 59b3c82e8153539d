"""Phase "web": the seed's claim, a small threaded web app, requests/s.

A ``ThreadingHTTPServer`` on loopback (one server thread per keep-alive
client connection, as a threaded web server has) answers ``GET /item?id=N``
by checking out a database connection, selecting one row of a 1000-row
table by primary key, checking the connection in and returning JSON. HTTP
clients run in the same process on long-lived keep-alive connections. The
same server and clients are used for every pool; only the pool behind the
handler changes between timed windows.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from context import Context, fmt
from measure import Request, Workers, median
from phase_throughput import close_all, open_all
from pools import PoolAdapter

__all__ = ["markdown", "run"]

KEYS = {
    "baseline: connect per request",
    "tether.persistent",
    "tether.pooled",
    "DBUtils PersistentDB",
    "DBUtils PooledDB",
}
SQL = "SELECT id, name, price FROM bench_items WHERE id = %s"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    adapter: PoolAdapter | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one server thread per client connection
    disable_nagle_algorithm = True  # else headers and body wait for a delayed ACK (40 ms)
    server: _Server

    def do_GET(self) -> None:
        adapter = self.server.adapter
        assert adapter is not None
        item = int(self.path.rsplit("=", 1)[1])
        handle = adapter.checkout()
        try:
            cursor = adapter.connection(handle).cursor()
            cursor.execute(SQL, (item,))
            row = cursor.fetchone()
            cursor.close()
        finally:
            adapter.checkin(handle)
        body = json.dumps({"id": row[0], "name": row[1], "price": str(row[2])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    adapters = ctx.new_adapters(where=lambda a: a.key in KEYS)
    skipped: dict[str, Any] = {}
    opened = open_all(ctx, adapters, skipped)
    server = _Server(("127.0.0.1", 0), _Handler)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.daemon = True
    serving.start()
    port = server.server_address[1]
    local = threading.local()
    counter = [0]

    def make_request(_index: int) -> Request:
        if not hasattr(local, "http"):
            local.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn = local.http

        def request() -> float:
            counter[0] = (counter[0] + 7919) % 1000
            conn.request("GET", f"/item?id={counter[0] + 1}")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return 0.0

        return request

    workers = Workers(s.web_clients)
    results: dict[str, list[Any]] = {}
    try:
        for run_index in range(s.runs):
            ctx.log(f"web: run {run_index + 1}, {s.web_clients} clients")
            order = opened if run_index % 2 == 0 else list(reversed(opened))
            for adapter in order:
                server.adapter = adapter
                window = workers.measure(
                    s.web_clients,
                    make_request,
                    warmup=s.warmup,
                    duration=s.web_duration,
                    server_cpu=ctx.server_cpu(),
                )
                results.setdefault(adapter.name, []).append(window)
    finally:
        workers.close()
        server.shutdown()
        server.server_close()
        close_all(opened, skipped)
    rows = []
    for adapter in adapters:
        if adapter not in opened:
            rows.append(skipped[adapter.name])
            continue
        windows = results.get(adapter.name, [])
        cpu = [w.cpu_per_request_us() for w in windows]
        server_cpu = [x[1] for x in cpu if x[1] is not None]
        rows.append({
            "pool": adapter.name,
            "family": adapter.family,
            "runs_rps": [w.rate for w in windows],
            "rps": median([w.rate for w in windows]),
            "client_cpu_us": median([x[0] for x in cpu]),
            "server_cpu_us": median(server_cpu) if server_cpu else None,
            "errors": sum(w.errors for w in windows),
            "first_error": next((w.first_error for w in windows if w.first_error), None),
        })  # fmt: skip
    per_request = next(
        (r["rps"] for r in rows if r["pool"] == "baseline: connect per request" and "rps" in r),
        None,
    )
    for r in rows:
        if "rps" in r and per_request:
            r["vs_connect_per_request"] = r["rps"] / per_request
    return {
        "phase": "web",
        "clients": s.web_clients,
        "pool_size": s.pool_size,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    out = [
        f"## Web workload: {result['clients']} keep-alive HTTP clients, threaded server,"
        f" one primary-key SELECT per request (pool size {result['pool_size']})",
        "",
        "| pool | run 1 / run 2 req/s | median req/s | x connect-per-request"
        " | client CPU µs/req | server CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "rps" not in r:
            out.append(f"| {r['pool']} | {r.get('skipped') or r.get('error')} | | | | | |")
            continue
        errors = f"{r['errors']} {r['first_error'] or ''}" if r["errors"] else "0"
        out.append(
            f"| {r['pool']} | {' / '.join(fmt(x) for x in r['runs_rps'])} | {fmt(r['rps'])}"
            f" | {fmt(r.get('vs_connect_per_request'), 1)} | {fmt(r['client_cpu_us'], 0)}"
            f" | {fmt(r.get('server_cpu_us'), 0)} | {errors} |"
        )
    return "\n".join(out)
