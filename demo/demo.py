"""tether's main demo: a threaded request loop, with and without connection reuse.

Every request of a threaded server does the same: get a database
connection, run a couple of queries, give the connection back. This demo
runs that loop on N worker threads, once per way of getting the connection:

    connect per request   open a new driver connection for each request, close it after
    simple pool           tether.simple_pool.SimplePooledDB: N connections, lent out
    persistent            tether.persistent.PersistentDB: each thread keeps its own
    pooled                tether.pooled.PooledDB: the full pool (skipped if not installed)

and prints requests per second, latency percentiles and the speed-up over
connecting per request. By default it needs no server: it uses a sqlite3
file database in a temporary directory (where a connect is cheap, so the
speed-ups are modest). Point it at a real server to see what a connect
costs there:

    python demo/demo.py
    python demo/demo.py --dsn postgresql://user:secret@localhost:5432/app   # psycopg
    python demo/demo.py --dsn mysql://user:secret@localhost:3306/app        # PyMySQL
    python demo/demo.py --threads 16 --seconds 5

On a server the demo creates a table ``tether_demo_item``, and drops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tether.persistent import PersistentDB
from tether.simple_pool import SimplePooledDB

PooledDB: Any
try:
    from tether.pooled import PooledDB
except ImportError:  # tether-pooled is optional for this demo
    PooledDB = None
PoolCollector: Any
try:  # tether-pooled[prometheus]: the pooled run prints the metrics it exports
    from prometheus_client import CollectorRegistry, generate_latest

    from tether.pooled.metrics.prometheus import PoolCollector
except ImportError:
    PoolCollector = None
#: The exported lines the demo prints after its runs (the histogram's count and sum).
SHOWN_METRICS = (
    "tether_pool_size",
    "tether_pool_in_use",
    "tether_pool_waiting",
    "tether_pool_checkouts_total",
    "tether_pool_timeouts_total",
    "tether_pool_connects_total",
    "tether_pool_checkout_wait_seconds_count",
    "tether_pool_checkout_wait_seconds_sum",
)

TABLE = "tether_demo_item"
ROWS = 1000


# -- the database -------------------------------------------------------------------------------


@dataclass
class Database:
    """Where to connect: the driver module, its connect() arguments, a printable name."""

    module: Any
    kwargs: dict[str, Any]
    shown: str  # the DSN with the password masked, or the sqlite3 file
    marker: str  # the driver's parameter marker: ? or %s

    def connect(self) -> Any:
        return self.module.connect(**self.kwargs)


def parse_dsn(dsn: str) -> Database:
    """``postgresql://`` (psycopg) or ``mysql://`` (PyMySQL) URL -> a Database."""
    url = urllib.parse.urlsplit(dsn)
    scheme = url.scheme.split("+")[0]
    if scheme in ("postgresql", "postgres"):
        module_name, default_port, database_key = "psycopg", 5432, "dbname"
    elif scheme in ("mysql", "mariadb"):
        module_name, default_port, database_key = "pymysql", 3306, "database"
    else:
        sys.exit(f"--dsn: expected postgresql://... or mysql://..., got {mask(dsn)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        sys.exit(f"--dsn {scheme}:// needs the {module_name} driver: pip install {module_name}")
    kwargs: dict[str, Any] = {
        "host": url.hostname or "localhost",
        "port": url.port or default_port,
    }
    if url.username:
        kwargs["user"] = urllib.parse.unquote(url.username)
    if url.password:
        kwargs["password"] = urllib.parse.unquote(url.password)
    if url.path.strip("/"):
        kwargs[database_key] = urllib.parse.unquote(url.path.strip("/"))
    options = dict(urllib.parse.parse_qsl(url.query))
    if options and module_name != "psycopg":
        sys.exit(f"--dsn: query parameters are only supported for postgresql://, got {mask(dsn)}")
    kwargs.update(options)  # libpq options such as sslmode=require, as strings
    return Database(module, kwargs, mask(dsn), "%s")


def mask(dsn: str) -> str:
    """The DSN with its password replaced by ***."""
    url = urllib.parse.urlsplit(dsn)
    if url.password is None:
        return dsn
    netloc = f"{url.username}:***@{url.hostname}" + (f":{url.port}" if url.port else "")
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


@contextlib.contextmanager
def demo_database(dsn: str | None) -> Iterator[Database]:
    """The database to run on, with the demo table filled; cleaned up afterwards."""
    if dsn is None:
        import sqlite3

        with tempfile.TemporaryDirectory(prefix="tether-demo-") as tmp:
            path = os.path.join(tmp, "demo.sqlite3")
            # check_same_thread=False: the pools hand a connection from thread to thread.
            db = Database(sqlite3, {"database": path, "check_same_thread": False}, path, "?")
            create_table(db, wal=True)
            yield db
        return
    db = parse_dsn(dsn)
    try:
        create_table(db, wal=False)
    except Exception as exc:  # driver messages do not contain the password
        sys.exit(f"could not set up {db.shown}: {type(exc).__name__}: {exc}")
    try:
        yield db
    finally:
        with contextlib.closing(db.connect()) as con:
            con.cursor().execute(f"DROP TABLE IF EXISTS {TABLE}")
            con.commit()


def create_table(db: Database, *, wal: bool) -> None:
    with contextlib.closing(db.connect()) as con:
        cur = con.cursor()
        if wal:  # sqlite3: readers do not wait for each other's locks
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name VARCHAR(40), price INTEGER)"
        )
        m = db.marker
        cur.executemany(
            f"INSERT INTO {TABLE} (id, name, price) VALUES ({m}, {m}, {m})",
            [(i, f"item {i}", (i * 7919) % 1000) for i in range(ROWS)],
        )
        con.commit()


