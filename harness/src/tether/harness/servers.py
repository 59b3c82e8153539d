"""Real database servers for tests: start them, crash them, restart them on the same port.

A connection pool is only as good as its behaviour when the database misbehaves:
the server restarts under it, kills one of its sessions, or dies outright. Mocks
cannot show that, so tether's tests run against real PostgreSQL and MariaDB
servers, and this module provides them.

Every server is a :class:`DatabaseServer`: connection parameters (``host``,
``port``, ``user``, ``password``, ``database``, ``url()``), an administrator's
side door (``admin_execute()`` runs SQL as a superuser on its own short-lived
connection) and, when the harness owns the server (``controllable``), the
chaos levers ``stop()``, ``restart(mode)`` and ``kill()``. A restarted server
keeps its port, so clients, pools and toxiproxy proxies pointing at it see
the same address come back.

Where a server comes from is decided by :func:`provide_postgres` /
:func:`provide_mariadb`, in this order:

1. ``TETHER_PG_DSN`` / ``TETHER_MARIADB_DSN``: an :class:`ExternalServer` somebody
   else runs (CI services, ``docker compose up``). Not controllable.
2. A Docker engine that answers (unless ``TETHER_USE_DOCKER=0``): a
   :class:`ContainerServer` from testcontainers.
3. The local binaries: :class:`LocalPostgres` (``initdb`` + ``postgres``) or
   :class:`LocalMariaDB` (``mariadb-install-db`` + ``mariadbd``), throwaway
   servers in temporary directories on a free loopback port.

If none is possible the harness raises :class:`ServerUnavailableError` with the
install command: a missing server is an error, never a skipped test.

Local servers run as direct children of the Python process (not daemonized
through ``pg_ctl`` or ``mysqld_safe``), so the harness can signal them, ``wait()``
them after a kill (a zombie still answers ``kill(pid, 0)``) and be sure nothing
restarts them behind its back. Shutdown modes are the signals ``pg_ctl -m``
would send: PostgreSQL ``fast`` = SIGINT, ``immediate`` = SIGQUIT; MariaDB
``fast`` = SIGTERM, ``immediate`` = SIGKILL. ``kill()`` SIGKILLs the server's
whole process group (the PostgreSQL postmaster and its backends), like a
crash of the machine's database process.

``initdb`` and ``pg_ctl`` refuse to run as root; when the harness runs as root,
PostgreSQL runs as the ``postgres`` OS user in a directory that user owns
(pytest's temporary directories are root-only). Server directories go to
/dev/shm when it has room (``TETHER_HARNESS_TMPDIR`` overrides): a data
directory is ~1000 small files, slow to create on some disks. The data
directory built by ``initdb`` / ``mariadb-install-db`` (0.5-1.5 s) is cached
once per machine as a template (``TETHER_HARNESS_CACHE``, under a file lock)
and copied for each server, which then starts in ~0.15 s.

Passwords never appear in ``repr()``, log records or error messages raised here.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

if sys.platform != "win32":
    import fcntl
    import pwd

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "INSTALL_HINT",
    "ContainerServer",
    "DatabaseServer",
    "ExternalServer",
    "HarnessError",
    "LocalMariaDB",
    "LocalPostgres",
    "ServerKind",
    "ServerNotControllableError",
    "ServerStartError",
    "ServerUnavailableError",
    "ShutdownMode",
    "docker_available",
    "free_port",
    "provide_mariadb",
    "provide_postgres",
]

log = logging.getLogger("tether.harness.servers")

ServerKind = Literal["postgresql", "mariadb"]
ShutdownMode = Literal["fast", "immediate"]
Row = tuple[Any, ...]

DEFAULT_USER = "tether"
DEFAULT_PASSWORD = "tether-secret"
DEFAULT_DATABASE = "tether"

PG_DSN_ENV = "TETHER_PG_DSN"
MARIADB_DSN_ENV = "TETHER_MARIADB_DSN"
USE_DOCKER_ENV = "TETHER_USE_DOCKER"
CACHE_ENV = "TETHER_HARNESS_CACHE"
SCRATCH_ENV = "TETHER_HARNESS_TMPDIR"
PG_BINDIR_ENV = "TETHER_PG_BINDIR"
MARIADB_BINDIR_ENV = "TETHER_MARIADB_BINDIR"

INSTALL_HINT = "apt-get install -y postgresql libpq-dev mariadb-server"

#: ``application_name`` of the harness's own PostgreSQL admin sessions (not counted as clients).
ADMIN_APPLICATION_NAME = "tether-harness-admin"

_LOOPBACK = "127.0.0.1"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_POLL = 0.005
_MODES: tuple[str, ...] = ("fast", "immediate")
_CACHE_FORMAT = "1"  # bump when the template build changes


# -- errors --------------------------------------------------------------------------------


class HarnessError(RuntimeError):
    """Base of the harness's own errors."""


