"""toxiproxy's HTTP API, spoken with ``urllib``: proxies, their switches, their toxics.

`toxiproxy <https://github.com/Shopify/toxiproxy>`_ is a TCP proxy with an HTTP
API that breaks the connections it carries on request: it resets them
(``reset_peer``), swallows their data (``timeout``), slows them down
(``latency``, ``bandwidth``, ``slow_close``), cuts them after some bytes
(``limit_data``), or refuses new ones (a disabled proxy).

:class:`ToxiproxyClient` is the API of one server; :class:`Proxy` one proxy on
it, whose methods act on the server at once; :class:`Toxic` a toxic as the
server reports it; :class:`ProxyTraffic` the bytes a proxy carried (from the
server's Prometheus metrics). The ``toxiproxy-python`` package keeps the
server address in class attributes (one server per process, racy with
threads), sends requests without a timeout and needs ``requests`` and
``future``; the API is five endpoints, so the harness speaks it directly:
every call has a timeout, environment HTTP proxies are bypassed (the server
is local), and errors (:class:`ToxiproxyAPIError`) name the request and the
server's answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from ..processes import LOOPBACK
from ..servers.base import HarnessError

__all__ = [
    "Proxy",
    "ProxyTraffic",
    "Toxic",
    "ToxiproxyAPIError",
    "ToxiproxyClient",
    "ToxiproxyError",
]

log = logging.getLogger(__name__)

_API_TIMEOUT = 5.0
_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class ToxiproxyError(HarnessError):
    """toxiproxy could not be started, reached, or did not do what was asked."""


class ToxiproxyAPIError(ToxiproxyError):
    """The toxiproxy API answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"toxiproxy API {method} {path} answered {status}: {body.strip()}")
        self.method = method
        self.path = path
        self.status = status
        self.body = body


