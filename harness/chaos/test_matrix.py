"""The chaos matrix: every scenario must keep every invariant.

CI runs the CI matrix (every fault at least once, every driver at least
once, both pools); ``--chaos-full`` / ``TETHER_CHAOS_FULL=1`` runs them all.
"""

from __future__ import annotations

from pathlib import Path

from tether.harness.chaos import ChaosEnvironment, ScenarioSpec, run_scenario, write_scenario


def test_scenario(
    chaos_spec: ScenarioSpec, chaos_env: ChaosEnvironment, chaos_results: Path
) -> None:
    result = run_scenario(chaos_spec.build(), chaos_env)
    write_scenario(result, chaos_results)
    # The workload really went through the proxy (bytes counted by toxiproxy).
    assert result.traffic is None or result.traffic.upstream > 0
    assert result.counts()["ok"] > 0, "no transaction was acknowledged at all"
    result.raise_for_violations()