class ServerUnavailableError(HarnessError):
    """No server of the requested kind can be provided (binaries missing, no engine...)."""


class ServerStartError(HarnessError):
    """A server process did not start or did not become ready."""


class ServerNotControllableError(HarnessError):
    """The server is not the harness's to stop, restart or kill (an external server)."""


# -- small helpers -------------------------------------------------------------------------


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (bind port 0 and read it back).

    Another process may take it before the server binds it; local servers
    retry with a new port when their first start fails with "address in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_ident(kind: ServerKind, name: str) -> str:
    if kind == "postgresql":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


def _running_as_root() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0


def _tail(path: Path | None, lines: int = 25, start: int = 0) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _pdeathsig_prefix(sig: str) -> list[str]:
    """Ask the kernel to signal the server when the process that started it dies.

    A pytest run that is itself SIGKILLed or SIGTERMed runs no atexit handlers;
    ``setpriv --pdeathsig`` keeps such a run from leaking servers. The signal
    fires when the *thread* that forked the child exits, so it is only used
    from the main thread (where that means the process).
    """
    if not sys.platform.startswith("linux"):
        return []
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, "--"] if setpriv else []


def _binary_fingerprint(path: Path) -> str:
    st = path.resolve().stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _cache_root() -> Path | None:
    """The template cache directory, or None when caching is off or unsafe."""
    if sys.platform == "win32":
        return None
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    scratch = _scratch_dir() or Path(tempfile.gettempdir())
    root = Path(value) if value else scratch / f"tether-harness-cache-{os.geteuid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        st = os.lstat(root)
        if st.st_uid != os.geteuid() or not os.path.isdir(root) or os.path.islink(root):
            log.warning("template cache %s is not a directory of ours: not caching", root)
            return None
        # The postgres OS user must be able to reach its build directory inside.
        os.chmod(root, 0o755)
    except OSError as exc:
        log.warning("template cache %s unusable (%s): not caching", root, exc)
        return None
    return root


def _cached_template(
    kind: str, fingerprint: str, build: Callable[[Path], None], owner: tuple[int, int] | None
) -> Path | None:
    """A data directory built once per machine by ``build(dest)``, or None without a cache.

    The build runs under an exclusive file lock, into a temporary directory that
    is renamed into place when complete, so concurrent xdist workers build it
    once and nobody ever copies a half-built template.
    """
    root = _cache_root()
    if root is None:
        return None
    key = f"{kind}-" + hashlib.sha256(f"{_CACHE_FORMAT}|{fingerprint}".encode()).hexdigest()[:16]
    final = root / key
    if final.is_dir():
        return final / "data"
    with open(root / f"{key}.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if final.is_dir():
            return final / "data"
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=root))
        try:
            if owner is not None:
                os.chown(build_dir, *owner)
            started = time.monotonic()
            build(build_dir / "data")
            os.rename(build_dir, final)
            log.info("built %s template %s in %.2fs", kind, final, time.monotonic() - started)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
    return final / "data"


_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 2 * 1024**3
_STALE_DIR = re.compile(r"tether-(?:pg|mariadb)-(\d+)-")
_swept: set[Path] = set()


def _scratch_dir() -> Path | None:
    """Where server directories go: ``$TETHER_HARNESS_TMPDIR``, else /dev/shm if roomy.

    Data directories hold ~1000 small files; on some disks creating them costs
    ~1 ms each, on tmpfs almost nothing. /dev/shm is used only with at least
    2 GiB free (Docker's default /dev/shm is 64 MiB). None: use the caller's
    work dir or the system temp dir.
    """
    value = os.environ.get(SCRATCH_ENV)
    if value:
        return Path(value)
    try:
        st = os.statvfs(_SHM)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < _SHM_MIN_FREE or not os.access(_SHM, os.W_OK | os.X_OK):
        return None
    return _SHM


