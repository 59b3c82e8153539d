"""Real database servers for tests: start them, crash them, restart them on the same port.

A connection pool is only as good as its behaviour when the database misbehaves:
the server restarts under it, kills one of its sessions, or dies outright. Mocks
cannot show that, so tether's tests run against real PostgreSQL and MariaDB
servers, and this package provides them. One module per idea:

- :mod:`.base`: what a server is to tests, :class:`DatabaseServer` (address,
  ``admin_execute()``, and when ``controllable`` the chaos levers ``stop()``,
  ``restart(mode)``, ``kill()``), the harness's errors and shared defaults.
- :mod:`.provide`: which server a test gets (:func:`provide_postgres`,
  :func:`provide_mariadb`): a DSN's, a container, or a local one.
- :mod:`.local`: a server that is a child process of the harness, restarted
  on the same port (the process handling is :mod:`tether.harness.processes`).
- :mod:`.scratch`: where local servers keep their files, the template cache
  of built data directories, the sweep of directories dead runs left.
- :mod:`.postgres` (:class:`LocalPostgres`), :mod:`.mariadb`
  (:class:`LocalMariaDB`): the two local servers.
- :mod:`.pgbouncer` (:class:`PgBouncer`): a real PgBouncer in front of a
  PostgreSQL server, in transaction or session pool mode.
- :mod:`.external` (:class:`ExternalServer`), :mod:`.containers`
  (:class:`ContainerServer`): servers the harness does not run itself.

Every name is importable from ``tether.harness.servers`` itself.
Passwords never appear in ``repr()``, log records or error messages raised here.
"""

from __future__ import annotations

from .. import processes as _processes
from ..processes import free_port
from .base import _MODES as _MODES
from .base import _START_TIMEOUT as _START_TIMEOUT
from .base import _STOP_TIMEOUT as _STOP_TIMEOUT
from .base import (
    ADMIN_APPLICATION_NAME,
    DEFAULT_DATABASE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    INSTALL_HINT,
    MARIADB_DSN_ENV,
    PG_DSN_ENV,
    DatabaseServer,
    HarnessError,
    Row,
    ServerKind,
    ServerNotControllableError,
    ServerStartError,
    ServerUnavailableError,
    ShutdownMode,
)
from .base import _admin_connection as _admin_connection
from .base import _check_mode as _check_mode
from .base import _execute as _execute
from .base import _quote_ident as _quote_ident
from .containers import ContainerServer, docker_available
from .external import ExternalServer
from .local import _LocalServer as _LocalServer
from .local import _running_as_root as _running_as_root
from .mariadb import MARIADB_BINDIR_ENV, LocalMariaDB
from .mariadb import _find_mariadb_binaries as _find_mariadb_binaries
from .pgbouncer import PGBOUNCER_BINARY_ENV, POOL_MODES, PgBouncer, PoolMode, find_pgbouncer
from .postgres import PG_BINDIR_ENV, LocalPostgres
from .postgres import _find_pg_bindir as _find_pg_bindir
from .postgres import _postgres_os_user as _postgres_os_user
from .provide import USE_DOCKER_ENV, provide_mariadb, provide_postgres
from .scratch import CACHE_ENV, SCRATCH_ENV
from .scratch import _binary_fingerprint as _binary_fingerprint
from .scratch import _cached_template as _cached_template
from .scratch import _copy_tree as _copy_tree
from .scratch import _create_data_dir as _create_data_dir
from .scratch import _scratch_dir as _scratch_dir
from .scratch import _sweep_stale_dirs as _sweep_stale_dirs

# The old single module's names for its process helpers, now in tether.harness.processes.
_LOOPBACK = _processes.LOOPBACK
_tail = _processes.log_tail
_pdeathsig_prefix = _processes.pdeathsig_prefix

__all__ = [
    "ADMIN_APPLICATION_NAME",
    "CACHE_ENV",
    "DEFAULT_DATABASE",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "INSTALL_HINT",
    "MARIADB_BINDIR_ENV",
    "MARIADB_DSN_ENV",
    "PGBOUNCER_BINARY_ENV",
    "PG_BINDIR_ENV",
    "PG_DSN_ENV",
    "POOL_MODES",
    "SCRATCH_ENV",
    "USE_DOCKER_ENV",
    "ContainerServer",
    "DatabaseServer",
    "ExternalServer",
    "HarnessError",
    "LocalMariaDB",
    "LocalPostgres",
    "PgBouncer",
    "PoolMode",
    "Row",
    "ServerKind",
    "ServerNotControllableError",
    "ServerStartError",
    "ServerUnavailableError",
    "ShutdownMode",
    "docker_available",
    "find_pgbouncer",
    "free_port",
    "provide_mariadb",
    "provide_postgres",
]
