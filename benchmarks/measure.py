"""Measurement machinery shared by the phases: statistics and a pool of long-lived threads.

Threads are started once per phase and reused for every pool (as a web
server's worker threads are), so thread-affine pools keep their per-thread
connections and thread start-up is never measured. A measurement warms up
until every active thread has finished a request, then counts only the
requests that start and end inside the timed window.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sysinfo import client_cpu

__all__ = ["Window", "Workers", "median", "percentile", "share_stats"]

perf = time.perf_counter


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def share_stats(counts: Sequence[int]) -> dict[str, float]:
    """Each thread's share of the requests relative to a fair share (1.0 = fair)."""
    total = sum(counts)
    if not counts or total == 0:
        return {"min_share": math.nan, "max_share": math.nan, "jain": math.nan}
    fair = total / len(counts)
    squares = sum(c * c for c in counts)
    return {
        "min_share": min(counts) / fair,
        "max_share": max(counts) / fair,
        # Jain's fairness index: 1.0 when all equal, 1/n when one thread gets everything.
        "jain": total * total / (len(counts) * squares),
    }


# A request: run one unit of work, return the checkout wait in seconds (or 0.0).
Request = Callable[[], float]


class Window:
    """The result of one timed window."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.waits: list[float] = []
        #: Waits still going on when the window closed (threads starved by the pool).
        self.censored: list[float] = []
        #: Threads that had not finished a single request when the window opened.
        self.unwarmed = 0
        self.seconds = 0.0
        self.client_cpu = 0.0
        self.server_cpu: float | None = None
        self.errors = 0
        self.first_error: str | None = None

    @classmethod
    def merge(cls, windows: Sequence[Window]) -> Window:
        """Several windows of the same pool and thread count as one (counts per thread add)."""
        out = cls()
        if not windows:
            return out
        out.counts = [sum(c) for c in zip(*(w.counts for w in windows))]
        out.waits = [x for w in windows for x in w.waits]
        out.censored = [x for w in windows for x in w.censored]
        out.unwarmed = max(w.unwarmed for w in windows)
        out.seconds = sum(w.seconds for w in windows)
        out.client_cpu = sum(w.client_cpu for w in windows)
        servers = [w.server_cpu for w in windows]
        out.server_cpu = None if None in servers else sum(s for s in servers if s is not None)
        out.errors = sum(w.errors for w in windows)
        out.first_error = next((w.first_error for w in windows if w.first_error), None)
        return out

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else math.nan

    def cpu_per_request_us(self) -> tuple[float, float | None]:
        n = self.total
        if not n:
            return math.nan, None
        server = None if self.server_cpu is None else self.server_cpu / n * 1e6
        return self.client_cpu / n * 1e6, server


class _Job:
    def __init__(self, n: int, make_request: Callable[[int], Request], record_waits: bool) -> None:
        self.n = n
        self.make_request = make_request
        self.record_waits = record_waits
        self.t_start = math.inf
        self.t_end = math.inf
        self.stop = False
        self.lock = threading.Lock()
        self.warmed = 0
        self.done = 0
        self.all_done = threading.Event()
        self.all_warm = threading.Event()
        self.counts = [0] * n
        self.waits: list[list[float]] = [[] for _ in range(n)]
        self.errors = 0
        self.first_error: str | None = None


class Workers:
    """Up to ``max_threads`` daemon threads that run jobs handed to the first ``n``."""

    def __init__(self, max_threads: int) -> None:
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._generation = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"bench-{i}", daemon=True)
            for i in range(max_threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        seen = 0
        while True:
            with self._cond:
                while self._generation == seen and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                seen = self._generation
                job = self._job
            if job is None or index >= job.n:
                continue
            self._work(job, index)

    @staticmethod
    def _work(job: _Job, index: int) -> None:
        count = 0
        waits = job.waits[index]
        warmed = False
        try:
            request = job.make_request(index)
        except Exception as exc:
            request = None
            with job.lock:
                job.errors += 1
                job.first_error = job.first_error or repr(exc)
        while request is not None and not job.stop:
            try:
                wait = request()
                ok = True
            except Exception as exc:
                ok = False
                with job.lock:
                    job.errors += 1
                    job.first_error = job.first_error or repr(exc)
                time.sleep(0.001)
            end = perf()
            if not warmed:  # the first request (or failure) of this thread is over
                warmed = True
                with job.lock:
                    job.warmed += 1
                    if job.warmed == job.n:
                        job.all_warm.set()
            # Throughput counts completions inside the window (a long request that
            # started before it still counts once, as in any steady-state rate).
            if ok and job.t_start <= end <= job.t_end:
                count += 1
                if job.record_waits:
                    waits.append(wait)
        job.counts[index] = count
        with job.lock:
            job.done += 1
            if not warmed:
                job.warmed += 1
                if job.warmed == job.n:
                    job.all_warm.set()
            if job.done == job.n:
                job.all_done.set()

    def measure(
        self,
        n: int,
        make_request: Callable[[int], Request],
        *,
        warmup: float,
        duration: float,
        server_cpu: Callable[[], float] | None = None,
        record_waits: bool = False,
        waiting: list[float] | None = None,
        warm_timeout: float = 5.0,
        stop_timeout: float = 60.0,
    ) -> Window:
        """Run ``make_request(i)()`` in a loop on threads 0..n-1; time one window.

        The window opens ``warmup`` seconds after every thread finished its first
        request, or after ``warm_timeout`` when a pool starves some threads.
        ``waiting[i]``, if given, is when thread i started waiting for a
        checkout (inf when it is not waiting): the waits still open when the
        window closes are reported as ``censored``.
        """
        if n > len(self._threads):
            raise ValueError(f"{n} threads asked, {len(self._threads)} started")
        job = _Job(n, make_request, record_waits)
        with self._cond:
            self._job = job
            self._generation += 1
            self._cond.notify_all()
        result = Window()
        try:
            job.all_warm.wait(warm_timeout)
            with job.lock:
                result.unwarmed = n - job.warmed
            time.sleep(warmup)
            cpu0 = client_cpu()
            srv0 = server_cpu() if server_cpu else None
            job.t_start = t0 = perf()
            time.sleep(duration)
            job.t_end = t1 = perf()
            if waiting is not None:
                result.censored = [t1 - since for since in waiting[:n] if since < t1]
            cpu1 = client_cpu()
            srv1 = server_cpu() if server_cpu else None
        finally:
            job.stop = True
            job.all_done.wait(stop_timeout)
        result.counts = list(job.counts)
        result.waits = [w for ws in job.waits for w in ws]
        result.seconds = t1 - t0
        # The CPU window is slightly wider than the timed one (it includes reading /proc).
        result.client_cpu = cpu1 - cpu0
        if srv0 is not None and srv1 is not None:
            result.server_cpu = srv1 - srv0
        result.errors = job.errors
        result.first_error = job.first_error
        return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)


def db_request(
    adapter: Any, sql: str, *, waiting: list[float] | None = None, index: int = 0
) -> Request:
    """checkout -> execute ``sql`` -> fetch -> checkin through ``adapter``.

    With ``waiting``, the checkout is timed (the request returns its wait) and
    ``waiting[index]`` holds the moment the wait began while it lasts.
    """
    checkout, checkin, connection = adapter.checkout, adapter.checkin, adapter.connection

    if waiting is not None:
        inf = math.inf

        def timed_request() -> float:
            waiting[index] = t0 = perf()
            try:
                handle = checkout()
            finally:
                t1 = perf()
                waiting[index] = inf
            try:
                cursor = connection(handle).cursor()
                cursor.execute(sql)
                cursor.fetchall()
                cursor.close()
            finally:
                checkin(handle)
            return t1 - t0

        return timed_request

    def request() -> float:
        handle = checkout()
        try:
            cursor = connection(handle).cursor()
            cursor.execute(sql)
            cursor.fetchall()
            cursor.close()
        finally:
            checkin(handle)
        return 0.0

    return request
