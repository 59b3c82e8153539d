"""The machine a run happened on: hardware, versions, CPU pinning and load."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["LoadMeter", "client_cpu", "machine_info", "pin_client", "versions"]

#: Distributions whose versions every report shows.
DISTRIBUTIONS = [
    "tether-simple-pool",
    "tether-steady",
    "tether-persistent",
    "tether-pooled",
    "DBUtils",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "SQLAlchemy",
    "peewee",
    "matplotlib",
]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import sqlite3

    out["sqlite (library)"] = sqlite3.sqlite_version
    with contextlib.suppress(Exception):
        import psycopg

        out["libpq"] = str(psycopg.pq.version())
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(root: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info(root: Path) -> dict[str, Any]:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory": mem,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "git": _git(root),
        "loadavg_start": _loadavg(),
    }


def pin_client(enabled: bool) -> tuple[set[int] | None, set[int] | None]:
    """Pin this process to one CPU; return (client CPUs, the CPUs left for the server).

    Only on a machine with at least two usable CPUs, so that client and
    server each get a core and neither measures the other's scheduling.
    """
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    client = {cpus[-1]}
    os.sched_setaffinity(0, client)
    return client, set(cpus[:-1])


def client_cpu() -> float:
    """CPU seconds of this whole process (every thread: pools' background threads too)."""
    return time.process_time()


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class LoadMeter:
    """Machine-wide CPU busy share and this process's share between start() and stop()."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._ticks0 = _cpu_ticks()
        self._self0 = os.times()

    def stop(self) -> dict[str, Any]:
        ticks1 = _cpu_ticks()
        wall = time.monotonic() - self._t0
        self1 = os.times()
        out: dict[str, Any] = {"seconds": round(wall, 1), "loadavg": _loadavg()}
        if self._ticks0 and ticks1 and ticks1[1] > self._ticks0[1]:
            busy = (ticks1[0] - self._ticks0[0]) / (ticks1[1] - self._ticks0[1])
            ncpu = os.cpu_count() or 1
            out["machine_busy"] = round(busy, 3)  # share of all CPUs
            own = (self1.user + self1.system) - (self._self0.user + self._self0.system)
            out["this_process_cpus"] = round(own / wall, 2) if wall else None
            out["machine_busy_cpus"] = round(busy * ncpu, 2)
        return out
