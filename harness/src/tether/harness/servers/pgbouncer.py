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

PgBouncer is a local server like :class:`~.postgres.LocalPostgres`
(:class:`~.local._LocalServer`, on :mod:`tether.harness.processes`): a free
port chosen at the first start (tried again when PgBouncer finds it taken:
it logs a warning and would serve only its unix socket)
and kept for every restart, ``setpriv --pdeathsig KILL`` so a killed test
run takes PgBouncer along, closed at exit; its directory (config, auth file,
socket, ``pgbouncer.log``) in the harness's scratch space (:mod:`.scratch`),
where the directories of dead runs are swept. Ready means PgBouncer's own
unix socket accepts. This module says only what is PgBouncer's: the binary,
the config, the signals, the admin console.

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
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..processes import LOOPBACK, PortInUseError, log_tail
from .base import DatabaseServer, HarnessError, ServerUnavailableError, ShutdownMode
from .local import _LocalServer, _running_as_root
from .postgres import _postgres_os_user

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


class PgBouncer(_LocalServer):
    """PgBouncer in ``pool_mode`` in front of ``backend``, a child process on a free port.

    ``settings`` override :data:`DEFAULT_SETTINGS` and add any ``[pgbouncer]``
    setting. The config, auth file, socket and log go to a new temporary
    directory (as root, one the ``postgres`` user owns). ``port`` fixes the
    port; by default the first start chooses a free one.
    """

    _mode_signals: ClassVar[dict[str, signal.Signals]] = {
        "fast": signal.SIGTERM,  # PgBouncer's immediate shutdown: every client closed at once
        "immediate": signal.SIGKILL,
    }
    _pdeathsig: ClassVar[str] = "KILL"
    _dir_prefix: ClassVar[str] = "tether-pgbouncer-"
    _log_name: ClassVar[str] = "pgbouncer.log"
    _port_in_use: ClassVar[tuple[str, ...]] = ("address already in use",)
    _start_timeout: ClassVar[float] = 30.0
    _stop_timeout: ClassVar[float] = 10.0

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
        super().__init__("postgresql", None, backend.user, backend.password, backend.database, port)
        self.backend = backend
        self.pool_mode: PoolMode = pool_mode
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.binary = Path(binary) if binary is not None else find_pgbouncer()
        self._paused = False
        self._owner = _postgres_os_user("PgBouncer") if _running_as_root() else None

    def _name(self) -> str:
        return "pgbouncer"

    def _state(self) -> str:
        if self._closed:
            return " closed"
        pid = self.pid
        where = f" -> :{self.backend.port}"
        return f" pgbouncer {self.pool_mode}{where}" + (f" pid={pid}" if pid else " stopped")

    # -- the hooks of a local server ---------------------------------------------------

    def _prepare(self, base: Path) -> None:
        if self._owner is not None:
            os.chown(base, *self._owner)

    def _command(self) -> list[str]:
        return [str(self.binary), str(self._write_config())]

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        # PgBouncer's own unix socket: a stranger on the TCP port cannot fake that.
        assert self._base is not None
        if not _accepts(self._base / f".s.PGSQL.{self.port}"):
            return False
        # A taken TCP port is only a warning to PgBouncer, logged before it listens on the
        # unix socket; it then serves that socket alone, and clients on the port would reach
        # the stranger. Its log lines carry its pid (setpriv execs it: the same pid).
        output = log_tail(self.log_path, lines=200)
        if f"[{proc.pid}] WARNING cannot listen on {LOOPBACK}:{self.port}" in output:
            raise PortInUseError(
                f"pgbouncer on port {self.port}: the port is in use; log {self.log_path}"
            )
        return True

    def _provision(self) -> None:
        pass  # the test user and database are the backend's

    def _popen_identity(self) -> dict[str, Any]:
        if self._owner is None:
            return {}
        uid, gid = self._owner
        return {"user": uid, "group": gid, "extra_groups": []}

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
            log_path = self._base / self._log_name
            log_path.touch()
            for path in (auth, ini, log_path):
                os.chown(path, *self._owner)
        return ini

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start PgBouncer (the backend too if it is down) and wait until it accepts clients."""
        with self._lock:
            if self._closed:
                raise HarnessError(f"{self!r} is closed")
            self.backend.ensure_running()
            super().start()

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop PgBouncer: ``fast`` SIGTERM (every client connection closed at once),
        ``immediate`` SIGKILL. The backend keeps running."""
        with self._lock:
            super().stop(mode)
            self._paused = False  # a new process starts unpaused

    def kill(self) -> None:
        """SIGKILL PgBouncer and wait for it; the backend keeps running."""
        with self._lock:
            super().kill()
            self._paused = False

    def ensure_running(self) -> None:
        """Start the backend and PgBouncer again if a test left either down (or paused)."""
        self.backend.ensure_running()
        if not self.is_running():
            log.info("%r is down: starting it again", self)
            self.start()
        elif self._paused:
            log.info("%r is paused: resuming it", self)
            self.resume()

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
