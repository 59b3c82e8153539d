"""The program the instructions phase runs under callgrind: N requests through one pool.

    TETHER_BENCH_PG='{"host": ..., "port": ...}' \\
        valgrind --tool=callgrind --callgrind-out-file=F \\
        python callgrind_requests.py CONFIGURATION WORKLOAD N

Opens one configuration of :data:`CONFIGURATIONS` (the driver connection
held, the floor, a tether.steady connection held, or a pool of size 1) on
the PostgreSQL server in ``TETHER_BENCH_PG`` (JSON connect keywords, in the
environment so no password is on a command line), warms it up, then runs
``N`` times one unit of :data:`WORKLOADS`:

- ``request``: checkout, ``cursor()``, ``execute("SELECT 1")``, ``fetchone()``,
  cursor ``close()``, checkin; statements back to back.
- ``request-gap``: the same with statements more than tether.steady's
  ``ALIVE_BYPASS`` apart (the first statement of most web requests).
- ``request-txn``: ``request`` with autocommit off, back to back: the
  statement opens a transaction that the pool must roll back at checkin
  (the driver and steady held: ``rollback()`` after each request, the
  application's job there). What a web request that only reads and never
  commits costs.
- ``cycle``: checkout and checkin alone, no statement.

It prints nothing of its own: the instructions phase reads callgrind's
total from ``F`` and takes the slope between two ``N`` (start-up cancels).

**The clock.** Whether a statement is "back to back" is decided by
``time.monotonic()`` in tether.steady, and under callgrind everything runs
~50x slower: real back-to-back statements would be milliseconds apart there
and take the gap path. Sleeping for the gap would be no better (it only
counts what ran, but makes the run long). So when this file runs as
the worker, before anything but the standard library is imported,
``time.monotonic`` is replaced (:func:`install_clock`; never on import) by a
clock the loop sets: it stands still during a request and moves on between requests by
:data:`BACK_TO_BACK` (well inside ``ALIVE_BYPASS``) or :data:`GAP` (past it).
It replaces the module attribute, so code that looks it up at call time and
code that did ``from time import monotonic`` at import both see it: no
private attribute of any package is touched. tether.steady has no public
clock seam; this is the public one every package shares. ``threading``
is imported first and keeps the real clock (its timed waits must end).
The fake clock is a C-level ``functools.partial(operator.getitem, [t], 0)``:
a few dozen instructions a call, like the real one, in every configuration
alike, so it cancels in "added over the driver alone".
"""

from __future__ import annotations

import functools
import json
import operator
import os
import sys
import threading  # (imported before the clock is replaced: it keeps the real one)
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The worker's clock (see the module docstring); installed by :func:`install_clock`.
_NOW = [time.monotonic()]

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

__all__ = ["BACK_TO_BACK", "CONFIGURATIONS", "GAP", "WORKLOADS", "main"]

SQL = "SELECT 1"
#: Seconds the clock moves between two requests "back to back" (a tight loop's order).
BACK_TO_BACK = 20e-6
#: Seconds between requests in ``request-gap``: twice tether.steady's ALIVE_BYPASS
#: (1 ms), so every first statement finds the session idle past the bypass window,
#: but far below any pool's idle check (tether.pooled's ping_after is 1 s,
#: psycopg_pool's max_idle 10 min): the two variants differ by the per-statement
#: aliveness check alone. Checked against the installed ALIVE_BYPASS at start.
GAP = 0.002
#: Requests run before the measured ones: psycopg prepares a statement the 5th time.
WARMUP = 50

#: In this order in every process: a workload's count depends a little on what ran
#: before it in the same process (see the benchmarks README), so the newest is last.
WORKLOADS = ("request", "request-gap", "cycle", "request-txn", "request-contended")

#: ``request-contended``: two threads on a pool of one connection, so every
#: checkout waits and every checkin hands over (a pool above its size, as at
#: 16 or 64 threads on 8). Only pools that make a thread wait for a shared
#: connection run it: a thread-affine pool would give each thread its own.
CONTENDED = frozenset(
    {"fair hand-off", "tether.pooled", "psycopg_pool getconn/putconn", "DBUtils PooledDB"}
)

