"""The PostgreSQL server of a run: a throwaway local one, or ``--dsn``; and its CPU use.

The server comes from, in order: ``--dsn`` (somebody else's server);
``tether.harness.servers.LocalPostgres`` (the test harness's throwaway
cluster); or, when the harness is not installed, :class:`_InitdbServer`, a
minimal initdb + postgres run as the ``postgres`` OS user in a directory it
owns, on a free port. Local servers are stopped and deleted at the end.

Server CPU is read from ``/proc``: the postmaster's own time, the time of its
live children (backends, from ``schedstat`` in nanoseconds) and the time of
children that already exited (``cutime``/``cstime``, in clock ticks).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "ServerCpu", "start_postgres"]

ADMIN_APP = "tether-bench-admin"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ServerCpu:
    """Cumulative CPU seconds of one local PostgreSQL server's process tree."""

    def __init__(self, postmaster_pid: int) -> None:
        self.pid = postmaster_pid

    def _children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
            return [int(p) for p in text.split()]
        except OSError:
            pids = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        stat = Path(f"/proc/{entry}/stat").read_text()
                        if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                            pids.append(int(entry))
            return pids

    def seconds(self) -> float:
        """Postmaster + live backends + exited backends, in CPU seconds."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        # After the comm: state=0 ... utime=11 stime=12 cutime=13 cstime=14
        reaped = (int(fields[13]) + int(fields[14])) / _TICK
        total = reaped + _schedstat(self.pid)
        for child in self._children():
            total += _schedstat(child)
        return total


def _schedstat(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class PgServer:
    """Connection parameters of a running PostgreSQL server, and how to stop it."""

    def __init__(
        self, params: dict[str, Any], origin: str, closer: Callable[[], None] | None
    ) -> None:
        self.params = params
        self.origin = origin
        self._closer = closer
        self.version = ""
        self.cpu: ServerCpu | None = None
        self._admin: Any = None
        with contextlib.closing(self.admin()) as conn:
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])
            backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            self.settings = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])
                for name in ("max_connections", "password_encryption", "fsync", "shared_buffers")
            }
            postmaster = _postmaster_of(backend)  # while the backend still exists
        if postmaster is not None:
            self.cpu = ServerCpu(postmaster)

    @property
    def postmaster_pid(self) -> int | None:
        return self.cpu.pid if self.cpu is not None else None

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(**self.params, autocommit=True, application_name=ADMIN_APP)

    def _query_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """One value, on a kept admin connection (a SCRAM connect costs milliseconds)."""
        if self._admin is None or self._admin.closed:
            self._admin = self.admin()
        row = self._admin.execute(sql, params).fetchone()
        return row[0]

    def count_connections(self, application_name: str) -> int:
        """Client sessions open on the server with this ``application_name``."""
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(self._query_one(sql, (application_name,)))

    def idle_in_transaction(self, application_name: str) -> int:
        """Sessions of this ``application_name`` left idle inside a transaction."""
        sql = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND state LIKE 'idle in transaction%%'"
        )
        return int(self._query_one(sql, (application_name,)))

    def pin(self, cpus: set[int]) -> bool:
        """Pin the postmaster (and so every backend it forks from now on) to ``cpus``."""
        if self.cpu is None:
            return False
        try:
            os.sched_setaffinity(self.cpu.pid, cpus)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()


def _postmaster_of(backend: int) -> int | None:
    """The local postmaster whose child ``backend`` is, or None (remote server)."""
    try:
        if Path(f"/proc/{backend}/comm").read_text().strip() != "postgres":
            return None
        stat = Path(f"/proc/{backend}/stat").read_text()
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if Path(f"/proc/{parent}/comm").read_text().strip() != "postgres":
            return None
    except (OSError, ValueError, IndexError):
        return None
    return parent


def start_postgres(dsn: str | None, max_connections: int = 400) -> PgServer:
    """A running server: ``dsn``'s, the harness's LocalPostgres, or a local initdb one."""
    if dsn:
        from psycopg.conninfo import conninfo_to_dict

        params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "application_name"}
        return PgServer(params, "--dsn (external server)", None)
    settings = {"max_connections": str(max_connections)}
    try:
        from tether.harness.servers import LocalPostgres
    except ImportError:
        server = _InitdbServer(settings)
        params = server.start()
        return PgServer(params, "benchmarks/pgserver.py initdb fallback", server.close)
    local = LocalPostgres(settings=settings)
    try:
        local.start()
        params = {
            "host": local.host,
            "port": local.port,
            "user": local.user,
            "password": local.password,
            "dbname": local.database,
        }
        return PgServer(params, "tether.harness.servers.LocalPostgres", local.close)
    except BaseException:
        local.close()
        raise


class _InitdbServer:
    """A throwaway cluster for when tether.harness is not installed (as in the notes)."""

    user = "tether_bench"
    password = "tether-bench-secret"

    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.base: Path | None = None

    def _identity(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> dict[str, Any]:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
        initdb = shutil.which("initdb") or (bindirs[-1] + "/initdb" if bindirs else None)
        if initdb is None:
            raise RuntimeError("no PostgreSQL: apt-get install -y postgresql (or pass --dsn)")
        bindir = Path(initdb).parent
        ident = self._identity()
        self.base = base = Path(tempfile.mkdtemp(prefix="tether-bench-pg-"))
        if ident:
            os.chown(base, ident["user"], ident["group"])
        pwfile = base / "pw"
        pwfile.write_text(self.password + "\n")
        if ident:
            os.chown(pwfile, ident["user"], ident["group"])
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(base / "data"), "-U", self.user,
             f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            check=True, capture_output=True, **ident,
        )  # fmt: skip
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}",
               "-c", "fsync=off"]  # fmt: skip
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        log = open(base / "server.log", "ab")  # noqa: SIM115 - the server keeps it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, **ident)
        params = {"host": "127.0.0.1", "port": port, "user": self.user,
                  "password": self.password, "dbname": "postgres"}  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(**params, connect_timeout=2).close()
                return params
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # pg_ctl -m fast
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