def _sweep_stale_dirs(parent: Path) -> None:
    """Delete server directories left by harness processes that died without cleaning up."""
    if parent in _swept:
        return
    _swept.add(parent)
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _STALE_DIR.match(entry.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                log.info("removing %s, left by dead process %s", entry, match.group(1))
                shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass  # alive, another user's


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a data directory keeping modes and owners (``cp -a``)."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True, capture_output=True)


# -- the interface ------------------------------------------------------------------------


class DatabaseServer(abc.ABC):
    """A database server tests can connect to, and (if ``controllable``) break.

    ``host``, ``port``, ``user``, ``password`` and ``database`` are what a client
    needs; ``user`` is a superuser-like account with a password, the way real
    applications connect. ``admin_execute()`` runs SQL as the server's
    superuser on a short-lived connection of its own.
    """

    #: True when the harness may stop, restart and kill the server.
    controllable: ClassVar[bool] = True

    def __init__(
        self,
        kind: ServerKind,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
    ) -> None:
        if kind not in ("postgresql", "mariadb"):
            raise ValueError(f"kind: expected 'postgresql' or 'mariadb', got {kind!r}")
        self.kind: ServerKind = kind
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database

    # -- lifecycle (subclasses) --------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server (a no-op when it is running) and wait until it accepts clients."""

    @abc.abstractmethod
    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Shut the server down (``"fast"`` or ``"immediate"``) and leave it down."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL the server, wait for it to be gone, and leave it down."""

    @abc.abstractmethod
    def is_running(self) -> bool:
        """True when the server process is up (for external servers: when it answers)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the server and delete everything it left on disk. Idempotent."""

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Shut down with ``mode``, start again on the same port, wait until ready."""
        _check_mode(mode)
        self.stop(mode)
        self.start()

    def ensure_running(self) -> None:
        """Start the server again if a test left it stopped or killed."""
        if self.controllable and not self.is_running():
            log.info("%r is down: starting it again", self)
            self.start()

    # -- addressing --------------------------------------------------------------------

    def url(self, database: str | None = None) -> str:
        """``postgresql://user:pw@host:port/db`` or ``mysql://user:pw@host:port/db``."""
        return self._url(self.password, database)

    def redacted_url(self, database: str | None = None) -> str:
        """:meth:`url` with the password replaced by ``***``, for logs and messages."""
        return self._url("***" if self.password else "", database)

    def _url(self, password: str, database: str | None) -> str:
        scheme = "postgresql" if self.kind == "postgresql" else "mysql"
        user = urllib.parse.quote(self.user, safe="")
        auth = f"{user}:{urllib.parse.quote(password, safe='*')}" if password else user
        db = urllib.parse.quote(database or self.database, safe="")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{db}"

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.kind} {self.user}@{self.host}:{self.port}"
            f"/{self.database}{self._state()}>"
        )

    def _state(self) -> str:
        return ""

    def __enter__(self) -> DatabaseServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- administration ----------------------------------------------------------------

    def admin_connect(self, database: str | None = None) -> Any:
        """A new autocommit DB-API connection as the superuser (psycopg or PyMySQL).

        The caller closes it. The default connects over TCP with the server's
        own credentials; local servers use the bootstrap superuser over the
        unix socket instead, so admin sessions are not the test user's.
        """
        if self.kind == "postgresql":
            import psycopg

            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                dbname=database or self.database,
                autocommit=True,
                connect_timeout=10,
                application_name=ADMIN_APPLICATION_NAME,
            )
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database or self.database,
            autocommit=True,
            connect_timeout=10,
        )

    def admin_execute(
        self, sql: str, params: Sequence[Any] | None = None, *, database: str | None = None
    ) -> list[Row]:
        """Run one statement as the superuser on its own connection; return its rows.

        ``params`` use the ``%s`` style of psycopg and PyMySQL. Statements that
        return no rows give ``[]``.
        """
        with contextlib.closing(self.admin_connect(database)) as conn:
            return _execute(conn, sql, params)

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists (idempotent, safe across workers)."""
        if self.kind == "mariadb":
            self.admin_execute(f"CREATE DATABASE IF NOT EXISTS {_quote_ident(self.kind, name)}")
            return
        import psycopg

        if self.admin_execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
            return
        try:
            self.admin_execute(f"CREATE DATABASE {_quote_ident(self.kind, name)}")
        except psycopg.errors.DuplicateDatabase:
            pass  # another worker was quicker
        except psycopg.errors.UniqueViolation:
            pass  # the same race, reported from pg_database's unique index

    def server_version(self) -> str:
        """The server's version string (``SHOW server_version`` / ``SELECT VERSION()``)."""
        sql = "SHOW server_version" if self.kind == "postgresql" else "SELECT VERSION()"
        return str(self.admin_execute(sql)[0][0])


def _execute(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[Row]:
    cursor = conn.cursor()
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, tuple(params))
        if cursor.description is None:
            return []
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode: expected 'fast' or 'immediate', got {mode!r}")


# -- local processes -----------------------------------------------------------------------

_live_servers: set[_LocalServer] = set()
_live_lock = threading.Lock()


def _close_live_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        try:
            server.close()
        except Exception:
            log.exception("closing %r at exit failed", server)


atexit.register(_close_live_servers)


class _PortInUseError(ServerStartError):
    pass


