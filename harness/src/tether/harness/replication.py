"""A primary and a synchronous streaming standby: failover and switchover for real.

Production PostgreSQL often runs as a primary with streaming-replication
standbys that a failover manager (Patroni, pg_auto_failover, a cloud
service) promotes when the primary dies. Clients reach "whichever server
accepts writes" through a libpq multi-host DSN::

    host=127.0.0.1,127.0.0.1 port=P,Q target_session_attrs=read-write

libpq tries the hosts in order and keeps the first session that is not
read-only. A pool in front of such a DSN must survive two events, which this
module makes happen on demand, with two local servers:

* **failover** (:meth:`ReplicationPair.kill_primary` then
  :meth:`ReplicationPair.promote`): the primary dies (SIGKILL, the whole
  process group) and the standby is promoted, as a failover manager would.
* **switchover** (:meth:`ReplicationPair.switchover`): a planned change of
  primary. The old primary stays up but turns read-only; the standby is
  promoted once it has everything the old primary acknowledged.

How the old primary turns read-only: ``ALTER SYSTEM SET
default_transaction_read_only = on`` and a reload, not a restart as a standby
of the new primary. A restart ends every session (clients see an ordinary
lost connection, which tether handles already); the reload keeps the old
sessions connected and makes each of them answer its next write with
SQLSTATE 25006 ``read_only_sql_transaction``, the case of pg_auto_failover
issue 575, which a pool must notice by itself. Transactions that began
read-write before the reload could still write and then wait forever for a
standby that is gone, so the switchover ends those (they fail, as in a real
switchover) before promoting.

"An acknowledged commit is on both": the primary runs with
``synchronous_standby_names = '*'`` and ``synchronous_commit =
remote_apply``, so a commit returns only once the standby has applied it
(readers on the standby see it too). The standby is a copy made by
``pg_basebackup -R`` (which writes ``standby.signal`` and
``primary_conninfo``); both servers are :class:`~tether.harness.servers.LocalPostgres`
children of this process on free loopback ports, run as the ``postgres``
OS user when the harness runs as root.

:meth:`ReplicationPair.restore` makes a used pair healthy again: whatever is
not the current primary (a killed server, a read-only old primary) is
deleted and a new standby is cloned onto its port, so the multi-host DSN
stays the same for the whole session (the roles of its two hosts swap).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from .servers import (
    ADMIN_APPLICATION_NAME,
    DEFAULT_DATABASE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    HarnessError,
    LocalPostgres,
    ServerStartError,
)
from .targets import DriverTarget

__all__ = [
    "LIBPQ_DRIVERS",
    "LocalStandby",
    "ReplicationPair",
    "libpq_conninfo",
]

log = logging.getLogger("tether.harness.replication")

#: The drivers that take a libpq multi-host DSN.
LIBPQ_DRIVERS: tuple[str, ...] = ("psycopg", "pgdb", "pg")

_LOOPBACK = "127.0.0.1"
_WAIT = 30.0  # seconds: streaming to start, the standby to catch up, a promotion
_POLL = 0.01
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
#: Seconds transactions begun read-write before a switchover may take to finish.
SWITCHOVER_GRACE = 0.5

#: Server settings of the primary that make a commit wait until the standby applied it.
SYNCHRONOUS = {"synchronous_standby_names": "*", "synchronous_commit": "remote_apply"}


def libpq_conninfo(params: dict[str, str]) -> str:
    """``key=value`` pairs as a libpq conninfo string, values quoted where needed."""
    parts = []
    for key, value in params.items():
        quoted = value
        if not value or any(c in value for c in " '\\"):
            quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={quoted}")
    return " ".join(parts)


class LocalStandby(LocalPostgres):
    """A hot standby of ``primary``, cloned with ``pg_basebackup -R`` at its first start.

    It streams from the primary over the primary's unix socket as the
    bootstrap superuser (``local replication`` is ``trust`` in the cluster
    ``initdb`` made). Its test user and database are the primary's (copied),
    so nothing is provisioned. :meth:`promote` turns it into a primary.
    """

    _dir_prefix: ClassVar[str] = "tether-pg-"

    def __init__(
        self,
        primary: LocalPostgres,
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
    ) -> None:
        super().__init__(
            workdir,
            user=primary.user,
            password=primary.password,
            database=primary.database,
            port=port,
            bin_dir=primary.bin_dir,
            # Retry streaming from a lost primary every 100 ms, not every 5 s (the
            # default): a promotion right after the primary was killed took 5.0 s
            # once in CI, the test's whole bound, against ~0.5 s usually.
            settings={"wal_retrieve_retry_interval": "100ms"},
        )
        self.primary = primary

    def _prepare(self, base: Path) -> None:
        source = self.primary.base_dir
        if source is None or not self.primary.is_running():
            raise HarnessError(f"cannot clone a standby: {self.primary!r} is not running")
        if self._owner is not None:
            os.chown(base, *self._owner)
        cmd = [
            str(self.bin_dir / "pg_basebackup"),
            "--pgdata", str(base / "data"),
            "--host", str(source),
            "--port", str(self.primary.port),
            "--username", self.bootstrap_superuser,
            "--write-recovery-conf",  # standby.signal + primary_conninfo
            "--wal-method", "stream",
            "--checkpoint", "fast",
            "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=120, **self._popen_identity()
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"pg_basebackup from {self.primary!r} failed with status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        # A hot standby reports "standby" in postmaster.pid once it accepts read-only clients.
        assert self._base is not None
        try:
            lines = (self._base / "data" / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return False
        return len(lines) >= 8 and pid == proc.pid and lines[7].strip() in ("ready", "standby")

    def _provision(self) -> None:
        """Nothing: the test user and database came with the copy."""

    def in_recovery(self) -> bool:
        """True while the server is a standby (``pg_is_in_recovery()``)."""
        return bool(self.admin_execute("SELECT pg_is_in_recovery()")[0][0])

    def promote(self, timeout: float = _WAIT) -> None:
        """Promote the standby to a primary and wait until it accepts writes."""
        rows = self.admin_execute("SELECT pg_promote(true, %s)", (max(1, int(timeout)),))
        if not rows or not rows[0][0]:
            raise HarnessError(f"{self!r} was not promoted within {timeout:g} s")
        log.info("promoted %r", self)


def _in_recovery(server: LocalPostgres) -> bool:
    return bool(server.admin_execute("SELECT pg_is_in_recovery()")[0][0])


class ReplicationPair:
    """A primary and a synchronous hot standby on two loopback ports, and the failover levers.

    ``primary`` is the server that accepts writes now (after a failover, the
    promoted one); ``standby`` the streaming standby, or None once promoted;
    ``old_primary`` the primary before the last promotion (killed, or left
    running read-only by a switchover), or None. :attr:`ports` is fixed for
    the pair's life, in DSN order.

    Passwords never appear in ``repr()`` or in :meth:`redacted_conninfo`.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        self._workdir = Path(workdir) if workdir is not None else None
        self.user = user
        self.password = password
        self.database = database
        self.primary: LocalPostgres | None = None
        self.standby: LocalStandby | None = None
        self.old_primary: LocalPostgres | None = None
        self._ports: tuple[int, int] | None = None
        self._closed = False
        self._tables: list[str] = []

    # -- addressing ------------------------------------------------------------------------

    @property
    def ports(self) -> tuple[int, int]:
        """The two servers' ports, in the order the DSN lists them."""
        if self._ports is None:
            raise HarnessError(f"{self!r} was never started")
        return self._ports

    @property
    def host(self) -> str:
        return _LOOPBACK

    def conninfo_params(self, target_session_attrs: str = "read-write") -> dict[str, str]:
        """The libpq connection parameters of the multi-host DSN (password included)."""
        first, second = self.ports
        return {
            "host": f"{_LOOPBACK},{_LOOPBACK}",
            "port": f"{first},{second}",
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
            "target_session_attrs": target_session_attrs,
        }

    def conninfo(self, target_session_attrs: str = "read-write") -> str:
        """``host=127.0.0.1,127.0.0.1 port=P,Q dbname=... target_session_attrs=...``."""
        return libpq_conninfo(self.conninfo_params(target_session_attrs))

    def redacted_conninfo(self, target_session_attrs: str = "read-write") -> str:
        """:meth:`conninfo` with the password replaced by ``***``, for logs and messages."""
        params = self.conninfo_params(target_session_attrs)
        params["password"] = "***"
        return libpq_conninfo(params)

    def connect_kwargs(
        self, driver: str, target_session_attrs: str = "read-write"
    ) -> dict[str, Any]:
        """Keyword arguments with which ``driver``'s connect reaches the pair through libpq.

        psycopg and pgdb take the parameters as keywords (pgdb passes what it
        does not know into the conninfo); PyGreSQL's classic ``pg.DB`` takes an
        integer port only, so there the DSN goes into ``dbname``, which libpq
        expands when it contains ``=``.
        """
        params = self.conninfo_params(target_session_attrs)
        if driver == "psycopg":
            return dict(params)
        if driver == "pgdb":
            password = params.pop("password")
            params["database"] = params.pop("dbname")
            return {**params, "password": password}
        if driver == "pg":
            user, password = params.pop("user"), params.pop("password")
            return {"dbname": libpq_conninfo(params), "user": user, "passwd": password}
        raise ValueError(f"driver: expected one of {', '.join(LIBPQ_DRIVERS)}, got {driver!r}")

    def target(self, driver: str, target_session_attrs: str = "read-write") -> DriverTarget:
        """A :class:`~tether.harness.targets.DriverTarget` for ``driver`` on the multi-host DSN.

        Its ``server`` is the current primary (for admin statements); do not
        call its ``cleanup()`` after a failover (it would start the dead
        primary again): the pair's tables live on whichever server is primary.
        """
        if driver not in LIBPQ_DRIVERS:
            raise ValueError(f"driver: expected one of {', '.join(LIBPQ_DRIVERS)}, got {driver!r}")
        module = importlib.import_module(driver)
        return DriverTarget(
            driver,
            module,
            self.require_primary(),
            (),
            self.connect_kwargs(driver, target_session_attrs),
        )

    def __repr__(self) -> str:
        ports = f" ports={self._ports[0]},{self._ports[1]}" if self._ports else ""
        return f"<ReplicationPair{ports} primary={self.primary!r} standby={self.standby!r}>"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the primary and a synchronous standby (idempotent: restores a used pair)."""
        if self._closed:
            raise HarnessError(f"{self!r} is closed")
        if self.primary is None:
            self._build()
            return
        self.restore()

    def _build(self) -> None:
        """A new primary and standby (on the pair's ports once it has them)."""
        first, second = self._ports if self._ports is not None else (None, None)
        primary = LocalPostgres(
            self._workdir,
            user=self.user,
            password=self.password,
            database=self.database,
            port=first,
        )
        self.primary = primary
        primary.start()
        self.standby = LocalStandby(primary, self._workdir, port=second)
        self.standby.start()
        self._ports = (primary.port, self.standby.port)
        self._synchronous(primary)
        log.info("started %r", self)

    def require_primary(self) -> LocalPostgres:
        if self.primary is None:
            raise HarnessError(f"{self!r} was never started")
        return self.primary

    def servers(self) -> list[LocalPostgres]:
        """Every server of the pair that exists now (running or not)."""
        return [s for s in (self.primary, self.standby, self.old_primary) if s is not None]

    def healthy(self) -> bool:
        """True when the primary accepts writes and the standby streams from it synchronously."""
        primary, standby = self.primary, self.standby
        if primary is None or standby is None or self.old_primary is not None:
            return False
        if not (primary.is_running() and standby.is_running()):
            return False
        try:
            if _in_recovery(primary) or not standby.in_recovery():
                return False
            return self._sync_state(primary) == "sync"
        except Exception:
            return False

    def restore(self) -> None:
        """Make the pair healthy again, keeping its two ports (a no-op when it is healthy).

        The current primary stays (with its data); any other server is deleted and a
        new standby is cloned from the primary onto the port it leaves free.
        """
        if self._closed:
            raise HarnessError(f"{self!r} is closed")
        if self.healthy():
            return
        started = time.monotonic()
        primary = self.require_primary()
        if not primary.is_running():
            # A test killed the primary and stopped there: the failover manager's turn.
            if self.standby is not None and self.standby.is_running():
                self.promote()
                primary = self.require_primary()
            else:  # nothing left to keep: start over on the same ports
                for server in self.servers():
                    server.close()
                self.primary = self.standby = self.old_primary = None
                self._build()
                log.info("rebuilt %r in %.2fs", self, time.monotonic() - started)
                return
        for other in (self.standby, self.old_primary):
            if other is not None and other is not primary:
                other.close()
        self.standby = self.old_primary = None
        first, second = self.ports
        free = second if primary.port == first else first
        # The clone must not inherit the settings that make commits wait for a standby:
        # promoted one day, it would wait for ever for one of its own.
        self._alter_system(primary, {name: None for name in SYNCHRONOUS})
        standby = LocalStandby(primary, self._workdir, port=free)
        self.standby = standby
        standby.start()
        self._synchronous(primary)
        log.info("restored %r in %.2fs", self, time.monotonic() - started)

    def close(self) -> None:
        """Stop every server of the pair and delete their directories. Idempotent."""
        self._closed = True
        for server in self.servers():
            with contextlib.suppress(Exception):
                server.close()
        self.standby = self.old_primary = None

    def __enter__(self) -> ReplicationPair:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the failover levers ---------------------------------------------------------------

    def kill_primary(self) -> LocalPostgres:
        """SIGKILL the primary (its whole process group) and leave it down; returns it."""
        primary = self.require_primary()
        primary.kill()
        log.info("killed the primary %r", primary)
        return primary

    def promote(self) -> LocalStandby:
        """Promote the standby; it becomes :attr:`primary`. Returns it."""
        standby = self.standby
        if standby is None:
            raise HarnessError(f"{self!r} has no standby to promote")
        standby.promote()
        old = self.primary
        self.primary, self.standby = standby, None
        if old is not None:  # killed, or up and read-only: deleted by restore()
            if self.old_primary is not None and self.old_primary is not old:
                self.old_primary.close()
            self.old_primary = old
        return standby

    def demote(self, grace: float = SWITCHOVER_GRACE) -> None:
        """The first half of a switchover: the primary stays up and turns read-only.

        ``default_transaction_read_only = on`` and a reload; then every
        transaction that began before (it may still write) gets ``grace``
        seconds to end and is terminated after that, and the standby is
        waited for until it has applied everything the primary wrote.
        """
        primary = self.require_primary()
        self._alter_system(primary, {"default_transaction_read_only": "on"})
        # A reload is asynchronous: a new session shows when the postmaster has re-read it.
        deadline = time.monotonic() + _WAIT
        while primary.admin_execute("SHOW default_transaction_read_only")[0][0] != "on":
            if time.monotonic() > deadline:
                raise HarnessError(f"{primary!r} did not turn read-only after its reload")
            time.sleep(_POLL)
        switched_at = primary.admin_execute("SELECT now()")[0][0]
        begun_before = (
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s"
            " AND xact_start < %s"
        )
        params = (ADMIN_APPLICATION_NAME, switched_at)
        deadline = time.monotonic() + grace
        while primary.admin_execute(begun_before, params) and time.monotonic() < deadline:
            time.sleep(_POLL)
        ended = primary.admin_execute(
            f"SELECT count(pg_terminate_backend(pid)) FROM ({begun_before}) AS t", params
        )[0][0]
        if ended:
            log.info("switchover: ended %d read-write transactions on %r", ended, primary)
        self._wait_caught_up(primary)

    def switchover(self, grace: float = SWITCHOVER_GRACE) -> LocalStandby:
        """Demote the primary (it stays up, read-only), then promote the standby. Returns it."""
        self.demote(grace)
        return self.promote()

    def failover(self) -> LocalStandby:
        """Kill the primary and promote the standby at once. Returns the new primary."""
        self.kill_primary()
        return self.promote()

    # -- inspection ------------------------------------------------------------------------

    def role_of(self, port: int) -> str:
        """``primary``, ``standby``, ``old_primary`` or ``down`` for the server on ``port``."""
        for role in ("primary", "standby", "old_primary"):
            server = getattr(self, role)
            if server is not None and server.port == port:
                return role if server.is_running() else "down"
        return "down"

    def sessions(self, user: str | None = None) -> dict[int, int]:
        """Client sessions of ``user`` (default: the test user) per running server's port.

        Leaves out the harness's admin sessions and replication connections.
        """
        user = user or self.user
        counts: dict[int, int] = {}
        for server in self.servers():
            if not server.is_running():
                continue
            rows = server.admin_execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND usename = %s AND pid <> pg_backend_pid()"
                " AND application_name IS DISTINCT FROM %s",
                (user, ADMIN_APPLICATION_NAME),
            )
            counts[server.port] = int(rows[0][0])
        return counts

    # -- tables ----------------------------------------------------------------------------

    def unique_table(self, prefix: str = "t") -> str:
        """A fresh table name (``prefix_<12 hex>``), dropped by :meth:`cleanup`."""
        if not _IDENTIFIER.match(prefix) or len(prefix) > 40:
            raise ValueError(
                f"prefix: expected a short lowercase identifier ([a-z_][a-z0-9_]*), got {prefix!r}"
            )
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._tables.append(name)
        return name

    def cleanup(self) -> None:
        """Drop the tables :meth:`unique_table` handed out, on whichever server is primary now."""
        tables, self._tables = self._tables, []
        primary = self.primary
        if primary is None or not primary.is_running() or not tables:
            return
        for table in tables:
            try:
                primary.admin_execute(f'DROP TABLE IF EXISTS "{table}"')
            except Exception as exc:  # a read-only old primary, a lock: left behind
                log.warning("could not drop table %s on %r: %s", table, primary, exc)

    # -- helpers ---------------------------------------------------------------------------

    def _alter_system(self, server: LocalPostgres, settings: dict[str, str | None]) -> None:
        for name, value in settings.items():
            if value is None:
                server.admin_execute(f"ALTER SYSTEM RESET {name}")
            else:
                literal = "'" + value.replace("'", "''") + "'"  # utility statements bind nothing
                server.admin_execute(f"ALTER SYSTEM SET {name} = {literal}")
        server.admin_execute("SELECT pg_reload_conf()")

    def _sync_state(self, primary: LocalPostgres) -> str | None:
        rows = primary.admin_execute(
            "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'"
        )
        return str(rows[0][0]) if rows else None

    def _synchronous(self, primary: LocalPostgres) -> None:
        """Make commits on ``primary`` wait for the standby and wait until it streams in sync."""
        self._alter_system(primary, dict(SYNCHRONOUS))
        deadline = time.monotonic() + _WAIT
        while self._sync_state(primary) != "sync":
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self!r}: the standby is not streaming synchronously after {_WAIT:.0f}s"
                )
            time.sleep(_POLL)

    def _wait_caught_up(self, primary: LocalPostgres) -> None:
        """Wait until the standby has replayed all the WAL ``primary`` has written."""
        standby = self.standby
        if standby is None:
            return
        target = primary.admin_execute("SELECT pg_current_wal_lsn()::text")[0][0]
        deadline = time.monotonic() + _WAIT
        while True:
            rows = standby.admin_execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))
            if rows and rows[0][0]:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"{standby!r} did not catch up with {target} in {_WAIT:.0f}s")
            time.sleep(_POLL)
