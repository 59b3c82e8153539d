"""Local servers: a database server process that is a child of this Python process.

:class:`_LocalServer` is what :class:`~.postgres.LocalPostgres`,
:class:`~.mariadb.LocalMariaDB` and :class:`~.pgbouncer.PgBouncer` share: a
directory of its own (data, unix socket, ``server.log``) created at the first
start in scratch space
(:mod:`.scratch`), a free loopback port chosen at the first start and kept
for every restart after it, and the process handling of
:mod:`tether.harness.processes`. A subclass says how to create the data
directory, the command line, when the server is ready, and how to create the
test user and database.

The server runs directly, never daemonized through ``pg_ctl`` or
``mysqld_safe``, so the harness can signal it, ``wait()`` it after a kill
and be sure nothing restarts it behind its back. ``stop(mode)`` sends the
subclass's signal for the mode (the ones ``pg_ctl -m`` would send) and waits
up to 30 s before killing; ``kill()`` SIGKILLs the server's whole process
group (the PostgreSQL postmaster and its backends), like a crash of the
machine's database process. ``close()`` stops the server and deletes its
directory; servers left open are closed at exit.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from ..processes import LOOPBACK, ChildProcess, spawn, start_on_free_port, track, untrack
from .base import (
    _START_TIMEOUT,
    _STOP_TIMEOUT,
    DatabaseServer,
    HarnessError,
    ServerKind,
    ServerStartError,
    ShutdownMode,
    _check_mode,
)
from .scratch import _scratch_dir, _sweep_stale_dirs

log = logging.getLogger(__name__)

_POLL = 0.005
#: What PostgreSQL and MariaDB write to their log when the port is taken.
_PORT_IN_USE = ("address already in use", "bind on tcp/ip port")


def _running_as_root() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0


class _LocalServer(DatabaseServer):
    """A server process that is a child of this Python process, in a temporary directory."""

    controllable: ClassVar[bool] = True
    #: Signals for the shutdown modes, and for the parent-death safety net.
    _mode_signals: ClassVar[dict[str, signal.Signals]]
    _pdeathsig: ClassVar[str]
    _dir_prefix: ClassVar[str]
    #: Its log file in its directory, and the phrases it logs when its port is taken.
    _log_name: ClassVar[str] = "server.log"
    _port_in_use: ClassVar[tuple[str, ...]] = _PORT_IN_USE
    #: How long it may take to become ready, and to shut down when asked.
    _start_timeout: ClassVar[float] = _START_TIMEOUT
    _stop_timeout: ClassVar[float] = _STOP_TIMEOUT

    def __init__(
        self,
        kind: ServerKind,
        workdir: str | os.PathLike[str] | None,
        user: str,
        password: str,
        database: str,
        port: int | None,
    ) -> None:
        super().__init__(kind, LOOPBACK, port or 0, user, password, database)
        self._workdir = Path(workdir) if workdir is not None else None
        self._fixed_port = bool(port)
        self._lock = threading.RLock()
        self._child: ChildProcess | None = None
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

    def _settle(self, deadline: float) -> None:
        """Before a start: wait, until ``deadline``, for what a killed server left running."""

    def _name(self) -> str:
        """What the server is called in errors and log records (``postgresql server``)."""
        return f"{self.kind} server"

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
        return self._base / self._log_name if self._base is not None else None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        child = self._child
        return child.pid if child is not None else None

    def _state(self) -> str:
        if self._closed:
            return " closed"
        pid = self.pid
        return f" pid={pid}" if pid is not None else " stopped"

    # -- lifecycle ---------------------------------------------------------------------

    def is_running(self) -> bool:
        child = self._child
        return child is not None and child.running()

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
                track(self)
                try:
                    self._link_from_workdir(base)
                    self._prepare(base)
                except BaseException:
                    shutil.rmtree(base, ignore_errors=True)
                    untrack(self)
                    raise
                self._base = base
            else:
                self._settle(started + self._start_timeout)
            # The first start chooses the port; restarts keep it, so clients see it come back.
            choose_port = not self._fixed_port and not self._ever_started
            self._child = start_on_free_port(
                self._spawn, port=None if choose_port else self.port, error=ServerStartError
            )
            self._ever_started = True
            if not self._provisioned:
                self._provision()
                self._provisioned = True
            log.info("started %r in %.2fs", self, time.monotonic() - started)

    def _spawn(self, port: int) -> ChildProcess:
        assert self._base is not None
        self.port = port  # before _command(), which puts it on the command line
        return spawn(
            self._command(),
            name=f"{self._name()} on port {port}",
            log_path=self._base / self._log_name,
            ready=self._ready,
            error=ServerStartError,
            port_in_use=self._port_in_use,
            timeout=self._start_timeout,
            poll=_POLL,
            pdeathsig=self._pdeathsig,
            **self._popen_identity(),
        )

    def restart(self, mode: ShutdownMode = "fast") -> None:
        with self._lock:  # no other thread starts or stops it in between
            super().restart(mode)

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        with self._lock:
            child = self._child
            if child is None or not child.running():
                self._reap()
                return
            started = time.monotonic()
            if not child.stop(self._mode_signals[mode], self._stop_timeout):
                log.warning(
                    "%r ignored its %s shutdown for %.0fs: killed it",
                    self,
                    mode,
                    self._stop_timeout,
                )
            self._child = None
            log.info(
                "stopped %s on port %d (%s) in %.2fs",
                self._name(),
                self.port,
                mode,
                time.monotonic() - started,
            )

    def kill(self) -> None:
        with self._lock:
            child = self._child
            if child is None or not child.running():
                self._reap()
                return
            child.kill()
            self._child = None
            log.info("killed %s on port %d", self._name(), self.port)

    def _reap(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.reap()

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
                untrack(self)
                if self._base is not None:
                    shutil.rmtree(self._base, ignore_errors=True)