class _LocalServer(DatabaseServer):
    """A server process that is a child of this Python process, in a temporary directory."""

    controllable: ClassVar[bool] = True
    #: Signals for the shutdown modes, and for the parent-death safety net.
    _mode_signals: ClassVar[dict[str, signal.Signals]]
    _pdeathsig: ClassVar[str]
    _dir_prefix: ClassVar[str]

    def __init__(
        self,
        kind: ServerKind,
        workdir: str | os.PathLike[str] | None,
        user: str,
        password: str,
        database: str,
        port: int | None,
    ) -> None:
        super().__init__(kind, _LOOPBACK, port or 0, user, password, database)
        self._workdir = Path(workdir) if workdir is not None else None
        self._fixed_port = bool(port)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: Path | None = None
        self._provisioned = False
        self._ever_started = False
        self._closed = False

    # -- hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _prepare(self, base: Path) -> None:
        """Create the data directory inside ``base`` (first start only)."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    @abc.abstractmethod
    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """True once the server started by ``proc`` accepts connections."""

    @abc.abstractmethod
    def _provision(self) -> None:
        """Create the test user and database (after the first start)."""

    def _popen_identity(self) -> dict[str, Any]:
        """Extra ``Popen`` arguments to run the server as another OS user."""
        return {}

    def _base_parent(self) -> Path | None:
        return _scratch_dir() or self._workdir

    def _link_from_workdir(self, base: Path) -> None:
        # Point the caller's work dir (pytest's tmp dir) at the server's dir and log.
        workdir = self._workdir
        if workdir is None or workdir in base.parents:
            return
        with contextlib.suppress(OSError):
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / base.name).symlink_to(base)

    # -- paths -------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path | None:
        """The server's temporary directory (data, socket, log), once started."""
        return self._base

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr of the server process)."""
        return self._base / "server.log" if self._base is not None else None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _state(self) -> str:
        if self._closed:
            return " closed"
        pid = self.pid
        return f" pid={pid}" if pid is not None else " stopped"

    # -- lifecycle ---------------------------------------------------------------------

    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise HarnessError(f"{self!r} is closed")
            if self.is_running():
                return
            self._reap()
            started = time.monotonic()
            if self._base is None:
                parent = self._base_parent() or Path(tempfile.gettempdir())
                parent.mkdir(parents=True, exist_ok=True)
                _sweep_stale_dirs(parent)
                prefix = f"{self._dir_prefix}{os.getpid()}-"
                base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
                with _live_lock:
                    _live_servers.add(self)
                try:
                    self._link_from_workdir(base)
                    self._prepare(base)
                except BaseException:
                    shutil.rmtree(base, ignore_errors=True)
                    with _live_lock:
                        _live_servers.discard(self)
                    raise
                self._base = base
            choose_port = not self._fixed_port and not self._ever_started
            attempts = 5 if choose_port else 1
            for attempt in range(1, attempts + 1):
                if choose_port:
                    self.port = free_port()
                try:
                    self._spawn()
                    break
                except _PortInUseError:
                    if attempt == attempts:
                        raise
                    log.info("port %d was taken before %s bound it: retrying", self.port, self.kind)
            self._ever_started = True
            if not self._provisioned:
                self._provision()
                self._provisioned = True
            log.info("started %r in %.2fs", self, time.monotonic() - started)

    def _spawn(self) -> None:
        assert self._base is not None
        log_path = self._base / "server.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        argv = _pdeathsig_prefix(self._pdeathsig) + self._command()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill() takes the backends too
                **self._popen_identity(),
            )
        self._proc = proc
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while not self._ready(proc):
                if proc.poll() is not None:
                    self._proc = None
                    output = _tail(log_path, start=offset)
                    if "Address already in use" in output or "Bind on TCP/IP port" in output:
                        raise _PortInUseError(f"{self.kind}: port {self.port} is in use")
                    raise ServerStartError(
                        f"{self.kind} server exited with status {proc.returncode} while"
                        f" starting on port {self.port}; log {log_path}:\n{output}"
                    )
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.kind} server on port {self.port} not ready after"
                        f" {_START_TIMEOUT:.0f}s; log {log_path}:\n{_tail(log_path, start=offset)}"
                    )
                time.sleep(_POLL)
        except BaseException:
            if proc.poll() is None:
                self._killpg(proc)
            self._proc = None
            raise

    def restart(self, mode: ShutdownMode = "fast") -> None:
        with self._lock:  # no other thread starts or stops it in between
            super().restart(mode)

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                self._reap()
                return
            started = time.monotonic()
            proc.send_signal(self._mode_signals[mode])
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%r ignored its %s shutdown for %.0fs: killing it", self, mode, _STOP_TIMEOUT
                )
                self._killpg(proc)
            self._proc = None
            log.info(
                "stopped %s server on port %d (%s) in %.2fs",
                self.kind,
                self.port,
                mode,
                time.monotonic() - started,
            )

    def kill(self) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                self._reap()
                return
            self._killpg(proc)
            self._proc = None
            log.info("killed %s server on port %d", self.kind, self.port)

    def _killpg(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                self._killpg(proc)
            else:
                proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.is_running():
                    self.stop("immediate")
            except Exception:
                log.exception("stopping %r failed; killing it", self)
                self._reap()
            finally:
                self._reap()
                with _live_lock:
                    _live_servers.discard(self)
                if self._base is not None:
                    shutil.rmtree(self._base, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------


def _find_pg_bindir() -> Path:
    candidates: list[Path] = []
    env = os.environ.get(PG_BINDIR_ENV)
    if env:
        candidates.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))

    def version(p: Path) -> tuple[int, ...]:
        digits = p.parent.name.split(".")
        return tuple(int(d) for d in digits if d.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise ServerUnavailableError(
        "PostgreSQL server binaries (initdb, postgres) not found"
        f" (looked in ${PG_BINDIR_ENV}, pg_config --bindir, /usr/lib/postgresql/*/bin, PATH)."
        f" Install them: {INSTALL_HINT}; or set {PG_DSN_ENV} to a server's URL."
    )


def _postgres_os_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailableError(
            "running as root, PostgreSQL must run as the 'postgres' OS user, which does not"
            f" exist; install the server package ({INSTALL_HINT}) or run as a non-root user"
        ) from None
    return entry.pw_uid, entry.pw_gid


class LocalPostgres(_LocalServer):
    """A throwaway PostgreSQL cluster: ``initdb`` in a temp dir, ``postgres`` as a child.

    Clients connect over TCP to 127.0.0.1 with SCRAM password authentication as
    ``user`` (a superuser); the harness administers the server as the bootstrap
    superuser ``postgres`` over the unix socket (trust). Runs with
    ``fsync=off``: fine for tests, and a killed server still keeps committed
    data (the operating system has it).
    """

    _mode_signals: ClassVar[dict[str, signal.Signals]] = {
        "fast": signal.SIGINT,
        "immediate": signal.SIGQUIT,
    }
    _pdeathsig: ClassVar[str] = "QUIT"
    _dir_prefix: ClassVar[str] = "tether-pg-"
    #: Name of the superuser ``initdb`` creates; the harness's admin account.
    bootstrap_superuser: ClassVar[str] = "postgres"

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
        port: int | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """Describe the server; :meth:`start` creates and starts it.

        ``workdir`` holds the server's directory unless the harness runs as
        root (then the system temp dir is used: the ``postgres`` OS user must
        own it). ``port`` defaults to a free port chosen at the first start.
        ``settings`` are extra ``-c name=value`` server settings.
        """
        super().__init__("postgresql", workdir, user, password, database, port)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else _find_pg_bindir()
        self.settings = dict(settings or {})
        self._owner = _postgres_os_user() if _running_as_root() else None

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory, once created."""
        return self._base / "data" if self._base is not None else None

    def _base_parent(self) -> Path | None:
        # pytest's tmp dirs are root-only: the postgres user could not enter them.
        return _scratch_dir() or (None if self._owner is not None else self._workdir)

    def _popen_identity(self) -> dict[str, Any]:
        if self._owner is None:
            return {}
        uid, gid = self._owner
        return {"user": uid, "group": gid, "extra_groups": []}

    def _initdb(self, dest: Path) -> None:
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(dest),
            "-U",
            self.bootstrap_superuser,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, check=False, **self._popen_identity()
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"initdb failed with status {result.returncode}:\n{result.stdout}{result.stderr}"
            )

    def _prepare(self, base: Path) -> None:
        if self._owner is not None:
            os.chown(base, *self._owner)
        data = base / "data"
        fingerprint = "|".join(
            [_binary_fingerprint(self.bin_dir / "initdb"), self.bootstrap_superuser]
        )
        template = _cached_template("postgresql", fingerprint, self._initdb, self._owner)
        if template is not None:
            _copy_tree(template, data)
        else:
            self._initdb(data)

    def _command(self) -> list[str]:
        assert self._base is not None
        settings = {
            "listen_addresses": _LOOPBACK,
            "unix_socket_directories": str(self._base),
            "fsync": "off",
            "max_connections": "200",
            # In the data dir, not /dev/shm: a killed server must not leave segments behind.
            "dynamic_shared_memory_type": "mmap",
        }
        settings.update(self.settings)
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self._base / "data"), "-p", str(self.port)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        return cmd

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        # postmaster.pid: line 1 the pid, line 8 "ready" once it accepts connections
        # (what pg_ctl -w polls). Check the pid: a killed server leaves a stale file.
        assert self._base is not None
        try:
            lines = (self._base / "data" / "postmaster.pid").read_text().splitlines()
            return len(lines) >= 8 and int(lines[0]) == proc.pid and lines[7].strip() == "ready"
        except (OSError, ValueError):
            return False

    def admin_connect(self, database: str | None = None) -> Any:
        import psycopg

        if self._base is None:
            raise HarnessError(f"{self!r} was never started")
        return psycopg.connect(
            host=str(self._base),
            port=self.port,
            user=self.bootstrap_superuser,
            dbname=database or self.database,
            autocommit=True,
            connect_timeout=10,
            application_name=ADMIN_APPLICATION_NAME,
        )

    def _provision(self) -> None:
        from psycopg import sql

        with contextlib.closing(self.admin_connect("postgres")) as conn:
            # A failing statement would be logged with its text: keep the password out.
            _execute(conn, "SET log_min_error_statement = panic")
            _execute(conn, "SET log_statement = none")
            exists = _execute(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
            verb = "ALTER" if exists else "CREATE"
            statement = sql.SQL("{} ROLE {} WITH SUPERUSER LOGIN PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(self.user), sql.Literal(self.password)
            )
            conn.execute(statement)
            if not _execute(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)):
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.database), sql.Identifier(self.user)
                    )
                )


