"""Which server a test gets: somebody else's, a container, or a local throwaway one.

:func:`provide_postgres` / :func:`provide_mariadb` decide, in this order:

1. ``TETHER_PG_DSN`` / ``TETHER_MARIADB_DSN``: an
   :class:`~.external.ExternalServer` somebody else runs. Not controllable.
2. A Docker engine that answers (unless ``TETHER_USE_DOCKER=0``; ``=1``
   makes a missing engine an error): a :class:`~.containers.ContainerServer`.
3. The local binaries: :class:`~.postgres.LocalPostgres` or
   :class:`~.mariadb.LocalMariaDB`.

If none is possible they raise :class:`~.base.ServerUnavailableError` with the
install command: a missing server is an error, never a skipped test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from .base import MARIADB_DSN_ENV, PG_DSN_ENV, DatabaseServer, ServerKind, ServerUnavailableError
from .containers import ContainerServer, docker_available
from .external import ExternalServer
from .mariadb import LocalMariaDB
from .postgres import LocalPostgres

__all__ = ["USE_DOCKER_ENV", "provide_mariadb", "provide_postgres"]

log = logging.getLogger(__name__)

USE_DOCKER_ENV = "TETHER_USE_DOCKER"


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
