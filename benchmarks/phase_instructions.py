"""Phase "instructions": CPU instructions per request, counted by valgrind's callgrind.

A time moves with the load of the machine; the number of instructions a
request executes does not. So this phase runs each configuration of
:mod:`callgrind_requests` (the driver connection held, the floor, a
tether.steady connection held, each pool of size 1) in its own process under

    valgrind --tool=callgrind --dump-before=getppid --callgrind-out-file=F \\
        python callgrind_requests.py CONFIGURATION N1 N2 WORKLOAD...

and reads callgrind's ``totals:`` (or ``summary:``) line of each part it
dumped. A request is checkout, ``cursor()``, ``execute("SELECT 1")``,
``fetchone()``, cursor ``close()``, checkin with autocommit on, against the
run's PostgreSQL; ``request-gap`` is the same with statements more than
tether.steady's ``ALIVE_BYPASS`` apart; ``request-txn`` the same with
autocommit off (a transaction the pool rolls back at checkin);
``request-contended`` the same on two threads sharing a pool of one connection
(every checkout waits, every checkin hands over; its *added* is over the driver
alone back to back, so the hand-off's cost counts; the fair hand-off
configuration, which checks nothing, is that cost's floor); ``cycle`` is
checkout and checkin alone. Instructions per request are the **slope** between the part of
``N1`` and the part of ``N2`` requests, ``(I(N2) - I(N1)) / (N2 - N1)``:
whatever a part costs apart from its requests cancels. Every thread of the
process is counted (a pool's background threads are its cost too); the
server's are not (another process). *Added* is the instructions more than
the driver connection alone in the same workload; *x psycopg_pool* divides
a configuration's added instructions by psycopg_pool's.

One process measures both ``N`` of every workload: callgrind writes out and
zeroes its counters whenever the program enters libc's ``getppid()``, which
the worker calls only between parts. Python's start-up and imports (~0.7
billion instructions, ~8 s under callgrind) are then paid once per
configuration instead of once per ``N`` and workload. The worker runs once
natively first (a few requests) with a bytecode cache of its own, so nothing
is compiled under callgrind, and a broken configuration fails in a second.
*linearity* is how far the two parts' instructions per request differ
(percent of the slope): a request costs the same every time when it is
near 0, and the gate accepts a row only within :data:`gate.INSTR_LINEARITY_PCT`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from callgrind_requests import CONFIGURATIONS, NOT_IMPORTABLE, WORKLOADS
from context import Context, fmt

__all__ = ["markdown", "measure", "parse_total", "read_parts", "run", "slope", "worker_env"]

WORKER = Path(__file__).resolve().parent / "callgrind_requests.py"
DRIVER = "driver"
REFERENCE = "psycopg_pool getconn/putconn"
#: Configurations that are not pools: always run, whatever ``--pools`` says.
LAYERS = ("driver", "floor", "fair hand-off", "tether.steady")
#: The quick run's configurations: what the gate compares, and nothing more.
QUICK = ("driver", "tether.steady", "tether.pooled", "tether.persistent", REFERENCE)
#: Processes under callgrind at once (each is one thread of the machine's CPUs).
JOBS = 2
#: Seconds one configuration may take under callgrind: ~3 billion instructions at full N,
#: ~5 minutes measured at load average 14 on 2 CPUs (callgrind ran ~80 million a second idle).
TIMEOUT = 1800

_TOTAL = re.compile(r"^(totals|summary):\s+(\d+)", re.MULTILINE)
_PART = re.compile(r"^part:\s+(\d+)", re.MULTILINE)


def parse_total(text: str) -> int:
    """The first event (instructions, ``Ir``) of a callgrind file's ``totals:`` line.

    ``summary:`` is the same number in the header; a file with neither is an error.
    """
    found = {name: int(value) for name, value in _TOTAL.findall(text)}
    if "totals" in found:
        return found["totals"]
    if "summary" in found:
        return found["summary"]
    raise ValueError("no 'totals:' or 'summary:' line in the callgrind output")


def read_parts(prefix: Path) -> dict[int, int]:
    """Part number -> instructions, for every dump ``prefix.N`` callgrind wrote.

    The part number is the file's own ``part:`` line (the suffix says the same).
    The final dump at exit (``prefix`` itself) is not a measured part.
    """
    parts: dict[int, int] = {}
    for path in prefix.parent.glob(prefix.name + ".*"):
        text = path.read_text(errors="replace")
        match = _PART.search(text)
        if match is None or not path.suffix[1:].isdigit():
            continue
        parts[int(match.group(1))] = parse_total(text)
    return parts


def slope(n1: int, i1: int, n2: int, i2: int) -> float:
    """Instructions per request between two parts of ``n1`` and ``n2`` requests."""
    if n2 == n1:
        raise ValueError("the two parts must differ in size")
    return (i2 - i1) / (n2 - n1)


def _measure(
    key: str,
    n1: int,
    n2: int,
    env: dict[str, str],
    out: Path,
    cpus: set[int],
    workloads: tuple[str, ...] = WORKLOADS,
    label: str = "",
) -> dict[str, Any]:
    """One configuration under callgrind: per workload, (I(N1), I(N2)) and the slope.

    ``label`` names the output files when one configuration is measured more than
    once (the ledger phase's variants).
    """
    started = time.monotonic()
    command = [sys.executable, str(WORKER), key]
    # Natively first: fills the bytecode cache, and a broken configuration fails fast.
    check = subprocess.run(
        [*command, "1", "2", *workloads],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check.returncode != 0:
        reason = check.stderr.strip().splitlines()[-1:] or [f"exit {check.returncode}"]
        if NOT_IMPORTABLE in reason[0]:
            return {"configuration": key, "skipped": reason[0]}
        return {"configuration": key, "error": reason[0]}
    prefix = out / re.sub(r"[^A-Za-z0-9.]+", "_", label or key)
    proc = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--dump-before=getppid",
            f"--callgrind-out-file={prefix}", f"--log-file={prefix}.log",
            *command, str(n1), str(n2), *workloads,
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The benchmark client is pinned to one CPU; two of these may run at once.
    try:
        os.sched_setaffinity(proc.pid, cpus)
    except (AttributeError, OSError):
        pass
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"configuration": key, "error": f"under callgrind: not done in {TIMEOUT} s"}
    if proc.returncode != 0:
        tail = (stderr.strip() or f"exit {proc.returncode}").splitlines()[-1]
        return {"configuration": key, "error": f"under callgrind: {tail}"}
    plan = [tuple(p) for p in json.loads(stdout.strip().splitlines()[-1])["plan"]]
    parts = read_parts(prefix)
    # Per workload three dumps: before N1 (start-up or warm-up), N1, N2.
    expected = 3 * len(plan) // 2
    if sorted(parts) != list(range(1, expected + 1)):
        return {
            "configuration": key,
            "error": f"callgrind wrote parts {sorted(parts)}, expected 1..{expected}"
            " (something else called getppid?)",
        }
    workloads: dict[str, Any] = {}
    for index in range(len(plan) // 2):
        (workload, a), (_w, b) = plan[2 * index], plan[2 * index + 1]
        i1, i2 = parts[3 * index + 2], parts[3 * index + 3]
        per = slope(a, i1, b, i2)
        workloads[str(workload)] = {
            "n": [a, b],
            "instructions": [i1, i2],
            "per_request": per,
            "linearity_pct": 100 * abs(i1 / a - i2 / b) / per if per else float("nan"),
        }
    return {
        "configuration": key,
        "workloads": workloads,
        "seconds": round(time.monotonic() - started, 1),
    }


measure = _measure


def worker_env(params: dict[str, Any], tmp: str) -> dict[str, str]:
    """The environment of a callgrind worker: the server, a bytecode cache, a fixed seed.

    The worker's own bytecode cache: nothing is compiled under callgrind. A fixed
    hash seed: str hashes (so dict and set probes) are the same in every run, one
    cause less for two runs' counts to differ (they moved by up to ~2.7% with
    random seeds; how much of that the seed was is not measured).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    env.pop("TETHER_BENCH_ABLATE", None)
    return env | {
        "TETHER_BENCH_PG": json.dumps(params),
        "PYTHONPYCACHEPREFIX": f"{tmp}/pyc",
        "PYTHONHASHSEED": "0",
    }