# -- the API -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Toxic:
    """A toxic on a proxy, as the API reports it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, Any]

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Toxic:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            stream=str(data.get("stream", "downstream")),
            toxicity=float(data.get("toxicity", 1.0)),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclasses.dataclass(frozen=True)
class ProxyTraffic:
    """Bytes a proxy carried since the server started (from its Prometheus metrics).

    ``upstream``: client to database; ``downstream``: database to client.
    """

    upstream: int
    downstream: int

    @property
    def total(self) -> int:
        return self.upstream + self.downstream

    def __sub__(self, other: ProxyTraffic) -> ProxyTraffic:
        return ProxyTraffic(self.upstream - other.upstream, self.downstream - other.downstream)


class ToxiproxyClient:
    """The toxiproxy HTTP API at ``url`` (``http://host:port``), with a timeout on every call."""

    def __init__(self, url: str, *, timeout: float = _API_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # No environment proxies: the toxiproxy server is ours and (nearly always) local.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<ToxiproxyClient {self.url}>"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one API request; return the decoded JSON answer (None when empty)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            body_text = exc.read().decode("utf-8", "replace")
            raise ToxiproxyAPIError(method, path, exc.code, body_text) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToxiproxyError(
                f"toxiproxy at {self.url} did not answer {method} {path}: {reason}"
            ) from exc
        if not raw.strip():
            return None
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    # -- server ------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version (``git`` for a ``go install`` build)."""
        answer = self.request("GET", "/version")
        if isinstance(answer, Mapping):
            return str(answer.get("version", answer))
        return str(answer)

    def alive(self) -> bool:
        """True when the API answers."""
        try:
            self.version()
        except ToxiproxyError:
            return False
        return True

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.request("POST", "/reset")

    def metrics(self) -> str:
        """The Prometheus metrics text (empty unless the server runs with ``-proxy-metrics``)."""
        req = urllib.request.Request(self.url + "/metrics", method="GET")
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                return bytes(response.read()).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise ToxiproxyAPIError("GET", "/metrics", exc.code, "") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"toxiproxy at {self.url} did not answer GET /metrics") from exc

    def traffic(self, proxy: str) -> ProxyTraffic | None:
        """Bytes proxy ``proxy`` received so far, or None when the server has no proxy metrics."""
        text = self.metrics()
        up = down = 0
        seen = False
        for line in text.splitlines():
            match = _METRIC_LINE.match(line.strip())
            if match is None or match["name"] != "toxiproxy_proxy_received_bytes_total":
                continue
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("proxy") != proxy:
                continue
            seen = True
            value = int(float(match["value"]))
            if labels.get("direction") == "upstream":
                up += value
            elif labels.get("direction") == "downstream":
                down += value
        if not seen:
            # A proxy that carried nothing yet has no series; a server without
            # -proxy-metrics has none for any proxy.
            return ProxyTraffic(0, 0) if "toxiproxy_proxy" in text else None
        return ProxyTraffic(up, down)

    # -- proxies -----------------------------------------------------------------------

    def proxies(self) -> dict[str, Proxy]:
        """Every proxy on the server, by name."""
        answer = self.request("GET", "/proxies") or {}
        return {name: Proxy.from_api(self, data) for name, data in dict(answer).items()}

    def get_proxy(self, name: str) -> Proxy:
        """The proxy called ``name`` (:class:`ToxiproxyAPIError` 404 if there is none)."""
        return Proxy.from_api(self, self.request("GET", f"/proxies/{name}"))

    def create_proxy(
        self,
        name: str,
        upstream: str,
        *,
        listen: str = f"{LOOPBACK}:0",
        enabled: bool = True,
        replace: bool = True,
    ) -> Proxy:
        """Create proxy ``name`` forwarding ``listen`` to ``upstream`` (``host:port``).

        ``listen`` port 0 lets the server choose a free port (read it from
        :attr:`Proxy.listen_port`). With ``replace``, an existing proxy of that
        name (left by an earlier run on a shared server) is deleted first.
        """
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        try:
            data = self.request("POST", "/proxies", body)
        except ToxiproxyAPIError as exc:
            if exc.status != 409 or not replace:
                raise
            self.delete_proxy(name)
            data = self.request("POST", "/proxies", body)
        proxy = Proxy.from_api(self, data)
        log.info("toxiproxy %s: proxy %s %s -> %s", self.url, name, proxy.listen, upstream)
        return proxy

    def delete_proxy(self, name: str) -> None:
        """Delete proxy ``name`` (closing its connections); no error if it does not exist."""
        try:
            self.request("DELETE", f"/proxies/{name}")
        except ToxiproxyAPIError as exc:
            if exc.status != 404:
                raise


class Proxy:
    """One toxiproxy proxy: its address, its switches and its toxics.

    ``listen`` is where clients connect (``host:port``), ``upstream`` where the
    proxy forwards to. Methods act on the server at once.
    """

    def __init__(
        self,
        client: ToxiproxyClient,
        name: str,
        listen: str,
        upstream: str,
        enabled: bool = True,
    ) -> None:
        self.client = client
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = enabled

    @classmethod
    def from_api(cls, client: ToxiproxyClient, data: Any) -> Proxy:
        if not isinstance(data, Mapping):
            raise ToxiproxyError(f"toxiproxy answered {data!r} where a proxy was expected")
        return cls(
            client,
            str(data["name"]),
            str(data["listen"]),
            str(data["upstream"]),
            bool(data.get("enabled", True)),
        )

    def __repr__(self) -> str:
        state = "" if self.enabled else " disabled"
        return f"<Proxy {self.name} {self.listen} -> {self.upstream}{state}>"

    @property
    def listen_host(self) -> str:
        """The host clients connect to (``0.0.0.0`` / ``[::]`` listeners map to loopback)."""
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        return LOOPBACK if host in ("", "0.0.0.0", "::") else host

    @property
    def listen_port(self) -> int:
        """The port clients connect to."""
        return int(self.listen.rsplit(":", 1)[1])

    def refresh(self) -> Proxy:
        """Re-read ``listen``, ``upstream`` and ``enabled`` from the server."""
        fresh = self.client.get_proxy(self.name)
        self.listen, self.upstream, self.enabled = fresh.listen, fresh.upstream, fresh.enabled
        return self

    # -- switches ----------------------------------------------------------------------

    def _update(self, **fields: Any) -> None:
        path = f"/proxies/{self.name}"
        try:
            data = self.client.request("PATCH", path, fields)
        except ToxiproxyAPIError as exc:
            if exc.status != 405:  # servers before 2.6 know only POST
                raise
            data = self.client.request("POST", path, fields)
        fresh = Proxy.from_api(self.client, data)
        self.listen, self.upstream, self.enabled = fresh.listen, fresh.upstream, fresh.enabled

    def disable(self) -> None:
        """Close every connection through the proxy and refuse new ones."""
        self._update(enabled=False)

    def enable(self) -> None:
        """Accept connections again (on the same listen address)."""
        self._update(enabled=True)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[Proxy]:
        """The proxy down for the ``with`` block, up again afterwards."""
        self.disable()
        try:
            yield self
        finally:
            self.enable()

    def cut_connections(self) -> None:
        """Close every connection through the proxy now and keep accepting new ones."""
        self.disable()
        self.enable()

    # -- toxics ------------------------------------------------------------------------

    def toxics(self) -> list[Toxic]:
        """The toxics on this proxy."""
        answer = self.client.request("GET", f"/proxies/{self.name}/toxics") or []
        return [Toxic.from_api(item) for item in answer]

    def add_toxic(
        self,
        type: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> Toxic:
        """Add a toxic (``latency``, ``bandwidth``, ``slow_close``, ``timeout``,
        ``reset_peer``, ``slicer``, ``limit_data``) to one direction of the proxy.

        ``stream``: ``"downstream"`` (database to client) or ``"upstream"``.
        ``toxicity``: the share of connections it applies to. The name
        defaults to ``<type>_<stream>``.
        """
        if stream not in ("upstream", "downstream"):
            raise ValueError(f"stream: expected 'upstream' or 'downstream', got {stream!r}")
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes or {}),
        }
        toxic = Toxic.from_api(self.client.request("POST", f"/proxies/{self.name}/toxics", body))
        log.debug("proxy %s: added toxic %s %s", self.name, toxic.name, dict(toxic.attributes))
        return toxic

    def remove_toxic(self, name: str) -> None:
        """Remove toxic ``name``; no error if it is not there."""
        try:
            self.client.request("DELETE", f"/proxies/{self.name}/toxics/{name}")
        except ToxiproxyAPIError as exc:
            if exc.status != 404:
                raise

    def clear_toxics(self) -> None:
        """Remove every toxic from this proxy."""
        for toxic in self.toxics():
            self.remove_toxic(toxic.name)

    @contextlib.contextmanager
    def toxic(
        self,
        type: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> Iterator[Toxic]:
        """A toxic for the duration of the ``with`` block."""
        toxic = self.add_toxic(type, attributes, stream=stream, toxicity=toxicity, name=name)
        try:
            yield toxic
        finally:
            self.remove_toxic(toxic.name)

    def reset(self) -> None:
        """Remove every toxic and enable the proxy: the state a test should leave behind."""
        self.clear_toxics()
        if not self.enabled or not self.refresh().enabled:
            self.enable()

    def traffic(self) -> ProxyTraffic | None:
        """Bytes carried so far (None when the server has no proxy metrics)."""
        return self.client.traffic(self.name)

    def delete(self) -> None:
        """Delete the proxy from the server."""
        self.client.delete_proxy(self.name)
