"""toxiproxy for tests: start Shopify's toxiproxy server, put proxies in front of databases.

`toxiproxy <https://github.com/Shopify/toxiproxy>`_ is a TCP proxy with an HTTP
API that breaks the connections it carries on request: it resets them,
swallows their data, slows them down, cuts them after some bytes, or refuses
new ones. tether's chaos suite points its pools at a proxy instead of the
database to apply those faults. One module per idea:

- :mod:`.client`: the HTTP API (:class:`ToxiproxyClient`, :class:`Proxy`,
  :class:`Toxic`, :class:`ProxyTraffic`), the same for any server.
- :mod:`.server`: the server process of our own (:class:`ToxiproxyServer`,
  :func:`find_toxiproxy_server`, :func:`provide_toxiproxy`).
- :mod:`.proxied`: proxies in front of the harness's databases
  (:func:`proxy_for`, :func:`proxied_target`).

Every name is importable from ``tether.harness.toxiproxy`` itself.
"""

from __future__ import annotations

from .client import (
    Proxy,
    ProxyTraffic,
    Toxic,
    ToxiproxyAPIError,
    ToxiproxyClient,
    ToxiproxyError,
)
from .proxied import proxied_target, proxy_for
from .server import (
    TOXIPROXY_BINARY_NAME,
    TOXIPROXY_BUILD_HINT,
    TOXIPROXY_SERVER_ENV,
    TOXIPROXY_URL_ENV,
    ToxiproxyNotFoundError,
    ToxiproxyServer,
    find_toxiproxy_server,
    provide_toxiproxy,
)
from .server import _repo_root as _repo_root

__all__ = [
    "TOXIPROXY_BINARY_NAME",
    "TOXIPROXY_BUILD_HINT",
    "TOXIPROXY_SERVER_ENV",
    "TOXIPROXY_URL_ENV",
    "Proxy",
    "ProxyTraffic",
    "Toxic",
    "ToxiproxyAPIError",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyNotFoundError",
    "ToxiproxyServer",
    "find_toxiproxy_server",
    "provide_toxiproxy",
    "proxied_target",
    "proxy_for",
]
