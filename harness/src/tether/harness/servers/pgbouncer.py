"""A real PgBouncer in front of the harness's PostgreSQL, in transaction or session mode.

Applications that outgrow one process put PgBouncer between their pools and
PostgreSQL. PgBouncer's *pool mode* decides what a client connection is:

``session``      a client connection holds one server session for its life;
                 PgBouncer runs ``server_reset_query`` (``DISCARD ALL``) when
                 the client leaves. Everything a session can do works.
``transaction``  a client holds a server session only for one transaction;
                 the next transaction may run on another one. Session state
                 (``SET``, temp tables, named prepared statements such as
                 psycopg's automatic ``_pg3_N``) does not follow the client.

:class:`PgBouncer` runs Debian's ``/usr/sbin/pgbouncer`` (1.18 measured) as a
child process on a free loopback port, one per pool mode and per process
(so each pytest-xdist worker has its own), in front of a
:class:`~tether.harness.servers.DatabaseServer`. It is a ``DatabaseServer``
itself: ``host``/``port`` are PgBouncer's, ``user``/``password``/``database``
the backend's, so ``DriverTarget.build("psycopg", bouncer)`` aims any driver at
it like at any other server. The administrator's side door
(:meth:`PgBouncer.admin_connect`, ``admin_execute``, hence the targets'
session counts and ``kill_backend``) goes to the database behind PgBouncer;
PgBouncer's own admin console is :meth:`PgBouncer.console` (``SHOW POOLS``,
``PAUSE``, ``RESUME``...).

The chaos levers: ``stop``/``restart``/``kill`` act on PgBouncer (``fast`` is
SIGTERM, PgBouncer's immediate shutdown that closes every client; ``immediate``
and ``kill`` are SIGKILL), :meth:`PgBouncer.pause`/:meth:`PgBouncer.resume`
use the console, and ``bouncer.backend.restart()`` restarts the database
behind it. PgBouncer refuses to run as root: as root it runs as the
``postgres`` OS user in a directory that user owns, as the harness runs
PostgreSQL.

The process handling is :mod:`tether.harness.processes`, as for every child
of the harness: a free port chosen at the first start (tried again when
PgBouncer finds it taken) and kept for every restart, ``setpriv --pdeathsig
KILL`` so a killed test run takes PgBouncer along, close at exit. Ready means
PgBouncer's own unix socket accepts (a stranger on the TCP port cannot fake
that). Its directory (config, auth file, socket, ``pgbouncer.log``) goes to
the harness's scratch space (:mod:`.scratch`), where dead runs' directories
are swept.

Settings that differ from PgBouncer's defaults, and why:
``server_login_retry = 0.5`` (default 15 s: after one failed connect to a
database that was restarting, PgBouncer would refuse every client for 15 s),
``query_wait_timeout = 10`` (default 120 s: a query waits that long for a
server session while the database is down, then fails and PgBouncer closes
the client), ``max_client_conn = 1000``,
``default_pool_size = 20``. The password is in PgBouncer's ``auth_file``
(mode 0600, in a directory only its user can enter); it never appears in
``repr()``, logs or errors raised here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..processes import LOOPBACK, ChildProcess, spawn, start_on_free_port, track, untrack
from .base import (
    DatabaseServer,
    HarnessError,
    ServerStartError,
    ServerUnavailableError,
    ShutdownMode,
    _check_mode,
)
from .local import _running_as_root
from .postgres import _postgres_os_user
from .scratch import _scratch_dir, _sweep_stale_dirs

__all__ = [
    "PGBOUNCER_BINARY_ENV",
    "POOL_MODES",
    "PgBouncer",
    "PoolMode",
    "find_pgbouncer",
]

log = logging.getLogger(__name__)

PoolMode = Literal["transaction", "session"]
#: The pool modes the harness runs (PgBouncer's third, ``statement``, forbids transactions).
POOL_MODES: tuple[PoolMode, ...] = ("transaction", "session")
PGBOUNCER_BINARY_ENV = "TETHER_PGBOUNCER"
INSTALL_HINT = "apt-get install -y pgbouncer"

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_POLL = 0.005
_SIGNALS: dict[str, signal.Signals] = {"fast": signal.SIGTERM, "immediate": signal.SIGKILL}
#: What PgBouncer logs when its port is taken (lower case, as :func:`spawn` compares).
_PORT_IN_USE = ("address already in use",)
#: Its directories are ``tether-pgbouncer-<pid>-...``, swept by :func:`_sweep_stale_dirs`.
_DIR_PREFIX = "tether-pgbouncer-"

#: PgBouncer's settings that differ from its defaults (see the module docstring).
DEFAULT_SETTINGS: dict[str, str] = {
    "server_login_retry": "0.5",
    "query_wait_timeout": "10",
    "max_client_conn": "1000",
    "default_pool_size": "20",
}


def find_pgbouncer() -> Path:
    """The ``pgbouncer`` binary: ``$TETHER_PGBOUNCER``, ``PATH``, else ``/usr/sbin``."""
    configured = os.environ.get(PGBOUNCER_BINARY_ENV)
    if configured:
        return Path(configured)
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("pgbouncer", path=search)
    if found is None:
        raise ServerUnavailableError(
            f"pgbouncer not found (looked in ${PGBOUNCER_BINARY_ENV}, PATH, /usr/sbin);"
            f" install it: {INSTALL_HINT} (nox -s provision does)"
        )
    return Path(found)


def _quote(value: str) -> str:
    """A value in PgBouncer's ini/auth_file syntax: double quotes, doubled inside."""
    return '"' + value.replace('"', '""') + '"'


