"""The toxiproxy server process: find the binary, run it on a free port, stop it again.

:class:`ToxiproxyServer` runs Shopify's server binary as a child process on a
free loopback port (one per process, so each pytest-xdist worker has its
own), with ``-proxy-metrics`` so :meth:`~.client.Proxy.traffic` works, and
stops it again; the process handling is :mod:`tether.harness.processes`.
The binary is found by :func:`find_toxiproxy_server`:
``TETHER_TOXIPROXY_SERVER``, else ``toxiproxy-server`` on ``PATH``, else
``<repo>/.tether/bin/toxiproxy-server`` (where ``nox -s provision`` builds it).
No binary is an error with the build command, never a skipped test.
``TETHER_TOXIPROXY_URL`` names a server somebody else runs (a container)
instead: :func:`provide_toxiproxy` then uses that one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from ..processes import LOOPBACK, ChildProcess, spawn, start_on_free_port, track, untrack
from .client import ToxiproxyClient, ToxiproxyError

__all__ = [
    "TOXIPROXY_BINARY_NAME",
    "TOXIPROXY_BUILD_HINT",
    "TOXIPROXY_SERVER_ENV",
    "TOXIPROXY_URL_ENV",
    "ToxiproxyNotFoundError",
    "ToxiproxyServer",
    "find_toxiproxy_server",
    "provide_toxiproxy",
]

log = logging.getLogger(__name__)

TOXIPROXY_SERVER_ENV = "TETHER_TOXIPROXY_SERVER"
TOXIPROXY_URL_ENV = "TETHER_TOXIPROXY_URL"
TOXIPROXY_BINARY_NAME = "toxiproxy-server"
TOXIPROXY_BUILD_HINT = (
    "build it with `nox -s provision`, or `GOBIN=$PWD/.tether/bin/gobuild go install"
    " github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0` and rename"
    " .tether/bin/gobuild/server to .tether/bin/toxiproxy-server (needs Go >= 1.22),"
    f" or point {TOXIPROXY_SERVER_ENV} at a toxiproxy server binary"
)

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_POLL = 0.01


class ToxiproxyNotFoundError(ToxiproxyError):
    """No toxiproxy server binary: the message says how to build one."""


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


# -- the server process --------------------------------------------------------------------


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
        host: str = LOOPBACK,
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
        self._child: ChildProcess | None = None
        self._lock = threading.Lock()
        self._client: ToxiproxyClient | None = None
        if self._external_url:
            self._client = ToxiproxyClient(self._external_url)

    def __repr__(self) -> str:
        if self._external_url:
            return f"<ToxiproxyServer external {self._external_url}>"
        pid = self.pid
        state = f" pid={pid}" if pid is not None else " stopped"
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
        child = self._child
        return child.pid if child is not None else None

    def is_running(self) -> bool:
        if self._external_url:
            return self.client.alive()
        child = self._child
        return child is not None and child.running()

    def start(self) -> ToxiproxyServer:
        """Start the server and wait until its API answers. No-op when running."""
        with self._lock:
            if self._external_url:
                if not self.client.alive():
                    raise ToxiproxyError(f"toxiproxy at {self._external_url} does not answer")
                return self
            if self._child is not None:
                if self._child.running():
                    return self
                self._child.reap()  # it died: collect it, then start a new one
                self._child = None
            binary = self.binary or find_toxiproxy_server()
            self.binary = binary
            if self.log_path is None:
                fd, name = tempfile.mkstemp(
                    prefix=f"tether-toxiproxy-{os.getpid()}-", suffix=".log"
                )
                os.close(fd)
                self.log_path = Path(name)
            self._child = start_on_free_port(
                lambda port: self._spawn(binary, port),
                port=self.port if self._fixed_port else None,
                error=ToxiproxyError,
                host=self.host,
            )
            self._client = ToxiproxyClient(self.url)
            track(self)
            log.info("started %r (%s)", self, binary)
            return self

    def _spawn(self, binary: Path, port: int) -> ChildProcess:
        assert self.log_path is not None
        self.port = port
        env = dict(os.environ)
        env.setdefault("LOG_LEVEL", "info")  # debug (the default) logs every API call
        probe = ToxiproxyClient(f"http://{self.host}:{port}", timeout=1.0)
        return spawn(
            [str(binary), "-host", self.host, "-port", str(port), "-proxy-metrics"],
            name=f"toxiproxy server {binary} on {self.host}:{port}",
            log_path=self.log_path,
            ready=lambda popen: probe.alive(),
            error=ToxiproxyError,
            port_in_use=("address already in use",),
            timeout=_START_TIMEOUT,
            poll=_POLL,
            pdeathsig="SIGTERM",
            env=env,
        )

    def stop(self) -> None:
        """Stop the server (closing every proxied connection). Idempotent."""
        with self._lock:
            child, self._child = self._child, None
            if child is not None:
                child.stop(signal.SIGTERM, _STOP_TIMEOUT)
                log.info("stopped toxiproxy server on %s:%d", self.host, self.port)
            untrack(self)

    def close(self) -> None:
        """Stop the server (an external server is left alone). Its log file stays."""
        if self._external_url:
            return
        self.stop()

    def __enter__(self) -> ToxiproxyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def provide_toxiproxy(log_path: str | os.PathLike[str] | None = None) -> ToxiproxyServer:
    """A started toxiproxy server: the one ``TETHER_TOXIPROXY_URL`` names, else our own."""
    url = os.environ.get(TOXIPROXY_URL_ENV, "").strip()
    if url:
        return ToxiproxyServer(url=url).start()
    return ToxiproxyServer(log_path=log_path).start()