# -- the request --------------------------------------------------------------------------------


def request(con: Any, marker: str, n: int) -> None:
    """What one request does with its connection: two small queries, then commit."""
    cur = con.cursor()
    cur.execute(f"SELECT name, price FROM {TABLE} WHERE id = {marker}", (n % ROWS,))
    cur.fetchall()
    cur.execute(f"SELECT count(*) FROM {TABLE} WHERE price < {marker}", (n % 1000,))
    cur.fetchall()
    cur.close()
    con.commit()  # ends the read transaction a DB-API driver opened implicitly


# -- the ways of getting a connection -----------------------------------------------------------


@dataclass
class Way:
    """One way of getting connections: ``checkout()`` gives one; ``con.close()`` gives it back.

    ``close()`` shuts the way down (closes the pool) once its run is over.
    """

    name: str
    checkout: Callable[[], Any]
    close: Callable[[], None] = lambda: None
    #: The metrics the way exports, as Prometheus' text format (pooled only), or None.
    metrics: Callable[[], str] | None = None


def connect_per_request(db: Database, threads: int) -> Way:
    return Way("connect per request", db.connect)  # con.close() really closes


def simple_pool(db: Database, threads: int) -> Way:
    pool = SimplePooledDB(db.module, threads, **db.kwargs)  # opens `threads` connections
    return Way(f"simple pool ({threads} conns)", pool.connection, pool.close)


def persistent(db: Database, threads: int) -> Way:
    # ping=0: no liveness round trip per request. A steady connection still notices a
    # lost session when a statement fails and reopens it, outside transactions.
    # con.close() is ignored: the thread keeps its connection for its next request.
    # Each thread opens its connection on its first request, inside the timed run; the
    # connections close when the worker threads end.
    persist = PersistentDB(db.module, ping=0, **db.kwargs)
    return Way("persistent (1 per thread)", persist.connection, persist.close)


def pooled(db: Database, threads: int) -> Way:
    assert PooledDB is not None
    collector = registry = None
    if PoolCollector is not None:  # export what an operator would scrape
        registry = CollectorRegistry()
        collector = PoolCollector(registry=registry)
    pool = PooledDB(
        db.module,
        mincached=threads,
        maxcached=threads,
        maxconnections=threads,
        blocking=True,
        ping=0,
        name="demo",
        on_event=collector.on_event if collector is not None else None,
        **db.kwargs,
    )
    if collector is None:
        return Way(f"pooled ({threads} max)", pool.connection, pool.close)
    collector.watch(pool)
    return Way(
        f"pooled ({threads} max)",
        pool.connection,
        pool.close,
        lambda: generate_latest(registry).decode(),
    )


