"""tether's benchmarks against DBUtils, psycopg_pool, SQLAlchemy and peewee, side by side.

    python benchmarks/run.py --quick          # < 1 minute; exits 1 on a 2x regression
    python benchmarks/run.py                  # the full run, < 10 minutes
    python benchmarks/run.py --dsn postgresql://user:pw@host/db

Writes bench.md, bench.json and bench.png to <repo>/results/bench/ (or --out)
and prints the markdown. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the modules beside this file, when imported from elsewhere
    sys.path.insert(0, str(HERE))

import gate  # noqa: E402
import phase_contention  # noqa: E402
import phase_cycle  # noqa: E402
import phase_instructions  # noqa: E402
import phase_layers  # noqa: E402
import phase_ledger  # noqa: E402
import phase_spike  # noqa: E402
import phase_throughput  # noqa: E402
import phase_web  # noqa: E402
import report  # noqa: E402
import sysinfo  # noqa: E402
from context import Context, Settings  # noqa: E402
from pgserver import PgServer, start_postgres  # noqa: E402
from targets import Target  # noqa: E402

ROOT = HERE.parent
PHASES = {
    "cycle": phase_cycle,
    "layers": phase_layers,
    "throughput": phase_throughput,
    "contention": phase_contention,
    "spike": phase_spike,
    "web": phase_web,
    "instructions": phase_instructions,
    "ledger": phase_ledger,
}
#: What a run measures unless ``--phases`` says otherwise: the ledger (~15 runs under
#: callgrind, what each piece of the hot path costs) only when asked for.
DEFAULT_PHASES = [name for name in PHASES if name != "ledger"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: under a minute")
    parser.add_argument("--dsn", help="use this PostgreSQL server instead of a throwaway one")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument(
        "--phases",
        default=",".join(DEFAULT_PHASES),
        help=f"comma-separated subset of {list(PHASES)} (default: all but ledger)",
    )
    parser.add_argument("--pools", help="comma-separated pool keys to run (baselines always run)")
    parser.add_argument("--runs", type=int, help="runs of each phase (default 2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client/server to cores")
    parser.add_argument("--no-postgres", action="store_true", help="sqlite3 only (cycle phase)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="do not fail when a tether pool is not installed/implemented",
    )
    parser.add_argument("--no-gate", action="store_true", help="never fail on a regression")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.quick_run() if args.quick else Settings()
    settings.out_dir = str(args.out)
    if args.runs:
        settings.runs = settings.spike_runs = max(1, args.runs)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        print(f"unknown phases {unknown}; known: {list(PHASES)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    info: dict[str, Any] = {"machine": sysinfo.machine_info(ROOT), "versions": sysinfo.versions()}
    server: PgServer | None = None
    with (
        tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        sqlite = Target("sqlite", sqlite3, {"database": str(Path(tmp) / "bench.sqlite3")})
        pg: Target | None = None
        if not args.no_postgres:
            server = start_postgres(args.dsn)
            stack.callback(server.close)
            import psycopg

            pg = Target("postgresql", psycopg, dict(server.params))
            info["postgres"] = {
                "version": server.version,
                "origin": server.origin,
                "settings": server.settings,
                "server_cpu_measured": server.cpu is not None,
            }
            setup_database(server)
        # Pin after the server started (it must not inherit the client's core).
        client_cpus, server_cpus = sysinfo.pin_client(not args.no_pin)
        pinned_server = bool(server and server_cpus and server.pin(server_cpus))
        info["pinning"] = {
            "client_cpus": sorted(client_cpus) if client_cpus else "not pinned",
            "server_cpus": sorted(server_cpus) if pinned_server and server_cpus else "not pinned",
        }
        only = {p.strip() for p in args.pools.split(",")} if args.pools else None
        ctx = Context(settings=settings, sqlite=sqlite, pg=pg, server=server, only=only)
        ctx.log(
            f"tether benchmarks ({'quick' if args.quick else 'full'}); pinning {info['pinning']}"
        )
        results: dict[str, Any] = {}
        loads: dict[str, Any] = {}
        for name in phases:
            module = PHASES[name]
            if name != "cycle" and pg is None:
                results[name] = {"phase": name, "skipped": "no PostgreSQL (--no-postgres)"}
                continue
            meter = sysinfo.LoadMeter()
            gc.collect()
            results[name] = module.run(ctx)
            loads[name] = meter.stop()
            gc.collect()
        info["load"] = loads
        info["settings"] = settings.__dict__ | {"threads": list(settings.threads)}
        info["elapsed_seconds"] = round(time.monotonic() - started, 1)
    info["machine"]["loadavg_end"] = sysinfo.LoadMeter().stop()["loadavg"]
    verdict = gate.check(results, quick=args.quick, allow_missing=args.allow_missing)
    targets = gate.targets(results)
    document = {"info": info, "results": results, "gate": verdict, "targets": targets}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(
        json.dumps(finite(document), indent=2, default=str, allow_nan=False) + "\n"
    )
    text = report.markdown(document, {name: PHASES[name] for name in results})
    (args.out / "bench.md").write_text(text)
    chart = report.chart(document, args.out / "bench.png")
    print(text)
    print(f"\nwrote {args.out / 'bench.md'}, bench.json{', bench.png' if chart else ''}")
    if verdict["failures"] and not args.no_gate:
        print("\nREGRESSION GATE FAILED:", file=sys.stderr)
        for failure in verdict["failures"]:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def setup_database(server: PgServer) -> None:
    """The web phase's small table."""
    with contextlib.closing(server.admin()) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_items")
        conn.execute("CREATE TABLE bench_items (id int PRIMARY KEY, name text, price numeric)")
        conn.execute(
            "INSERT INTO bench_items"
            " SELECT i, 'item ' || i, i * 1.5 FROM generate_series(1, 1000) i"
        )
        conn.execute("ANALYZE bench_items")
        # the harness's admin connection may be another role: let everybody read it
        conn.execute("GRANT SELECT ON bench_items TO PUBLIC")


if __name__ == "__main__":
    sys.exit(main())