# -- MariaDB -------------------------------------------------------------------------------


_SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def _find_mariadb_binaries() -> tuple[Path, Path]:
    dirs: list[str] = []
    env = os.environ.get(MARIADB_BINDIR_ENV)
    if env:
        dirs.append(env)
    dirs += [*os.environ.get("PATH", "").split(os.pathsep), *_SBIN_DIRS]
    search = os.pathsep.join(dirs)
    found_server = shutil.which("mariadbd", path=search)
    found_install = shutil.which("mariadb-install-db", path=search) or shutil.which(
        "mysql_install_db", path=search
    )
    server = Path(found_server) if found_server else None
    install = Path(found_install) if found_install else None
    if server is None or install is None:
        raise ServerUnavailableError(
            "MariaDB server binaries (mariadbd, mariadb-install-db) not found"
            f" (looked in ${MARIADB_BINDIR_ENV}, PATH, /usr/sbin)."
            f" Install them: {INSTALL_HINT}; or set {MARIADB_DSN_ENV} to a server's URL."
        )
    return server, install


class LocalMariaDB(_LocalServer):
    """A throwaway MariaDB server: ``mariadb-install-db`` in a temp dir, ``mariadbd`` as a child.

    ``mariadbd`` runs directly, never through ``mysqld_safe`` (which would restart
    it after a kill). Clients connect over TCP to 127.0.0.1 as ``user`` (all
    privileges, from 127.0.0.1 and localhost); the harness administers the
    server as ``root`` over the unix socket. InnoDB writes its log to the OS at
    each commit without syncing (``innodb_flush_log_at_trx_commit=2``): a killed
    server keeps committed data, like PostgreSQL with ``fsync=off``.
    """

    _mode_signals: ClassVar[dict[str, signal.Signals]] = {
        "fast": signal.SIGTERM,
        "immediate": signal.SIGKILL,
    }
    _pdeathsig: ClassVar[str] = "KILL"
    _dir_prefix: ClassVar[str] = "tether-mariadb-"
    _innodb_log_file_size: ClassVar[str] = "8M"  # default 96M: slow to copy, useless here

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
        port: int | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """Describe the server; :meth:`start` creates and starts it.

        ``options`` are extra ``mariadbd`` command-line options (``--name=value``).
        """
        super().__init__("mariadb", workdir, user, password, database, port)
        self.server_binary, self.install_binary = _find_mariadb_binaries()
        self.options = list(options)

    @property
    def data_dir(self) -> Path | None:
        """The server's data directory, once created."""
        return self._base / "data" if self._base is not None else None

    @property
    def socket_path(self) -> Path | None:
        """The server's unix socket, once created."""
        return self._base / "mariadbd.sock" if self._base is not None else None

    def _install(self, dest: Path) -> None:
        cmd = [
            str(self.install_binary),
            "--no-defaults",  # must come first
            f"--datadir={dest}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            f"--innodb-log-file-size={self._innodb_log_file_size}",
        ]
        if _running_as_root():
            cmd.insert(3, "--user=root")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerStartError(
                f"mariadb-install-db failed with status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def _prepare(self, base: Path) -> None:
        data = base / "data"
        fingerprint = "|".join(
            [
                _binary_fingerprint(self.server_binary),
                _binary_fingerprint(self.install_binary),
                self._innodb_log_file_size,
            ]
        )
        template = _cached_template("mariadb", fingerprint, self._install, None)
        if template is not None:
            _copy_tree(template, data)
        else:
            self._install(data)

    def _command(self) -> list[str]:
        assert self._base is not None
        cmd = [
            str(self.server_binary),
            "--no-defaults",  # must come first
            f"--datadir={self._base / 'data'}",
            f"--port={self.port}",
            f"--bind-address={_LOOPBACK}",
            f"--socket={self._base / 'mariadbd.sock'}",
            f"--pid-file={self._base / 'mariadbd.pid'}",
            "--skip-name-resolve",
            "--skip-log-bin",
            f"--innodb-log-file-size={self._innodb_log_file_size}",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]
        if _running_as_root():
            cmd.append("--user=root")
        return cmd + self.options

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        # mariadbd binds TCP before the unix socket: our own socket answering means our
        # server (not a stranger that took the port) is listening.
        assert self._base is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self._base / "mariadbd.sock"))
            except OSError:
                return False
            return True

    def admin_connect(self, database: str | None = None) -> Any:
        import pymysql

        if self._base is None:
            raise HarnessError(f"{self!r} was never started")
        if database is None and self._provisioned:
            database = self.database  # before provisioning it does not exist yet
        return pymysql.connect(
            unix_socket=str(self._base / "mariadbd.sock"),
            user="root",
            database=database,
            autocommit=True,
            connect_timeout=10,
        )

    def _provision(self) -> None:
        with contextlib.closing(self.admin_connect()) as conn:
            for host in (_LOOPBACK, "localhost"):
                _execute(
                    conn,
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                    (self.user, host, self.password),
                )
                _execute(
                    conn, "ALTER USER %s@%s IDENTIFIED BY %s", (self.user, host, self.password)
                )
                _execute(
                    conn,
                    "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION",
                    (self.user, host),
                )
            _execute(
                conn, f"CREATE DATABASE IF NOT EXISTS {_quote_ident('mariadb', self.database)}"
            )


