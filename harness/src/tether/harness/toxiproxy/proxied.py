"""Proxies in front of the harness's databases: a server behind toxiproxy, a target through it.

:func:`proxy_for` creates a proxy whose upstream is a
:class:`~tether.harness.servers.DatabaseServer`; :func:`proxied_target` turns a
:class:`~tether.harness.targets.DriverTarget` into one whose connections go
through that proxy while its server side (session counts, killing a backend)
still reaches the server directly. That is how the chaos suite points pools
at a proxy instead of the database to apply network faults.
"""

from __future__ import annotations

from ..processes import LOOPBACK
from ..servers import DatabaseServer
from ..targets import DriverTarget
from .client import Proxy, ToxiproxyClient

__all__ = ["proxied_target", "proxy_for"]


def proxy_for(
    client: ToxiproxyClient,
    server: DatabaseServer,
    name: str,
    *,
    listen: str = f"{LOOPBACK}:0",
    upstream_host: str | None = None,
) -> Proxy:
    """A proxy ``name`` in front of ``server`` (``upstream_host`` overrides the host
    toxiproxy uses to reach it, e.g. a compose service name)."""
    host = upstream_host or server.host
    return client.create_proxy(name, f"{host}:{server.port}", listen=listen)


def proxied_target(target: DriverTarget, proxy: Proxy) -> DriverTarget:
    """A copy of ``target`` whose connections go through ``proxy``.

    Only the address changes (``host``/``port``, or ``host="h:p"`` for pgdb);
    the server side (``server``, :meth:`~DriverTarget.session_count`,
    :meth:`~DriverTarget.kill_backend`) is the same server, reached directly.
    Tables from :meth:`~DriverTarget.unique_table` are shared with ``target``,
    so its cleanup drops them.
    """
    if target.server is None:
        raise ValueError(f"target: {target!r} has no server to put a proxy in front of")
    kwargs = dict(target.kwargs)
    if target.name == "pgdb":
        kwargs["host"] = f"{proxy.listen_host}:{proxy.listen_port}"
    else:
        kwargs["host"] = proxy.listen_host
        kwargs["port"] = proxy.listen_port
    copy = DriverTarget(target.name, target.module, target.server, target.args, kwargs)
    copy.tables = target.tables
    object.__setattr__(copy, "_ignored_sessions", target._ignored_sessions)
    return copy
