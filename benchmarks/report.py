"""The run's markdown report and PNG chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from context import fmt

__all__ = ["chart", "markdown"]

RAW = "baseline: raw held"
COLORS = {"tether": "#2a9d4b", "peer": "#4a78b5", "baseline": "#e08a2c"}


def _header(doc: dict[str, Any]) -> list[str]:
    info = doc["info"]
    m = info["machine"]
    pg = info.get("postgres", {})
    out = [
        "# tether benchmarks",
        "",
        f"- **date** {m['date']}, {info['elapsed_seconds']} s,"
        f" {'quick' if info['settings']['quick'] else 'full'} run, git {m['git']}",
        f"- **machine** {m['cpu']}, {m['cpus']} CPUs, {m['memory']}, {m['os']}, host {m['host']}",
        f"- **pinning** client on CPUs {info['pinning']['client_cpus']},"
        f" PostgreSQL on {info['pinning']['server_cpus']}",
        f"- **load average** start {m['loadavg_start']}, end {m.get('loadavg_end')}",
    ]
    if pg:
        out.append(
            f"- **PostgreSQL** {pg['version']} ({pg['origin']}), settings {pg['settings']};"
            f" server CPU {'measured from /proc' if pg['server_cpu_measured'] else 'not measured'}"
        )
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    out += [f"- **versions** {versions}", ""]
    loads = info.get("load", {})
    if loads:
        out += [
            "Load during each phase (machine busy = share of all CPUs busy, any process;"
            " this process = CPUs used by the benchmark client):",
            "",
            "| phase | seconds | machine busy CPUs | this process CPUs | load average after |",
            "|---|---|---|---|---|",
        ]
        for name, load in loads.items():
            out.append(
                f"| {name} | {load['seconds']} | {fmt(load.get('machine_busy_cpus'))}"
                f" | {fmt(load.get('this_process_cpus'))} | {load['loadavg']} |"
            )
        out.append("")
    return out


def _targets(doc: dict[str, Any]) -> list[str]:
    out = [
        "## Targets",
        "",
        "| target | pool | measured | met | detail |",
        "|---|---|---|---|---|",
    ]
    for t in doc["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        value = fmt(t["value"]) if not isinstance(t["value"], str) else t["value"]
        out.append(f"| {t['target']} | {t['pool']} | {value} | {met} | {t['detail']} |")
    gate = doc["gate"]
    out += ["", "## Regression gate", "", f"Rule: {gate['rule']}.", ""]
    out += [f"- {line}" for line in gate["checked"]]
    out += [f"- missing: {line}" for line in gate["missing"]]
    out.append("")
    out.append("**FAILED**: " + "; ".join(gate["failures"]) if gate["failures"] else "**passed**")
    out.append("")
    return out


def markdown(doc: dict[str, Any], modules: dict[str, Any]) -> str:
    out = _header(doc) + _targets(doc)
    for name, result in doc["results"].items():
        if "skipped" in result:
            out += [f"## {name}", "", f"skipped: {result['skipped']}", ""]
            continue
        out += [modules[name].markdown(result), ""]
    return "\n".join(out)


def chart(doc: dict[str, Any], path: Path) -> bool:
    """Bars per pool, raw-held baseline marked; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = doc["results"]
    panels: list[tuple[str, Any]] = []
    for db in results.get("cycle", {}).get("databases", []):
        panels.append((f"cycle µs, {db['target']} (log scale; lower is better)", ("cycle", db)))
    for mode in results.get("throughput", {}).get("modes", []):
        ac = "on" if mode["autocommit"] else "off"
        panels.append((f"throughput, % of raw-held, autocommit {ac}", ("tput", mode)))
    if results.get("web", {}).get("rows"):
        panels.append(("web workload req/s", ("web", results["web"])))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for ax, (title, (kind, data)) in zip(axes[:, 0], panels):
        ax.set_title(title, fontsize=10)
        if kind == "cycle":
            rows = [r for r in data["rows"] if "us" in r]
            names = [r["pool"] for r in rows]
            ax.barh(names, [r["us"] for r in rows], color=[COLORS[r["family"]] for r in rows])
            ax.set_xscale("log")
            ax.invert_yaxis()
            raw = next((r["us"] for r in rows if r["pool"] == RAW), None)
            if raw:
                ax.axvline(raw, color="black", linestyle="--", linewidth=1)
                ax.text(raw, -0.6, " raw held", fontsize=8, va="bottom")
            ax.tick_params(axis="y", labelsize=7)
        elif kind == "tput":
            threads = sorted({r["threads"] for r in data["rows"]})
            pools = list(dict.fromkeys(r["pool"] for r in data["rows"] if "qps" in r))
            width = 0.8 / max(1, len(threads))
            for i, n in enumerate(threads):
                values = []
                for p in pools:
                    row: dict[str, Any] = next(
                        (r for r in data["rows"] if r["pool"] == p and r["threads"] == n), {}
                    )
                    values.append(row.get("pct_of_raw", math.nan))
                xs = [k + (i - (len(threads) - 1) / 2) * width for k in range(len(pools))]
                ax.bar(xs, values, width=width, label=f"{n} threads")
            ax.axhline(100, color="black", linestyle="--", linewidth=1, label="raw held")
            ax.set_xticks(range(len(pools)))
            ax.set_xticklabels(pools, rotation=25, ha="right", fontsize=7)
            ax.set_ylabel("% of raw held")
            ax.legend(fontsize=7, ncol=5)
        else:
            rows = [r for r in data["rows"] if "rps" in r]
            ax.bar(
                [r["pool"] for r in rows],
                [r["rps"] for r in rows],
                color=[COLORS[r["family"]] for r in rows],
            )
            ax.tick_params(axis="x", labelsize=7)
            ax.set_ylabel("requests/s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
