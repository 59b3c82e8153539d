"""Faults: things that happen to a database or its network, each with a name.

A :class:`Fault` is applied, held for its window, and lifted; the runner
(:mod:`tether.harness.chaos.runner`) does that on a schedule while a
workload runs. Two families:

Server faults (need a server the harness controls; pytest marker ``restart``
for the restarting ones):

``restart_immediate``  the server stops with ``immediate`` (PostgreSQL SIGQUIT:
                       no checkpoint, crash recovery on start; MariaDB SIGKILL)
                       and starts again at once on the same port
``restart_fast``       the same with a ``fast`` shutdown (sessions are told)
``database_down``      a fast shutdown, down for ``seconds``, then back
``terminate_backends`` every client session of the test user is terminated
                       (``pg_terminate_backend`` / ``KILL CONNECTION``),
                       repeatedly during the window; the server stays up

Network faults, through toxiproxy (the workload's connections go through a proxy):

``reset_peer``         every connection is reset (TCP RST) as soon as it carries data
``blackhole``          data is swallowed (``timeout`` toxic): nothing answers;
                       for libpq drivers silent connections are closed after
                       the read timeout (libpq has no read timeout of its own;
                       see :mod:`tether.harness.chaos.timeouts`)
``latency``            every answer is late (``latency`` toxic)
``bandwidth``          answers trickle (``bandwidth`` toxic, KB/s)
``slow_close``         the server ends every session and toxiproxy delays the
                       close by ``delay`` (``slow_close`` toxic): clients see
                       their sessions end late, after sending on them
``limit_data``         every connection is cut after ``bytes`` bytes of answers
                       (``limit_data``), in the middle of a response
``proxy_disabled``     the proxy closes every connection and refuses new ones

and ``none``, a control run. ``FAULTS`` maps each name to a factory;
:func:`make_fault` builds one by name with optional parameters.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..servers import ADMIN_APPLICATION_NAME, DatabaseServer
from ..targets import DriverTarget
from ..toxiproxy import Proxy
from .timeouts import Timeouts, libpq_driver

__all__ = [
    "FAULTS",
    "Blackhole",
    "Fault",
    "FaultContext",
    "NoFault",
    "ProxyDisabled",
    "ServerRestart",
    "SlowClose",
    "TerminateBackends",
    "ToxicFault",
    "make_fault",
    "terminate_client_sessions",
]

log = logging.getLogger("tether.harness.chaos")


@dataclass
class FaultContext:
    """What a fault acts on: the server, the proxy in front of it, the driver target
    (direct, not proxied) and the run's timeouts."""

    server: DatabaseServer
    proxy: Proxy
    target: DriverTarget
    timeouts: Timeouts
    #: Notes a fault leaves for the report (e.g. how many sessions it terminated).
    notes: dict[str, Any] = field(default_factory=dict)


class Fault(abc.ABC):
    """One named fault. ``apply`` starts it, ``hold`` keeps it up until a time
    (default: sleep), ``lift`` ends it. ``lift`` must be safe to call after a
    failed ``apply``."""

    #: The scenario name (``restart_immediate``, ``blackhole``...).
    name: str = "fault"
    #: One line for the report.
    description: str = ""
    #: True when the fault acts through toxiproxy.
    via_proxy: bool = False
    #: True when the fault stops or restarts the server (needs a controllable server).
    restarts_server: bool = False
    #: True when the database cannot be reached at all during the window.
    unreachable: bool = False

    def __init__(self, window: float) -> None:
        if window < 0:
            raise ValueError(f"window: expected seconds >= 0, got {window!r}")
        #: How long the fault is held after ``apply`` returns, in seconds.
        self.window = float(window)

    @abc.abstractmethod
    def apply(self, ctx: FaultContext) -> None:
        """Start the fault."""

    def hold(self, ctx: FaultContext, until: float) -> None:
        """Keep the fault up until ``time.monotonic() >= until``."""
        remaining = until - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    @abc.abstractmethod
    def lift(self, ctx: FaultContext) -> None:
        """End the fault; when it returns the database is reachable again."""

    def params(self) -> dict[str, Any]:
        """The fault's parameters, for the report."""
        return {"window": self.window}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"<{type(self).__name__} {self.name} {params}>"


# -- server faults -------------------------------------------------------------------------


class ServerRestart(Fault):
    """Stop the server with ``mode``, keep it down ``window`` seconds, start it again."""

    restarts_server = True
    unreachable = True

    def __init__(self, mode: str = "immediate", window: float = 0.0, name: str | None = None):
        super().__init__(window)
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode: expected 'fast' or 'immediate', got {mode!r}")
        self.mode = mode
        self.name = name or f"restart_{mode}"
        down = f", down {window:g} s" if window else ""
        self.description = f"server shutdown ({mode}){down}, then started on the same port"

    def apply(self, ctx: FaultContext) -> None:
        ctx.server.stop(self.mode)  # type: ignore[arg-type]

    def lift(self, ctx: FaultContext) -> None:
        ctx.server.start()

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "window": self.window}


