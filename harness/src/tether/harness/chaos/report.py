"""Reports: a JSON file and a timeline PNG per scenario, a markdown summary per run.

Layout under the results folder (``<repo>/results/chaos`` by default,
``TETHER_CHAOS_RESULTS`` to change it)::

    scenarios/<scenario id>.json   everything measured (ScenarioResult.to_json())
    scenarios/<scenario id>.png    throughput and errors per 100 ms, fault window shaded,
                                   the sustained-recovery window and its commit-rate floor
    chaos.json                     all scenarios of the run, one list
    report.md                      a table per scenario, links to the PNGs

Per-scenario files are written by whichever process ran the scenario (each
pytest-xdist worker); :func:`write_summary` (run once, by the controller)
gathers them. The PNGs need matplotlib (``pip install tether-harness[chaos]``);
without it the report says so and the rest is written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .runner import ScenarioResult

__all__ = [
    "RESULTS_ENV",
    "default_results_dir",
    "render_markdown",
    "write_scenario",
    "write_summary",
    "write_timeline_png",
]

log = logging.getLogger("tether.harness.chaos")

RESULTS_ENV = "TETHER_CHAOS_RESULTS"


def default_results_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``$TETHER_CHAOS_RESULTS``, else ``<root>/results/chaos`` (root: the current directory)."""
    configured = os.environ.get(RESULTS_ENV, "").strip()
    if configured:
        return Path(configured)
    return Path(root or Path.cwd()) / "results" / "chaos"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_scenario(result: ScenarioResult, folder: str | os.PathLike[str]) -> Path:
    """Write ``scenarios/<id>.json`` and ``scenarios/<id>.png``; return the JSON path."""
    directory = Path(folder) / "scenarios"
    directory.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    png = directory / f"{_safe(result.id)}.png"
    data["timeline_png"] = png.name if write_timeline_png(data, png) else None
    path = directory / f"{_safe(result.id)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
    return path


