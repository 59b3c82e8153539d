"""What every phase gets: the settings of the run, the databases and the pool adapters."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from pgserver import PgServer
from pools import PoolAdapter, adapters
from targets import Target

__all__ = ["Context", "Settings", "fmt"]


@dataclasses.dataclass
class Settings:
    """Sizes and durations of every phase; ``quick()`` fits CI's one-minute budget."""

    quick: bool = False
    runs: int = 2
    #: where the report goes (phases may write extra files there: the layers profile)
    out_dir: str = ""
    # cycle
    cycle_reps: int = 15
    cycle_batch: float = 0.02  # seconds per batch of cycles
    # throughput
    threads: tuple[int, ...] = (1, 4, 16, 64)
    threads_autocommit_off: tuple[int, ...] = (1, 4, 16, 64)
    pool_size: int = 8
    warmup: float = 0.05
    #: timed windows per pool, thread count and run (interleaved), and each one's length
    windows: int = 2
    duration: float = 0.3
    #: longest wait for every thread's first request before the window opens anyway
    warm_timeout: float = 1.0
    #: connect-per-request opens a connection per request: only up to this many threads
    per_request_max_threads: int = 64
    # contention
    contention_threads: int = 64
    contention_duration: float = 0.6
    # spike (HikariCP's test)
    spike_threads: int = 50
    spike_max: int = 50
    spike_min_idle: int = 5
    spike_connect_delay: float = 0.150
    spike_query_seconds: float = 0.002
    spike_settle: float = 1.0
    spike_runs: int = 2
    # web
    web_clients: int = 16
    web_duration: float = 1.0
    # instructions (callgrind): the two request counts the slope is taken between
    instructions_n: tuple[int, int] = (2000, 4000)

    @classmethod
    def quick_run(cls) -> Settings:
        return cls(
            quick=True,
            cycle_reps=7,
            cycle_batch=0.005,
            warmup=0.02,
            windows=1,
            duration=0.08,
            threads_autocommit_off=(4,),
            contention_duration=0.2,
            per_request_max_threads=4,
            warm_timeout=0.2,
            # DBUtils and peewee open connections one at a time under a lock: 45 x 150 ms
            # per run would not fit a minute. The full run uses HikariCP's 150 ms.
            spike_connect_delay=0.01,
            spike_runs=1,  # the spike test is reported, not gated
            spike_settle=0.15,
            web_duration=0.25,
            instructions_n=(500, 1000),
        )


@dataclasses.dataclass
class Context:
    settings: Settings
    sqlite: Target
    pg: Target | None
    server: PgServer | None
    only: set[str] | None = None  # restrict to these adapter keys (and the baselines)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def new_adapters(
        self, *, validated: bool = False, where: Callable[[PoolAdapter], bool] | None = None
    ) -> list[PoolAdapter]:
        """Fresh adapter instances (each phase opens its own pools)."""
        out = []
        for adapter in adapters(validated=validated):
            if self.only and adapter.family != "baseline" and adapter.key not in self.only:
                continue
            if where is None or where(adapter):
                out.append(adapter)
        return out

    def server_cpu(self) -> Callable[[], float] | None:
        if self.server is None or self.server.cpu is None:
            return None
        return self.server.cpu.seconds

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a markdown cell ("-" for missing or NaN)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)
