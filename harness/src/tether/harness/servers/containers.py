"""Servers in Docker containers (testcontainers), for machines with an engine but no binaries.

:class:`ContainerServer` runs the images ``postgres:15`` / ``mariadb:10.11``
(:attr:`ContainerServer.IMAGES`, changeable) with the host port chosen by the
harness and bound explicitly, so a restarted container comes back on the
same port like a local server. :func:`docker_available` asks the engine
itself (a ``docker`` client binary may exist without one).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, ClassVar

from ..processes import LOOPBACK, free_port
from .base import (
    _START_TIMEOUT,
    _STOP_TIMEOUT,
    DEFAULT_DATABASE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    DatabaseServer,
    ServerKind,
    ServerStartError,
    ShutdownMode,
    _admin_connection,
    _check_mode,
)

__all__ = ["ContainerServer", "docker_available"]


def docker_available() -> bool:
    """True when a Docker engine answers within 2 s (``docker.from_env().ping()``)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class ContainerServer(DatabaseServer):
    """A PostgreSQL 15 or MariaDB 10.11 container from testcontainers.

    The host port is chosen by the harness and bound explicitly, so it
    survives restarts. Modes: PostgreSQL ``fast`` is ``docker stop`` (the image's
    stop signal is SIGINT, a fast shutdown) and ``immediate`` is SIGQUIT to the
    container; MariaDB ``fast`` is ``docker stop`` (SIGTERM), ``immediate`` is
    ``docker kill`` (SIGKILL). ``kill()`` is ``docker kill`` for both. The
    superuser for ``admin_execute()`` is the image's (the test user for
    PostgreSQL, root for MariaDB).
    """

    controllable: ClassVar[bool] = True
    IMAGES: ClassVar[dict[str, str]] = {"postgresql": "postgres:15", "mariadb": "mariadb:10.11"}
    _INNER_PORTS: ClassVar[dict[str, int]] = {"postgresql": 5432, "mariadb": 3306}

    def __init__(
        self,
        kind: ServerKind,
        *,
        image: str | None = None,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        super().__init__(kind, LOOPBACK, 0, user, password, database)
        self.image = image or self.IMAGES[kind]
        self._container: Any = None
        self._root_password = password

    def _state(self) -> str:
        return f" image={self.image}"

    def admin_connect(self, database: str | None = None) -> Any:
        if self.kind == "postgresql":
            return super().admin_connect(database)
        return _admin_connection(
            "mariadb",
            host=self.host,
            port=self.port,
            user="root",
            password=self._root_password,
            database=database or self.database,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with contextlib.closing(self.admin_connect()):
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self!r} not ready after {_START_TIMEOUT:.0f}s"
                    ) from None
                time.sleep(0.2)

    def start(self) -> None:
        if self._container is not None:
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status != "running":
                wrapped.start()
            self._wait_ready()
            return
        inner = self._INNER_PORTS[self.kind]
        self.port = free_port()
        container: Any
        if self.kind == "postgresql":
            from testcontainers.community.postgres import PostgresContainer

            container = PostgresContainer(
                self.image,
                username=self.user,
                password=self.password,
                dbname=self.database,
                driver=None,
            )
            container.with_command("postgres -c fsync=off -c max_connections=200")
        else:
            from testcontainers.community.mysql import MySqlContainer

            container = MySqlContainer(
                self.image,
                username=self.user,
                password=self.password,
                root_password=self._root_password,
                dbname=self.database,
            )
            container.with_command(
                "--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci"
                " --max-connections=200 --innodb-flush-log-at-trx-commit=2"
            )
        container.with_bind_ports(inner, self.port)
        container.start()
        self._container = container
        self.host = container.get_container_host_ip()
        self._wait_ready()
        if self.kind == "mariadb":
            self.admin_execute(
                "GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (self.user,)
            )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        if self._container is None:
            return
        wrapped = self._container.get_wrapped_container()
        if mode == "fast":
            wrapped.stop(timeout=_STOP_TIMEOUT)
        else:
            wrapped.kill(signal="SIGQUIT" if self.kind == "postgresql" else "SIGKILL")
            wrapped.wait(timeout=_STOP_TIMEOUT)

    def kill(self) -> None:
        if self._container is None:
            return
        wrapped = self._container.get_wrapped_container()
        wrapped.kill()
        wrapped.wait(timeout=_STOP_TIMEOUT)

    def is_running(self) -> bool:
        if self._container is None:
            return False
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()