def valgrind_version() -> str:
    """``valgrind --version``; raises OSError or CalledProcessError when it cannot run."""
    return subprocess.run(
        ["valgrind", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def run(ctx: Context) -> dict[str, Any]:
    assert ctx.pg is not None
    s = ctx.settings
    n1, n2 = s.instructions_n
    keys = [k for k in CONFIGURATIONS if not s.quick or k in QUICK]
    if ctx.only:
        keys = [k for k in keys if k in LAYERS or k in ctx.only]
    params = {k: v for k, v in ctx.pg.params.items() if k != "application_name"}
    try:
        version = valgrind_version()
    except (OSError, subprocess.CalledProcessError) as exc:
        # No valgrind: a failure, not a skip (nox -s provision installs it).
        return {"phase": "instructions", "error": f"valgrind not runnable: {exc}", "rows": []}
    with tempfile.TemporaryDirectory(prefix="tether-callgrind-") as tmp:
        env = worker_env(params, tmp)
        cpus = set(range(os.cpu_count() or 1))
        ctx.log(
            f"instructions: {len(keys)} configurations under callgrind, slope {n1} -> {n2}"
            f" requests, {JOBS} at once"
        )

        def one(key: str) -> dict[str, Any]:
            row = _measure(key, n1, n2, env, Path(tmp), cpus)
            done = row.get("error") or row.get("skipped") or f"{row['seconds']} s"
            ctx.log(f"instructions: {key}: {done}")
            return row

        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            measured = list(pool.map(one, keys))
    rows = {row["configuration"]: row for row in measured}
    for row in measured:
        row["label"] = CONFIGURATIONS[row["configuration"]][0]
        for workload, w in row.get("workloads", {}).items():
            # Two threads on one connection: over the driver alone back to back, so
            # the hand-off (a wait, a wake, a switch of threads) counts as added.
            same = "request" if workload == "request-contended" else workload
            base = rows.get(DRIVER, {}).get("workloads", {}).get(same)
            # checkout+checkin alone runs no statement: all of it is added
            w["added"] = (
                w["per_request"] if workload == "cycle"
                else w["per_request"] - base["per_request"] if base
                else float("nan")
            )  # fmt: skip
    for row in measured:
        for workload, w in row.get("workloads", {}).items():
            ref = rows.get(REFERENCE, {}).get("workloads", {}).get(workload)
            w["x_reference"] = w["added"] / ref["added"] if ref and ref["added"] else float("nan")
    return {
        "phase": "instructions",
        "n": [n1, n2],
        "valgrind": version,
        "reference": REFERENCE,
        "rows": measured,
    }


def markdown(result: dict[str, Any]) -> str:
    title = "## Instructions per request (callgrind, one thread, PostgreSQL)"
    if "error" in result:
        return f"{title}\n\nnot measured: {result['error']}"
    n1, n2 = result["n"]
    out = [
        title,
        "",
        f"{result['valgrind']}; instructions per request = slope between {n1:,} and {n2:,}"
        " requests in one process (start-up cancels); a request = checkout, cursor(),"
        " execute('SELECT 1'), fetchone(), cursor close(), checkin, autocommit on;"
        " *autocommit off*: the same back to back with autocommit off, the transaction"
        " rolled back at checkin (driver and steady held: rollback() per request);"
        " *2 threads on 1*: two threads share a pool of one connection, every checkout"
        " waits (added over the driver alone back to back)."
        " *added* = more than the driver connection alone; *x ref* = added / psycopg_pool's"
        " added; *lin.* = how far the two parts' per-request figures differ (% of the slope).",
        "",
        "| configuration | back to back | added | x ref | gaps > ALIVE_BYPASS | added"
        " | x ref | checkout+checkin | x ref | autocommit off | added | x ref"
        " | 2 threads on 1 | added | x ref | lin. % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "workloads" not in row:
            out.append(
                f"| {row['label']} | {row.get('error') or row.get('skipped')}"
                " | | | | | | | | | | | | | | |"
            )
            continue
        cells = [row["label"]]
        for workload in WORKLOADS:
            w = row["workloads"].get(workload)
            if w is None:
                cells += ["-"] * (2 if workload == "cycle" else 3)
                continue
            driver = row["configuration"] == DRIVER
            cells.append(f"{w['per_request']:,.0f}")
            if workload != "cycle":
                cells.append("-" if driver else f"{w['added']:+,.0f}")
            cells.append("-" if driver else fmt(w["x_reference"]))
        worst = max(w["linearity_pct"] for w in row["workloads"].values())
        cells.append(fmt(worst))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
