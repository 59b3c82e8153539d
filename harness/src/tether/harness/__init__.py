"""tether.harness: real database servers for tether's integration and chaos tests.

Tests of a connection pool must see real servers restart, kill sessions and
die. This package starts throwaway PostgreSQL and MariaDB servers (or uses
the ones ``TETHER_PG_DSN`` / ``TETHER_MARIADB_DSN`` name, or Docker
containers), describes how each database driver connects to them
(:class:`~tether.harness.targets.DriverTarget`), and offers both as pytest
fixtures through the ``tether.harness.pytest_plugin`` plugin. For failover
tests, :class:`~tether.harness.replication.ReplicationPair` is a primary and a
synchronous streaming standby with the levers to kill, promote and switch over.
A real PgBouncer in front of PostgreSQL (:mod:`~tether.harness.servers.pgbouncer`) is one
more server of the same kind.
"""

from __future__ import annotations

from .replication import ReplicationPair
from .servers import (
    ContainerServer,
    DatabaseServer,
    ExternalServer,
    HarnessError,
    LocalMariaDB,
    LocalPostgres,
    PgBouncer,
    ServerNotControllableError,
    ServerStartError,
    ServerUnavailableError,
    provide_mariadb,
    provide_postgres,
)
from .targets import (
    DBAPI_TARGETS,
    SERVER_TARGETS,
    DriverTarget,
    NoServerError,
    all_target_names,
)

__all__ = [
    "DBAPI_TARGETS",
    "SERVER_TARGETS",
    "ContainerServer",
    "DatabaseServer",
    "DriverTarget",
    "ExternalServer",
    "HarnessError",
    "LocalMariaDB",
    "LocalPostgres",
    "NoServerError",
    "PgBouncer",
    "ReplicationPair",
    "ServerNotControllableError",
    "ServerStartError",
    "ServerUnavailableError",
    "all_target_names",
    "provide_mariadb",
    "provide_postgres",
]