#: configuration -> (what it is, whether it has a checkout: the cycle workload)
CONFIGURATIONS: dict[str, tuple[str, bool]] = {
    "driver": ("psycopg connection held (the driver alone)", False),
    "floor": ("a deque and a 2-slot proxy around it (the floor)", True),
    "fair hand-off": ("a fair hand-off, nothing checked (pools.FairHandoff)", True),
    "tether.steady": ("tether.steady connection held", False),
    "tether.pooled": ("tether.pooled", True),
    "tether.persistent": ("tether.persistent", True),
    "tether.simple_pool": ("tether.simple_pool", True),
    "psycopg_pool getconn/putconn": ("psycopg_pool getconn/putconn", True),
    "DBUtils PooledDB": ("DBUtils PooledDB", True),
    "DBUtils PersistentDB": ("DBUtils PersistentDB", True),
}


class _FloorProxy:
    """One checkout of the floor: gives the connection back on close(), nothing else."""

    __slots__ = ("_con", "_pool")
    _con: Any
    _pool: Any

    def cursor(self) -> Any:
        return self._con.cursor()

    def close(self) -> None:
        con = self._con
        if con is not None:
            self._con = None
            self._pool.append(con)


class _FloorTxnProxy(_FloorProxy):
    """The floor with autocommit off: close() rolls back, nothing else is checked."""

    __slots__ = ()

    def close(self) -> None:
        con = self._con
        if con is not None:
            self._con = None
            con.rollback()
            self._pool.append(con)


def _floor_checkout(pool: Any, cls: type[_FloorProxy] = _FloorProxy) -> _FloorProxy:
    proxy = cls.__new__(cls)
    proxy._pool = pool
    proxy._con = pool.pop()
    return proxy


def _statement(con: Any) -> None:
    cursor = con.cursor()
    cursor.execute(SQL)
    cursor.fetchone()
    cursor.close()


def _statement_rollback(con: Any) -> None:
    _statement(con)
    con.rollback()