def terminate_client_sessions(server: DatabaseServer, user: str | None = None) -> int:
    """Terminate every client session of ``user`` (default: the server's) from outside.

    The harness's own admin sessions are spared. Returns how many were terminated.
    """
    user = user or server.user
    conn = server.admin_connect()
    try:
        cursor = conn.cursor()
        try:
            if server.kind == "postgresql":
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND usename = %s"
                    " AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s",
                    (user, ADMIN_APPLICATION_NAME),
                )
                return int(cursor.fetchall()[0][0])
            cursor.execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE user = %s AND id <> CONNECTION_ID() AND command <> 'Daemon'",
                (user,),
            )
            killed = 0
            for (session_id,) in cursor.fetchall():
                try:
                    cursor.execute(f"KILL CONNECTION {int(session_id)}")
                    killed += 1
                except Exception as exc:  # 1094: the session ended meanwhile
                    args = getattr(exc, "args", ())
                    if not args or args[0] != 1094:
                        raise
            return killed
        finally:
            cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


class TerminateBackends(Fault):
    """Terminate every client session of the test user, every ``every`` seconds
    during the window (at least once)."""

    name = "terminate_backends"
    description = "every client session terminated from the server side, repeatedly"

    def __init__(self, window: float = 1.5, every: float = 0.5) -> None:
        super().__init__(window)
        if every <= 0:
            raise ValueError(f"every: expected seconds > 0, got {every!r}")
        self.every = every

    def _terminate(self, ctx: FaultContext) -> None:
        count = terminate_client_sessions(ctx.server)
        ctx.notes["sessions_terminated"] = ctx.notes.get("sessions_terminated", 0) + count

    def apply(self, ctx: FaultContext) -> None:
        self._terminate(ctx)

    def hold(self, ctx: FaultContext, until: float) -> None:
        while True:
            next_at = time.monotonic() + self.every
            if next_at >= until:
                break
            time.sleep(self.every)
            self._terminate(ctx)
        super().hold(ctx, until)

    def lift(self, ctx: FaultContext) -> None:
        pass

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "every": self.every}


# -- network faults ------------------------------------------------------------------------

ToxicSpec = tuple[str, Mapping[str, Any], str]  # (type, attributes, stream)


class ToxicFault(Fault):
    """One or more toxics on the proxy for the window."""

    via_proxy = True

    def __init__(
        self,
        name: str,
        toxics: list[ToxicSpec],
        *,
        window: float,
        description: str = "",
        unreachable: bool = False,
    ) -> None:
        super().__init__(window)
        self.name = name
        self.toxics = toxics
        self.description = description or ", ".join(f"{t[0]} {dict(t[1])}" for t in toxics)
        self.unreachable = unreachable
        self._added: list[str] = []

    def specs(self, ctx: FaultContext) -> list[ToxicSpec]:
        """The toxics to add (subclasses may depend on the driver)."""
        return self.toxics

    def apply(self, ctx: FaultContext) -> None:
        self._added = []
        for index, (kind, attributes, stream) in enumerate(self.specs(ctx)):
            name = f"chaos_{self.name}_{index}_{stream}"
            ctx.proxy.add_toxic(kind, attributes, stream=stream, name=name)
            self._added.append(name)

    def lift(self, ctx: FaultContext) -> None:
        for name in self._added:
            ctx.proxy.remove_toxic(name)
        self._added = []

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "toxics": [{"type": t, "stream": s, **dict(a)} for t, a, s in self.toxics],
        }


class Blackhole(ToxicFault):
    """Swallow all data both ways (``timeout`` toxic).

    ``close_after`` (seconds, or None for never) makes toxiproxy close a
    connection that stayed silent that long. ``"auto"`` (the default): never
    for PyMySQL, whose ``read_timeout`` must fire; the read timeout for libpq
    drivers, which have none and would wait for the whole window (the way a
    TCP keepalive or ``tcp_user_timeout`` ends the wait on a real network).
    """

    unreachable = True

    def __init__(self, window: float = 3.0, close_after: float | str | None = "auto") -> None:
        super().__init__(
            "blackhole",
            [("timeout", {"timeout": 0}, "upstream"), ("timeout", {"timeout": 0}, "downstream")],
            window=window,
            description="all data swallowed both ways (timeout toxic)",
            unreachable=True,
        )
        if (
            close_after is not None
            and close_after != "auto"
            and (isinstance(close_after, str) or close_after < 0)
        ):
            raise ValueError(f"close_after: expected seconds, None or 'auto', got {close_after!r}")
        self.close_after = close_after
        self._effective: float | None = None
        self._resolved = False

    def specs(self, ctx: FaultContext) -> list[ToxicSpec]:
        close_after = self.close_after
        if close_after == "auto":
            close_after = ctx.timeouts.read if libpq_driver(ctx.target.name) else None
        assert not isinstance(close_after, str)
        self._effective = close_after
        self._resolved = True
        ctx.notes["blackhole_close_after"] = close_after
        millis = round(close_after * 1000) if close_after else 0
        return [("timeout", {"timeout": millis}, s) for s in ("upstream", "downstream")]

    def params(self) -> dict[str, Any]:
        close_after = self._effective if self._resolved else self.close_after
        return {"window": self.window, "close_after": close_after}