class PgBouncer(DatabaseServer):
    """PgBouncer in ``pool_mode`` in front of ``backend``, a child process on a free port.

    ``settings`` override :data:`DEFAULT_SETTINGS` and add any ``[pgbouncer]``
    setting. ``workdir`` is where the config, auth file, socket and log go
    (a new temporary directory when None; as root one the ``postgres`` user
    owns).
    """

    controllable: ClassVar[bool] = True

    def __init__(
        self,
        backend: DatabaseServer,
        pool_mode: PoolMode = "transaction",
        *,
        settings: dict[str, str] | None = None,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(backend, DatabaseServer) or backend.kind != "postgresql":
            raise TypeError(f"backend: expected a PostgreSQL DatabaseServer, got {backend!r}")
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode: expected 'transaction' or 'session', got {pool_mode!r}")
        super().__init__(
            "postgresql",
            LOOPBACK,
            port or 0,
            backend.user,
            backend.password,
            backend.database,
        )
        self.backend = backend
        self.pool_mode: PoolMode = pool_mode
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.binary = Path(binary) if binary is not None else find_pgbouncer()
        self._fixed_port = bool(port)
        self._lock = threading.RLock()
        self._child: ChildProcess | None = None
        self._base: Path | None = None
        self._closed = False
        self._paused = False
        self._owner = _postgres_os_user("PgBouncer") if _running_as_root() else None

    # -- paths and state ---------------------------------------------------------------

    @property
    def base_dir(self) -> Path | None:
        """PgBouncer's directory (config, auth file, unix socket, log), once started."""
        return self._base

    @property
    def log_path(self) -> Path | None:
        """PgBouncer's log (its stdout and stderr)."""
        return self._base / "pgbouncer.log" if self._base is not None else None

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def _state(self) -> str:
        if self._closed:
            return " closed"
        pid = self.pid
        where = f" -> :{self.backend.port}"
        return f" pgbouncer {self.pool_mode}{where}" + (f" pid={pid}" if pid else " stopped")

    def is_running(self) -> bool:
        child = self._child
        return child is not None and child.running()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start PgBouncer (the backend too if it is down) and wait until it accepts clients."""
        with self._lock:
            if self._closed:
                raise HarnessError(f"{self!r} is closed")
            self.backend.ensure_running()
            if self.is_running():
                return
            self._reap()
            if self._base is None:
                self._base = self._make_base()
                track(self)
            # The first start chooses the port; restarts keep it, so clients see it come back.
            choose = not self._fixed_port and self.port == 0
            self._child = start_on_free_port(
                self._spawn, port=None if choose else self.port, error=ServerStartError
            )
            log.info("started %r", self)

    def _make_base(self) -> Path:
        parent = _scratch_dir() or Path(tempfile.gettempdir())
        _sweep_stale_dirs(parent)
        base = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent))
        if self._owner is not None:
            os.chown(base, *self._owner)
        return base

    def _write_config(self) -> Path:
        assert self._base is not None
        auth = self._base / "userlist.txt"
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{_quote(self.user)} {_quote(self.password)}\n")
        backend = self.backend
        settings = {
            "listen_addr": LOOPBACK,
            "listen_port": str(self.port),
            "unix_socket_dir": str(self._base),
            "auth_type": "scram-sha-256",
            "auth_file": str(auth),
            "admin_users": self.user,
            "pool_mode": self.pool_mode,
            # psycopg sends it at connect; PgBouncer refuses unknown startup parameters.
            "ignore_startup_parameters": "extra_float_digits",
            **self.settings,
        }
        lines = ["[databases]", f"* = host={backend.host} port={backend.port}", "", "[pgbouncer]"]
        lines += [f"{name} = {value}" for name, value in settings.items()]
        ini = self._base / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        if self._owner is not None:
            for path in (auth, ini):
                os.chown(path, *self._owner)
        return ini

    def _spawn(self, port: int) -> ChildProcess:
        assert self._base is not None
        self.port = port  # before _write_config(), which puts it in pgbouncer.ini
        ini = self._write_config()
        log_path = self._base / "pgbouncer.log"
        identity: dict[str, Any] = {}
        if self._owner is not None:
            identity = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
            log_path.touch()
            os.chown(log_path, *self._owner)
        socket_path = self._base / f".s.PGSQL.{port}"
        return spawn(
            [str(self.binary), str(ini)],
            name=f"pgbouncer on port {port}",
            log_path=log_path,
            ready=lambda _popen: _accepts(socket_path),
            error=ServerStartError,
            port_in_use=_PORT_IN_USE,
            timeout=_START_TIMEOUT,
            poll=_POLL,
            pdeathsig="KILL",
            **identity,
        )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop PgBouncer: ``fast`` SIGTERM (every client connection closed at once),
        ``immediate`` SIGKILL. The backend keeps running."""
        _check_mode(mode)
        with self._lock:
            child = self._child
            self._paused = False  # a new process starts unpaused
            if child is None or not child.running():
                self._reap()
                return
            if not child.stop(_SIGNALS[mode], _STOP_TIMEOUT):
                log.warning(
                    "%r ignored its %s shutdown for %.0fs: killed it", self, mode, _STOP_TIMEOUT
                )
            self._child = None
            log.info("stopped pgbouncer on port %d (%s)", self.port, mode)

    def kill(self) -> None:
        """SIGKILL PgBouncer and wait for it; the backend keeps running."""
        self.stop("immediate")

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop PgBouncer with ``mode`` and start it again on the same port."""
        with self._lock:
            self.stop(mode)
            self.start()

    def ensure_running(self) -> None:
        """Start the backend and PgBouncer again if a test left either down (or paused)."""
        self.backend.ensure_running()
        if not self.is_running():
            log.info("%r is down: starting it again", self)
            self.start()
        elif self._paused:
            log.info("%r is paused: resuming it", self)
            self.resume()

    def _reap(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.reap()

    def close(self) -> None:
        """Stop PgBouncer and delete its directory (the backend is left alone). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._reap()
            finally:
                untrack(self)
                if self._base is not None:
                    shutil.rmtree(self._base, ignore_errors=True)

    # -- the database behind it --------------------------------------------------------

    def admin_connect(self, database: str | None = None) -> Any:
        """The backend's admin connection: harness administration bypasses PgBouncer."""
        return self.backend.admin_connect(database)

    # -- PgBouncer's admin console -----------------------------------------------------

    def console_connect(self) -> Any:
        """A new psycopg connection to PgBouncer's admin console (database ``pgbouncer``).

        Autocommit and never prepared: the console speaks only the simple query
        protocol and knows no ``BEGIN``. The caller closes it.
        """
        import psycopg

        if not self.is_running():
            raise HarnessError(f"{self!r} is not running")
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="pgbouncer",
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=10,
        )

    def console(self, command: str) -> list[dict[str, Any]]:
        """Run one console command (``SHOW POOLS``, ``RELOAD``...); rows as dicts."""
        with contextlib.closing(self.console_connect()) as conn:
            cursor = conn.execute(command, prepare=False)
            if cursor.description is None:
                return []
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW what`` on the console (``POOLS``, ``CLIENTS``, ``SERVERS``, ``CONFIG``...)."""
        if not what.replace("_", "").isalpha():
            raise ValueError(f"what: expected a SHOW keyword such as 'POOLS', got {what!r}")
        return self.console(f"SHOW {what}")

    def config_value(self, name: str) -> str:
        """One setting as PgBouncer reports it (``SHOW CONFIG``)."""
        for row in self.show("CONFIG"):
            if row["key"] == name:
                return str(row["value"])
        raise KeyError(name)

    def client_count(self, database: str | None = None) -> int:
        """Client connections of the test user to ``database`` (default: the server's)."""
        database = database or self.database
        rows = self.show("CLIENTS")
        return sum(1 for r in rows if r["user"] == self.user and r["database"] == database)

    def pause(self, timeout: float = 10.0) -> None:
        """``PAUSE``: wait until every server session is released, then hold new queries.

        In transaction mode it returns once the running transactions ended; in
        session mode only when every client has disconnected (a server session
        is released only then). After ``timeout`` seconds of waiting the pause
        is called off (``RESUME``) and :class:`HarnessError` raised. Clients
        may connect while paused; their queries wait (at most
        ``query_wait_timeout``) until :meth:`resume`.
        """
        import select

        from psycopg import pq

        self._paused = True
        conn = self.console_connect()
        try:
            pgconn = conn.pgconn
            pgconn.send_query(b"PAUSE")  # sent on libpq directly: the wait is ours to bound
            deadline = time.monotonic() + timeout
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    result = pgconn.get_result()
                    if result is not None and result.status != pq.ExecStatus.COMMAND_OK:
                        message = (result.error_message or b"").decode("utf-8", "replace")
                        raise HarnessError(f"PAUSE on {self!r} failed: {message.strip()}")
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                select.select([pgconn.socket], [], [], remaining)
        finally:
            conn.close()  # on a timeout this also abandons the PAUSE command
        self.resume()
        raise HarnessError(
            f"PAUSE on {self!r} did not complete within {timeout:g}s: a client holds a"
            " server session (an open transaction, or any client in session mode)"
        )

    def resume(self) -> None:
        """``RESUME``: let the held queries run (PgBouncer's "not paused" error is ignored)."""
        import psycopg

        try:
            self.console("RESUME")
        except psycopg.Error as exc:
            if "not paused" not in str(exc):
                raise
        self._paused = False


def _accepts(path: Path) -> bool:
    """True when PgBouncer's own unix socket accepts a connection (a stranger on the TCP
    port cannot fake that)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True