def _open(
    name: str, statement: bool, autocommit: bool = True
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The unit of work for configuration ``name`` (with or without the statement), a closer.

    ``autocommit=False``: the connections are opened with autocommit off; where
    no pool ends the transaction (the driver, steady held), the unit rolls back.
    """
    import psycopg
    from pools import (
        DBUtilsPersistent,
        DBUtilsPooled,
        FairHandoff,
        PoolAdapter,
        PsycopgPool,
        TetherPersistent,
        TetherPooled,
        TetherSimplePool,
    )
    from targets import Target

    params = json.loads(os.environ["TETHER_BENCH_PG"])
    target = Target(
        "postgresql",
        psycopg,
        {**params, "application_name": "tether-bench-instr"},
        autocommit=autocommit,
    )
    request = _statement if autocommit else _statement_rollback
    if name in ("driver", "tether.steady"):
        if name == "tether.steady":
            from tether.steady import connect

            held = connect(target.creator())
            variant = os.environ.get("TETHER_BENCH_ABLATE")
            if variant:
                import ablation

                if ablation.VARIANTS[variant].on_driver:
                    raw = held.dbapi_connection  # the ledger: no tether code per request
                    return (lambda: request(raw)), held.close
        else:
            held = target.connect()
            variant = os.environ.get("TETHER_BENCH_ABLATE")
            if variant:
                import ablation

                if ablation.VARIANTS[variant].adds_dict_read:
                    from tether.simple_pool import instance_dict

                    instance_dict(held)  # as tether.steady's forwarding class does, once
        return (lambda: request(held)), held.close
    if name == "floor":
        pool: deque[Any] = deque([target.connect()])
        proxy_class = _FloorProxy if autocommit else _FloorTxnProxy

        def floor() -> None:
            proxy = _floor_checkout(pool, proxy_class)
            _statement(proxy)
            proxy.close()

        def floor_cycle() -> None:
            _floor_checkout(pool).close()

        return (floor if statement else floor_cycle), pool[0].close
    kinds: dict[str, type[PoolAdapter]] = {
        "fair hand-off": FairHandoff,
        "tether.pooled": TetherPooled,
        "tether.persistent": TetherPersistent,
        "tether.simple_pool": TetherSimplePool,
        "psycopg_pool getconn/putconn": PsycopgPool,
        "DBUtils PooledDB": DBUtilsPooled,
        "DBUtils PersistentDB": DBUtilsPersistent,
    }
    # The pools are opened as every other phase opens them (pools.py: defaults,
    # size 1 here); the request then calls each pool's own API, not the adapter.
    adapter = kinds[name]()
    adapter.open(target, size=1)
    adapter.prewarm()
    if name in ("fair hand-off", "psycopg_pool getconn/putconn"):
        # Pools whose checkin takes the connection: the adapter's own two calls
        # (the fair hand-off's API), psycopg_pool's getconn()/putconn().
        getconn, putconn = (
            (adapter.checkout, adapter.checkin)
            if name == "fair hand-off"
            else (adapter.pool.getconn, adapter.pool.putconn)
        )

        def peer() -> None:
            con = getconn()
            _statement(con)
            putconn(con)

        def peer_cycle() -> None:
            putconn(getconn())

        return (peer if statement else peer_cycle), adapter.close
    connection = adapter.pool.connection

    def dbutils_shaped() -> None:
        con = connection()
        _statement(con)
        con.close()

    def dbutils_shaped_cycle() -> None:
        connection().close()

    return (dbutils_shaped if statement else dbutils_shaped_cycle), adapter.close


def main(argv: list[str]) -> int:
    """``CONFIGURATION N1 N2 WORKLOAD...``: per workload, warm up, then N1 and N2 units."""
    try:
        name, n1, n2, workloads = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    except (IndexError, ValueError):
        name, n1, n2, workloads = "", 0, 0, []
    if name not in CONFIGURATIONS or not workloads or not set(workloads) <= set(WORKLOADS):
        print(f"usage: CONFIGURATION N1 N2 WORKLOAD... ({list(CONFIGURATIONS)}, {WORKLOADS})")
        return 2
    try:
        from tether.steady.core import ALIVE_BYPASS
    except ImportError as exc:
        print(f"{NOT_IMPORTABLE}: {exc}", file=sys.stderr)
        return 3
    if not BACK_TO_BACK < ALIVE_BYPASS < GAP:
        print(f"ALIVE_BYPASS is {ALIVE_BYPASS}: adjust BACK_TO_BACK/GAP", file=sys.stderr)
        return 2
    variant = os.environ.get("TETHER_BENCH_ABLATE")
    if variant:  # the ledger phase: one piece of tether's hot path taken out (ablation.py)
        import ablation

        ablation.apply(variant)
    plan: list[tuple[str, int]] = []  # what ran in each part callgrind dumps
    for workload in workloads:
        if workload == "cycle" and not CONFIGURATIONS[name][1]:
            continue
        if workload == "request-contended" and name not in CONTENDED:
            continue
        try:
            unit, close = _open(name, workload != "cycle", workload != "request-txn")
        except ImportError as exc:
            print(f"{NOT_IMPORTABLE}: {exc}", file=sys.stderr)
            return 3
        step = GAP if workload == "request-gap" else BACK_TO_BACK
        run = _run_two_threads if workload == "request-contended" else _run
        try:
            run(unit, WARMUP, step)
            for n in (n1, n2):
                mark()  # ends the part before: start-up, warm-up or the previous segment
                plan.append((workload, n))
                run(unit, n, step)
            mark()
        finally:
            close()
    print(json.dumps({"configuration": name, "plan": plan}))
    return 0


#: Printed when a package is missing (the phase reports the row as not importable).
NOT_IMPORTABLE = "not importable"


def mark() -> None:
    """End a part: callgrind (``--dump-before=getppid``) dumps and zeroes its counts here.

    Nothing else in the measured programs calls getppid(); the phase checks
    that it got exactly the parts :func:`main` announced.
    """
    os.getppid()


def _run(unit: Callable[[], None], n: int, step: float) -> None:
    now = _NOW
    for _ in range(n):
        now[0] += step
        unit()


def _run_two_threads(unit: Callable[[], None], n: int, step: float) -> None:
    """``n`` units in all, half on each of two threads started together."""
    go = threading.Event()

    def half() -> None:
        go.wait()
        _run(unit, n // 2, step)

    workers = [threading.Thread(target=half) for _ in range(2)]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join()


def install_clock() -> None:
    """Replace ``time.monotonic`` by the clock :func:`_run` moves: in the worker process only.

    Never on import: the benchmark runner imports this module for its
    constants, and its own phases need the real clock.
    """
    _NOW[0] = time.monotonic()
    time.monotonic = functools.partial(operator.getitem, _NOW, 0)  # type: ignore[assignment]


if __name__ == "__main__":
    install_clock()  # before main() imports psycopg, the pools and tether
    sys.exit(main(sys.argv[1:]))
