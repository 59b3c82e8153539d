"""toxiproxy for tests: start Shopify's toxiproxy server, put proxies in front of databases.

`toxiproxy <https://github.com/Shopify/toxiproxy>`_ is a TCP proxy with an HTTP
API that breaks the connections it carries on request: it resets them
(``reset_peer``), swallows their data (``timeout``), slows them down
(``latency``, ``bandwidth``, ``slow_close``), cuts them after some bytes
(``limit_data``), or refuses new ones (a disabled proxy). tether's chaos suite
points its pools at a proxy instead of the database to apply those faults.

:class:`ToxiproxyServer` runs the server binary as a child process on a free
loopback port (one per process, so each pytest-xdist worker has its own) and
stops it again. The binary is found by :func:`find_toxiproxy_server`:
``TETHER_TOXIPROXY_SERVER``, else ``toxiproxy-server`` on ``PATH``, else
``<repo>/.tether/bin/toxiproxy-server`` (where ``nox -s provision`` builds it).
No binary is an error with the build command, never a skipped test.
``TETHER_TOXIPROXY_URL`` names a server somebody else runs (a container)
instead: :func:`provide_toxiproxy` then uses that one.

:class:`ToxiproxyClient` talks to the server's HTTP API with ``urllib`` from the
standard library. The ``toxiproxy-python`` package keeps the server address
in class attributes (one server per process, racy with threads), sends
requests without a timeout and needs ``requests`` and ``future``; the API is
five endpoints, so the harness speaks it directly: every call has a timeout,
environment HTTP proxies are bypassed (the server is local), and errors name
the request and the server's answer.

:func:`proxied_target` turns a :class:`~tether.harness.targets.DriverTarget`
into one whose connections go through a :class:`Proxy`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .servers import DatabaseServer, HarnessError, free_port
from .targets import DriverTarget

__all__ = [
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

log = logging.getLogger("tether.harness.toxiproxy")

TOXIPROXY_SERVER_ENV = "TETHER_TOXIPROXY_SERVER"
TOXIPROXY_URL_ENV = "TETHER_TOXIPROXY_URL"
TOXIPROXY_BINARY_NAME = "toxiproxy-server"
TOXIPROXY_BUILD_HINT = (
    "build it with `nox -s provision`, or `GOBIN=$PWD/.tether/bin/gobuild go install"
    " github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0` and rename"
    " .tether/bin/gobuild/server to .tether/bin/toxiproxy-server (needs Go >= 1.22),"
    f" or point {TOXIPROXY_SERVER_ENV} at a toxiproxy server binary"
)

_LOOPBACK = "127.0.0.1"
_START_TIMEOUT = 15.0
_API_TIMEOUT = 5.0
_POLL = 0.01
_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# -- errors --------------------------------------------------------------------------------


class ToxiproxyError(HarnessError):
    """toxiproxy could not be started, reached, or did not do what was asked."""


class ToxiproxyNotFoundError(ToxiproxyError):
    """No toxiproxy server binary: the message says how to build one."""


class ToxiproxyAPIError(ToxiproxyError):
    """The toxiproxy API answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"toxiproxy API {method} {path} answered {status}: {body.strip()}")
        self.method = method
        self.path = path
        self.status = status
        self.body = body


# -- finding the binary --------------------------------------------------------------------


def _repo_root() -> Path | None:
    """The checkout this module lives in (the directory holding ``noxfile.py``), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "noxfile.py").is_file() and (parent / "harness").is_dir():
            return parent
    cwd = Path.cwd()
    for parent in (cwd, *cwd.parents):
        if (parent / "noxfile.py").is_file() and (parent / "harness").is_dir():
            return parent
    return None


def find_toxiproxy_server() -> Path:
    """The toxiproxy server binary to run.

    In this order: ``$TETHER_TOXIPROXY_SERVER`` (must exist), ``toxiproxy-server``
    on ``PATH``, ``<repo>/.tether/bin/toxiproxy-server``. Raises
    :class:`ToxiproxyNotFoundError` with the build command when there is none.
    """
    configured = os.environ.get(TOXIPROXY_SERVER_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ToxiproxyNotFoundError(
            f"{TOXIPROXY_SERVER_ENV}={configured!r} is not an executable file; "
            + TOXIPROXY_BUILD_HINT
        )
    on_path = shutil.which(TOXIPROXY_BINARY_NAME)
    if on_path:
        return Path(on_path)
    root = _repo_root()
    if root is not None:
        built = root / ".tether" / "bin" / TOXIPROXY_BINARY_NAME
        if built.is_file() and os.access(built, os.X_OK):
            return built
    raise ToxiproxyNotFoundError(
        f"no toxiproxy server: {TOXIPROXY_SERVER_ENV} is not set, {TOXIPROXY_BINARY_NAME!r}"
        " is not on PATH"
        + (
            f" and {root / '.tether' / 'bin' / TOXIPROXY_BINARY_NAME} does not exist"
            if root
            else ""
        )
        + "; "
        + TOXIPROXY_BUILD_HINT
    )


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
        listen: str = f"{_LOOPBACK}:0",
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
        return _LOOPBACK if host in ("", "0.0.0.0", "::") else host

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


# -- the server process --------------------------------------------------------------------

_live: set[ToxiproxyServer] = set()
_live_lock = threading.Lock()


def _close_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        try:
            server.close()
        except Exception:
            log.exception("closing %r at exit failed", server)


atexit.register(_close_all)


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig SIGTERM --`` on Linux from the main thread: a killed test run
    (no atexit) takes its toxiproxy server along."""
    if not sys.platform.startswith("linux"):
        return []
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "SIGTERM", "--"] if setpriv else []


