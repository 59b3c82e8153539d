"""The scenario matrices: a CI-sized one and the full one.

The CI matrix runs every fault at least once, every server driver at least
once and both pools, in about a minute per pytest-xdist worker. The full
matrix runs every fault with every driver and both pools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .faults import FAULTS, make_fault
from .runner import Scenario

__all__ = ["CI_MATRIX", "DRIVERS", "FAULT_NAMES", "POOL_NAMES", "ScenarioSpec", "full_matrix"]

#: The faults of the matrices (every fault but the ``none`` control).
FAULT_NAMES: tuple[str, ...] = tuple(name for name in FAULTS if name != "none")
DRIVERS: tuple[str, ...] = ("psycopg", "pgdb", "pg", "pymysql")
POOL_NAMES: tuple[str, ...] = ("pooled", "persistent")


@dataclass(frozen=True)
class ScenarioSpec:
    """A scenario by names, cheap to create at collection time; :meth:`build` makes it."""

    fault: str
    driver: str
    pool: str
    fault_params: dict[str, Any] = field(default_factory=dict, hash=False)
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.driver}-{self.pool}"

    @property
    def restarts_server(self) -> bool:
        return make_fault(self.fault).restarts_server

    def build(self, **overrides: Any) -> Scenario:
        options = {**self.options, **overrides}
        return Scenario(
            make_fault(self.fault, **self.fault_params), self.driver, self.pool, **options
        )


#: Every fault at least once, every driver at least once, both pools.
CI_MATRIX: tuple[ScenarioSpec, ...] = (
    ScenarioSpec("restart_immediate", "psycopg", "pooled"),
    ScenarioSpec("restart_fast", "pymysql", "persistent"),
    ScenarioSpec("database_down", "pgdb", "pooled"),
    ScenarioSpec("terminate_backends", "pg", "persistent"),
    ScenarioSpec("reset_peer", "psycopg", "persistent"),
    ScenarioSpec("blackhole", "pymysql", "pooled"),
    ScenarioSpec("blackhole", "psycopg", "persistent"),
    ScenarioSpec("latency", "pg", "pooled"),
    ScenarioSpec("bandwidth", "pymysql", "persistent"),
    ScenarioSpec("slow_close", "psycopg", "pooled"),
    ScenarioSpec("limit_data", "pgdb", "persistent"),
    ScenarioSpec("proxy_disabled", "pymysql", "pooled"),
)


def full_matrix() -> tuple[ScenarioSpec, ...]:
    """Every fault x every driver x both pools."""
    return tuple(
        ScenarioSpec(fault, driver, pool)
        for fault in FAULT_NAMES
        for driver in DRIVERS
        for pool in POOL_NAMES
    )
