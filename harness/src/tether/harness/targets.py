"""Driver targets: one database driver aimed at one server, plus the tools to poke at it.

tether supports five drivers: psycopg 3, PyGreSQL's DB-API ``pgdb`` and its
classic ``pg`` API (PostgreSQL), PyMySQL (MariaDB) and the standard
library's ``sqlite3``. They agree on little beyond ``connect()``: ``pgdb``
wants ``host="host:port"``, classic ``pg`` is not DB-API at all (``pg.DB``
with ``$1`` parameters), sqlite3 needs a file instead of a server. A
:class:`DriverTarget` hides that: ``target.connect()`` opens a raw
connection of that driver to the test server, and ``target.creator`` is what
a tether pool is built from (the module, or ``pg.DB``).

A test about connection loss also needs to act on the server side: find out
which server session a connection is (:meth:`DriverTarget.backend_id`),
terminate exactly that session (:meth:`~DriverTarget.kill_backend`), cancel
its query, or count the sessions left open (:meth:`~DriverTarget.session_count`).
Those act through the server's admin connection, never through the
connection under test.

Tables: every test shares its server's database; create tables with names
from :meth:`DriverTarget.unique_table` and the pytest fixtures drop them
afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .servers import ADMIN_APPLICATION_NAME, DatabaseServer, ServerKind

__all__ = [
    "ALL_TARGETS",
    "DBAPI_TARGETS",
    "SERVER_TARGETS",
    "DriverTarget",
    "NoServerError",
    "all_target_names",
    "server_kind",
]

log = logging.getLogger("tether.harness.targets")

#: Every driver tether supports, in the order the fixtures use.
ALL_TARGETS: tuple[str, ...] = ("psycopg", "pgdb", "pg", "pymysql", "sqlite3")
#: The drivers with a DB-API 2 interface (all but PyGreSQL's classic ``pg``).
DBAPI_TARGETS: tuple[str, ...] = ("psycopg", "pgdb", "pymysql", "sqlite3")
#: The drivers that talk to a database server (all but ``sqlite3``).
SERVER_TARGETS: tuple[str, ...] = ("psycopg", "pgdb", "pg", "pymysql")

_SERVER_KIND: dict[str, ServerKind | None] = {
    "psycopg": "postgresql",
    "pgdb": "postgresql",
    "pg": "postgresql",
    "pymysql": "mariadb",
    "sqlite3": None,
}
_BACKEND_ID_SQL: dict[str, str | None] = {
    "postgresql": "SELECT pg_backend_pid()",
    "mariadb": "SELECT CONNECTION_ID()",
}
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
_GONE_TIMEOUT = 10.0


class NoServerError(RuntimeError):
    """The target has no database server (``sqlite3``), so server-side actions are impossible."""


def all_target_names() -> tuple[str, ...]:
    """The names of all driver targets: psycopg, pgdb, pg, pymysql, sqlite3."""
    return ALL_TARGETS


def server_kind(name: str) -> ServerKind | None:
    """The kind of server driver ``name`` needs (``None`` for sqlite3)."""
    try:
        return _SERVER_KIND[name]
    except KeyError:
        raise ValueError(
            f"name: unknown driver target {name!r}; known: {', '.join(ALL_TARGETS)}"
        ) from None


@dataclass(repr=False, eq=False)
class DriverTarget:
    """One driver aimed at one server: ``module.connect(*args, **kwargs)`` opens a connection.

    For ``"pg"`` (PyGreSQL classic) the connection is ``pg.DB(*args, **kwargs)``.
    ``kwargs`` hold the password: the target's ``repr()`` does not show them.
    Build targets with :meth:`build`.
    """

    name: str
    module: ModuleType
    server: DatabaseServer | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Tables handed out by :meth:`unique_table`; :meth:`cleanup` drops them.
    tables: list[str] = field(default_factory=list)
    _ignored_sessions: frozenset[int] = field(default=frozenset(), init=False)

    @classmethod
    def build(
        cls,
        name: str,
        server: DatabaseServer | None = None,
        *,
        workdir: str | Path | None = None,
    ) -> DriverTarget:
        """The target for driver ``name`` on ``server`` (the server's database).

        ``server`` must be a PostgreSQL server for psycopg, pgdb and pg, a
        MariaDB server for pymysql, and is ignored for sqlite3, which gets a
        fresh database file in ``workdir`` (a new temp dir if None). sqlite3
        connections are opened with ``check_same_thread=False``: pools hand
        connections from one thread to the next.
        """
        kind = server_kind(name)
        module = importlib.import_module(name)
        if kind is None:
            directory = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp())
            path = directory / f"tether-{uuid.uuid4().hex[:12]}.sqlite3"
            return cls(name, module, None, (str(path),), {"check_same_thread": False})
        if server is None:
            raise ValueError(f"server: driver {name!r} needs a {kind} server, got None")
        if server.kind != kind:
            raise ValueError(f"server: driver {name!r} needs a {kind} server, got {server!r}")
        host, port, user, password, db = (
            server.host,
            server.port,
            server.user,
            server.password,
            server.database,
        )
        kwargs: dict[str, Any]
        if name == "psycopg":
            kwargs = {"host": host, "port": port, "user": user, "password": password, "dbname": db}
        elif name == "pgdb":
            kwargs = {"host": f"{host}:{port}", "user": user, "password": password, "database": db}
        elif name == "pg":
            kwargs = {"dbname": db, "host": host, "port": port, "user": user, "passwd": password}
        else:
            kwargs = {
                "host": host,
                "port": port,
                "user": user,
                "password": password,
                "database": db,
                "charset": "utf8mb4",
            }
        return cls(name, module, server, (), kwargs)

    def __repr__(self) -> str:
        where = repr(self.server) if self.server is not None else repr(self.args[0])
        return f"<DriverTarget {self.name} {where}>"

    # -- the driver --------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"postgresql"``, ``"mariadb"`` or ``"sqlite"``."""
        return _SERVER_KIND[self.name] or "sqlite"

    @property
    def dbapi2(self) -> bool:
        """True for DB-API 2 drivers; False for PyGreSQL's classic ``pg``."""
        return self.name != "pg"

    @property
    def creator(self) -> Any:
        """What a pool is built from: the DB-API module, or ``pg.DB`` for classic PyGreSQL."""
        return self.module.DB if self.name == "pg" else self.module

    def connect(self) -> Any:
        """Open a new raw connection of this driver (``pg.DB`` for ``"pg"``)."""
        factory: Callable[..., Any] = self.module.DB if self.name == "pg" else self.module.connect
        return factory(*self.args, **self.kwargs)

    @property
    def placeholder(self) -> str:
        """The first query parameter marker: ``%s``, ``?`` (sqlite3) or ``$1`` (classic pg)."""
        return self.placeholders(1)

    def placeholders(self, count: int) -> str:
        """``count`` comma-separated parameter markers in this driver's style."""
        if self.name == "pg":
            return ", ".join(f"${i}" for i in range(1, count + 1))
        marker = "?" if self.name == "sqlite3" else "%s"
        return ", ".join([marker] * count)

    def query(self, raw_conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` on ``raw_conn`` with this driver's API; return rows ([] if none).

        Does not commit: DB-API connections stay in whatever transaction the
        statement opened (classic ``pg`` autocommits).
        """
        if self.name == "pg":
            result = raw_conn.query(sql, list(params)) if params else raw_conn.query(sql)
            if result is None or isinstance(result, (str, int)):
                return []
            return [tuple(row) for row in result.getresult()]
        cursor = raw_conn.cursor()
        try:
            if params:
                cursor.execute(sql, tuple(params))
            else:
                cursor.execute(sql)
            if cursor.description is None:
                return []
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    # -- the server side ---------------------------------------------------------------

    def _require_server(self) -> DatabaseServer:
        if self.server is None:
            raise NoServerError(f"{self!r} has no database server")
        return self.server

    @property
    def backend_id_sql(self) -> str | None:
        """SQL returning the server session id of the connection it runs on (None for sqlite3)."""
        return _BACKEND_ID_SQL.get(self.kind)

    def backend_id(self, raw_conn: Any) -> int:
        """The server session of ``raw_conn``: PostgreSQL backend pid / MariaDB connection id."""
        sql = self.backend_id_sql
        if sql is None:
            raise NoServerError(f"{self!r} has no server sessions")
        return int(self.query(raw_conn, sql)[0][0])

    def kill_backend(self, backend_id: int, *, wait: bool = True) -> bool:
        """Terminate the server session ``backend_id``, as the admin, from outside.

        PostgreSQL: ``pg_terminate_backend``; MariaDB: ``KILL``. With ``wait`` (the
        default) return only once the session is gone from the server's
        session list, so the connection's next use fails for sure. Returns
        False if there was no such session.
        """
        server = self._require_server()
        with contextlib.closing(server.admin_connect()) as conn:
            if server.kind == "postgresql":
                found = bool(_rows(conn, "SELECT pg_terminate_backend(%s)", (backend_id,))[0][0])
                gone_sql = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
            else:
                try:
                    _rows(conn, "KILL CONNECTION %s", (int(backend_id),))
                    found = True
                except Exception as exc:  # 1094: unknown thread id
                    if _mysql_errno(exc) != 1094:
                        raise
                    found = False
                gone_sql = "SELECT 1 FROM information_schema.processlist WHERE id = %s"
            if found and wait:
                deadline = time.monotonic() + _GONE_TIMEOUT
                while _rows(conn, gone_sql, (backend_id,)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"session {backend_id} still exists {_GONE_TIMEOUT:.0f}s after"
                            " it was terminated"
                        )
                    time.sleep(0.002)
        log.debug("terminated session %s on %r", backend_id, server)
        return found

    def cancel_backend(self, backend_id: int) -> bool:
        """Cancel the query session ``backend_id`` is running; the session stays usable.

        PostgreSQL: ``pg_cancel_backend``; MariaDB: ``KILL QUERY``. Returns False
        if there was no such session.
        """
        server = self._require_server()
        if server.kind == "postgresql":
            return bool(server.admin_execute("SELECT pg_cancel_backend(%s)", (backend_id,))[0][0])
        try:
            server.admin_execute("KILL QUERY %s", (int(backend_id),))
        except Exception as exc:
            if _mysql_errno(exc) != 1094:
                raise
            return False
        return True

    def _session_ids(self, user: str | None = None) -> list[int]:
        server = self._require_server()
        user = user or server.user
        if server.kind == "postgresql":
            rows = server.admin_execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND usename = %s AND pid <> pg_backend_pid()"
                " AND application_name IS DISTINCT FROM %s",
                (user, ADMIN_APPLICATION_NAME),
            )
        else:
            rows = server.admin_execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE user = %s AND id <> CONNECTION_ID() AND command <> 'Daemon'",
                (user,),
            )
        return [int(row[0]) for row in rows]

    def ignore_existing_sessions(self) -> int:
        """Leave the server's current sessions out of later :meth:`session_count` results.

        The fixtures call this when a test starts, so connections leaked by
        earlier tests (not yet garbage-collected) do not disturb counts.
        Returns how many sessions are now ignored.
        """
        self._ignored_sessions = frozenset(self._session_ids())
        return len(self._ignored_sessions)

    def session_count(self, application_name: str | None = None, *, user: str | None = None) -> int:
        """How many client sessions ``user`` (default: the target's) has open on the server.

        Leaves out the counting session, the harness's admin sessions and the
        sessions :meth:`ignore_existing_sessions` saw. ``application_name``
        (PostgreSQL only) counts only sessions that set it. On a server shared
        with other test processes (an external server), counts include their
        sessions of the same user.
        """
        server = self._require_server()
        user = user or server.user
        ignored = sorted(self._ignored_sessions)
        if server.kind == "postgresql":
            sql = (
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND usename = %s AND pid <> pg_backend_pid()"
                " AND application_name IS DISTINCT FROM %s"
            )
            params: list[Any] = [user, ADMIN_APPLICATION_NAME]
            if application_name is not None:
                sql += " AND application_name = %s"
                params.append(application_name)
            if ignored:
                sql += " AND NOT (pid = ANY(%s))"
                params.append(ignored)
        else:
            if application_name is not None:
                raise ValueError("application_name: MariaDB sessions do not report one")
            sql = (
                "SELECT count(*) FROM information_schema.processlist"
                " WHERE user = %s AND id <> CONNECTION_ID() AND command <> 'Daemon'"
            )
            params = [user]
            if ignored:
                sql += " AND id NOT IN %s"
                params.append(tuple(ignored))
        return int(server.admin_execute(sql, params)[0][0])

    # -- tables ------------------------------------------------------------------------

    def unique_table(self, prefix: str = "t") -> str:
        """A fresh table name (``prefix_<12 hex>``), remembered so :meth:`cleanup` drops it."""
        if not _IDENTIFIER.match(prefix) or len(prefix) > 40:
            raise ValueError(
                f"prefix: expected a short lowercase identifier ([a-z_][a-z0-9_]*), got {prefix!r}"
            )
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.tables.append(name)
        return name

    def cleanup(self) -> None:
        """Drop the tables :meth:`unique_table` handed out (starting the server if it is down).

        Uses short lock timeouts: a table still locked by a leaked
        transaction is left behind with a warning rather than hanging the run.
        """
        tables, self.tables = self.tables, []
        if self.server is None or not tables:
            return
        server = self.server
        server.ensure_running()
        with contextlib.closing(server.admin_connect()) as conn:
            if server.kind == "postgresql":
                _rows(conn, "SET lock_timeout = '2s'")
                qualify = '"{}"'.format
            else:
                _rows(conn, "SET SESSION lock_wait_timeout = 2")
                qualify = ("`" + server.database.replace("`", "``") + "`.`{}`").format
            for table in tables:
                try:
                    _rows(conn, f"DROP TABLE IF EXISTS {qualify(table)}")
                except Exception as exc:
                    log.warning("could not drop table %s on %r: %s", table, server, exc)


def _rows(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _mysql_errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
