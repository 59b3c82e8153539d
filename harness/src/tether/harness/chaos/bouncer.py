"""Chaos behind PgBouncer: the pool talks to PgBouncer, the faults hit PgBouncer or the database.

The workload runs as in every scenario (:mod:`.runner`), but its path is
client -> toxiproxy -> :class:`~tether.harness.servers.PgBouncer` -> PostgreSQL,
and the pool uses the documented configuration for PgBouncer's pool mode
(``driver=behind_pgbouncer(mode, driver)``). The same invariants hold: no
acknowledged commit lost or duplicated, no transaction split over two
sessions, recovery within the bound and sustained, no wait past its timeout,
no leaked client connection. Session counts on the database are PgBouncer's
server sessions, which it keeps after the pool closed; the client's own
sockets decide the leak check, as everywhere.

Faults (all need a PgBouncer the harness runs; ``ctx.server`` is it):

``pgbouncer_restart``           PgBouncer stops (SIGTERM: every client connection
                                closed at once) and starts again on the same port
``pgbouncer_pause``             ``PAUSE`` on the admin console for the window, then
                                ``RESUME``: queries wait, nothing fails
                                (transaction mode only: in session mode ``PAUSE``
                                waits for every client to leave)
``database_restart_behind``     the database behind PgBouncer restarts
                                (``immediate``); PgBouncer stays up

:data:`PGBOUNCER_CI` is the part of the CI-sized chaos run; :func:`pgbouncer_matrix`
every fault x driver x pool x pool mode that makes sense.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..servers import POOL_MODES, PgBouncer
from ..targets import DriverTarget
from ..toxiproxy import Proxy, ToxiproxyError, ToxiproxyServer, proxy_for
from .faults import Fault, FaultContext
from .runner import ChaosEnvironment, Scenario

__all__ = [
    "PGBOUNCER_CI",
    "PGBOUNCER_DRIVERS",
    "PGBOUNCER_FAULTS",
    "BouncerScenarioSpec",
    "DatabaseRestartBehind",
    "PgBouncerPause",
    "PgBouncerRestart",
    "bouncer_chaos_env",
    "pgbouncer_matrix",
    "pgbouncer_proxy_session",
    "pgbouncer_proxy_transaction",
]

log = logging.getLogger("tether.harness.chaos")

PGBOUNCER_DRIVERS: tuple[str, ...] = ("psycopg", "pgdb", "pg")


def _bouncer(ctx: FaultContext) -> PgBouncer:
    if not isinstance(ctx.server, PgBouncer):
        raise TypeError(f"ctx.server: this fault needs a PgBouncer, got {ctx.server!r}")
    return ctx.server


class PgBouncerRestart(Fault):
    """PgBouncer shut down (``fast``: SIGTERM, clients dropped at once), down ``window``
    seconds, started again on the same port."""

    name = "pgbouncer_restart"
    restarts_server = True
    unreachable = True

    def __init__(self, window: float = 0.0, mode: str = "fast") -> None:
        super().__init__(window)
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode: expected 'fast' or 'immediate', got {mode!r}")
        self.mode = mode
        self.description = f"PgBouncer restarted ({mode}); the database stays up"

    def apply(self, ctx: FaultContext) -> None:
        _bouncer(ctx).stop(self.mode)  # type: ignore[arg-type]

    def lift(self, ctx: FaultContext) -> None:
        _bouncer(ctx).start()

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "mode": self.mode}


class PgBouncerPause(Fault):
    """``PAUSE`` for the window (running transactions finish first), then ``RESUME``."""

    name = "pgbouncer_pause"
    description = "PgBouncer PAUSE (queries held), then RESUME"
    restarts_server = True  # a lever of a server the harness owns

    def __init__(self, window: float = 1.5) -> None:
        super().__init__(window)

    def apply(self, ctx: FaultContext) -> None:
        _bouncer(ctx).pause(timeout=ctx.timeouts.read + 3.0)

    def lift(self, ctx: FaultContext) -> None:
        _bouncer(ctx).resume()


class DatabaseRestartBehind(Fault):
    """The database behind PgBouncer stops (``immediate``) and starts again; PgBouncer
    stays up and reconnects its server sessions."""

    name = "database_restart_behind"
    restarts_server = True
    unreachable = True

    def __init__(self, window: float = 0.0, mode: str = "immediate") -> None:
        super().__init__(window)
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode: expected 'fast' or 'immediate', got {mode!r}")
        self.mode = mode
        self.description = f"the database behind PgBouncer restarted ({mode})"

    def apply(self, ctx: FaultContext) -> None:
        _bouncer(ctx).backend.stop(self.mode)  # type: ignore[arg-type]

    def lift(self, ctx: FaultContext) -> None:
        _bouncer(ctx).backend.start()

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "mode": self.mode}


#: The faults behind PgBouncer by name, with the pool modes each runs in.
PGBOUNCER_FAULTS: dict[str, tuple[Callable[..., Fault], tuple[str, ...]]] = {
    "pgbouncer_restart": (PgBouncerRestart, POOL_MODES),
    "pgbouncer_pause": (PgBouncerPause, ("transaction",)),
    "database_restart_behind": (DatabaseRestartBehind, POOL_MODES),
}


@dataclass(frozen=True)
class BouncerScenarioSpec:
    """A scenario behind PgBouncer by names; :meth:`build` makes it."""

    fault: str
    driver: str
    pool: str
    mode: str

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.driver}-{self.pool}-{self.mode}"

    def build(self, **overrides: Any) -> Scenario:
        from tether.simple_pool.drivers import behind_pgbouncer

        factory, _ = PGBOUNCER_FAULTS[self.fault]
        options: dict[str, Any] = {
            "label": self.mode,
            "pool_options": {"driver": behind_pgbouncer(self.mode, self.driver)},
            **overrides,
        }
        return Scenario(factory(), self.driver, self.pool, **options)


#: In the CI-sized run: a PgBouncer restart and a PAUSE, two drivers, both pools.
PGBOUNCER_CI: tuple[BouncerScenarioSpec, ...] = (
    BouncerScenarioSpec("pgbouncer_restart", "psycopg", "pooled", "transaction"),
    BouncerScenarioSpec("pgbouncer_pause", "pgdb", "persistent", "transaction"),
)


def pgbouncer_matrix() -> tuple[BouncerScenarioSpec, ...]:
    """Every fault x driver x pool x the pool modes the fault runs in."""
    return tuple(
        BouncerScenarioSpec(fault, driver, pool, mode)
        for fault, (_, modes) in PGBOUNCER_FAULTS.items()
        for mode in modes
        for driver in PGBOUNCER_DRIVERS
        for pool in ("pooled", "persistent")
    )


# -- fixtures ------------------------------------------------------------------------------


def _proxy(request: pytest.FixtureRequest, mode: str) -> Iterator[Proxy]:
    toxi: ToxiproxyServer = request.getfixturevalue("toxiproxy_server")
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{mode}")
    workerinput = getattr(request.config, "workerinput", None)
    worker = str(workerinput["workerid"]) if workerinput else "main"
    proxy = proxy_for(toxi.client, bouncer, f"tether-pgbouncer-{mode}-{worker}-{os.getpid()}")
    yield proxy
    with contextlib.suppress(ToxiproxyError):
        proxy.delete()


@pytest.fixture(scope="session")
def pgbouncer_proxy_transaction(request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A toxiproxy proxy in front of this process's PgBouncer in transaction mode."""
    yield from _proxy(request, "transaction")


@pytest.fixture(scope="session")
def pgbouncer_proxy_session(request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A toxiproxy proxy in front of this process's PgBouncer in session mode."""
    yield from _proxy(request, "session")


@pytest.fixture
def bouncer_chaos_env(
    request: pytest.FixtureRequest, bouncer_spec: BouncerScenarioSpec, tmp_path: Path
) -> Iterator[ChaosEnvironment]:
    """The spec's driver aimed at this process's PgBouncer in the spec's mode, through the
    proxy in front of it (reset around the test)."""
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{bouncer_spec.mode}")
    proxy: Proxy = request.getfixturevalue(f"pgbouncer_proxy_{bouncer_spec.mode}")
    bouncer.ensure_running()
    target = DriverTarget.build(bouncer_spec.driver, bouncer, workdir=tmp_path)
    target.ignore_existing_sessions()
    proxy.reset()
    try:
        yield ChaosEnvironment(target, proxy)
    finally:
        with contextlib.suppress(ToxiproxyError):
            proxy.reset()
        bouncer.ensure_running()
        target.cleanup()