# -- servers somebody else runs ------------------------------------------------------------


class ExternalServer(DatabaseServer):
    """A server the harness does not own, given by a URL (``TETHER_PG_DSN``...).

    ``postgresql://user:pw@host:port/db`` (also ``postgres://``) or
    ``mysql://`` / ``mariadb://``. The user should be a superuser (PostgreSQL)
    or hold all privileges (MariaDB) for ``create_database()`` and
    ``admin_execute()``. Not controllable: ``stop()``, ``restart()`` and
    ``kill()`` raise :class:`ServerNotControllableError`.
    """

    controllable: ClassVar[bool] = False

    _SCHEMES: ClassVar[dict[str, ServerKind]] = {
        "postgresql": "postgresql",
        "postgres": "postgresql",
        "mysql": "mariadb",
        "mariadb": "mariadb",
    }

    @classmethod
    def from_dsn(cls, dsn: str, *, source: str = "DSN") -> ExternalServer:
        """Parse ``dsn``; ``source`` names it in errors (e.g. the environment variable)."""
        parts = urllib.parse.urlsplit(dsn)
        scheme = parts.scheme.split("+")[0].lower()
        kind = cls._SCHEMES.get(scheme)
        if kind is None:
            raise ValueError(
                f"{source}: unsupported scheme {parts.scheme!r}; expected postgresql:// or mysql://"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{source}: invalid port") from None
        database = urllib.parse.unquote(parts.path.lstrip("/"))
        if not parts.hostname or not parts.username or not database:
            raise ValueError(f"{source}: expected {scheme}://user:password@host:port/database")
        return cls(
            kind,
            parts.hostname,
            port or (5432 if kind == "postgresql" else 3306),
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
            database,
        )

    def start(self) -> None:
        """Nothing to start: check that the server answers."""
        if not self.is_running():
            raise ServerUnavailableError(f"{self!r} does not answer at {self.redacted_url()}")

    def _refuse(self, action: str) -> ServerNotControllableError:
        return ServerNotControllableError(
            f"cannot {action} {self!r}: the harness does not own external servers"
            " (unset TETHER_PG_DSN / TETHER_MARIADB_DSN to get controllable local servers,"
            " or deselect these tests with -m 'not restart')"
        )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        raise self._refuse("stop")

    def restart(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        raise self._refuse("restart")

    def kill(self) -> None:
        raise self._refuse("kill")

    def is_running(self) -> bool:
        try:
            with contextlib.closing(self.admin_connect()):
                return True
        except Exception:
            return False

    def close(self) -> None:
        """Nothing to clean up: the server is not ours."""

    def _state(self) -> str:
        return " external"


def docker_available() -> bool:
    """True when a Docker engine answers within 2 s (``docker.from_env().ping()``)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class ContainerServer(DatabaseServer):
    """A PostgreSQL 15 or MariaDB 10.11 container from testcontainers.

    The host port is chosen by the harness and bound explicitly, so it
    survives restarts. Modes: PostgreSQL ``fast`` is ``docker stop`` (the image's
    stop signal is SIGINT, a fast shutdown) and ``immediate`` is SIGQUIT to the
    container; MariaDB ``fast`` is ``docker stop`` (SIGTERM), ``immediate`` is
    ``docker kill`` (SIGKILL). ``kill()`` is ``docker kill`` for both. The
    superuser for ``admin_execute()`` is the image's (the test user for
    PostgreSQL, root for MariaDB).
    """

    controllable: ClassVar[bool] = True
    IMAGES: ClassVar[dict[str, str]] = {"postgresql": "postgres:15", "mariadb": "mariadb:10.11"}
    _INNER_PORTS: ClassVar[dict[str, int]] = {"postgresql": 5432, "mariadb": 3306}

    def __init__(
        self,
        kind: ServerKind,
        *,
        image: str | None = None,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        super().__init__(kind, _LOOPBACK, 0, user, password, database)
        self.image = image or self.IMAGES[kind]
        self._container: Any = None
        self._root_password = password

    def _state(self) -> str:
        return f" image={self.image}"

    def admin_connect(self, database: str | None = None) -> Any:
        if self.kind == "postgresql":
            return super().admin_connect(database)
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user="root",
            password=self._root_password,
            database=database or self.database,
            autocommit=True,
            connect_timeout=10,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with contextlib.closing(self.admin_connect()):
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self!r} not ready after {_START_TIMEOUT:.0f}s"
                    ) from None
                time.sleep(0.2)

    def start(self) -> None:
        if self._container is not None:
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status != "running":
                wrapped.start()
            self._wait_ready()
            return
        inner = self._INNER_PORTS[self.kind]
        self.port = free_port()
        container: Any
        if self.kind == "postgresql":
            from testcontainers.community.postgres import PostgresContainer

            container = PostgresContainer(
                self.image,
                username=self.user,
                password=self.password,
                dbname=self.database,
                driver=None,
            )
            container.with_command("postgres -c fsync=off -c max_connections=200")
        else:
            from testcontainers.community.mysql import MySqlContainer

            container = MySqlContainer(
                self.image,
                username=self.user,
                password=self.password,
                root_password=self._root_password,
                dbname=self.database,
            )
            container.with_command(
                "--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci"
                " --max-connections=200 --innodb-flush-log-at-trx-commit=2"
            )
        container.with_bind_ports(inner, self.port)
        container.start()
        self._container = container
        self.host = container.get_container_host_ip()
        self._wait_ready()
        if self.kind == "mariadb":
            self.admin_execute(
                "GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (self.user,)
            )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        if self._container is None:
            return
        wrapped = self._container.get_wrapped_container()
        if mode == "fast":
            wrapped.stop(timeout=_STOP_TIMEOUT)
        else:
            wrapped.kill(signal="SIGQUIT" if self.kind == "postgresql" else "SIGKILL")
            wrapped.wait(timeout=_STOP_TIMEOUT)

    def kill(self) -> None:
        if self._container is None:
            return
        wrapped = self._container.get_wrapped_container()
        wrapped.kill()
        wrapped.wait(timeout=_STOP_TIMEOUT)

    def is_running(self) -> bool:
        if self._container is None:
            return False
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()


# -- choosing ------------------------------------------------------------------------------


def _use_docker() -> bool:
    setting = os.environ.get(USE_DOCKER_ENV, "").strip().lower()
    if setting in ("0", "no", "false", "off"):
        return False
    available = docker_available()
    if not available and setting in ("1", "yes", "true", "on"):
        raise ServerUnavailableError(
            f"{USE_DOCKER_ENV}={os.environ[USE_DOCKER_ENV]} but no Docker engine answers"
        )
    return available


def _provide(
    kind: ServerKind,
    dsn_env: str,
    local: Callable[[], DatabaseServer],
) -> DatabaseServer:
    dsn = os.environ.get(dsn_env)
    server: DatabaseServer
    if dsn:
        server = ExternalServer.from_dsn(dsn, source=dsn_env)
        if server.kind != kind:
            raise ValueError(f"{dsn_env}: expected a {kind} URL, got {server.redacted_url()}")
        log.info("using the external %s server from %s: %r", kind, dsn_env, server)
    elif _use_docker():
        server = ContainerServer(kind)
        log.info("using a %s container: %r", kind, server)
    else:
        server = local()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def provide_postgres(workdir: str | os.PathLike[str] | None = None) -> DatabaseServer:
    """A started PostgreSQL server: ``TETHER_PG_DSN``, else a container, else a local one.

    Raises :class:`ServerUnavailableError` (with the install command) when
    none can be had. The caller closes the server.
    """
    return _provide("postgresql", PG_DSN_ENV, lambda: LocalPostgres(workdir))


def provide_mariadb(workdir: str | os.PathLike[str] | None = None) -> DatabaseServer:
    """A started MariaDB server: ``TETHER_MARIADB_DSN``, else a container, else a local one.

    Raises :class:`ServerUnavailableError` (with the install command) when
    none can be had. The caller closes the server.
    """
    return _provide("mariadb", MARIADB_DSN_ENV, lambda: LocalMariaDB(workdir))