def write_timeline_png(data: Mapping[str, Any], path: str | os.PathLike[str]) -> bool:
    """Plot acknowledged commits and errors per bin with the fault window shaded.

    Returns False (and logs why) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(
            "matplotlib is not installed: no timeline PNG (pip install tether-harness[chaos])"
        )
        return False
    tl = data["timeline"]
    width = float(tl["bin"])
    xs = [i * width for i in range(len(tl["ok"]))]
    per_second = 1.0 / width
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        start, end = tl["fault"]
        ax.axvspan(start, max(end, start + 0.05), color="tab:red", alpha=0.15, label="fault")
        ax.step(
            xs,
            [n * per_second for n in tl["ok"]],
            where="post",
            label="commits/s",
            color="tab:blue",
        )
        ax.step(
            xs,
            [n * per_second for n in tl["errors"]],
            where="post",
            label="errors/s",
            color="tab:red",
        )
        recovery = data["recovery"]["seconds"]
        if recovery is not None:
            ax.axvline(
                end + recovery, color="tab:green", linestyle="--", linewidth=1, label="recovered"
            )
        sustained = data.get("sustained")
        if sustained and sustained.get("checked"):
            w0, w1 = sustained["window"]
            ok = sustained["passed"]
            ax.axvspan(
                w0,
                w1,
                color="tab:green" if ok else "tab:orange",
                alpha=0.08,
                label="sustained " + ("ok" if ok else "BROKEN"),
            )
            if sustained.get("rate_before"):
                floor = sustained["rate_before"] * sustained["min_ratio"]
                b0, b1 = sustained["before_window"]
                ax.hlines(
                    sustained["rate_before"], b0, b1, colors="tab:blue", linestyles=":",
                    linewidth=1, label="rate before",
                )  # fmt: skip
                ax.hlines(
                    floor, w0, w1, colors="tab:purple", linestyles="--", linewidth=1,
                    label=f"floor ({sustained['min_ratio']:.0%})",
                )  # fmt: skip
        ax.axvline(data["schedule"]["stopped_at"], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("seconds since the workload started (100 ms bins)")
        ax.set_ylabel("per second")
        if data.get("expected_violations"):
            status = "broken pool " + ("caught" if data.get("caught") else "NOT caught")
        else:
            status = "passed" if data["passed"] else f"FAILED ({len(data['violations'])})"
        ax.set_title(f"{data['id']}: {status}", fontsize=10)
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.fspath(path))
    finally:
        plt.close(fig)
    return True


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _verdict(s: Mapping[str, Any]) -> str:
    if s.get("expected_violations"):
        return "caught (expected)" if s.get("caught") else "**NOT CAUGHT**"
    return "pass" if s["passed"] else "**FAIL**"


def _sustained_cell(s: Mapping[str, Any]) -> str:
    """``errors, rate after/before (ratio)`` of the sustained window, or why it was not judged."""
    su = s.get("sustained")
    if not su:
        return "-"
    if not su["checked"]:
        return "not judged"
    ratio = "-" if su["ratio"] is None else f"{su['ratio']:.0%}"
    mark = "" if su["passed"] else " **broken**"
    return (
        f"{su['errors']} err, {_fmt(su['rate_after'], '', 0)}/{_fmt(su['rate_before'], '', 0)}"
        f" per s ({ratio}){mark}"
    )


def _row(s: Mapping[str, Any]) -> str:
    tx, rec, to, se = s["transactions"], s["recovery"], s["timeouts_check"], s["sessions"]
    return (
        f"| {s['id']} | {tx['ok']} | {tx['failed']} | {tx['unknown'] + tx['in_flight']} |"
        f" {_fmt(rec['seconds'], ' s')} ({_fmt(rec['bound'], ' s', 1)}) |"
        f" {_sustained_cell(s)} |"
        f" {_fmt(to['worst_overshoot'], ' s')} |"
        f" {se['before']}/{se['after_run']}/{se['after_close']} ({se['max']}) |"
        f" {_verdict(s)} |"
    )


_HEADER = [
    "| scenario | ok | failed | unknown | recovery (bound) |"
    " after recovery: errors, commits/s after/before | worst overshoot |"
    " sessions before/after/closed (max) | result |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|",
]


def render_markdown(scenarios: Sequence[Mapping[str, Any]], *, title: str = "Chaos run") -> str:
    """The human report: summary tables (scenarios, then broken-pool runs), then a
    section per run.

    Columns: acknowledged / failed / unknown-outcome transactions, seconds from
    "reachable again" to the first acknowledged commit (and its bound), from that
    bound to the end of the run the failed transactions and the commit rate
    against the rate before the fault (the *sustained* invariant), the worst
    (failure time - timeout bound) (negative: within), and the test user's server
    sessions before the run, after it, after closing the pool (and the pool's maximum).
    """
    regular = [s for s in scenarios if not s.get("expected_violations")]
    broken = [s for s in scenarios if s.get("expected_violations")]
    passed = sum(1 for s in regular if s["passed"])
    caught = sum(1 for s in broken if s.get("caught"))
    lines = [f"# {title}", ""]
    lines.append(
        f"{len(regular)} scenarios: {passed} passed, {len(regular) - passed} failed."
        + (f" {len(broken)} deliberately broken pools: {caught} caught." if broken else "")
    )
    lines.append("")
    if regular:
        lines.extend(_HEADER)
        lines.extend(_row(s) for s in regular)
        lines.append("")
    if broken:
        lines.append("Deliberately broken pools (each must break the invariants it names):")
        lines.append("")
        lines.extend(_HEADER)
        lines.extend(
            _row(s).rstrip(" |") + f" ({', '.join(s['expected_violations'])}) |" for s in broken
        )
        lines.append("")
    for s in [*regular, *broken]:
        lines.extend(_section(s))
    return "\n".join(lines) + "\n"


def _section(s: Mapping[str, Any]) -> list[str]:
    tx, rec, to, se = s["transactions"], s["recovery"], s["timeouts_check"], s["sessions"]
    sched = s["schedule"]
    out = [f"## {s['id']}", ""]
    out.append(
        f"Fault **{s['fault']}**: {s['fault_description']} — parameters `{s['fault_params']}`."
    )
    out.append(
        f"Driver `{s['driver']}`, pool `{s['pool']}`, {s['workers']} workers; timeouts"
        f" connect {s['timeouts']['connect']:g} s, read {s['timeouts']['read']:g} s,"
        f" checkout {s['timeouts']['checkout']:g} s. Fault applied at {sched['applied_at']:.2f} s,"
        f" lifted at {sched['lifted_at']:.2f} s; load stopped at {sched['stopped_at']:.2f} s."
    )
    out.append("")
    out.append("| measure | value |")
    out.append("|---|---|")
    out.append(f"| transactions ok / failed | {tx['ok']} / {tx['failed']} |")
    unknown = tx["unknown"] + tx["in_flight"]
    out.append(
        f"| unknown outcomes (commit raised or never finished) | {unknown}: committed"
        f" {tx['unknown_committed']}, absent {tx['unknown_absent']} |"
    )
    if tx["unknown_keys"]:
        keys = ", ".join(tx["unknown_keys"][:20]) + (" ..." if len(tx["unknown_keys"]) > 20 else "")
        out.append(f"| unknown-outcome keys | {keys} |")
    out.append(
        f"| recovery after reachable | {_fmt(rec['seconds'], ' s')} (bound {rec['bound']:g} s) |"
    )
    su = s.get("sustained")
    if su:
        if su["checked"]:
            w0, w1 = su["window"]
            ratio = "-" if su["ratio"] is None else f"{su['ratio']:.0%}"
            out.append(
                f"| sustained recovery ({w0:.2f}-{w1:.2f} s) | {su['errors']} failed;"
                f" {_fmt(su['rate_after'], '', 0)} commits/s vs {_fmt(su['rate_before'], '', 0)}"
                f" before the fault ({ratio}; at least {su['min_ratio']:.0%}) |"
            )
        else:
            out.append(f"| sustained recovery | not judged: {su['reason']} |")
    out.append(
        f"| worst timeout overshoot | {_fmt(to['worst_overshoot'], ' s')} {to['worst']}"
        f" (slack {to['slack']:g} s) |"
    )
    out.append(f"| slowest failure | {_fmt(to['slowest_failure'], ' s')} |")
    out.append(
        f"| sessions before / after run / after close (max) | {se['before']} / {se['after_run']}"
        f" / {se['after_close']} ({se['max']}) |"
    )
    if se.get("client_after_run") is not None:
        out.append(
            f"| client connections after run / after close | {se['client_after_run']} /"
            f" {se['client_after_close']} |"
        )
    if se.get("proxy_orphans"):
        out.append(f"| server sessions held open by toxiproxy | {se['proxy_orphans']} |")
    if s.get("traffic"):
        out.append(
            f"| bytes through the proxy (up / down) | {s['traffic']['upstream']} /"
            f" {s['traffic']['downstream']} |"
        )
    out.append(f"| proxy proof | {s['proxy_proof']} |")
    if s.get("notes"):
        out.append(f"| notes | {s['notes']} |")
    out.append(f"| wall time | {s['wall_time']:.1f} s |")
    out.append("")
    if s["errors"]:
        out.append("Errors by step: " + "; ".join(f"{k} x{v}" for k, v in s["errors"].items()))
        out.append("")
    if s["violations"]:
        out.append("**Violations:**")
        out.append("")
        for v in s["violations"]:
            examples = f" (e.g. {', '.join(v['examples'])})" if v["examples"] else ""
            out.append(f"- [{v['invariant']}] {v['message']}{examples}")
        out.append("")
    if s.get("timeline_png"):
        out.append(f"![{s['id']}](scenarios/{s['timeline_png']})")
        out.append("")
    return out


def load_scenarios(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every ``scenarios/*.json`` under ``folder``, sorted by id."""
    directory = Path(folder) / "scenarios"
    results = []
    for path in sorted(directory.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable result %s: %s", path, exc)
    return sorted(results, key=lambda d: str(d["id"]))


def write_summary(
    folder: str | os.PathLike[str],
    *,
    title: str = "Chaos run",
    extra: Mapping[str, Any] | None = None,
) -> Path | None:
    """Gather ``scenarios/*.json`` into ``chaos.json`` and ``report.md``; return the report path
    (None when no scenario ran)."""
    folder = Path(folder)
    scenarios = load_scenarios(folder)
    if not scenarios:
        return None
    summary = {
        **(extra or {}),
        "scenarios": [{k: v for k, v in s.items() if k != "timeline"} for s in scenarios],
    }
    (folder / "chaos.json").write_text(json.dumps(summary, indent=1, default=str))
    report = folder / "report.md"
    report.write_text(render_markdown(scenarios, title=title))
    return report


def clear_results(folder: str | os.PathLike[str]) -> None:
    """Remove the per-scenario files of an earlier run (the summary is rewritten anyway)."""
    directory = Path(folder) / "scenarios"
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.suffix in (".json", ".png", ".tmp"):
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)