class ToxiproxyServer:
    """A toxiproxy server process of our own on a free loopback port.

    ``with ToxiproxyServer() as server:`` starts it (with ``-proxy-metrics``, so
    :meth:`Proxy.traffic` works) and stops it. ``server.client`` is its API.
    ``url`` set instead of a binary means a server somebody else runs: nothing
    is started or stopped (see :func:`provide_toxiproxy`).
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        host: str = _LOOPBACK,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        url: str | None = None,
    ) -> None:
        self._external_url = url.rstrip("/") if url else None
        self.binary = Path(binary) if binary is not None else None
        self.host = host
        self.port = port or 0
        self._fixed_port = bool(port)
        self.log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._client: ToxiproxyClient | None = None
        if self._external_url:
            self._client = ToxiproxyClient(self._external_url)

    def __repr__(self) -> str:
        if self._external_url:
            return f"<ToxiproxyServer external {self._external_url}>"
        proc = self._proc
        state = f" pid={proc.pid}" if proc is not None and proc.poll() is None else " stopped"
        return f"<ToxiproxyServer {self.host}:{self.port}{state}>"

    @property
    def external(self) -> bool:
        """True when the server is not ours (``url`` given): start/stop do nothing."""
        return self._external_url is not None

    @property
    def url(self) -> str:
        """The API's base URL."""
        if self._external_url:
            return self._external_url
        return f"http://{self.host}:{self.port}"

    @property
    def client(self) -> ToxiproxyClient:
        """The API of this server (the server must be started)."""
        if self._client is None:
            raise ToxiproxyError(f"{self!r} is not started")
        return self._client

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self) -> bool:
        if self._external_url:
            return self.client.alive()
        proc = self._proc
        return proc is not None and proc.poll() is None

    def start(self) -> ToxiproxyServer:
        """Start the server and wait until its API answers. No-op when running."""
        with self._lock:
            if self._external_url:
                if not self.client.alive():
                    raise ToxiproxyError(f"toxiproxy at {self._external_url} does not answer")
                return self
            if self._proc is not None and self._proc.poll() is None:
                return self
            binary = self.binary or find_toxiproxy_server()
            self.binary = binary
            if self.log_path is None:
                fd, name = tempfile.mkstemp(
                    prefix=f"tether-toxiproxy-{os.getpid()}-", suffix=".log"
                )
                os.close(fd)
                self.log_path = Path(name)
            attempts = 1 if self._fixed_port else 5
            for attempt in range(1, attempts + 1):
                if not self._fixed_port:
                    self.port = free_port(self.host)
                try:
                    self._spawn(binary)
                    break
                except _PortInUseError:
                    if attempt == attempts:
                        raise
                    log.info("toxiproxy port %d was taken: retrying", self.port)
            with _live_lock:
                _live.add(self)
            log.info("started %r (%s)", self, binary)
            return self

    def _spawn(self, binary: Path) -> None:
        assert self.log_path is not None
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [
            *_pdeathsig_prefix(),
            str(binary),
            "-host",
            self.host,
            "-port",
            str(self.port),
            "-proxy-metrics",
        ]
        env = dict(os.environ)
        env.setdefault("LOG_LEVEL", "info")  # debug (the default) logs every API call
        with open(self.log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._proc = proc
        client = ToxiproxyClient(f"http://{self.host}:{self.port}", timeout=1.0)
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                self._proc = None
                output = self._log_tail(offset)
                if "address already in use" in output.lower():
                    raise _PortInUseError(f"toxiproxy: port {self.port} is in use")
                raise ToxiproxyError(
                    f"toxiproxy server {binary} exited with status {proc.returncode} while"
                    f" starting on {self.host}:{self.port}; log {self.log_path}:\n{output}"
                )
            if client.alive():
                break
            if time.monotonic() > deadline:
                self._terminate(proc)
                self._proc = None
                raise ToxiproxyError(
                    f"toxiproxy server on {self.host}:{self.port} did not answer after"
                    f" {_START_TIMEOUT:.0f}s; log {self.log_path}:\n{self._log_tail(offset)}"
                )
            time.sleep(_POLL)
        self._client = ToxiproxyClient(client.url)

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server (closing every proxied connection). Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                self._terminate(proc)
                log.info("stopped toxiproxy server on %s:%d", self.host, self.port)
            with _live_lock:
                _live.discard(self)

    def close(self) -> None:
        """Stop the server (an external server is left alone). Its log file stays."""
        if self._external_url:
            return
        self.stop()

    def __enter__(self) -> ToxiproxyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _PortInUseError(ToxiproxyError):
    pass


def provide_toxiproxy(log_path: str | os.PathLike[str] | None = None) -> ToxiproxyServer:
    """A started toxiproxy server: the one ``TETHER_TOXIPROXY_URL`` names, else our own."""
    url = os.environ.get(TOXIPROXY_URL_ENV, "").strip()
    if url:
        return ToxiproxyServer(url=url).start()
    return ToxiproxyServer(log_path=log_path).start()


# -- proxies for databases -----------------------------------------------------------------


def proxy_for(
    client: ToxiproxyClient,
    server: DatabaseServer,
    name: str,
    *,
    listen: str = f"{_LOOPBACK}:0",
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
