"""A throwaway MariaDB server: ``mariadb-install-db`` in scratch space, ``mariadbd`` as a child.

``mariadbd`` runs directly, never through ``mysqld_safe``, which would
restart it after a kill behind the harness's back. The shutdown modes:
``fast`` = SIGTERM (a clean shutdown), ``immediate`` = SIGKILL (MariaDB has
no "exit at once" signal of its own; InnoDB recovers at the next start).
Readiness is our own unix socket answering: ``mariadbd`` binds TCP first, and
a stranger may hold the TCP port. ``--no-defaults`` comes first on every
command line, so no ``my.cnf`` of the machine changes the server. The
binaries are found in ``$TETHER_MARIADB_BINDIR``, ``PATH`` or ``/usr/sbin``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..processes import LOOPBACK
from .base import (
    DEFAULT_DATABASE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    INSTALL_HINT,
    MARIADB_DSN_ENV,
    HarnessError,
    ServerStartError,
    ServerUnavailableError,
    _admin_connection,
    _execute,
    _quote_ident,
)
from .local import _LocalServer, _running_as_root
from .scratch import _binary_fingerprint, _create_data_dir

__all__ = ["MARIADB_BINDIR_ENV", "LocalMariaDB"]

MARIADB_BINDIR_ENV = "TETHER_MARIADB_BINDIR"

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
        _create_data_dir(data, "mariadb", fingerprint, self._install)

    def _command(self) -> list[str]:
        assert self._base is not None
        # Its own temporary directory: the default, /tmp, is shared, and an on-disk
        # temporary table of a DESCRIBE failed once in CI ("Error on delete of
        # '/tmp/#sql-temptable-...MAD' (Errcode: 2)") when something else cleaned /tmp.
        tmpdir = self._base / "tmp"
        tmpdir.mkdir(exist_ok=True)
        cmd = [
            str(self.server_binary),
            "--no-defaults",  # must come first
            f"--datadir={self._base / 'data'}",
            f"--tmpdir={tmpdir}",
            f"--port={self.port}",
            f"--bind-address={LOOPBACK}",
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
        if self._base is None:
            raise HarnessError(f"{self!r} was never started")
        if database is None and self._provisioned:
            database = self.database  # before provisioning it does not exist yet
        return _admin_connection(
            "mariadb", unix_socket=str(self._base / "mariadbd.sock"), user="root", database=database
        )

    def _provision(self) -> None:
        with contextlib.closing(self.admin_connect()) as conn:
            for host in (LOOPBACK, "localhost"):
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