# -- running and measuring ----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def run_way(way: Way, db: Database, threads: int, seconds: float, requests: int | None) -> Result:
    """Run the request loop on ``threads`` threads until time or the request budget is up."""
    result = Result(way.name)
    lock = threading.Lock()
    issued = [0]
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker() -> None:
        mine: list[float] = []
        start.wait()
        try:
            while time.perf_counter() < deadline[0]:
                with lock:
                    if requests is not None and issued[0] >= requests:
                        break
                    issued[0] += 1
                    n = issued[0]
                began = time.perf_counter()
                con = way.checkout()
                try:
                    request(con, db.marker, n)
                finally:
                    con.close()  # give it back (or really close it, per request)
                mine.append(time.perf_counter() - began)
        except Exception as exc:  # report it with the results, keep the other ways running
            with lock:
                result.errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            result.latencies.extend(mine)

    workers = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in workers:
        thread.join()
    result.elapsed = time.perf_counter() - began
    return result


def print_table(results: list[Result]) -> None:
    base = results[0].rate if results and results[0].rate else None
    header = f"{'way':<28}{'requests':>10}{'req/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(header + f"{'speed-up':>10}")
    print("-" * (len(header) + 10))
    for r in results:
        speedup = f"{r.rate / base:.1f}x" if base else "-"
        print(
            f"{r.name:<28}{len(r.latencies):>10}{r.rate:>11.0f}"
            f"{r.percentile(50):>9.2f}{r.percentile(95):>9.2f}{r.percentile(99):>9.2f}"
            f"{speedup:>10}"
        )
        for error in sorted(set(r.errors)):
            print(f"    error: {error}")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Run a threaded request loop (get a connection, two SELECTs, commit, give it
            back) four ways: a new connection per request, tether's simple pool,
            persistent per-thread connections and tether's full pool. Print requests/s,
            latency percentiles and the speed-up over connecting per request.
            """
        ),
        epilog=textwrap.dedent(
            """\
            Without --dsn the demo uses a sqlite3 file in a temporary directory: no server
            needed, but a sqlite3 connect is cheap, so the speed-ups are modest.

            examples:
              %(prog)s
              %(prog)s --threads 16 --seconds 5
              %(prog)s --dsn postgresql://app:secret@localhost:5432/app
              %(prog)s --dsn mysql://app:secret@127.0.0.1:3306/app --requests 5000
            """
        ),
    )
    parser.add_argument(
        "--dsn",
        metavar="URL",
        help=(
            "run on a server instead: postgresql://user:password@host:port/db (psycopg)"
            " or mysql://user:password@host:port/db (PyMySQL). The demo creates and"
            f" drops a table {TABLE}. The password is never printed."
        ),
    )
    parser.add_argument(
        "--threads", type=positive_int, default=8, metavar="N", help="worker threads (default: 8)"
    )
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="how long each way runs, in seconds (default: 3)",
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop each way after this many requests, if that comes before --seconds",
    )
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ways: list[Callable[[Database, int], Way]] = [connect_per_request, simple_pool, persistent]
    if PooledDB is not None:
        ways.append(pooled)
    with demo_database(args.dsn) as db:
        driver = db.module.__name__
        budget = f", at most {args.requests} requests" if args.requests else ""
        print(f"tether demo: {driver} on {db.shown}")
        print(
            f"{args.threads} threads, {args.seconds:g} s per way{budget}; each request:"
            " get a connection, 2 SELECTs, commit, give it back\n"
        )
        results: list[Result] = []
        exported: list[str] = []
        for make in ways:
            try:
                way = make(db, args.threads)
            except Exception as exc:  # report it, and go on with the other ways
                results.append(Result(make.__name__, errors=[f"{type(exc).__name__}: {exc}"]))
                continue
            try:
                results.append(run_way(way, db, args.threads, args.seconds, args.requests))
                if way.metrics is not None:
                    exported = [
                        line
                        for line in way.metrics().splitlines()
                        if line.startswith(SHOWN_METRICS)
                    ]
            finally:
                way.close()
        print_table(results)
        if exported:
            print("\npooled: what tether.pooled.metrics.prometheus exports (a few of its lines):")
            for line in exported:
                print(f"    {line}")
    if PooledDB is None:
        print("\npooled: skipped (tether.pooled is not installed: pip install tether-pooled)")
    if args.dsn is None:
        print(
            "\nsqlite3 connects in microseconds; on a server a connect costs milliseconds"
            " (try --dsn postgresql://...)."
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