class SlowClose(ToxicFault):
    """The server ends every session; toxiproxy delays each close by ``delay`` seconds."""

    restarts_server = False

    def __init__(self, window: float = 2.0, delay: float = 1.5) -> None:
        super().__init__(
            "slow_close",
            [("slow_close", {"delay": round(delay * 1000)}, "downstream")],
            window=window,
            description=f"sessions terminated; their close delayed {delay:g} s (slow_close toxic)",
        )
        self.delay = delay

    def apply(self, ctx: FaultContext) -> None:
        super().apply(ctx)
        count = terminate_client_sessions(ctx.server)
        ctx.notes["sessions_terminated"] = count

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "delay": self.delay}


class ProxyDisabled(Fault):
    """The proxy closes every connection and refuses new ones for the window."""

    name = "proxy_disabled"
    description = "proxy disabled: connections closed, new ones refused"
    via_proxy = True
    unreachable = True

    def __init__(self, window: float = 2.0) -> None:
        super().__init__(window)

    def apply(self, ctx: FaultContext) -> None:
        ctx.proxy.disable()

    def lift(self, ctx: FaultContext) -> None:
        ctx.proxy.enable()


class NoFault(Fault):
    """Nothing happens: a control run (and the schedule of the others)."""

    name = "none"
    description = "no fault (control run)"

    def __init__(self, window: float = 0.0) -> None:
        super().__init__(window)

    def apply(self, ctx: FaultContext) -> None:
        pass

    def lift(self, ctx: FaultContext) -> None:
        pass


# -- the catalogue -------------------------------------------------------------------------


def _restart_immediate(**kw: Any) -> Fault:
    return ServerRestart("immediate", **kw)


def _restart_fast(**kw: Any) -> Fault:
    return ServerRestart("fast", **kw)


def _database_down(window: float = 2.0, mode: str = "fast") -> Fault:
    fault = ServerRestart(mode, window, name="database_down")
    fault.description = f"server shut down ({mode}) for {window:g} s, then started again"
    return fault


def _reset_peer(window: float = 1.5, after_ms: int = 0) -> Fault:
    return ToxicFault(
        "reset_peer",
        [("reset_peer", {"timeout": after_ms}, "upstream")],
        window=window,
        description="every connection reset (TCP RST) when it carries data",
        unreachable=True,
    )


def _latency(window: float = 2.0, latency_ms: int = 200, jitter_ms: int = 50) -> Fault:
    return ToxicFault(
        "latency",
        [("latency", {"latency": latency_ms, "jitter": jitter_ms}, "downstream")],
        window=window,
        description=f"+{latency_ms} ms (±{jitter_ms}) on every answer",
    )


def _bandwidth(window: float = 2.0, rate_kb: int = 2) -> Fault:
    return ToxicFault(
        "bandwidth",
        [("bandwidth", {"rate": rate_kb}, "downstream")],
        window=window,
        description=f"answers limited to {rate_kb} KB/s",
    )


def _limit_data(window: float = 2.0, nbytes: int = 1200) -> Fault:
    return ToxicFault(
        "limit_data",
        [("limit_data", {"bytes": nbytes}, "downstream")],
        window=window,
        description=f"every connection cut after {nbytes} bytes of answers (mid-response)",
    )


#: Every fault by name: a factory taking optional keyword parameters.
FAULTS: dict[str, Callable[..., Fault]] = {
    "restart_immediate": _restart_immediate,
    "restart_fast": _restart_fast,
    "database_down": _database_down,
    "terminate_backends": TerminateBackends,
    "reset_peer": _reset_peer,
    "blackhole": Blackhole,
    "latency": _latency,
    "bandwidth": _bandwidth,
    "slow_close": SlowClose,
    "limit_data": _limit_data,
    "proxy_disabled": ProxyDisabled,
    "none": NoFault,
}


def make_fault(name: str, **params: Any) -> Fault:
    """The fault called ``name`` (a key of :data:`FAULTS`) with ``params``."""
    try:
        factory = FAULTS[name]
    except KeyError:
        raise ValueError(f"name: unknown fault {name!r}; known: {', '.join(FAULTS)}") from None
    return factory(**params)
