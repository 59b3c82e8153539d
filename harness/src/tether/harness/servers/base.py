"""What a database server is to tests: an address, an administrator's side door, chaos levers.

Every server is a :class:`DatabaseServer`: connection parameters (``host``,
``port``, ``user``, ``password``, ``database``, ``url()``), an administrator's
side door (``admin_execute()`` runs SQL as a superuser on its own short-lived
connection) and, when the harness owns the server (``controllable``), the
chaos levers ``stop()``, ``restart(mode)`` and ``kill()``. A restarted server
keeps its port, so clients, pools and toxiproxy proxies pointing at it see
the same address come back.

Shutdown modes are ``"fast"`` (the server closes its sessions and exits
cleanly) and ``"immediate"`` (it exits at once, the way a crash ends it);
what each means per server is the subclass's to say. This module also holds
the harness's errors (:class:`HarnessError` and its subclasses) and the
defaults every server shares (the test user, its password, the database).

Passwords never appear in ``repr()``, log records or error messages raised here.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

__all__ = [
    "ADMIN_APPLICATION_NAME",
    "DEFAULT_DATABASE",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "INSTALL_HINT",
    "MARIADB_DSN_ENV",
    "PG_DSN_ENV",
    "DatabaseServer",
    "HarnessError",
    "Row",
    "ServerKind",
    "ServerNotControllableError",
    "ServerStartError",
    "ServerUnavailableError",
    "ShutdownMode",
]

log = logging.getLogger(__name__)

ServerKind = Literal["postgresql", "mariadb"]
ShutdownMode = Literal["fast", "immediate"]
Row = tuple[Any, ...]

DEFAULT_USER = "tether"
DEFAULT_PASSWORD = "tether-secret"
DEFAULT_DATABASE = "tether"

PG_DSN_ENV = "TETHER_PG_DSN"
MARIADB_DSN_ENV = "TETHER_MARIADB_DSN"

INSTALL_HINT = "apt-get install -y postgresql libpq-dev mariadb-server"

#: ``application_name`` of the harness's own PostgreSQL admin sessions (not counted as clients).
ADMIN_APPLICATION_NAME = "tether-harness-admin"

#: How long a server may take to become ready, and to shut down when asked.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_MODES: tuple[str, ...] = ("fast", "immediate")


# -- errors --------------------------------------------------------------------------------


class HarnessError(RuntimeError):
    """Base of the harness's own errors."""


class ServerUnavailableError(HarnessError):
    """No server of the requested kind can be provided (binaries missing, no engine...)."""


class ServerStartError(HarnessError):
    """A server process did not start or did not become ready."""


class ServerNotControllableError(HarnessError):
    """The server is not the harness's to stop, restart or kill (an external server)."""


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
        return _admin_connection(
            self.kind,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database or self.database,
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


def _admin_connection(kind: ServerKind, *, database: str | None, **params: Any) -> Any:
    """A new autocommit psycopg or PyMySQL connection with the harness's admin settings.

    ``params`` are the driver's own (``host``, ``port``, ``user``, ``password``,
    ``unix_socket``); ``database`` is psycopg's ``dbname``. PostgreSQL sessions
    carry :data:`ADMIN_APPLICATION_NAME`, so session counts can leave them out.
    """
    if kind == "postgresql":
        import psycopg

        return psycopg.connect(
            dbname=database,
            autocommit=True,
            connect_timeout=10,
            application_name=ADMIN_APPLICATION_NAME,
            **params,
        )
    import pymysql

    return pymysql.connect(database=database, autocommit=True, connect_timeout=10, **params)


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


def _quote_ident(kind: ServerKind, name: str) -> str:
    if kind == "postgresql":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"
