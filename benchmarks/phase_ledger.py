"""Phase "ledger": what each piece of tether's hot path costs, and what it buys.

The instructions phase measures how many instructions tether.steady and
tether.pooled add per request over the driver alone. This phase takes the
pieces of that hot path out one at a time (:mod:`ablation`: each variant
recompiles one function with a line replaced, in the callgrind worker only)
and measures the same request under callgrind again, exactly as the
instructions phase does (slope between two ``N``, one process per run, fixed
hash seed). *cost* = instructions per request of the unedited code minus
those of the variant: what that piece costs. Each row says what the piece
buys, so the account of a remaining cost is a measurement, not a guess.

Not part of the default phases (about 15 runs under callgrind): run it with
``nox -s bench -- --phases ledger`` (``--quick`` for the small ``N``).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ablation import VARIANTS
from context import Context
from phase_instructions import JOBS, measure, valgrind_version, worker_env

__all__ = ["markdown", "run"]

#: The unedited configurations the variants are compared with, and the driver alone.
BASES = {
    "driver": ("request", "request-gap"),
    "tether.steady": ("request", "request-gap"),
    "tether.pooled": ("request", "request-gap", "cycle"),
    "tether.persistent": ("request", "request-gap", "cycle"),
}


def run(ctx: Context) -> dict[str, Any]:
    assert ctx.pg is not None
    n1, n2 = ctx.settings.instructions_n
    params = {k: v for k, v in ctx.pg.params.items() if k != "application_name"}
    try:
        version = valgrind_version()
    except Exception as exc:  # no valgrind: a failure, not a skip
        return {"phase": "ledger", "error": f"valgrind not runnable: {exc}", "rows": []}
    jobs: list[tuple[str, str, tuple[str, ...]]] = [
        ("none", key, workloads) for key, workloads in BASES.items()
    ]
    # Every run of a configuration runs all its workloads, in the same order (see Variant).
    jobs += [(name, v.configuration, BASES[v.configuration]) for name, v in VARIANTS.items()]
    with tempfile.TemporaryDirectory(prefix="tether-ledger-") as tmp:
        cpus = set(range(os.cpu_count() or 1))
        ctx.log(f"ledger: {len(jobs)} runs under callgrind, slope {n1} -> {n2}, {JOBS} at once")

        def one(job: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
            variant, key, workloads = job
            env = worker_env(params, tmp)
            if variant != "none":
                env["TETHER_BENCH_ABLATE"] = variant
            row = measure(key, n1, n2, env, Path(tmp), cpus, workloads, f"{key}-{variant}")
            row["variant"] = variant
            done = row.get("error") or f"{row.get('seconds')} s"
            ctx.log(f"ledger: {key} {variant}: {done}")
            return row

        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            measured = list(pool.map(one, jobs))
    bases = {row["configuration"]: row for row in measured if row["variant"] == "none"}
    driver = bases.get("driver", {}).get("workloads", {})
    totals: dict[str, dict[str, float]] = {}
    for key, row in bases.items():
        if key == "driver" or "workloads" not in row:
            continue
        totals[key] = {
            w: m["per_request"] - (driver[w]["per_request"] if w in driver else 0.0)
            if w != "cycle" else m["per_request"]
            for w, m in row["workloads"].items()
        }  # fmt: skip
    rows: list[dict[str, Any]] = []
    for row in measured:
        if row["variant"] == "none":
            continue
        variant = VARIANTS[row["variant"]]
        base = bases.get(variant.configuration, {}).get("workloads", {})
        costs: dict[str, Any] = {}
        for workload, m in row.get("workloads", {}).items():
            if workload in base and workload in variant.workloads:
                cost = base[workload]["per_request"] - m["per_request"]
                costs[workload] = -cost if variant.adds_dict_read else cost
        rows.append({
            "variant": row["variant"],
            "configuration": variant.configuration,
            "piece": variant.piece,
            "buys": variant.buys,
            "cost": costs,
            "error": row.get("error"),
            "linearity_pct": max(
                (m["linearity_pct"] for m in row.get("workloads", {}).values()), default=None
            ),
        })  # fmt: skip
    return {
        "phase": "ledger",
        "n": [n1, n2],
        "valgrind": version,
        "added": totals,
        "rows": rows,
        "bases": measured[: len(BASES)],
    }


def markdown(result: dict[str, Any]) -> str:
    title = "## Ledger: what each piece of the hot path costs (callgrind, PostgreSQL)"
    if "error" in result:
        return f"{title}\n\nnot measured: {result['error']}"
    n1, n2 = result["n"]
    out = [
        title,
        "",
        f"{result['valgrind']}; each piece taken out in turn (`ablation.py`), instructions"
        f" per request as in the instructions phase (slope {n1:,} -> {n2:,});"
        " *cost* = unedited minus without the piece.",
        "",
    ]
    for key, added in result["added"].items():
        parts = ", ".join(f"{w} {v:+,.0f}" for w, v in added.items())
        out.append(f"- {key}, added over the driver alone (checkout+checkin: all): {parts}")
    out += [
        "",
        "| configuration | piece | back to back | gaps | checkout+checkin | what it buys |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if row.get("error"):
            out.append(f"| {row['configuration']} | {row['piece']} | {row['error']} | | | |")
            continue
        cells = [
            f"{row['cost'][w]:,.0f}" if w in row["cost"] else "-"
            for w in ("request", "request-gap", "cycle")
        ]
        out.append(
            f"| {row['configuration']} | {row['piece']} | " + " | ".join(cells)
            + f" | {row['buys']} |"
        )  # fmt: skip
    return "\n".join(out)
