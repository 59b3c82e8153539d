"""A throwaway PostgreSQL cluster: ``initdb`` in scratch space, ``postgres`` as a child process.

``initdb`` (or a copy of the cached template it built) creates the cluster;
the ``postgres`` binary runs as a child of this process, never through
``pg_ctl``. The shutdown modes are the signals ``pg_ctl -m`` would send:
``fast`` = SIGINT (sessions are closed, the server exits cleanly),
``immediate`` = SIGQUIT (the server exits at once and recovers at the next
start). Readiness is what ``pg_ctl -w`` polls: ``postmaster.pid`` saying
``ready`` for our process.

``initdb`` and ``postgres`` refuse to run as root; when the harness runs as
root, the cluster runs as the ``postgres`` OS user in a directory that user
owns (pytest's temporary directories are root-only). The binaries are found
in ``$TETHER_PG_BINDIR``, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``
or ``PATH``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from ..processes import LOOPBACK
from .base import (
    DEFAULT_DATABASE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    INSTALL_HINT,
    PG_DSN_ENV,
    HarnessError,
    ServerStartError,
    ServerUnavailableError,
    _admin_connection,
    _execute,
)
from .local import _LocalServer, _running_as_root
from .scratch import _binary_fingerprint, _create_data_dir, _scratch_dir

if sys.platform != "win32":
    import pwd

__all__ = ["PG_BINDIR_ENV", "LocalPostgres"]

PG_BINDIR_ENV = "TETHER_PG_BINDIR"


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


def _postgres_os_user(program: str = "PostgreSQL") -> tuple[int, int]:
    """The ``postgres`` OS user's (uid, gid): as root, ``program`` runs as that user."""
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailableError(
            f"running as root, {program} must run as the 'postgres' OS user, which does not"
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
        _create_data_dir(data, "postgresql", fingerprint, self._initdb, self._owner)

    def _command(self) -> list[str]:
        assert self._base is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "unix_socket_directories": str(self._base),
            "fsync": "off",
            "max_connections": "200",
            # Two-phase commit (psycopg's tpc_prepare()): off by default in PostgreSQL.
            "max_prepared_transactions": "20",
            # In the data dir, not /dev/shm: a killed server must not leave segments behind.
            "dynamic_shared_memory_type": "mmap",
        }
        settings.update(self.settings)
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self._base / "data"), "-p", str(self.port)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        return cmd

    def _settle(self, deadline: float) -> None:
        # A killed postmaster leaves its backends, auxiliary processes included,
        # running a moment: each runs in a session of its own (setsid), so the
        # kill of its process group does not reach them, and they exit once
        # they notice its death. A start before that fails with "pre-existing
        # shared memory block ... is still in use" (found in CI: a restart right
        # after kill()). So wait until nothing is attached to the old segment.
        shmid = _shared_memory_id(self._base / "data" / "postmaster.pid" if self._base else None)
        while shmid is not None and _attached(shmid) and time.monotonic() < deadline:
            time.sleep(0.01)

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
        if self._base is None:
            raise HarnessError(f"{self!r} was never started")
        return _admin_connection(
            "postgresql",
            host=str(self._base),  # the unix socket directory
            port=self.port,
            user=self.bootstrap_superuser,
            database=database or self.database,
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


def _shared_memory_id(pid_file: Path | None) -> int | None:
    """The System V shared memory id in a ``postmaster.pid`` (line 7: key, id), if any."""
    if pid_file is None:
        return None
    try:
        lines = pid_file.read_text().splitlines()
        return int(lines[6].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _attached(shmid: int) -> bool:
    """Whether a process is still attached to segment ``shmid`` (Linux's /proc/sysvipc/shm)."""
    try:
        with open("/proc/sysvipc/shm") as table:
            next(table)  # the header: key shmid perms size cpid lpid nattch ...
            for line in table:
                fields = line.split()
                if int(fields[1]) == shmid:
                    return int(fields[6]) > 0
    except (OSError, StopIteration, IndexError, ValueError):
        return False
    return False
