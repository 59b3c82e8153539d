"""A database outage under load, measured: does a pool come back, and stay back?

:func:`run_outage` runs ``workers`` threads doing what an application does
(check a connection out, ``begin()``, an INSERT, ``commit()``, give it
back), stops the server for ``down`` seconds, starts it again and keeps the
load going. It returns every transaction's end time and outcome, with the
commit and error rates before the fault and after the server is back
(:class:`OutageRun`), so a test can require that the pool not only recovers
once but stays healthy: no error and the commit rate back, from a bound
after the restart until the end of the run.

Each transaction pauses ``think`` seconds between ``begin()`` and its
statement (the application computing something): the outage then usually
hits a connection that has begun a transaction whose first statement
has not been sent yet, which is where a driver that BEGINs lazily (PyGreSQL's
``pgdb``) meets a dead session for the first time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .servers import ShutdownMode
from .targets import DriverTarget

__all__ = ["OutageRun", "run_outage"]

log = logging.getLogger("tether.harness.outage")


@dataclass
class OutageRun:
    """The transactions of one run (``(end, ok, error)``, monotonic seconds) and its schedule."""

    started: float
    stopped_at: float
    back_at: float
    ended: float
    events: list[tuple[float, bool, str]] = field(default_factory=list)

    def commits(self, start: float, end: float) -> int:
        return sum(1 for t, ok, _ in self.events if ok and start <= t < end)

    def errors(self, start: float, end: float) -> list[str]:
        return [e for t, ok, e in self.events if not ok and start <= t < end]

    @property
    def rate_before(self) -> float:
        """Commits per second over the load before the fault (its first 0.3 s left out)."""
        start = self.started + 0.3
        return self.commits(start, self.stopped_at) / max(1e-9, self.stopped_at - start)

    def rate_after(self, bound: float) -> float:
        """Commits per second from ``bound`` seconds after the server was back to the end."""
        start = self.back_at + bound
        return self.commits(start, self.ended) / max(1e-9, self.ended - start)

    def errors_after(self, bound: float) -> list[str]:
        """The errors from ``bound`` seconds after the server was back to the end."""
        return self.errors(self.back_at + bound, self.ended + 1.0)

    def describe(self, bound: float) -> str:
        """Commits and errors per 0.5 s from the start, and the rates, for an assertion message."""
        bins: list[str] = []
        t = self.started
        while t < self.ended:
            failed = len(self.errors(t, t + 0.5))
            bins.append(f"{t - self.started:.1f}s {self.commits(t, t + 0.5)}/{failed}")
            t += 0.5
        late = self.errors_after(bound)
        kinds = sorted(set(late))[:3]
        return (
            f"down {self.stopped_at - self.started:.2f}-{self.back_at - self.started:.2f} s;"
            f" commits/errors per 0.5 s: {', '.join(bins)}; rate before {self.rate_before:.0f}/s,"
            f" after +{bound:g} s {self.rate_after(bound):.0f}/s; {len(late)} late errors {kinds}"
        )


def run_outage(
    connection: Callable[[], Any],
    target: DriverTarget,
    *,
    workers: int = 4,
    warmup: float = 1.5,
    down: float = 2.0,
    after: float = 4.0,
    mode: ShutdownMode = "fast",
    think: float = 0.005,
) -> OutageRun:
    """Load through ``connection()`` (a pool's checkout) while ``target``'s server is down.

    ``connection()`` returns a connection whose ``close()`` gives it back. The
    server is stopped (``mode``) after ``warmup`` seconds and started again
    ``down`` seconds later; the load goes on ``after`` seconds more.
    """
    server = target.server
    if server is None:
        raise ValueError(f"target: {target!r} has no server to stop")
    table = target.unique_table("outage")
    server.admin_execute(f"CREATE TABLE {table} (k varchar(40) NOT NULL, w int NOT NULL)")
    insert = f"INSERT INTO {table} (k, w) VALUES ({target.placeholders(2)})"
    events: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def transaction(worker: int, seq: int) -> None:
        db = connection()
        try:
            db.begin()
            time.sleep(think)
            params = [f"{worker}-{seq}", worker]
            if target.name == "pg":
                db.query(insert, params)
            else:
                cursor = db.cursor()
                try:
                    cursor.execute(insert, tuple(params))
                finally:
                    cursor.close()
            db.commit()
        except BaseException:
            try:
                db.rollback()
            except Exception as exc:
                log.debug("rollback failed: %r", exc)
            raise
        finally:
            db.close()

    def work(worker: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                transaction(worker, seq)
            except Exception as exc:
                events.append((time.monotonic(), False, f"{type(exc).__name__}: {exc}"[:120]))
                time.sleep(0.01)
            else:
                events.append((time.monotonic(), True, ""))

    threads = [
        threading.Thread(target=work, args=(i,), name=f"outage-{i}", daemon=True)
        for i in range(workers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(warmup)
        stopped_at = time.monotonic()
        server.stop(mode)
        time.sleep(down)
        server.start()
        back_at = time.monotonic()
        time.sleep(after)
    finally:
        stop.set()
        ended = time.monotonic()
        server.ensure_running()
        for thread in threads:
            thread.join(10.0)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"{sum(t.is_alive() for t in threads)} worker(s) hung")
    return OutageRun(started, stopped_at, back_at, ended, events)
